// Measured energy from clients, end to end on loopback: ClientLoops whose
// metering reads fake sysfs trees (a RAPL counter that the "training"
// advances by a known amount; a discharging battery) report their energy in
// TrainResult.energy, and the coordinator's ledger books it as the compute
// energy of the row, tagged with the meter. A client with nothing to measure
// stays modelled. Also: the HTTP carbon source through `verdant demo`.
#include <doctest/doctest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "verdant/aggregation/strategy.h"
#include "verdant/client/client_loop.h"
#include "verdant/server/coordinator.h"
#include "verdant/testing/temp_dir.h"
#include "verdant/testing/process.h"

using namespace verdant;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> Split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, ',')) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

// clients.csv as maps column -> value.
std::vector<std::map<std::string, std::string>> ReadRows(const fs::path& file) {
  std::istringstream in(testing::ReadFile(file));
  std::string line;
  std::getline(in, line);
  const auto header = Split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    auto f = Split(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < f.size(); ++i) row[header[i]] = f[i];
    rows.push_back(std::move(row));
  }
  return rows;
}

void Write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  testing::WriteFile(p, text + "\n");
}

// <root>/class/powercap with package-0 and psys (psys must never be added).
void RaplTree(const fs::path& root) {
  const fs::path pc = root / "class" / "powercap";
  for (auto [entry, name] : {std::pair{"intel-rapl:0", "package-0"}, std::pair{"intel-rapl:1", "psys"}}) {
    Write(pc / entry / "name", name);
    Write(pc / entry / "energy_uj", "1000000");
    Write(pc / entry / "max_energy_range_uj", "262143328850");
  }
}

// <root>/class/power_supply with a discharging battery at 50 Wh.
void BatteryTree(const fs::path& root) {
  const fs::path ps = root / "class" / "power_supply";
  Write(ps / "AC" / "type", "Mains");
  Write(ps / "AC" / "online", "0");
  Write(ps / "BAT0" / "type", "Battery");
  Write(ps / "BAT0" / "status", "Discharging");
  Write(ps / "BAT0" / "energy_now", "50000000");
  Write(ps / "BAT0" / "energy_full", "60000000");
}

uint64_t ReadUint(const fs::path& p) { return std::stoull(testing::ReadFile(p)); }

// "Trains" for 100 ms and spends a known energy on the fake counters:
// +42.5 J on the RAPL package (and +100 J on psys, which must not count), or
// -0.01 Wh = 36 J from the battery.
class CounterTrainer final : public LocalTrainer {
 public:
  explicit CounterTrainer(fs::path sysfs) : sysfs_(std::move(sysfs)) {}
  std::string_view Name() const override { return "counter"; }
  uint64_t num_examples() const override { return 100; }
  Result<TaskOutcome> Train(const TaskSpec&, std::span<const float> global, std::vector<float>& delta) override {
    delta.assign(global.size(), 0.001f);
    const fs::path pc = sysfs_ / "class" / "powercap";
    if (fs::exists(pc)) {
      Write(pc / "intel-rapl:0" / "energy_uj", std::to_string(ReadUint(pc / "intel-rapl:0" / "energy_uj") + 42'500'000));
      Write(pc / "intel-rapl:1" / "energy_uj", std::to_string(ReadUint(pc / "intel-rapl:1" / "energy_uj") + 100'000'000));
    }
    const fs::path bat = sysfs_ / "class" / "power_supply" / "BAT0";
    if (fs::exists(bat)) Write(bat / "energy_now", std::to_string(ReadUint(bat / "energy_now") - 10'000));
    std::this_thread::sleep_for(100ms);
    return TaskOutcome{100, 1.0, 0.1};
  }

 private:
  fs::path sysfs_;
};

}  // namespace

TEST_CASE("clients measure their training with RAPL or the battery and the ledger books it") {
  testing::TempDir dir;
  // c0: RAPL; c1: battery only (discharging); c2: nothing to measure.
  const fs::path rapl = dir.path() / "sys-rapl", battery = dir.path() / "sys-battery", none = dir.path() / "sys-none";
  RaplTree(rapl);
  BatteryTree(rapl);  // RAPL wins over a discharging battery
  BatteryTree(battery);
  fs::create_directories(none);

  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 3;
  o.out_dir = (dir.path() / "run").string();
  Layout layout({{"w", {1000}}});
  Coordinator coord(o, ParameterVector(layout), std::move(*CreateStrategy("fedavg", {})),
                    std::move(*CreateSelector("random", {})), nullptr, SystemClock::Default());
  auto server = TcpServer::Start({}, coord);
  REQUIRE(server.ok());

  std::vector<fs::path> roots = {rapl, battery, none};
  std::vector<std::unique_ptr<CounterTrainer>> trainers;
  std::vector<std::unique_ptr<ClientLoop>> loops;
  for (size_t i = 0; i < roots.size(); ++i) {
    trainers.push_back(std::make_unique<CounterTrainer>(roots[i]));
    ClientLoopOptions co;
    co.port = (*server)->port();
    co.name = "c" + std::to_string(i);
    co.max_reconnects = 0;
    co.seed = i + 1;
    energy::MeterSelectionOptions m;
    m.profile.name = "test";
    m.rapl.root = roots[i] / "class" / "powercap";
    m.battery.root = roots[i] / "class" / "power_supply";
    co.metering = m;
    loops.push_back(std::make_unique<ClientLoop>(co, *trainers.back()));
  }
  std::vector<std::thread> threads;
  std::vector<Status> results(loops.size());
  for (size_t i = 0; i < loops.size(); ++i) threads.emplace_back([&, i] { results[i] = loops[i]->Run(); });
  auto summary = coord.Run();
  for (auto& t : threads) t.join();
  (*server)->Stop();
  REQUIRE_MESSAGE(summary.ok(), summary.status().ToString());
  for (auto& r : results) CHECK_MESSAGE(r.ok(), r.ToString());

  auto rows = ReadRows(dir.path() / "run" / "clients.csv");
  REQUIRE(rows.size() == 6);
  std::map<std::string, int> methods;
  for (auto& r : rows) {
    INFO(r["client_id"] << " " << r["energy_method"] << " " << r["compute_joules"] << " " << r["reason"]);
    CHECK(r["status"] == "completed");
    CHECK(std::stod(r["radio_joules"]) > 0);  // transfers stay modelled
    ++methods[r["energy_method"]];
    if (r["energy_method"] == "rapl:package-0") {
      CHECK(std::stod(r["compute_joules"]) == doctest::Approx(42.5));  // not + psys's 100 J
    } else if (r["energy_method"] == "battery:BAT0") {
      CHECK(std::stod(r["compute_joules"]) == doctest::Approx(36.0));
    } else {
      CHECK(r["energy_method"] == "model:phone-midrange");
      CHECK(std::stod(r["compute_joules"]) < 1.0);
    }
  }
  CHECK(methods["rapl:package-0"] == 2);
  CHECK(methods["battery:BAT0"] == 2);
  CHECK(methods["model:phone-midrange"] == 2);
}

namespace {

verdant::testing::CommandResult RunVerdant(const std::string& args) {
  return verdant::testing::RunCommand(VERDANT_BINARY, args);
}

}  // namespace

TEST_CASE("verdant demo reads grid intensity from an HTTP source with a token from the environment") {
  httplib::Server http;
  std::atomic<int> requests{0}, unauthorized{0};
  http.Get("/v3/carbon-intensity/history", [&](const httplib::Request& req, httplib::Response& res) {
    ++requests;
    if (req.get_header_value("auth-token") != "test-token") {
      ++unauthorized;
      res.status = 401;
      return;
    }
    const std::string zone = req.get_param_value("zone");
    const int value = zone == "NO" ? 11 : 333;
    std::string body = "{\"zone\":\"" + zone + "\",\"history\":[";
    for (int h = 0; h < 24; ++h) {
      char t[32];
      std::snprintf(t, sizeof(t), "2022-06-01T%02d:00:00Z", h);
      body += std::string(h ? "," : "") + "{\"carbonIntensity\":" + std::to_string(value) + ",\"datetime\":\"" + t +
              "\"}";
    }
    res.set_content(body + "]}", "application/json");
  });
  const int port = http.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread t([&] { http.listen_after_bind(); });
  for (int i = 0; i < 500 && !http.is_running(); ++i) std::this_thread::sleep_for(2ms);
  REQUIRE(http.is_running());

  ::setenv("VERDANT_TEST_TOKEN", "test-token", 1);  // inherited by the demo process
  testing::TempDir dir;
  const auto out = dir.path() / "run";
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/v3/carbon-intensity/history?zone={zone}";
  auto c = RunVerdant("demo --model synthetic:1000 --no-train --clients 2 --rounds 2 --round-timeout 60 --zones NO,ES "
                      "--carbon-url '" + url + "' --carbon-token-env VERDANT_TEST_TOKEN --out " + out.string() +
                      " --insecure");
  // The same without the variable set: a clear error before anything starts.
  auto missing = RunVerdant("demo --model synthetic:1000 --no-train --clients 1 --rounds 1 --carbon-url '" + url +
                            "' --carbon-token-env VERDANT_TEST_TOKEN_UNSET --out " + (dir.path() / "x").string() +
                            " --insecure");
  http.stop();
  t.join();
  INFO(c.output);
  CHECK(missing.exit_code != 0);
  CHECK(missing.output.find("VERDANT_TEST_TOKEN_UNSET") != std::string::npos);
  REQUIRE(c.exit_code == 0);
  CHECK(requests >= 2);  // one per zone, cached afterwards
  CHECK(unauthorized == 0);
  auto rows = ReadRows(out / "clients.csv");
  REQUIRE(rows.size() == 4);
  for (auto& r : rows) {
    INFO(r["zone"] << " " << r["intensity_g_per_kwh"]);
    CHECK(std::stod(r["intensity_g_per_kwh"]) == doctest::Approx(r["zone"] == "NO" ? 11.0 : 333.0));
    CHECK(r["intensity_source"] == "http:http://127.0.0.1:" + std::to_string(port) + "/v3/carbon-intensity/history");
  }
}

TEST_CASE("the server's [carbon] section rejects a bad url or two sources with a clear error") {
  testing::TempDir dir;
  const auto cfg = dir.path() / "server.toml";
  testing::WriteFile(cfg, "[run]\nrounds = 1\n[carbon]\nurl = \"ftp://example.org/ci\"\n");
  auto c = RunVerdant("server --config " + cfg.string() + " --insecure");
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("ftp://example.org/ci") != std::string::npos);
  CHECK(c.output.find("http://") != std::string::npos);
  testing::WriteFile(cfg, "[run]\nrounds = 1\n[carbon]\nurl = \"http://127.0.0.1:9/ci\"\njson_file = \"x.json\"\n");
  c = RunVerdant("server --config " + cfg.string() + " --insecure");
  CHECK(c.exit_code == 2);
  CHECK(c.output.find("only one of") != std::string::npos);
  testing::WriteFile(cfg, "[run]\nrounds = 1\n[carbon]\njson_file = \"missing.json\"\n");
  c = RunVerdant("server --config " + cfg.string() + " --insecure");
  CHECK(c.exit_code != 0);
  CHECK(c.output.find("missing.json") != std::string::npos);
}
