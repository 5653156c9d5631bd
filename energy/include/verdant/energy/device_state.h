// verdant/energy/device_state.h
//
// DeviceState: what a client knows about its own power and network situation
// (battery, charging, power source, network, idle, grid zone, optionally a
// locally known grid intensity). A plain struct: the coordinator maps it
// to/from wire.proto's DeviceState; selectors read it.
//
// Where it comes from:
//  - PowerSupplyReader reads Linux `/sys/class/power_supply/*` (root path
//    injectable so tests use fake trees);
//  - ManualDeviceStateProvider is fed by an app (Android via the NDK, a
//    hospital agent) through its setters or the C functions in
//    device_state_c.h;
//  - SysfsDeviceStateProvider overlays the sysfs battery on manual values.
//
//   ManualDeviceStateProvider app;
//   app.SetBattery(80.0, /*charging=*/true);
//   app.SetNetwork(NetworkType::kUnmetered);
//   app.SetZone("US-CISO");
//   Result<DeviceState> s = app.Current();
//
// Thread-safety: DeviceState is a value type. PowerSupplyReader is stateless
// and safe from any thread. ManualDeviceStateProvider and
// SysfsDeviceStateProvider are safe to call from any thread (one mutex).
#pragma once

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/core/units.h"

namespace verdant::energy {

// Watt-hours as Energy (1 Wh = 3600 J).
constexpr Energy WattHours(double wh) { return Energy::Joules(wh * 3600.0); }
constexpr double ToWattHours(Energy e) { return e.joules() / 3600.0; }

enum class PowerSource { kUnknown = 0, kGrid = 1, kSolar = 2, kBattery = 3 };
enum class NetworkType { kUnknown = 0, kUnmetered = 1, kCellular = 2 };

// "unknown", "grid", "solar", "battery".
std::string_view PowerSourceName(PowerSource s);
// "unknown", "unmetered", "cellular".
std::string_view NetworkTypeName(NetworkType n);
// Inverse of the *Name functions (also accepts "wifi"/"ethernet" for
// unmetered, "lte"/"3g"/"4g"/"5g"/"mobile" for cellular); kInvalidArgument.
Result<PowerSource> ParsePowerSource(std::string_view s);
Result<NetworkType> ParseNetworkType(std::string_view s);

struct DeviceState {
  // Battery charge 0..100 %; nullopt when the device has no battery or does
  // not know (wire: battery_known = false).
  std::optional<double> battery_percent{};
  // Full-charge capacity; zero = unknown.
  Energy battery_capacity{};
  bool charging = false;
  PowerSource power_source = PowerSource::kUnknown;
  NetworkType network = NetworkType::kUnknown;
  // The user is not using the device (Android: screen off, not interactive).
  bool idle = false;
  // Grid zone id as the carbon traces name it, e.g. "US-CISO", "ES".
  std::string zone{};
  // A grid intensity the device itself knows (smart meter, utility API);
  // nullopt = not known (wire: 0).
  std::optional<CarbonIntensity> local_intensity{};

  friend bool operator==(const DeviceState&, const DeviceState&) = default;
};

// kInvalidArgument when a field is out of range (battery outside 0..100,
// negative capacity or intensity). The coordinator calls this on every
// state that arrives over the network.
Status Validate(const DeviceState& s);

// ---- Linux /sys/class/power_supply ------------------------------------------

// One entry of /sys/class/power_supply (e.g. "BAT0", "AC", "ADP1", "usb").
// Units converted from sysfs: energy_* are µWh, power_now µW, charge_* µAh,
// voltage_* µV.
struct PowerSupplyInfo {
  std::string name{};                        // directory name, e.g. "BAT0"
  std::string type{};                        // "Battery", "Mains", "USB", "UPS", ...
  std::optional<double> capacity_percent{};  // `capacity`
  std::string status{};                 // "Charging", "Discharging", "Full", "Not charging", ...
  std::optional<Energy> energy_now{};   // `energy_now`, or charge_now x voltage
  std::optional<Energy> energy_full{};  // `energy_full`, or charge_full x voltage
  std::optional<Power> power_now{};     // `power_now` (absolute value), or current x voltage
  std::optional<bool> online{};         // `online` (Mains/USB)
  bool IsBattery() const { return type == "Battery"; }
};

struct PowerSupplyReaderOptions {
  // Where the power_supply class lives; tests point this at a fake tree.
  std::filesystem::path root = "/sys/class/power_supply";
};

class PowerSupplyReader {
 public:
  explicit PowerSupplyReader(PowerSupplyReaderOptions options = {});

  // Every supply under the root, sorted by name. kNotFound when the root
  // does not exist (no power_supply class: a VM, a container, not Linux);
  // kPermissionDenied when it cannot be listed. Unreadable or malformed
  // attribute files of one supply leave that field empty (never an error,
  // never a crash); an unreadable `type` skips the supply.
  Result<std::vector<PowerSupplyInfo>> ReadAll() const;

  // One supply by directory name. kNotFound if absent; kPermissionDenied /
  // kDataLoss if its `type` file is unreadable / not text.
  Result<PowerSupplyInfo> Read(std::string_view name) const;

  // Battery fields of a DeviceState from the supplies: battery_percent,
  // battery_capacity (sum over batteries, percent from the first battery
  // that reports one), charging, power_source (kGrid when a Mains/USB
  // supply is online or a battery charges, kBattery when discharging).
  // Leaves network, idle, zone and local_intensity at their defaults.
  // kNotFound if there is neither a battery nor a mains supply.
  Result<DeviceState> ReadDeviceState() const;

  const std::filesystem::path& root() const { return options_.root; }

 private:
  PowerSupplyReaderOptions options_{};
};

// ---- providers ---------------------------------------------------------------

// Where a client gets its current DeviceState from.
class DeviceStateProvider {
 public:
  virtual ~DeviceStateProvider() = default;
  DeviceStateProvider(const DeviceStateProvider&) = delete;
  DeviceStateProvider& operator=(const DeviceStateProvider&) = delete;
  virtual std::string_view Name() const = 0;
  // The latest state; an error only when nothing at all is known.
  virtual Result<DeviceState> Current() const = 0;

 protected:
  DeviceStateProvider() = default;
};

// Values pushed by the embedding app. Every setter validates and returns
// kInvalidArgument for out-of-range input (the previous value is kept).
class ManualDeviceStateProvider final : public DeviceStateProvider {
 public:
  ManualDeviceStateProvider() = default;
  explicit ManualDeviceStateProvider(DeviceState initial) : state_(std::move(initial)) {}
  std::string_view Name() const override { return "manual"; }
  Result<DeviceState> Current() const override;

  Status Set(DeviceState s);
  // percent in 0..100.
  Status SetBattery(double percent, bool charging);
  void ClearBattery();
  Status SetBatteryCapacity(Energy capacity);
  void SetPowerSource(PowerSource s);
  void SetNetwork(NetworkType n);
  void SetIdle(bool idle);
  void SetZone(std::string zone);
  Status SetLocalIntensity(std::optional<CarbonIntensity> ci);

 private:
  mutable std::mutex mu_{};
  DeviceState state_{};
};

// Battery and power source from sysfs, everything else (network, idle, zone,
// local intensity) from a ManualDeviceStateProvider the app still feeds.
// When sysfs cannot be read, Current() returns the manual values unchanged.
class SysfsDeviceStateProvider final : public DeviceStateProvider {
 public:
  SysfsDeviceStateProvider(PowerSupplyReaderOptions options, const ManualDeviceStateProvider* base)
      : reader_(std::move(options)), base_(base) {}
  std::string_view Name() const override { return "sysfs"; }
  Result<DeviceState> Current() const override;
  // Why the last Current() fell back to the manual values (empty if it did not).
  std::string LastError() const;

 private:
  PowerSupplyReader reader_{};
  const ManualDeviceStateProvider* base_{};  // not owned; may be null
  mutable std::mutex mu_{};
  mutable std::string last_error_{};
};

}  // namespace verdant::energy
