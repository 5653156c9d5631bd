// Sustained transfer of a 100 MB model over loopback TCP through real
// sessions (TcpServer + ClientConnection), chunked as the coordinator does it
// (MakeChunkMessages, 1 MiB chunks, serialised once; the receiver parses each
// Envelope and reassembles with PayloadAssembler), next to libsodium's raw
// ChaCha20-Poly1305 on the same machine and in the same binary (issue 3).
//   BM_RawAead/seal|open          libsodium ChaCha20-Poly1305 IETF, 1 MiB, in place, one core
//   BM_ChannelCipher/open:0|1     the channel's own ChaCha20-Poly1305 (CipherState:
//                                 OpenSSL's), 1 MiB, in place, one core
//   BM_Upload/secure:S/sink:K/threads:T  client -> coordinator (a delta);
//                                 T = the coordinator's io threads (default 2)
//   BM_Download/secure:S/sink:K   coordinator -> client (the model)
//     secure:1 Noise XX + ChaCha20-Poly1305 records, secure:0 plaintext (--insecure);
//     sink:0 the receiver reassembles with a PayloadAssembler reusing the
//     previous transfer's buffer, as ClientLoop does; sink:1 it copies chunks into one reused model buffer
//     (the channel without reassembly allocation); sink:2 into a fresh buffer
//     of the declared size (see ModelSink).
//   BM_LoopbackHandshake/...      ClientConnection::Connect: TCP connect + handshake + session start
// Counters (see Report): B/s = payload bytes per second (decimal: 1G/s =
// 1e9 B/s); vs_raw_aead = B/s over raw one-core seal throughput (measured
// once at start-up, as BM_RawAead/open:0 does); CPU per byte of each side and
// the two-core estimate est_vs_raw, which a busy shared machine distorts less.
//   cmake -S . -B /work/build-bench -G Ninja -DVERDANT_BUILD_BENCH=ON -DVERDANT_WITH_TORCH=OFF -DVERDANT_BUILD_TESTS=OFF
//   cmake --build /work/build-bench --target secure_transfer_bench
//   /work/build-bench/bench/secure_transfer_bench --benchmark_min_time=3
#include <benchmark/benchmark.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <array>
#include <chrono>
#include <ctime>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <unistd.h>
#include <memory>
#include <mutex>
#include <vector>

#include "verdant/transport/message.h"
#include "verdant/transport/noise.h"
#include "verdant/transport/secure_channel.h"
#include "verdant/transport/session.h"

namespace {

using namespace verdant;
using namespace std::chrono_literals;

constexpr size_t kModelBytes = 100'000'000;  // 100 MB
constexpr size_t kAeadBlock = size_t{1} << 20;

void Die(const Status& st) {
  std::fprintf(stderr, "secure_transfer_bench: %s\n", st.ToString().c_str());
  std::abort();
}

// ---- raw AEAD ----------------------------------------------------------------

// Raw libsodium seal throughput (bytes/s) on one core, measured once over
// ~0.5 s of this thread's CPU time.
double RawAeadRate() {
  static const double rate = [] {
    if (sodium_init() < 0) Die(InternalError("sodium_init"));
    std::vector<uint8_t> buf(kAeadBlock + 16);
    randombytes_buf(buf.data(), buf.size());
    uint8_t key[32], nonce[12] = {};
    randombytes_buf(key, sizeof(key));
    size_t bytes = 0;
    // This thread's CPU time: one core's throughput even on a busy machine.
    auto thread_cpu = [] {
      timespec ts{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    const double t0 = thread_cpu();
    auto elapsed = [&] { return thread_cpu() - t0; };
    for (uint64_t n = 0; elapsed() < 0.5; ++n) {
      std::memcpy(nonce + 4, &n, 8);
      crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf.data(), buf.data() + kAeadBlock, nullptr, buf.data(),
                                                         kAeadBlock, nullptr, 0, nullptr, nonce, key);
      bytes += kAeadBlock;
    }
    return static_cast<double>(bytes) / elapsed();
  }();
  return rate;
}

void BM_RawAead(benchmark::State& state) {
  const bool open = state.range(0) == 1;
  if (sodium_init() < 0) Die(InternalError("sodium_init"));
  std::vector<uint8_t> pt(kAeadBlock), ct(kAeadBlock + 16), out(kAeadBlock);
  randombytes_buf(pt.data(), pt.size());
  uint8_t key[32], nonce[12] = {};
  randombytes_buf(key, sizeof(key));
  crypto_aead_chacha20poly1305_ietf_encrypt(ct.data(), nullptr, pt.data(), kAeadBlock, nullptr, 0, nullptr, nonce,
                                            key);
  uint64_t n = 0;
  for (auto _ : state) {
    if (open) {
      if (crypto_aead_chacha20poly1305_ietf_decrypt(out.data(), nullptr, nullptr, ct.data(), ct.size(), nullptr, 0,
                                                    nonce, key) != 0) {
        state.SkipWithError("decrypt failed");
      }
      benchmark::DoNotOptimize(out.data());
    } else {
      std::memcpy(nonce + 4, &n, 8);
      ++n;
      crypto_aead_chacha20poly1305_ietf_encrypt_detached(pt.data(), ct.data() + kAeadBlock, nullptr, pt.data(),
                                                         kAeadBlock, nullptr, 0, nullptr, nonce, key);
      benchmark::DoNotOptimize(pt.data());
    }
  }
  const double bytes = static_cast<double>(state.iterations()) * kAeadBlock;
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["B/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
  state.SetLabel(open ? "open" : "seal");
}
BENCHMARK(BM_RawAead)->Arg(0)->Arg(1)->ArgName("open");

// The same cipher as the channel runs it: CipherState (OpenSSL's
// ChaCha20-Poly1305, libsodium's if OpenSSL's is unavailable), 1 MiB in
// place, one core. The ceiling the channel is measured against besides
// libsodium's figure.
void BM_ChannelCipher(benchmark::State& state) {
  const bool open = state.range(0) == 1;
  std::array<uint8_t, 32> key{};
  randombytes_buf(key.data(), key.size());
  std::vector<uint8_t> pt(kAeadBlock), ct(kAeadBlock + kNoiseTagBytes), out(kAeadBlock);
  randombytes_buf(pt.data(), pt.size());
  CipherState enc, dec;
  enc.InitializeKey(key);
  dec.InitializeKey(key);
  if (!enc.EncryptWithAd({}, pt, ct.data()).ok()) Die(InternalError("seal failed"));
  std::vector<uint8_t> buf(kAeadBlock + kNoiseTagBytes);
  for (auto _ : state) {
    if (open) {
      dec.SetNonce(0);
      if (!dec.DecryptWithAd({}, ct, out.data()).ok()) state.SkipWithError("open failed");
      benchmark::DoNotOptimize(out.data());
    } else {
      if (!enc.EncryptWithAd({}, std::span<const uint8_t>(buf.data(), kAeadBlock), buf.data()).ok()) {
        state.SkipWithError("seal failed");
      }
      benchmark::DoNotOptimize(buf.data());
    }
  }
  const double bytes = static_cast<double>(state.iterations()) * kAeadBlock;
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["B/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
  state.SetLabel(internal::OpenSslAeadAvailable() ? (open ? "open, OpenSSL" : "seal, OpenSSL")
                                                  : (open ? "open, libsodium" : "seal, libsodium"));
}
BENCHMARK(BM_ChannelCipher)->Arg(0)->Arg(1)->ArgName("open");

// ---- sessions over loopback -----------------------------------------------------

struct Handshakers {
  HandshakerFactory server, client;
};

Handshakers MakeHandshakers(bool secure) {
  if (!secure) return {PlaintextHandshakerFactory(), PlaintextHandshakerFactory()};
  auto skey = GenerateKeyPair();
  auto ckey = GenerateKeyPair();
  if (!skey.ok() || !ckey.ok()) Die(InternalError("keygen"));
  const PublicKey pin = skey->public_key();
  SecureChannelOptions so;
  so.static_key = std::make_shared<const KeyPair>(std::move(*skey));
  SecureChannelOptions co;
  co.static_key = std::make_shared<const KeyPair>(std::move(*ckey));
  co.expected_peer_key = pin;
  auto s = NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, so);
  auto c = NoiseHandshakerFactory(NoiseHandshake::Role::kInitiator, co);
  if (!s.ok()) Die(s.status());
  if (!c.ok()) Die(c.status());
  return {*s, *c};
}

// Where received chunks go.
//  kAssembler: a PayloadAssembler per transfer, given the previous transfer's
//    buffer to reuse, as ClientLoop does for the model (and the coordinator,
//    with its pool of upload buffers): reassembly as the real receivers do it.
//  kReuse: each chunk's bytes copied into one model-sized buffer reused across
//    transfers (order and stream checked): the channel's cost without the
//    reassembly allocation, as a streaming consumer would see it.
//  kExact: a fresh buffer of exactly the declared size per transfer (what an
//    assembler reserving the declared size up front would cost: new pages,
//    but no regrowth and no copy on regrowth).
enum class SinkMode { kAssembler = 0, kReuse = 1, kExact = 2 };

class ModelSink {
 public:
  explicit ModelSink(SinkMode mode) : mode_(mode) {}
  void Begin(const wire::PayloadInfo& info) {
    info_ = info;
    next_seq_ = 0;
    filled_ = 0;
    if (mode_ == SinkMode::kAssembler) {
      assembler_ = std::make_unique<PayloadAssembler>(info, uint64_t{1} << 32, std::move(buffer_));
    } else if (mode_ == SinkMode::kExact) {
      buffer_ = std::vector<uint8_t>();
      buffer_.reserve(info.payload_bytes());  // fresh pages, touched by the copies
    } else if (buffer_.size() != info.payload_bytes()) {
      buffer_.assign(info.payload_bytes(), 0);
    }
  }
  Status ReceivePayload(ClientConnection& conn) {
    VERDANT_RETURN_IF_ERROR(conn.ReceivePayload(*assembler_, 30s));
    buffer_ = assembler_->Take();
    filled_ = buffer_.size();
    return OkStatus();
  }
  Status Add(const ChunkView& c) {
    if (mode_ == SinkMode::kAssembler) {
      VERDANT_RETURN_IF_ERROR(assembler_->Add(c));
      if (assembler_->complete()) {
        buffer_ = assembler_->Take();
        filled_ = buffer_.size();
      }
      return OkStatus();
    }
    if (c.stream_id != info_.stream_id() || c.seq != next_seq_ || filled_ + c.data.size() > info_.payload_bytes()) {
      return DataLossError("bad chunk");
    }
    if (mode_ == SinkMode::kExact) {
      buffer_.insert(buffer_.end(), c.data.begin(), c.data.end());
    } else {
      std::memcpy(buffer_.data() + filled_, c.data.data(), c.data.size());
    }
    filled_ += c.data.size();
    ++next_seq_;
    return OkStatus();
  }
  bool complete() const { return next_seq_ == info_.num_chunks() || filled_ == info_.payload_bytes(); }
  size_t bytes() const { return filled_; }

 private:
  SinkMode mode_;
  wire::PayloadInfo info_;
  std::unique_ptr<PayloadAssembler> assembler_;
  std::vector<uint8_t> buffer_;
  uint32_t next_seq_ = 0;
  size_t filled_ = 0;
};

// The coordinator side: receives uploads into a ModelSink on the session's
// strand, and keeps the session to send downloads from.
class SinkHandler final : public SessionHandler {
 public:
  explicit SinkHandler(SinkMode mode) : sink_(mode) {}
  void OnSessionOpen(const SessionPtr& s) override {
    std::lock_guard<std::mutex> l(mu_);
    session_ = s;
    cv_.notify_all();
  }
  void OnMessage(const SessionPtr& s, wire::Envelope&& m) override {
    if (!m.has_chunk()) {
      std::lock_guard<std::mutex> l(mu_);
      error_ = DataLossError("unexpected message");
      cv_.notify_all();
      return;
    }
    OnChunk(s, ToChunkView(m.chunk()));
  }
  // Chunks arrive as views of the decrypted frame, as in the coordinator.
  void OnChunk(const SessionPtr&, const ChunkView& c) override {
    std::lock_guard<std::mutex> l(mu_);
    if (!expecting_) {
      error_ = DataLossError("unexpected message");
    } else if (Status st = sink_.Add(c); !st.ok()) {
      error_ = st;
    } else if (sink_.complete()) {
      received_ = sink_.bytes();
      expecting_ = false;
    } else {
      return;
    }
    cv_.notify_all();
  }
  void OnSessionClosed(const SessionPtr&, const Status& reason) override {
    std::lock_guard<std::mutex> l(mu_);
    error_ = reason;
    cv_.notify_all();
  }
  void Expect(const wire::PayloadInfo& info) {
    std::lock_guard<std::mutex> l(mu_);
    sink_.Begin(info);
    expecting_ = true;
    received_ = 0;
  }
  // Bytes of the completed payload; 0 with an error.
  size_t WaitComplete() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, 60s, [&] { return received_ > 0 || !error_.ok(); });
    return error_.ok() ? received_ : 0;
  }
  SessionPtr WaitSession() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, 10s, [&] { return session_ != nullptr; });
    return session_;
  }
  Status error() {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  SessionPtr session_;
  ModelSink sink_;
  bool expecting_ = false;
  size_t received_ = 0;
  Status error_;
};

// A server, one connected client and the model's chunk messages.
// The process's threads (/proc/self/task) and their CPU time, to tell the
// coordinator side's work from the client side's.
std::set<int> ThreadIds() {
  std::set<int> ids;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    ids.insert(std::atoi(e.path().filename().c_str()));
  }
  return ids;
}

// Nanoseconds on CPU of the given threads (schedstat: first field).
double ThreadsCpuSeconds(const std::set<int>& ids) {
  uint64_t total = 0;
  for (int id : ids) {
    std::ifstream f("/proc/self/task/" + std::to_string(id) + "/schedstat");
    uint64_t ns = 0;
    if (f >> ns) total += ns;
  }
  return static_cast<double>(total) * 1e-9;
}

std::set<int> Minus(const std::set<int>& a, const std::set<int>& b) {
  std::set<int> out;
  for (int x : a) {
    if (!b.count(x)) out.insert(x);
  }
  return out;
}

struct Link {
  // `io_threads`: the coordinator's io_context threads (TcpServer default 2).
  Link(bool secure, SinkMode mode, int io_threads = 2) : handler(mode) {
    spdlog::set_level(spdlog::level::warn);
    Handshakers hs = MakeHandshakers(secure);
    TcpServer::Options so;
    so.handshaker = hs.server;
    so.threads = io_threads;
    const auto before = ThreadIds();
    auto s = TcpServer::Start(so, handler);
    if (!s.ok()) Die(s.status());
    server = std::move(*s);
    server_threads = Minus(ThreadIds(), before);
    const auto with_server = ThreadIds();
    ClientConnection::Options co;
    co.handshaker = hs.client;
    auto c = ClientConnection::Connect("127.0.0.1", server->port(), co);
    if (!c.ok()) Die(c.status());
    conn = std::move(*c);
    client_threads = Minus(ThreadIds(), with_server);
    client_threads.insert(static_cast<int>(gettid()));  // the benchmark thread drives the client
    session = handler.WaitSession();
    if (!session) Die(UnavailableError("no server session"));
    std::vector<uint8_t> model(kModelBytes);
    uint64_t x = 0x9e3779b97f4a7c15;  // xorshift: cheap, incompressible-looking bytes
    for (size_t i = 0; i + 8 <= model.size(); i += 8) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      std::memcpy(model.data() + i, &x, 8);
    }
    // VERDANT_BENCH_CHUNK_KIB overrides the chunk size (default kDefaultChunkBytes).
    uint32_t chunk_bytes = kDefaultChunkBytes;
    if (const char* kib = std::getenv("VERDANT_BENCH_CHUNK_KIB")) chunk_bytes = static_cast<uint32_t>(std::atoi(kib)) * 1024;
    chunks = MakeChunkMessages(kStream, model, chunk_bytes);  // serialised once, as the coordinator does
    info.set_stream_id(kStream);
    info.set_payload_bytes(kModelBytes);
    info.set_num_chunks(static_cast<uint32_t>(chunks.size()));
  }
  ~Link() {
    conn->Close();
    server->Stop();
  }
  static constexpr uint64_t kStream = 42;
  SinkHandler handler;
  std::unique_ptr<TcpServer> server;
  std::unique_ptr<ClientConnection> conn;
  SessionPtr session;
  std::vector<SharedBytes> chunks;
  wire::PayloadInfo info;
  std::set<int> server_threads, client_threads;
};

// CPU seconds (user + system) used so far by every thread of the process.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// Seconds of CPU time the hypervisor took from this machine's vCPUs so far
// (/proc/stat's "steal", all CPUs; 0 where it is not reported). A stolen
// core stalls the sender/receiver pipeline, so wall-clock rates fall with it.
double StealSeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return 0;
  for (auto& x : v) in >> x;  // user nice system idle iowait irq softirq steal
  return static_cast<double>(v[7]) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Wall and CPU time of a timed loop (set-up excluded): the whole process,
// and the sending and receiving sides' threads.
struct LoopClock {
  LoopClock(std::set<int> sender, std::set<int> receiver)
      : tx_threads(std::move(sender)), rx_threads(std::move(receiver)) {}
  std::set<int> tx_threads, rx_threads;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double cpu0 = ProcessCpuSeconds();
  double steal0 = StealSeconds();
  double tx0 = ThreadsCpuSeconds(tx_threads), rx0 = ThreadsCpuSeconds(rx_threads);
  double wall() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  double cpu() const { return ProcessCpuSeconds() - cpu0; }
  // Steal over the loop as a share of all vCPUs' time.
  double steal_share() const {
    const double w = wall() * static_cast<double>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
    return w > 0 ? (StealSeconds() - steal0) / w : 0;
  }
  double tx() const { return ThreadsCpuSeconds(tx_threads) - tx0; }
  double rx() const { return ThreadsCpuSeconds(rx_threads) - rx0; }
};

// Counters:
//   B/s, vs_raw_aead  wall-clock throughput, and over raw one-core seal.
//   cpu_ns/B          CPU of the whole process (both ends) per payload byte.
//   tx_ns/B, rx_ns/B  CPU per byte of the sending side's and the receiving
//                     side's threads. On a busy shared machine wall-clock
//                     rates fall with the load, these hardly move.
//   est_vs_raw        the rate two free cores would sustain, one per side
//                     (1e9 / max(tx_ns/B, rx_ns/B)), over raw seal: an
//                     estimate, to read beside vs_raw_aead.
//   steal             the hypervisor's steal over the loop, as a share of all
//                     vCPUs' time (/proc/stat): rows with a high steal show
//                     the host's load, not the channel's.
void Report(benchmark::State& state, bool secure, SinkMode mode, const LoopClock& clock) {
  const double wall = clock.wall(), cpu = clock.cpu(), tx = clock.tx(), rx = clock.rx();
  state.counters["steal"] = clock.steal_share();
  const double bytes = static_cast<double>(state.iterations()) * kModelBytes;
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["B/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
  if (wall > 0) state.counters["vs_raw_aead"] = bytes / wall / RawAeadRate();
  if (bytes > 0) {
    state.counters["cpu_ns/B"] = cpu * 1e9 / bytes;
    state.counters["tx_ns/B"] = tx * 1e9 / bytes;
    state.counters["rx_ns/B"] = rx * 1e9 / bytes;
    const double slowest = std::max(tx, rx);
    if (slowest > 0) state.counters["est_vs_raw"] = bytes / slowest / RawAeadRate();
  }
  static const char* const kSinkNames[] = {" assembler", " reuse", " exact"};
  state.SetLabel(std::string(secure ? "secure" : "plaintext") + kSinkNames[static_cast<int>(mode)]);
}

void BM_Upload(benchmark::State& state) {
  const bool secure = state.range(0) == 1;
  const auto mode = static_cast<SinkMode>(state.range(1));
  (void)RawAeadRate();
  Link link(secure, mode, static_cast<int>(state.range(2)));
  const LoopClock clock(link.client_threads, link.server_threads);
  for (auto _ : state) {
    link.handler.Expect(link.info);
    for (const auto& c : link.chunks) {
      if (!link.conn->Send(c).ok()) state.SkipWithError("send failed");
    }
    if (link.handler.WaitComplete() != kModelBytes) {
      state.SkipWithError(("upload failed: " + link.handler.error().ToString()).c_str());
      break;
    }
  }
  Report(state, secure, mode, clock);
}
// threads: the coordinator's io threads; the default 2, and 1, where no idle
// pool thread is woken for each arriving segment of a single big stream.
BENCHMARK(BM_Upload)
    ->ArgsProduct({{1, 0}, {0, 1, 2}, {2}})
    ->Args({1, 1, 1})
    ->Args({0, 1, 1})
    ->ArgNames({"secure", "sink", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Download(benchmark::State& state) {
  const bool secure = state.range(0) == 1;
  const auto mode = static_cast<SinkMode>(state.range(1));
  (void)RawAeadRate();
  Link link(secure, mode, static_cast<int>(state.range(2)));
  ModelSink sink(mode);
  const LoopClock clock(link.server_threads, link.client_threads);
  for (auto _ : state) {
    sink.Begin(link.info);
    for (const auto& c : link.chunks) link.session->Send(c);
    // The client's path (ClientLoop): chunks go from the opened frame
    // straight into the assembler.
    if (mode == SinkMode::kAssembler && !sink.ReceivePayload(*link.conn).ok()) {
      state.SkipWithError("download failed");
      break;
    }
    while (!sink.complete()) {
      auto m = link.conn->Receive(30s);
      if (!m.ok() || !m->has_chunk() || !sink.Add(ToChunkView(m->chunk())).ok()) {
        state.SkipWithError("download failed");
        break;
      }
    }
    benchmark::DoNotOptimize(sink.bytes());
  }
  Report(state, secure, mode, clock);
}
BENCHMARK(BM_Download)
    ->ArgsProduct({{1, 0}, {0, 1, 2}, {2}})
    ->Args({1, 0, 1})
    ->Args({0, 0, 1})
    ->ArgNames({"secure", "sink", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// TCP connect + handshake (Noise XX: 3 messages, 1.5 round trips) + the
// session's start, until ClientConnection::Connect returns.
void BM_LoopbackHandshake(benchmark::State& state) {
  const bool secure = state.range(0) == 1;
  spdlog::set_level(spdlog::level::warn);
  Handshakers hs = MakeHandshakers(secure);
  SinkHandler handler(SinkMode::kReuse);
  TcpServer::Options so;
  so.handshaker = hs.server;
  auto server = TcpServer::Start(so, handler);
  if (!server.ok()) Die(server.status());
  ClientConnection::Options co;
  co.handshaker = hs.client;
  for (auto _ : state) {
    auto c = ClientConnection::Connect("127.0.0.1", (*server)->port(), co);
    if (!c.ok()) {
      state.SkipWithError(c.status().ToString().c_str());
      break;
    }
    state.PauseTiming();
    (*c)->Close();
    c->reset();
    state.ResumeTiming();
  }
  (*server)->Stop();
  state.SetLabel(secure ? "secure" : "plaintext");
}
BENCHMARK(BM_LoopbackHandshake)->Arg(1)->Arg(0)->ArgName("secure")->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
