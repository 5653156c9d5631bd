// End-to-end: a coordinator and LibTorch clients on loopback, in-process and
// through the `verdant` binary. Small data subsets keep each case to seconds.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>
#include <thread>

#include "verdant/client/client_loop.h"
#include "verdant/client/dataset.h"
#include "verdant/client/model_zoo.h"
#include "verdant/client/partition.h"
#include "verdant/client/torch_local_trainer.h"
#include "verdant/client/trainer.h"
#include "verdant/server/coordinator.h"
#include "verdant/testing/temp_dir.h"
#include "verdant/testing/process.h"

using namespace verdant;
using namespace std::chrono_literals;

namespace {

class TorchEval final : public Evaluator {
 public:
  explicit TorchEval(std::unique_ptr<ModelEvaluator> e) : e_(std::move(e)) {}
  std::string_view Name() const override { return "torch"; }
  Result<EvalSummary> Evaluate(const ParameterVector& m) override {
    VERDANT_ASSIGN_OR_RETURN(EvalMetrics r, e_->Evaluate(m));
    return EvalSummary{r.loss, r.accuracy, r.num_examples};
  }

 private:
  std::unique_ptr<ModelEvaluator> e_;
};

verdant::testing::CommandResult RunBinary(const std::string& args) {
  return verdant::testing::RunCommand(VERDANT_BINARY, args);
}

}  // namespace

TEST_CASE("a coordinator and 3 LibTorch clients train for 2 rounds on loopback") {
  const std::string dir = DefaultFashionMnistDir();
  auto train = LoadFashionMnist(dir, "train", 3000);
  if (!train.ok()) {
    MESSAGE("Fashion-MNIST not installed: " << train.status().ToString());
    return;
  }
  ConfigureTorchThreads(1);
  testing::TempDir out;
  auto test = LoadFashionMnist(dir, "test", 1000);
  REQUIRE(test.ok());
  auto evaluator = ModelEvaluator::Create("mlp", std::move(*test));
  REQUIRE(evaluator.ok());
  TorchEval eval(std::move(*evaluator));
  auto initial = InitialModel("mlp", 1);
  REQUIRE(initial.ok());
  auto before = eval.Evaluate(*initial);
  REQUIRE(before.ok());

  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 3;
  o.model_name = "mlp";
  o.out_dir = out.path().string();
  o.round_timeout = 60s;
  o.heartbeat_interval_ms = 200;
  Coordinator coord(o, std::move(*initial), std::move(*CreateStrategy("fedavg", {})),
                    std::move(*CreateSelector("random", {})), &eval, SystemClock::Default());
  auto server = TcpServer::Start({}, coord);
  REQUIRE(server.ok());

  std::vector<std::unique_ptr<TorchLocalTrainer>> trainers;
  std::vector<std::unique_ptr<ClientLoop>> loops;
  for (size_t i = 0; i < 3; ++i) {
    auto idx = PartitionIndices("iid", train->labels, 10, 3, i, 7);
    REQUIRE(idx.ok());
    auto t = TorchLocalTrainer::Create(Subset(*train, *idx));
    REQUIRE(t.ok());
    trainers.push_back(std::move(*t));
    ClientLoopOptions co;
    co.port = (*server)->port();
    co.name = "it-" + std::to_string(i);
    co.max_reconnects = 0;
    loops.push_back(std::make_unique<ClientLoop>(co, *trainers.back()));
  }
  std::vector<std::thread> threads;
  std::vector<Status> results(3);
  for (size_t i = 0; i < 3; ++i) threads.emplace_back([&, i] { results[i] = loops[i]->Run(); });
  auto summary = coord.Run();
  for (auto& t : threads) t.join();
  (*server)->Stop();
  REQUIRE(summary.ok());
  for (auto& r : results) CHECK_MESSAGE(r.ok(), r.ToString());
  CHECK(summary->rounds_completed == 2);
  for (auto& l : loops) CHECK(l->tasks_completed() == 2);
  // 2 rounds of 1 epoch on 1000 examples each lift an untrained MLP well above chance.
  CHECK(summary->final_accuracy > before->accuracy + 0.2);
  CHECK(summary->final_accuracy > 0.5);
  // Each round moves the model down and its delta up: ~4 bytes/parameter each way.
  const double model_bytes = 199210.0 * 4;
  CHECK(summary->bytes_down > 2 * 3 * model_bytes);
  CHECK(summary->bytes_up > 2 * 3 * model_bytes);
  CHECK(summary->bytes_up < 2 * 3 * model_bytes * 1.05);
  auto rounds = testing::ReadFile(out.path() / "rounds.csv");
  CHECK(rounds.find("\n2,3,3,0,") != std::string::npos);
}

TEST_CASE("verdant demo runs end to end and writes its outputs") {
  if (!LoadFashionMnist(DefaultFashionMnistDir(), "test", 10).ok()) {
    MESSAGE("Fashion-MNIST not installed; skipping");
    return;
  }
  testing::TempDir out;
  auto c = RunBinary("demo --clients 3 --rounds 2 --max-examples 400 --eval-examples 1000 --partition dirichlet:0.5 "
                     "--seed 3 --out " + out.path().string());
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  CHECK(c.output.find("round   2/2") != std::string::npos);
  auto summary = testing::ReadFile(out.path() / "summary.json");
  CHECK(summary.find("\"rounds_completed\": 2") != std::string::npos);
  CHECK(std::filesystem::exists(out.path() / "logs" / "client-0.log"));
  auto rounds = testing::ReadFile(out.path() / "rounds.csv");
  CHECK(rounds.rfind("round,selected,completed,failed,accuracy,loss,bytes_up,bytes_down,wall_seconds", 0) == 0);
}

TEST_CASE("the CLI rejects bad arguments and configs with clear errors") {
  testing::TempDir dir;
  auto c = RunBinary("demo --partition dirichlet:-1 --out " + (dir.path() / "x").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("dirichlet") != std::string::npos);
  c = RunBinary("demo --model resnet9000 --out " + (dir.path() / "x").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("mlp") != std::string::npos);
  c = RunBinary("demo --strategy fedfoo --clients 1 --rounds 1 --out " + (dir.path() / "x").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("fedavg") != std::string::npos);
  c = RunBinary("demo --codec zip9 --clients 1 --rounds 1 --out " + (dir.path() / "x").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("identity") != std::string::npos);
  auto cfg = dir.path() / "bad.toml";
  testing::WriteFile(cfg, "[run]\nrounds = \"many\"\n");
  c = RunBinary("server --config " + cfg.string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("run.rounds") != std::string::npos);
  testing::WriteFile(cfg, "[run]\nroundz = 3\n");
  c = RunBinary("server --config " + cfg.string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("roundz") != std::string::npos);
  testing::WriteFile(cfg, "[run\n");
  c = RunBinary("server --config " + cfg.string());
  CHECK(c.exit_code == 2);
  testing::WriteFile(cfg, "[run]\neval_every = -1\n");
  c = RunBinary("server --config " + cfg.string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("run.eval_every must be >= 0") != std::string::npos);
  c = RunBinary("client --server nowhere --shard 0/1");
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("HOST:PORT") != std::string::npos);
}

TEST_CASE("verdant keygen writes an owner-only key pair and never replaces it") {
  testing::TempDir dir;
  auto out = dir.path() / "coord";
  auto c = RunBinary("keygen --out " + out.string());
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  CHECK(c.output.find("public key: vpk1") != std::string::npos);
  auto perms = std::filesystem::status(out / "verdant.key").permissions();
  CHECK((perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all)) ==
        std::filesystem::perms::none);
  auto pub = testing::ReadFile(out / "verdant.pub");
  CHECK(c.output.find(pub.substr(0, 52)) != std::string::npos);
  auto again = RunBinary("keygen --out " + out.string());
  CHECK(again.exit_code != 0);
  CHECK(again.output.find("already exists") != std::string::npos);
  CHECK(testing::ReadFile(out / "verdant.pub") == pub);
}

TEST_CASE("security is on by default: the server needs a key and the client a pinned coordinator key") {
  testing::TempDir dir;
  auto cfg = dir.path() / "ok.toml";
  testing::WriteFile(cfg, "[run]\nrounds = 1\n");
  auto c = RunBinary("server --config " + cfg.string() + " --listen 127.0.0.1:17071 --out " + (dir.path() / "o").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("keygen") != std::string::npos);
  c = RunBinary("client --server 127.0.0.1:1 --shard 0/1 --key " + (dir.path() / "k").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("--server-key") != std::string::npos);
  c = RunBinary("client --server 127.0.0.1:1 --shard 0/1 --key " + (dir.path() / "k").string() +
                " --server-key vpk1notakey");
  CHECK(c.exit_code == 2);
  // --insecure is accepted and warns loudly (the connection then fails: nobody listens on port 1).
  c = RunBinary("client --server 127.0.0.1:1 --shard 0/1 --max-reconnects 0 --max-examples 10 --insecure");
  CHECK(c.output.find("PLAINTEXT") != std::string::npos);
}

#ifdef VERDANT_EXAMPLE_PLUGIN
TEST_CASE("verdant demo loads the one-file example strategy plug-in and trains with it") {
  if (!LoadFashionMnist(DefaultFashionMnistDir(), "test", 10).ok()) return;
  testing::TempDir out;
  auto c = RunBinary(std::string("demo --plugin ") + VERDANT_EXAMPLE_PLUGIN +
                     " --strategy clippedmean --clip-norm 5 --clients 3 --rounds 2 --max-examples 300"
                     " --eval-examples 1000 --out " + out.path().string());
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  auto summary = testing::ReadFile(out.path() / "summary.json");
  CHECK(summary.find("\"strategy\": \"clippedmean\"") != std::string::npos);
  CHECK(summary.find("\"rounds_completed\": 2") != std::string::npos);
  // A plug-in that is not there, or options the strategy does not know, are clear errors.
  c = RunBinary("demo --plugin /nonexistent/libx.so --clients 1 --rounds 1 --out " + out.path().string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("/nonexistent/libx.so") != std::string::npos);
  c = RunBinary(std::string("demo --plugin ") + VERDANT_EXAMPLE_PLUGIN +
                " --strategy clippedmean --frobnicate 3 --clients 1 --rounds 1 --out " + out.path().string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("frobnicate") != std::string::npos);
}
#endif

TEST_CASE("strategy options on the demo command line reach the strategy") {
  testing::TempDir out;
  auto c = RunBinary("demo --strategy fedavg --server-momentum 0.9 --clients 1 --rounds 1 --out " +
                     out.path().string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("server_momentum") != std::string::npos);
  c = RunBinary("demo --strategy fedadam --server-lr --clients 1 --rounds 1 --out " + out.path().string());
  CHECK(c.exit_code == 2);
}
