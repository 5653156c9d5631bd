// verdant/simulations/report.h
//
// report.html: one self-contained page (inline SVG, no scripts, no network)
// comparing one or more simulated runs from their output folders
// (rounds.csv, clients.csv, simulation.csv). Plots: cumulative gCO2e
// (operational + embodied) and accuracy against virtual time per policy;
// gCO2e split into compute / radio / idle / embodied; grid intensity at
// selection against each zone's average over the simulated period;
// participation per device. Plus comparison.csv beside it.
//   std::vector<ReportRun> runs = {{"random", "out/random"}, {"carbon", "out/carbon"}};
//   Status st = WriteHtmlReport(runs, traces, "out/report.html");
// Thread-safety: reentrant.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/energy/carbon.h"

namespace verdant::sim {

struct ReportRun {
  std::string label;             // "carbon", "random/int8", ...
  std::filesystem::path dir;     // a simulation's out_dir
};

// One run's totals, as in comparison.csv.
struct RunTotals {
  std::string label;
  uint64_t rounds = 0, client_rounds = 0, completed = 0, failed = 0;
  double compute_j = 0, radio_j = 0, idle_j = 0;
  double operational_g = 0, embodied_g = 0;
  double virtual_hours = 0;
  double final_accuracy = -1;    // -1: not evaluated
  double mean_intensity = 0;     // gCO2e/kWh over completed and failed client-rounds
  uint64_t devices_used = 0;
};

// Reads a run's folder. kNotFound / kDataLoss naming the file.
Result<RunTotals> ReadRunTotals(const ReportRun& run);
// Writes comparison.csv (one row per run).
Status WriteComparisonCsv(const std::vector<RunTotals>& totals, const std::filesystem::path& file);
// Writes the HTML page. `intensity` gives the zone averages (may be null:
// the average plot is then left out).
Status WriteHtmlReport(const std::vector<ReportRun>& runs, const energy::CarbonIntensitySource* intensity,
                       const std::filesystem::path& file);

}  // namespace verdant::sim
