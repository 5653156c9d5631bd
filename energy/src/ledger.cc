#include "verdant/energy/ledger.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <thread>

#include "sysfs_util.h"

namespace verdant::energy {

using internal::CsvField;
using internal::FormatDouble;

namespace {

bool BadEnergy(Energy e) { return !std::isfinite(e.joules()) || e.joules() < 0; }

std::string Num(double v) { return FormatDouble(v); }

std::string Os() {
  utsname u{};
  if (uname(&u) != 0) return "";
  return std::string(u.sysname) + "-" + u.release + "-" + u.machine;
}

}  // namespace

const std::vector<std::string>& ClientsCsvColumns() {
  static const std::vector<std::string> cols = {"round",
                                                "client_id",
                                                "zone",
                                                "time_utc",
                                                "compute_joules",
                                                "radio_joules",
                                                "idle_joules",
                                                "bytes_up",
                                                "bytes_down",
                                                "intensity_g_per_kwh",
                                                "emissions_g",
                                                "embodied_g",
                                                "energy_method",
                                                "energy_joules",
                                                "wall_start_utc",
                                                "duration_s",
                                                "intensity_source",
                                                "intensity_kind",
                                                "intensity_scope",
                                                "codec",
                                                "samples"};
  return cols;
}

const std::vector<std::string>& EmissionsCsvColumns() {
  static const std::vector<std::string> cols = {"timestamp",
                                                "project_name",
                                                "run_id",
                                                "duration",
                                                "emissions",
                                                "emissions_rate",
                                                "cpu_power",
                                                "gpu_power",
                                                "ram_power",
                                                "cpu_energy",
                                                "gpu_energy",
                                                "ram_energy",
                                                "energy_consumed",
                                                "country_name",
                                                "country_iso_code",
                                                "region",
                                                "cloud_provider",
                                                "cloud_region",
                                                "os",
                                                "python_version",
                                                "codecarbon_version",
                                                "cpu_count",
                                                "cpu_model",
                                                "gpu_count",
                                                "gpu_model",
                                                "longitude",
                                                "latitude",
                                                "ram_total_size",
                                                "tracking_mode",
                                                "on_cloud",
                                                "pue"};
  return cols;
}

Status Ledger::ValidateLocked(const ClientRoundRecord& r) const {
  if (r.client_id.empty()) return InvalidArgumentError("ledger record needs a client_id");
  if (BadEnergy(r.compute) || BadEnergy(r.radio) || BadEnergy(r.idle)) {
    return InvalidArgumentError("ledger record for client " + r.client_id + " round " +
                                std::to_string(r.round) + " has negative or non-finite energy");
  }
  if (r.duration.count() < 0) return InvalidArgumentError("ledger record has a negative duration");
  if (!std::isfinite(r.emissions.grams()) || r.emissions.grams() < 0 ||
      !std::isfinite(r.embodied.grams()) || r.embodied.grams() < 0) {
    return InvalidArgumentError("ledger record has negative or non-finite emissions");
  }
  if (!records_.empty() && records_.front().intensity_kind != r.intensity_kind) {
    return InvalidArgumentError("ledger: cannot mix average and marginal intensity in one run (" +
                                r.intensity_source + " is " +
                                std::string(IntensityKindName(r.intensity_kind)) + ")");
  }
  return OkStatus();
}

Result<ClientRoundRecord> Ledger::AddClientRound(const ClientRoundInput& in,
                                                 const CarbonIntensitySource& source) {
  ClientRoundRecord r;
  r.round = in.round;
  r.client_id = in.client_id;
  r.zone = in.zone;
  r.wall_start = in.start;
  r.duration = in.duration;
  r.compute = in.compute;
  r.radio = in.radio;
  r.idle = in.idle;
  r.bytes_up = in.bytes_up;
  r.bytes_down = in.bytes_down;
  r.embodied = in.embodied;
  r.energy_method = in.energy_method;
  r.codec = in.codec;
  r.samples = in.samples;
  if (BadEnergy(in.compute) || BadEnergy(in.radio) || BadEnergy(in.idle) ||
      in.duration.count() < 0) {
    return InvalidArgumentError("client " + in.client_id + " round " + std::to_string(in.round) +
                                ": negative energy or duration");
  }
  const Energy total = r.Total();
  auto use_constant = [&](CarbonIntensity ci, std::string src) {
    r.intensity = ci;
    r.intensity_source = std::move(src);
    r.time_utc = in.start;
    r.emissions = total * ci;
  };
  if (options_.prefer_client_intensity && in.reported_intensity) {
    use_constant(*in.reported_intensity, "client-reported");
  } else {
    auto integ = IntegrateEmissions(source, in.zone, in.start, in.duration, total);
    if (integ.ok()) {
      r.intensity = integ->mean_intensity;
      r.intensity_source = integ->first.source;
      r.intensity_kind = integ->first.kind;
      r.intensity_scope = integ->first.scope;
      r.time_utc = integ->first.trace_time;
      r.emissions = integ->emissions;
    } else if (in.reported_intensity) {
      use_constant(*in.reported_intensity, "client-reported");
    } else if (options_.fallback_intensity) {
      use_constant(*options_.fallback_intensity, "fallback-constant");
    } else {
      return integ.status().WithContext("client " + in.client_id + " round " +
                                        std::to_string(in.round));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  VERDANT_RETURN_IF_ERROR(ValidateLocked(r));
  records_.push_back(r);
  return r;
}

Status Ledger::Add(ClientRoundRecord record) {
  std::lock_guard<std::mutex> lock(mu_);
  VERDANT_RETURN_IF_ERROR(ValidateLocked(record));
  records_.push_back(std::move(record));
  return OkStatus();
}

Status Ledger::SetRoundAccuracy(uint64_t round, double accuracy) {
  if (!std::isfinite(accuracy) || accuracy < 0 || accuracy > 1) {
    return InvalidArgumentError("accuracy must be in [0, 1], got " + std::to_string(accuracy));
  }
  std::lock_guard<std::mutex> lock(mu_);
  accuracy_[round] = accuracy;
  return OkStatus();
}

std::vector<ClientRoundRecord> Ledger::Records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

RoundTotals Ledger::RoundLocked(uint64_t round) const {
  RoundTotals t;
  t.round = round;
  bool first = true;
  for (const auto& r : records_) {
    if (r.round != round) continue;
    ++t.clients;
    t.compute += r.compute;
    t.radio += r.radio;
    t.idle += r.idle;
    t.bytes_up += r.bytes_up;
    t.bytes_down += r.bytes_down;
    t.emissions += r.emissions;
    t.embodied += r.embodied;
    TimePoint end = r.wall_start + r.duration;
    if (first || r.wall_start < t.start) t.start = r.wall_start;
    if (first || end > t.end) t.end = end;
    first = false;
  }
  if (auto it = accuracy_.find(round); it != accuracy_.end()) t.accuracy = it->second;
  return t;
}

RoundTotals Ledger::Round(uint64_t round) const {
  std::lock_guard<std::mutex> lock(mu_);
  return RoundLocked(round);
}

std::vector<RoundTotals> Ledger::Rounds() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<uint64_t> ids;
  for (const auto& r : records_) ids.insert(r.round);
  for (const auto& [k, v] : accuracy_) ids.insert(k);
  std::vector<RoundTotals> out;
  for (uint64_t id : ids) out.push_back(RoundLocked(id));
  return out;
}

RunTotals Ledger::Totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  RunTotals t;
  std::set<uint64_t> rounds;
  for (const auto& r : records_) {
    rounds.insert(r.round);
    ++t.client_rounds;
    t.compute += r.compute;
    t.radio += r.radio;
    t.idle += r.idle;
    t.bytes_up += r.bytes_up;
    t.bytes_down += r.bytes_down;
    t.emissions += r.emissions;
    t.embodied += r.embodied;
  }
  for (const auto& [k, v] : accuracy_) rounds.insert(k);
  t.rounds = rounds.size();
  const double sci_total = t.emissions.grams() + t.embodied.grams();
  if (t.rounds > 0) t.sci_per_round = Emissions::Grams(sci_total / static_cast<double>(t.rounds));
  if (t.client_rounds > 0) {
    t.sci_per_client_update = Emissions::Grams(sci_total / static_cast<double>(t.client_rounds));
  }
  if (!accuracy_.empty()) {
    t.final_accuracy = accuracy_.rbegin()->second;
    if (*t.final_accuracy > 0) {
      t.sci_per_accuracy_point = Emissions::Grams(sci_total / (*t.final_accuracy * 100.0));
    }
  }
  return t;
}

Status Ledger::WriteClientsCsv(const std::filesystem::path& file) const {
  auto records = Records();
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError("cannot write " + file.string());
  const auto& cols = ClientsCsvColumns();
  for (size_t i = 0; i < cols.size(); ++i) out << (i ? "," : "") << cols[i];
  out << "\n";
  for (const auto& r : records) {
    out << r.round << ',' << CsvField(r.client_id) << ',' << CsvField(r.zone) << ','
        << FormatUtc(r.time_utc) << ',' << Num(r.compute.joules()) << ',' << Num(r.radio.joules())
        << ',' << Num(r.idle.joules()) << ',' << r.bytes_up.count << ',' << r.bytes_down.count
        << ',' << Num(r.intensity.grams_per_kwh()) << ',' << Num(r.emissions.grams()) << ','
        << Num(r.embodied.grams()) << ',' << CsvField(r.energy_method) << ','
        << Num(r.Total().joules()) << ',' << FormatUtc(r.wall_start) << ','
        << Num(ToSeconds(r.duration)) << ',' << CsvField(r.intensity_source) << ','
        << IntensityKindName(r.intensity_kind) << ',' << EmissionScopeName(r.intensity_scope) << ','
        << CsvField(r.codec) << ',' << r.samples << "\n";
  }
  out.flush();
  if (!out) return UnavailableError("write error on " + file.string());
  return OkStatus();
}

Status Ledger::WriteEmissionsCsv(const std::filesystem::path& file,
                                 const EmissionsCsvOptions& options) const {
  auto records = Records();
  struct Group {
    TimePoint start, end;
    Energy compute, total;
    Emissions emissions;
    std::set<std::string> zones, methods;
    bool any = false;
  };
  std::map<uint64_t, Group> groups;
  for (const auto& r : records) {
    Group& g = groups[options.per_round ? r.round : 0];
    TimePoint end = r.wall_start + r.duration;
    if (!g.any || r.wall_start < g.start) g.start = r.wall_start;
    if (!g.any || end > g.end) g.end = end;
    g.any = true;
    g.compute += r.compute;
    g.total += r.Total();
    g.emissions += r.emissions;
    g.zones.insert(r.zone);
    g.methods.insert(r.energy_method);
  }
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError("cannot write " + file.string());
  const auto& cols = EmissionsCsvColumns();
  for (size_t i = 0; i < cols.size(); ++i) out << (i ? "," : "") << cols[i];
  out << "\n";
  const std::string os = Os();
  const unsigned cpus = std::thread::hardware_concurrency();
  auto join = [](const std::set<std::string>& s, const char* sep) {
    std::string j;
    for (const auto& x : s) j += (j.empty() ? "" : sep) + x;
    return j;
  };
  for (const auto& [id, g] : groups) {
    const double dur = std::max(0.0, ToSeconds(g.end - g.start));
    std::string ts = FormatUtc(g.end);
    if (!ts.empty() && ts.back() == 'Z') ts.pop_back();  // CodeCarbon: "2024-05-27T11:31:35"
    const double kg = g.emissions.kilograms();
    out << ts << ',' << CsvField(options.project_name) << ',' << CsvField(options.run_id) << ','
        << Num(dur) << ',' << Num(kg) << ',' << Num(dur > 0 ? kg / dur : 0.0) << ','
        << Num(dur > 0 ? g.compute.joules() / dur : 0.0) << ",0,0," << Num(g.compute.kwh())
        << ",0,0," << Num(g.total.kwh()) << ",,," << CsvField(join(g.zones, ";")) << ",,,"
        << CsvField(os) << ",,," << cpus << ",,0,,,,,"
        << CsvField("verdant:" + join(g.methods, ";")) << ",N,1.0\n";
  }
  out.flush();
  if (!out) return UnavailableError("write error on " + file.string());
  return OkStatus();
}

nlohmann::json Ledger::SummaryJson() const {
  RunTotals t = Totals();
  auto records = Records();
  nlohmann::json j;
  j["energy_joules"] = t.energy().joules();
  j["compute_joules"] = t.compute.joules();
  j["radio_joules"] = t.radio.joules();
  j["idle_joules"] = t.idle.joules();
  j["energy_kwh"] = t.energy().kwh();
  j["emissions_g"] = t.emissions.grams();
  j["emissions_kg"] = t.emissions.kilograms();
  j["embodied_g"] = t.embodied.grams();
  j["sci_g_per_round"] = t.sci_per_round.grams();
  j["sci_g_per_client_update"] = t.sci_per_client_update.grams();
  j["sci_g_per_accuracy_point"] = t.sci_per_accuracy_point
                                      ? nlohmann::json(t.sci_per_accuracy_point->grams())
                                      : nlohmann::json();
  j["rounds"] = t.rounds;
  j["client_rounds"] = t.client_rounds;
  j["bytes_up"] = t.bytes_up.count;
  j["bytes_down"] = t.bytes_down.count;
  std::set<std::string> sources;
  std::map<std::string, uint64_t> methods;
  for (const auto& r : records) {
    sources.insert(r.intensity_source);
    ++methods[r.energy_method];
  }
  j["intensity_kind"] =
      records.empty() ? "average" : std::string(IntensityKindName(records.front().intensity_kind));
  j["intensity_sources"] = std::vector<std::string>(sources.begin(), sources.end());
  j["energy_methods"] = methods;
  return j;
}

}  // namespace verdant::energy
