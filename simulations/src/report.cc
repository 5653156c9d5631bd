#include "verdant/simulations/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace verdant::sim {

namespace {

// ---- reading the run's files ------------------------------------------------------

// One CSV line, with RFC 4180 quoting.
std::vector<std::string> CsvLine(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(std::move(cur));
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(std::move(cur));
  return out;
}

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::string file;
  Result<size_t> Col(const std::string& name) const {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return i;
    }
    return DataLossError(file + ": no column '" + name + "'");
  }
};

Result<Table> ReadTable(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return NotFoundError("cannot read " + p.string());
  Table t;
  t.file = p.string();
  std::string line;
  if (!std::getline(in, line)) return DataLossError(p.string() + ": empty");
  t.header = CsvLine(line);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    t.rows.push_back(CsvLine(line));
    if (t.rows.back().size() < t.header.size()) {
      return DataLossError(p.string() + ":" + std::to_string(t.rows.size() + 1) + ": too few fields");
    }
  }
  return t;
}

double Num(const std::string& s) {
  if (s.empty()) return 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return std::isfinite(v) ? v : 0;
}

struct RunData {
  RunTotals totals;
  std::vector<std::pair<double, double>> cumulative_g;  // virtual hours, gCO2e
  std::vector<std::pair<double, double>> accuracy;      // virtual hours, accuracy
  std::map<std::string, std::pair<double, uint64_t>> zone_intensity;  // zone -> (sum, n)
  std::map<std::string, uint64_t> participation;                       // device -> client-rounds
  double op_compute_g = 0, op_radio_g = 0, op_idle_g = 0;
  TimePoint start{}, end{};
};

Result<RunData> ReadRun(const ReportRun& run) {
  RunData d;
  d.totals.label = run.label;
  TimePoint start{};
  {
    std::ifstream in(run.dir / "summary.json");
    if (!in) return NotFoundError("cannot read " + (run.dir / "summary.json").string());
    try {
      auto j = nlohmann::json::parse(in);
      if (j.contains("simulation") && j["simulation"].contains("start_utc")) {
        VERDANT_ASSIGN_OR_RETURN(start, energy::ParseUtcTimestamp(j["simulation"]["start_utc"].get<std::string>()));
      }
    } catch (const std::exception& e) {
      return DataLossError((run.dir / "summary.json").string() + ": " + e.what());
    }
  }
  d.start = start;
  VERDANT_ASSIGN_OR_RETURN(Table rounds, ReadTable(run.dir / "rounds.csv"));
  VERDANT_ASSIGN_OR_RETURN(Table sim, ReadTable(run.dir / "simulation.csv"));
  VERDANT_ASSIGN_OR_RETURN(Table clients, ReadTable(run.dir / "clients.csv"));
  VERDANT_ASSIGN_OR_RETURN(size_t r_em, rounds.Col("emissions_g"));
  VERDANT_ASSIGN_OR_RETURN(size_t r_emb, rounds.Col("embodied_g"));
  VERDANT_ASSIGN_OR_RETURN(size_t r_acc, rounds.Col("accuracy"));
  VERDANT_ASSIGN_OR_RETURN(size_t s_start, sim.Col("virtual_start_utc"));
  VERDANT_ASSIGN_OR_RETURN(size_t s_secs, sim.Col("virtual_seconds"));
  double cum = 0;
  d.end = start;
  for (size_t i = 0; i < rounds.rows.size() && i < sim.rows.size(); ++i) {
    const auto& r = rounds.rows[i];
    VERDANT_ASSIGN_OR_RETURN(TimePoint t, energy::ParseUtcTimestamp(sim.rows[i][s_start]));
    const double hours = (std::chrono::duration<double>(t - start).count() + Num(sim.rows[i][s_secs])) / 3600.0;
    d.end = std::max(d.end, t + std::chrono::duration_cast<Duration>(std::chrono::duration<double>(Num(sim.rows[i][s_secs]))));
    cum += Num(r[r_em]) + Num(r[r_emb]);
    d.cumulative_g.emplace_back(hours, cum);
    if (!r[r_acc].empty()) {
      d.accuracy.emplace_back(hours, Num(r[r_acc]));
      d.totals.final_accuracy = Num(r[r_acc]);
    }
    d.totals.virtual_hours = hours;
  }
  d.totals.rounds = rounds.rows.size();
  VERDANT_ASSIGN_OR_RETURN(size_t c_id, clients.Col("client_id"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_st, clients.Col("status"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_zone, clients.Col("zone"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_cj, clients.Col("compute_joules"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_rj, clients.Col("radio_joules"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_ij, clients.Col("idle_joules"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_ci, clients.Col("intensity_g_per_kwh"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_em, clients.Col("emissions_g"));
  VERDANT_ASSIGN_OR_RETURN(size_t c_emb, clients.Col("embodied_g"));
  double ci_sum = 0;
  for (const auto& c : clients.rows) {
    RunTotals& t = d.totals;
    ++t.client_rounds;
    (c[c_st] == "completed" ? t.completed : t.failed)++;
    const double cj = Num(c[c_cj]), rj = Num(c[c_rj]), ij = Num(c[c_ij]), ci = Num(c[c_ci]);
    t.compute_j += cj;
    t.radio_j += rj;
    t.idle_j += ij;
    t.operational_g += Num(c[c_em]);
    t.embodied_g += Num(c[c_emb]);
    d.op_compute_g += cj / 3.6e6 * ci;
    d.op_radio_g += rj / 3.6e6 * ci;
    d.op_idle_g += ij / 3.6e6 * ci;
    ci_sum += ci;
    auto& z = d.zone_intensity[c[c_zone]];
    z.first += ci;
    ++z.second;
    ++d.participation[c[c_id]];
  }
  d.totals.mean_intensity = d.totals.client_rounds ? ci_sum / static_cast<double>(d.totals.client_rounds) : 0;
  d.totals.devices_used = d.participation.size();
  return d;
}

// ---- SVG ---------------------------------------------------------------------------

const char* const kColors[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"};

std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string F(double v, int digits = 1) {
  char b[64];
  std::snprintf(b, sizeof(b), "%.*f", digits, v);
  return b;
}

// A readable number for an axis tick.
std::string Tick(double v) {
  const double a = std::fabs(v);
  if (a >= 1e6) return F(v / 1e6, 1) + "M";
  if (a >= 1e4) return F(v / 1e3, 0) + "k";
  if (a >= 100) return F(v, 0);
  if (a >= 1) return F(v, 1);
  if (a == 0) return "0";
  return F(v, 3);
}

constexpr double kW = 680, kH = 320, kL = 70, kR = 150, kT = 30, kB = 45;

std::string Frame(const std::string& title, const std::string& xlabel, const std::string& ylabel, double ymax,
                  double xmin, double xmax, bool xticks) {
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kW << "' height='" << kH << "' font-family='sans-serif' "
    << "font-size='11'>\n<text x='" << kL << "' y='18' font-size='13' font-weight='bold'>" << Esc(title) << "</text>\n";
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  s << "<rect x='" << kL << "' y='" << kT << "' width='" << pw << "' height='" << ph
    << "' fill='none' stroke='#999'/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = kT + ph - ph * i / 4.0;
    s << "<line x1='" << kL << "' x2='" << kL + pw << "' y1='" << F(y) << "' y2='" << F(y)
      << "' stroke='#eee'/><text x='" << kL - 5 << "' y='" << F(y + 4) << "' text-anchor='end'>" << Tick(ymax * i / 4.0)
      << "</text>\n";
    if (xticks) {
      const double x = kL + pw * i / 4.0;
      s << "<text x='" << F(x) << "' y='" << F(kT + ph + 15) << "' text-anchor='middle'>"
        << Tick(xmin + (xmax - xmin) * i / 4.0) << "</text>\n";
    }
  }
  s << "<text x='" << F(kL + pw / 2) << "' y='" << F(kH - 8) << "' text-anchor='middle'>" << Esc(xlabel) << "</text>\n";
  s << "<text x='14' y='" << F(kT + ph / 2) << "' text-anchor='middle' transform='rotate(-90 14 " << F(kT + ph / 2)
    << ")'>" << Esc(ylabel) << "</text>\n";
  return s.str();
}

std::string Legend(const std::vector<std::string>& names) {
  std::ostringstream s;
  for (size_t i = 0; i < names.size(); ++i) {
    const double y = kT + 10 + 16.0 * static_cast<double>(i);
    s << "<rect x='" << kW - kR + 10 << "' y='" << F(y - 9) << "' width='10' height='10' fill='" << kColors[i % 8]
      << "'/><text x='" << kW - kR + 25 << "' y='" << F(y) << "'>" << Esc(names[i]) << "</text>\n";
  }
  return s.str();
}

struct Series {
  std::string label;
  std::vector<std::pair<double, double>> pts;
};

std::string LineChart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                      const std::vector<Series>& series) {
  double xmax = 0, ymax = 0;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.pts) {
      xmax = std::max(xmax, x);
      ymax = std::max(ymax, y);
    }
  }
  if (xmax <= 0) xmax = 1;
  if (ymax <= 0) ymax = 1;
  ymax *= 1.05;
  std::string out = Frame(title, xlabel, ylabel, ymax, 0, xmax, true);
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  std::vector<std::string> names;
  for (size_t i = 0; i < series.size(); ++i) {
    names.push_back(series[i].label);
    std::ostringstream p;
    p << "<polyline fill='none' stroke-width='1.8' stroke='" << kColors[i % 8] << "' points='";
    for (const auto& [x, y] : series[i].pts) p << F(kL + pw * x / xmax) << "," << F(kT + ph - ph * y / ymax) << " ";
    p << "'/>\n";
    out += p.str();
  }
  return out + Legend(names) + "</svg>\n";
}

// Bars: one group per `groups` entry, one bar per series in it (stacked:
// one bar per group with the series stacked).
std::string BarChart(const std::string& title, const std::string& ylabel, const std::vector<std::string>& groups,
                     const std::vector<std::string>& series, const std::vector<std::vector<double>>& v, bool stacked) {
  double ymax = 0;
  for (const auto& g : v) {
    double sum = 0;
    for (double x : g) {
      sum += x;
      ymax = std::max(ymax, x);
    }
    if (stacked) ymax = std::max(ymax, sum);
  }
  if (ymax <= 0) ymax = 1;
  ymax *= 1.05;
  std::string out = Frame(title, "", ylabel, ymax, 0, 0, false);
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  const double gw = pw / static_cast<double>(std::max<size_t>(1, groups.size()));
  std::ostringstream s;
  for (size_t g = 0; g < groups.size(); ++g) {
    const double gx = kL + gw * static_cast<double>(g);
    s << "<text x='" << F(gx + gw / 2) << "' y='" << F(kT + ph + 15) << "' text-anchor='middle'>" << Esc(groups[g])
      << "</text>\n";
    double base = 0;
    for (size_t k = 0; k < series.size() && k < v[g].size(); ++k) {
      const double h = ph * v[g][k] / ymax;
      double x, w, y;
      if (stacked) {
        w = gw * 0.6;
        x = gx + gw * 0.2;
        y = kT + ph - ph * base / ymax - h;
        base += v[g][k];
      } else {
        w = gw * 0.8 / static_cast<double>(series.size());
        x = gx + gw * 0.1 + w * static_cast<double>(k);
        y = kT + ph - h;
      }
      s << "<rect x='" << F(x) << "' y='" << F(y) << "' width='" << F(w) << "' height='" << F(h) << "' fill='"
        << kColors[k % 8] << "'><title>" << Esc(groups[g] + " / " + series[k] + ": " + Tick(v[g][k])) << "</title></rect>\n";
    }
  }
  return out + s.str() + Legend(series) + "</svg>\n";
}

}  // namespace

Result<RunTotals> ReadRunTotals(const ReportRun& run) {
  VERDANT_ASSIGN_OR_RETURN(RunData d, ReadRun(run));
  return d.totals;
}

Status WriteComparisonCsv(const std::vector<RunTotals>& totals, const std::filesystem::path& file) {
  std::ofstream out(file, std::ios::trunc);
  if (!out) return UnavailableError("cannot write " + file.string());
  out << "policy,rounds,client_rounds,completed,failed,devices_used,compute_kj,radio_kj,idle_kj,operational_g,"
         "embodied_g,total_g,mean_intensity_g_per_kwh,virtual_hours,final_accuracy\n";
  for (const auto& t : totals) {
    out << t.label << ',' << t.rounds << ',' << t.client_rounds << ',' << t.completed << ',' << t.failed << ','
        << t.devices_used << ',' << F(t.compute_j / 1e3, 3) << ',' << F(t.radio_j / 1e3, 3) << ','
        << F(t.idle_j / 1e3, 3) << ',' << F(t.operational_g, 4) << ',' << F(t.embodied_g, 4) << ','
        << F(t.operational_g + t.embodied_g, 4) << ',' << F(t.mean_intensity, 1) << ',' << F(t.virtual_hours, 3) << ','
        << (t.final_accuracy >= 0 ? F(t.final_accuracy, 4) : std::string()) << '\n';
  }
  if (!out.flush()) return UnavailableError("writing " + file.string() + " failed");
  return OkStatus();
}

Status WriteHtmlReport(const std::vector<ReportRun>& runs, const energy::CarbonIntensitySource* intensity,
                       const std::filesystem::path& file) {
  std::vector<RunData> data;
  for (const auto& r : runs) {
    VERDANT_ASSIGN_OR_RETURN(RunData d, ReadRun(r));
    data.push_back(std::move(d));
  }
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Verdant simulation report</title>\n"
       "<style>body{font-family:sans-serif;max-width:1000px;margin:20px auto;color:#222}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f4f4f4}td:first-child{text-align:left}svg{display:block;margin:12px 0}</style>\n"
       "</head><body>\n<h1>Verdant simulation report</h1>\n";
  h << "<p>Energy and carbon as the coordinator's ledger accounted them (model-based, per device profile); "
       "virtual time from the simulator. gCO2e = operational (grid intensity of each device's zone at virtual time) "
       "+ embodied (SCI share of the device's manufacturing emissions).</p>\n";
  h << "<h2>Totals</h2>\n<table><tr><th>policy</th><th>rounds</th><th>client-rounds</th><th>completed</th>"
       "<th>failed</th><th>devices used</th><th>energy kJ</th><th>operational gCO2e</th><th>embodied gCO2e</th>"
       "<th>total gCO2e</th><th>mean intensity gCO2e/kWh</th><th>virtual hours</th><th>final accuracy</th></tr>\n";
  for (const auto& d : data) {
    const auto& t = d.totals;
    h << "<tr><td>" << Esc(t.label) << "</td><td>" << t.rounds << "</td><td>" << t.client_rounds << "</td><td>"
      << t.completed << "</td><td>" << t.failed << "</td><td>" << t.devices_used << "</td><td>"
      << F((t.compute_j + t.radio_j + t.idle_j) / 1e3, 2) << "</td><td>" << F(t.operational_g, 3) << "</td><td>"
      << F(t.embodied_g, 3) << "</td><td>" << F(t.operational_g + t.embodied_g, 3) << "</td><td>"
      << F(t.mean_intensity, 1) << "</td><td>" << F(t.virtual_hours, 2) << "</td><td>"
      << (t.final_accuracy >= 0 ? F(t.final_accuracy, 4) : std::string("-")) << "</td></tr>\n";
  }
  h << "</table>\n";
  std::vector<Series> cum, acc;
  for (const auto& d : data) {
    cum.push_back({d.totals.label, d.cumulative_g});
    if (!d.accuracy.empty()) acc.push_back({d.totals.label, d.accuracy});
  }
  h << "<h2>Carbon and accuracy over virtual time</h2>\n";
  h << LineChart("Cumulative gCO2e (operational + embodied)", "virtual hours since the start", "gCO2e", cum);
  if (!acc.empty()) {
    h << LineChart("Accuracy (centralised evaluation)", "virtual hours since the start", "accuracy", acc);
  } else {
    h << "<p>No accuracy: energy-only runs do not train (use --train).</p>\n";
  }
  {
    std::vector<std::string> groups;
    std::vector<std::vector<double>> v;
    for (const auto& d : data) {
      groups.push_back(d.totals.label);
      v.push_back({d.op_compute_g, d.op_radio_g, d.op_idle_g, d.totals.embodied_g});
    }
    h << "<h2>Where the carbon comes from</h2>\n";
    h << BarChart("gCO2e by component", "gCO2e", groups, {"compute", "radio", "idle", "embodied"}, v, true);
  }
  {
    std::set<std::string> zones;
    for (const auto& d : data) {
      for (const auto& [z, s] : d.zone_intensity) zones.insert(z);
    }
    std::vector<std::string> groups(zones.begin(), zones.end());
    std::vector<std::string> series;
    for (const auto& d : data) series.push_back(d.totals.label + " (at selection)");
    const bool with_avg = intensity != nullptr && !data.empty();
    if (with_avg) series.push_back("zone average");
    std::vector<std::vector<double>> v;
    for (const auto& z : groups) {
      std::vector<double> row;
      for (const auto& d : data) {
        auto it = d.zone_intensity.find(z);
        row.push_back(it == d.zone_intensity.end() || it->second.second == 0
                          ? 0.0
                          : it->second.first / static_cast<double>(it->second.second));
      }
      if (with_avg) {
        // The zone's mean over the hours the runs span.
        TimePoint from = data.front().start, to = data.front().end;
        for (const auto& d : data) {
          from = std::min(from, d.start);
          to = std::max(to, d.end);
        }
        double sum = 0;
        int n = 0;
        for (TimePoint t = from; t <= to; t += std::chrono::hours(1)) {
          auto r = intensity->IntensityAt(z, t);
          if (r.ok()) {
            sum += r->value.grams_per_kwh();
            ++n;
          }
        }
        row.push_back(n ? sum / n : 0.0);
      }
      v.push_back(std::move(row));
    }
    h << "<h2>Grid intensity at selection against each zone's average</h2>\n";
    h << BarChart("Mean gCO2e/kWh of the client-rounds, by zone", "gCO2e/kWh", groups, series, v, false);
  }
  {
    std::vector<Series> part;
    for (const auto& d : data) {
      std::vector<uint64_t> counts;
      for (const auto& [id, n] : d.participation) counts.push_back(n);
      std::sort(counts.rbegin(), counts.rend());
      Series s{d.totals.label, {}};
      for (size_t i = 0; i < counts.size(); ++i) s.pts.emplace_back(static_cast<double>(i + 1), static_cast<double>(counts[i]));
      part.push_back(std::move(s));
    }
    h << "<h2>Participation per device</h2>\n";
    h << LineChart("Client-rounds per device (devices ranked, most used first)", "device rank", "client-rounds", part);
  }
  h << "</body></html>\n";
  std::ofstream out(file, std::ios::trunc);
  if (!out) return UnavailableError("cannot write " + file.string());
  out << h.str();
  if (!out.flush()) return UnavailableError("writing " + file.string() + " failed");
  return OkStatus();
}

}  // namespace verdant::sim
