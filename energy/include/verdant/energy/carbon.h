// verdant/energy/carbon.h
//
// CarbonIntensitySource: grid carbon intensity (gCO2e/kWh) per zone and time,
// now and forecast. Implementations:
//   ConstantIntensitySource    one value everywhere (e.g. world average 475)
//   TraceIntensitySource       hourly CSV traces keyed by zone (EIA avg_CI,
//                              Electricity Maps direct or LCA), from data/carbon/
//   ForecastView               a forecast over another source: perfect, or with
//                              seeded multiplicative Gaussian error
//   SeriesIntensitySource      irregular points from JSON in the Carbon Aware
//                              SDK or Electricity Maps response shape
//
//   auto traces = TraceIntensitySource::LoadDirectory("data/carbon", EmissionScope::kDirect);
//   Result<IntensityReading> r = (*traces)->IntensityAt("US-CISO", clock.Now());
//   // r->value, r->trace_time (the 2022 hour used), r->source, r->kind
//   auto g = IntegrateEmissions(**traces, "ES", start, std::chrono::minutes(90),
//   Energy::Joules(5400));
//
// Times: the shipped traces are hourly UTC for 2022. A lookup uses the hour
// containing t. Times outside the trace wrap modulo the trace length (8760 h
// = 365 days, so the hour of day is kept), so a demo can start "now"; the
// reading's trace_time says which trace hour was used. Wrapping can be turned
// off (then kOutOfRange).
//
// Thread-safety: every source is immutable after loading; all const methods
// are safe to call concurrently.
#pragma once

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
#include "verdant/core/rng.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"

namespace verdant::energy {

// Average (what the grid emits per kWh consumed) vs marginal (what one more
// kWh emits). Never mix them in one run (ENERGY.md).
enum class IntensityKind { kAverage, kMarginal };
// Direct (combustion only) vs lifecycle (incl. construction, fuel supply).
// kUnspecified when the source does not say (the EIA-derived traces).
enum class EmissionScope { kUnspecified, kDirect, kLifecycle };
std::string_view IntensityKindName(IntensityKind k);  // "average", "marginal"
std::string_view EmissionScopeName(EmissionScope s);  // "unspecified", "direct", "lifecycle"

struct IntensityReading {
  CarbonIntensity value{};
  std::string zone{};
  std::string source{};                       // e.g. "eia:US-CISO_2022_hourly_eia.csv", "constant"
  TimePoint trace_time{};                     // the start of the trace interval actually used
  Duration interval = std::chrono::hours(1);  // its length
  IntensityKind kind = IntensityKind::kAverage;
  EmissionScope scope = EmissionScope::kUnspecified;
  bool filled = false;  // the value was interpolated over a gap in the data
};

class CarbonIntensitySource {
 public:
  virtual ~CarbonIntensitySource() = default;
  CarbonIntensitySource(const CarbonIntensitySource&) = delete;
  CarbonIntensitySource& operator=(const CarbonIntensitySource&) = delete;
  virtual std::string_view Name() const = 0;
  // Intensity in `zone` at `t`. kNotFound for an unknown zone (the message
  // lists the known ones); kOutOfRange outside the data when not wrapping.
  virtual Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const = 0;
  // Intensities for [from, from + horizon): one reading per source interval
  // (hourly for traces), the first being the one containing `from`. The
  // default implementation steps IntensityAt through the intervals.
  virtual Result<std::vector<IntensityReading>> Forecast(std::string_view zone, TimePoint from,
                                                         Duration horizon) const;
  // Zones this source knows; empty means "any zone" (constant source).
  virtual std::vector<std::string> Zones() const = 0;

 protected:
  CarbonIntensitySource() = default;
};

// ---- constant --------------------------------------------------------------------

class ConstantIntensitySource final : public CarbonIntensitySource {
 public:
  // World averages (ENERGY.md): 475 CodeCarbon / Green Algorithms, 481
  // Carbontracker, 436.5 eco2AI gCO2e/kWh.
  static constexpr double kWorldAverageGramsPerKwh = 475.0;
  explicit ConstantIntensitySource(
      CarbonIntensity value = CarbonIntensity::GramsPerKwh(kWorldAverageGramsPerKwh),
      std::string source_name = "constant", IntensityKind kind = IntensityKind::kAverage)
      : value_(value), source_(std::move(source_name)), kind_(kind) {}
  std::string_view Name() const override { return "constant"; }
  // Any zone; trace_time is t truncated to the hour.
  Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override;
  std::vector<std::string> Zones() const override { return {}; }

 private:
  CarbonIntensity value_{};
  std::string source_{};
  IntensityKind kind_{};
};

// ---- hourly traces -------------------------------------------------------------------

// One zone's hourly series, gaps already filled.
struct HourlyTrace {
  std::string zone{};
  std::string source{};             // "eia:<file>" / "electricitymaps-direct:<file>" / ...
  TimePoint start{};                // first hour (UTC)
  std::vector<double> g_per_kwh{};  // one value per hour from `start`
  std::vector<bool> filled{};       // true where the value was interpolated
  size_t gaps_filled = 0;           // blank rows + missing hours interpolated
  IntensityKind kind = IntensityKind::kAverage;
  EmissionScope scope = EmissionScope::kUnspecified;
};

// EIA format (US balancing areas, via HewlettPackard/dc-rl):
// `timestamp,WND,...,avg_CI`, the time column possibly unnamed (WAAT), time
// "2022-01-01 00:00:00+00:00". Blank avg_CI (gap hours) and missing hours are
// filled by linear interpolation between the neighbouring known hours
// (nearest value at the ends) and counted in gaps_filled. `zone` empty: taken
// from the file name before the first '_' ("US-CISO_2022_hourly_eia.csv").
// kNotFound: unreadable file; kDataLoss naming file, line and field: a
// malformed number, a bad or non-increasing timestamp, a short row, no data.
// kInvalidArgument: the header lacks avg_CI.
Result<HourlyTrace> LoadEiaCsv(const std::filesystem::path& file, std::string zone = "");
// Same, from text (`name` is used in messages and the source tag).
Result<HourlyTrace> ParseEiaCsv(std::string_view text, std::string_view name,
                                std::string zone = "");

// Electricity Maps format: `Datetime (UTC),Country,Zone Name,Zone Id,
// Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),...`
// (UTF-8 subscript, optional BOM, CRLF). The caller chooses the column:
// kDirect or kLifecycle (kUnspecified is kInvalidArgument). Zone from the
// `Zone Id` column (else the file name). Errors as for LoadEiaCsv.
Result<HourlyTrace> LoadElectricityMapsCsv(const std::filesystem::path& file, EmissionScope scope);
Result<HourlyTrace> ParseElectricityMapsCsv(std::string_view text, std::string_view name,
                                            EmissionScope scope);

struct TraceOptions {
  // Times outside the trace wrap modulo its length; false: kOutOfRange.
  bool wrap = true;
};

class TraceIntensitySource final : public CarbonIntensitySource {
 public:
  explicit TraceIntensitySource(TraceOptions options = {}) : options_(options) {}

  // Every `<ZONE>_*_hourly_eia.csv` and `<ZONE>_*_electricitymaps.csv` in
  // `dir` (other files are ignored). `electricity_maps_scope` picks the
  // Electricity Maps column (kDirect or kLifecycle) and must be given
  // explicitly. kNotFound: no trace in dir; otherwise the first load error.
  static Result<std::unique_ptr<TraceIntensitySource>> LoadDirectory(
      const std::filesystem::path& dir, EmissionScope electricity_maps_scope,
      TraceOptions options = {});

  // kAlreadyExists for a zone already present; kInvalidArgument for an empty
  // trace or one whose kind (average/marginal) differs from those present.
  Status Add(HourlyTrace trace);

  std::string_view Name() const override { return "trace"; }
  Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override;
  Result<std::vector<IntensityReading>> Forecast(std::string_view zone, TimePoint from,
                                                 Duration horizon) const override;
  std::vector<std::string> Zones() const override;
  // The trace of a zone, or nullptr.
  const HourlyTrace* Trace(std::string_view zone) const;

 private:
  Result<IntensityReading> At(const HourlyTrace& tr, int64_t hour_index_from_start) const;
  TraceOptions options_{};
  std::map<std::string, HourlyTrace, std::less<>> traces_{};
};

// ---- forecast view ---------------------------------------------------------------------

struct ForecastOptions {
  // Standard deviation of the multiplicative error at lead time 0
  // (value * (1 + sigma * N(0,1)), clamped at 0). 0 = perfect forecast.
  double relative_error = 0.0;
  // Added to the standard deviation per hour of lead time (error grows with
  // the horizon). Default 0.
  double relative_error_per_hour = 0.0;
  // Seed of the error stream. The error of (zone, target hour, issue hour)
  // is a pure function of the seed, so repeated calls agree and a run is
  // reproducible regardless of call order.
  uint64_t seed = 0;
};

// IntensityAt returns the underlying (observed) value; Forecast(zone, from,
// horizon) returns the underlying values perturbed by the seeded error,
// lead time counted from the hour containing `from`.
class ForecastView final : public CarbonIntensitySource {
 public:
  // `truth` is not owned and must outlive the view.
  ForecastView(const CarbonIntensitySource& truth, ForecastOptions options)
      : truth_(truth), options_(options) {}
  std::string_view Name() const override { return "forecast"; }
  Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override {
    return truth_.IntensityAt(zone, t);
  }
  Result<std::vector<IntensityReading>> Forecast(std::string_view zone, TimePoint from,
                                                 Duration horizon) const override;
  std::vector<std::string> Zones() const override { return truth_.Zones(); }

 private:
  const CarbonIntensitySource& truth_;
  ForecastOptions options_{};
};

// ---- JSON (Carbon Aware SDK / Electricity Maps responses) ---------------------------------

struct JsonSourceOptions {
  // What the data measures; the JSON shapes do not say (except Electricity
  // Maps' optional emissionFactorType). Default: average, unspecified scope.
  IntensityKind kind = IntensityKind::kAverage;
  EmissionScope scope = EmissionScope::kUnspecified;
  // Interval assumed when a point has no duration (Electricity Maps).
  Duration default_interval = std::chrono::hours(1);
};

// Points at irregular times per zone. A lookup uses the point whose
// [time, time + duration) contains t; kOutOfRange before the first point or
// after the last point's interval (no wrapping).
class SeriesIntensitySource final : public CarbonIntensitySource {
 public:
  struct Point {
    TimePoint time{};
    Duration duration{};
    double g_per_kwh{};
  };
  explicit SeriesIntensitySource(std::string source_name, JsonSourceOptions options = {})
      : source_(std::move(source_name)), options_(options) {}

  // Accepts, auto-detected:
  //  - Carbon Aware SDK: [{"location","time","rating","duration"}, ...]
  //    (duration "HH:MM:SS" or a number of minutes; rating g/kWh);
  //  - Electricity Maps latest: {"zone","carbonIntensity","datetime",...};
  //  - Electricity Maps history/forecast: {"zone","history":[...]} or
  //    {"zone","forecast":[...]}; a top-level list of such objects.
  // kInvalidArgument naming the element and field on a malformed document.
  static Result<std::unique_ptr<SeriesIntensitySource>> Parse(std::string_view json_text,
                                                              std::string source_name,
                                                              JsonSourceOptions options = {});
  static Result<std::unique_ptr<SeriesIntensitySource>> LoadFile(const std::filesystem::path& file,
                                                                 JsonSourceOptions options = {});

  void AddPoint(std::string zone, Point p);
  // The latest point of `zone`, or nullopt.
  std::optional<Point> LastPoint(std::string_view zone) const;
  std::string_view Name() const override { return "series"; }
  Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override;
  Result<std::vector<IntensityReading>> Forecast(std::string_view zone, TimePoint from,
                                                 Duration horizon) const override;
  std::vector<std::string> Zones() const override;

 private:
  IntensityReading Reading(const std::string& zone, const Point& p) const;
  std::string source_{};
  JsonSourceOptions options_{};
  std::map<std::string, std::vector<Point>, std::less<>> points_{};  // sorted by time
};

// ---- integration ---------------------------------------------------------------------------

struct IntegratedEmissions {
  Emissions emissions{};             // sum over intervals of E_i [kWh] * I_i
  CarbonIntensity mean_intensity{};  // energy-weighted mean = emissions / E
  IntensityReading first{};          // the reading for the interval containing `start`
  int intervals = 0;                 // how many source intervals the span touched
};

// Carbon of `energy` spent uniformly over [start, start + duration) in
// `zone`: the span is split at the source's interval boundaries (hours for
// traces) and each part's energy is multiplied by that interval's intensity
// (ENERGY.md: a round spanning several hours integrates over them). A zero
// duration uses the intensity at `start`. Errors from the source pass through.
Result<IntegratedEmissions> IntegrateEmissions(const CarbonIntensitySource& source,
                                               std::string_view zone, TimePoint start,
                                               Duration duration, Energy energy);

// ---- helpers ---------------------------------------------------------------------------------

// "2022-01-01 00:00:00", "2022-01-01T00:00:00Z", "...+00:00", "...-05:00",
// fractional seconds; date-only "2022-01-01". kInvalidArgument otherwise.
Result<TimePoint> ParseUtcTimestamp(std::string_view text);
// WattTime MOER: lbs/MWh -> g/kWh (x 0.45359237).
constexpr CarbonIntensity FromLbsPerMwh(double lbs_per_mwh) {
  return CarbonIntensity::GramsPerKwh(lbs_per_mwh * 0.45359237);
}

// Registers "constant" (value_g_per_kwh), "trace" (dir, scope=direct|lifecycle,
// wrap), "json" (file, kind, scope) and "http" (url, auth_header,
// auth_token_env, timeout_s, refresh_s, kind; see http_carbon.h) for
// name-based creation, e.g. from TOML.
// The registry's factories return sources that own their data.
Status RegisterBuiltinCarbonSources(Registry<CarbonIntensitySource>& registry);

}  // namespace verdant::energy
