// Secure runs end to end, without LibTorch: an in-process coordinator
// (Coordinator + TcpServer) and ClientLoops whose LocalTrainer plants a known
// 64-byte pattern in every delta.
//  * Through a recording proxy, the pattern must never cross the wire in
//    clear with the secure channel, and must with plaintext (--insecure), so
//    the check can fail.
//  * A flood of half-open connections must not stop real clients from
//    finishing their rounds, and is dropped after the handshake timeout.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "verdant/client/client_loop.h"
#include "verdant/server/coordinator.h"
#include "verdant/testing/fake_client.h"
#include "verdant/testing/proxy.h"
#include "verdant/transport/secure_channel.h"

using namespace verdant;
using namespace std::chrono_literals;

namespace {

// 16 distinct, random-looking float bit patterns, all finite and normal
// (exponent field neither 0 nor 0xff): 64 bytes that occur nowhere else.
constexpr std::array<uint32_t, 16> kPatternBits = {
    0x3e8c51a7, 0xbf13d2e9, 0x3d7a0c4b, 0xc0a19f36, 0x3f5be871, 0xbe27c90d, 0x40163a5f, 0xbd94e2c3,
    0x3ec5077b, 0xbfa83d15, 0x3c61f4a9, 0xc02b7e58, 0x3f0d96e4, 0xbe73a1cf, 0x4088c52b, 0xbc3fd816};
constexpr size_t kModelParams = 4096;  // 16 KiB of float32: one chunk
constexpr size_t kPatternAt = 1000;    // where the pattern sits in the delta

std::array<float, 16> PatternFloats() {
  std::array<float, 16> f{};
  for (size_t i = 0; i < 16; ++i) f[i] = std::bit_cast<float>(kPatternBits[i]);
  return f;
}

std::vector<uint8_t> PatternBytes() {
  const auto f = PatternFloats();
  std::vector<uint8_t> b(sizeof(f));
  std::memcpy(b.data(), f.data(), b.size());  // the identity codec's byte order
  return b;
}

// Writes the pattern into an otherwise tiny delta. `before_train` runs first
// (the flood test uses it to wait for the flood to be dropped).
class PatternTrainer final : public LocalTrainer {
 public:
  std::string_view Name() const override { return "pattern"; }
  uint64_t num_examples() const override { return 100; }
  Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global,
                            std::vector<float>& delta) override {
    if (before_train) before_train(task.round);
    delta.assign(global.size(), 1e-3f);
    if (global.size() < kPatternAt + 16) return InvalidArgumentError("model too small for the pattern");
    const auto p = PatternFloats();
    std::copy(p.begin(), p.end(), delta.begin() + kPatternAt);
    return TaskOutcome{num_examples(), 0.5, 0.0};
  }
  std::function<void(uint64_t round)> before_train;
};

std::shared_ptr<const KeyPair> NewKey() {
  auto kp = GenerateKeyPair();
  REQUIRE(kp.ok());
  return std::make_shared<const KeyPair>(std::move(*kp));
}

struct Handshakers {
  HandshakerFactory server;
  std::vector<HandshakerFactory> clients;
};

// Noise XX on both sides (clients pin the coordinator's key), or plaintext
// on both sides (what --insecure runs).
Handshakers MakeHandshakers(bool secure, size_t clients) {
  Handshakers h;
  if (!secure) {
    h.server = PlaintextHandshakerFactory();
    h.clients.assign(clients, PlaintextHandshakerFactory());
    return h;
  }
  auto server_key = NewKey();
  SecureChannelOptions so;
  so.static_key = server_key;
  auto s = NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, so);
  REQUIRE(s.ok());
  h.server = *s;
  for (size_t i = 0; i < clients; ++i) {
    SecureChannelOptions co;
    co.static_key = NewKey();
    co.expected_peer_key = server_key->public_key();
    auto c = NoiseHandshakerFactory(NoiseHandshake::Role::kInitiator, co);
    REQUIRE(c.ok());
    h.clients.push_back(*c);
  }
  return h;
}

CoordinatorOptions RunOptions(size_t clients) {
  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = clients;
  o.model_name = "pattern";
  o.uplink_codec = "identity";
  o.round_timeout = 30s;
  o.wait_for_clients = 30s;
  o.heartbeat_interval_ms = 200;
  return o;
}

struct RunResult {
  Result<RunSummary> summary = InternalError("not run");
  std::vector<Status> client_status;
  std::vector<uint64_t> tasks_completed;
  std::vector<float> final_model;
};

// One coordinator, `clients` ClientLoops, 2 rounds. Clients connect to
// `client_port(server_port)` (the proxy's port, or the server's own).
RunResult RunRounds(const Handshakers& hs, TcpServer::Options server_options,
                    std::vector<std::unique_ptr<PatternTrainer>>& trainers,
                    const std::function<uint16_t(uint16_t)>& client_port,
                    const std::function<void(TcpServer&)>& before_clients = nullptr) {
  const size_t n = trainers.size();
  Coordinator coord(RunOptions(n), ParameterVector::Flat(std::vector<float>(kModelParams, 0.0f)),
                    std::move(*CreateStrategy("fedavg", {})), std::move(*CreateSelector("random", {})),
                    /*evaluator=*/nullptr, SystemClock::Default());
  server_options.handshaker = hs.server;
  auto server = TcpServer::Start(server_options, coord);
  REQUIRE(server.ok());
  if (before_clients) before_clients(**server);
  const uint16_t port = client_port((*server)->port());
  std::vector<std::unique_ptr<ClientLoop>> loops;
  for (size_t i = 0; i < n; ++i) {
    ClientLoopOptions co;
    co.port = port;
    co.name = "secure-run-" + std::to_string(i);
    co.max_reconnects = 0;
    co.connection.handshaker = hs.clients[i];
    co.connection.session.handshake_timeout = 10s;
    loops.push_back(std::make_unique<ClientLoop>(co, *trainers[i]));
  }
  RunResult r;
  r.client_status.resize(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) threads.emplace_back([&, i] { r.client_status[i] = loops[i]->Run(); });
  r.summary = coord.Run();
  if (!r.summary.ok()) {
    for (auto& l : loops) l->Stop();
  }
  for (auto& t : threads) t.join();
  for (auto& l : loops) r.tasks_completed.push_back(l->tasks_completed());
  const auto v = coord.global_model().values();
  r.final_model.assign(v.begin(), v.end());
  (*server)->Stop();
  return r;
}

struct Capture {
  RunResult run;
  std::vector<uint8_t> up, down;  // client->server, server->client
};

Capture PlantedPatternRun(bool secure) {
  constexpr size_t kClients = 3;
  std::vector<std::unique_ptr<PatternTrainer>> trainers;
  for (size_t i = 0; i < kClients; ++i) trainers.push_back(std::make_unique<PatternTrainer>());
  std::unique_ptr<testing::RecordingProxy> proxy;
  Capture c;
  c.run = RunRounds(MakeHandshakers(secure, kClients), {}, trainers, [&](uint16_t server_port) {
    auto p = testing::RecordingProxy::Start(server_port);
    REQUIRE(p.ok());
    proxy = std::move(*p);
    return proxy->port();
  });
  proxy->Stop();
  CHECK(proxy->connections_accepted() == kClients);
  c.up = proxy->ClientToServer();
  c.down = proxy->ServerToClient();
  return c;
}

void CheckRunCompleted(const RunResult& r) {
  REQUIRE_MESSAGE(r.summary.ok(), r.summary.status().ToString());
  CHECK(r.summary->rounds_completed == 2);
  for (const auto& s : r.client_status) CHECK_MESSAGE(s.ok(), s.ToString());
  for (uint64_t t : r.tasks_completed) CHECK(t == 2);
}

// FedAvg of identical deltas, two rounds: the global model holds ~2x the pattern.
void CheckPatternReachedCoordinator(const RunResult& r) {
  REQUIRE(r.final_model.size() == kModelParams);
  const auto p = PatternFloats();
  for (size_t i = 0; i < 16; ++i) {
    CAPTURE(i);
    CHECK(r.final_model[kPatternAt + i] == doctest::Approx(2.0 * p[i]).epsilon(1e-5));
  }
}

}  // namespace

TEST_CASE("secure run: a planted 64-byte pattern never crosses the wire in clear") {
  Capture c = PlantedPatternRun(/*secure=*/true);
  CheckRunCompleted(c.run);
  CheckPatternReachedCoordinator(c.run);
  // Every delta (3 clients x 2 rounds x 16 KiB) and model went through the proxy.
  CHECK(c.up.size() > 2 * 3 * kModelParams * sizeof(float));
  CHECK(c.down.size() > 2 * 3 * kModelParams * sizeof(float));
  const auto pattern = PatternBytes();
  CHECK_FALSE(testing::Contains(c.up, pattern));
  CHECK_FALSE(testing::Contains(c.down, pattern));
  // Not even half of it (32 bytes) appears.
  const std::vector<uint8_t> half(pattern.begin(), pattern.begin() + 32);
  CHECK_FALSE(testing::Contains(c.up, half));
}

TEST_CASE("secure run: with --insecure plaintext the planted pattern is visible on the wire") {
  // The control for the test above: the same run and capture, without the
  // secure channel, must expose the pattern, or the check proves nothing.
  Capture c = PlantedPatternRun(/*secure=*/false);
  CheckRunCompleted(c.run);
  CheckPatternReachedCoordinator(c.run);
  CHECK(testing::Contains(c.up, PatternBytes()));
}

TEST_CASE("secure run: a half-open connection flood does not stop clients finishing their rounds") {
  constexpr size_t kClients = 3;
  constexpr size_t kFlood = 200;
  constexpr auto kHandshakeTimeout = 2000ms;
  std::vector<std::unique_ptr<PatternTrainer>> trainers;
  for (size_t i = 0; i < kClients; ++i) trainers.push_back(std::make_unique<PatternTrainer>());
  const Handshakers hs = MakeHandshakers(/*secure=*/true, kClients);

  // A genuine msg1 to send half of, or all of (then stall after msg2).
  auto probe = hs.clients[0]();
  auto start = probe->Start();
  REQUIRE(start.ok());
  const std::vector<uint8_t> msg1 = start->front();
  std::vector<uint8_t> header_then_half(4);
  PutFrameHeader(static_cast<uint32_t>(msg1.size()), header_then_half.data());
  header_then_half.insert(header_then_half.end(), msg1.begin(), msg1.begin() + msg1.size() / 2);

  std::vector<std::unique_ptr<testing::RawSocket>> flood;
  std::chrono::steady_clock::time_point flood_start;
  std::atomic<size_t> sessions_seen_in_round2{0};
  std::atomic<bool> flood_gone_in_round2{false};
  TcpServer* server = nullptr;
  // Round 2 starts training only once the flood is gone (or 10 s passed), so
  // the session count is checked while the real clients are still connected.
  for (auto& t : trainers) {
    t->before_train = [&](uint64_t round) {
      if (round != 2) return;
      const auto end = std::chrono::steady_clock::now() + 10s;
      while (server->session_count() > kClients && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(10ms);
      }
      sessions_seen_in_round2 = server->session_count();
      if (sessions_seen_in_round2 == kClients) flood_gone_in_round2 = true;
    };
  }
  TcpServer::Options so;
  so.session.handshake_timeout = kHandshakeTimeout;
  RunResult r = RunRounds(
      hs, so, trainers, [](uint16_t p) { return p; },
      [&](TcpServer& s) {
        server = &s;
        flood_start = std::chrono::steady_clock::now();
        for (size_t i = 0; i < kFlood; ++i) {
          auto raw = std::make_unique<testing::RawSocket>(s.port());
          REQUIRE(raw->connected());
          if (i % 3 == 1) raw->Write(header_then_half);      // half a handshake message
          if (i % 3 == 2) raw->Write(testing::Frame(msg1));  // msg1, then silence after msg2
          flood.push_back(std::move(raw));                   // i % 3 == 0: sends nothing
        }
        // Every flood connection is accepted and holds a session slot.
        const auto end = std::chrono::steady_clock::now() + 5s;
        while (s.session_count() < kFlood && std::chrono::steady_clock::now() < end) {
          std::this_thread::sleep_for(5ms);
        }
        CHECK(s.session_count() == kFlood);
        CHECK(std::chrono::steady_clock::now() - flood_start < kHandshakeTimeout);  // all alive at once
      });
  CheckRunCompleted(r);
  CHECK(flood_gone_in_round2);
  CHECK(sessions_seen_in_round2 == kClients);
  // Every flood connection was closed by the server.
  size_t closed = 0;
  for (auto& raw : flood) closed += raw->WaitClosed(3000) ? 1 : 0;
  CHECK(closed == kFlood);
}
