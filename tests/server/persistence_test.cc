// Persistence, resume, over-selection and graceful shutdown of the
// coordinator (run_store.h, docs/operations.md), with protocol-level fake
// clients on 127.0.0.1.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "verdant/server/coordinator.h"
#include "verdant/server/run_store.h"
#include "verdant/testing/fake_client.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::FakeClient;

namespace {

class MeanEvaluator final : public Evaluator {
 public:
  std::string_view Name() const override { return "mean"; }
  Result<EvalSummary> Evaluate(const ParameterVector& m) override {
    double s = 0;
    for (float v : m.values()) s += v;
    return EvalSummary{0.0, s / static_cast<double>(m.size()), m.size()};
  }
};

// A coordinator with FedAvgM (server momentum: state that must survive a
// resume) and the random selector (RNG and participation history).
struct Node {
  explicit Node(CoordinatorOptions o, size_t dim = 257)
      : coord(std::move(o), ParameterVector::Flat(std::vector<float>(dim, 0.0f)),
              std::move(*CreateStrategy("fedavgm", OptionMap{{"momentum", "0.9"}})),
              std::move(*CreateSelector("random", {})), &eval, SystemClock::Default()) {
    auto s = TcpServer::Start({}, coord);
    REQUIRE(s.ok());
    server = std::move(*s);
  }
  ~Node() { server->Stop(); }
  MeanEvaluator eval;
  Coordinator coord;
  std::unique_ptr<TcpServer> server;
};

struct ClientSpec {
  std::string name;
  float value;
  uint64_t examples;
  FakeClient::Behaviour behaviour = FakeClient::Behaviour::kHonest;
};

const std::vector<ClientSpec> kThree = {{"a", 0.5f, 100}, {"b", 0.25f, 200}, {"c", -1.0f, 300}};

// Runs `node` to completion with one fake client per spec.
Result<RunSummary> RunWith(Node& node, const std::vector<ClientSpec>& specs) {
  std::vector<std::unique_ptr<FakeClient>> clients;
  std::vector<std::thread> threads;
  for (const auto& s : specs) {
    clients.push_back(std::make_unique<FakeClient>(s.name, node.server->port()));
    clients.back()->value = s.value;
    clients.back()->num_examples = s.examples;
    clients.back()->behaviour = s.behaviour;
  }
  for (auto& c : clients) threads.emplace_back([&c] { (void)c->Run(); });
  auto summary = node.coord.Run();
  node.server->Stop();
  for (auto& t : threads) t.join();
  return summary;
}

CoordinatorOptions Options(const std::filesystem::path& dir, uint64_t rounds) {
  CoordinatorOptions o;
  o.rounds = rounds;
  o.min_clients = 3;
  o.clients_per_round = 2;
  o.seed = 7;
  o.round_timeout = 20s;
  o.out_dir = dir.string();
  o.energy.grid_time_start = TimePoint(std::chrono::hours(24 * 365 * 52));
  return o;
}

std::vector<float> Values(const ParameterVector& p) { return {p.values().begin(), p.values().end()}; }

size_t CountLines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

std::vector<std::string> SplitCsv(const std::string& line) {
  std::vector<std::string> f;
  std::istringstream ls(line);
  std::string x;
  while (std::getline(ls, x, ',')) f.push_back(x);
  if (!line.empty() && line.back() == ',') f.emplace_back();
  return f;
}

// clients.csv without the columns that depend on socket timing (bytes,
// radio/idle energy, emissions): round, client_id, status, compute_joules,
// intensity_source.
std::vector<std::string> StableClientRows(const std::string& csv) {
  std::vector<std::string> out;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  const auto header = SplitCsv(line);
  const size_t source = static_cast<size_t>(std::find(header.begin(), header.end(), "intensity_source") - header.begin());
  REQUIRE(source < header.size());
  while (std::getline(in, line)) {
    const auto f = SplitCsv(line);
    REQUIRE(f.size() == header.size());
    if (f[2] == "completed") CHECK_FALSE(f[source].empty());
    out.push_back(f[0] + "," + f[1] + "," + f[2] + "," + f[5] + "," + f[source]);
  }
  // Within a round, rows follow the order results arrived in.
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("checkpoint files round trip and reject corruption") {
  CoordinatorCheckpoint c;
  c.round = 3;
  c.model_version = 4;
  c.layout_fingerprint = 99;
  c.global = {1.0f, -2.5f, 3.25f};
  c.broadcast = {1.0f, -2.0f, 3.0f};
  c.broadcast_version = 3;
  c.strategy_state = std::string("opt\0state", 9);
  c.selector_state = "{\"x\":1}";
  Rng r(5);
  (void)r.Normal();
  c.rng = r.state();
  c.next_task_id = 17;
  c.grid_offset_us = -12;
  const std::string bytes = EncodeCheckpoint(c);
  auto back = DecodeCheckpoint(bytes);
  REQUIRE(back.ok());
  CHECK(EncodeCheckpoint(*back) == bytes);
  CHECK(back->global == c.global);
  CHECK(back->strategy_state == c.strategy_state);
  CHECK(back->next_task_id == 17);
  CHECK(back->rng.has_spare_normal);
  for (size_t i : {size_t{0}, size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[i] ^= 0x40;
    CHECK(DecodeCheckpoint(bad).status().code() == StatusCode::kDataLoss);
  }
  for (size_t cut : {size_t{0}, size_t{3}, bytes.size() - 1}) {
    CHECK(DecodeCheckpoint(std::string_view(bytes).substr(0, cut)).status().code() == StatusCode::kDataLoss);
  }
}

TEST_CASE("the run store refuses missing corrupt and foreign runs clearly") {
  testing::TempDir dir;
  const auto run = dir.path() / "run";
  CHECK(RunStore::Open(dir.path() / "nope", "a=1\n").status().code() == StatusCode::kNotFound);
  std::filesystem::create_directories(run);
  CHECK(RunStore::Open(run, "a=1\n").status().code() == StatusCode::kNotFound);
  testing::WriteFile(run / "run.db", std::string(4096, 'x'));
  auto garbage = RunStore::Open(run, "a=1\n");
  CHECK(garbage.status().code() == StatusCode::kDataLoss);
  for (const char* f : {"run.db", "run.db-wal", "run.db-shm"}) std::filesystem::remove(run / f);

  auto s = RunStore::Create(run, "model=m\nseed=1\n", false);
  REQUIRE(s.ok());
  CoordinatorCheckpoint c;
  c.global = {1, 2, 3};
  REQUIRE((*s)->Commit(c, nullptr, {}).ok());
  s->reset();
  auto again = RunStore::Create(run, "model=m\nseed=1\n", false);
  CHECK(again.status().code() == StatusCode::kAlreadyExists);
  CHECK(again.status().message().find("--resume") != std::string::npos);
  auto other = RunStore::Open(run, "model=m\nseed=2\n");
  CHECK(other.status().code() == StatusCode::kFailedPrecondition);
  CHECK(other.status().message().find("seed=1") != std::string::npos);
  auto ok = RunStore::Open(run, "model=m\nseed=1\n");
  REQUIRE(ok.ok());
  CHECK((*ok)->LoadCheckpoint().ok());
  ok->reset();
  // A flipped byte in the checkpoint: kDataLoss, not a crash.
  const auto file = run / "checkpoint-000000.bin";
  std::string bytes = testing::ReadFile(file);
  bytes[bytes.size() / 2] ^= 1;
  testing::WriteFile(file, bytes);
  auto damaged = RunStore::Open(run, "model=m\nseed=1\n");
  REQUIRE(damaged.ok());
  CHECK((*damaged)->LoadCheckpoint().status().code() == StatusCode::kDataLoss);
}

TEST_CASE("a resumed run ends with the same model and ledger as an uninterrupted one") {
  testing::TempDir dir;
  // Uninterrupted: 5 rounds.
  std::vector<float> model_a;
  std::string clients_a, rounds_a;
  {
    Node n(Options(dir.path() / "a", 5));
    auto s = RunWith(n, kThree);
    REQUIRE(s.ok());
    model_a = Values(n.coord.global_model());
    clients_a = testing::ReadFile(dir.path() / "a" / "clients.csv");
    rounds_a = testing::ReadFile(dir.path() / "a" / "rounds.csv");
  }
  // Interrupted after round 2 (a stopped process), then resumed to round 5.
  {
    Node n(Options(dir.path() / "b", 2));
    REQUIRE(RunWith(n, kThree).ok());
  }
  auto o = Options(dir.path() / "b", 5);
  o.resume = true;
  Node n(o);
  auto s = RunWith(n, kThree);
  REQUIRE(s.ok());
  CHECK(s->rounds_completed == 5);
  const auto model_b = Values(n.coord.global_model());
  REQUIRE(model_b.size() == model_a.size());
  CHECK(std::memcmp(model_a.data(), model_b.data(), model_a.size() * sizeof(float)) == 0);
  const std::string clients_b = testing::ReadFile(dir.path() / "b" / "clients.csv");
  CHECK(CountLines(clients_b) == 1 + 5 * 2);
  CHECK(StableClientRows(clients_b) == StableClientRows(clients_a));
  CHECK(CountLines(testing::ReadFile(dir.path() / "b" / "rounds.csv")) == CountLines(rounds_a));
  // The registry kept every client's history across the two processes.
  auto store = RunStore::Open(dir.path() / "b", "");
  REQUIRE(store.ok());
  CHECK((*store)->last_round() == 5);
  auto reg = (*store)->LoadRegistry();
  REQUIRE(reg.ok());
  uint64_t selected = 0;
  for (const auto& [id, h] : *reg) selected += h.rounds_selected;
  CHECK(selected == 10);
}

TEST_CASE("resume rejects a damaged checkpoint and another configuration without touching the outputs") {
  testing::TempDir dir;
  {
    Node n(Options(dir.path(), 1));
    REQUIRE(RunWith(n, kThree).ok());
  }
  const std::string rounds_before = testing::ReadFile(dir.path() / "rounds.csv");
  {
    auto o = Options(dir.path(), 3);
    o.resume = true;
    o.seed = 8;
    Node n(o);
    auto s = n.coord.Run();
    CHECK(s.status().code() == StatusCode::kFailedPrecondition);
    CHECK(s.status().message().find("seed") != std::string::npos);
  }
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("checkpoint-", 0) != 0) continue;
    std::string bytes = testing::ReadFile(e.path());
    bytes.resize(bytes.size() - 7);  // truncated
    testing::WriteFile(e.path(), bytes);
  }
  auto o = Options(dir.path(), 3);
  o.resume = true;
  Node n(o);
  auto s = n.coord.Run();
  CHECK(s.status().code() == StatusCode::kDataLoss);
  CHECK(testing::ReadFile(dir.path() / "rounds.csv") == rounds_before);
  // A fresh run into a folder that holds one, when replacing is off.
  auto fresh = Options(dir.path(), 3);
  fresh.replace_existing_run = false;
  Node m(fresh);
  CHECK(m.coord.Run().status().code() == StatusCode::kAlreadyExists);
}

TEST_CASE("over-selection closes a round at the first K results and records stragglers as abandoned") {
  testing::TempDir dir;
  auto o = Options(dir.path(), 3);
  o.clients_per_round = 2;
  o.over_selection = 0.5;  // select 3, keep the first 2
  o.round_timeout = 60s;   // a straggler would hold each round for a minute
  Node n(o);
  std::vector<ClientSpec> specs = kThree;
  specs[2].behaviour = FakeClient::Behaviour::kSilent;
  const auto t0 = std::chrono::steady_clock::now();
  auto s = RunWith(n, specs);
  REQUIRE(s.ok());
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  const std::string csv = testing::ReadFile(dir.path() / "clients.csv");
  CHECK(CountLines(csv) == 1 + 3 * 3);
  size_t abandoned = 0, pos = 0;
  while ((pos = csv.find(",abandoned,", pos)) != std::string::npos) {
    ++abandoned;
    ++pos;
  }
  CHECK(abandoned == 3);
  CHECK(csv.find("straggler") != std::string::npos);
  // The failures reached the client's history (the registry).
  auto store = RunStore::Open(dir.path(), "");
  REQUIRE(store.ok());
  auto reg = (*store)->LoadRegistry();
  REQUIRE(reg.ok());
  CHECK((*reg)["c"].rounds_failed == 3);
  CHECK((*reg)["c"].rounds_completed == 0);
  CHECK((*reg)["a"].rounds_completed == 3);
}

TEST_CASE("Drain abandons a round that cannot finish in its grace period and the run resumes it") {
  testing::TempDir dir;
  auto o = Options(dir.path(), 2);
  o.clients_per_round = 0;
  o.round_timeout = 60s;
  std::vector<ClientSpec> specs = kThree;
  specs[1].behaviour = FakeClient::Behaviour::kSilent;
  {
    Node n(o);
    std::vector<std::unique_ptr<FakeClient>> clients;
    std::vector<std::thread> threads;
    for (const auto& sp : specs) {
      clients.push_back(std::make_unique<FakeClient>(sp.name, n.server->port()));
      clients.back()->behaviour = sp.behaviour;
    }
    for (auto& c : clients) threads.emplace_back([&c] { (void)c->Run(); });
    auto fut = std::async(std::launch::async, [&] { return n.coord.Run(); });
    while (clients[1]->tasks_seen() == 0) std::this_thread::sleep_for(10ms);
    n.coord.Drain(200ms);
    REQUIRE(fut.wait_for(10s) == std::future_status::ready);
    auto s = fut.get();
    REQUIRE(s.ok());
    CHECK(s->rounds_completed == 0);
    CHECK(s->strings["status"].find("abandoned") != std::string::npos);
    n.server->Stop();
    for (auto& t : threads) t.join();
  }
  auto store = RunStore::Open(dir.path(), "");
  REQUIRE(store.ok());
  CHECK((*store)->last_round() == 0);
  store->reset();
  // The abandoned round left no row behind; a resume runs both rounds.
  CHECK(CountLines(testing::ReadFile(dir.path() / "clients.csv")) == 1);
  o.resume = true;
  Node n(o);
  auto s = RunWith(n, kThree);
  REQUIRE(s.ok());
  CHECK(s->rounds_completed == 2);
  CHECK(CountLines(testing::ReadFile(dir.path() / "clients.csv")) == 1 + 2 * 3);
}

TEST_CASE("a client that restarts mid-upload fails that round only and its partial upload is discarded") {
  testing::TempDir dir;
  CoordinatorOptions o = Options(dir.path(), 3);
  o.min_clients = 2;
  o.clients_per_round = 0;
  Node n(o);
  // Time for the restarted client to join before round 2 is selected.
  n.coord.SetRoundCallback([](const RoundRecord& r) {
    if (r.round == 1) std::this_thread::sleep_for(500ms);
  });
  FakeClient a("a", n.server->port());
  a.value = 0.5f;
  FakeClient b1("b", n.server->port());
  b1.value = 100.0f;  // would move the mean far if any of it were used
  b1.behaviour = FakeClient::Behaviour::kDisconnectMidUpload;
  std::thread ta([&] { (void)a.Run(); });
  std::thread tb([&] {
    (void)b1.Run(1);  // drops the connection half-way through its upload
    FakeClient b2("b", n.server->port());
    b2.value = 0.5f;
    (void)b2.Run();
  });
  auto s = n.coord.Run();
  n.server->Stop();
  ta.join();
  tb.join();
  REQUIRE(s.ok());
  const std::string csv = testing::ReadFile(dir.path() / "clients.csv");
  auto rows = StableClientRows(csv);
  size_t b_failed = 0, b_completed = 0;
  for (const auto& r : rows) {
    if (r.find(",b,failed") != std::string::npos) {
      ++b_failed;
      CHECK(r.rfind("1,", 0) == 0);  // round 1 only
    }
    if (r.find(",b,completed") != std::string::npos) ++b_completed;
  }
  CHECK(b_failed == 1);
  CHECK(b_completed == 2);  // rounds 2 and 3
  // Round 1's aggregate is a's delta alone (FedAvgM's first step: 0.5).
  const std::string rounds = testing::ReadFile(dir.path() / "rounds.csv");
  std::istringstream in(rounds);
  std::string header, first;
  std::getline(in, header);
  std::getline(in, first);
  CHECK(first.find(",0.5,") != std::string::npos);
}
