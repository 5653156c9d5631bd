// Energy meters on fake sysfs trees: RAPL (psys vs package, dram, mirrors,
// multi-package, counter wrap-around, unreadable counters), battery
// discharge, model fallback and meter selection.
#include "verdant/energy/meter.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::energy;
using doctest::Approx;
namespace fs = std::filesystem;

namespace {

void Zone(const fs::path& root, const std::string& entry, const std::string& name,
          uint64_t energy_uj, uint64_t max_uj = 262143328850ull) {
  fs::create_directories(root / entry);
  testing::WriteFile(root / entry / "name", name + "\n");
  testing::WriteFile(root / entry / "energy_uj", std::to_string(energy_uj) + "\n");
  testing::WriteFile(root / entry / "max_energy_range_uj", std::to_string(max_uj) + "\n");
}

void SetCounter(const fs::path& root, const std::string& entry, uint64_t energy_uj) {
  testing::WriteFile(root / entry / "energy_uj", std::to_string(energy_uj) + "\n");
}

// A typical Intel laptop tree: package with core/uncore/dram subzones, psys,
// the MMIO mirror of package-0 and the bare control-type directory.
void IntelTree(const fs::path& root) {
  fs::create_directories(root / "intel-rapl");
  Zone(root, "intel-rapl:0", "package-0", 1'000'000);
  Zone(root, "intel-rapl:0:0", "core", 500'000);
  Zone(root, "intel-rapl:0:1", "uncore", 100'000);
  Zone(root, "intel-rapl:0:2", "dram", 200'000);
  Zone(root, "intel-rapl:1", "psys", 9'000'000);
  Zone(root, "intel-rapl-mmio:0", "package-0", 1'000'000);
}

bool RunningAsRoot() { return ::geteuid() == 0; }

}  // namespace

TEST_CASE("RAPL sums packages (+dram), never core/uncore/psys or mirrors") {
  testing::TempDir dir;
  IntelTree(dir.path());
  ManualClock clock(TimePoint(std::chrono::seconds(1000)));
  auto m = RaplMeter::Create(RaplOptions{.root = dir.path(), .clock = &clock});
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  CHECK((*m)->Method() == "rapl:package-0+package-0/dram");
  CHECK((*m)->domains().size() == 2);
  REQUIRE((*m)->Start().ok());
  // package +30 J, dram +2 J, core/uncore/psys/mmio move too but must not count.
  SetCounter(dir.path(), "intel-rapl:0", 31'000'000);
  SetCounter(dir.path(), "intel-rapl:0:2", 2'200'000);
  SetCounter(dir.path(), "intel-rapl:0:0", 20'000'000);
  SetCounter(dir.path(), "intel-rapl:1", 99'000'000);
  SetCounter(dir.path(), "intel-rapl-mmio:0", 31'000'000);
  clock.Advance(std::chrono::seconds(10));
  auto r = (*m)->Stop();
  REQUIRE(r.ok());
  CHECK(r->energy.joules() == Approx(32.0));
  CHECK(r->elapsed.count() == Approx(10.0));
  CHECK(r->method == "rapl:package-0+package-0/dram");
  CHECK((*m)->Stop().status().code() == StatusCode::kFailedPrecondition);

  // Without dram.
  auto nodram = RaplMeter::Create(RaplOptions{.root = dir.path(), .include_dram = false});
  CHECK((*nodram)->Method() == "rapl:package-0");
  // psys alone when preferred (it already contains package + core + uncore).
  auto psys = RaplMeter::Create(RaplOptions{.root = dir.path(), .prefer_psys = true});
  REQUIRE(psys.ok());
  CHECK((*psys)->Method() == "rapl:psys");
  REQUIRE((*psys)->Start().ok());
  SetCounter(dir.path(), "intel-rapl:1", 109'000'000);
  CHECK((*psys)->Stop()->energy.joules() == Approx(10.0));
}

TEST_CASE("RAPL counter wrap-around at max_energy_range_uj") {
  // WrappedDelta: (max - before) + now.
  CHECK(RaplMeter::WrappedDelta(100, 250, 1000) == 150);
  CHECK(RaplMeter::WrappedDelta(900, 50, 1000) == 150);
  CHECK(RaplMeter::WrappedDelta(5, 5, 1000) == 0);

  testing::TempDir dir;
  const uint64_t max = 1'000'000'000;  // 1 kJ range
  Zone(dir.path(), "intel-rapl:0", "package-0", max - 1'000'000, max);
  auto m = RaplMeter::Create(RaplOptions{.root = dir.path()});
  REQUIRE(m.ok());
  REQUIRE((*m)->Start().ok());
  // Wraps once: 1 J to the top, then 2 J after zero = 3 J.
  SetCounter(dir.path(), "intel-rapl:0", 2'000'000);
  auto r = (*m)->Stop();
  REQUIRE(r.ok());
  CHECK(r->energy.joules() == Approx(3.0));

  // A long run sampled between wraps: 0.9 kJ, wrap, 0.9 kJ, wrap ... accumulates all of it.
  SetCounter(dir.path(), "intel-rapl:0", 0);
  REQUIRE((*m)->Start().ok());
  SetCounter(dir.path(), "intel-rapl:0", 900'000'000);
  REQUIRE((*m)->Sample().ok());
  SetCounter(dir.path(), "intel-rapl:0", 800'000'000);  // wrapped: +0.1 kJ + 0.8 kJ
  REQUIRE((*m)->Sample().ok());
  SetCounter(dir.path(), "intel-rapl:0", 700'000'000);  // wrapped again: +0.2 + 0.7 kJ
  CHECK((*m)->Stop()->energy.joules() == Approx(2700.0));
}

TEST_CASE("RAPL multi-package sums and mirrored packages count once") {
  testing::TempDir two;
  Zone(two.path(), "intel-rapl:0", "package-0", 0);
  Zone(two.path(), "intel-rapl:1", "package-1", 0);
  auto m = RaplMeter::Create(RaplOptions{.root = two.path()});
  REQUIRE(m.ok());
  CHECK((*m)->Method() == "rapl:package-0+package-1");
  REQUIRE((*m)->Start().ok());
  SetCounter(two.path(), "intel-rapl:0", 5'000'000);
  SetCounter(two.path(), "intel-rapl:1", 7'000'000);
  CHECK((*m)->Stop()->energy.joules() == Approx(12.0));

  // Multi-die AMD: two zones report the same package counter.
  testing::TempDir mirrored;
  Zone(mirrored.path(), "intel-rapl:0", "package-0", 0);
  Zone(mirrored.path(), "intel-rapl:1", "package-0", 0);
  auto mm = RaplMeter::Create(RaplOptions{.root = mirrored.path()});
  REQUIRE(mm.ok());
  CHECK((*mm)->domains().size() == 1);
  REQUIRE((*mm)->Start().ok());
  SetCounter(mirrored.path(), "intel-rapl:0", 5'000'000);
  SetCounter(mirrored.path(), "intel-rapl:1", 5'000'000);
  CHECK((*mm)->Stop()->energy.joules() == Approx(5.0));

  // Only psys present: used.
  testing::TempDir only_psys;
  Zone(only_psys.path(), "intel-rapl:0", "psys", 0);
  CHECK((*RaplMeter::Create(RaplOptions{.root = only_psys.path()}))->Method() == "rapl:psys");
}

TEST_CASE("RAPL missing or unreadable -> clear status, caller falls back") {
  testing::TempDir dir;
  auto missing = RaplMeter::Create(RaplOptions{.root = dir.path() / "nope"});
  CHECK(missing.status().code() == StatusCode::kNotFound);
  auto empty = RaplMeter::Create(RaplOptions{.root = dir.path()});
  CHECK(empty.status().code() == StatusCode::kNotFound);

  Zone(dir.path(), "intel-rapl:0", "package-0", 0);
  const fs::path counter = dir.path() / "intel-rapl:0" / "energy_uj";
  if (!RunningAsRoot()) {
    REQUIRE(::chmod(counter.c_str(), 0) == 0);
    auto denied = RaplMeter::Create(RaplOptions{.root = dir.path()});
    CHECK(denied.status().code() == StatusCode::kPermissionDenied);
    CHECK(denied.status().message().find("energy_uj") != std::string::npos);
    ::chmod(counter.c_str(), 0644);
  } else {
    MESSAGE("running as root: chmod 000 does not block reads; testing an unreadable path instead");
  }
  // Unreadable in a way that holds for root too: a directory where the file should be.
  fs::remove(counter);
  fs::create_directories(counter);
  auto unreadable = RaplMeter::Create(RaplOptions{.root = dir.path()});
  CHECK(unreadable.status().code() == StatusCode::kDataLoss);
  CHECK(unreadable.status().message().find("energy_uj") != std::string::npos);
  // Garbage in the counter.
  fs::remove(counter);
  testing::WriteFile(counter, "lots\n");
  CHECK(RaplMeter::Create(RaplOptions{.root = dir.path()}).status().code() ==
        StatusCode::kDataLoss);

  // Becomes unreadable mid-measurement: Stop reports it instead of a wrong figure.
  SetCounter(dir.path(), "intel-rapl:0", 0);
  auto m = RaplMeter::Create(RaplOptions{.root = dir.path()});
  REQUIRE(m.ok());
  REQUIRE((*m)->Start().ok());
  fs::remove(counter);
  CHECK_FALSE((*m)->Stop().ok());

  // MakeBestMeter falls back to the model and says why.
  ManualClock clock;
  auto sel = MakeBestMeter(
      MeterSelectionOptions{.profile = *BuiltinProfile("laptop"),
                            .rapl = RaplOptions{.root = dir.path()},
                            .battery = BatteryMeterOptions{.root = dir.path() / "no-power-supply"},
                            .clock = &clock});
  REQUIRE(sel.meter != nullptr);
  CHECK(sel.meter->Method() == "model:laptop");
  REQUIRE(sel.fallback_reasons.size() == 2);
  CHECK(sel.fallback_reasons[0].rfind("rapl:", 0) == 0);
  CHECK(sel.fallback_reasons[1].rfind("battery:", 0) == 0);
}

TEST_CASE("ModelMeter: train power x wall time x PUE, tagged with the profile") {
  ManualClock clock;
  ModelMeter m(*BuiltinProfile("server-cpu"), &clock);
  CHECK(m.Stop().status().code() == StatusCode::kFailedPrecondition);
  REQUIRE(m.Start().ok());
  clock.Advance(std::chrono::seconds(10));
  auto r = m.Stop();
  REQUIRE(r.ok());
  // 85 W * 10 s * 1.56 = 1326 J
  CHECK(r->energy.joules() == Approx(1326.0));
  CHECK(r->method == "model:server-cpu");
}

TEST_CASE("BatteryMeter: energy_now deltas while discharging") {
  testing::TempDir dir;
  const fs::path bat = dir.path() / "BAT0";
  fs::create_directories(bat);
  fs::create_directories(dir.path() / "AC");
  testing::WriteFile(dir.path() / "AC" / "type", "Mains\n");
  testing::WriteFile(dir.path() / "AC" / "online", "0\n");
  testing::WriteFile(bat / "type", "Battery\n");
  testing::WriteFile(bat / "status", "Discharging\n");
  testing::WriteFile(bat / "energy_now", "50000000\n");  // 50 Wh in µWh
  testing::WriteFile(bat / "energy_full", "60000000\n");

  ManualClock clock;
  auto m = BatteryMeter::Create(BatteryMeterOptions{.root = dir.path(), .clock = &clock});
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  CHECK((*m)->Method() == "battery:BAT0");
  REQUIRE((*m)->Start().ok());
  testing::WriteFile(bat / "energy_now", "49990000\n");  // -0.01 Wh = 36 J
  clock.Advance(std::chrono::seconds(60));
  auto r = (*m)->Stop();
  REQUIRE(r.ok());
  CHECK(r->energy.joules() == Approx(36.0));
  CHECK(r->method == "battery:BAT0");

  // MakeBestMeter picks the battery when RAPL is absent and it discharges.
  auto sel =
      MakeBestMeter(MeterSelectionOptions{.profile = *BuiltinProfile("laptop"),
                                          .rapl = RaplOptions{.root = dir.path() / "x"},
                                          .battery = BatteryMeterOptions{.root = dir.path()}});
  CHECK(sel.meter->Method() == "battery:BAT0");

  // Charging: the battery does not show the draw.
  REQUIRE((*m)->Start().ok());
  testing::WriteFile(bat / "status", "Charging\n");
  CHECK((*m)->Stop().status().code() == StatusCode::kFailedPrecondition);
  CHECK((*m)->Start().code() == StatusCode::kFailedPrecondition);
  auto sel2 =
      MakeBestMeter(MeterSelectionOptions{.profile = *BuiltinProfile("laptop"),
                                          .rapl = RaplOptions{.root = dir.path() / "x"},
                                          .battery = BatteryMeterOptions{.root = dir.path()}});
  CHECK(sel2.meter->Method() == "model:laptop");

  // charge_now (µAh) x voltage_now (µV) when energy_now is absent:
  // 4,000,000 µAh * 3,850,000 µV = 15.4 Wh.
  testing::WriteFile(bat / "status", "Discharging\n");
  fs::remove(bat / "energy_now");
  testing::WriteFile(bat / "charge_now", "4000000\n");
  testing::WriteFile(bat / "voltage_now", "3850000\n");
  REQUIRE((*m)->Start().ok());
  testing::WriteFile(bat / "charge_now", "3990000\n");  // -10 mAh * 3.85 V = 0.0385 Wh = 138.6 J
  CHECK((*m)->Stop()->energy.joules() == Approx(138.6));

  CHECK(BatteryMeter::Create(BatteryMeterOptions{.root = dir.path() / "none"}).status().code() ==
        StatusCode::kNotFound);
}

TEST_CASE("meter selection on a fake /sys: RAPL package over psys and battery, then battery, then none") {
  testing::TempDir dir;
  const fs::path pc = dir.path() / "class" / "powercap", ps = dir.path() / "class" / "power_supply";
  fs::create_directories(ps / "BAT0");
  testing::WriteFile(ps / "BAT0" / "type", "Battery\n");
  testing::WriteFile(ps / "BAT0" / "status", "Discharging\n");
  testing::WriteFile(ps / "BAT0" / "energy_now", "50000000\n");
  auto select = [&] {
    return MakeBestMeter(MeterSelectionOptions{.profile = *BuiltinProfile("laptop"),
                                               .rapl = RaplOptions{.root = pc},
                                               .battery = BatteryMeterOptions{.root = ps}});
  };
  // Package and psys: the package is read, psys (which contains it) is not added.
  Zone(pc, "intel-rapl:0", "package-0", 1'000'000);
  Zone(pc, "intel-rapl:1", "psys", 5'000'000);
  auto sel = select();
  CHECK(sel.meter->Name() == "rapl");
  CHECK(sel.meter->Method() == "rapl:package-0");
  CHECK(sel.fallback_reasons.empty());
  REQUIRE(sel.meter->Start().ok());
  SetCounter(pc, "intel-rapl:0", 3'000'000);
  SetCounter(pc, "intel-rapl:1", 9'000'000);
  CHECK(sel.meter->Stop()->energy.joules() == Approx(2.0));
  // psys only (some AMD/ARM-less laptops): psys alone.
  fs::remove_all(pc / "intel-rapl:0");
  CHECK(select().meter->Method() == "rapl:psys");
  // No RAPL: the discharging battery, with the reason RAPL was not used.
  fs::remove_all(pc);
  sel = select();
  CHECK(sel.meter->Method() == "battery:BAT0");
  REQUIRE(sel.fallback_reasons.size() == 1);
  CHECK(sel.fallback_reasons[0].rfind("rapl:", 0) == 0);
  // On mains power: nothing measures; the model meter (the client reports nothing).
  testing::WriteFile(ps / "BAT0" / "status", "Charging\n");
  sel = select();
  CHECK(sel.meter->Name() == "model");
  CHECK(sel.fallback_reasons.size() == 2);
}
