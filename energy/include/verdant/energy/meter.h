// verdant/energy/meter.h
//
// EnergyMeter: measures the energy a piece of work (a local training run)
// took, between Start() and Stop(), and tags the figure with the method that
// produced it so reports never mix a measurement with a guess unmarked:
//   "rapl:package-0+package-1"  Linux powercap RAPL cumulative counters
//   "rapl:psys"                 RAPL platform domain (never summed with package)
//   "battery:BAT0"              battery energy_now discharge
//   "model:phone-midrange"      power x wall time from a device profile
//
//   auto best = MakeBestMeter(MeterSelectionOptions{.profile = *BuiltinProfile("laptop")});
//   VERDANT_RETURN_IF_ERROR(best.meter->Start());
//   Train();
//   Result<MeterReading> r = best.meter->Stop();   // r->energy, r->method
//   // best.fallback_reasons says why RAPL/battery were not used.
//
// RAPL counters wrap at max_energy_range_uj (~262 kJ, i.e. ~45 min at
// 100 W): a run longer than that must call Sample() in between (at least
// once per wrap period); each Sample() accounts at most one wrap per domain.
//
// Thread-safety: a meter is used by one thread (Start/Sample/Stop in order);
// distinct meters are independent.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"
#include "verdant/energy/energy_model.h"

namespace verdant::energy {

struct MeterReading {
  Energy energy{};
  Seconds elapsed{0};    // wall time between Start and Stop (from the meter's Clock)
  std::string method{};  // e.g. "rapl:package-0", "battery:BAT0", "model:laptop"
};

class EnergyMeter {
 public:
  virtual ~EnergyMeter() = default;
  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;
  virtual std::string_view Name() const = 0;
  // The method tag every reading of this meter carries.
  virtual std::string Method() const = 0;
  // Begins a measurement (restarts one in progress). An error (e.g. the
  // counter became unreadable) means: fall back to another meter.
  virtual Status Start() = 0;
  // Optional intermediate read that accumulates (RAPL: catches wraps).
  virtual Status Sample() { return OkStatus(); }
  // Ends the measurement. kFailedPrecondition if Start() was not called;
  // other errors mean the figure is not trustworthy: fall back.
  virtual Result<MeterReading> Stop() = 0;

 protected:
  EnergyMeter() = default;
};

// ---- RAPL ----------------------------------------------------------------------

struct RaplOptions {
  // The powercap class; tests point this at a fake tree.
  std::filesystem::path root = "/sys/class/powercap";
  // Also count `dram` subdomains (outside the package). Default true.
  bool include_dram = true;
  // Use the `psys` platform domain (which already contains package, core,
  // uncore and more) instead of summing packages. Default false; psys is used
  // anyway when there is no package domain. Never summed with the others.
  bool prefer_psys = false;
  const Clock* clock = nullptr;  // nullptr: SystemClock::Default()
};

// One counter the RAPL meter reads.
struct RaplDomain {
  std::string name{};           // "package-0", "dram", "psys"
  std::filesystem::path dir{};  // e.g. <root>/intel-rapl:0
  uint64_t max_energy_range_uj = 0;
};

class RaplMeter final : public EnergyMeter {
 public:
  // Discovers the domains under options.root (intel-rapl:* and
  // intel-rapl-mmio:*; mirrored domains with the same name or the same real
  // path are read once) and reads every counter once.
  // kNotFound: no powercap/RAPL domains. kPermissionDenied: energy_uj not
  // readable (root-only since Linux 5.10) — the caller falls back.
  // kDataLoss: a counter or max_energy_range_uj that is not a number.
  static Result<std::unique_ptr<RaplMeter>> Create(RaplOptions options = {});

  std::string_view Name() const override { return "rapl"; }
  std::string Method() const override { return method_; }
  Status Start() override;
  Status Sample() override;
  Result<MeterReading> Stop() override;
  const std::vector<RaplDomain>& domains() const { return domains_; }

  // Counter delta with one wrap: now >= before ? now - before
  // : (max_range - before) + now. Public for tests.
  static uint64_t WrappedDelta(uint64_t before, uint64_t now, uint64_t max_range);

 private:
  RaplMeter(RaplOptions options, std::vector<RaplDomain> domains);
  Result<std::vector<uint64_t>> ReadCounters() const;

  RaplOptions options_{};
  std::vector<RaplDomain> domains_{};
  std::string method_{};
  const Clock* clock_{};
  bool running_ = false;
  std::vector<uint64_t> last_;
  double accumulated_uj_ = 0;
  TimePoint start_time_{};
};

// ---- battery -------------------------------------------------------------------

struct BatteryMeterOptions {
  std::filesystem::path root = "/sys/class/power_supply";
  // Battery directory to read; empty: the first supply of type Battery.
  std::string battery{};
  const Clock* clock = nullptr;  // nullptr: SystemClock::Default()
};

// Energy drawn from the battery = energy_now(start) - energy_now(stop)
// (or charge_now x voltage_now). Only meaningful while discharging: Stop()
// returns kFailedPrecondition if the battery was charging or full at either
// end (mains power hides the draw), kDataLoss if energy went up.
class BatteryMeter final : public EnergyMeter {
 public:
  // kNotFound without a battery; kUnavailable if it reports no energy.
  static Result<std::unique_ptr<BatteryMeter>> Create(BatteryMeterOptions options = {});
  std::string_view Name() const override { return "battery"; }
  std::string Method() const override { return "battery:" + battery_; }
  Status Start() override;
  Result<MeterReading> Stop() override;

 private:
  BatteryMeter(BatteryMeterOptions options, std::string battery);
  BatteryMeterOptions options_{};
  std::string battery_{};
  const Clock* clock_{};
  bool running_ = false;
  Energy start_energy_{};
  TimePoint start_time_{};
};

// ---- model -----------------------------------------------------------------------

// Fallback: profile's train power x wall time (x PUE), tagged "model:<profile>".
class ModelMeter final : public EnergyMeter {
 public:
  explicit ModelMeter(DeviceProfile profile, const Clock* clock = nullptr);
  std::string_view Name() const override { return "model"; }
  std::string Method() const override { return "model:" + profile_.name; }
  Status Start() override;
  Result<MeterReading> Stop() override;

 private:
  DeviceProfile profile_{};
  const Clock* clock_{};
  bool running_ = false;
  TimePoint start_time_{};
};

// ---- choosing ------------------------------------------------------------------

struct MeterSelectionOptions {
  DeviceProfile profile{};  // for the model fallback (required: name set)
  bool try_rapl = true;
  bool try_battery = true;  // only chosen when currently discharging
  RaplOptions rapl{};
  BatteryMeterOptions battery{};
  const Clock* clock = nullptr;  // passed to every meter
};

struct MeterSelection {
  std::unique_ptr<EnergyMeter> meter{};
  // One line per meter that was tried and not used, e.g.
  // "rapl: PERMISSION_DENIED: /sys/class/powercap/intel-rapl:0/energy_uj ...".
  std::vector<std::string> fallback_reasons{};
};

// RAPL if readable, else the battery if discharging, else the model. Never
// fails: the model meter is always available.
MeterSelection MakeBestMeter(MeterSelectionOptions options);

}  // namespace verdant::energy
