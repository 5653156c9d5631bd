#include "verdant/energy/device_state.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <system_error>

#include "sysfs_util.h"
#include "verdant/energy/device_state_c.h"

namespace verdant::energy {

namespace fs = std::filesystem;
using internal::ReadAttribute;
using internal::ReadIntAttribute;

std::string_view PowerSourceName(PowerSource s) {
  switch (s) {
    case PowerSource::kGrid:
      return "grid";
    case PowerSource::kSolar:
      return "solar";
    case PowerSource::kBattery:
      return "battery";
    case PowerSource::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view NetworkTypeName(NetworkType n) {
  switch (n) {
    case NetworkType::kUnmetered:
      return "unmetered";
    case NetworkType::kCellular:
      return "cellular";
    case NetworkType::kUnknown:
      break;
  }
  return "unknown";
}

Result<PowerSource> ParsePowerSource(std::string_view s) {
  std::string v = internal::ToLower(internal::Trim(s));
  if (v == "unknown" || v.empty()) return PowerSource::kUnknown;
  if (v == "grid" || v == "mains" || v == "ac") return PowerSource::kGrid;
  if (v == "solar") return PowerSource::kSolar;
  if (v == "battery") return PowerSource::kBattery;
  return InvalidArgumentError("unknown power source '" + std::string(s) +
                              "' (expected grid, solar, battery or unknown)");
}

Result<NetworkType> ParseNetworkType(std::string_view s) {
  std::string v = internal::ToLower(internal::Trim(s));
  if (v == "unknown" || v.empty()) return NetworkType::kUnknown;
  if (v == "unmetered" || v == "wifi" || v == "wi-fi" || v == "ethernet")
    return NetworkType::kUnmetered;
  if (v == "cellular" || v == "lte" || v == "3g" || v == "4g" || v == "5g" || v == "mobile") {
    return NetworkType::kCellular;
  }
  return InvalidArgumentError("unknown network type '" + std::string(s) +
                              "' (expected unmetered, cellular or unknown)");
}

Status Validate(const DeviceState& s) {
  if (s.battery_percent &&
      (!std::isfinite(*s.battery_percent) || *s.battery_percent < 0 || *s.battery_percent > 100)) {
    return InvalidArgumentError("battery_percent " + std::to_string(*s.battery_percent) +
                                " outside 0..100");
  }
  if (!std::isfinite(s.battery_capacity.joules()) || s.battery_capacity.joules() < 0) {
    return InvalidArgumentError("battery_capacity must be >= 0");
  }
  if (s.local_intensity && (!std::isfinite(s.local_intensity->grams_per_kwh()) ||
                            s.local_intensity->grams_per_kwh() < 0)) {
    return InvalidArgumentError("local_intensity must be >= 0 gCO2e/kWh");
  }
  return OkStatus();
}

// ---- PowerSupplyReader ------------------------------------------------------

namespace {

std::optional<int64_t> OptInt(const fs::path& p) {
  auto r = ReadIntAttribute(p);
  if (!r.ok()) return std::nullopt;
  return *r;
}

}  // namespace

PowerSupplyReader::PowerSupplyReader(PowerSupplyReaderOptions options)
    : options_(std::move(options)) {}

Result<PowerSupplyInfo> PowerSupplyReader::Read(std::string_view name) const {
  fs::path dir = options_.root / std::string(name);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return NotFoundError("power supply '" + std::string(name) + "' not found under " +
                         options_.root.string());
  }
  PowerSupplyInfo info;
  info.name = std::string(name);
  VERDANT_ASSIGN_OR_RETURN(info.type, ReadAttribute(dir / "type"));
  if (auto c = OptInt(dir / "capacity")) {
    info.capacity_percent = std::clamp(static_cast<double>(*c), 0.0, 100.0);
  }
  if (auto st = ReadAttribute(dir / "status"); st.ok()) info.status = *st;
  if (auto o = OptInt(dir / "online")) info.online = *o != 0;

  // Energy: energy_* in µWh; else charge_* (µAh) x voltage (µV).
  auto uwh = [](int64_t v) { return WattHours(static_cast<double>(v) / 1e6); };
  std::optional<int64_t> voltage = OptInt(dir / "voltage_now");
  std::optional<int64_t> voltage_design = OptInt(dir / "voltage_min_design");
  auto charge_energy = [&](const char* file,
                           std::optional<int64_t> volts) -> std::optional<Energy> {
    auto q = OptInt(dir / file);
    if (!q || !volts || *volts <= 0) return std::nullopt;
    // µAh x µV = 1e-12 Wh.
    return WattHours(static_cast<double>(*q) * static_cast<double>(*volts) / 1e12);
  };
  if (auto e = OptInt(dir / "energy_now")) {
    info.energy_now = uwh(*e);
  } else {
    info.energy_now = charge_energy("charge_now", voltage);
  }
  if (auto e = OptInt(dir / "energy_full")) {
    info.energy_full = uwh(*e);
  } else {
    info.energy_full = charge_energy("charge_full", voltage_design ? voltage_design : voltage);
  }
  if (auto p = OptInt(dir / "power_now")) {
    info.power_now = Power::Watts(std::abs(static_cast<double>(*p)) / 1e6);
  } else if (auto i = OptInt(dir / "current_now"); i && voltage) {
    info.power_now =
        Power::Watts(std::abs(static_cast<double>(*i)) * static_cast<double>(*voltage) / 1e12);
  }
  if (!info.capacity_percent && info.energy_now && info.energy_full &&
      info.energy_full->joules() > 0) {
    info.capacity_percent =
        std::clamp(100.0 * info.energy_now->joules() / info.energy_full->joules(), 0.0, 100.0);
  }
  return info;
}

Result<std::vector<PowerSupplyInfo>> PowerSupplyReader::ReadAll() const {
  std::error_code ec;
  if (!fs::exists(options_.root, ec)) {
    return NotFoundError(options_.root.string() + " does not exist (no power_supply class)");
  }
  fs::directory_iterator it(options_.root, ec);
  if (ec) {
    if (ec == std::errc::permission_denied) {
      return PermissionDeniedError("cannot list " + options_.root.string() + ": " + ec.message());
    }
    return UnavailableError("cannot list " + options_.root.string() + ": " + ec.message());
  }
  std::vector<std::string> names;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::error_code ec2;
    if (fs::is_directory(it->path(), ec2)) names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  std::vector<PowerSupplyInfo> out;
  for (const auto& n : names) {
    auto info = Read(n);
    if (info.ok()) out.push_back(*std::move(info));
  }
  return out;
}

Result<DeviceState> PowerSupplyReader::ReadDeviceState() const {
  VERDANT_ASSIGN_OR_RETURN(auto supplies, ReadAll());
  DeviceState s;
  bool any_battery = false, any_mains = false, mains_online = false;
  bool charging = false, discharging = false;
  double capacity_wh = 0;
  for (const auto& p : supplies) {
    if (p.IsBattery()) {
      any_battery = true;
      if (!s.battery_percent && p.capacity_percent) s.battery_percent = p.capacity_percent;
      if (p.energy_full) capacity_wh += ToWattHours(*p.energy_full);
      if (p.status == "Charging") charging = true;
      if (p.status == "Discharging") discharging = true;
    } else if (p.type == "Mains" || p.type == "USB" || p.type == "USB_C" || p.type == "UPS") {
      any_mains = true;
      if (p.online.value_or(false)) mains_online = true;
    }
  }
  if (!any_battery && !any_mains) {
    return NotFoundError("no battery or mains supply under " + options_.root.string());
  }
  s.battery_capacity = WattHours(capacity_wh);
  s.charging = charging;
  if (mains_online || charging) {
    s.power_source = PowerSource::kGrid;
  } else if (discharging || (any_battery && any_mains)) {
    s.power_source = PowerSource::kBattery;
  } else if (!any_battery) {
    s.power_source = PowerSource::kGrid;  // a mains-only machine
  }
  return s;
}

// ---- providers --------------------------------------------------------------

Result<DeviceState> ManualDeviceStateProvider::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

Status ManualDeviceStateProvider::Set(DeviceState s) {
  VERDANT_RETURN_IF_ERROR(Validate(s));
  std::lock_guard<std::mutex> lock(mu_);
  state_ = std::move(s);
  return OkStatus();
}

Status ManualDeviceStateProvider::SetBattery(double percent, bool charging) {
  if (!std::isfinite(percent) || percent < 0 || percent > 100) {
    return InvalidArgumentError("battery percent " + std::to_string(percent) + " outside 0..100");
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_.battery_percent = percent;
  state_.charging = charging;
  return OkStatus();
}

void ManualDeviceStateProvider::ClearBattery() {
  std::lock_guard<std::mutex> lock(mu_);
  state_.battery_percent.reset();
}

Status ManualDeviceStateProvider::SetBatteryCapacity(Energy capacity) {
  if (!std::isfinite(capacity.joules()) || capacity.joules() < 0) {
    return InvalidArgumentError("battery capacity must be >= 0");
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_.battery_capacity = capacity;
  return OkStatus();
}

void ManualDeviceStateProvider::SetPowerSource(PowerSource s) {
  std::lock_guard<std::mutex> lock(mu_);
  state_.power_source = s;
}

void ManualDeviceStateProvider::SetNetwork(NetworkType n) {
  std::lock_guard<std::mutex> lock(mu_);
  state_.network = n;
}

void ManualDeviceStateProvider::SetIdle(bool idle) {
  std::lock_guard<std::mutex> lock(mu_);
  state_.idle = idle;
}

void ManualDeviceStateProvider::SetZone(std::string zone) {
  std::lock_guard<std::mutex> lock(mu_);
  state_.zone = std::move(zone);
}

Status ManualDeviceStateProvider::SetLocalIntensity(std::optional<CarbonIntensity> ci) {
  if (ci && (!std::isfinite(ci->grams_per_kwh()) || ci->grams_per_kwh() < 0)) {
    return InvalidArgumentError("local intensity must be >= 0 gCO2e/kWh");
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_.local_intensity = ci;
  return OkStatus();
}

Result<DeviceState> SysfsDeviceStateProvider::Current() const {
  DeviceState base;
  if (base_ != nullptr) {
    VERDANT_ASSIGN_OR_RETURN(base, base_->Current());
  }
  auto sys = reader_.ReadDeviceState();
  std::lock_guard<std::mutex> lock(mu_);
  if (!sys.ok()) {
    last_error_ = sys.status().ToString();
    return base;
  }
  last_error_.clear();
  base.battery_percent = sys->battery_percent;
  if (sys->battery_capacity.joules() > 0) base.battery_capacity = sys->battery_capacity;
  base.charging = sys->charging;
  // Solar is something only the app/agent knows; sysfs sees it as mains.
  if (base.power_source != PowerSource::kSolar || sys->power_source == PowerSource::kBattery) {
    base.power_source = sys->power_source;
  }
  return base;
}

std::string SysfsDeviceStateProvider::LastError() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

ManualDeviceStateProvider* AsProvider(verdant_device_state* s) {
  return reinterpret_cast<ManualDeviceStateProvider*>(s);
}

}  // namespace verdant::energy

// ---- C API -------------------------------------------------------------------

using verdant::energy::AsProvider;
using verdant::energy::ManualDeviceStateProvider;

extern "C" {

verdant_device_state* verdant_device_state_new(void) {
  auto p = std::make_unique<ManualDeviceStateProvider>();
  return reinterpret_cast<verdant_device_state*>(p.release());
}

void verdant_device_state_free(verdant_device_state* s) {
  std::unique_ptr<ManualDeviceStateProvider> owned(AsProvider(s));
}

int verdant_device_state_set_battery(verdant_device_state* s, double percent, int charging) {
  if (s == nullptr) return -1;
  return AsProvider(s)->SetBattery(percent, charging != 0).ok() ? 0 : -1;
}

int verdant_device_state_set_battery_capacity_wh(verdant_device_state* s, double wh) {
  if (s == nullptr) return -1;
  return AsProvider(s)->SetBatteryCapacity(verdant::energy::WattHours(wh)).ok() ? 0 : -1;
}

int verdant_device_state_set_power_source(verdant_device_state* s, int source) {
  if (s == nullptr || source < 0 || source > 3) return -1;
  AsProvider(s)->SetPowerSource(static_cast<verdant::energy::PowerSource>(source));
  return 0;
}

int verdant_device_state_set_network(verdant_device_state* s, int network) {
  if (s == nullptr || network < 0 || network > 2) return -1;
  AsProvider(s)->SetNetwork(static_cast<verdant::energy::NetworkType>(network));
  return 0;
}

int verdant_device_state_set_idle(verdant_device_state* s, int idle) {
  if (s == nullptr) return -1;
  AsProvider(s)->SetIdle(idle != 0);
  return 0;
}

int verdant_device_state_set_zone(verdant_device_state* s, const char* zone) {
  if (s == nullptr || zone == nullptr) return -1;
  AsProvider(s)->SetZone(zone);
  return 0;
}

int verdant_device_state_set_local_intensity(verdant_device_state* s, double g_per_kwh) {
  if (s == nullptr) return -1;
  if (g_per_kwh < 0) return AsProvider(s)->SetLocalIntensity(std::nullopt).ok() ? 0 : -1;
  return AsProvider(s)->SetLocalIntensity(verdant::CarbonIntensity::GramsPerKwh(g_per_kwh)).ok()
             ? 0
             : -1;
}

}  // extern "C"
