// Codecs in a real coordinator + ClientLoop run on loopback (no LibTorch):
// the delta downlink reconstructs the coordinator's broadcast bit for bit,
// and the top-k error-feedback residual survives a client restart.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>

#include "verdant/aggregation/strategy.h"
#include "verdant/client/client_loop.h"
#include "verdant/compression/error_feedback.h"
#include "verdant/server/coordinator.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;

namespace {

constexpr size_t kParams = 20000;

// delta[i] = scale * sin(i * (seed + 1) + round); remembers the last model it got.
class ScriptedTrainer final : public LocalTrainer {
 public:
  explicit ScriptedTrainer(uint64_t seed, float scale = 0.01f) : seed_(seed), scale_(scale) {}
  std::string_view Name() const override { return "scripted"; }
  uint64_t num_examples() const override { return 100; }
  Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global, std::vector<float>& delta) override {
    last_global.assign(global.begin(), global.end());
    delta.resize(global.size());
    for (size_t i = 0; i < delta.size(); ++i) delta[i] = Delta(task.round, i);
    return TaskOutcome{100, 1.0, 0.001};
  }
  float Delta(uint64_t round, size_t i) const {
    return scale_ * std::sin(static_cast<float>(i) * static_cast<float>(seed_ + 1) * 0.37f + static_cast<float>(round));
  }
  std::vector<float> last_global;

 private:
  uint64_t seed_;
  float scale_;
};

ParameterVector Model() {
  Layout layout({{"w", {kParams}}});
  ParameterVector m(layout);
  for (size_t i = 0; i < kParams; ++i) m.values()[i] = 0.001f * static_cast<float>(i % 97);
  return m;
}

struct Run {
  std::unique_ptr<Coordinator> coord;
  std::unique_ptr<TcpServer> server;
};

Run StartRun(CoordinatorOptions o) {
  Run r;
  r.coord = std::make_unique<Coordinator>(o, Model(), std::move(*CreateStrategy("fedavg", {})),
                                          std::move(*CreateSelector("random", {})), nullptr,
                                          SystemClock::Default());
  auto s = TcpServer::Start({}, *r.coord);
  REQUIRE(s.ok());
  r.server = std::move(*s);
  return r;
}

Status RunClients(Run& run, std::vector<std::unique_ptr<ScriptedTrainer>>& trainers, const std::string& state_root) {
  std::vector<std::unique_ptr<ClientLoop>> loops;
  for (size_t i = 0; i < trainers.size(); ++i) {
    ClientLoopOptions co;
    co.port = run.server->port();
    co.name = "c" + std::to_string(i);
    co.max_reconnects = 0;
    co.seed = i + 1;
    if (!state_root.empty()) co.state_dir = state_root + "/c" + std::to_string(i);
    loops.push_back(std::make_unique<ClientLoop>(co, *trainers[i]));
  }
  std::vector<std::thread> threads;
  std::vector<Status> results(loops.size());
  for (size_t i = 0; i < loops.size(); ++i) threads.emplace_back([&, i] { results[i] = loops[i]->Run(); });
  auto summary = run.coord->Run();
  for (auto& t : threads) t.join();
  run.server->Stop();
  if (!summary.ok()) return summary.status();
  for (auto& r : results) VERDANT_RETURN_IF_ERROR(r);
  return OkStatus();
}

}  // namespace

TEST_CASE("a delta downlink reconstructs the coordinator's broadcast bit for bit and saves bytes") {
  testing::TempDir out;
  CoordinatorOptions o;
  o.rounds = 4;
  o.min_clients = 3;
  o.downlink_codec = "delta:int8";
  o.out_dir = out.path().string();
  o.heartbeat_interval_ms = 200;
  Run run = StartRun(o);
  std::vector<std::unique_ptr<ScriptedTrainer>> trainers;
  for (uint64_t i = 0; i < 3; ++i) trainers.push_back(std::make_unique<ScriptedTrainer>(i));
  Status st = RunClients(run, trainers, "");
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  // Every client trained round 4 from exactly what the coordinator believes they hold...
  auto held = run.coord->broadcast_model();
  for (auto& t : trainers) {
    REQUIRE(t->last_global.size() == held.size());
    CHECK(std::memcmp(t->last_global.data(), held.data(), held.size() * sizeof(float)) == 0);
  }
  // ...which tracks the true global model within int8's error: the global
  // model is the round-4 broadcast plus round 4's average delta, up to the
  // coding error of the deltas (the residual carries over, never accumulates).
  auto global = run.coord->global_model().values();
  double max_err = 0;
  for (size_t i = 0; i < kParams; ++i) {
    double avg = 0;
    for (auto& t : trainers) avg += t->Delta(4, i) / 3.0;
    max_err = std::max(max_err, std::fabs(static_cast<double>(global[i]) - held[i] - avg));
  }
  CHECK(max_err < 1e-3);
  // Round 1 sends float32 models; rounds 2-4 send int8 deltas (about a quarter of the bytes).
  auto rounds = testing::ReadFile(out.path() / "rounds.csv");
  std::vector<uint64_t> down;
  std::istringstream in(rounds);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, ',')) f.push_back(x);
    down.push_back(std::stoull(f[7]));
  }
  REQUIRE(down.size() == 4);
  CHECK(down[0] > 3 * kParams * 4);
  for (size_t r = 1; r < 4; ++r) {
    CHECK(down[r] < down[0] / 3);
    CHECK(down[r] > 3 * kParams);
  }
}

TEST_CASE("an fp16 downlink halves the model bytes") {
  testing::TempDir out;
  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 2;
  o.downlink_codec = "fp16";
  o.out_dir = out.path().string();
  Run run = StartRun(o);
  std::vector<std::unique_ptr<ScriptedTrainer>> trainers;
  for (uint64_t i = 0; i < 2; ++i) trainers.push_back(std::make_unique<ScriptedTrainer>(i));
  Status st = RunClients(run, trainers, "");
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  // Clients trained round 2 from fp16(global before round 2) = global - round 2's average delta.
  auto global = run.coord->global_model().values();
  for (auto& t : trainers) {
    REQUIRE(t->last_global.size() == kParams);
    for (size_t i = 0; i < kParams; i += 97) {
      const double before = global[i] - (trainers[0]->Delta(2, i) + trainers[1]->Delta(2, i)) / 2.0;
      CHECK(t->last_global[i] == doctest::Approx(before).epsilon(1e-3).scale(1e-4));
    }
  }
}

TEST_CASE("bad downlink codecs are clear errors") {
  CHECK(ParseDownlinkCodec("identity").ok());
  CHECK(ParseDownlinkCodec("fp16").ok());
  CHECK(ParseDownlinkCodec("delta:topk:0.1+int8").ok());
  auto bad = ParseDownlinkCodec("topk:0.1");
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("delta:") != std::string::npos);
  CHECK(ParseDownlinkCodec("zip9").status().message().find("identity") != std::string::npos);
}

TEST_CASE("the top-k error-feedback residual survives a client restart") {
  testing::TempDir dir;
  const std::string state = (dir.path() / "state").string();
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 1;
  o.uplink_codec = "topk:0.1";
  // Run 1: one round; the residual is saved.
  {
    Run run = StartRun(o);
    std::vector<std::unique_ptr<ScriptedTrainer>> trainers;
    trainers.push_back(std::make_unique<ScriptedTrainer>(5));
    Status st = RunClients(run, trainers, state);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
  }
  const auto file = dir.path() / "state" / "c0" / "error_feedback.bin";
  auto r1 = ErrorFeedback::LoadFromFile(file);
  REQUIRE(r1.ok());
  REQUIRE(r1->residual().size() == kParams);
  size_t nonzero = 0;
  for (float v : r1->residual()) nonzero += v != 0.0f;
  CHECK(nonzero >= kParams * 8 / 10);  // top-10% sent, the rest kept
  // Run 2: a new process (new ClientLoop) with the same state dir continues
  // from the residual: dropped coordinates hold delta + old residual.
  ScriptedTrainer reference(5);
  {
    Run run = StartRun(o);
    std::vector<std::unique_ptr<ScriptedTrainer>> trainers;
    trainers.push_back(std::make_unique<ScriptedTrainer>(5));
    Status st = RunClients(run, trainers, state);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
  }
  auto r2 = ErrorFeedback::LoadFromFile(file);
  REQUIRE(r2.ok());
  size_t carried = 0, kept = 0;
  for (size_t i = 0; i < kParams; ++i) {
    const float corrected = reference.Delta(1, i) + r1->residual()[i];
    if (r2->residual()[i] == 0.0f) {
      ++kept;
    } else {
      CHECK(r2->residual()[i] == corrected);
      ++carried;
    }
  }
  CHECK(kept >= kParams / 10);
  CHECK(carried > kParams / 2);
}
