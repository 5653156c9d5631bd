#include "verdant/simulations/fleet_generator.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "verdant/core/rng.h"
#include "verdant/energy/energy_model.h"

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

bool Inside(const std::vector<Interval>& v, int64_t m) {
  for (const auto& i : v) {
    if (m >= i.begin && m < i.end) return true;
  }
  return false;
}

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
  if (o.devices == 0) return InvalidArgumentError("fleet generator: devices must be > 0");
  if (o.days == 0) return InvalidArgumentError("fleet generator: days must be > 0");
  if (o.zones.empty()) return InvalidArgumentError("fleet generator: give at least one zone");
  std::vector<std::pair<std::string, double>> zones;
  for (const auto& z : o.zones) {
    VERDANT_ASSIGN_OR_RETURN(double off, ZoneUtcOffsetHours(z));
    zones.emplace_back(ZoneName(z), off);
  }
  // Compute speed: the CPU float AI-Benchmark score of a phone model drawn
  // uniformly from the list; ms_per_sample scales inversely with it.
  const auto bench_file = data_dir / "flash_ai_benchmark_list.json";
  VERDANT_ASSIGN_OR_RETURN(auto bench, ReadJson(bench_file));
  std::vector<double> scores;
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
    scores.push_back(v);
  }
  if (scores.empty()) return DataLossError(bench_file.string() + ": no phones");
  std::vector<double> sorted = scores;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const double p75 = sorted[sorted.size() * 3 / 4];
  // Bandwidth: a FLASH device's measured distribution, drawn uniformly.
  const auto speed_file = data_dir / "flash_speed_distri.json";
  VERDANT_ASSIGN_OR_RETURN(auto speed_json, ReadJson(speed_file));
  std::vector<Speed> speeds;
  if (!speed_json.is_object()) return DataLossError(speed_file.string() + ": expected a JSON object");
  for (const auto& [key, v] : speed_json.items()) {  // nlohmann's object keeps keys sorted: deterministic
    try {
      speeds.push_back({v.at("down_u").get<double>(), v.at("down_sigma").get<double>(), v.at("up_u").get<double>(),
                        v.at("up_sigma").get<double>()});
    } catch (const std::exception& e) {
      return DataLossError(speed_file.string() + ": device " + key + ": " + e.what());
    }
  }
  if (speeds.empty()) return DataLossError(speed_file.string() + ": no devices");
  VERDANT_ASSIGN_OR_RETURN(auto midrange, energy::BuiltinProfile("phone-midrange"));
  VERDANT_ASSIGN_OR_RETURN(auto flagship, energy::BuiltinProfile("phone-flagship"));

  Fleet fleet;
  const int digits = static_cast<int>(std::to_string(o.devices - 1).size());
  const Rng root(o.seed);
  const int64_t total_min = static_cast<int64_t>(o.days) * 1440;
  const TimePoint t0 = o.start;
  auto at = [&](int64_t minute) { return t0 + std::chrono::minutes(minute); };
  for (uint64_t i = 0; i < o.devices; ++i) {
    Rng rng = root.Fork(i);
    Device d;
    std::string num = std::to_string(i);
    d.id = "d" + std::string(static_cast<size_t>(digits) - num.size(), '0') + num;
    const auto& [zone, offset_h] = zones[rng.UniformInt(zones.size())];
    d.zone = zone;
    const double score = scores[rng.UniformInt(scores.size())];
    const bool flag = score >= p75;
    d.profile = flag ? flagship.name : midrange.name;
    d.ms_per_sample = kMidrangeMsPerSample * median / score;
    d.battery_wh = 12.0 + 8.0 * rng.Uniform();  // ENERGY.md: 12-20 Wh
    d.embodied_kg = (flag ? flagship : midrange).embodied.grams() / 1000.0;
    const Speed& sp = speeds[rng.UniformInt(speeds.size())];
    d.down_kbps = std::max(0.1 * sp.down_u, sp.down_u + sp.down_sigma * rng.Normal());
    d.up_kbps = std::max(0.1 * sp.up_u, sp.up_u + sp.up_sigma * rng.Normal());
    d.num_examples = static_cast<uint64_t>(Clamp(std::round(std::exp(std::log(300.0) + 0.8 * rng.Normal())), 20, 3000));
    // Round what the CSV rounds, so a written-and-read fleet is this one.
    auto round_to = [](double v, double q) { return std::round(v * q) / q; };
    d.battery_wh = round_to(d.battery_wh, 100);
    d.ms_per_sample = round_to(d.ms_per_sample, 10000);
    d.down_kbps = round_to(d.down_kbps, 10);
    d.up_kbps = round_to(d.up_kbps, 10);
    const auto dev = static_cast<uint32_t>(fleet.devices.size());
    fleet.index.emplace(d.id, dev);
    fleet.devices.push_back(d);

    // Behaviour, in minutes since the start; local day k begins at UTC
    // minute k*1440 - offset.
    const int64_t shift = static_cast<int64_t>(std::llround(offset_h * 60));
    std::vector<Interval> charging, idle, wifi, outage;
    for (int64_t k = -1; k <= static_cast<int64_t>(o.days); ++k) {
      const int64_t base = k * 1440 - shift;
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
        const double s = 12 + 6 * rng.Uniform();
        charging.push_back({min_of(s), min_of(s + 0.5 + rng.Uniform())});
      }
      for (int h = 8; h < 22; ++h) {
        if (rng.Uniform() < kDayIdleProb) idle.push_back({min_of(h), min_of(h + 1)});
      }
      if (rng.Uniform() < kOutageProb) {
        const double s = 24 * rng.Uniform();
        outage.push_back({min_of(s), min_of(s + 1 + 5 * rng.Uniform())});
      }
    }
    // Step through the days minute by minute, emitting changes.
    double battery = 40 + 60 * rng.Uniform();
    const int64_t battery_phase = static_cast<int64_t>(rng.UniformInt(60));
    bool avail = false, chg = false, idl = false, dead = false;
    Network net = Network::kWifi;
    for (int64_t m = 0; m < total_min; ++m) {
      const bool c = Inside(charging, m);
      const bool id = Inside(idle, m);
      const Network n = Inside(wifi, m) ? Network::kWifi : Network::kCellular;
      if (m > 0) {
        battery += c ? kChargePctPerHour / 60 : -(id ? kIdleDrainPctPerHour : kBusyDrainPctPerHour) / 60;
        battery = Clamp(battery, 0, 100);
      }
      if (battery <= 0) dead = true;
      if (dead && c && battery >= 3) dead = false;  // boots again once charged a little
      const bool a = !dead && !Inside(outage, m);
      const bool first = m == 0;
      if (first || c != chg) {
        fleet.events.push_back({at(m), dev, c ? EventKind::kChargingOn : EventKind::kChargingOff, 0, Network::kWifi});
      }
      if (first || id != idl) {
        fleet.events.push_back({at(m), dev, id ? EventKind::kIdle : EventKind::kBusy, 0, Network::kWifi});
      }
      if (first || n != net) fleet.events.push_back({at(m), dev, EventKind::kNetwork, 0, n});
      if (first || (m % 60) == battery_phase || (c != chg)) {
        fleet.events.push_back({at(m), dev, EventKind::kBattery, static_cast<float>(std::round(battery * 10) / 10),
                                Network::kWifi});
      }
      if (first || a != avail) {
        fleet.events.push_back({at(m), dev, a ? EventKind::kAvailable : EventKind::kUnavailable, 0, Network::kWifi});
      }
      chg = c;
      idl = id;
      net = n;
      avail = a;
    }
  }
  std::stable_sort(fleet.events.begin(), fleet.events.end(),
                   [](const FleetEvent& a, const FleetEvent& b) { return a.time < b.time; });
  return fleet;
}

}  // namespace verdant::sim
