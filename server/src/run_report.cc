#include "verdant/server/run_report.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iomanip>
#include <sstream>

namespace verdant {

namespace {

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

}  // namespace

Result<std::unique_ptr<RunReport>> RunReport::Open(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create output folder " + dir.string() + ": " + ec.message());
  std::unique_ptr<RunReport> r(new RunReport());
  r->dir_ = dir;
  r->rounds_.open(dir / "rounds.csv", std::ios::trunc);
  r->clients_.open(dir / "clients.csv", std::ios::trunc);
  if (!r->rounds_ || !r->clients_) return UnavailableError("cannot write into " + dir.string());
  r->rounds_ << "round,selected,completed,failed,accuracy,loss,bytes_up,bytes_down,wall_seconds,"
                "train_loss,eval_seconds,started_utc,model_updated,energy_joules,emissions_g,embodied_g,"
                "deferred_seconds,metrics\n";
  r->clients_ << "round,client_id,status,zone,time_utc,compute_joules,radio_joules,idle_joules,bytes_up,"
                 "bytes_down,intensity_g_per_kwh,emissions_g,embodied_g,energy_method,num_examples,train_loss,"
                 "train_seconds,codec,reason,intensity_source\n";
  r->rounds_.flush();
  r->clients_.flush();
  return r;
}

Status RunReport::AddRound(const RoundRecord& r, const std::vector<ClientRoundRecord>& clients) {
  rounds_ << r.round << ',' << r.selected << ',' << r.completed << ',' << r.failed << ','
          << (r.accuracy ? Num(*r.accuracy) : "") << ',' << (r.loss ? Num(*r.loss) : "") << ','
          << r.bytes_up << ',' << r.bytes_down << ',' << Num(r.wall_seconds) << ','
          << Num(r.train_loss) << ',' << Num(r.eval_seconds) << ',' << r.started_utc << ','
          << (r.model_updated ? 1 : 0) << ',' << Num(r.energy_joules) << ',' << Num(r.emissions_g) << ','
          << Num(r.embodied_g) << ',' << Num(r.deferred_seconds) << ',';
  bool first = true;
  for (const auto& [k, v] : r.metrics) {
    rounds_ << (first ? "" : " ") << k << '=' << Num(v);
    first = false;
  }
  rounds_ << '\n';
  rounds_.flush();
  for (const auto& c : clients) {
    clients_ << c.round << ',' << CsvField(c.client_id) << ',' << c.status << ',' << CsvField(c.zone) << ','
             << c.time_utc << ',' << Num(c.compute_joules) << ',' << Num(c.radio_joules) << ','
             << Num(c.idle_joules) << ',' << c.bytes_up << ',' << c.bytes_down << ','
             << Num(c.intensity_g_per_kwh) << ',' << Num(c.emissions_g) << ',' << Num(c.embodied_g) << ','
             << CsvField(c.energy_method) << ',' << c.num_examples << ',' << Num(c.train_loss) << ','
             << Num(c.train_seconds) << ',' << CsvField(c.codec) << ',' << CsvField(c.reason) << ','
             << CsvField(c.intensity_source) << '\n';
  }
  clients_.flush();
  if (!rounds_ || !clients_) return UnavailableError("write to " + dir_.string() + " failed");
  return OkStatus();
}

Status RunReport::WriteSummary(const RunSummary& s) {
  nlohmann::ordered_json j;
  j["final_accuracy"] = s.final_accuracy;
  j["final_loss"] = s.final_loss;
  j["rounds_completed"] = s.rounds_completed;
  j["bytes_up"] = s.bytes_up;
  j["bytes_down"] = s.bytes_down;
  j["wall_seconds"] = s.wall_seconds;
  for (const auto& [k, v] : s.numbers) j[k] = v;
  for (const auto& [k, v] : s.strings) j[k] = v;
  auto tmp = dir_ / "summary.json.tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << j.dump(2) << '\n';
    if (!f) return UnavailableError("cannot write " + tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, dir_ / "summary.json", ec);
  if (ec) return UnavailableError("cannot write summary.json: " + ec.message());
  return OkStatus();
}

}  // namespace verdant
