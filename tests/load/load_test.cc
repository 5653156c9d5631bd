// Load test (CTest label `load`): one coordinator on 127.0.0.1 with
// thousands of connected, heartbeating clients, then one round in which a
// thousand of them upload int8 deltas of a large model.
//
// Two processes, so that the coordinator's memory is measured alone:
//   * this process runs the real Coordinator and TcpServer (Noise XX unless
//     --insecure) and measures;
//   * a child (`--role clients`, the same binary) runs the clients: real
//     transport sessions (ClientPool: the Session code the server uses, many
//     sessions on two threads), each with its own key pair, speaking the wire
//     protocol (Hello, Heartbeat, TrainResult + Chunks).
//
// Heartbeat latency: the client puts the CLOCK_MONOTONIC time at which it
// hands the heartbeat to its session (before sealing) in Heartbeat.seq (a
// valid seq: it increases); the coordinator process wraps the Coordinator's
// SessionHandler and, when Coordinator::OnMessage has returned for that
// heartbeat (state stored), records now - seq. Both processes read the same
// system-wide monotonic clock. So the latency covers client-side sealing and
// queueing, the loopback, the server's reactor and strand scheduling,
// decryption, parsing and the coordinator's handling.
//
// Prints one "LOAD key=value" line per figure; exits non-zero when clients
// fail to connect, the round does not complete, or RSS exceeds --rss-limit-mb.
// The p99 target is reported (met / missed) and enforced only with
// --enforce-latency (CI machines are shared; see docs/performance.md).
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "verdant/aggregation/strategy.h"
#include "verdant/compression/codec.h"
#include "verdant/core/rng.h"
#include "verdant/server/coordinator.h"
#include "verdant/server/selector.h"
#include "verdant/transport/keys.h"
#include "verdant/transport/message.h"
#include "verdant/transport/secure_channel.h"
#include "verdant/transport/session.h"

extern char** environ;

namespace verdant {
namespace {

using namespace std::chrono_literals;

struct Args {
  std::string role = "coordinator";
  size_t clients = 10000;
  size_t selected = 1000;
  size_t params = 1000000;
  std::string codec = "int8";
  uint32_t heartbeat_ms = 1000;
  double measure_s = 20;
  double connect_timeout_s = 180;
  double rss_limit_mb = 1536;
  double p99_target_ms = 100;
  bool enforce_latency = false;
  bool insecure = false;
  bool trace = false;
  uint32_t chunk_kb = 0;  // 0 = the coordinator's default chunk size  // print RSS and transfer progress every second of the round
  // clients role
  uint16_t port = 0;
  std::string server_key;
  double max_s = 600;
};

bool ParseArgs(int argc, char** argv, Args& a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--role") a.role = next();
    else if (k == "--clients") a.clients = std::stoul(next());
    else if (k == "--selected") a.selected = std::stoul(next());
    else if (k == "--params") a.params = std::stoul(next());
    else if (k == "--codec") a.codec = next();
    else if (k == "--heartbeat-ms") a.heartbeat_ms = static_cast<uint32_t>(std::stoul(next()));
    else if (k == "--measure-s") a.measure_s = std::stod(next());
    else if (k == "--connect-timeout-s") a.connect_timeout_s = std::stod(next());
    else if (k == "--rss-limit-mb") a.rss_limit_mb = std::stod(next());
    else if (k == "--p99-target-ms") a.p99_target_ms = std::stod(next());
    else if (k == "--enforce-latency") a.enforce_latency = true;
    else if (k == "--insecure") a.insecure = true;
    else if (k == "--trace") a.trace = true;
    else if (k == "--chunk-kb") a.chunk_kb = static_cast<uint32_t>(std::stoul(next()));
    else if (k == "--port") a.port = static_cast<uint16_t>(std::stoul(next()));
    else if (k == "--server-key") a.server_key = next();
    else if (k == "--max-s") a.max_s = std::stod(next());
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      return false;
    }
  }
  return true;
}

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// VmRSS / VmHWM of this process, MiB.
double ProcStatusMb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
      return std::strtod(line.c_str() + n + 1, nullptr) / 1024.0;  // kB
    }
  }
  return 0;
}

void RaiseFileLimit(size_t want) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur < want) {
    std::fprintf(stderr, "load: open-file limit %llu < %zu needed; raise the hard limit (ulimit -Hn)\n",
                 static_cast<unsigned long long>(r.rlim_cur), want);
  }
}

// ---- coordinator side --------------------------------------------------------

// Heartbeat latency histogram: 1 us buckets up to 1 s, then one overflow bucket.
class LatencyRecorder {
 public:
  static constexpr size_t kBuckets = 1000000;
  LatencyRecorder() : counts_(kBuckets + 1) {}
  void Record(int64_t ns) {
    if (!on.load(std::memory_order_relaxed)) return;
    const size_t us = ns <= 0 ? 0 : static_cast<size_t>(ns / 1000);
    counts_[std::min(us, kBuckets)].fetch_add(1, std::memory_order_relaxed);
    total_.fetch_add(1, std::memory_order_relaxed);
    int64_t prev = max_ns_.load(std::memory_order_relaxed);
    while (ns > prev && !max_ns_.compare_exchange_weak(prev, ns)) {
    }
  }
  uint64_t count() const { return total_.load(); }
  double max_ms() const { return static_cast<double>(max_ns_.load()) / 1e6; }
  // The q-quantile, ms (bucket upper edge; "> 1000" as 1000).
  double QuantileMs(double q) const {
    const uint64_t n = total_.load();
    if (n == 0) return 0;
    const uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(n)));
    uint64_t cum = 0;
    for (size_t i = 0; i <= kBuckets; ++i) {
      cum += counts_[i].load();
      if (cum >= rank) return static_cast<double>(i + 1) / 1000.0;
    }
    return static_cast<double>(kBuckets) / 1000.0;
  }
  std::atomic<bool> on{false};

 private:
  std::vector<std::atomic<uint64_t>> counts_;
  std::atomic<uint64_t> total_{0};
  std::atomic<int64_t> max_ns_{0};
};

class TimingHandler final : public SessionHandler {
 public:
  TimingHandler(Coordinator& c, LatencyRecorder& r) : coord_(c), rec_(r) {}
  void OnSessionOpen(const SessionPtr& s) override { coord_.OnSessionOpen(s); }
  void OnMessage(const SessionPtr& s, wire::Envelope&& m) override {
    const bool hb = m.body_case() == wire::Envelope::kHeartbeat;
    const int64_t sent = hb ? static_cast<int64_t>(m.heartbeat().seq()) : 0;
    coord_.OnMessage(s, std::move(m));
    if (hb) rec_.Record(SteadyNs() - sent);
  }
  void OnSessionClosed(const SessionPtr& s, const Status& reason) override { coord_.OnSessionClosed(s, reason); }

 private:
  Coordinator& coord_;
  LatencyRecorder& rec_;
};

void Figure(const char* key, double v, const char* unit = "") {
  std::printf("LOAD %s=%.3f%s%s\n", key, v, *unit ? " " : "", unit);
  std::fflush(stdout);
}

int RunCoordinator(const Args& a) {
  RaiseFileLimit(a.clients + 256);
  spdlog::set_level(spdlog::level::warn);
  if (!InitCrypto().ok()) return 1;
  auto kp = GenerateKeyPair();
  if (!kp.ok()) return 1;
  const std::string server_pub = FormatPublicKey(kp->public_key());

  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = a.clients;
  o.clients_per_round = a.selected;
  o.uplink_codec = a.codec;
  o.model_name = "synthetic:" + std::to_string(a.params);
  o.wait_for_clients = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(a.connect_timeout_s));
  o.round_timeout = 180s;
  o.heartbeat_interval_ms = a.heartbeat_ms;
  o.evaluate_every = 0;
  o.run_id = "load";
  if (a.chunk_kb > 0) o.chunk_bytes = a.chunk_kb * 1024;
  auto strategy = CreateStrategy("fedavg", {});
  auto selector = CreateSelector("random", {});
  if (!strategy.ok() || !selector.ok()) return 1;
  Coordinator coord(o, ParameterVector::Flat(std::vector<float>(a.params, 0.0f)), std::move(*strategy),
                    std::move(*selector), nullptr, SystemClock::Default());
  LatencyRecorder latency;
  TimingHandler timing(coord, latency);
  TcpServer::Options to;
  to.host = "127.0.0.1";
  to.threads = 2;
  to.session.handshake_timeout = 120s;
  if (!a.insecure) {
    SecureChannelOptions so;
    so.static_key = std::make_shared<const KeyPair>(std::move(*kp));
    auto f = NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, so);
    if (!f.ok()) return 1;
    to.handshaker = std::move(*f);
  }
  auto server = TcpServer::Start(to, timing);
  if (!server.ok()) {
    std::fprintf(stderr, "load: %s\n", server.status().ToString().c_str());
    return 1;
  }
  Figure("clients", static_cast<double>(a.clients));
  std::printf("LOAD channel=%s\n", a.insecure ? "plaintext" : "noise-xx");
  const double rss_before = ProcStatusMb("VmRSS");
  Figure("rss_before_clients_mb", rss_before, "MiB");

  // The clients' process.
  std::vector<std::string> args = {"verdant_load_test", "--role", "clients", "--port", std::to_string((*server)->port()),
                                   "--clients", std::to_string(a.clients), "--params", std::to_string(a.params),
                                   "--codec", a.codec, "--heartbeat-ms", std::to_string(a.heartbeat_ms),
                                   "--server-key", server_pub, "--chunk-kb", std::to_string(a.chunk_kb),
                                   "--max-s", std::to_string(a.connect_timeout_s + a.measure_s + 400)};
  if (a.insecure) args.push_back("--insecure");
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t child = 0;
  if (posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    return 1;
  }
  int exit_code = 0;
  auto fail = [&](const std::string& why) {
    std::printf("LOAD FAILED: %s\n", why.c_str());
    exit_code = 1;
  };

  // Phase 1: every client connected and welcomed.
  const auto t_connect = std::chrono::steady_clock::now();
  const auto connect_deadline = t_connect + std::chrono::duration<double>(a.connect_timeout_s);
  while (coord.connected_clients() < a.clients && std::chrono::steady_clock::now() < connect_deadline) {
    std::this_thread::sleep_for(50ms);
    if (waitpid(child, nullptr, WNOHANG) == child) {
      child = 0;
      break;
    }
  }
  const double connect_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_connect).count();
  const size_t connected = coord.connected_clients();
  Figure("connected", static_cast<double>(connected));
  Figure("connect_seconds", connect_s, "s");
  Figure("connect_rate_per_s", static_cast<double>(connected) / connect_s);
  if (connected < a.clients) {
    fail("only " + std::to_string(connected) + " of " + std::to_string(a.clients) + " clients connected");
  }

  // Steady heartbeating: measure latency and memory over the window.
  double rss_max = 0;
  if (exit_code == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * a.heartbeat_ms));  // settle
    latency.on = true;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.measure_s);
    while (std::chrono::steady_clock::now() < end) {
      rss_max = std::max(rss_max, ProcStatusMb("VmRSS"));
      std::this_thread::sleep_for(250ms);
    }
    latency.on = false;
    rss_max = std::max(rss_max, ProcStatusMb("VmRSS"));
    const auto snap = coord.Snapshot(0);
    Figure("heartbeat_interval_ms", a.heartbeat_ms, "ms");
    Figure("heartbeats_measured", static_cast<double>(latency.count()));
    Figure("heartbeats_per_s", static_cast<double>(latency.count()) / a.measure_s);
    Figure("heartbeat_p50_ms", latency.QuantileMs(0.50), "ms");
    Figure("heartbeat_p90_ms", latency.QuantileMs(0.90), "ms");
    Figure("heartbeat_p99_ms", latency.QuantileMs(0.99), "ms");
    Figure("heartbeat_p999_ms", latency.QuantileMs(0.999), "ms");
    Figure("heartbeat_max_ms", latency.max_ms(), "ms");
    Figure("rss_idle_clients_mb", rss_max, "MiB");
    Figure("rss_per_client_kb", (rss_max - rss_before) * 1024.0 /
                                    static_cast<double>(std::max<size_t>(1, snap.clients_connected)), "KiB");
    const bool p99_ok = latency.QuantileMs(0.99) < a.p99_target_ms;
    std::printf("LOAD target_rss %s (%.1f MiB < %.0f MiB)\n", rss_max < a.rss_limit_mb ? "met" : "MISSED", rss_max,
                a.rss_limit_mb);
    std::printf("LOAD target_p99 %s (%.3f ms < %.0f ms)\n", p99_ok ? "met" : "MISSED", latency.QuantileMs(0.99),
                a.p99_target_ms);
    if (latency.count() < a.clients) fail("too few heartbeats measured");
    if (rss_max >= a.rss_limit_mb) fail("coordinator RSS over the limit");
    if (!p99_ok && a.enforce_latency) fail("p99 heartbeat latency over the target");
  }

  // Phase 2: one round, `selected` clients upload deltas.
  if (exit_code == 0) {
    std::optional<RoundRecord> record;
    coord.SetRoundCallback([&record](const RoundRecord& r) { record = r; });
    const double hwm_before = ProcStatusMb("VmHWM");
    std::atomic<bool> running{true};
    std::atomic<double> rss_round_max{0};
    int ticks = 0;
    const auto t0 = std::chrono::steady_clock::now();
    std::thread sampler([&] {
      while (running) {
        const double r = ProcStatusMb("VmRSS");
        if (r > rss_round_max) rss_round_max = r;
        if (a.trace && ++ticks % 10 == 0) {
          const auto s = coord.Snapshot(0);
          std::printf("LOAD trace t=%.1f rss_mb=%.0f state=%s training=%zu down_mb=%.0f up_mb=%.0f\n",
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), r,
                      s.state.c_str(), s.clients_training, static_cast<double>(s.bytes_down_total) / (1 << 20),
                      static_cast<double>(s.bytes_up_total) / (1 << 20));
          std::fflush(stdout);
        }
        std::this_thread::sleep_for(100ms);
      }
    });
    auto summary = coord.Run();
    const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    running = false;
    sampler.join();
    if (!summary.ok()) fail("round: " + summary.status().ToString());
    if (record) {
      Figure("round_selected", static_cast<double>(record->selected));
      Figure("round_completed", static_cast<double>(record->completed));
      Figure("round_failed", static_cast<double>(record->failed));
      Figure("round_seconds", record->wall_seconds, "s");
      Figure("round_bytes_up_mb", static_cast<double>(record->bytes_up) / (1 << 20), "MiB");
      Figure("round_bytes_down_mb", static_cast<double>(record->bytes_down) / (1 << 20), "MiB");
      if (record->completed != a.selected) fail("not every selected client completed the round");
    } else {
      fail("no round recorded");
    }
    Figure("run_seconds_select_to_goodbye", run_s, "s");
    Figure("rss_round_max_sampled_mb", rss_round_max.load(), "MiB");
    Figure("rss_peak_mb", std::max(hwm_before, ProcStatusMb("VmHWM")), "MiB");
  }

  // The clients leave on Bye; make sure the child is gone.
  for (int i = 0; i < 300 && child > 0; ++i) {
    if (waitpid(child, nullptr, WNOHANG) == child) child = 0;
    else std::this_thread::sleep_for(50ms);
  }
  (*server)->Stop();
  if (child > 0) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
  }
  std::printf("LOAD result=%s\n", exit_code == 0 ? "ok" : "failed");
  return exit_code;
}

// ---- clients side --------------------------------------------------------------

class LoadClients final : public SessionHandler {
 public:
  LoadClients(const Args& a, std::vector<SharedBytes> chunks, uint64_t payload_bytes)
      : a_(a), chunks_(std::move(chunks)), payload_bytes_(payload_bytes), states_(a.clients + 1) {}

  void OnSessionOpen(const SessionPtr& s) override {
    wire::Envelope env;
    auto* h = env.mutable_hello();
    h->set_protocol_version(kProtocolVersion);
    h->set_client_name("load-" + std::to_string(s->id()));
    h->add_codecs("identity/1");
    h->add_codecs(a_.codec + "/1");
    h->set_num_examples(100);
    h->set_device_profile("phone-midrange");
    *h->mutable_state() = State();
    s->Send(env);
    std::lock_guard<std::mutex> l(mu_);
    sessions_.push_back(s);
  }

  void OnMessage(const SessionPtr& s, wire::Envelope&& m) override {
    if (s->id() >= states_.size()) return;
    PerSession& st = states_[s->id()];  // only this session's strand touches it
    switch (m.body_case()) {
      case wire::Envelope::kWelcome:
        st.welcomed = true;
        ++welcomed;
        return;
      case wire::Envelope::kTrainTask:
        st.task = m.train_task();
        st.chunks_got = 0;
        ++tasks;
        if (st.task.payload().num_chunks() == 0) Upload(s, st);
        return;
      case wire::Envelope::kChunk:
        if (++st.chunks_got == st.task.payload().num_chunks()) Upload(s, st);
        return;
      case wire::Envelope::kBye:
        ++byes;
        s->Close(CancelledError("bye"));
        return;
      case wire::Envelope::kError:
        ++errors;
        if (errors < 5) std::fprintf(stderr, "load client: error from coordinator: %s\n", m.error().message().c_str());
        return;
      default:
        return;
    }
  }
  void OnSessionClosed(const SessionPtr&, const Status&) override { ++closed; }

  // One heartbeat to every welcomed session, spread over the interval.
  void HeartbeatLoop(const std::atomic<bool>& stop) {
    constexpr int kSlices = 100;
    const auto slice = std::chrono::microseconds(a_.heartbeat_ms * 1000 / kSlices);
    auto next = std::chrono::steady_clock::now();
    wire::Envelope env;
    *env.mutable_heartbeat()->mutable_state() = State();
    while (!stop) {
      std::vector<SessionPtr> all;
      {
        std::lock_guard<std::mutex> l(mu_);
        all = sessions_;
      }
      for (int k = 0; k < kSlices && !stop; ++k) {
        for (size_t i = static_cast<size_t>(k); i < all.size(); i += kSlices) {
          const auto& s = all[i];
          if (s->closed() || s->id() >= states_.size() || !states_[s->id()].welcomed) continue;
          env.mutable_heartbeat()->set_seq(static_cast<uint64_t>(SteadyNs()));
          s->Send(env);
        }
        next += slice;
        std::this_thread::sleep_until(next);
      }
    }
  }

  std::atomic<uint64_t> welcomed{0}, tasks{0}, uploads{0}, byes{0}, closed{0}, errors{0};

 private:
  struct PerSession {
    std::atomic<bool> welcomed{false};
    wire::TrainTask task;
    uint32_t chunks_got = 0;
  };

  static wire::DeviceState State() {
    wire::DeviceState d;
    d.set_battery_known(true);
    d.set_battery_percent(80);
    d.set_charging(true);
    d.set_power_source(wire::DeviceState::POWER_SOURCE_GRID);
    d.set_network(wire::DeviceState::NETWORK_UNMETERED);
    d.set_zone("NO");
    return d;
  }

  void Upload(const SessionPtr& s, PerSession& st) {
    wire::Envelope env;
    auto* r = env.mutable_train_result();
    r->set_round(st.task.round());
    r->set_task_id(st.task.task_id());
    r->set_num_examples(100);
    r->set_train_loss(1.0);
    r->set_train_seconds(0.01);
    auto* p = r->mutable_payload();
    p->set_stream_id(1);
    p->set_encoding(a_.codec);
    p->set_num_params(a_.params);
    p->set_payload_bytes(payload_bytes_);
    p->set_num_chunks(static_cast<uint32_t>(chunks_.size()));
    s->Send(env);
    for (const auto& c : chunks_) s->Send(c);
    ++uploads;
  }

  const Args& a_;
  std::vector<SharedBytes> chunks_;  // the delta, serialised once, shared by every client
  uint64_t payload_bytes_;
  std::vector<PerSession> states_;   // by session id (1..clients)
  std::mutex mu_;
  std::vector<SessionPtr> sessions_;
};

int RunClients(const Args& a) {
  RaiseFileLimit(a.clients + 256);
  spdlog::set_level(spdlog::level::warn);
  if (!InitCrypto().ok()) return 1;
  const pid_t parent = getppid();
  // The delta every selected client uploads: small random values, int8-coded once.
  auto codec = CreateCodec(a.codec);
  if (!codec.ok()) return 1;
  std::vector<float> delta(a.params);
  Rng rng(7);
  for (auto& v : delta) v = static_cast<float>(rng.Uniform() - 0.5) * 1e-3f;
  std::vector<uint8_t> encoded;
  if (!(*codec)->Encode(delta, rng, encoded).ok()) return 1;
  // Uploads are chunked as the coordinator's Welcome asks (CoordinatorOptions::chunk_bytes).
  LoadClients clients(a, MakeChunkMessages(1, encoded, a.chunk_kb > 0 ? a.chunk_kb * 1024 : CoordinatorOptions{}.chunk_bytes),
                      encoded.size());

  HandshakerFactory plain = PlaintextHandshakerFactory();
  std::optional<PublicKey> server_key;
  if (!a.insecure) {
    auto k = ParsePublicKey(a.server_key);
    if (!k.ok()) {
      std::fprintf(stderr, "load clients: %s\n", k.status().ToString().c_str());
      return 1;
    }
    server_key = *k;
  }
  ClientPool::Options po;
  po.threads = 2;
  po.session.handshake_timeout = 120s;
  auto pool = ClientPool::Create(po, clients);
  const auto t0 = std::chrono::steady_clock::now();
  size_t failed = 0;
  for (size_t i = 0; i < a.clients; ++i) {
    std::unique_ptr<Handshaker> hs;
    if (a.insecure) {
      hs = plain();
    } else {
      auto kp = GenerateKeyPair();
      if (!kp.ok()) return 1;
      SecureChannelOptions o;
      o.static_key = std::make_shared<const KeyPair>(std::move(*kp));
      o.expected_peer_key = server_key;
      auto h = NoiseHandshaker::Create(NoiseHandshake::Role::kInitiator, o);
      if (!h.ok()) return 1;
      hs = std::move(*h);
    }
    Status st = pool->Connect("127.0.0.1", a.port, std::move(hs));
    if (!st.ok() && ++failed < 5) std::fprintf(stderr, "load clients: %s\n", st.ToString().c_str());
  }
  std::atomic<bool> stop{false};
  std::thread hb([&] { clients.HeartbeatLoop(stop); });
  const auto deadline = t0 + std::chrono::duration<double>(a.max_s);
  // Until every session has closed (Bye after the round), the parent is gone, or the bound.
  while (std::chrono::steady_clock::now() < deadline && getppid() == parent) {
    if (clients.welcomed > 0 && clients.closed >= clients.welcomed) break;
    std::this_thread::sleep_for(100ms);
  }
  stop = true;
  hb.join();
  pool->Stop();
  std::printf("LOAD clients_connect_failures=%zu clients_welcomed=%llu tasks=%llu uploads=%llu errors=%llu\n", failed,
              static_cast<unsigned long long>(clients.welcomed.load()),
              static_cast<unsigned long long>(clients.tasks.load()),
              static_cast<unsigned long long>(clients.uploads.load()),
              static_cast<unsigned long long>(clients.errors.load()));
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace verdant

int main(int argc, char** argv) {
  verdant::Args a;
  if (!verdant::ParseArgs(argc, argv, a)) return 2;
  if (a.role == "clients") return verdant::RunClients(a);
  return verdant::RunCoordinator(a);
}
