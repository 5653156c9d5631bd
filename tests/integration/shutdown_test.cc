// SIGTERM through the `verdant` binary: the coordinator (server and demo)
// finishes or abandons the current round, keeps its checkpoint, and exits 0;
// `server --resume` then continues the run (docs/operations.md).
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "verdant/server/run_store.h"
#include "verdant/testing/process.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::Process;

namespace {

namespace fs = std::filesystem;

uint64_t LastRound(const fs::path& out) {
  auto s = RunStore::Open(out, "");
  return s.ok() ? (*s)->last_round() : 0;
}

// Waits (bounded) until the run in `out` has committed `round`.
bool WaitForRound(const fs::path& out, uint64_t round, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (LastRound(out) < round) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

size_t Lines(const fs::path& p) {
  const std::string s = testing::ReadFile(p);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST_CASE("SIGTERM stops verdant server after a committed round with exit 0 and --resume continues") {
  testing::TempDir dir;
  const fs::path out = dir.path() / "run";
  const uint16_t port = testing::FreeLoopbackPort();
  REQUIRE(port != 0);
  testing::WriteFile(dir.path() / "server.toml",
                     "[server]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                         "\"\n[run]\nrounds = 100000\nmin_clients = 2\nseed = 3\nmodel = \"synthetic:1000\"\n"
                         "round_timeout_s = 30\nshutdown_grace_s = 20\nout = \"" + out.string() + "\"\n");
  std::vector<std::unique_ptr<Process>> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(std::make_unique<Process>(
        std::vector<std::string>{VERDANT_BINARY, "client", "--server", "127.0.0.1:" + std::to_string(port), "--name",
                                 "c" + std::to_string(i), "--model", "synthetic:1000", "--no-train", "--insecure",
                                 "--max-reconnects", "-1"},
        dir.path() / ("client-" + std::to_string(i) + ".log")));
  }
  uint64_t stopped_at = 0;
  {
    Process server({VERDANT_BINARY, "server", "--config", (dir.path() / "server.toml").string(), "--insecure"},
                   dir.path() / "server-1.log");
    REQUIRE(WaitForRound(out, 3, 60s));
    server.Signal(SIGTERM);
    auto code = server.Wait(40s);
    REQUIRE(code.has_value());
    CHECK_MESSAGE(*code == 0, testing::ReadFile(dir.path() / "server-1.log"));
    stopped_at = LastRound(out);
    CHECK(stopped_at >= 3);
    const std::string summary = testing::ReadFile(out / "summary.json");
    CHECK(summary.find("stopped after round " + std::to_string(stopped_at)) != std::string::npos);
    CHECK(Lines(out / "rounds.csv") == 1 + stopped_at);
    CHECK(Lines(out / "clients.csv") == 1 + 2 * stopped_at);
  }
  // A second start without --resume must not overwrite the run.
  {
    Process again({VERDANT_BINARY, "server", "--config", (dir.path() / "server.toml").string(), "--insecure"},
                  dir.path() / "server-2.log");
    auto code = again.Wait(30s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    CHECK(testing::ReadFile(dir.path() / "server-2.log").find("--resume") != std::string::npos);
  }
  // --resume: the clients (reconnecting with backoff) join again and the
  // run goes on from the next round; SIGTERM stops it cleanly again.
  {
    Process server({VERDANT_BINARY, "server", "--resume", out.string(), "--insecure"}, dir.path() / "server-3.log");
    REQUIRE_MESSAGE(WaitForRound(out, stopped_at + 2, 60s), testing::ReadFile(dir.path() / "server-3.log"));
    server.Signal(SIGTERM);
    auto code = server.Wait(40s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    const uint64_t last = LastRound(out);
    CHECK(Lines(out / "rounds.csv") == 1 + last);
    CHECK(Lines(out / "clients.csv") == 1 + 2 * last);
  }
}

TEST_CASE("SIGTERM stops verdant demo cleanly with exit 0 and its checkpoint") {
  testing::TempDir dir;
  const fs::path out = dir.path() / "demo";
  Process demo({VERDANT_BINARY, "demo", "--clients", "2", "--rounds", "100000", "--model", "synthetic:1000",
                "--no-train", "--insecure", "--out", out.string()},
               dir.path() / "demo.log");
  REQUIRE_MESSAGE(WaitForRound(out, 2, 60s), testing::ReadFile(dir.path() / "demo.log"));
  demo.Signal(SIGTERM);
  auto code = demo.Wait(40s);
  REQUIRE(code.has_value());
  CHECK_MESSAGE(*code == 0, testing::ReadFile(dir.path() / "demo.log"));
  const uint64_t last = LastRound(out);
  CHECK(last >= 2);
  CHECK(testing::ReadFile(out / "summary.json").find("stopped after round") != std::string::npos);
  CHECK(Lines(out / "rounds.csv") == 1 + last);
}

TEST_CASE("verdant server --resume gives clear errors for a missing or foreign folder") {
  testing::TempDir dir;
  auto run = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {VERDANT_BINARY, "server"};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv, dir.path() / "out.log");
    auto code = p.Wait(30s);
    REQUIRE(code.has_value());
    return *code;
  };
  CHECK(run({}) == 2);
  CHECK(testing::ReadFile(dir.path() / "out.log").find("--resume DIR") != std::string::npos);
  CHECK(run({"--resume", (dir.path() / "nope").string(), "--insecure"}) == 2);
  CHECK(testing::ReadFile(dir.path() / "out.log").find("no such run folder") != std::string::npos);
  // A folder with a config but a run.db that is not a database.
  const fs::path bad = dir.path() / "bad";
  fs::create_directories(bad);
  testing::WriteFile(bad / "config.toml", "[run]\nmodel = \"synthetic:100\"\n");
  testing::WriteFile(bad / "run.db", std::string(8192, 'z'));
  CHECK(run({"--resume", bad.string(), "--insecure", "--listen", "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort())}) == 1);
  CHECK(testing::ReadFile(dir.path() / "out.log").find("not a") != std::string::npos);
}
