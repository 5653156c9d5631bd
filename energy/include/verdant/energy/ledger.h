// verdant/energy/ledger.h
//
// Ledger: the energy and carbon bill of a run, per client and round, with
// per-round and per-run totals and the Green Software Foundation's SCI
// (SCI = (E * I + M) / R; location-based average intensity). Writes
// clients.csv, a CodeCarbon-style emissions.csv and a JSON fragment for
// summary.json.
//
//   Ledger ledger;
//   ClientRoundInput in{.round = 3, .client_id = "c7", .zone = "ES",
//                       .start = t0, .duration = std::chrono::minutes(2),
//                       .compute = est.compute, .radio = est.radio, .idle = est.idle,
//                       .embodied = est.embodied, .bytes_up = up, .bytes_down = down,
//                       .energy_method = est.method};
//   Result<ClientRoundRecord> rec = ledger.AddClientRound(in, carbon_source);
//   VERDANT_RETURN_IF_ERROR(ledger.SetRoundAccuracy(3, 0.84));
//   VERDANT_RETURN_IF_ERROR(ledger.WriteClientsCsv(out / "clients.csv"));
//
// Operational emissions integrate over the trace hours the client's work
// spanned ([start, start + duration), energy spread uniformly); `time_utc` /
// `intensity` record the trace hour containing `start` and the
// energy-weighted mean intensity.
//
// Thread-safety: all methods are safe to call concurrently (one mutex).
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"
#include "verdant/energy/carbon.h"

namespace verdant::energy {

// What the coordinator knows about one client's participation in a round.
struct ClientRoundInput {
  uint64_t round = 0;
  std::string client_id{};
  std::string zone{};    // grid zone of the client (DeviceState::zone)
  TimePoint start{};     // when the client's work for the round began
  Duration duration{0};  // how long it took (download..upload, incl. waits)
  Energy compute{};
  Energy radio{};
  Energy idle{};
  Emissions embodied{};  // SCI's M for this client-round (EnergyEstimate::embodied)
  Bytes bytes_up{};
  Bytes bytes_down{};
  std::string energy_method{};  // "rapl:package-0", "model:phone-midrange", ...
  std::string codec{};          // uplink codec, optional
  uint64_t samples = 0;         // samples processed, optional
  // Intensity the client reported (DeviceState::local_intensity). Used when
  // the carbon source has no data for the zone, or always when
  // LedgerOptions::prefer_client_intensity.
  std::optional<CarbonIntensity> reported_intensity{};
};

struct ClientRoundRecord {
  uint64_t round = 0;
  std::string client_id{};
  std::string zone{};
  TimePoint time_utc{};    // trace time of the intensity read (hour containing start)
  TimePoint wall_start{};  // ClientRoundInput::start
  Duration duration{0};
  Energy compute{};
  Energy radio{};
  Energy idle{};
  Bytes bytes_up{};
  Bytes bytes_down{};
  CarbonIntensity intensity{};  // energy-weighted mean over the span
  std::string intensity_source{};
  IntensityKind intensity_kind = IntensityKind::kAverage;
  EmissionScope intensity_scope = EmissionScope::kUnspecified;
  Emissions emissions{};  // operational: E [kWh] x I
  Emissions embodied{};   // M
  std::string energy_method{};
  std::string codec{};
  uint64_t samples = 0;
  Energy Total() const { return compute + radio + idle; }
};

struct RoundTotals {
  uint64_t round = 0;
  size_t clients = 0;
  Energy compute{}, radio{}, idle{};
  Bytes bytes_up{}, bytes_down{};
  Emissions emissions{};  // operational
  Emissions embodied{};
  TimePoint start{}, end{};          // earliest start, latest start + duration
  std::optional<double> accuracy{};  // 0..1, from SetRoundAccuracy
  Energy energy() const { return compute + radio + idle; }
  // SCI with R = this round: E*I + M.
  Emissions sci() const { return emissions + embodied; }
};

struct RunTotals {
  size_t rounds = 0;
  size_t client_rounds = 0;
  Energy compute{}, radio{}, idle{};
  Bytes bytes_up{}, bytes_down{};
  Emissions emissions{};
  Emissions embodied{};
  Energy energy() const { return compute + radio + idle; }
  // SCI per functional unit: (E*I + M) / R.
  Emissions sci_per_round{};
  Emissions sci_per_client_update{};
  // R = final accuracy in percentage points (accuracy of the last round
  // with one x 100); nullopt without an accuracy > 0.
  std::optional<Emissions> sci_per_accuracy_point{};
  std::optional<double> final_accuracy{};
};

struct LedgerOptions {
  // Use the client-reported intensity whenever present (default: only when
  // the carbon source does not know the zone).
  bool prefer_client_intensity = false;
  // Intensity when neither the source nor the client knows the zone; nullopt
  // (default): AddClientRound fails with the source's error.
  std::optional<CarbonIntensity> fallback_intensity{};
};

struct EmissionsCsvOptions {
  std::string project_name = "verdant";
  std::string run_id{};  // e.g. a UUID; empty allowed
  // One row per round (default) or a single row for the whole run.
  bool per_round = true;
};

class Ledger {
 public:
  explicit Ledger(LedgerOptions options = {}) : options_(std::move(options)) {}
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Looks up and integrates the intensity, computes operational emissions,
  // records and returns the row. kInvalidArgument for negative energy or
  // duration or an empty client id; the source's error if it cannot give an
  // intensity and no fallback applies; kInvalidArgument if the reading's
  // kind (average/marginal) differs from earlier records.
  Result<ClientRoundRecord> AddClientRound(const ClientRoundInput& in,
                                           const CarbonIntensitySource& source);
  // Records a row computed elsewhere (validated as above).
  Status Add(ClientRoundRecord record);
  // Accuracy (0..1) reached after `round`; for SCI per accuracy point.
  Status SetRoundAccuracy(uint64_t round, double accuracy);

  std::vector<ClientRoundRecord> Records() const;
  // Totals of one round (zero totals if it has no records).
  RoundTotals Round(uint64_t round) const;
  // Every round with a record or an accuracy, ascending.
  std::vector<RoundTotals> Rounds() const;
  RunTotals Totals() const;

  // clients.csv: round,client_id,zone,time_utc,compute_joules,radio_joules,
  // idle_joules,bytes_up,bytes_down,intensity_g_per_kwh,emissions_g,
  // embodied_g,energy_method, then energy_joules,wall_start_utc,duration_s,
  // intensity_source,intensity_kind,intensity_scope,codec,samples.
  // kUnavailable if the file cannot be written.
  Status WriteClientsCsv(const std::filesystem::path& file) const;
  // CodeCarbon's emissions.csv columns (timestamp, project_name, run_id,
  // duration [s], emissions [kg], emissions_rate [kg/s], cpu/gpu/ram_power
  // [W], cpu/gpu/ram_energy [kWh], energy_consumed [kWh], ..., pue).
  // cpu_energy = compute; energy_consumed = compute + radio + idle (radio and
  // idle have no CodeCarbon column); emissions are operational only;
  // region = the zones, tracking_mode = "verdant:<methods>".
  Status WriteEmissionsCsv(const std::filesystem::path& file,
                           const EmissionsCsvOptions& options = {}) const;
  // {"energy_joules","compute_joules","radio_joules","idle_joules",
  //  "energy_kwh","emissions_g","emissions_kg","embodied_g","sci_g_per_round",
  //  "sci_g_per_client_update","sci_g_per_accuracy_point" (null if unknown),
  //  "rounds","client_rounds","bytes_up","bytes_down","intensity_kind",
  //  "intensity_sources":[...],"energy_methods":{"model:...":n}}
  nlohmann::json SummaryJson() const;

 private:
  Status ValidateLocked(const ClientRoundRecord& r) const;
  RoundTotals RoundLocked(uint64_t round) const;

  LedgerOptions options_{};
  mutable std::mutex mu_{};
  std::vector<ClientRoundRecord> records_{};
  std::map<uint64_t, double> accuracy_;
};

// The column names WriteClientsCsv writes, in order.
const std::vector<std::string>& ClientsCsvColumns();
// The column names WriteEmissionsCsv writes (CodeCarbon 2.x order).
const std::vector<std::string>& EmissionsCsvColumns();

}  // namespace verdant::energy
