// `verdant demo --metrics-port 0`: the status endpoint scraped and parsed
// while a demo runs (synthetic workload, real processes, Noise channels).
#include <doctest/doctest.h>
#include <httplib.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;

namespace {

// "name{labels}" -> value for every sample line; comment lines must be # HELP / # TYPE.
std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    REQUIRE(!line.empty());
    REQUIRE(line[0] != '#');
    const size_t sp = line.rfind(' ');
    REQUIRE(sp != std::string::npos);
    const std::string v = line.substr(sp + 1);
    out[line.substr(0, sp)] = v == "+Inf" ? INFINITY : std::stod(v);
  }
  return out;
}

}  // namespace

TEST_CASE("verdant demo --metrics-port serves metrics, status and a page that a scraper can parse during the run") {
  testing::TempDir dir;
  const std::string cmd = std::string(VERDANT_BINARY) +
                          " demo --model synthetic:50000 --no-train --clients 3 --rounds 40 --round-timeout 60"
                          " --metrics-port 0 --out " +
                          (dir.path() / "run").string() + " 2>" + (dir.path() / "stderr.txt").string();
  std::FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string output;
  int port = 0;
  char buf[4096];
  while (port == 0 && std::fgets(buf, sizeof(buf), p) != nullptr) {
    output += buf;
    int a = 0, b = 0, c = 0, d = 0, q = 0;
    if (std::sscanf(buf, "status endpoint: http://%d.%d.%d.%d:%d/", &a, &b, &c, &d, &q) == 5) {
      CHECK(a == 127);  // loopback unless asked otherwise
      port = q;
    }
  }
  INFO(output);
  REQUIRE(port > 0);
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(5, 0);

  auto first = cli.Get("/metrics");
  REQUIRE(first);
  REQUIRE(first->status == 200);
  auto m0 = ParseSamples(first->body);
  for (const char* name : {"verdant_rounds_completed_total", "verdant_current_round", "verdant_clients_connected",
                           "verdant_clients_selected_total", "verdant_client_failures_total",
                           "verdant_bytes_up_total", "verdant_bytes_down_total", "verdant_energy_joules_total",
                           "verdant_emissions_grams_total", "verdant_round_duration_seconds_count"}) {
    INFO(name);
    CHECK(m0.count(name) == 1);
  }
  CHECK(m0.at("verdant_rounds_completed_total") == 0);

  // Scrape until rounds have completed (the demo runs 40 of them).
  std::map<std::string, double> later;
  bool saw_clients = false, saw_status = false, saw_page = false;
  const auto end = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < end) {
    auto r = cli.Get("/metrics");
    if (!r) break;  // the demo finished and closed the endpoint
    later = ParseSamples(r->body);
    saw_clients |= later.at("verdant_clients_connected") == 3;
    if (!saw_status && later.at("verdant_clients_connected") == 3) {
      auto s = cli.Get("/status");
      REQUIRE(s);
      auto j = nlohmann::json::parse(s->body);
      CHECK(j["run_id"] == "demo");
      CHECK(j["clients"].size() == 3);
      CHECK(j["clients"][0]["device"]["battery_percent"] == doctest::Approx(80));
      CHECK(j["clients"][0]["device"]["power_source"] == "grid");
      saw_status = true;
    }
    if (!saw_page) {
      auto h = cli.Get("/");
      REQUIRE(h);
      CHECK(h->body.find("Verdant coordinator") != std::string::npos);
      saw_page = true;
    }
    if (later.at("verdant_rounds_completed_total") >= 2) break;
    std::this_thread::sleep_for(20ms);
  }
  CHECK(saw_clients);
  CHECK(saw_status);
  CHECK(saw_page);
  REQUIRE(later.count("verdant_rounds_completed_total") == 1);
  CHECK(later.at("verdant_rounds_completed_total") >= 2);
  CHECK(later.at("verdant_bytes_up_total") > m0.at("verdant_bytes_up_total"));
  CHECK(later.at("verdant_bytes_down_total") > 2 * 3 * 50000 * 4.0);
  CHECK(later.at("verdant_client_results_total") >= 6);
  CHECK(later.at("verdant_energy_joules_total") > 0);
  CHECK(later.at("verdant_round_duration_seconds_count") >= 2);
  CHECK(cli.Get("/nope")->status == 404);

  while (std::fgets(buf, sizeof(buf), p) != nullptr) output += buf;
  const int st = pclose(p);
  INFO(output);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
}

TEST_CASE("verdant server and demo reject bad log and metrics flags") {
  auto run = [](const std::string& args) {
    std::string cmd = std::string(VERDANT_BINARY) + " " + args + " >/dev/null 2>&1";
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  testing::TempDir dir;
  const std::string out = " --out " + (dir.path() / "x").string();
  CHECK(run("demo --model synthetic:10 --no-train --clients 1 --rounds 1 --log-format xml" + out) == 2);
  CHECK(run("demo --model synthetic:10 --no-train --clients 1 --rounds 1 --log-level loud" + out) == 2);
  CHECK(run("demo --model synthetic:10 --no-train --clients 1 --rounds 1 --metrics-port 70000" + out) != 0);
  CHECK(run("demo --model synthetic:10 --no-train --clients 1 --rounds 1 --metrics-port 0 --metrics-address nowhere" +
            out) == 2);
}
