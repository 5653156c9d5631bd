// DeviceState, the sysfs power_supply reader on fake trees, and the app-fed
// providers (C++ and C surfaces).
#include "verdant/energy/device_state.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "verdant/energy/device_state_c.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::energy;
using doctest::Approx;
namespace fs = std::filesystem;

namespace {

void Supply(const fs::path& root, const std::string& name,
            std::initializer_list<std::pair<const char*, const char*>> files) {
  fs::create_directories(root / name);
  for (const auto& [f, v] : files) testing::WriteFile(root / name / f, std::string(v) + "\n");
}

}  // namespace

TEST_CASE("PowerSupplyReader reads a laptop battery and mains adapter") {
  testing::TempDir dir;
  Supply(dir.path(), "BAT0",
         {{"type", "Battery"},
          {"status", "Discharging"},
          {"capacity", "83"},
          {"energy_now", "41500000"},
          {"energy_full", "50000000"},
          {"power_now", "-7500000"}});
  Supply(dir.path(), "AC", {{"type", "Mains"}, {"online", "0"}});
  PowerSupplyReader reader(PowerSupplyReaderOptions{dir.path()});
  auto all = reader.ReadAll();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].name == "AC");
  const auto& bat = (*all)[1];
  CHECK(bat.IsBattery());
  CHECK(*bat.capacity_percent == 83);
  CHECK(ToWattHours(*bat.energy_now) == Approx(41.5));
  CHECK(ToWattHours(*bat.energy_full) == Approx(50.0));
  CHECK(bat.power_now->watts() == Approx(7.5));

  auto s = reader.ReadDeviceState();
  REQUIRE(s.ok());
  CHECK(*s->battery_percent == 83);
  CHECK(ToWattHours(s->battery_capacity) == Approx(50.0));
  CHECK_FALSE(s->charging);
  CHECK(s->power_source == PowerSource::kBattery);

  testing::WriteFile(dir.path() / "AC" / "online", "1\n");
  testing::WriteFile(dir.path() / "BAT0" / "status", "Charging\n");
  s = reader.ReadDeviceState();
  CHECK(s->charging);
  CHECK(s->power_source == PowerSource::kGrid);
}

TEST_CASE("PowerSupplyReader: missing files and unreadable attributes never crash") {
  testing::TempDir dir;
  PowerSupplyReader missing(PowerSupplyReaderOptions{dir.path() / "absent"});
  CHECK(missing.ReadAll().status().code() == StatusCode::kNotFound);
  CHECK(missing.ReadDeviceState().status().code() == StatusCode::kNotFound);

  PowerSupplyReader empty(PowerSupplyReaderOptions{dir.path()});
  CHECK(empty.ReadAll()->empty());
  CHECK(empty.ReadDeviceState().status().code() == StatusCode::kNotFound);

  // Battery with only type and garbage capacity; capacity derived from energies otherwise.
  Supply(dir.path(), "BAT1", {{"type", "Battery"}, {"capacity", "n/a"}});
  auto b = empty.Read("BAT1");
  REQUIRE(b.ok());
  CHECK_FALSE(b->capacity_percent.has_value());
  CHECK_FALSE(b->energy_now.has_value());
  Supply(dir.path(), "BAT1", {{"energy_now", "5000000"}, {"energy_full", "20000000"}});
  CHECK(*empty.Read("BAT1")->capacity_percent == Approx(25.0));

  // A directory where the capacity file should be: the field is empty, no error.
  fs::remove(dir.path() / "BAT1" / "capacity");
  fs::create_directories(dir.path() / "BAT1" / "capacity");
  CHECK(empty.Read("BAT1").ok());
  // No type file: the supply cannot be classified.
  fs::create_directories(dir.path() / "weird");
  CHECK(empty.Read("weird").status().code() == StatusCode::kNotFound);
  CHECK(empty.ReadAll()->size() == 1);
  if (::geteuid() != 0) {
    const fs::path type = dir.path() / "BAT1" / "type";
    REQUIRE(::chmod(type.c_str(), 0) == 0);
    CHECK(empty.Read("BAT1").status().code() == StatusCode::kPermissionDenied);
    ::chmod(type.c_str(), 0644);
  } else {
    MESSAGE(
        "running as root: chmod 000 does not block reads; unreadable paths tested via directories");
  }
  CHECK(empty.Read("nope").status().code() == StatusCode::kNotFound);
}

TEST_CASE("Validate and names of DeviceState fields") {
  DeviceState s;
  CHECK(Validate(s).ok());
  s.battery_percent = 101;
  CHECK(Validate(s).code() == StatusCode::kInvalidArgument);
  s.battery_percent = 50;
  s.local_intensity = CarbonIntensity::GramsPerKwh(-1);
  CHECK(Validate(s).code() == StatusCode::kInvalidArgument);
  CHECK(*ParseNetworkType("wifi") == NetworkType::kUnmetered);
  CHECK(*ParseNetworkType("LTE") == NetworkType::kCellular);
  CHECK(*ParsePowerSource("solar") == PowerSource::kSolar);
  CHECK_FALSE(ParsePowerSource("wind-up").ok());
  CHECK(PowerSourceName(PowerSource::kGrid) == "grid");
  CHECK(NetworkTypeName(NetworkType::kCellular) == "cellular");
}

TEST_CASE("ManualDeviceStateProvider validates and is thread-safe") {
  ManualDeviceStateProvider p;
  CHECK(p.SetBattery(80, true).ok());
  CHECK(p.SetBattery(120, false).code() == StatusCode::kInvalidArgument);
  p.SetNetwork(NetworkType::kUnmetered);
  p.SetZone("US-CISO");
  p.SetIdle(true);
  p.SetPowerSource(PowerSource::kSolar);
  CHECK(p.SetLocalIntensity(CarbonIntensity::GramsPerKwh(120)).ok());
  auto s = p.Current();
  REQUIRE(s.ok());
  CHECK(*s->battery_percent == 80);  // the invalid call kept the old value
  CHECK(s->charging);
  CHECK(s->zone == "US-CISO");
  CHECK(s->local_intensity->grams_per_kwh() == 120);

  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) p.SetBattery(i % 101, i % 2 == 0).IgnoreError();
  });
  for (int i = 0; i < 2000; ++i) {
    auto c = p.Current();
    CHECK((*c->battery_percent >= 0 && *c->battery_percent <= 100));
  }
  writer.join();
}

TEST_CASE("C API feeds the provider") {
  verdant_device_state* h = verdant_device_state_new();
  REQUIRE(h != nullptr);
  CHECK(verdant_device_state_set_battery(h, 42.5, 1) == 0);
  CHECK(verdant_device_state_set_battery(h, -1, 1) == -1);
  CHECK(verdant_device_state_set_battery_capacity_wh(h, 15.4) == 0);
  CHECK(verdant_device_state_set_power_source(h, VERDANT_POWER_GRID) == 0);
  CHECK(verdant_device_state_set_power_source(h, 9) == -1);
  CHECK(verdant_device_state_set_network(h, VERDANT_NETWORK_UNMETERED) == 0);
  CHECK(verdant_device_state_set_idle(h, 1) == 0);
  CHECK(verdant_device_state_set_zone(h, "ES") == 0);
  CHECK(verdant_device_state_set_zone(h, nullptr) == -1);
  CHECK(verdant_device_state_set_local_intensity(h, 150) == 0);
  CHECK(verdant_device_state_set_battery(nullptr, 50, 0) == -1);
  auto s = AsProvider(h)->Current();
  REQUIRE(s.ok());
  CHECK(*s->battery_percent == 42.5);
  CHECK(ToWattHours(s->battery_capacity) == Approx(15.4));
  CHECK(s->power_source == PowerSource::kGrid);
  CHECK(s->network == NetworkType::kUnmetered);
  CHECK(s->idle);
  CHECK(s->zone == "ES");
  CHECK(s->local_intensity->grams_per_kwh() == 150);
  CHECK(verdant_device_state_set_local_intensity(h, -1) == 0);
  CHECK_FALSE(AsProvider(h)->Current()->local_intensity.has_value());
  verdant_device_state_free(h);
  verdant_device_state_free(nullptr);
}

TEST_CASE("SysfsDeviceStateProvider overlays sysfs battery on app values") {
  testing::TempDir dir;
  Supply(dir.path(), "BAT0", {{"type", "Battery"}, {"status", "Charging"}, {"capacity", "55"}});
  ManualDeviceStateProvider app;
  app.SetZone("NO");
  app.SetNetwork(NetworkType::kCellular);
  SysfsDeviceStateProvider p(PowerSupplyReaderOptions{dir.path()}, &app);
  auto s = p.Current();
  REQUIRE(s.ok());
  CHECK(*s->battery_percent == 55);
  CHECK(s->charging);
  CHECK(s->power_source == PowerSource::kGrid);
  CHECK(s->zone == "NO");
  CHECK(s->network == NetworkType::kCellular);
  CHECK(p.LastError().empty());

  SysfsDeviceStateProvider gone(PowerSupplyReaderOptions{dir.path() / "none"}, &app);
  auto g = gone.Current();
  REQUIRE(g.ok());
  CHECK(g->zone == "NO");
  CHECK_FALSE(g->battery_percent.has_value());
  CHECK(gone.LastError().find("NOT_FOUND") != std::string::npos);
}
