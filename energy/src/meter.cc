#include "verdant/energy/meter.h"

#include <algorithm>
#include <map>
#include <set>
#include <system_error>

#include "sysfs_util.h"
#include "verdant/energy/device_state.h"

namespace verdant::energy {

namespace fs = std::filesystem;
using internal::ReadAttribute;
using internal::ReadUintAttribute;

namespace {

const Clock& ClockOr(const Clock* c) { return c != nullptr ? *c : SystemClock::Default(); }

Seconds Between(TimePoint a, TimePoint b) { return std::chrono::duration_cast<Seconds>(b - a); }

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

struct Candidate {
  std::string entry;  // directory entry name, e.g. "intel-rapl:0:2"
  fs::path dir;
  std::string name;    // content of `name`
  std::string parent;  // name of the parent package for subdomains
  bool top_level = true;
  bool mmio = false;
};

}  // namespace

// ---- RaplMeter ---------------------------------------------------------------

uint64_t RaplMeter::WrappedDelta(uint64_t before, uint64_t now, uint64_t max_range) {
  if (now >= before) return now - before;
  if (max_range == 0 || before > max_range) return now;  // inconsistent: count from zero
  return (max_range - before) + now;
}

RaplMeter::RaplMeter(RaplOptions options, std::vector<RaplDomain> domains)
    : options_(std::move(options)), domains_(std::move(domains)), clock_(&ClockOr(options_.clock)) {
  method_ = "rapl:";
  for (size_t i = 0; i < domains_.size(); ++i) method_ += (i ? "+" : "") + domains_[i].name;
}

Result<std::unique_ptr<RaplMeter>> RaplMeter::Create(RaplOptions options) {
  std::error_code ec;
  if (!fs::is_directory(options.root, ec)) {
    return NotFoundError(options.root.string() + " does not exist (no powercap/RAPL)");
  }
  std::vector<Candidate> cands;
  fs::directory_iterator it(options.root, ec);
  if (ec)
    return PermissionDeniedError("cannot list " + options.root.string() + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string entry = it->path().filename().string();
    Candidate c;
    if (StartsWith(entry, "intel-rapl:")) {
      c.mmio = false;
    } else if (StartsWith(entry, "intel-rapl-mmio:")) {
      c.mmio = true;
    } else {
      continue;  // "intel-rapl" control type, other powercap drivers
    }
    c.entry = entry;
    c.dir = it->path();
    c.top_level = std::count(entry.begin(), entry.end(), ':') == 1;
    auto name = ReadAttribute(c.dir / "name");
    if (!name.ok()) continue;  // not a zone we can identify
    c.name = *name;
    cands.push_back(std::move(c));
  }
  if (cands.empty()) {
    return NotFoundError("no RAPL domains (intel-rapl:*) under " + options.root.string());
  }
  // Non-mmio before mmio, then by entry name, so mirrors resolve to the MSR zone.
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    if (a.mmio != b.mmio) return !a.mmio;
    return a.entry < b.entry;
  });
  // Parent names for subdomains: "intel-rapl:0:2" -> entry "intel-rapl:0".
  std::map<std::string, std::string> name_of_entry;
  for (const auto& c : cands) name_of_entry[c.entry] = c.name;
  for (auto& c : cands) {
    if (!c.top_level) {
      auto parent = name_of_entry.find(c.entry.substr(0, c.entry.rfind(':')));
      c.parent = parent != name_of_entry.end() ? parent->second : "";
    }
  }

  std::vector<const Candidate*> packages, drams, psys;
  std::set<std::string> seen_names;
  std::set<fs::path> seen_paths;
  for (const auto& c : cands) {
    std::string key = c.top_level ? c.name : c.parent + "/" + c.name;
    fs::path real = fs::weakly_canonical(c.dir, ec);
    if (ec) real = c.dir;
    // Mirrored counters (multi-die packages, the MMIO copy of package-0, two
    // links to one zone) are read once.
    if (seen_names.count(key) || seen_paths.count(real)) continue;
    seen_names.insert(key);
    seen_paths.insert(real);
    if (c.top_level && StartsWith(c.name, "package")) {
      packages.push_back(&c);
    } else if (c.name == "psys") {
      psys.push_back(&c);
    } else if (c.name == "dram") {
      drams.push_back(&c);
    }
    // core/uncore (and gpu) are inside their package: never added to it.
  }
  std::vector<const Candidate*> chosen;
  if ((options.prefer_psys || packages.empty()) && !psys.empty()) {
    chosen = psys;  // psys already contains package + core + uncore (+ more)
  } else if (!packages.empty()) {
    chosen = packages;
    if (options.include_dram) chosen.insert(chosen.end(), drams.begin(), drams.end());
  } else {
    return NotFoundError("no RAPL package or psys domain under " + options.root.string());
  }

  std::vector<RaplDomain> domains;
  for (const Candidate* c : chosen) {
    RaplDomain d;
    d.name = c->top_level ? c->name : (c->parent.empty() ? c->name : c->parent + "/" + c->name);
    d.dir = c->dir;
    VERDANT_ASSIGN_OR_RETURN(d.max_energy_range_uj,
                             ReadUintAttribute(c->dir / "max_energy_range_uj"));
    domains.push_back(std::move(d));
  }
  std::unique_ptr<RaplMeter> meter(new RaplMeter(std::move(options), std::move(domains)));
  // Read once now so an unreadable counter shows up here, not mid-round.
  VERDANT_ASSIGN_OR_RETURN(auto first, meter->ReadCounters());
  (void)first;
  return meter;
}

Result<std::vector<uint64_t>> RaplMeter::ReadCounters() const {
  std::vector<uint64_t> out;
  out.reserve(domains_.size());
  for (const auto& d : domains_) {
    auto v = ReadUintAttribute(d.dir / "energy_uj");
    if (!v.ok()) {
      Status s = v.status();
      if (s.code() == StatusCode::kPermissionDenied) {
        return Status(s.code(), s.message() +
                                    " (RAPL energy_uj is root-only since Linux 5.10; grant read "
                                    "access or the energy figures fall back to the model)");
      }
      return s;
    }
    out.push_back(*v);
  }
  return out;
}

Status RaplMeter::Start() {
  VERDANT_ASSIGN_OR_RETURN(last_, ReadCounters());
  accumulated_uj_ = 0;
  start_time_ = clock_->Now();
  running_ = true;
  return OkStatus();
}

Status RaplMeter::Sample() {
  if (!running_) return FailedPreconditionError("RaplMeter::Sample before Start");
  VERDANT_ASSIGN_OR_RETURN(auto now, ReadCounters());
  for (size_t i = 0; i < domains_.size(); ++i) {
    accumulated_uj_ +=
        static_cast<double>(WrappedDelta(last_[i], now[i], domains_[i].max_energy_range_uj));
  }
  last_ = std::move(now);
  return OkStatus();
}

Result<MeterReading> RaplMeter::Stop() {
  if (!running_) return FailedPreconditionError("RaplMeter::Stop before Start");
  Status s = Sample();
  running_ = false;
  VERDANT_RETURN_IF_ERROR(s);
  MeterReading r;
  r.energy = Energy::Joules(accumulated_uj_ / 1e6);
  r.elapsed = Between(start_time_, clock_->Now());
  r.method = method_;
  return r;
}

// ---- BatteryMeter --------------------------------------------------------------

namespace {

Result<PowerSupplyInfo> ReadBattery(const fs::path& root, const std::string& name) {
  PowerSupplyReader reader(PowerSupplyReaderOptions{root});
  VERDANT_ASSIGN_OR_RETURN(PowerSupplyInfo info, reader.Read(name));
  if (!info.energy_now) {
    return UnavailableError("battery " + name +
                            " reports neither energy_now nor charge_now+voltage_now");
  }
  return info;
}

}  // namespace

BatteryMeter::BatteryMeter(BatteryMeterOptions options, std::string battery)
    : options_(std::move(options)),
      battery_(std::move(battery)),
      clock_(&ClockOr(options_.clock)) {}

Result<std::unique_ptr<BatteryMeter>> BatteryMeter::Create(BatteryMeterOptions options) {
  std::string name = options.battery;
  if (name.empty()) {
    PowerSupplyReader reader(PowerSupplyReaderOptions{options.root});
    VERDANT_ASSIGN_OR_RETURN(auto all, reader.ReadAll());
    for (const auto& p : all) {
      if (p.IsBattery()) {
        name = p.name;
        break;
      }
    }
    if (name.empty()) return NotFoundError("no battery under " + options.root.string());
  }
  VERDANT_ASSIGN_OR_RETURN(auto info, ReadBattery(options.root, name));
  (void)info;
  return std::unique_ptr<BatteryMeter>(new BatteryMeter(std::move(options), name));
}

Status BatteryMeter::Start() {
  VERDANT_ASSIGN_OR_RETURN(auto info, ReadBattery(options_.root, battery_));
  if (info.status != "Discharging") {
    running_ = false;
    return FailedPreconditionError("battery " + battery_ + " is '" + info.status +
                                   "', not discharging: its energy_now does not show the draw");
  }
  start_energy_ = *info.energy_now;
  start_time_ = clock_->Now();
  running_ = true;
  return OkStatus();
}

Result<MeterReading> BatteryMeter::Stop() {
  if (!running_) return FailedPreconditionError("BatteryMeter::Stop before a successful Start");
  running_ = false;
  VERDANT_ASSIGN_OR_RETURN(auto info, ReadBattery(options_.root, battery_));
  if (info.status != "Discharging") {
    return FailedPreconditionError("battery " + battery_ + " became '" + info.status +
                                   "' during the measurement");
  }
  Energy drawn = start_energy_ - *info.energy_now;
  if (drawn.joules() < 0) {
    return DataLossError("battery " + battery_ + " energy rose while discharging");
  }
  MeterReading r;
  r.elapsed = Between(start_time_, clock_->Now());
  if (drawn.joules() == 0 && r.elapsed.count() > 0) {
    return FailedPreconditionError("battery " + battery_ + " energy_now did not change over " +
                                   std::to_string(r.elapsed.count()) +
                                   " s (counter resolution too coarse for this run)");
  }
  r.energy = drawn;
  r.method = Method();
  return r;
}

// ---- ModelMeter --------------------------------------------------------------------

ModelMeter::ModelMeter(DeviceProfile profile, const Clock* clock)
    : profile_(std::move(profile)), clock_(&ClockOr(clock)) {}

Status ModelMeter::Start() {
  start_time_ = clock_->Now();
  running_ = true;
  return OkStatus();
}

Result<MeterReading> ModelMeter::Stop() {
  if (!running_) return FailedPreconditionError("ModelMeter::Stop before Start");
  running_ = false;
  MeterReading r;
  r.elapsed = Between(start_time_, clock_->Now());
  r.energy = profile_.train_power.Over(r.elapsed.count()) * profile_.pue;
  r.method = Method();
  return r;
}

// ---- MakeBestMeter -------------------------------------------------------------------

MeterSelection MakeBestMeter(MeterSelectionOptions options) {
  MeterSelection sel;
  if (options.try_rapl) {
    RaplOptions ro = options.rapl;
    if (ro.clock == nullptr) ro.clock = options.clock;
    auto rapl = RaplMeter::Create(ro);
    if (rapl.ok()) {
      sel.meter = *std::move(rapl);
      return sel;
    }
    sel.fallback_reasons.push_back("rapl: " + rapl.status().ToString());
  }
  if (options.try_battery) {
    BatteryMeterOptions bo = options.battery;
    if (bo.clock == nullptr) bo.clock = options.clock;
    auto bat = BatteryMeter::Create(bo);
    if (bat.ok()) {
      PowerSupplyReader reader(PowerSupplyReaderOptions{bo.root});
      auto info = reader.Read(std::string((*bat)->Method()).substr(8));
      if (info.ok() && info->status == "Discharging") {
        sel.meter = *std::move(bat);
        return sel;
      }
      sel.fallback_reasons.push_back("battery: not discharging (" +
                                     (info.ok() ? info->status : info.status().ToString()) + ")");
    } else {
      sel.fallback_reasons.push_back("battery: " + bat.status().ToString());
    }
  }
  sel.meter = std::make_unique<ModelMeter>(std::move(options.profile), options.clock);
  return sel;
}

}  // namespace verdant::energy
