#include "verdant/energy/carbon.h"

#include "verdant/energy/http_carbon.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>

#include "sysfs_util.h"

namespace verdant::energy {

namespace fs = std::filesystem;
using internal::ParseDouble;
using internal::SplitCsvLine;
using internal::Trim;
using std::chrono::hours;

std::string_view IntensityKindName(IntensityKind k) {
  return k == IntensityKind::kMarginal ? "marginal" : "average";
}

std::string_view EmissionScopeName(EmissionScope s) {
  switch (s) {
    case EmissionScope::kDirect:
      return "direct";
    case EmissionScope::kLifecycle:
      return "lifecycle";
    case EmissionScope::kUnspecified:
      break;
  }
  return "unspecified";
}

// ---- time helpers -------------------------------------------------------------------

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Floor division of durations.
int64_t FloorDiv(Duration a, Duration b) {
  int64_t q = a.count() / b.count();
  if ((a.count() % b.count() != 0) && ((a.count() < 0) != (b.count() < 0))) --q;
  return q;
}

Duration FloorMod(Duration a, Duration b) { return a - b * FloorDiv(a, b); }

std::string KnownZones(const std::vector<std::string>& zones) {
  std::string s;
  for (const auto& z : zones) s += (s.empty() ? "" : ", ") + z;
  return s.empty() ? "none" : s;
}

// Start, in query time, of the source interval containing t.
TimePoint IntervalStartInQueryTime(TimePoint t, const IntensityReading& r) {
  if (r.interval.count() <= 0) return t;
  return t - FloorMod(t - r.trace_time, r.interval);
}

}  // namespace

Result<TimePoint> ParseUtcTimestamp(std::string_view text) {
  std::string_view s = Trim(text);
  auto bad = [&]() {
    return InvalidArgumentError("cannot parse time '" + std::string(text) + "'");
  };
  int y, mo, d, h = 0, mi = 0, se = 0;
  if (!Digits(s, 0, 4, &y) || s.size() < 10 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d)) {
    return bad();
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return bad();
  size_t pos = 10;
  int64_t micros = 0;
  int64_t offset_s = 0;
  if (pos < s.size()) {
    if (s[pos] != ' ' && s[pos] != 'T' && s[pos] != 't') return bad();
    ++pos;
    if (!Digits(s, pos, 2, &h) || pos + 2 >= s.size() || s[pos + 2] != ':' ||
        !Digits(s, pos + 3, 2, &mi)) {
      return bad();
    }
    pos += 5;
    if (pos < s.size() && s[pos] == ':') {
      if (!Digits(s, pos + 1, 2, &se)) return bad();
      pos += 3;
      if (pos < s.size() && s[pos] == '.') {
        ++pos;
        int64_t scale = 100000;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
          micros += (s[pos] - '0') * scale;
          scale /= 10;
          ++pos;
        }
      }
    }
    if (h > 23 || mi > 59 || se > 60) return bad();
    if (pos < s.size()) {
      if (s[pos] == 'Z' || s[pos] == 'z') {
        ++pos;
      } else if (s[pos] == '+' || s[pos] == '-') {
        int oh, om = 0;
        int sign = s[pos] == '-' ? -1 : 1;
        if (!Digits(s, pos + 1, 2, &oh)) return bad();
        pos += 3;
        if (pos < s.size() && s[pos] == ':') ++pos;
        if (pos < s.size()) {
          if (!Digits(s, pos, 2, &om)) return bad();
          pos += 2;
        }
        offset_s = sign * (oh * 3600 + om * 60);
      }
    }
    if (pos != s.size()) return bad();
  }
  int64_t secs = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
                 h * 3600 + mi * 60 + se - offset_s;
  return TimePoint(Duration(secs * 1'000'000 + micros));
}

// ---- default Forecast ------------------------------------------------------------------

Result<std::vector<IntensityReading>> CarbonIntensitySource::Forecast(std::string_view zone,
                                                                      TimePoint from,
                                                                      Duration horizon) const {
  std::vector<IntensityReading> out;
  TimePoint end = from + horizon;
  TimePoint t = from;
  constexpr size_t kMaxPoints = 1'000'000;
  do {
    VERDANT_ASSIGN_OR_RETURN(IntensityReading r, IntensityAt(zone, t));
    Duration step = r.interval.count() > 0 ? r.interval : Duration(hours(1));
    t = IntervalStartInQueryTime(t, r) + step;
    out.push_back(std::move(r));
  } while (t < end && out.size() < kMaxPoints);
  return out;
}

// ---- constant ---------------------------------------------------------------------------

Result<IntensityReading> ConstantIntensitySource::IntensityAt(std::string_view zone,
                                                              TimePoint t) const {
  IntensityReading r;
  r.value = value_;
  r.zone = std::string(zone);
  r.source = source_;
  r.trace_time = t - FloorMod(t.time_since_epoch(), hours(1));
  r.interval = hours(1);
  r.kind = kind_;
  return r;
}

// ---- CSV traces -----------------------------------------------------------------------

namespace {

struct RawRow {
  size_t line;
  TimePoint time;
  std::optional<double> value;
};

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line =
        text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  return lines;
}

std::string_view StripBom(std::string_view s) {
  if (s.size() >= 3 && static_cast<unsigned char>(s[0]) == 0xEF &&
      static_cast<unsigned char>(s[1]) == 0xBB && static_cast<unsigned char>(s[2]) == 0xBF) {
    s.remove_prefix(3);
  }
  return s;
}

Result<std::string> ReadWholeFile(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLossError("read error in " + file.string());
  return ss.str();
}

std::string ZoneFromFileName(std::string_view name) {
  std::string base = fs::path(std::string(name)).filename().string();
  return base.substr(0, base.find('_'));
}

// Rows -> hourly series with gaps (blank values, missing hours) filled.
Result<HourlyTrace> BuildTrace(std::vector<RawRow> rows, std::string_view name) {
  if (rows.empty()) return DataLossError(std::string(name) + ": no data rows");
  const TimePoint start = rows.front().time;
  if (FloorMod(start.time_since_epoch(), hours(1)).count() != 0) {
    return DataLossError(std::string(name) + ":" + std::to_string(rows.front().line) +
                         ": first timestamp is not on the hour");
  }
  std::vector<std::optional<double>> vals;
  int64_t prev = -1;
  size_t prev_line = 0;
  for (const auto& r : rows) {
    Duration off = r.time - start;
    if (FloorMod(off, hours(1)).count() != 0) {
      return DataLossError(std::string(name) + ":" + std::to_string(r.line) +
                           ": field 'time': timestamp " + FormatUtc(r.time) +
                           " is not on the hour");
    }
    int64_t idx = FloorDiv(off, hours(1));
    if (idx <= prev) {
      return DataLossError(std::string(name) + ":" + std::to_string(r.line) +
                           ": field 'time': timestamp " + FormatUtc(r.time) +
                           " does not increase (line " + std::to_string(prev_line) +
                           " is later or equal)");
    }
    constexpr int64_t kMaxJumpHours = 31 * 24;  // longer holes are not "gaps" but bad data
    if (idx - prev > kMaxJumpHours) {
      return DataLossError(std::string(name) + ":" + std::to_string(r.line) +
                           ": field 'time': timestamp " + FormatUtc(r.time) + " jumps " +
                           std::to_string(idx - prev) + " hours ahead");
    }
    vals.resize(static_cast<size_t>(idx) + 1);  // missing hours stay nullopt
    vals[static_cast<size_t>(idx)] = r.value;
    prev = idx;
    prev_line = r.line;
  }
  HourlyTrace tr;
  tr.start = start;
  tr.g_per_kwh.resize(vals.size());
  tr.filled.assign(vals.size(), false);
  // Known indices.
  std::vector<size_t> known;
  for (size_t i = 0; i < vals.size(); ++i) {
    if (vals[i]) known.push_back(i);
  }
  if (known.empty()) return DataLossError(std::string(name) + ": every intensity value is blank");
  size_t k = 0;
  for (size_t i = 0; i < vals.size(); ++i) {
    if (vals[i]) {
      tr.g_per_kwh[i] = *vals[i];
      continue;
    }
    while (k + 1 < known.size() && known[k + 1] < i) ++k;
    size_t lo = known[k], hi = known[k];
    if (known[k] > i) {  // leading gap
      hi = lo = known.front();
    } else if (k + 1 < known.size()) {
      hi = known[k + 1];
    }
    double v;
    if (lo == hi || lo > i) {
      v = *vals[lo > i ? lo : hi];
    } else {
      double f = static_cast<double>(i - lo) / static_cast<double>(hi - lo);
      v = *vals[lo] + f * (*vals[hi] - *vals[lo]);
    }
    tr.g_per_kwh[i] = v;
    tr.filled[i] = true;
    ++tr.gaps_filled;
  }
  return tr;
}

Status FieldError(std::string_view name, size_t line, std::string_view field, std::string msg) {
  return DataLossError(std::string(name) + ":" + std::to_string(line) + ": field '" +
                       std::string(field) + "': " + msg);
}

// Parses rows given the time and value column indices.
Result<std::vector<RawRow>> ParseRows(const std::vector<std::string_view>& lines,
                                      std::string_view name, size_t time_col,
                                      std::string_view time_name, size_t value_col,
                                      std::string_view value_name, size_t n_header_fields) {
  std::vector<RawRow> rows;
  size_t need = std::max(time_col, value_col) + 1;
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t line_no = i + 1;
    if (Trim(lines[i]).empty()) continue;
    auto f = SplitCsvLine(lines[i]);
    if (f.size() < need) {
      return DataLossError(std::string(name) + ":" + std::to_string(line_no) + ": expected " +
                           std::to_string(n_header_fields) + " fields, got " +
                           std::to_string(f.size()));
    }
    auto t = ParseUtcTimestamp(f[time_col]);
    if (!t.ok()) return FieldError(name, line_no, time_name, t.status().message());
    RawRow row{line_no, *t, std::nullopt};
    std::string_view v = Trim(f[value_col]);
    if (!v.empty()) {
      double x;
      if (!ParseDouble(v, &x) || !std::isfinite(x)) {
        return FieldError(name, line_no, value_name, "'" + std::string(v) + "' is not a number");
      }
      if (x < 0)
        return FieldError(name, line_no, value_name, "negative intensity " + std::string(v));
      row.value = x;
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

Result<HourlyTrace> ParseEiaCsv(std::string_view text, std::string_view name, std::string zone) {
  auto lines = SplitLines(StripBom(text));
  if (lines.empty() || Trim(lines[0]).empty())
    return DataLossError(std::string(name) + ": empty file");
  auto header = SplitCsvLine(lines[0]);
  size_t time_col = 0, value_col = header.size();
  for (size_t i = 0; i < header.size(); ++i) {
    std::string h(Trim(header[i]));
    if (h == "timestamp") time_col = i;
    if (h == "avg_CI") value_col = i;
  }
  if (value_col == header.size()) {
    return InvalidArgumentError(std::string(name) + ":1: header has no 'avg_CI' column");
  }
  std::string time_name = header[time_col].empty() ? "(unnamed time column)" : header[time_col];
  VERDANT_ASSIGN_OR_RETURN(
      auto rows, ParseRows(lines, name, time_col, time_name, value_col, "avg_CI", header.size()));
  VERDANT_ASSIGN_OR_RETURN(HourlyTrace tr, BuildTrace(std::move(rows), name));
  std::string base = fs::path(std::string(name)).filename().string();
  tr.zone = zone.empty() ? ZoneFromFileName(name) : zone;
  tr.source = "eia:" + base;
  tr.kind = IntensityKind::kAverage;
  tr.scope = EmissionScope::kUnspecified;
  return tr;
}

Result<HourlyTrace> LoadEiaCsv(const fs::path& file, std::string zone) {
  VERDANT_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file));
  return ParseEiaCsv(text, file.string(), std::move(zone));
}

Result<HourlyTrace> ParseElectricityMapsCsv(std::string_view text, std::string_view name,
                                            EmissionScope scope) {
  if (scope == EmissionScope::kUnspecified) {
    return InvalidArgumentError(
        std::string(name) +
        ": choose the Electricity Maps column explicitly (direct or lifecycle)");
  }
  auto lines = SplitLines(StripBom(text));
  if (lines.empty() || Trim(lines[0]).empty())
    return DataLossError(std::string(name) + ": empty file");
  auto header = SplitCsvLine(lines[0]);
  size_t time_col = header.size(), value_col = header.size(), zone_col = header.size();
  const std::string want = scope == EmissionScope::kDirect ? "(direct)" : "(lca)";
  for (size_t i = 0; i < header.size(); ++i) {
    std::string h = internal::ToLower(Trim(header[i]));
    if (h.rfind("datetime", 0) == 0 && time_col == header.size()) time_col = i;
    if (h.rfind("carbon intensity", 0) == 0 && h.size() >= want.size() &&
        h.compare(h.size() - want.size(), want.size(), want) == 0) {
      value_col = i;
    }
    if (h == "zone id") zone_col = i;
  }
  if (time_col == header.size()) {
    return InvalidArgumentError(std::string(name) + ":1: header has no 'Datetime (UTC)' column");
  }
  if (value_col == header.size()) {
    return InvalidArgumentError(std::string(name) + ":1: header has no 'Carbon Intensity ... " +
                                (scope == EmissionScope::kDirect ? "(direct)" : "(LCA)") +
                                "' column");
  }
  VERDANT_ASSIGN_OR_RETURN(auto rows, ParseRows(lines, name, time_col, header[time_col], value_col,
                                                header[value_col], header.size()));
  std::string zone;
  if (zone_col != header.size()) {
    for (size_t i = 1; i < lines.size() && zone.empty(); ++i) {
      auto f = SplitCsvLine(lines[i]);
      if (zone_col < f.size()) zone = std::string(Trim(f[zone_col]));
    }
  }
  if (zone.empty()) zone = ZoneFromFileName(name);
  VERDANT_ASSIGN_OR_RETURN(HourlyTrace tr, BuildTrace(std::move(rows), name));
  tr.zone = zone;
  tr.source = std::string(scope == EmissionScope::kDirect ? "electricitymaps-direct:"
                                                          : "electricitymaps-lca:") +
              fs::path(std::string(name)).filename().string();
  tr.kind = IntensityKind::kAverage;
  tr.scope = scope;
  return tr;
}

Result<HourlyTrace> LoadElectricityMapsCsv(const fs::path& file, EmissionScope scope) {
  VERDANT_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file));
  return ParseElectricityMapsCsv(text, file.string(), scope);
}

// ---- TraceIntensitySource -----------------------------------------------------------

Result<std::unique_ptr<TraceIntensitySource>> TraceIntensitySource::LoadDirectory(
    const fs::path& dir, EmissionScope electricity_maps_scope, TraceOptions options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return NotFoundError("trace directory " + dir.string() + " not found");
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string n = it->path().filename().string();
    auto ends = [&](std::string_view suf) {
      return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends("_eia.csv") || ends("_electricitymaps.csv")) files.push_back(it->path());
  }
  if (ec) return UnavailableError("cannot list " + dir.string() + ": " + ec.message());
  if (files.empty()) {
    return NotFoundError("no *_eia.csv or *_electricitymaps.csv traces in " + dir.string());
  }
  std::sort(files.begin(), files.end());
  auto src = std::make_unique<TraceIntensitySource>(options);
  for (const auto& f : files) {
    std::string n = f.filename().string();
    Result<HourlyTrace> tr = n.find("_eia.csv") != std::string::npos
                                 ? LoadEiaCsv(f)
                                 : LoadElectricityMapsCsv(f, electricity_maps_scope);
    if (!tr.ok()) return tr.status();
    VERDANT_RETURN_IF_ERROR(src->Add(*std::move(tr)));
  }
  return src;
}

Status TraceIntensitySource::Add(HourlyTrace trace) {
  if (trace.g_per_kwh.empty())
    return InvalidArgumentError("trace for '" + trace.zone + "' is empty");
  if (trace.filled.size() != trace.g_per_kwh.size())
    trace.filled.resize(trace.g_per_kwh.size(), false);
  if (traces_.count(trace.zone)) {
    return Status(StatusCode::kAlreadyExists, "zone '" + trace.zone + "' has two traces (" +
                                                  traces_.find(trace.zone)->second.source + ", " +
                                                  trace.source + ")");
  }
  if (!traces_.empty() && traces_.begin()->second.kind != trace.kind) {
    return InvalidArgumentError("cannot mix average and marginal intensity in one source (" +
                                trace.source + ")");
  }
  std::string zone = trace.zone;
  traces_.emplace(std::move(zone), std::move(trace));
  return OkStatus();
}

const HourlyTrace* TraceIntensitySource::Trace(std::string_view zone) const {
  auto it = traces_.find(zone);
  return it == traces_.end() ? nullptr : &it->second;
}

std::vector<std::string> TraceIntensitySource::Zones() const {
  std::vector<std::string> z;
  for (const auto& [k, v] : traces_) z.push_back(k);
  return z;
}

Result<IntensityReading> TraceIntensitySource::At(const HourlyTrace& tr, int64_t idx) const {
  const int64_t n = static_cast<int64_t>(tr.g_per_kwh.size());
  if (idx < 0 || idx >= n) {
    if (!options_.wrap) {
      return OutOfRangeError("time outside the " + tr.zone + " trace (" + FormatUtc(tr.start) +
                             " + " + std::to_string(n) + " h) and wrapping is off");
    }
    idx = ((idx % n) + n) % n;
  }
  IntensityReading r;
  r.value = CarbonIntensity::GramsPerKwh(tr.g_per_kwh[static_cast<size_t>(idx)]);
  r.zone = tr.zone;
  r.source = tr.source;
  r.trace_time = tr.start + hours(idx);
  r.interval = hours(1);
  r.kind = tr.kind;
  r.scope = tr.scope;
  r.filled = tr.filled[static_cast<size_t>(idx)];
  return r;
}

Result<IntensityReading> TraceIntensitySource::IntensityAt(std::string_view zone,
                                                           TimePoint t) const {
  const HourlyTrace* tr = Trace(zone);
  if (tr == nullptr) {
    return NotFoundError("no carbon trace for zone '" + std::string(zone) +
                         "'; known: " + KnownZones(Zones()));
  }
  return At(*tr, FloorDiv(t - tr->start, hours(1)));
}

Result<std::vector<IntensityReading>> TraceIntensitySource::Forecast(std::string_view zone,
                                                                     TimePoint from,
                                                                     Duration horizon) const {
  const HourlyTrace* tr = Trace(zone);
  if (tr == nullptr) {
    return NotFoundError("no carbon trace for zone '" + std::string(zone) +
                         "'; known: " + KnownZones(Zones()));
  }
  int64_t first = FloorDiv(from - tr->start, hours(1));
  TimePoint first_start = tr->start + hours(first);
  Duration span = (from + horizon) - first_start;
  int64_t count = std::max<int64_t>(1, -FloorDiv(-span, hours(1)));  // ceil
  std::vector<IntensityReading> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    VERDANT_ASSIGN_OR_RETURN(IntensityReading r, At(*tr, first + i));
    out.push_back(std::move(r));
  }
  return out;
}

// ---- ForecastView ---------------------------------------------------------------------

Result<std::vector<IntensityReading>> ForecastView::Forecast(std::string_view zone, TimePoint from,
                                                             Duration horizon) const {
  VERDANT_ASSIGN_OR_RETURN(auto readings, truth_.Forecast(zone, from, horizon));
  if (options_.relative_error == 0 && options_.relative_error_per_hour == 0) return readings;
  if (readings.empty()) return readings;
  // Issue hour and target hours in query time (stable under trace wrapping).
  const TimePoint issue = IntervalStartInQueryTime(from, readings.front());
  const int64_t issue_h = FloorDiv(issue.time_since_epoch(), hours(1));
  uint64_t zone_hash = 1469598103934665603ull;  // FNV-1a
  for (char c : zone) zone_hash = (zone_hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  TimePoint target = issue;
  for (auto& r : readings) {
    const int64_t target_h = FloorDiv(target.time_since_epoch(), hours(1));
    const double lead_h = static_cast<double>(target_h - issue_h);
    const double sigma = options_.relative_error + options_.relative_error_per_hour * lead_h;
    uint64_t st = options_.seed;
    uint64_t mix = SplitMix64(st) ^ zone_hash;
    st = mix ^ static_cast<uint64_t>(target_h) * 0x9E3779B97F4A7C15ull;
    mix = SplitMix64(st);
    st = mix ^ static_cast<uint64_t>(issue_h) * 0xC2B2AE3D27D4EB4Full;
    Rng rng(SplitMix64(st));
    const double factor = std::max(0.0, 1.0 + sigma * rng.Normal());
    r.value = CarbonIntensity::GramsPerKwh(r.value.grams_per_kwh() * factor);
    r.source = "forecast(" + r.source + ")";
    target += r.interval.count() > 0 ? r.interval : Duration(hours(1));
  }
  return readings;
}

// ---- SeriesIntensitySource ------------------------------------------------------------

namespace {

using nlohmann::json;

Result<Duration> ParseJsonDuration(const json& d, const std::string& where) {
  if (d.is_number()) return Duration(static_cast<int64_t>(d.get<double>() * 60e6));  // minutes
  if (d.is_string()) {
    // TimeSpan "HH:MM:SS" or "d.HH:MM:SS".
    std::string s = d.get<std::string>();
    int64_t days = 0;
    std::string rest = s;
    auto dot = s.find('.');
    auto colon = s.find(':');
    if (dot != std::string::npos && colon != std::string::npos && dot < colon) {
      days = std::atoll(s.substr(0, dot).c_str());
      rest = s.substr(dot + 1);
    }
    int h, m, sec;
    if (std::sscanf(rest.c_str(), "%d:%d:%d", &h, &m, &sec) == 3) {
      return Duration((((days * 24 + h) * 60 + m) * 60 + sec) * 1'000'000LL);
    }
  }
  return InvalidArgumentError(where + ": field 'duration' must be \"HH:MM:SS\" or minutes");
}

}  // namespace

void SeriesIntensitySource::AddPoint(std::string zone, Point p) {
  auto& v = points_[zone];
  auto it = std::upper_bound(v.begin(), v.end(), p.time,
                             [](TimePoint t, const Point& q) { return t < q.time; });
  v.insert(it, p);
}

std::optional<SeriesIntensitySource::Point> SeriesIntensitySource::LastPoint(
    std::string_view zone) const {
  auto it = points_.find(zone);
  if (it == points_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

Result<std::unique_ptr<SeriesIntensitySource>> SeriesIntensitySource::Parse(
    std::string_view json_text, std::string source_name, JsonSourceOptions options) {
  json doc;
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const std::exception& e) {
    return InvalidArgumentError(source_name + ": invalid JSON: " + e.what());
  }
  auto src = std::make_unique<SeriesIntensitySource>(source_name, options);
  std::optional<EmissionScope> seen_scope;

  auto num = [&](const json& o, const char* key, const std::string& where) -> Result<double> {
    auto it = o.find(key);
    if (it == o.end() || !it->is_number()) {
      return InvalidArgumentError(where + ": field '" + key + "' missing or not a number");
    }
    double v = it->get<double>();
    if (!std::isfinite(v) || v < 0)
      return InvalidArgumentError(where + ": field '" + key + "' is negative");
    return v;
  };
  auto str = [&](const json& o, const char* key, const std::string& where) -> Result<std::string> {
    auto it = o.find(key);
    if (it == o.end() || !it->is_string()) {
      return InvalidArgumentError(where + ": field '" + key + "' missing or not a string");
    }
    return it->get<std::string>();
  };
  auto time = [&](const json& o, const char* key, const std::string& where) -> Result<TimePoint> {
    VERDANT_ASSIGN_OR_RETURN(std::string s, str(o, key, where));
    auto t = ParseUtcTimestamp(s);
    if (!t.ok())
      return InvalidArgumentError(where + ": field '" + key + "': " + t.status().message());
    return *t;
  };
  // One Electricity Maps point object (zone may come from the parent).
  auto em_point = [&](const json& o, const std::string& parent_zone,
                      const std::string& where) -> Status {
    if (!o.is_object()) return InvalidArgumentError(where + ": expected an object");
    std::string zone = parent_zone;
    if (auto z = o.find("zone"); z != o.end() && z->is_string()) zone = z->get<std::string>();
    if (zone.empty()) return InvalidArgumentError(where + ": field 'zone' missing");
    if (auto ci = o.find("carbonIntensity"); ci != o.end() && ci->is_null())
      return OkStatus();  // no data
    VERDANT_ASSIGN_OR_RETURN(double v, num(o, "carbonIntensity", where));
    VERDANT_ASSIGN_OR_RETURN(TimePoint t, time(o, "datetime", where));
    if (auto ft = o.find("emissionFactorType"); ft != o.end() && ft->is_string()) {
      EmissionScope s =
          ft->get<std::string>() == "direct" ? EmissionScope::kDirect : EmissionScope::kLifecycle;
      if (seen_scope && *seen_scope != s) {
        return InvalidArgumentError(where + ": mixes direct and lifecycle emission factors");
      }
      seen_scope = s;
    }
    src->AddPoint(zone, Point{t, options.default_interval, v});
    return OkStatus();
  };
  auto em_object = [&](const json& o, const std::string& where) -> Status {
    std::string zone;
    if (auto z = o.find("zone"); z != o.end() && z->is_string()) zone = z->get<std::string>();
    for (const char* list : {"history", "forecast", "data"}) {
      auto it = o.find(list);
      if (it == o.end()) continue;
      if (!it->is_array())
        return InvalidArgumentError(where + ": field '" + list + "' must be a list");
      for (size_t i = 0; i < it->size(); ++i) {
        VERDANT_RETURN_IF_ERROR(
            em_point((*it)[i], zone, where + "." + list + "[" + std::to_string(i) + "]"));
      }
      return OkStatus();
    }
    return em_point(o, zone, where);
  };
  auto ca_point = [&](const json& o, const std::string& where) -> Status {
    if (!o.is_object()) return InvalidArgumentError(where + ": expected an object");
    VERDANT_ASSIGN_OR_RETURN(std::string zone, str(o, "location", where));
    VERDANT_ASSIGN_OR_RETURN(TimePoint t, time(o, "time", where));
    VERDANT_ASSIGN_OR_RETURN(double v, num(o, "rating", where));
    Duration d = options.default_interval;
    if (auto it = o.find("duration"); it != o.end() && !it->is_null()) {
      VERDANT_ASSIGN_OR_RETURN(d, ParseJsonDuration(*it, where));
    }
    if (d.count() <= 0) d = options.default_interval;
    src->AddPoint(zone, Point{t, d, v});
    return OkStatus();
  };

  if (doc.is_array()) {
    for (size_t i = 0; i < doc.size(); ++i) {
      std::string where = source_name + "[" + std::to_string(i) + "]";
      const json& o = doc[i];
      if (o.is_object() && o.contains("location")) {
        VERDANT_RETURN_IF_ERROR(ca_point(o, where));
      } else if (o.is_object()) {
        VERDANT_RETURN_IF_ERROR(em_object(o, where));
      } else {
        return InvalidArgumentError(where + ": expected an object");
      }
    }
  } else if (doc.is_object()) {
    VERDANT_RETURN_IF_ERROR(em_object(doc, source_name));
  } else {
    return InvalidArgumentError(source_name + ": expected a JSON list or object");
  }
  if (seen_scope) src->options_.scope = *seen_scope;
  return src;
}

Result<std::unique_ptr<SeriesIntensitySource>> SeriesIntensitySource::LoadFile(
    const fs::path& file, JsonSourceOptions options) {
  VERDANT_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file));
  return Parse(text, file.string(), options);
}

IntensityReading SeriesIntensitySource::Reading(const std::string& zone, const Point& p) const {
  IntensityReading r;
  r.value = CarbonIntensity::GramsPerKwh(p.g_per_kwh);
  r.zone = zone;
  r.source = source_;
  r.trace_time = p.time;
  r.interval = p.duration;
  r.kind = options_.kind;
  r.scope = options_.scope;
  return r;
}

Result<IntensityReading> SeriesIntensitySource::IntensityAt(std::string_view zone,
                                                            TimePoint t) const {
  auto it = points_.find(zone);
  if (it == points_.end() || it->second.empty()) {
    return NotFoundError("no intensity data for zone '" + std::string(zone) + "' in " + source_ +
                         "; known: " + KnownZones(Zones()));
  }
  const auto& v = it->second;
  auto after = std::upper_bound(v.begin(), v.end(), t,
                                [](TimePoint x, const Point& q) { return x < q.time; });
  if (after == v.begin() || t >= std::prev(after)->time + std::prev(after)->duration) {
    return OutOfRangeError("no intensity for zone '" + std::string(zone) + "' at " + FormatUtc(t) +
                           " in " + source_ + " (data covers " + FormatUtc(v.front().time) +
                           " to " + FormatUtc(v.back().time + v.back().duration) + ")");
  }
  return Reading(it->first, *std::prev(after));
}

Result<std::vector<IntensityReading>> SeriesIntensitySource::Forecast(std::string_view zone,
                                                                      TimePoint from,
                                                                      Duration horizon) const {
  VERDANT_ASSIGN_OR_RETURN(IntensityReading first, IntensityAt(zone, from));
  std::vector<IntensityReading> out{first};
  const auto& v = points_.find(zone)->second;
  for (const auto& p : v) {
    if (p.time > first.trace_time && p.time < from + horizon) out.push_back(Reading(first.zone, p));
  }
  return out;
}

std::vector<std::string> SeriesIntensitySource::Zones() const {
  std::vector<std::string> z;
  for (const auto& [k, v] : points_) z.push_back(k);
  return z;
}

// ---- integration -------------------------------------------------------------------------

Result<IntegratedEmissions> IntegrateEmissions(const CarbonIntensitySource& source,
                                               std::string_view zone, TimePoint start,
                                               Duration duration, Energy energy) {
  if (duration.count() < 0) return InvalidArgumentError("negative duration");
  IntegratedEmissions out;
  VERDANT_ASSIGN_OR_RETURN(out.first, source.IntensityAt(zone, start));
  if (duration.count() == 0) {
    out.emissions = energy * out.first.value;
    out.mean_intensity = out.first.value;
    out.intervals = 1;
    return out;
  }
  const TimePoint end = start + duration;
  TimePoint t = start;
  IntensityReading r = out.first;
  double grams = 0;
  constexpr int kMaxIntervals = 1'000'000;
  while (true) {
    Duration step = r.interval.count() > 0 ? r.interval : Duration(hours(1));
    TimePoint next = IntervalStartInQueryTime(t, r) + step;
    TimePoint part_end = std::min(next, end);
    double frac = std::chrono::duration<double>(part_end - t).count() /
                  std::chrono::duration<double>(duration).count();
    grams += energy.kwh() * frac * r.value.grams_per_kwh();
    ++out.intervals;
    if (part_end >= end || out.intervals >= kMaxIntervals) break;
    t = part_end;
    VERDANT_ASSIGN_OR_RETURN(r, source.IntensityAt(zone, t));
  }
  out.emissions = Emissions::Grams(grams);
  out.mean_intensity =
      energy.kwh() > 0 ? CarbonIntensity::GramsPerKwh(grams / energy.kwh()) : out.first.value;
  return out;
}

// ---- registry -----------------------------------------------------------------------------

namespace {

Result<EmissionScope> ParseScope(const std::string& s) {
  if (s == "direct") return EmissionScope::kDirect;
  if (s == "lifecycle" || s == "lca") return EmissionScope::kLifecycle;
  if (s == "unspecified" || s.empty()) return EmissionScope::kUnspecified;
  return InvalidArgumentError("unknown emission scope '" + s + "' (direct, lifecycle)");
}

}  // namespace

Status RegisterBuiltinCarbonSources(Registry<CarbonIntensitySource>& registry) {
  using Ptr = std::unique_ptr<CarbonIntensitySource>;
  VERDANT_RETURN_IF_ERROR(registry.Register("constant", [](const OptionMap& o) -> Result<Ptr> {
    VERDANT_ASSIGN_OR_RETURN(
        double v,
        o.GetDouble("value_g_per_kwh", ConstantIntensitySource::kWorldAverageGramsPerKwh));
    VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("carbon source 'constant'"));
    if (!(v >= 0)) return InvalidArgumentError("value_g_per_kwh must be >= 0");
    return Ptr(std::make_unique<ConstantIntensitySource>(CarbonIntensity::GramsPerKwh(v)));
  }));
  VERDANT_RETURN_IF_ERROR(registry.Register("trace", [](const OptionMap& o) -> Result<Ptr> {
    VERDANT_ASSIGN_OR_RETURN(std::string dir, o.GetString("dir", "data/carbon"));
    VERDANT_ASSIGN_OR_RETURN(std::string scope_s, o.GetString("scope", ""));
    VERDANT_ASSIGN_OR_RETURN(bool wrap, o.GetBool("wrap", true));
    VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("carbon source 'trace'"));
    VERDANT_ASSIGN_OR_RETURN(EmissionScope scope, ParseScope(scope_s));
    if (scope == EmissionScope::kUnspecified) {
      return InvalidArgumentError(
          "carbon source 'trace': set scope = \"direct\" or \"lifecycle\" (Electricity Maps "
          "column)");
    }
    VERDANT_ASSIGN_OR_RETURN(auto src,
                             TraceIntensitySource::LoadDirectory(dir, scope, TraceOptions{wrap}));
    return Ptr(std::move(src));
  }));
  VERDANT_RETURN_IF_ERROR(registry.Register("http", [](const OptionMap& o) -> Result<Ptr> {
    HttpSourceOptions h;
    VERDANT_ASSIGN_OR_RETURN(h.url, o.GetString("url", ""));
    VERDANT_ASSIGN_OR_RETURN(std::string header, o.GetString("auth_header", "auth-token"));
    VERDANT_ASSIGN_OR_RETURN(std::string token_env, o.GetString("auth_token_env", ""));
    VERDANT_ASSIGN_OR_RETURN(double timeout_s, o.GetDouble("timeout_s", 5.0));
    VERDANT_ASSIGN_OR_RETURN(double refresh_s, o.GetDouble("refresh_s", 900.0));
    VERDANT_ASSIGN_OR_RETURN(std::string kind, o.GetString("kind", "average"));
    VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("carbon source 'http'"));
    if (h.url.empty()) return InvalidArgumentError("carbon source 'http' needs url=<http(s)://...>");
    if (!token_env.empty()) {
      const char* v = std::getenv(token_env.c_str());
      if (v == nullptr || *v == '\0') {
        return InvalidArgumentError("carbon source 'http': auth_token_env " + token_env + " is not set");
      }
      h.headers.emplace_back(header, v);
    }
    if (!(timeout_s > 0) || !(refresh_s > 0)) {
      return InvalidArgumentError("carbon source 'http': timeout_s and refresh_s must be > 0");
    }
    h.timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(timeout_s));
    h.refresh = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(refresh_s));
    if (kind == "marginal")
      h.json.kind = IntensityKind::kMarginal;
    else if (kind != "average")
      return InvalidArgumentError("kind must be average or marginal");
    VERDANT_ASSIGN_OR_RETURN(auto src, HttpIntensitySource::Create(std::move(h)));
    return Ptr(std::move(src));
  }));
  return registry.Register("json", [](const OptionMap& o) -> Result<Ptr> {
    VERDANT_ASSIGN_OR_RETURN(std::string file, o.GetString("file", ""));
    VERDANT_ASSIGN_OR_RETURN(std::string kind, o.GetString("kind", "average"));
    VERDANT_ASSIGN_OR_RETURN(std::string scope_s, o.GetString("scope", "unspecified"));
    VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("carbon source 'json'"));
    if (file.empty()) return InvalidArgumentError("carbon source 'json' needs file=<path>");
    JsonSourceOptions jo;
    if (kind == "marginal")
      jo.kind = IntensityKind::kMarginal;
    else if (kind != "average")
      return InvalidArgumentError("kind must be average or marginal");
    VERDANT_ASSIGN_OR_RETURN(jo.scope, ParseScope(scope_s));
    VERDANT_ASSIGN_OR_RETURN(auto src, SeriesIntensitySource::LoadFile(file, jo));
    return Ptr(std::move(src));
  });
}

}  // namespace verdant::energy
