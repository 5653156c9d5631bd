#include "verdant/energy/energy_model.h"

#include <toml++/toml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "sysfs_util.h"
#include "verdant/energy/device_state.h"

namespace verdant::energy {

namespace {

constexpr double kSecondsPerYear = 365.0 * 24 * 3600;  // SCI amortisation year (8760 h)

// ---- Radio constants: ENERGY.md, Huang et al., "A Close Examination of
// Performance and Power Characteristics of 4G LTE Networks", MobiSys'12,
// Table 3 (coefficients flagged "verify" in ENERGY.md).
RadioLinkModel LteModel() {
  RadioLinkModel m;
  m.a_up_mw_per_mbps = 438.39;             // Huang et al. 2012, LTE alpha_u
  m.a_down_mw_per_mbps = 51.97;            // Huang et al. 2012, LTE alpha_d
  m.base = Power::Milliwatts(1288.04);     // Huang et al. 2012, LTE beta
  m.tail_time = Seconds(11.6);             // Huang et al. 2012, LTE tail ~11.6 s
  m.tail_power = Power::Milliwatts(1060);  // Huang et al. 2012, LTE tail ~1060 mW
  m.default_up = DataRate::Mbps(6);        // Huang et al. 2012 abstract: median LTE 6 Mbps up
  m.default_down = DataRate::Mbps(13);     // Huang et al. 2012 abstract: median LTE 13 Mbps down
  return m;
}

RadioLinkModel ThreeGModel() {
  RadioLinkModel m;
  m.a_up_mw_per_mbps = 868.98;         // Huang et al. 2012, 3G alpha_u
  m.a_down_mw_per_mbps = 122.12;       // Huang et al. 2012, 3G alpha_d
  m.base = Power::Milliwatts(817.88);  // Huang et al. 2012, 3G beta
  m.tail_time = Seconds(0);            // ENERGY.md gives no 3G tail: set one if measured
  m.tail_power = Power::Milliwatts(0);
  m.default_up = DataRate::Kbps(3285.7);  // FLASH median per-device up_u (flash_speed_distri.json)
  m.default_down = DataRate::Kbps(4317.6);  // FLASH median per-device down_u
  return m;
}

RadioLinkModel WifiModel() {
  RadioLinkModel m;
  m.a_up_mw_per_mbps = 283.17;         // Huang et al. 2012, WiFi alpha_u
  m.a_down_mw_per_mbps = 137.01;       // Huang et al. 2012, WiFi alpha_d
  m.base = Power::Milliwatts(132.86);  // Huang et al. 2012, WiFi beta
  m.tail_time = Seconds(0);            // WiFi: no tail in ENERGY.md's table
  m.tail_power = Power::Milliwatts(0);
  m.default_up = DataRate::Kbps(3285.7);  // FLASH median per-device up_u (flash_speed_distri.json)
  m.default_down = DataRate::Kbps(4317.6);  // FLASH median per-device down_u
  return m;
}

RadioLinkModel EthernetModel() {
  RadioLinkModel m;                      // NIC power is part of the host's measured/profiled power.
  m.default_up = DataRate::Mbps(100);    // Verdant assumption (wired site uplink)
  m.default_down = DataRate::Mbps(100);  // Verdant assumption
  return m;
}

std::map<LinkType, RadioLinkModel> PhoneLinks() {
  return {
      {LinkType::kWifi, WifiModel()}, {LinkType::kLte, LteModel()}, {LinkType::k3g, ThreeGModel()}};
}

DeviceProfile PhoneMidrange() {
  DeviceProfile p;
  p.name = "phone-midrange";
  p.train_power = Power::Watts(3.0);     // ENERGY.md: phone SoC under training ~2-5 W (verify)
  p.battery_capacity = WattHours(15.4);  // ENERGY.md: 12-20 Wh; 4,000 mAh x 3.85 V
  // ENERGY.md (EAFL): idle/background drain ~10 % of battery per hour.
  p.idle_power = Power::Watts(0.10 * 15.4);
  p.ms_per_sample = Milliseconds(0.5);  // Verdant assumption for the small MLP: calibrate
  p.links = PhoneLinks();
  p.default_link = LinkType::kWifi;
  p.embodied = Emissions::Grams(60'000);      // ENERGY.md: ~60 kgCO2e (PwC/Green Alliance)
  p.lifetime = Seconds(2 * kSecondsPerYear);  // ENERGY.md: 2-year life (PwC/Green Alliance)
  p.pue = 1.0;                                // ENERGY.md: a phone has PUE 1
  return p;
}

DeviceProfile PhoneFlagship() {
  DeviceProfile p;
  p.name = "phone-flagship";
  p.train_power = Power::Watts(5.0);          // ENERGY.md: upper end of ~2-5 W (verify)
  p.battery_capacity = WattHours(19.25);      // ENERGY.md: 12-20 Wh; 5,000 mAh x 3.85 V
  p.idle_power = Power::Watts(0.10 * 19.25);  // ENERGY.md (EAFL): ~10 % of battery per hour
  p.ms_per_sample = Milliseconds(0.25);       // Verdant assumption (2x midrange): calibrate
  p.links = PhoneLinks();
  p.default_link = LinkType::kWifi;
  p.embodied = Emissions::Grams(64'000);      // ENERGY.md: iPhone 13 128 GB, 64 kg (Apple report)
  p.lifetime = Seconds(2 * kSecondsPerYear);  // ENERGY.md: 2-year life (PwC/Green Alliance)
  p.pue = 1.0;                                // ENERGY.md: a phone has PUE 1
  return p;
}

DeviceProfile Laptop() {
  DeviceProfile p;
  p.name = "laptop";
  // ENERGY.md: Carbontracker's CPU fallback is TDP/2; TDP 45 W is a Verdant
  // assumption for a laptop CPU -> 22.5 W.
  p.train_power = Power::Watts(45.0 / 2);
  p.idle_power = Power::Watts(5.0);      // Verdant assumption (not in ENERGY.md): measure
  p.battery_capacity = WattHours(50.0);  // Verdant assumption (not in ENERGY.md)
  p.ms_per_sample = Milliseconds(0.1);   // Verdant assumption: calibrate
  p.links = {{LinkType::kWifi, WifiModel()}, {LinkType::kEthernet, EthernetModel()}};
  p.default_link = LinkType::kWifi;
  p.embodied = Emissions::Grams(250'000);     // Verdant assumption (not in ENERGY.md): vendor PCF
  p.lifetime = Seconds(4 * kSecondsPerYear);  // Verdant assumption (not in ENERGY.md)
  p.pue = 1.0;                                // ENERGY.md: CodeCarbon/eco2AI default PUE 1.0
  return p;
}

DeviceProfile ServerCpu() {
  DeviceProfile p;
  p.name = "server-cpu";
  p.train_power = Power::Watts(85.0);  // ENERGY.md: CodeCarbon's CPU fallback, 85 W
  p.idle_power =
      Power::Watts(85.0 / 2);  // ENERGY.md: Carbontracker TDP/2 rule, used for idle (verify)
  p.ms_per_sample = Milliseconds(0.05);  // Verdant assumption: calibrate
  p.links = {{LinkType::kEthernet, EthernetModel()}};
  p.default_link = LinkType::kEthernet;
  p.embodied = Emissions::Grams(1'000'000);   // Verdant assumption (not in ENERGY.md): vendor PCF
  p.lifetime = Seconds(4 * kSecondsPerYear);  // Verdant assumption (not in ENERGY.md)
  p.pue = 1.56;                               // ENERGY.md: Green Algorithms, unknown site
  return p;
}

DeviceProfile ServerGpuT4() {
  DeviceProfile p;
  p.name = "server-gpu-t4";
  // ENERGY.md: T4 TDP 70 W + host CPU at CodeCarbon's 85 W fallback.
  p.train_power = Power::Watts(70.0 + 85.0);
  p.idle_power =
      Power::Watts(85.0 / 2);  // ENERGY.md: Carbontracker TDP/2 rule, used for idle (verify)
  p.ms_per_sample = Milliseconds(0.01);  // Verdant assumption: calibrate
  p.links = {{LinkType::kEthernet, EthernetModel()}};
  p.default_link = LinkType::kEthernet;
  p.embodied = Emissions::Grams(1'200'000);   // Verdant assumption (not in ENERGY.md): vendor PCF
  p.lifetime = Seconds(4 * kSecondsPerYear);  // Verdant assumption (not in ENERGY.md)
  p.pue = 1.56;                               // ENERGY.md: Green Algorithms, unknown site
  return p;
}

Status CheckNonNegative(double v, std::string_view field, std::string_view profile) {
  if (!std::isfinite(v) || v < 0) {
    return InvalidArgumentError("device profile '" + std::string(profile) + "': " +
                                std::string(field) + " must be >= 0, got " + std::to_string(v));
  }
  return OkStatus();
}

}  // namespace

std::string_view LinkTypeName(LinkType l) {
  switch (l) {
    case LinkType::kWifi:
      return "wifi";
    case LinkType::kLte:
      return "lte";
    case LinkType::k3g:
      return "3g";
    case LinkType::kEthernet:
      return "ethernet";
  }
  return "wifi";
}

Result<LinkType> ParseLinkType(std::string_view s) {
  std::string v = internal::ToLower(internal::Trim(s));
  if (v == "wifi" || v == "wi-fi") return LinkType::kWifi;
  if (v == "lte" || v == "4g") return LinkType::kLte;
  if (v == "3g") return LinkType::k3g;
  if (v == "ethernet" || v == "wired") return LinkType::kEthernet;
  return InvalidArgumentError("unknown link '" + std::string(s) +
                              "' (expected wifi, lte, 3g, ethernet)");
}

Power RadioLinkModel::PowerAt(DataRate up, DataRate down) const {
  return Power::Milliwatts(a_up_mw_per_mbps * up.mbps() + a_down_mw_per_mbps * down.mbps() +
                           base.watts() * 1000.0);
}

RadioLinkModel DefaultLinkModel(LinkType link) {
  switch (link) {
    case LinkType::kWifi:
      return WifiModel();
    case LinkType::kLte:
      return LteModel();
    case LinkType::k3g:
      return ThreeGModel();
    case LinkType::kEthernet:
      return EthernetModel();
  }
  return WifiModel();
}

Result<RadioLinkModel> DeviceProfile::Link(LinkType link) const {
  auto it = links.find(link);
  if (it != links.end()) return it->second;
  std::string have;
  for (const auto& [l, m] : links)
    have += (have.empty() ? "" : ", ") + std::string(LinkTypeName(l));
  return NotFoundError("device profile '" + name + "' has no " + std::string(LinkTypeName(link)) +
                       " link (has: " + (have.empty() ? "none" : have) + ")");
}

Status Validate(const DeviceProfile& p) {
  if (p.name.empty()) return InvalidArgumentError("device profile needs a name");
  VERDANT_RETURN_IF_ERROR(CheckNonNegative(p.train_power.watts(), "train_power_w", p.name));
  VERDANT_RETURN_IF_ERROR(CheckNonNegative(p.idle_power.watts(), "idle_power_w", p.name));
  if (!(p.ms_per_sample.count() > 0) || !std::isfinite(p.ms_per_sample.count())) {
    return InvalidArgumentError("device profile '" + p.name + "': ms_per_sample must be > 0");
  }
  VERDANT_RETURN_IF_ERROR(CheckNonNegative(p.battery_capacity.joules(), "battery_wh", p.name));
  VERDANT_RETURN_IF_ERROR(CheckNonNegative(p.embodied.grams(), "embodied_kg", p.name));
  VERDANT_RETURN_IF_ERROR(CheckNonNegative(p.lifetime.count(), "lifetime_years", p.name));
  if (!std::isfinite(p.pue) || p.pue < 1.0) {
    return InvalidArgumentError("device profile '" + p.name + "': pue must be >= 1, got " +
                                std::to_string(p.pue));
  }
  for (const auto& [l, m] : p.links) {
    std::string f = "links." + std::string(LinkTypeName(l)) + ".";
    VERDANT_RETURN_IF_ERROR(CheckNonNegative(m.a_up_mw_per_mbps, f + "a_up_mw_per_mbps", p.name));
    VERDANT_RETURN_IF_ERROR(
        CheckNonNegative(m.a_down_mw_per_mbps, f + "a_down_mw_per_mbps", p.name));
    VERDANT_RETURN_IF_ERROR(CheckNonNegative(m.base.watts(), f + "b_mw", p.name));
    VERDANT_RETURN_IF_ERROR(CheckNonNegative(m.tail_time.count(), f + "tail_s", p.name));
    VERDANT_RETURN_IF_ERROR(CheckNonNegative(m.tail_power.watts(), f + "tail_mw", p.name));
    if (!(m.default_up.mbps() > 0) || !(m.default_down.mbps() > 0)) {
      return InvalidArgumentError("device profile '" + p.name + "': " + f +
                                  "up_mbps/down_mbps must be > 0");
    }
  }
  if (!p.links.count(p.default_link)) {
    return InvalidArgumentError("device profile '" + p.name + "': default_link " +
                                std::string(LinkTypeName(p.default_link)) + " is not in links");
  }
  return OkStatus();
}

std::vector<std::string> BuiltinProfileNames() {
  return {"phone-midrange", "phone-flagship", "laptop", "server-cpu", "server-gpu-t4"};
}

Result<DeviceProfile> BuiltinProfile(std::string_view name) {
  if (name == "phone-midrange") return PhoneMidrange();
  if (name == "phone-flagship") return PhoneFlagship();
  if (name == "laptop") return Laptop();
  if (name == "server-cpu") return ServerCpu();
  if (name == "server-gpu-t4") return ServerGpuT4();
  std::string all;
  for (const auto& n : BuiltinProfileNames()) all += (all.empty() ? "" : ", ") + n;
  return NotFoundError("unknown device profile '" + std::string(name) + "'; built-in: " + all);
}

// ---- TOML -------------------------------------------------------------------

namespace {

Result<double> TomlNumber(const toml::node& n, std::string_view key, std::string_view where) {
  if (auto d = n.value<double>()) return *d;
  return InvalidArgumentError(std::string(where) + ": '" + std::string(key) + "' must be a number");
}

Result<std::string> TomlString(const toml::node& n, std::string_view key, std::string_view where) {
  if (auto s = n.value<std::string>()) return *s;
  return InvalidArgumentError(std::string(where) + ": '" + std::string(key) + "' must be a string");
}

Status ParseLinkTable(const toml::table& t, LinkType type, RadioLinkModel& m,
                      std::string_view where) {
  std::string w = std::string(where) + " [links." + std::string(LinkTypeName(type)) + "]";
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    if (key == "a_up_mw_per_mbps") {
      VERDANT_ASSIGN_OR_RETURN(m.a_up_mw_per_mbps, TomlNumber(v, key, w));
    } else if (key == "a_down_mw_per_mbps") {
      VERDANT_ASSIGN_OR_RETURN(m.a_down_mw_per_mbps, TomlNumber(v, key, w));
    } else if (key == "b_mw") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, w));
      m.base = Power::Milliwatts(x);
    } else if (key == "tail_s") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, w));
      m.tail_time = Seconds(x);
    } else if (key == "tail_mw") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, w));
      m.tail_power = Power::Milliwatts(x);
    } else if (key == "up_mbps") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, w));
      m.default_up = DataRate::Mbps(x);
    } else if (key == "down_mbps") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, w));
      m.default_down = DataRate::Mbps(x);
    } else {
      return InvalidArgumentError(w + ": unknown key '" + key + "'");
    }
  }
  return OkStatus();
}

Result<DeviceProfile> ProfileFromTable(const toml::table& t, std::string_view where,
                                       std::string default_name) {
  DeviceProfile p;
  if (auto b = t["base"].value<std::string>()) {
    VERDANT_ASSIGN_OR_RETURN(p, BuiltinProfile(*b));
  } else {
    p.links = {{LinkType::kWifi, WifiModel()}};
  }
  p.name = std::move(default_name);
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    if (key == "base") continue;
    if (key == "name") {
      VERDANT_ASSIGN_OR_RETURN(p.name, TomlString(v, key, where));
    } else if (key == "train_power_w") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.train_power = Power::Watts(x);
    } else if (key == "idle_power_w") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.idle_power = Power::Watts(x);
    } else if (key == "ms_per_sample") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.ms_per_sample = Milliseconds(x);
    } else if (key == "battery_wh") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.battery_capacity = WattHours(x);
    } else if (key == "embodied_kg") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.embodied = Emissions::Grams(x * 1000.0);
    } else if (key == "lifetime_years") {
      VERDANT_ASSIGN_OR_RETURN(double x, TomlNumber(v, key, where));
      p.lifetime = Seconds(x * kSecondsPerYear);
    } else if (key == "pue") {
      VERDANT_ASSIGN_OR_RETURN(p.pue, TomlNumber(v, key, where));
    } else if (key == "default_link") {
      VERDANT_ASSIGN_OR_RETURN(std::string s, TomlString(v, key, where));
      VERDANT_ASSIGN_OR_RETURN(p.default_link, ParseLinkType(s));
    } else if (key == "links") {
      const toml::table* links = v.as_table();
      if (links == nullptr)
        return InvalidArgumentError(std::string(where) + ": 'links' must be a table");
      for (auto&& [lk, lv] : *links) {
        VERDANT_ASSIGN_OR_RETURN(LinkType type, ParseLinkType(lk.str()));
        const toml::table* lt = lv.as_table();
        if (lt == nullptr) {
          return InvalidArgumentError(std::string(where) + ": links." + std::string(lk.str()) +
                                      " must be a table");
        }
        // Start from the existing (base) model, else the built-in default.
        RadioLinkModel m = p.links.count(type) ? p.links[type] : DefaultLinkModel(type);
        VERDANT_RETURN_IF_ERROR(ParseLinkTable(*lt, type, m, where));
        p.links[type] = m;
      }
    } else {
      return InvalidArgumentError(std::string(where) + ": unknown key '" + key + "'");
    }
  }
  VERDANT_RETURN_IF_ERROR(Validate(p));
  return p;
}

Result<toml::table> ParseToml(std::string_view text, std::string_view source_name) {
  try {
    return toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source_name << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return InvalidArgumentError(os.str());
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string(source_name) + ": " + e.what());
  }
}

}  // namespace

Result<DeviceProfile> ParseDeviceProfileToml(std::string_view toml_text,
                                             std::string_view source_name) {
  VERDANT_ASSIGN_OR_RETURN(toml::table t, ParseToml(toml_text, source_name));
  return ProfileFromTable(t, source_name, "");
}

Result<std::vector<DeviceProfile>> LoadDeviceProfiles(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFoundError("cannot read device profile file " + file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  VERDANT_ASSIGN_OR_RETURN(toml::table t, ParseToml(text, file.string()));
  std::vector<DeviceProfile> out;
  if (const toml::table* profiles = t["profiles"].as_table();
      profiles != nullptr && t.size() == 1) {
    for (auto&& [k, v] : *profiles) {
      const toml::table* pt = v.as_table();
      std::string where = file.string() + " [profiles." + std::string(k.str()) + "]";
      if (pt == nullptr) return InvalidArgumentError(where + " must be a table");
      VERDANT_ASSIGN_OR_RETURN(DeviceProfile p, ProfileFromTable(*pt, where, std::string(k.str())));
      out.push_back(std::move(p));
    }
  } else {
    VERDANT_ASSIGN_OR_RETURN(DeviceProfile p,
                             ProfileFromTable(t, file.string(), file.stem().string()));
    out.push_back(std::move(p));
  }
  return out;
}

// ---- formulas ------------------------------------------------------------------

Seconds TrainTimeFromSamples(uint64_t samples, Milliseconds ms_per_sample) {
  return Seconds(3.0 * static_cast<double>(samples) * ms_per_sample.count() / 1000.0);
}

Energy RadioBurstEnergy(const RadioLinkModel& link, Bytes bytes, bool upload, DataRate rate,
                        bool with_tail) {
  if (bytes.count == 0) return Energy();
  Power p = upload ? link.PowerAt(rate, DataRate()) : link.PowerAt(DataRate(), rate);
  Energy e = p.Over(rate.TimeFor(bytes).count());
  if (with_tail) e += link.TailEnergy();
  return e;
}

Emissions EmbodiedShare(Emissions total_embodied, Seconds time_reserved, Seconds lifetime,
                        double resource_share) {
  if (!(lifetime.count() > 0)) return Emissions();
  return Emissions::Grams(total_embodied.grams() * (time_reserved.count() / lifetime.count()) *
                          resource_share);
}

Energy NetworkTransferEnergy(Bytes bytes, double kwh_per_gb) {
  return Energy::KilowattHours(static_cast<double>(bytes.count) / 1e9 * kwh_per_gb);
}

// ---- ProfileEnergyModel -------------------------------------------------------

ProfileEnergyModel::ProfileEnergyModel(DeviceProfile profile, ProfileEnergyModelOptions options)
    : profile_(std::move(profile)), options_(options), method_("model:" + profile_.name) {}

Result<std::unique_ptr<ProfileEnergyModel>> ProfileEnergyModel::Create(
    DeviceProfile profile, ProfileEnergyModelOptions options) {
  VERDANT_RETURN_IF_ERROR(Validate(profile));
  if (!std::isfinite(options.network_kwh_per_gb) || options.network_kwh_per_gb < 0) {
    return InvalidArgumentError("network_kwh_per_gb must be >= 0");
  }
  if (!(options.resource_share > 0) || options.resource_share > 1) {
    return InvalidArgumentError("resource_share must be in (0, 1]");
  }
  return std::make_unique<ProfileEnergyModel>(std::move(profile), options);
}

Seconds ProfileEnergyModel::TrainTime(uint64_t samples) const {
  return TrainTimeFromSamples(samples, profile_.ms_per_sample);
}

Energy ProfileEnergyModel::ComputeEnergy(Seconds train_time) const {
  return profile_.train_power.Over(train_time.count()) * profile_.pue;
}

Energy ProfileEnergyModel::IdleEnergy(Seconds wait) const {
  return profile_.idle_power.Over(wait.count()) * profile_.pue;
}

Result<Energy> ProfileEnergyModel::RadioEnergy(Bytes up, Bytes down, LinkType link,
                                               std::optional<DataRate> up_rate,
                                               std::optional<DataRate> down_rate) const {
  auto m = profile_.Link(link);
  if (!m.ok()) return InvalidArgumentError(m.status().message());
  DataRate ru = up_rate.value_or(m->default_up);
  DataRate rd = down_rate.value_or(m->default_down);
  if ((up.count > 0 && !(ru.bits_per_second() > 0)) ||
      (down.count > 0 && !(rd.bits_per_second() > 0))) {
    return InvalidArgumentError("radio rate must be > 0 to move bytes");
  }
  Energy e = RadioBurstEnergy(*m, up, /*upload=*/true, ru, options_.radio_tails) +
             RadioBurstEnergy(*m, down, /*upload=*/false, rd, options_.radio_tails);
  return e * profile_.pue;
}

Emissions ProfileEnergyModel::Embodied(Seconds reserved) const {
  return EmbodiedShare(profile_.embodied, reserved, profile_.lifetime, options_.resource_share);
}

Result<EnergyEstimate> ProfileEnergyModel::Estimate(const RoundUsage& u) const {
  EnergyEstimate e;
  e.method = method_;
  e.train_time = u.measured_train_time.value_or(TrainTime(u.samples_processed));
  if (e.train_time.count() < 0 || u.wait_time.count() < 0) {
    return InvalidArgumentError("train and wait times must be >= 0");
  }
  e.compute = ComputeEnergy(e.train_time);
  LinkType link = u.link.value_or(profile_.default_link);
  VERDANT_ASSIGN_OR_RETURN(e.radio,
                           RadioEnergy(u.bytes_up, u.bytes_down, link, u.up_rate, u.down_rate));
  auto m = profile_.Link(link);  // exists: RadioEnergy checked it
  DataRate ru = u.up_rate.value_or(m->default_up);
  DataRate rd = u.down_rate.value_or(m->default_down);
  e.transfer_time = Seconds(0);
  int bursts = 0;
  if (u.bytes_up.count > 0) {
    e.transfer_time += ru.TimeFor(u.bytes_up);
    ++bursts;
  }
  if (u.bytes_down.count > 0) {
    e.transfer_time += rd.TimeFor(u.bytes_down);
    ++bursts;
  }
  Seconds tails = options_.radio_tails ? m->tail_time * bursts : Seconds(0);
  e.idle = IdleEnergy(u.wait_time);
  e.network = NetworkTransferEnergy(u.bytes_up + u.bytes_down, options_.network_kwh_per_gb);
  e.reserved_time = e.train_time + e.transfer_time + tails + u.wait_time;
  e.embodied = Embodied(e.reserved_time);
  return e;
}

Status RegisterBuiltinEnergyModels(Registry<EnergyModel>& registry) {
  return registry.Register(
      "profile", [](const OptionMap& o) -> Result<std::unique_ptr<EnergyModel>> {
        VERDANT_ASSIGN_OR_RETURN(std::string name, o.GetString("profile", "phone-midrange"));
        VERDANT_ASSIGN_OR_RETURN(std::string file, o.GetString("file", ""));
        ProfileEnergyModelOptions opts;
        VERDANT_ASSIGN_OR_RETURN(opts.network_kwh_per_gb, o.GetDouble("network_kwh_per_gb", 0.0));
        VERDANT_ASSIGN_OR_RETURN(opts.radio_tails, o.GetBool("radio_tails", true));
        VERDANT_ASSIGN_OR_RETURN(opts.resource_share, o.GetDouble("resource_share", 1.0));
        VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("energy model 'profile'"));
        DeviceProfile profile;
        if (!file.empty()) {
          VERDANT_ASSIGN_OR_RETURN(auto all, LoadDeviceProfiles(file));
          bool found = false;
          for (auto& p : all) {
            if (all.size() == 1 || p.name == name) {
              profile = p;
              found = true;
              break;
            }
          }
          if (!found) return NotFoundError("no profile '" + name + "' in " + file);
        } else {
          VERDANT_ASSIGN_OR_RETURN(profile, BuiltinProfile(name));
        }
        VERDANT_ASSIGN_OR_RETURN(auto m, ProfileEnergyModel::Create(std::move(profile), opts));
        return std::unique_ptr<EnergyModel>(std::move(m));
      });
}

}  // namespace verdant::energy
