// The coordinator's energy and carbon accounting and carbon-aware selection,
// with fake clients reporting their grid zone and hand-made intensities.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <thread>

#include "verdant/energy/carbon.h"
#include "verdant/server/coordinator.h"
#include "verdant/server/selectors.h"
#include "verdant/testing/fake_client.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::FakeClient;

namespace {

// Zone "CLEAN" at 10 g/kWh, "DIRTY" at 800; "LATER" is 900 until 06:00 and 20 after.
class TestIntensity final : public energy::CarbonIntensitySource {
 public:
  std::string_view Name() const override { return "test"; }
  Result<energy::IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override {
    energy::IntensityReading r;
    r.zone = std::string(zone);
    r.source = "test";
    r.trace_time = std::chrono::time_point_cast<std::chrono::hours>(t);
    const auto hour = std::chrono::duration_cast<std::chrono::hours>(t.time_since_epoch()).count() % 24;
    if (zone == "CLEAN") r.value = CarbonIntensity::GramsPerKwh(10);
    else if (zone == "DIRTY") r.value = CarbonIntensity::GramsPerKwh(800);
    else if (zone == "LATER") r.value = CarbonIntensity::GramsPerKwh(hour < 6 ? 900 : 20);
    else return NotFoundError("unknown zone " + std::string(zone));
    return r;
  }
  std::vector<std::string> Zones() const override { return {"CLEAN", "DIRTY", "LATER"}; }
};

std::vector<std::vector<std::string>> Csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, ',')) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.push_back("");
    rows.push_back(std::move(f));
  }
  return rows;
}

size_t Col(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  FAIL("no column " << name);
  return 0;
}

// A run on the test zones' grid: `rounds` rounds once `min_clients` are
// connected, the grid clock at 00:00 UTC (LATER is dirty until 06:00),
// outputs in `out_dir` (none when empty).
CoordinatorOptions ZoneRunOptions(const TestIntensity& intensity, uint64_t rounds, size_t min_clients,
                                  const std::string& out_dir = "") {
  CoordinatorOptions o;
  o.rounds = rounds;
  o.min_clients = min_clients;
  o.out_dir = out_dir;
  o.energy.intensity = &intensity;
  o.energy.grid_time_start = TimePoint(std::chrono::hours(24 * 365 * 52));  // midnight UTC
  return o;
}

struct Fleet {
  Fleet(CoordinatorOptions o, const std::string& selector, std::vector<std::string> zones)
      : coord(std::move(o), ParameterVector::Flat(std::vector<float>(5000, 0.0f)),
              std::move(*CreateStrategy("fedavg", {})), std::move(*CreateSelector(selector, {})), nullptr,
              SystemClock::Default()) {
    auto s = TcpServer::Start({}, coord);
    REQUIRE(s.ok());
    server = std::move(*s);
    for (size_t i = 0; i < zones.size(); ++i) {
      auto c = std::make_unique<FakeClient>("c" + std::to_string(i) + "-" + zones[i], server->port());
      c->state.set_zone(zones[i]);
      c->state.set_network(wire::DeviceState::NETWORK_UNMETERED);
      c->device_profile = "phone-midrange";
      clients.push_back(std::move(c));
    }
  }
  Result<RunSummary> Run() {
    std::vector<std::thread> threads;
    for (auto& c : clients) threads.emplace_back([&c] { (void)c->Run(); });
    auto s = coord.Run();
    for (auto& t : threads) t.join();
    server->Stop();
    return s;
  }
  Coordinator coord;
  std::unique_ptr<TcpServer> server;
  std::vector<std::unique_ptr<FakeClient>> clients;
};

}  // namespace

TEST_CASE("every client-round is accounted with the intensity of its zone") {
  testing::TempDir dir;
  TestIntensity intensity;
  CoordinatorOptions o = ZoneRunOptions(intensity, 2, 3, dir.path().string());
  Fleet f(o, "random", {"CLEAN", "DIRTY", "LATER"});
  auto summary = f.Run();
  REQUIRE(summary.ok());
  auto rows = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  REQUIRE(rows.size() == 1 + 6);
  const auto& h = rows[0];
  double total_g = 0, total_j = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const double j = std::stod(r[Col(h, "compute_joules")]) + std::stod(r[Col(h, "radio_joules")]) +
                     std::stod(r[Col(h, "idle_joules")]);
    const double ci = std::stod(r[Col(h, "intensity_g_per_kwh")]);
    const std::string zone = r[Col(h, "zone")];
    CHECK(ci == (zone == "CLEAN" ? 10.0 : zone == "DIRTY" ? 800.0 : 900.0));
    // E [kWh] x I, by hand.
    CHECK(std::stod(r[Col(h, "emissions_g")]) == doctest::Approx(j / 3.6e6 * ci).epsilon(1e-4));
    CHECK(std::stod(r[Col(h, "compute_joules")]) > 0);
    CHECK(std::stod(r[Col(h, "radio_joules")]) > 0);
    CHECK(std::stod(r[Col(h, "embodied_g")]) > 0);
    CHECK(r[Col(h, "energy_method")] == "model:phone-midrange");
    // Round r reads the grid at start + (r-1) hours.
    CHECK(r[Col(h, "time_utc")].find(r[0] == "1" ? "T00:00:00Z" : "T01:00:00Z") != std::string::npos);
    total_g += std::stod(r[Col(h, "emissions_g")]);
    total_j += j;
  }
  CHECK(summary->numbers.at("emissions_g") == doctest::Approx(total_g).epsilon(1e-3));
  CHECK(summary->numbers.at("energy_joules") == doctest::Approx(total_j).epsilon(1e-3));
  auto rounds = Csv(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rounds.size() == 3);
  double round_g = 0;
  for (size_t i = 1; i < 3; ++i) round_g += std::stod(rounds[i][Col(rounds[0], "emissions_g")]);
  CHECK(round_g == doctest::Approx(total_g).epsilon(1e-3));
  auto json = testing::ReadFile(dir.path() / "summary.json");
  for (const char* k : {"energy_joules", "emissions_g", "embodied_g", "sci_g_per_round", "participation_gini"}) {
    CHECK(json.find(std::string("\"") + k + "\"") != std::string::npos);
  }
  CHECK(std::filesystem::exists(dir.path() / "emissions.csv"));
}

TEST_CASE("the carbon selector trains on the clean zone and emits less than random") {
  TestIntensity intensity;
  auto run = [&](const std::string& selector) {
    CoordinatorOptions o = ZoneRunOptions(intensity, 4, 4);
    o.clients_per_round = 2;
    Fleet f(o, selector, {"CLEAN", "CLEAN", "DIRTY", "DIRTY"});
    auto s = f.Run();
    REQUIRE(s.ok());
    return *s;
  };
  auto carbon = run("carbon");
  auto random = run("random");
  CHECK(carbon.numbers.at("emissions_g") < 0.1 * random.numbers.at("emissions_g"));
  CHECK(carbon.numbers.at("participation_gini") > 0.4);  // two of four clients did all the work
}

TEST_CASE("carbon-deferral holds a round for a cleaner hour within the allowance") {
  testing::TempDir dir;
  TestIntensity intensity;
  CoordinatorOptions o = ZoneRunOptions(intensity, 1, 1, dir.path().string());
  o.energy.max_defer = std::chrono::hours(12);
  Fleet f(o, "carbon-deferral", {"LATER"});
  auto s = f.Run();
  REQUIRE(s.ok());
  auto rows = Csv(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rows.size() == 2);
  const double deferred = std::stod(rows[1][Col(rows[0], "deferred_seconds")]);
  CHECK(deferred >= 6 * 3600.0);
  CHECK(deferred <= 12 * 3600.0);
  auto clients = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  CHECK(std::stod(clients[1][Col(clients[0], "intensity_g_per_kwh")]) == 20.0);
}

TEST_CASE("implausible device states are ignored with a warning") {
  TestIntensity intensity;
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 2;
  o.energy.intensity = &intensity;
  Fleet f(o, "random", {"CLEAN", "bad zone!"});
  f.clients[0]->state.set_battery_known(true);
  f.clients[0]->state.set_battery_percent(250);
  auto s = f.Run();
  REQUIRE(s.ok());  // both trained; their states were dropped, accounting fell back to the world average
  CHECK(s->rounds_completed == 1);
  CHECK(s->numbers.at("emissions_g") > 0);
}

namespace {

wire::EnergyReport Report(double joules, double seconds, std::string method) {
  wire::EnergyReport e;
  e.set_compute_joules(joules);
  e.set_seconds(seconds);
  e.set_method(std::move(method));
  return e;
}

}  // namespace

TEST_CASE("ValidateEnergyReport accepts a measurement and rejects bogus figures") {
  CHECK(ValidateEnergyReport(Report(12.5, 2.0, "rapl:package-0"), 10, 10'000).ok());
  CHECK(ValidateEnergyReport(Report(12.5, 2.0, "battery:BAT0"), 10, 10'000).ok());
  CHECK(ValidateEnergyReport(Report(12.5, 2.0, "rapl:package-0+package-0/dram"), 10, 10'000).ok());
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (const auto& bad : {Report(-1, 2, "rapl:package-0"), Report(0, 2, "rapl:package-0"),
                          Report(nan, 2, "rapl:package-0"), Report(inf, 2, "rapl:package-0"),
                          Report(12.5, 0, "rapl:package-0"), Report(12.5, nan, "rapl:package-0"),
                          Report(12.5, 20, "rapl:package-0"),       // longer than the task was out
                          Report(1e6, 2, "rapl:package-0"),         // 500 kW
                          Report(12.5, 2, ""), Report(12.5, 2, "rapl"), Report(12.5, 2, ":x"),
                          Report(12.5, 2, "model:laptop"),           // a guess, not a measurement
                          Report(12.5, 2, "rapl:pkg\n0"), Report(12.5, 2, std::string(97, 'a') + ":x")}) {
    Status st = ValidateEnergyReport(bad, 10, 10'000);
    CHECK_MESSAGE(st.code() == StatusCode::kInvalidArgument, bad.ShortDebugString());
  }
}

TEST_CASE("a measured energy report replaces the modelled compute energy and tags the row") {
  testing::TempDir dir;
  CoordinatorOptions o;
  o.rounds = 1;
  o.min_clients = 2;
  o.out_dir = dir.path().string();
  Fleet f(o, "random", {"A", "B"});
  f.clients[0]->energy_report = Report(123.5, 0.5, "rapl:package-0");
  auto summary = f.Run();
  REQUIRE(summary.ok());
  auto rows = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  REQUIRE(rows.size() == 3);
  const auto& h = rows[0];
  int measured = 0, modelled = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    CHECK(r[Col(h, "status")] == "completed");
    CHECK(std::stod(r[Col(h, "radio_joules")]) > 0);  // radio stays modelled
    if (r[Col(h, "client_id")] == f.clients[0]->assigned_id()) {
      ++measured;
      CHECK(r[Col(h, "energy_method")] == "rapl:package-0");
      // phone-midrange has PUE 1: the measured joules exactly.
      CHECK(std::stod(r[Col(h, "compute_joules")]) == doctest::Approx(123.5));
    } else {
      ++modelled;
      CHECK(r[Col(h, "energy_method")] == "model:phone-midrange");
      CHECK(std::stod(r[Col(h, "compute_joules")]) < 1.0);  // 100 samples on a phone profile
    }
  }
  CHECK(measured == 1);
  CHECK(modelled == 1);
  const std::string json = testing::ReadFile(dir.path() / "summary.json");
  INFO(json);
  CHECK(json.find("\"energy_methods\": \"model:phone-midrange=1 rapl:package-0=1\"") != std::string::npos);
  CHECK(json.find("\"measured_client_rounds\": 1.0") != std::string::npos);
}

TEST_CASE("bogus energy reports fall back to the model and say why") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& bad : {Report(-5, 0.5, "rapl:package-0"), Report(nan, 0.5, "rapl:package-0"),
                          Report(5e9, 0.5, "rapl:package-0"), Report(5, 3600, "battery:BAT0"),
                          Report(5, 0.5, "model:phone-midrange")}) {
    CAPTURE(bad.ShortDebugString());
    testing::TempDir dir;
    CoordinatorOptions o;
    o.rounds = 1;
    o.min_clients = 1;
    o.out_dir = dir.path().string();
    Fleet f(o, "random", {"A"});
    f.clients[0]->energy_report = bad;
    auto summary = f.Run();
    REQUIRE(summary.ok());
    auto rows = Csv(testing::ReadFile(dir.path() / "clients.csv"));
    REQUIRE(rows.size() == 2);
    const auto& h = rows[0];
    const auto& r = rows[1];
    CHECK(r[Col(h, "status")] == "completed");  // the update still counts
    CHECK(r[Col(h, "energy_method")] == "model:phone-midrange");
    const double compute = std::stod(r[Col(h, "compute_joules")]);
    CHECK(std::isfinite(compute));
    CHECK(compute > 0);
    CHECK(compute < 1.0);
    CHECK(r[Col(h, "reason")].find("energy report rejected") != std::string::npos);
  }
}

TEST_CASE("device profiles are found by name among thousands, the last of a repeated name wins") {
  testing::TempDir dir;
  TestIntensity intensity;
  CoordinatorOptions o = ZoneRunOptions(intensity, 1, 3, dir.path().string());
  // As the simulator does: one profile per device.
  const auto base = *energy::BuiltinProfile("phone-midrange");
  for (int i = 0; i < 5000; ++i) {
    energy::DeviceProfile p = base;
    p.name = "phone-midrange/d" + std::to_string(i);
    p.embodied = Emissions::Grams(0);
    o.energy.profiles.push_back(p);
  }
  o.energy.profiles[4321].embodied = Emissions::Grams(60000);
  energy::DeviceProfile dup = base;
  dup.name = "dup";
  dup.embodied = Emissions::Grams(0);
  o.energy.profiles.insert(o.energy.profiles.begin() + 10, dup);
  dup.embodied = Emissions::Grams(60000);
  o.energy.profiles.push_back(dup);  // the later one counts
  Fleet f(o, "random", {"CLEAN", "DIRTY", "LATER"});
  f.clients[0]->device_profile = "phone-midrange/d4321";
  f.clients[1]->device_profile = "dup";
  f.clients[2]->device_profile = "no-such-profile";  // the default profile
  auto summary = f.Run();
  REQUIRE(summary.ok());
  auto rows = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  REQUIRE(rows.size() == 1 + 3);
  const auto& h = rows[0];
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const std::string zone = r[Col(h, "zone")];
    const std::string method = r[Col(h, "energy_method")];
    CHECK(std::stod(r[Col(h, "embodied_g")]) > 0);
    if (zone == "CLEAN") CHECK(method == "model:phone-midrange/d4321");
    if (zone == "DIRTY") CHECK(method == "model:dup");
    if (zone == "LATER") CHECK(method == "model:phone-midrange");
  }
}
