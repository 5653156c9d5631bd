// `verdant fleet generate` and `verdant simulate` through the binary
// (docs/simulator.md): same seed -> same bytes, the outputs of a real run
// plus report.html, --compare, the TOML config, and bad fleet rows.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "verdant/testing/temp_dir.h"
#include "verdant/testing/process.h"

using namespace verdant;

namespace {

verdant::testing::CommandResult Verdant(const std::string& args) {
  return verdant::testing::RunCommand(VERDANT_BINARY, args);
}

}  // namespace

TEST_CASE("verdant fleet generate writes byte-identical fleets for the same seed") {
  testing::TempDir dir;
  const std::string base = "fleet generate --devices 50 --days 1 --zones US-CISO,NO --seed 5 --out ";
  auto a = Verdant(base + (dir.path() / "a").string());
  REQUIRE_MESSAGE(a.exit_code == 0, a.output);
  auto b = Verdant(base + (dir.path() / "b").string());
  REQUIRE(b.exit_code == 0);
  for (const char* f : {"devices.csv", "events.csv"}) {
    CHECK(testing::ReadFile(dir.path() / "a" / f) == testing::ReadFile(dir.path() / "b" / f));
  }
  auto bad = Verdant("fleet generate --devices 5 --zones MARS --out " + (dir.path() / "c").string());
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("MARS@+H") != std::string::npos);
}

TEST_CASE("verdant simulate writes a real run's outputs plus report.html and compares policies") {
  testing::TempDir dir;
  const auto fleet = dir.path() / "fleet";
  REQUIRE(Verdant("fleet generate --devices 60 --days 1 --zones US-AZPS,NO,ES --seed 2 --out " + fleet.string())
              .exit_code == 0);
  const auto out = dir.path() / "out";
  auto r = Verdant("simulate --fleet " + fleet.string() +
                   " --selector random --clients-per-round 6 --round-interval 1h --days 1 --codec int8"
                   " --model synthetic:5000 --seed 3 --out " + out.string());
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(r.output.find("random: 24 rounds") != std::string::npos);
  for (const char* f : {"rounds.csv", "clients.csv", "summary.json", "emissions.csv", "simulation.csv",
                        "report.html", "comparison.csv"}) {
    CHECK_MESSAGE(std::filesystem::exists(out / f), f);
  }
  const std::string html = testing::ReadFile(out / "report.html");
  CHECK(html.find("<svg") != std::string::npos);
  CHECK(html.find("Cumulative gCO2e") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);  // self-contained, nothing to fetch
  CHECK(html.find("src=") == std::string::npos);
  // --progress forces the bar on a pipe.
  auto p = Verdant("simulate --fleet " + fleet.string() +
                   " --clients-per-round 6 --round-interval 1h --rounds 3 --model synthetic:5000 --progress --out " +
                   (dir.path() / "p").string());
  REQUIRE(p.exit_code == 0);
  CHECK(p.output.find("ETA") != std::string::npos);
  // A comparison: one folder per policy, the table printed and written.
  auto c = Verdant("simulate --fleet " + fleet.string() +
                   " --compare random,carbon,carbon/fp16 --clients-per-round 6 --round-interval 1h --days 1"
                   " --model synthetic:5000 --out " + (dir.path() / "cmp").string());
  REQUIRE_MESSAGE(c.exit_code == 0, c.output);
  CHECK(std::filesystem::exists(dir.path() / "cmp" / "carbon_fp16" / "clients.csv"));
  const std::string table = testing::ReadFile(dir.path() / "cmp" / "comparison.csv");
  CHECK(table.find("\ncarbon/fp16,24,") != std::string::npos);
  CHECK(c.output.find("total_g") != std::string::npos);
}

TEST_CASE("verdant simulate reads a TOML config where flags win and names bad rows and keys") {
  testing::TempDir dir;
  const auto fleet = dir.path() / "fleet";
  REQUIRE(Verdant("fleet generate --devices 20 --days 1 --zones NO --out " + fleet.string()).exit_code == 0);
  const auto cfg = dir.path() / "sim.toml";
  testing::WriteFile(cfg, "[simulation]\nfleet = \"" + fleet.string() + "\"\nselector = \"carbon\"\n"
                          "clients_per_round = 4\nrounds = 5\nmodel = \"synthetic:1000\"\nout = \"" +
                          (dir.path() / "o").string() + "\"\n[selector]\nmax_share = 0.5\n");
  auto r = Verdant("simulate --config " + cfg.string() + " --rounds 2");
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(r.output.find("carbon: 2 rounds") != std::string::npos);
  testing::WriteFile(cfg, "[simulation]\nfleet = \"x\"\nrowns = 3\n");
  auto bad_key = Verdant("simulate --config " + cfg.string());
  CHECK(bad_key.exit_code == 2);
  CHECK(bad_key.output.find("unknown key 'rowns' in [simulation]") != std::string::npos);
  testing::WriteFile(cfg, "[simulation]\nfleet = \"x\"\neval_every = -2\n");
  auto bad_value = Verdant("simulate --config " + cfg.string());
  CHECK(bad_value.exit_code == 2);
  CHECK(bad_value.output.find("eval_every") != std::string::npos);
  testing::WriteFile(fleet / "devices.csv",
                     "device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples\n"
                     "a,phone-midrange,NO,15,fast,1,1,60,10\n");
  auto bad_row = Verdant("simulate --fleet " + fleet.string() + " --out " + (dir.path() / "x").string());
  CHECK(bad_row.exit_code == 2);
  CHECK(bad_row.output.find("devices.csv:2: field 'ms_per_sample': 'fast' is not a number") != std::string::npos);
}
