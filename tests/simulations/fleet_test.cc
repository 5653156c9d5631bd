// Fleet CSV format: parsing, errors naming file/line/field, round trip; the
// generator's determinism and its behaviour model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "verdant/simulations/fleet.h"
#include "verdant/simulations/fleet_generator.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::sim;

namespace {

const char* kDevices =
    "device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples\n"
    "a,phone-midrange,US-CISO,15.4,0.5,3000,4000,60,300\n"
    "b,phone-flagship,NO,19.25,0.25,5000,8000,64,120\r\n";

std::string DeviceDataDir() { return VERDANT_SOURCE_DIR "/data/devices"; }

}  // namespace

TEST_CASE("devices and events parse and events are sorted by time") {
  auto fleet = ParseDevicesCsv(kDevices);
  REQUIRE(fleet.ok());
  REQUIRE(fleet->devices.size() == 2);
  CHECK(fleet->devices[1].id == "b");
  CHECK(fleet->devices[1].zone == "NO");
  CHECK(fleet->devices[1].battery_wh == doctest::Approx(19.25));
  CHECK(fleet->devices[1].num_examples == 120);
  Status st = ParseEventsCsv(
      "time,device_id,kind,value\n"
      "2022-06-01T01:00:00Z,a,battery,55.5\n"
      "2022-06-01T00:00:00Z,b,available,\n"
      "2022-06-01T00:00:00Z,a,network,cellular\n"
      "2022-06-01T02:00:00Z,b,charging_on,\n",
      *fleet);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  REQUIRE(fleet->events.size() == 4);
  CHECK(fleet->events[0].kind == EventKind::kAvailable);  // ties keep file order
  CHECK(fleet->events[1].network == Network::kCellular);
  CHECK(fleet->events[2].battery_percent == doctest::Approx(55.5));
  CHECK(fleet->events[3].kind == EventKind::kChargingOn);
  CHECK(FormatUtc(fleet->Start()) == "2022-06-01T00:00:00Z");
}

TEST_CASE("bad fleet rows name the file and line and field") {
  const std::string h = "device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples\n";
  struct Case {
    std::string text, want;
  };
  const Case cases[] = {
      {h + "a,p,Z,abc,0.5,1,1,60,10\n", "devices.csv:2: field 'battery_wh': 'abc' is not a number"},
      {h + "a,p,Z,1,0.5,1,1,60,10\na,p,Z,1,0.5,1,1,60,10\n", "devices.csv:3: field 'device_id': duplicate device 'a'"},
      {h + "a,p,Z,1,0,1,1,60,10\n", "devices.csv:2: field 'ms_per_sample'"},
      {h + "a,p,Z,1,0.5,1,1,60,1.5\n", "devices.csv:2: field 'num_examples'"},
      {h + "a,p,Z,1,0.5,1\n", "devices.csv:2: field 'device_id': row has 6 fields"},
      {h + "a b,p,Z,1,0.5,1,1,60,10\n", "devices.csv:2: field 'device_id'"},
      {"device_id,profile\n", "devices.csv:1: missing column 'zone'"},
  };
  for (const auto& c : cases) {
    auto f = ParseDevicesCsv(c.text);
    REQUIRE(!f.ok());
    CHECK(f.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(f.status().message().find(c.want) != std::string::npos, f.status().message());
  }
  const Case events[] = {
      {"time,device_id,kind,value\n2022-06-01T00:00:00Z,zz,available,\n",
       "events.csv:2: field 'device_id': unknown device 'zz'"},
      {"time,device_id,kind,value\nyesterday,a,available,\n", "events.csv:2: field 'time'"},
      {"time,device_id,kind,value\n2022-06-01T00:00:00Z,a,explode,\n", "events.csv:2: field 'kind'"},
      {"time,device_id,kind,value\n2022-06-01T00:00:00Z,a,available,\n2022-06-01T00:00:00Z,a,battery,120\n",
       "events.csv:3: field 'value': battery level"},
      {"time,device_id,kind,value\n2022-06-01T00:00:00Z,a,network,5g\n", "events.csv:2: field 'value'"},
  };
  for (const auto& c : events) {
    auto f = ParseDevicesCsv(kDevices);
    REQUIRE(f.ok());
    Status st = ParseEventsCsv(c.text, *f);
    REQUIRE(!st.ok());
    CHECK_MESSAGE(st.message().find(c.want) != std::string::npos, st.message());
  }
}

TEST_CASE("LoadFleet reads what WriteFleet wrote and names missing files") {
  testing::TempDir dir;
  auto missing = LoadFleet(dir.path());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("devices.csv") != std::string::npos);
  FleetGeneratorOptions o;
  o.devices = 5;
  o.days = 1;
  o.zones = {"US-CISO", "NO"};
  auto fleet = GenerateFleet(o, DeviceDataDir());
  REQUIRE_MESSAGE(fleet.ok(), fleet.status().ToString());
  REQUIRE(WriteFleet(*fleet, dir.path()).ok());
  auto back = LoadFleet(dir.path());
  REQUIRE_MESSAGE(back.ok(), back.status().ToString());
  REQUIRE(back->devices.size() == 5);
  REQUIRE(back->events.size() == fleet->events.size());
  for (size_t i = 0; i < 5; ++i) {
    CHECK(back->devices[i].ms_per_sample == doctest::Approx(fleet->devices[i].ms_per_sample));
    CHECK(back->devices[i].up_kbps == doctest::Approx(fleet->devices[i].up_kbps));
  }
  // A bad row in a file on disk names that file.
  testing::WriteFile(dir.path() / "events.csv", "time,device_id,kind,value\n2022-06-01T00:00:00Z,d0,battery,x\n");
  auto bad = LoadFleet(dir.path());
  REQUIRE(!bad.ok());
  CHECK(bad.status().message().find((dir.path() / "events.csv").string() + ":2: field 'value'") != std::string::npos);
}

TEST_CASE("events parsed in parallel parts equal a single pass, and errors keep their line") {
  testing::TempDir dir;
  FleetGeneratorOptions o;
  o.devices = 60;
  o.days = 2;
  o.zones = {"US-CISO", "NO"};
  auto fleet = GenerateFleet(o, DeviceDataDir());
  REQUIRE(fleet.ok());
  REQUIRE(WriteFleet(*fleet, dir.path()).ok());
  const std::string devices = testing::ReadFile(dir.path() / "devices.csv");
  std::string events = testing::ReadFile(dir.path() / "events.csv");
  // A blank line and a CRLF line in the middle, and no '\n' at the very end.
  const size_t mid = events.find('\n', events.size() / 2) + 1;
  events.insert(mid, 1, '\n');
  const size_t crlf = events.find('\n', events.size() / 3);
  events.insert(crlf, 1, '\r');
  events.pop_back();
  auto parse = [&](const std::string& text, size_t threads) {
    auto f = ParseDevicesCsv(devices);
    REQUIRE(f.ok());
    Status st = ParseEventsCsv(text, *f, "events.csv", threads);
    return std::make_pair(std::move(*f), st);
  };
  auto [one, st1] = parse(events, 1);
  REQUIRE_MESSAGE(st1.ok(), st1.ToString());
  CHECK(one.events.size() == fleet->events.size());
  for (size_t threads : {2, 3, 4, 7}) {
    CAPTURE(threads);
    auto [many, st] = parse(events, threads);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    REQUIRE(many.events.size() == one.events.size());
    bool same = true;
    for (size_t i = 0; i < one.events.size(); ++i) {
      const auto &a = one.events[i], &b = many.events[i];
      same = same && a.time == b.time && a.device == b.device && a.kind == b.kind &&
             a.battery_percent == b.battery_percent && a.network == b.network;
    }
    CHECK(same);
  }
  // Two bad rows, one in the last part and one in the middle: the earlier is
  // reported, with its line number in the file, however the file is split.
  const auto line_of = [&](size_t offset) { return 1 + std::count(events.begin(), events.begin() + offset, '\n'); };
  std::string bad = events;
  const size_t late = bad.rfind(",available,");
  REQUIRE(late != std::string::npos);
  bad.replace(late, 11, ",explodes,,");
  const size_t early = bad.find(",available,", bad.size() * 2 / 3 - bad.size() / 4);
  REQUIRE(early < late);
  bad.replace(early, 11, ",explodes,,");
  const std::string want = "events.csv:" + std::to_string(line_of(early)) + ": field 'kind'";
  for (size_t threads : {1, 2, 3, 4}) {
    CAPTURE(threads);
    auto [f, st] = parse(bad, threads);
    REQUIRE(!st.ok());
    CHECK_MESSAGE(st.message().find(want) != std::string::npos, st.message());
  }
}

TEST_CASE("the generator gives byte-identical fleets for the same seed") {
  testing::TempDir dir;
  FleetGeneratorOptions o;
  o.devices = 40;
  o.days = 2;
  o.zones = {"US-CISO", "ES", "X@+5.5"};
  o.seed = 7;
  auto a = GenerateFleet(o, DeviceDataDir());
  auto b = GenerateFleet(o, DeviceDataDir());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(WriteFleet(*a, dir.path() / "a").ok());
  REQUIRE(WriteFleet(*b, dir.path() / "b").ok());
  for (const char* f : {"devices.csv", "events.csv"}) {
    CHECK(testing::ReadFile(dir.path() / "a" / f) == testing::ReadFile(dir.path() / "b" / f));
  }
  o.seed = 8;
  auto c = GenerateFleet(o, DeviceDataDir());
  REQUIRE(c.ok());
  REQUIRE(WriteFleet(*c, dir.path() / "c").ok());
  CHECK(testing::ReadFile(dir.path() / "a" / "events.csv") != testing::ReadFile(dir.path() / "c" / "events.csv"));
}

TEST_CASE("the generator behaviour model: night charging in local time and a spread of speeds") {
  FleetGeneratorOptions o;
  o.devices = 300;
  o.days = 3;
  o.zones = {"US-CISO", "ES"};  // UTC-8 and UTC+1
  auto fleet = GenerateFleet(o, DeviceDataDir());
  REQUIRE(fleet.ok());
  // Charging starts by local hour: most at night (19:00-02:00 local).
  int night = 0, day = 0;
  for (const auto& e : fleet->events) {
    if (e.kind != EventKind::kChargingOn || e.time == o.start) continue;
    const auto& d = fleet->devices[e.device];
    const double offset = *ZoneUtcOffsetHours(d.zone);
    const auto h = std::chrono::duration_cast<std::chrono::minutes>(e.time.time_since_epoch()).count() / 60.0 + offset;
    const double local = std::fmod(std::fmod(h, 24) + 24, 24);
    (local >= 19 || local < 2 ? night : day)++;
  }
  CHECK(night > 2 * day);
  CHECK(night > 300);
  // Compute speeds and bandwidths spread over an order of magnitude; both zones used.
  double lo = 1e9, hi = 0, up_lo = 1e9, up_hi = 0;
  std::map<std::string, int> zones;
  for (const auto& d : fleet->devices) {
    lo = std::min(lo, d.ms_per_sample);
    hi = std::max(hi, d.ms_per_sample);
    up_lo = std::min(up_lo, d.up_kbps);
    up_hi = std::max(up_hi, d.up_kbps);
    ++zones[d.zone];
    CHECK(d.battery_wh >= 12);
    CHECK(d.battery_wh <= 20);
  }
  CHECK(hi / lo > 5);
  CHECK(up_hi / up_lo > 3);
  CHECK(zones.size() == 2);
  // Both networks occur, and battery levels stay in range.
  int wifi = 0, cell = 0;
  for (const auto& e : fleet->events) {
    if (e.kind == EventKind::kNetwork) (e.network == Network::kWifi ? wifi : cell)++;
    if (e.kind == EventKind::kBattery) CHECK((e.battery_percent >= 0 && e.battery_percent <= 100));
  }
  CHECK(wifi > 0);
  CHECK(cell > 0);
  auto bad = GenerateFleet(FleetGeneratorOptions{.devices = 1, .days = 1, .zones = {"ATLANTIS"}}, DeviceDataDir());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("ATLANTIS@+H") != std::string::npos);
}

TEST_CASE("the streaming generator writes the bytes WriteFleet writes for GenerateFleet") {
  testing::TempDir dir;
  FleetGeneratorOptions o;
  o.devices = 120;
  o.days = 3;
  o.zones = {"US-CISO", "NO", "X@+5.5"};
  o.seed = 11;
  auto fleet = GenerateFleet(o, DeviceDataDir());
  REQUIRE(fleet.ok());
  REQUIRE(WriteFleet(*fleet, dir.path() / "a").ok());
  auto files = GenerateFleetFiles(o, DeviceDataDir(), dir.path() / "b");
  REQUIRE_MESSAGE(files.ok(), files.status().ToString());
  CHECK(files->devices == 120);
  CHECK(files->events == fleet->events.size());
  for (const char* f : {"devices.csv", "events.csv"}) {
    const std::string a = testing::ReadFile(dir.path() / "a" / f);
    CHECK(a == testing::ReadFile(dir.path() / "b" / f));
    CHECK(a.size() == (std::string(f) == "devices.csv" ? files->devices_bytes : files->events_bytes));
  }
  // And it reads back as the same fleet.
  auto back = LoadFleet(dir.path() / "b");
  REQUIRE_MESSAGE(back.ok(), back.status().ToString());
  REQUIRE(back->events.size() == fleet->events.size());
  for (size_t i = 0; i < back->events.size(); ++i) {
    CHECK(back->events[i].time == fleet->events[i].time);
    CHECK(back->events[i].device == fleet->events[i].device);
    CHECK(back->events[i].kind == fleet->events[i].kind);
  }
}

TEST_CASE("generated battery levels follow the model's rates between reports") {
  // Between two battery reports of a device with no charging or idle change
  // in between, the level moves by the rate of the state: +40 %/h charging,
  // -1.5 %/h idle, -8 %/h busy (clamped to 0..100). Checks the closed-form
  // stepping against the per-minute model.
  FleetGeneratorOptions o;
  o.devices = 60;
  o.days = 2;
  o.zones = {"ES"};
  o.seed = 3;
  auto fleet = GenerateFleet(o, DeviceDataDir());
  REQUIRE(fleet.ok());
  struct State {
    bool charging = false, idle = false, changed = true, seen = false;
    TimePoint t{};
    double level = 0;
  };
  std::vector<State> st(fleet->devices.size());
  int checked = 0;
  for (const auto& e : fleet->events) {
    State& s = st[e.device];
    switch (e.kind) {
      case EventKind::kChargingOn: s.charging = true; s.changed = true; break;
      case EventKind::kChargingOff: s.charging = false; s.changed = true; break;
      case EventKind::kIdle: s.idle = true; s.changed = true; break;
      case EventKind::kBusy: s.idle = false; s.changed = true; break;
      case EventKind::kBattery: {
        if (s.seen && !s.changed) {
          const double minutes = std::chrono::duration<double>(e.time - s.t).count() / 60;
          const double rate = s.charging ? 40.0 : s.idle ? -1.5 : -8.0;
          const double expect = std::clamp(s.level + rate * minutes / 60, 0.0, 100.0);
          CHECK(std::fabs(e.battery_percent - expect) <= 0.11);  // both levels are written to 0.1 %
          ++checked;
        }
        s.seen = true;
        s.changed = false;
        s.t = e.time;
        s.level = e.battery_percent;
        break;
      }
      default: break;
    }
  }
  CHECK(checked > 1000);
}
