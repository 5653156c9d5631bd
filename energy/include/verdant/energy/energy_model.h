// verdant/energy/energy_model.h
//
// EnergyModel: what a client's round costs in joules when nothing (or not
// everything) is measured. A DeviceProfile (TOML or built-in) holds the
// device constants; ProfileEnergyModel applies ENERGY.md's formulas:
//   E = P_train * t_train + E_radio(bytes_up, bytes_down, link) + P_idle * t_wait
//   t_train = 3 * samples * ms_per_sample / 1000        (when not measured)
//   P_radio [mW] = a_up * r_up + a_down * r_down + b     (Huang et al. 2012)
//   M = TE * time_reserved / lifetime * resource_share   (SCI embodied share)
// Every constant's source is in docs/energy-model.md.
//
//   auto profile = BuiltinProfile("phone-midrange");          // Result<DeviceProfile>
//   ProfileEnergyModel model(*profile);
//   RoundUsage u{.samples_processed = 600, .bytes_up = Bytes{800'000},
//                .bytes_down = Bytes{800'000}, .link = LinkType::kWifi};
//   Result<EnergyEstimate> e = model.Estimate(u);   // e->compute, e->radio, e->idle, e->embodied
//
// Thread-safety: DeviceProfile is a value type; EnergyModel implementations
// are immutable after construction and safe to call from any thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"

namespace verdant::energy {

// Durations with a fractional part (model outputs, per-sample times).
using Seconds = std::chrono::duration<double>;
using Milliseconds = std::chrono::duration<double, std::milli>;

// A link throughput (strong type; bits per second inside).
class DataRate {
 public:
  constexpr DataRate() = default;
  static constexpr DataRate Mbps(double mbps) { return DataRate(mbps * 1e6); }
  static constexpr DataRate Kbps(double kbps) { return DataRate(kbps * 1e3); }
  static constexpr DataRate BitsPerSecond(double bps) { return DataRate(bps); }
  constexpr double mbps() const { return bps_ / 1e6; }
  constexpr double bits_per_second() const { return bps_; }
  // Time to move `b` bytes at this rate; infinite if the rate is zero.
  Seconds TimeFor(Bytes b) const {
    return Seconds(bps_ > 0 ? static_cast<double>(b.count) * 8.0 / bps_ : 1e300);
  }
  constexpr auto operator<=>(const DataRate&) const = default;

 private:
  constexpr explicit DataRate(double bps) : bps_(bps) {}
  double bps_ = 0.0;
};

enum class LinkType { kWifi, kLte, k3g, kEthernet };
// "wifi", "lte", "3g", "ethernet".
std::string_view LinkTypeName(LinkType l);
// Also accepts "4g" for LTE and "wired" for ethernet; kInvalidArgument.
Result<LinkType> ParseLinkType(std::string_view s);

// Huang et al. (MobiSys'12) power model of one radio link:
//   P [mW] = a_up [mW/Mbps] * r_up [Mbps] + a_down * r_down + b [mW]
// plus a tail after each transfer burst, when the radio stays in a high-power
// state (LTE: ~11.6 s at ~1060 mW).
struct RadioLinkModel {
  double a_up_mw_per_mbps = 0;
  double a_down_mw_per_mbps = 0;
  Power base{};  // b
  Seconds tail_time{0};
  Power tail_power{};
  // Default rates when the caller does not know the measured throughput.
  DataRate default_up{};
  DataRate default_down{};

  // P = a_up*r_up + a_down*r_down + b (both directions at once).
  Power PowerAt(DataRate up, DataRate down) const;
  // Energy of the tail that follows one burst.
  Energy TailEnergy() const { return tail_power.Over(tail_time.count()); }
};

// The built-in link models, from ENERGY.md (Huang et al. Table 3; "verify").
// Ethernet: zero device-side radio energy (NIC power is inside the host's
// idle/training power).
RadioLinkModel DefaultLinkModel(LinkType link);

// Everything Verdant needs to know about one kind of device.
struct DeviceProfile {
  std::string name{};               // "phone-midrange"; tags model-based figures
  Power train_power{};              // sustained power while training (whole device)
  Power idle_power{};               // while waiting for the round / others
  Milliseconds ms_per_sample{1.0};  // forward pass per sample; t_train = 3 x samples x this
  std::map<LinkType, RadioLinkModel> links{};  // radio models this device has
  LinkType default_link = LinkType::kWifi;
  Energy battery_capacity{};  // 0 = no battery
  Emissions embodied{};       // total embodied emissions (TE), manufacturing
  Seconds lifetime{0};        // expected lifespan; 0 = embodied not amortised
  double pue = 1.0;           // facility overhead; 1.0 for phones and laptops

  // The link model, or kNotFound naming the links this profile has.
  Result<RadioLinkModel> Link(LinkType link) const;
};

// kInvalidArgument naming the field: negative power, ms_per_sample <= 0,
// pue < 1, negative embodied or lifetime, a default_link the profile lacks.
Status Validate(const DeviceProfile& p);

// Names of the built-in profiles: phone-midrange, phone-flagship, laptop,
// server-cpu, server-gpu-t4.
std::vector<std::string> BuiltinProfileNames();
// A built-in profile; kNotFound listing the names.
Result<DeviceProfile> BuiltinProfile(std::string_view name);

// One profile from a TOML table. Keys (units in the name; missing keys take
// the value of `base`, so a table can override only what it measured):
//   name = "my-phone"                 base = "phone-midrange"  (optional)
//   train_power_w = 3.0               idle_power_w = 0.3
//   ms_per_sample = 0.5               battery_wh = 15.4
//   embodied_kg = 60.0                lifetime_years = 2.0      pue = 1.0
//   default_link = "wifi"
//   [links.lte]  a_up_mw_per_mbps = 438.39  a_down_mw_per_mbps = 51.97  b_mw = 1288.04
//                tail_s = 11.6  tail_mw = 1060  up_mbps = 6  down_mbps = 13
// kInvalidArgument on a syntax error (with line:column), an unknown key,
// a wrong type or a value that fails Validate.
Result<DeviceProfile> ParseDeviceProfileToml(std::string_view toml_text,
                                             std::string_view source_name = "profile");
// A file holding either one profile (top-level keys) or several as
// [profiles.<name>] tables. kNotFound if unreadable.
Result<std::vector<DeviceProfile>> LoadDeviceProfiles(const std::filesystem::path& file);

// ---- formulas (free functions, each tested against ENERGY.md) ---------------

// t_train = 3 * samples * ms_per_sample / 1000 (FedScale/EAFL convention:
// forward + backward ~ 3 forward passes).
Seconds TrainTimeFromSamples(uint64_t samples, Milliseconds ms_per_sample);
// Energy of one burst moving `bytes` in one direction at `rate`:
// (a_dir * r + b) * bytes*8/r, plus one tail if `with_tail`. Zero bytes: zero.
Energy RadioBurstEnergy(const RadioLinkModel& link, Bytes bytes, bool upload, DataRate rate,
                        bool with_tail = true);
// SCI's M = TE * (time reserved / lifetime) * (resources reserved / total).
// Zero when lifetime is zero.
Emissions EmbodiedShare(Emissions total_embodied, Seconds time_reserved, Seconds lifetime,
                        double resource_share = 1.0);
// Network-side energy for bytes moved (Aslan et al. 2018), in kWh per GB
// (1 GB = 1e9 bytes).
Energy NetworkTransferEnergy(Bytes bytes, double kwh_per_gb);

// ---- the model ----------------------------------------------------------------

// What a client did in one round.
struct RoundUsage {
  uint64_t samples_processed = 0;                // samples x local epochs
  std::optional<Seconds> measured_train_time{};  // overrides the samples formula
  Bytes bytes_up{};                              // update sent
  Bytes bytes_down{};                            // model received
  std::optional<LinkType> link{};                // nullopt: the profile's default link
  std::optional<DataRate> up_rate{};             // nullopt: the link's default rate
  std::optional<DataRate> down_rate{};
  Seconds wait_time{0};  // idle, waiting in the round (not training/transfer)
};

// Energy of one client-round by component, in joules, PUE applied.
struct EnergyEstimate {
  Energy compute{};      // P_train * t_train
  Energy radio{};        // bursts + tails (device side)
  Energy idle{};         // P_idle * t_wait
  Energy network{};      // network-side (Aslan), 0 unless enabled; not in DeviceTotal()
  Emissions embodied{};  // M for the time reserved (train + transfer + wait)
  Seconds train_time{0};
  Seconds transfer_time{0};  // radio active time, excluding tails
  Seconds reserved_time{0};  // train + transfer + tails + wait
  std::string method{};      // "model:<profile>"
  Energy DeviceTotal() const { return compute + radio + idle; }
};

class EnergyModel {
 public:
  virtual ~EnergyModel() = default;
  EnergyModel(const EnergyModel&) = delete;
  EnergyModel& operator=(const EnergyModel&) = delete;
  virtual std::string_view Name() const = 0;
  // kInvalidArgument for an unknown link or a zero rate with bytes to move.
  virtual Result<EnergyEstimate> Estimate(const RoundUsage& usage) const = 0;
  // The profile behind the model (for embodied carbon, battery, powers).
  virtual const DeviceProfile& profile() const = 0;

 protected:
  EnergyModel() = default;
};

struct ProfileEnergyModelOptions {
  // Network-side energy, kWh per GB moved (Aslan et al.: ~0.004-0.008 for
  // 2021-2025). Default 0: device-only accounting (ENERGY.md).
  double network_kwh_per_gb = 0.0;
  // Count an LTE/3G tail after each transfer burst (download and upload are
  // separate bursts, separated by training). Default true.
  bool radio_tails = true;
  // Share of the device reserved by the training (SCI's resources
  // reserved / total), 0..1. Default 1 (the whole phone).
  double resource_share = 1.0;
};

class ProfileEnergyModel final : public EnergyModel {
 public:
  explicit ProfileEnergyModel(DeviceProfile profile, ProfileEnergyModelOptions options = {});
  // Validates the profile and options; kInvalidArgument.
  static Result<std::unique_ptr<ProfileEnergyModel>> Create(DeviceProfile profile,
                                                            ProfileEnergyModelOptions options = {});
  std::string_view Name() const override { return method_; }
  Result<EnergyEstimate> Estimate(const RoundUsage& usage) const override;
  const DeviceProfile& profile() const override { return profile_; }

  Seconds TrainTime(uint64_t samples) const;
  Energy ComputeEnergy(Seconds train_time) const;
  Energy IdleEnergy(Seconds wait) const;
  // kInvalidArgument for a link the profile lacks.
  Result<Energy> RadioEnergy(Bytes up, Bytes down, LinkType link, std::optional<DataRate> up_rate,
                             std::optional<DataRate> down_rate) const;
  Emissions Embodied(Seconds reserved) const;

 private:
  DeviceProfile profile_{};
  ProfileEnergyModelOptions options_{};
  std::string method_{};
};

// Registers "profile" (options: profile=<builtin name> or file=<toml path>
// [name=<profile in file>], network_kwh_per_gb, radio_tails, resource_share).
Status RegisterBuiltinEnergyModels(Registry<EnergyModel>& registry);

}  // namespace verdant::energy
