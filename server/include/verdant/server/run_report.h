// verdant/server/run_report.h
//
// RunReport: the files every run writes into its output folder —
// `rounds.csv` (one row per round, appended and flushed as rounds finish, so
// a crashed run keeps what it did), `clients.csv` (one row per selected
// client and round) and `summary.json` (written at the end).
//   auto report = RunReport::Open("out/");          // creates the folder
//   VERDANT_RETURN_IF_ERROR((*report)->AddRound(round_record, client_records));
//   VERDANT_RETURN_IF_ERROR((*report)->WriteSummary(summary));
// Column names are a stable interface: later columns are only appended.
// Thread-safety: not thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

struct RoundRecord {
  uint64_t round = 0;
  size_t selected = 0;
  size_t completed = 0;
  size_t failed = 0;
  std::optional<double> accuracy;  // empty when not evaluated
  std::optional<double> loss;
  uint64_t bytes_up = 0;    // socket bytes received by the coordinator in the round
  uint64_t bytes_down = 0;  // socket bytes sent by the coordinator in the round
  double wall_seconds = 0;  // tasks ready -> aggregation done
  double train_loss = 0;    // example-weighted mean of the clients' reported loss
  double eval_seconds = 0;
  std::string started_utc;
  bool model_updated = false;
  double energy_joules = 0;  // device energy of the round's clients (ledger)
  double emissions_g = 0;    // operational gCO2e (embodied excluded)
  double embodied_g = 0;
  double deferred_seconds = 0;  // grid time the selector held the round
  // The strategy's per-round figures (Strategy::RoundMetrics, e.g.
  // dp_epsilon), written as "key=value" pairs separated by spaces.
  std::map<std::string, double> metrics;
};

struct ClientRoundRecord {
  uint64_t round = 0;
  std::string client_id;
  std::string status;  // "completed" or "failed"
  std::string reason;  // why it failed (or why its energy report was rejected)
  uint64_t num_examples = 0;
  double train_loss = 0;
  double train_seconds = 0;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  // Energy and carbon (the ledger's row).
  std::string zone;
  std::string time_utc;  // trace time the intensity was read for
  double compute_joules = 0, radio_joules = 0, idle_joules = 0;
  double intensity_g_per_kwh = 0;
  double emissions_g = 0, embodied_g = 0;
  std::string energy_method;
  std::string codec;
  std::string intensity_source;  // where the intensity came from ("eia:...", "http:...", "fallback-constant")
};

struct RunSummary {
  double final_accuracy = 0;
  double final_loss = 0;
  uint64_t rounds_completed = 0;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  double wall_seconds = 0;
  // Further fields merged into summary.json (numbers or strings).
  std::map<std::string, double> numbers;
  std::map<std::string, std::string> strings;
};

class RunReport {
 public:
  // Creates `dir` if needed and truncates the three files. kUnavailable
  // naming the path when it cannot write.
  static Result<std::unique_ptr<RunReport>> Open(const std::filesystem::path& dir);
  Status AddRound(const RoundRecord& round, const std::vector<ClientRoundRecord>& clients);
  Status WriteSummary(const RunSummary& summary);
  const std::filesystem::path& dir() const { return dir_; }

 private:
  RunReport() = default;
  std::filesystem::path dir_;
  std::ofstream rounds_, clients_;
};

}  // namespace verdant
