// The synthetic benchmark workload through the `verdant` binary: `demo
// --model synthetic:N --no-train` (issue 9) runs the whole pipeline (Noise
// channels, codecs, aggregation, ledger) with no data and no evaluation, and
// reports the coordinator's CPU time and peak memory.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "verdant/testing/temp_dir.h"
#include "verdant/testing/process.h"

using namespace verdant;

namespace {

verdant::testing::CommandResult RunVerdant(const std::string& args) {
  return verdant::testing::RunCommand(VERDANT_BINARY, args);
}

// The number after "key": in pretty-printed summary.json; NaN when absent.
double JsonNumber(const std::string& json, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  auto pos = json.find(k);
  if (pos == std::string::npos) return std::nan("");
  return std::strtod(json.c_str() + pos + k.size(), nullptr);
}

std::vector<std::string> Split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, sep)) out.push_back(f);
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

}  // namespace

TEST_CASE("verdant demo runs the synthetic no-train workload and reports coordinator CPU and memory") {
  testing::TempDir dir;
  const auto out = dir.path() / "run";
  auto c = RunVerdant("demo --model synthetic:100000 --no-train --clients 3 --rounds 2 --round-timeout 60 --out " +
                      out.string());
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const std::string summary = testing::ReadFile(out / "summary.json");
  INFO(summary);
  CHECK(JsonNumber(summary, "rounds_completed") == 2);
  CHECK(JsonNumber(summary, "num_parameters") == 100000);
  const double rss = JsonNumber(summary, "coordinator_peak_rss_mb");
  const double cpu = JsonNumber(summary, "coordinator_cpu_seconds");
  CHECK(rss > 1.0);
  CHECK(rss < 4096.0);
  CHECK(cpu > 0.0);
  CHECK(JsonNumber(summary, "coordinator_rounds_cpu_seconds") <= cpu);
  CHECK(summary.find("\"status\": \"ok\"") != std::string::npos);
  // Encrypted identity traffic: each round moves the model down and a delta
  // up for every client (~4 bytes per parameter each way).
  CHECK(JsonNumber(summary, "bytes_up") > 2 * 3 * 100000 * 4.0);
  CHECK(JsonNumber(summary, "bytes_down") > 2 * 3 * 100000 * 4.0);
  // rounds.csv: no evaluation, so accuracy stays empty; wall time recorded.
  std::stringstream rounds(testing::ReadFile(out / "rounds.csv"));
  std::string header, line;
  REQUIRE(std::getline(rounds, header));
  const auto cols = Split(header, ',');
  REQUIRE(cols.size() > 8);
  CHECK(cols[2] == "completed");
  CHECK(cols[4] == "accuracy");
  CHECK(cols[8] == "wall_seconds");
  int n = 0;
  while (std::getline(rounds, line)) {
    const auto f = Split(line, ',');
    REQUIRE(f.size() > 8);
    CHECK(f[2] == "3");
    CHECK(f[4].empty());
    CHECK(std::stod(f[8]) > 0.0);
    ++n;
  }
  CHECK(n == 2);
}

TEST_CASE("verdant demo rejects --no-train without a synthetic model and a synthetic model without --no-train") {
  testing::TempDir dir;
  auto c = RunVerdant("demo --model mlp --no-train --clients 1 --rounds 1 --out " + (dir.path() / "a").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("synthetic:N") != std::string::npos);
  c = RunVerdant("demo --model synthetic:1000 --clients 1 --rounds 1 --out " + (dir.path() / "b").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("--no-train") != std::string::npos);
  c = RunVerdant("demo --model synthetic:0 --no-train --clients 1 --rounds 1 --out " + (dir.path() / "c").string());
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("positive integer") != std::string::npos);
  c = RunVerdant("client --server 127.0.0.1:1 --model mlp --no-train --insecure");
  CHECK(c.exit_code == 2);
}
