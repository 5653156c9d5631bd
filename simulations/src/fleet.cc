#include "verdant/simulations/fleet.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "verdant/energy/carbon.h"
#include "fleet_csv.h"

namespace verdant::sim {

namespace {

constexpr std::array<std::string_view, 9> kDeviceColumns = {
    "device_id", "profile", "zone", "battery_wh", "ms_per_sample", "up_kbps", "down_kbps", "embodied_kg",
    "num_examples"};
constexpr std::array<std::string_view, 4> kEventColumns = {"time", "device_id", "kind", "value"};

// Splits one line on ',' (no quoting: fields never contain commas) into
// `f`, whose capacity is reused from line to line.
void SplitFields(std::string_view line, std::vector<std::string_view>& f) {
  f.clear();
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      f.push_back(line.substr(start));
      return;
    }
    f.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
}
std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> f;
  SplitFields(line, f);
  return f;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Iterates the lines of `text` (LF or CRLF), numbering from 1.
class Lines {
 public:
  // `lines_before`: lines of the file before `text` (number() counts from it).
  explicit Lines(std::string_view text, size_t lines_before = 0) : text_(text), number_(lines_before) {}
  bool Next(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    size_t nl = text_.find('\n', pos_);
    if (nl == std::string_view::npos) nl = text_.size();
    line = text_.substr(pos_, nl - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = nl + 1;
    ++number_;
    return true;
  }
  size_t number() const { return number_; }
  // Offset in the text of the next line.
  size_t position() const { return pos_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  size_t number_ = 0;
};

Status RowError(std::string_view file, size_t line, std::string_view field, const std::string& what) {
  std::string msg = std::string(file) + ":" + std::to_string(line) + ": ";
  if (!field.empty()) msg += "field '" + std::string(field) + "': ";
  return InvalidArgumentError(msg + what);
}

// The header's column positions for `wanted` (missing: error naming it).
template <size_t N>
Result<std::array<size_t, N>> MapHeader(std::string_view header, const std::array<std::string_view, N>& wanted,
                                        std::string_view file) {
  auto cols = SplitFields(header);
  std::array<size_t, N> pos{};
  for (size_t i = 0; i < N; ++i) {
    auto it = std::find_if(cols.begin(), cols.end(), [&](std::string_view c) { return Trim(c) == wanted[i]; });
    if (it == cols.end()) {
      std::string all;
      for (auto w : wanted) all += (all.empty() ? "" : ",") + std::string(w);
      return RowError(file, 1, "", "missing column '" + std::string(wanted[i]) + "' (expected header: " + all + ")");
    }
    pos[i] = static_cast<size_t>(it - cols.begin());
  }
  return pos;
}

Result<double> ParseNumber(std::string_view s, std::string_view file, size_t line, std::string_view field) {
  s = Trim(s);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || !std::isfinite(v)) {
    return RowError(file, line, field, "'" + std::string(s) + "' is not a number");
  }
  return v;
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

// One read into a string of the file's size (events.csv of a 10^6-device
// week is ~12 GB: no second copy through a stringstream).
Result<std::string> ReadWhole(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + p.string());
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  if (ec) return NotFoundError("cannot read " + p.string() + ": " + ec.message());
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(text.size()))) {
    return DataLossError("reading " + p.string() + " failed");
  }
  return text;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

}  // namespace

std::string_view EventKindName(EventKind k) {
  switch (k) {
    case EventKind::kAvailable: return "available";
    case EventKind::kUnavailable: return "unavailable";
    case EventKind::kChargingOn: return "charging_on";
    case EventKind::kChargingOff: return "charging_off";
    case EventKind::kBattery: return "battery";
    case EventKind::kNetwork: return "network";
    case EventKind::kIdle: return "idle";
    case EventKind::kBusy: return "busy";
  }
  return "?";
}

Result<Fleet> ParseDevicesCsv(std::string_view text, std::string_view name) {
  Lines lines(text);
  std::string_view line;
  if (!lines.Next(line)) return RowError(name, 1, "", "empty file (expected a header line)");
  VERDANT_ASSIGN_OR_RETURN(auto col, MapHeader(line, kDeviceColumns, name));
  const size_t needed = *std::max_element(col.begin(), col.end()) + 1;
  Fleet fleet;
  while (lines.Next(line)) {
    const size_t ln = lines.number();
    if (Trim(line).empty()) continue;
    auto f = SplitFields(line);
    if (f.size() < needed) {
      return RowError(name, ln, kDeviceColumns[0],
                      "row has " + std::to_string(f.size()) + " fields, the header " + std::to_string(needed));
    }
    Device d;
    d.id = std::string(Trim(f[col[0]]));
    if (!ValidId(d.id)) {
      return RowError(name, ln, "device_id", "'" + d.id + "' is not a valid id (1-64 of A-Z a-z 0-9 - _ .)");
    }
    d.profile = std::string(Trim(f[col[1]]));
    if (d.profile.empty()) return RowError(name, ln, "profile", "empty");
    d.zone = std::string(Trim(f[col[2]]));
    if (!ValidId(d.zone)) return RowError(name, ln, "zone", "'" + d.zone + "' is not a valid zone id");
    struct Num {
      size_t c;
      double* out;
      bool positive;  // > 0, else >= 0
    };
    double examples = 0;
    const Num nums[] = {{3, &d.battery_wh, false}, {4, &d.ms_per_sample, true}, {5, &d.up_kbps, true},
                        {6, &d.down_kbps, true},   {7, &d.embodied_kg, false}, {8, &examples, true}};
    for (const auto& n : nums) {
      const std::string_view field = kDeviceColumns[n.c];
      VERDANT_ASSIGN_OR_RETURN(*n.out, ParseNumber(f[col[n.c]], name, ln, field));
      if (n.positive ? !(*n.out > 0) : !(*n.out >= 0)) {
        return RowError(name, ln, field, Fixed(*n.out, 6) + (n.positive ? " must be > 0" : " must be >= 0"));
      }
    }
    if (examples != std::floor(examples) || examples > 1e12) {
      return RowError(name, ln, "num_examples", "'" + std::string(Trim(f[col[8]])) + "' is not a whole number");
    }
    d.num_examples = static_cast<uint64_t>(examples);
    const auto idx = static_cast<uint32_t>(fleet.devices.size());
    if (!fleet.index.emplace(d.id, idx).second) {
      return RowError(name, ln, "device_id", "duplicate device '" + d.id + "'");
    }
    fleet.devices.push_back(std::move(d));
  }
  return fleet;
}

namespace {

// The event rows in `rows` (whole lines, `lines_before` lines of the file
// before them) appended to `out`; the first bad row's error.
Status ParseEventRows(std::string_view rows, size_t lines_before, const std::array<size_t, 4>& col, size_t needed,
                      const Fleet& fleet, std::string_view name, FleetEvent* out, size_t& count) {
  Lines lines(rows, lines_before);
  std::string_view line;
  count = 0;
  // Rows of one time come together in a sorted file: parse each time once.
  std::string_view last_ts;
  TimePoint last_time{};
  std::vector<std::string_view> f;
  while (lines.Next(line)) {
    const size_t ln = lines.number();
    if (Trim(line).empty()) continue;
    SplitFields(line, f);
    if (f.size() < needed) {
      return RowError(name, ln, kEventColumns[0],
                      "row has " + std::to_string(f.size()) + " fields, the header " + std::to_string(needed));
    }
    FleetEvent e;
    const std::string_view ts = Trim(f[col[0]]);
    if (ts.empty() || ts != last_ts) {
      auto t = energy::ParseUtcTimestamp(ts);
      if (!t.ok()) return RowError(name, ln, "time", "'" + std::string(ts) + "' is not an ISO 8601 UTC time");
      last_ts = ts;
      last_time = *t;
    }
    e.time = last_time;
    const std::string_view id = Trim(f[col[1]]);
    auto it = fleet.index.find(id);
    if (it == fleet.index.end()) {
      return RowError(name, ln, "device_id", "unknown device '" + std::string(id) + "' (not in devices.csv)");
    }
    e.device = it->second;
    const std::string_view kind = Trim(f[col[2]]);
    const std::string_view value = Trim(f[col[3]]);
    static constexpr EventKind kKinds[] = {EventKind::kAvailable,  EventKind::kUnavailable, EventKind::kChargingOn,
                                           EventKind::kChargingOff, EventKind::kBattery,     EventKind::kNetwork,
                                           EventKind::kIdle,        EventKind::kBusy};
    bool found = false;
    for (EventKind k : kKinds) {
      if (EventKindName(k) == kind) {
        e.kind = k;
        found = true;
      }
    }
    if (!found) {
      return RowError(name, ln, "kind",
                      "'" + std::string(kind) +
                          "' is not one of available, unavailable, charging_on, charging_off, battery, network, "
                          "idle, busy");
    }
    if (e.kind == EventKind::kBattery) {
      VERDANT_ASSIGN_OR_RETURN(double v, ParseNumber(value, name, ln, "value"));
      if (!(v >= 0 && v <= 100)) return RowError(name, ln, "value", "battery level " + Fixed(v, 3) + " outside 0..100");
      e.battery_percent = static_cast<float>(v);
    } else if (e.kind == EventKind::kNetwork) {
      if (value == "wifi") e.network = Network::kWifi;
      else if (value == "cellular") e.network = Network::kCellular;
      else return RowError(name, ln, "value", "network '" + std::string(value) + "' is not wifi or cellular");
    } else if (!value.empty()) {
      return RowError(name, ln, "value", "'" + std::string(kind) + "' takes no value, got '" + std::string(value) + "'");
    }
    out[count++] = e;
  }
  return OkStatus();
}

}  // namespace

Status ParseEventsCsv(std::string_view text, Fleet& fleet, std::string_view name, size_t threads) {
  Lines lines(text);
  std::string_view line;
  if (!lines.Next(line)) return RowError(name, 1, "", "empty file (expected a header line)");
  VERDANT_ASSIGN_OR_RETURN(auto col, MapHeader(line, kEventColumns, name));
  const size_t needed = *std::max_element(col.begin(), col.end()) + 1;
  const std::string_view body = text.substr(std::min(lines.position(), text.size()));  // the rows
  // Large files are parsed in parts, one thread each: the rows are
  // independent (each part caches its own last time) and the part
  // boundaries fall on line ends. Part k's lines are numbered after the
  // lines of the parts before it, and the first bad row in file order is
  // the one reported.
  if (threads == 0) {
    threads = body.size() < (size_t{16} << 20) ? 1 : std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 4);
  }
  std::vector<std::string_view> parts;
  for (size_t at = 0, k = 0; at < body.size(); ++k) {
    size_t end = k + 1 >= threads ? body.size() : std::min(body.size(), at + body.size() / threads);
    if (end < body.size()) {
      const size_t nl = body.find('\n', end);
      end = nl == std::string_view::npos ? body.size() : nl + 1;
    }
    parts.push_back(body.substr(at, end - at));
    at = end;
  }
  // Lines per part (for numbering and for the events' slots: a part has at
  // most one event per line, counting a last line without '\n').
  std::vector<size_t> slot(parts.size() + 1, 0), count(parts.size(), 0);
  for (size_t k = 0; k < parts.size(); ++k) {
    slot[k + 1] = slot[k] + static_cast<size_t>(std::count(parts[k].begin(), parts[k].end(), '\n')) +
                  (parts[k].empty() || parts[k].back() == '\n' ? 0 : 1);
  }
  std::vector<FleetEvent> events(slot.back());
  std::vector<Status> status(parts.size());
  // Part k's first slot is also the number of lines before it in the rows.
  auto parse = [&](size_t k) {
    status[k] = ParseEventRows(parts[k], lines.number() + slot[k], col, needed, fleet, name, events.data() + slot[k],
                               count[k]);
  };
  {
    std::vector<std::thread> workers;
    for (size_t k = 1; k < parts.size(); ++k) workers.emplace_back(parse, k);
    if (!parts.empty()) parse(0);
    for (auto& w : workers) w.join();
  }
  for (const auto& st : status) VERDANT_RETURN_IF_ERROR(st);
  // Close the gaps left by blank lines, in place.
  size_t n = 0;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (n != slot[k]) std::move(events.begin() + static_cast<std::ptrdiff_t>(slot[k]),
                                events.begin() + static_cast<std::ptrdiff_t>(slot[k] + count[k]),
                                events.begin() + static_cast<std::ptrdiff_t>(n));
    n += count[k];
  }
  events.resize(n);
  auto by_time = [](const FleetEvent& a, const FleetEvent& b) { return a.time < b.time; };
  // Files written sorted (by WriteFleet and the generator) skip the sort.
  if (!std::is_sorted(events.begin(), events.end(), by_time)) std::stable_sort(events.begin(), events.end(), by_time);
  fleet.events = std::move(events);
  return OkStatus();
}

Result<Fleet> LoadFleet(const std::filesystem::path& dir) {
  VERDANT_ASSIGN_OR_RETURN(std::string devices, ReadWhole(dir / "devices.csv"));
  VERDANT_ASSIGN_OR_RETURN(std::string events, ReadWhole(dir / "events.csv"));
  VERDANT_ASSIGN_OR_RETURN(Fleet fleet, ParseDevicesCsv(devices, (dir / "devices.csv").string()));
  if (fleet.devices.empty()) return InvalidArgumentError((dir / "devices.csv").string() + ": no devices");
  VERDANT_RETURN_IF_ERROR(ParseEventsCsv(events, fleet, (dir / "events.csv").string()));
  return fleet;
}

namespace {

template <size_t N>
std::string HeaderLine(const std::array<std::string_view, N>& columns) {
  std::string header;
  for (auto c : columns) {
    if (!header.empty()) header += ',';
    header += c;
  }
  return header += '\n';
}

}  // namespace

std::string DevicesCsvHeader() { return HeaderLine(kDeviceColumns); }
std::string EventsCsvHeader() { return HeaderLine(kEventColumns); }

namespace {

// As "%.*f" (std::to_chars gives printf's digits), without the locale and
// format-string parsing of snprintf.
template <typename T>
void AppendFixed(std::string& out, T v, int digits) {
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, digits);
  if (ec != std::errc()) {
    out += Fixed(static_cast<double>(v), digits);
    return;
  }
  out.append(buf, p);
}

}  // namespace

void AppendDeviceRow(std::string& out, const Device& d) {
  out += d.id;
  out += ',';
  out += d.profile;
  out += ',';
  out += d.zone;
  out += ',';
  AppendFixed(out, d.battery_wh, 2);
  out += ',';
  AppendFixed(out, d.ms_per_sample, 4);
  out += ',';
  AppendFixed(out, d.up_kbps, 1);
  out += ',';
  AppendFixed(out, d.down_kbps, 1);
  out += ',';
  AppendFixed(out, d.embodied_kg, 1);
  out += ',';
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), d.num_examples);
  out.append(buf, p);
  out += '\n';
}

void AppendEventRow(std::string& out, std::string_view time, std::string_view device_id, EventKind kind,
                    float battery, Network network) {
  out += time;
  out += ',';
  out += device_id;
  out += ',';
  out += EventKindName(kind);
  out += ',';
  // The float itself, as the previous writer printed it (Fixed(float, 1)).
  if (kind == EventKind::kBattery) AppendFixed(out, static_cast<double>(battery), 1);
  if (kind == EventKind::kNetwork) out += network == Network::kWifi ? "wifi" : "cellular";
  out += '\n';
}

Result<CsvWriter> CsvWriter::Open(const std::filesystem::path& path) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (!f) return UnavailableError("cannot write " + path.string() + ": " + std::strerror(errno));
  return CsvWriter(std::move(f), path);
}

Status CsvWriter::Flush() {
  if (!buffer_.empty() && std::fwrite(buffer_.data(), 1, buffer_.size(), file_.get()) != buffer_.size()) {
    return UnavailableError("writing " + path_.string() + " failed: " + std::strerror(errno));
  }
  buffer_.clear();
  return OkStatus();
}

Status CsvWriter::Close() {
  VERDANT_RETURN_IF_ERROR(Flush());
  if (std::fclose(file_.release()) != 0) {
    return UnavailableError("writing " + path_.string() + " failed: " + std::strerror(errno));
  }
  return OkStatus();
}

Status WriteFleet(const Fleet& fleet, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  {
    VERDANT_ASSIGN_OR_RETURN(auto out, CsvWriter::Open(dir / "devices.csv"));
    out.buffer() += DevicesCsvHeader();
    for (const auto& d : fleet.devices) {
      AppendDeviceRow(out.buffer(), d);
      VERDANT_RETURN_IF_ERROR(out.FlushIfFull());
    }
    VERDANT_RETURN_IF_ERROR(out.Close());
  }
  VERDANT_ASSIGN_OR_RETURN(auto out, CsvWriter::Open(dir / "events.csv"));
  out.buffer() += EventsCsvHeader();
  // Events come sorted by time: format each time once.
  std::string time;
  TimePoint last{};
  for (size_t i = 0; i < fleet.events.size(); ++i) {
    const FleetEvent& e = fleet.events[i];
    if (i == 0 || e.time != last) {
      time = FormatUtc(e.time);
      last = e.time;
    }
    AppendEventRow(out.buffer(), time, fleet.devices.at(e.device).id, e.kind, e.battery_percent, e.network);
    VERDANT_RETURN_IF_ERROR(out.FlushIfFull());
  }
  return out.Close();
}

}  // namespace verdant::sim
