#include <doctest/doctest.h>

#include <cmath>
#include <future>
#include <map>
#include <thread>

#include "verdant/server/coordinator.h"
#include "verdant/testing/fake_client.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::FakeClient;

namespace {

// Reports the mean of the model as "accuracy" so tests can see what it did.
class MeanEvaluator final : public Evaluator {
 public:
  std::string_view Name() const override { return "mean"; }
  Result<EvalSummary> Evaluate(const ParameterVector& m) override {
    double s = 0;
    for (float v : m.values()) s += v;
    return EvalSummary{0.0, s / static_cast<double>(m.size()), m.size()};
  }
};

struct Harness {
  explicit Harness(CoordinatorOptions o, size_t dim = 1000)
      : coord(std::move(o), ParameterVector::Flat(std::vector<float>(dim, 0.0f)),
              std::move(*CreateStrategy("fedavg", {})), std::move(*CreateSelector("random", {})), &eval,
              SystemClock::Default()) {
    auto s = TcpServer::Start({}, coord);
    REQUIRE(s.ok());
    server = std::move(*s);
  }
  ~Harness() { server->Stop(); }
  uint16_t port() const { return server->port(); }
  MeanEvaluator eval;
  Coordinator coord;
  std::unique_ptr<TcpServer> server;
};

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t e = s.find('\n', start);
    if (e == std::string::npos) e = s.size();
    out.push_back(s.substr(start, e - start));
    start = e + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("honest clients complete rounds and the outputs are written") {
  testing::TempDir dir;
  CoordinatorOptions o;
  o.rounds = 3;
  o.min_clients = 3;
  o.out_dir = dir.path().string();
  o.round_timeout = 20s;
  Harness h(o);
  std::vector<std::unique_ptr<FakeClient>> clients;
  std::vector<std::thread> threads;
  std::vector<Status> results(3);
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<FakeClient>("c" + std::to_string(i), h.port()));
    clients.back()->value = static_cast<float>(i + 1);  // deltas 1, 2, 3
    clients.back()->num_examples = 100 * (i + 1);       // weights 1:2:3
  }
  for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { results[i] = clients[i]->Run(); });
  auto summary = h.coord.Run();
  for (auto& t : threads) t.join();
  REQUIRE(summary.ok());
  for (auto& r : results) CHECK(r.ok());
  CHECK(summary->rounds_completed == 3);
  // Weighted mean delta per round = (1*1 + 2*2 + 3*3)/6 = 14/6; three rounds.
  CHECK(summary->final_accuracy == doctest::Approx(3 * 14.0 / 6.0).epsilon(1e-5));
  CHECK(summary->bytes_up > 3 * 3 * 4000);
  CHECK(summary->bytes_down > 3 * 3 * 4000);
  auto rounds = Lines(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rounds.size() == 4);
  CHECK(rounds[0].rfind("round,selected,completed,failed,accuracy,loss,bytes_up,bytes_down,wall_seconds", 0) == 0);
  CHECK(rounds[1].rfind("1,3,3,0,", 0) == 0);
  auto clients_csv = Lines(testing::ReadFile(dir.path() / "clients.csv"));
  CHECK(clients_csv.size() == 1 + 9);
  auto summary_json = testing::ReadFile(dir.path() / "summary.json");
  for (const char* key : {"final_accuracy", "rounds_completed", "bytes_up", "bytes_down", "wall_seconds"}) {
    CHECK(summary_json.find(std::string("\"") + key + "\"") != std::string::npos);
  }
}

TEST_CASE("evaluate_every evaluates every N-th round and the last one, and no other round") {
  testing::TempDir dir;
  CoordinatorOptions o;
  o.rounds = 5;
  o.min_clients = 2;
  o.out_dir = dir.path().string();
  o.round_timeout = 20s;
  o.evaluate_every = 2;
  Harness h(o);
  FakeClient a("a", h.port()), b("b", h.port());
  a.value = b.value = 1.0f;
  Status ra, rb;
  std::thread ta([&] { ra = a.Run(); }), tb([&] { rb = b.Run(); });
  auto summary = h.coord.Run();
  ta.join();
  tb.join();
  REQUIRE(summary.ok());
  CHECK(ra.ok());
  CHECK(rb.ok());
  // Mean delta 1 per round: the model's mean after round r is r.
  CHECK(summary->final_accuracy == doctest::Approx(5.0));
  auto rounds = Lines(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rounds.size() == 6);
  // Column 5 is accuracy: rounds 2, 4 (every 2nd) and 5 (the last) only.
  auto accuracy = [&](size_t r) {
    std::string line = rounds[r];
    for (int i = 0; i < 4; ++i) line = line.substr(line.find(',') + 1);
    return line.substr(0, line.find(','));
  };
  CHECK(accuracy(1).empty());
  CHECK(accuracy(2) == "2");
  CHECK(accuracy(3).empty());
  CHECK(accuracy(4) == "4");
  CHECK(accuracy(5) == "5");
}

TEST_CASE("misbehaving clients fail their round while the others finish it") {
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 2;
  o.round_timeout = 3s;
  Harness h(o);
  FakeClient good("good", h.port());
  good.value = 1.0f;
  FakeClient bad("bad", h.port());
  std::string expect;
  SUBCASE("NaN in the delta") {
    bad.behaviour = FakeClient::Behaviour::kNaN;
    expect = "NaN";
  }
  SUBCASE("wrong shape") {
    bad.behaviour = FakeClient::Behaviour::kWrongShape;
    expect = "payload";
  }
  SUBCASE("disconnect mid-upload") {
    bad.behaviour = FakeClient::Behaviour::kDisconnectMidUpload;
    expect = "disconnected";
  }
  SUBCASE("silent past the deadline") {
    bad.behaviour = FakeClient::Behaviour::kSilent;
    expect = "deadline";
  }
  SUBCASE("answers for the other client's task, before it does") {
    // Task ids are guessable; a result counts only from the session its task
    // went to. The good client answers late, so the forged result comes first.
    bad.behaviour = FakeClient::Behaviour::kOthersTask;
    bad.value = 100.0f;
    good.answer_delay = 500ms;
    expect = "deadline";
  }
  std::thread tg([&] { (void)good.Run(); });
  std::thread tb([&] { (void)bad.Run(); });
  auto summary = h.coord.Run();
  (void)expect;
  tg.join();
  tb.join();
  REQUIRE(summary.ok());
  CHECK(summary->rounds_completed == 1);
  // Only the good client's delta (1.0) was applied.
  CHECK(summary->final_accuracy == doctest::Approx(1.0));
  INFO(expect);
}

TEST_CASE("a protocol version mismatch ends the session with a clear Error") {
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 1;
  o.wait_for_clients = 2s;
  Harness h(o);
  FakeClient old("old", h.port());
  old.protocol_version = 99;
  Status st = old.Run();
  CHECK(st.code() == StatusCode::kFailedPrecondition);
  CHECK(st.message().find("protocol version 99 is not supported") != std::string::npos);
  FakeClient nocodec("nocodec", h.port());
  nocodec.codec = "zstd";
  st = nocodec.Run();
  CHECK(st.message().find("codec") != std::string::npos);
  CHECK(h.coord.connected_clients() == 0);
}

TEST_CASE("garbage connections do not disturb a running round") {
  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 2;
  o.round_timeout = 10s;
  Harness h(o);
  FakeClient a("a", h.port()), b("b", h.port());
  std::thread ta([&] { (void)a.Run(); });
  std::thread tb([&] { (void)b.Run(); });
  // Hostile peers: garbage, a message before Hello, an oversize frame.
  std::vector<std::unique_ptr<testing::RawSocket>> raws;
  for (int i = 0; i < 5; ++i) {
    raws.push_back(std::make_unique<testing::RawSocket>(h.port()));
    raws.back()->Write(testing::Frame({1, 2, 3, 4, 5}));
  }
  wire::Envelope task;
  task.mutable_train_result()->set_task_id(1);
  testing::RawSocket early(h.port());
  early.Write(testing::FrameEnvelope(task));
  // A Chunk takes the session's zero-copy path; before Hello it is refused too.
  wire::Envelope chunk;
  chunk.mutable_chunk()->set_stream_id(1);
  chunk.mutable_chunk()->set_data("model bytes");
  testing::RawSocket early_chunk(h.port());
  early_chunk.Write(testing::FrameEnvelope(chunk));
  testing::RawSocket huge(h.port());
  huge.Write({0xff, 0xff, 0xff, 0xff});
  auto summary = h.coord.Run();
  ta.join();
  tb.join();
  REQUIRE(summary.ok());
  CHECK(summary->rounds_completed == 2);
  CHECK(early.WaitClosed(2000));
  CHECK(early_chunk.WaitClosed(2000));
  CHECK(huge.WaitClosed(2000));
}

TEST_CASE("the run fails clearly when too few clients connect") {
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 2;
  o.wait_for_clients = 300ms;
  Harness h(o);
  auto summary = h.coord.Run();
  CHECK(summary.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(summary.status().message().find("0 of the 2") != std::string::npos);
}

TEST_CASE("Stop ends a run that waits for clients") {
  CoordinatorOptions o;
  o.rounds = 5;
  o.min_clients = 3;
  Harness h(o);
  auto fut = std::async(std::launch::async, [&] { return h.coord.Run(); });
  std::this_thread::sleep_for(100ms);
  h.coord.Stop();
  REQUIRE(fut.wait_for(5s) == std::future_status::ready);
  CHECK(fut.get().status().code() == StatusCode::kCancelled);
}

TEST_CASE("a client that says Hello after the run ended is told the run is over, not welcomed") {
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 1;
  o.round_timeout = 10s;
  Harness h(o);
  FakeClient early("early", h.port());
  std::thread t([&] { CHECK(early.Run().ok()); });  // trains, then gets Bye
  auto summary = h.coord.Run();
  t.join();
  REQUIRE(summary.ok());
  FakeClient late("late", h.port());
  Status st = late.Run();
  CHECK(st.code() == StatusCode::kFailedPrecondition);  // FakeClient's code for an Error instead of Welcome
  CHECK(st.message().find("the run is over") != std::string::npos);
  CHECK(late.assigned_id().empty());
  CHECK(h.coord.connected_clients() == 0);
}

TEST_CASE("clients_per_round selects a subset each round") {
  CoordinatorOptions o;
  o.rounds = 4;
  o.min_clients = 4;
  o.clients_per_round = 2;
  testing::TempDir dir;
  o.out_dir = dir.path().string();
  Harness h(o, 10);
  std::vector<std::unique_ptr<FakeClient>> cs;
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) cs.push_back(std::make_unique<FakeClient>("k" + std::to_string(i), h.port()));
  // The status endpoint's per-client participation after each round, for
  // the selected and the passed-over clients alike.
  std::vector<uint64_t> selected_sums;
  std::map<std::string, uint64_t> last_counts;
  h.coord.SetRoundCallback([&](const RoundRecord&) {
    uint64_t sum = 0;
    for (const auto& c : h.coord.Snapshot(100).clients) {
      sum += c.rounds_selected;
      last_counts[c.client_id] = c.rounds_selected;
    }
    selected_sums.push_back(sum);
  });
  for (auto& c : cs) ts.emplace_back([&c] { (void)c->Run(); });
  auto summary = h.coord.Run();
  for (auto& t : ts) t.join();
  REQUIRE(summary.ok());
  int total = 0;
  for (auto& c : cs) total += c->tasks_seen();
  CHECK(total == 8);
  CHECK(selected_sums == std::vector<uint64_t>{2, 4, 6, 8});
  REQUIRE(last_counts.size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(last_counts["k" + std::to_string(i)] == static_cast<uint64_t>(cs[i]->tasks_seen()));
  auto rounds = Lines(testing::ReadFile(dir.path() / "rounds.csv"));
  CHECK(rounds[1].rfind("1,2,2,0,", 0) == 0);
}

TEST_CASE("a client whose local training fails fails its round at once not at the deadline") {
  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 2;
  o.round_timeout = 60s;
  Harness h(o);
  FakeClient good("good", h.port());
  good.value = 1.0f;
  FakeClient bad("bad", h.port());
  bad.behaviour = FakeClient::Behaviour::kTrainFails;
  std::thread tg([&] { (void)good.Run(); });
  std::thread tb([&] { (void)bad.Run(); });
  const auto t0 = std::chrono::steady_clock::now();
  auto summary = h.coord.Run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tg.join();
  tb.join();
  REQUIRE(summary.ok());
  CHECK(summary->rounds_completed == 2);
  CHECK(summary->final_accuracy == doctest::Approx(2.0));  // only the good client's deltas
  CHECK(seconds < 30.0);  // far from the 60 s deadline: the failure was reported, not waited for
  CHECK(bad.tasks_seen() == 2);  // and the session stayed up for the next round
}
