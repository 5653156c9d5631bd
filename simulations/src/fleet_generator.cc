#include "verdant/simulations/fleet_generator.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "verdant/core/rng.h"
#include "verdant/energy/energy_model.h"
#include "fleet_csv.h"

namespace verdant::sim {

namespace {

// Standard UTC offsets (hours, no daylight saving) of the zones of the
// shipped traces (data/carbon) and a few more.
const std::map<std::string, double, std::less<>>& KnownOffsets() {
  static const auto* m = new std::map<std::string, double, std::less<>>{
      {"US-CISO", -8}, {"US-BPAT", -8}, {"US-AZPS", -7}, {"US-WAAT", -7}, {"US-ERCO", -6},
      {"US-MISO", -6}, {"US-SOCO", -6}, {"US-PJM", -5},  {"US-NYIS", -5}, {"BR", -3},
      {"ES", 1},       {"NO", 1},       {"DE", 1},       {"FR", 1},       {"GB", 0},
      {"PL", 1},       {"IN", 5.5},     {"JP", 9},       {"AU-NSW", 10},
  };
  return *m;
}

// Model constants (docs/simulator.md, "Fleet generator", gives each source).
constexpr double kNightChargeProb = 0.85;    // nights with a charging session
constexpr double kPlugInMeanH = 22.5, kPlugInSdH = 1.5;
constexpr double kUnplugMeanH = 7.0, kUnplugSdH = 1.0;
constexpr double kDayTopUpProb = 0.3;        // days with an afternoon top-up
constexpr double kDayIdleProb = 0.45;        // waking hours the phone lies unused
constexpr double kDayCellularProb = 0.6;     // days away from Wi-Fi between 08:00 and 18:00
constexpr double kOutageProb = 0.1;          // days with an outage (switched off / no signal)
constexpr double kChargePctPerHour = 40.0;   // 0 -> 100 % in 2.5 h
constexpr double kBusyDrainPctPerHour = 8.0;
constexpr double kIdleDrainPctPerHour = 1.5;
constexpr double kMidrangeMsPerSample = 0.5;  // phone-midrange at the median CPU score

struct Interval {
  int64_t begin, end;  // minutes since the fleet start, [begin, end)
};

double Clamp(double v, double lo, double hi) { return std::max(lo, std::min(hi, v)); }

Result<nlohmann::json> ReadJson(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return NotFoundError("cannot read " + p.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    return DataLossError(p.string() + ": " + e.what());
  }
}

struct Speed {
  double down_u, down_sigma, up_u, up_sigma;
};

// What the device draws need from data/devices, read once.
struct DeviceData {
  std::vector<std::pair<std::string, double>> zones;  // id, UTC offset (hours)
  std::vector<double> scores;                         // CPU float AI-Benchmark scores
  double median = 0, p75 = 0;
  std::vector<Speed> speeds;
  energy::DeviceProfile midrange, flagship;
};

Result<DeviceData> ReadDeviceData(const FleetGeneratorOptions& o, const std::filesystem::path& data_dir) {
  if (o.devices == 0) return InvalidArgumentError("fleet generator: devices must be > 0");
  if (o.devices > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError("fleet generator: at most 4,294,967,295 devices");
  }
  if (o.days == 0) return InvalidArgumentError("fleet generator: days must be > 0");
  if (o.zones.empty()) return InvalidArgumentError("fleet generator: give at least one zone");
  DeviceData dd;
  for (const auto& z : o.zones) {
    VERDANT_ASSIGN_OR_RETURN(double off, ZoneUtcOffsetHours(z));
    dd.zones.emplace_back(ZoneName(z), off);
  }
  // Compute speed: the CPU float AI-Benchmark score of a phone model drawn
  // uniformly from the list; ms_per_sample scales inversely with it.
  const auto bench_file = data_dir / "flash_ai_benchmark_list.json";
  VERDANT_ASSIGN_OR_RETURN(auto bench, ReadJson(bench_file));
  if (!bench.is_array()) return DataLossError(bench_file.string() + ": expected a JSON array");
  for (size_t i = 0; i < bench.size(); ++i) {
    const auto& e = bench[i];
    if (!e.is_object() || !e.contains("CPU_F_AI_Score") || !e["CPU_F_AI_Score"].is_string()) {
      return DataLossError(bench_file.string() + ": entry " + std::to_string(i) + " has no CPU_F_AI_Score string");
    }
    const std::string s = e["CPU_F_AI_Score"].get<std::string>();
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (!(v > 0)) return DataLossError(bench_file.string() + ": entry " + std::to_string(i) + ": bad CPU_F_AI_Score");
    dd.scores.push_back(v);
  }
  if (dd.scores.empty()) return DataLossError(bench_file.string() + ": no phones");
  std::vector<double> sorted = dd.scores;
  std::sort(sorted.begin(), sorted.end());
  dd.median = sorted[sorted.size() / 2];
  dd.p75 = sorted[sorted.size() * 3 / 4];
  // Bandwidth: a FLASH device's measured distribution, drawn uniformly.
  const auto speed_file = data_dir / "flash_speed_distri.json";
  VERDANT_ASSIGN_OR_RETURN(auto speed_json, ReadJson(speed_file));
  if (!speed_json.is_object()) return DataLossError(speed_file.string() + ": expected a JSON object");
  for (const auto& [key, v] : speed_json.items()) {  // nlohmann's object keeps keys sorted: deterministic
    try {
      dd.speeds.push_back({v.at("down_u").get<double>(), v.at("down_sigma").get<double>(), v.at("up_u").get<double>(),
                           v.at("up_sigma").get<double>()});
    } catch (const std::exception& e) {
      return DataLossError(speed_file.string() + ": device " + key + ": " + e.what());
    }
  }
  if (dd.speeds.empty()) return DataLossError(speed_file.string() + ": no devices");
  VERDANT_ASSIGN_OR_RETURN(dd.midrange, energy::BuiltinProfile("phone-midrange"));
  VERDANT_ASSIGN_OR_RETURN(dd.flagship, energy::BuiltinProfile("phone-flagship"));
  return dd;
}

// "d" + the device number, zero-padded to the width of the largest one.
void AppendDeviceId(std::string& out, uint64_t i, int digits) {
  char buf[24];
  const auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), i);
  out += 'd';
  out.append(static_cast<size_t>(std::max<ptrdiff_t>(0, digits - (p - buf))), '0');
  out.append(buf, p);
}

// Device i's static attributes, drawn from `rng` (its own stream); returns
// the zone's UTC offset in minutes for the behaviour that follows.
int64_t DrawDevice(const DeviceData& dd, uint64_t i, int digits, Rng& rng, Device& d) {
  d.id.clear();
  AppendDeviceId(d.id, i, digits);
  const auto& [zone, offset_h] = dd.zones[rng.UniformInt(dd.zones.size())];
  d.zone = zone;
  const double score = dd.scores[rng.UniformInt(dd.scores.size())];
  const bool flag = score >= dd.p75;
  d.profile = flag ? dd.flagship.name : dd.midrange.name;
  d.ms_per_sample = kMidrangeMsPerSample * dd.median / score;
  d.battery_wh = 12.0 + 8.0 * rng.Uniform();  // ENERGY.md: 12-20 Wh
  d.embodied_kg = (flag ? dd.flagship : dd.midrange).embodied.grams() / 1000.0;
  const Speed& sp = dd.speeds[rng.UniformInt(dd.speeds.size())];
  d.down_kbps = std::max(0.1 * sp.down_u, sp.down_u + sp.down_sigma * rng.Normal());
  d.up_kbps = std::max(0.1 * sp.up_u, sp.up_u + sp.up_sigma * rng.Normal());
  d.num_examples = static_cast<uint64_t>(Clamp(std::round(std::exp(std::log(300.0) + 0.8 * rng.Normal())), 20, 3000));
  // Round what the CSV rounds, so a written-and-read fleet is this one.
  auto round_to = [](double v, double q) { return std::round(v * q) / q; };
  d.battery_wh = round_to(d.battery_wh, 100);
  d.ms_per_sample = round_to(d.ms_per_sample, 10000);
  d.down_kbps = round_to(d.down_kbps, 10);
  d.up_kbps = round_to(d.up_kbps, 10);
  return static_cast<int64_t>(std::llround(offset_h * 60));
}

// One event of a device before it is placed in time. `value`: battery
// level in tenths of a percent (kBattery) or the Network (kNetwork).
struct RawEvent {
  int64_t minute;
  EventKind kind;
  uint16_t value;
};

// Reused buffers of DeviceBehaviour (one device at a time).
struct Scratch {
  struct Edge {
    int64_t minute;
    int what;   // 0 charging, 1 idle, 2 Wi-Fi, 3 outage
    int delta;  // +1 an interval begins, -1 it ends
  };
  std::vector<Edge> edges;
  std::vector<int64_t> points;
  std::vector<RawEvent> events;
};

// The first step k >= 1 at which level + k x rate reaches `bound` (<= bound
// when draining, >= bound when charging). The closed form, corrected for
// rounding so that it agrees with the level the caller computes.
int64_t FirstStep(double level, double rate, double bound) {
  auto reached = [&](int64_t k) {
    const double v = level + static_cast<double>(k) * rate;
    return rate < 0 ? v <= bound : v >= bound;
  };
  int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil((bound - level) / rate)));
  while (k > 1 && reached(k - 1)) --k;
  while (!reached(k)) ++k;
  return k;
}

// Device behaviour over the days (docs/simulator.md, "Fleet generator"),
// into s.events in time order. The model is stated per minute: at minute m
// the charging, idle, Wi-Fi and outage states are whether m lies in one of
// the drawn intervals; the battery moves by the rate of those states; it is
// dead from reaching 0 % until, charging, it is back at 3 %. Instead of
// stepping every minute (10^10 steps for 10^6 devices over a week), only
// the minutes where something can change are visited — interval ends and
// the hourly battery reports — and between them the level moves in closed
// form (it is monotone, so clamping once equals clamping every minute) with
// the minute it empties or recovers solved for.
void DeviceBehaviour(Rng& rng, int64_t shift, uint32_t days, Scratch& s) {
  std::vector<Interval> charging, idle, wifi, outage;
  for (int64_t k = -1; k <= static_cast<int64_t>(days); ++k) {
    const int64_t base = k * 1440 - shift;  // local day k begins at UTC minute k*1440 - offset
    auto min_of = [&](double hours) { return base + static_cast<int64_t>(std::llround(hours * 60)); };
    // Night: plug in ~22:30, unplug ~07:00 next morning; asleep (idle) from
    // plug-in (or ~23:00) to unplug; Wi-Fi at home from ~18:00 to ~08:00.
    const double plug = Clamp(kPlugInMeanH + kPlugInSdH * rng.Normal(), 19, 26);
    const double unplug = 24 + Clamp(kUnplugMeanH + kUnplugSdH * rng.Normal(), 5, 10);
    if (rng.Uniform() < kNightChargeProb) charging.push_back({min_of(plug), min_of(unplug)});
    const double sleep = Clamp(23 + rng.Normal(), 21, 26.5);
    idle.push_back({min_of(std::min(plug, sleep)), min_of(unplug)});
    const double home = Clamp(18 + 1.5 * rng.Normal(), 16, 22);
    const double leave = 24 + Clamp(8 + rng.Normal(), 6, 10);
    wifi.push_back({min_of(home), min_of(leave)});
    if (rng.Uniform() >= kDayCellularProb) wifi.push_back({min_of(8), min_of(18)});  // a Wi-Fi day (office)
    if (rng.Uniform() < kDayTopUpProb) {
      const double st = 12 + 6 * rng.Uniform();
      charging.push_back({min_of(st), min_of(st + 0.5 + rng.Uniform())});
    }
    for (int h = 8; h < 22; ++h) {
      if (rng.Uniform() < kDayIdleProb) idle.push_back({min_of(h), min_of(h + 1)});
    }
    if (rng.Uniform() < kOutageProb) {
      const double st = 24 * rng.Uniform();
      outage.push_back({min_of(st), min_of(st + 1 + 5 * rng.Uniform())});
    }
  }
  double battery = 40 + 60 * rng.Uniform();
  const int64_t battery_phase = static_cast<int64_t>(rng.UniformInt(60));
  const int64_t total_min = static_cast<int64_t>(days) * 1440;

  // Where a state can change: interval ends (as counters, since intervals
  // of one kind may overlap) and the hourly battery reports.
  s.edges.clear();
  s.points.clear();
  s.events.clear();
  const std::vector<Interval>* kinds[] = {&charging, &idle, &wifi, &outage};
  for (int w = 0; w < 4; ++w) {
    for (const auto& iv : *kinds[w]) {
      if (iv.begin >= iv.end) continue;  // empty: never inside
      s.edges.push_back({iv.begin, w, +1});
      s.edges.push_back({iv.end, w, -1});
      if (iv.begin > 0 && iv.begin < total_min) s.points.push_back(iv.begin);
      if (iv.end > 0 && iv.end < total_min) s.points.push_back(iv.end);
    }
  }
  std::sort(s.edges.begin(), s.edges.end(), [](const auto& a, const auto& b) { return a.minute < b.minute; });
  s.points.push_back(0);
  for (int64_t m = battery_phase; m < total_min; m += 60) s.points.push_back(m);
  std::sort(s.points.begin(), s.points.end());
  s.points.erase(std::unique(s.points.begin(), s.points.end()), s.points.end());

  auto rate = [](bool c, bool id) {
    return c ? kChargePctPerHour / 60 : -(id ? kIdleDrainPctPerHour : kBusyDrainPctPerHour) / 60;
  };
  auto emit = [&](int64_t m, EventKind k, uint16_t v = 0) { s.events.push_back({m, k, v}); };
  int count[4] = {0, 0, 0, 0};
  size_t edge = 0;
  bool avail = false, chg = false, idl = false, out = false, dead = false;
  Network net = Network::kWifi;
  int64_t prev = -1;
  // Minutes prev+1 .. prev+steps keep the states of `prev`: only the level
  // moves, and the device may empty (draining) or recover (charging).
  auto between = [&](int64_t steps) {
    if (prev < 0 || steps <= 0) return;
    const double r = rate(chg, idl);
    if (r < 0 && !dead) {
      const int64_t k = FirstStep(battery, r, 0);
      if (k <= steps) {
        dead = true;
        if (avail) emit(prev + k, EventKind::kUnavailable);
        avail = false;
      }
    } else if (r > 0 && dead && chg) {
      const int64_t k = FirstStep(battery, r, 3);
      if (k <= steps) {
        dead = false;
        if (!out && !avail) emit(prev + k, EventKind::kAvailable);
        avail = !out;
      }
    }
    battery = Clamp(battery + static_cast<double>(steps) * r, 0, 100);
  };
  for (const int64_t m : s.points) {
    between(m - prev - 1);
    while (edge < s.edges.size() && s.edges[edge].minute <= m) {
      count[s.edges[edge].what] += s.edges[edge].delta;
      ++edge;
    }
    const bool c = count[0] > 0, id = count[1] > 0;
    const Network n = count[2] > 0 ? Network::kWifi : Network::kCellular;
    out = count[3] > 0;
    if (m > 0) battery = Clamp(battery + rate(c, id), 0, 100);
    if (battery <= 0) dead = true;
    if (dead && c && battery >= 3) dead = false;  // boots again once charged a little
    const bool a = !dead && !out;
    const bool first = m == 0;
    if (first || c != chg) emit(m, c ? EventKind::kChargingOn : EventKind::kChargingOff);
    if (first || id != idl) emit(m, id ? EventKind::kIdle : EventKind::kBusy);
    if (first || n != net) emit(m, EventKind::kNetwork, static_cast<uint16_t>(n));
    if (first || (m % 60) == battery_phase || c != chg) {
      emit(m, EventKind::kBattery, static_cast<uint16_t>(std::llround(battery * 10)));
    }
    if (first || a != avail) emit(m, a ? EventKind::kAvailable : EventKind::kUnavailable);
    chg = c;
    idl = id;
    net = n;
    avail = a;
    prev = m;
  }
  between(total_min - 1 - prev);
}

FleetEvent ToFleetEvent(const RawEvent& r, uint32_t device, TimePoint t0) {
  FleetEvent e;
  e.time = t0 + std::chrono::minutes(r.minute);
  e.device = device;
  e.kind = r.kind;
  if (r.kind == EventKind::kBattery) e.battery_percent = static_cast<float>(r.value / 10.0);
  if (r.kind == EventKind::kNetwork) e.network = static_cast<Network>(r.value);
  return e;
}

int IdDigits(uint64_t devices) { return static_cast<int>(std::to_string(devices - 1).size()); }

}  // namespace

std::string ZoneName(const std::string& zone_spec) { return zone_spec.substr(0, zone_spec.find('@')); }

Result<double> ZoneUtcOffsetHours(const std::string& zone_spec) {
  const auto at = zone_spec.find('@');
  if (at != std::string::npos) {
    const std::string off = zone_spec.substr(at + 1);
    char* end = nullptr;
    const double h = std::strtod(off.c_str(), &end);
    if (off.empty() || end != off.c_str() + off.size() || !(h >= -12 && h <= 14)) {
      return InvalidArgumentError("zone '" + zone_spec + "': the offset after '@' must be hours in -12..14, e.g. @+5.5");
    }
    return h;
  }
  auto it = KnownOffsets().find(zone_spec);
  if (it == KnownOffsets().end()) {
    return InvalidArgumentError("zone '" + zone_spec + "' has no known UTC offset: write it as " + zone_spec +
                                "@+H (hours)");
  }
  return it->second;
}

Result<std::filesystem::path> FindDeviceDataDir() {
  namespace fs = std::filesystem;
  std::vector<fs::path> tries;
  if (const char* d = std::getenv("VERDANT_DEVICES_DIR")) tries.push_back(fs::path(d));
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    tries.push_back(exe.parent_path().parent_path() / "data" / "devices");
    tries.push_back(exe.parent_path().parent_path() / "share" / "verdant" / "data" / "devices");
  }
  tries.push_back(fs::current_path(ec) / "data" / "devices");
  std::string list;
  for (const auto& t : tries) {
    if (fs::exists(t / "flash_speed_distri.json", ec)) return t;
    list += (list.empty() ? "" : ", ") + t.string();
  }
  return NotFoundError("no device data found (looked in " + list + "); pass --device-data or set VERDANT_DEVICES_DIR");
}

Result<Fleet> GenerateFleet(const FleetGeneratorOptions& o, const std::filesystem::path& data_dir) {
  VERDANT_ASSIGN_OR_RETURN(const DeviceData dd, ReadDeviceData(o, data_dir));
  Fleet fleet;
  const int digits = IdDigits(o.devices);
  const Rng root(o.seed);
  Scratch scratch;
  fleet.devices.reserve(o.devices);
  for (uint64_t i = 0; i < o.devices; ++i) {
    Rng rng = root.Fork(i);
    Device d;
    const int64_t shift = DrawDevice(dd, i, digits, rng, d);
    const auto dev = static_cast<uint32_t>(fleet.devices.size());
    fleet.index.emplace(d.id, dev);
    fleet.devices.push_back(std::move(d));
    DeviceBehaviour(rng, shift, o.days, scratch);
    for (const auto& r : scratch.events) fleet.events.push_back(ToFleetEvent(r, dev, o.start));
  }
  std::stable_sort(fleet.events.begin(), fleet.events.end(),
                   [](const FleetEvent& a, const FleetEvent& b) { return a.time < b.time; });
  return fleet;
}

Result<GeneratedFleetFiles> GenerateFleetFiles(const FleetGeneratorOptions& o,
                                               const std::filesystem::path& data_dir,
                                               const std::filesystem::path& out_dir) {
  VERDANT_ASSIGN_OR_RETURN(const DeviceData dd, ReadDeviceData(o, data_dir));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return UnavailableError("cannot create " + out_dir.string() + ": " + ec.message());
  const int digits = IdDigits(o.devices);
  const Rng root(o.seed);
  const auto total_min = static_cast<size_t>(o.days) * 1440;
  Scratch scratch;
  Device d;

  // Pass 1: devices.csv, and how many events fall in each minute.
  std::vector<uint64_t> first(total_min + 1, 0);  // per minute: its count, then its first slot
  {
    VERDANT_ASSIGN_OR_RETURN(auto out, CsvWriter::Open(out_dir / "devices.csv"));
    out.buffer() += DevicesCsvHeader();
    for (uint64_t i = 0; i < o.devices; ++i) {
      Rng rng = root.Fork(i);
      const int64_t shift = DrawDevice(dd, i, digits, rng, d);
      AppendDeviceRow(out.buffer(), d);
      VERDANT_RETURN_IF_ERROR(out.FlushIfFull());
      DeviceBehaviour(rng, shift, o.days, scratch);
      for (const auto& r : scratch.events) ++first[static_cast<size_t>(r.minute)];
    }
    VERDANT_RETURN_IF_ERROR(out.Close());
  }
  uint64_t total = 0;
  for (auto& n : first) {
    const uint64_t count = n;
    n = total;
    total += count;
  }

  // Pass 2: the same draws again (each device has its own stream), each
  // event put straight into its place in time order: a counting sort by
  // minute, stable (device order, then the device's own order) as
  // GenerateFleet's stable sort is, with 8 bytes per event instead of a
  // FleetEvent.
  struct Placed {
    uint32_t device;
    uint8_t kind;  // EventKind
    uint16_t value;
  };
  static_assert(sizeof(Placed) <= 8);
  std::vector<Placed> placed(total);
  {
    std::vector<uint64_t> slot(first.begin(), first.end());
    for (uint64_t i = 0; i < o.devices; ++i) {
      Rng rng = root.Fork(i);
      const int64_t shift = DrawDevice(dd, i, digits, rng, d);
      DeviceBehaviour(rng, shift, o.days, scratch);
      for (const auto& r : scratch.events) {
        placed[slot[static_cast<size_t>(r.minute)]++] = {static_cast<uint32_t>(i), static_cast<uint8_t>(r.kind), r.value};
      }
    }
  }

  VERDANT_ASSIGN_OR_RETURN(auto out, CsvWriter::Open(out_dir / "events.csv"));
  out.buffer() += EventsCsvHeader();
  std::string id;
  for (size_t m = 0; m < total_min; ++m) {
    if (first[m] == first[m + 1]) continue;
    const std::string time = FormatUtc(o.start + std::chrono::minutes(m));
    for (uint64_t k = first[m]; k < first[m + 1]; ++k) {
      const Placed& p = placed[k];
      id.clear();
      AppendDeviceId(id, p.device, digits);
      // The same float as ToFleetEvent, so the bytes are WriteFleet's.
      const FleetEvent e =
          ToFleetEvent({static_cast<int64_t>(m), static_cast<EventKind>(p.kind), p.value}, p.device, o.start);
      AppendEventRow(out.buffer(), time, id, e.kind, e.battery_percent, e.network);
      VERDANT_RETURN_IF_ERROR(out.FlushIfFull());
    }
  }
  VERDANT_RETURN_IF_ERROR(out.Close());
  GeneratedFleetFiles info;
  info.devices = o.devices;
  info.events = total;
  info.devices_bytes = std::filesystem::file_size(out_dir / "devices.csv", ec);
  info.events_bytes = std::filesystem::file_size(out_dir / "events.csv", ec);
  return info;
}

}  // namespace verdant::sim
