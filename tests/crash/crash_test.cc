// Crash test (CTest label `crash`, `ctest -L crash`): the `verdant server`
// process is killed with SIGKILL at random moments of a run — at least 20
// times — and restarted with --resume; its three `verdant client
// --no-train` processes reconnect by themselves. The final model (from the
// checkpoint), the ledger rows (run.db) and the CSV outputs must equal
// those of an uninterrupted run with the same seed (docs/operations.md,
// "Determinism"). Bounded: every wait has a timeout; about a minute.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "verdant/server/run_store.h"
#include "verdant/testing/process.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::Process;

namespace {

namespace fs = std::filesystem;

constexpr int kClients = 3;
constexpr uint64_t kRounds = 400;
constexpr int kKills = 24;

std::string Config(uint16_t port, const fs::path& out) {
  return "[server]\nlisten = \"127.0.0.1:" + std::to_string(port) +
         "\"\n"
         "[run]\nrounds = " + std::to_string(kRounds) +
         "\nmin_clients = 3\nclients_per_round = 2\nseed = 5\nmodel = \"synthetic:3000\"\n"
         "codec = \"identity\"\nround_timeout_s = 30\nwait_for_clients_s = 60\nout = \"" + out.string() +
         "\"\n"
         "[strategy]\nname = \"fedavgm\"\nmomentum = 0.9\n"
         "[carbon]\nconstant_g_per_kwh = 300\nstart = \"2022-06-01T00:00:00Z\"\n";
}

std::vector<std::string> ServerArgs(const fs::path& config, const fs::path& out, bool resume) {
  std::vector<std::string> a = {VERDANT_BINARY, "server", "--insecure", "--log-level", "warn"};
  if (resume) {
    a.insert(a.end(), {"--resume", out.string()});
  } else {
    a.insert(a.end(), {"--config", config.string()});
  }
  return a;
}

std::vector<std::unique_ptr<Process>> StartClients(uint16_t port, const fs::path& dir) {
  std::vector<std::unique_ptr<Process>> out;
  for (int i = 0; i < kClients; ++i) {
    out.push_back(std::make_unique<Process>(
        std::vector<std::string>{VERDANT_BINARY, "client", "--server", "127.0.0.1:" + std::to_string(port), "--name",
                                 "client-" + std::to_string(i), "--shard",
                                 std::to_string(i) + "/" + std::to_string(kClients), "--seed", "5", "--model",
                                 "synthetic:3000", "--no-train", "--insecure", "--max-reconnects", "-1",
                                 "--log-level", "warn"},
        dir / ("client-" + std::to_string(i) + ".log")));
    REQUIRE(out.back()->started());
  }
  return out;
}

struct Outcome {
  std::vector<float> model;
  uint64_t model_version = 0;
  // (round, client, status, examples, compute J, samples) per ledger row.
  std::vector<std::tuple<uint64_t, std::string, std::string, uint64_t, double, uint64_t>> rows;
  std::vector<std::tuple<std::string, uint64_t, uint64_t, uint64_t>> registry;
  std::vector<std::tuple<uint64_t, size_t, size_t, size_t, bool>> rounds;
};

Outcome Read(const fs::path& out) {
  Outcome o;
  auto store = RunStore::Open(out, "");
  REQUIRE(store.ok());
  CHECK((*store)->last_round() == kRounds);
  auto ckpt = (*store)->LoadCheckpoint();
  REQUIRE(ckpt.ok());
  o.model = ckpt->global;
  o.model_version = ckpt->model_version;
  auto rounds = (*store)->LoadRounds();
  REQUIRE(rounds.ok());
  for (const auto& r : *rounds) {
    o.rounds.emplace_back(r.record.round, r.record.selected, r.record.completed, r.record.failed,
                          r.record.model_updated);
    for (const auto& c : r.clients) {
      REQUIRE(c.ledger.has_value());
      o.rows.emplace_back(c.report.round, c.report.client_id, c.report.status, c.report.num_examples,
                          c.ledger->compute.joules(), c.ledger->samples);
    }
  }
  std::sort(o.rows.begin(), o.rows.end());
  auto reg = (*store)->LoadRegistry();
  REQUIRE(reg.ok());
  for (const auto& [id, h] : *reg) o.registry.emplace_back(id, h.rounds_selected, h.rounds_completed, h.rounds_failed);
  return o;
}

size_t Lines(const fs::path& p) {
  const std::string s = testing::ReadFile(p);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST_CASE("a coordinator killed with SIGKILL 20+ times and resumed ends exactly like an uninterrupted run") {
  const uint64_t seed = testing::TestSeed(20261203);
  MESSAGE("seed " << seed << " (VERDANT_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  const auto test_start = std::chrono::steady_clock::now();

  // 1. The reference: one uninterrupted run.
  const fs::path ref = dir.path() / "ref";
  double reference_seconds = 0;
  {
    const uint16_t port = testing::FreeLoopbackPort();
    REQUIRE(port != 0);
    testing::WriteFile(dir.path() / "ref.toml", Config(port, ref));
    const auto t0 = std::chrono::steady_clock::now();
    Process server(ServerArgs(dir.path() / "ref.toml", ref, false), dir.path() / "ref-server.log");
    auto clients = StartClients(port, dir.path());
    auto code = server.Wait(120s);
    REQUIRE_MESSAGE(code.has_value(), "the reference run did not finish in 120 s");
    REQUIRE_MESSAGE(*code == 0, testing::ReadFile(dir.path() / "ref-server.log"));
    reference_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& c : clients) CHECK(c->Wait(30s).value_or(-1) == 0);
  }
  MESSAGE("uninterrupted run: " << kRounds << " rounds in " << reference_seconds << " s");

  // 2. The same run, killed at random moments and resumed each time.
  const fs::path out = dir.path() / "crash";
  const uint16_t port = testing::FreeLoopbackPort();
  REQUIRE(port != 0);
  testing::WriteFile(dir.path() / "crash.toml", Config(port, out));
  auto clients = StartClients(port, dir.path());
  int kills = 0, starts = 0;
  std::vector<uint64_t> rounds_at_kill;
  std::optional<int> final_code;
  // Each kill waits for 0-3 more rounds to commit, then a random part of
  // a round's time: kills land while waiting for clients, mid-round, and
  // right around a commit.
  const double round_ms = 1000.0 * reference_seconds / kRounds;
  std::uniform_real_distribution<double> delay_ms(0.0, 1.5 * round_ms);
  std::uniform_int_distribution<uint64_t> more_rounds(0, 3);
  auto last_round = [&out] {
    auto s = RunStore::Open(out, "");
    return s.ok() ? (*s)->last_round() : uint64_t{0};
  };
  while (!final_code) {
    REQUIRE(std::chrono::steady_clock::now() - test_start < 240s);
    // Resume once the run has committed its initial checkpoint; a start
    // killed before that starts again.
    Process server(ServerArgs(dir.path() / "crash.toml", out, RunStore::HoldsRun(out)),
                   dir.path() / ("crash-server-" + std::to_string(starts) + ".log"));
    REQUIRE(server.started());
    ++starts;
    if (kills < kKills) {
      const uint64_t target = last_round() + more_rounds(rng);
      const auto give_up = std::chrono::steady_clock::now() + 60s;
      while (last_round() < target && server.running() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(5ms);
      }
      const auto wait = std::chrono::milliseconds(static_cast<int64_t>(delay_ms(rng)));
      auto code = server.Wait(wait);
      if (code) {
        final_code = code;  // finished before the kill: the run is done
        break;
      }
      server.Signal(SIGKILL);
      REQUIRE(server.Wait(10s).has_value());
      ++kills;
      rounds_at_kill.push_back(last_round());
      continue;
    }
    final_code = server.Wait(120s);
    REQUIRE_MESSAGE(final_code.has_value(), "the resumed run did not finish in 120 s");
  }
  REQUIRE_MESSAGE(*final_code == 0,
                  testing::ReadFile(dir.path() / ("crash-server-" + std::to_string(starts - 1) + ".log")));
  for (auto& c : clients) CHECK(c->Wait(30s).value_or(-1) == 0);
  std::string progress;
  for (uint64_t r : rounds_at_kill) progress += std::to_string(r) + " ";
  MESSAGE(kills << " kills, " << starts << " starts; last completed round at each kill: " << progress);
  CHECK(kills >= 20);
  // The kills landed at different points of the run, not all at the start.
  CHECK(std::count(rounds_at_kill.begin(), rounds_at_kill.end(), rounds_at_kill.back()) < kills);

  // 3. Same model bit for bit, same ledger rows, no row lost or duplicated.
  const Outcome a = Read(ref), b = Read(out);
  REQUIRE(a.model.size() == b.model.size());
  CHECK(std::memcmp(a.model.data(), b.model.data(), a.model.size() * sizeof(float)) == 0);
  CHECK(a.model_version == b.model_version);
  CHECK(a.rows.size() == kRounds * 2);
  CHECK(b.rows == a.rows);
  CHECK(b.registry == a.registry);
  CHECK(b.rounds == a.rounds);
  CHECK(Lines(out / "rounds.csv") == 1 + kRounds);
  CHECK(Lines(out / "clients.csv") == 1 + kRounds * 2);
  CHECK(Lines(out / "emissions.csv") == Lines(ref / "emissions.csv"));
}
