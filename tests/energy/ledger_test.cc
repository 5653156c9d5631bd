// Ledger: per client-round records, integration over trace hours, totals,
// SCI per round / client update / accuracy point, and the CSV/JSON outputs.
#include "verdant/energy/ledger.h"

#include <doctest/doctest.h>

#include <sstream>

#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::energy;
using doctest::Approx;
using std::chrono::hours;
using std::chrono::minutes;

namespace {

TimePoint At(const char* s) { return *ParseUtcTimestamp(s); }

std::unique_ptr<TraceIntensitySource> FourHourTrace() {
  auto src = std::make_unique<TraceIntensitySource>();
  HourlyTrace tr;
  tr.zone = "Z";
  tr.source = "eia:Z.csv";
  tr.start = At("2022-01-01T00:00:00Z");
  tr.g_per_kwh = {100, 200, 300, 400};
  REQUIRE(src->Add(tr).ok());
  return src;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

size_t Fields(const std::string& line) {
  return static_cast<size_t>(std::count(line.begin(), line.end(), ',')) + 1;
}

}  // namespace

TEST_CASE("Ledger records client rounds, integrates intensity and computes SCI") {
  auto src = FourHourTrace();
  Ledger ledger;
  // Round 1, c1: 7200 J (0.002 kWh) over 2 h from 00:30:
  //   0.0005 kWh * 100 + 0.001 kWh * 200 + 0.0005 kWh * 300 = 0.05 + 0.2 + 0.15 = 0.4 g;
  //   mean intensity 200 g/kWh; time_utc = the trace hour containing start, 00:00.
  ClientRoundInput a{.round = 1,
                     .client_id = "c1",
                     .zone = "Z",
                     .start = At("2022-01-01T00:30:00Z"),
                     .duration = hours(2),
                     .compute = Energy::Joules(5000),
                     .radio = Energy::Joules(1200),
                     .idle = Energy::Joules(1000),
                     .embodied = Emissions::Grams(0.1),
                     .bytes_up = Bytes{1000},
                     .bytes_down = Bytes{2000},
                     .energy_method = "model:phone-midrange",
                     .codec = "int8",
                     .samples = 600};
  auto ra = ledger.AddClientRound(a, *src);
  REQUIRE_MESSAGE(ra.ok(), ra.status().ToString());
  CHECK(ra->emissions.grams() == Approx(0.4));
  CHECK(ra->intensity.grams_per_kwh() == Approx(200));
  CHECK(FormatUtc(ra->time_utc) == "2022-01-01T00:00:00Z");
  CHECK(ra->intensity_source == "eia:Z.csv");
  // Round 1, c2: 3600 J (0.001 kWh) at 03:00 for 10 min at 400 g/kWh = 0.4 g.
  ClientRoundInput b{.round = 1,
                     .client_id = "c2",
                     .zone = "Z",
                     .start = At("2022-01-01T03:00:00Z"),
                     .duration = minutes(10),
                     .compute = Energy::Joules(3600),
                     .embodied = Emissions::Grams(0.1),
                     .energy_method = "rapl:package-0"};
  REQUIRE(ledger.AddClientRound(b, *src).ok());
  // Round 2, c1 in 2023: wraps (8760 h mod 4 h = 0) to 01:00 -> 200 g/kWh;
  //   1800 J (0.0005 kWh) -> 0.1 g; trace time reported is the 2022 hour.
  ClientRoundInput c{.round = 2,
                     .client_id = "c1",
                     .zone = "Z",
                     .start = At("2023-01-01T01:15:00Z"),
                     .compute = Energy::Joules(1800),
                     .embodied = Emissions::Grams(0.1),
                     .energy_method = "model:phone-midrange"};
  auto rc = ledger.AddClientRound(c, *src);
  REQUIRE(rc.ok());
  CHECK(rc->emissions.grams() == Approx(0.1));
  CHECK(FormatUtc(rc->time_utc) == "2022-01-01T01:00:00Z");
  REQUIRE(ledger.SetRoundAccuracy(1, 0.6).ok());
  REQUIRE(ledger.SetRoundAccuracy(2, 0.8).ok());
  CHECK(ledger.SetRoundAccuracy(3, 1.5).code() == StatusCode::kInvalidArgument);

  RoundTotals r1 = ledger.Round(1);
  CHECK(r1.clients == 2);
  CHECK(r1.energy().joules() == Approx(7200 + 3600));
  CHECK(r1.emissions.grams() == Approx(0.8));
  CHECK(r1.embodied.grams() == Approx(0.2));
  CHECK(r1.sci().grams() == Approx(1.0));
  CHECK(*r1.accuracy == 0.6);
  CHECK(FormatUtc(r1.end) == "2022-01-01T03:10:00Z");
  CHECK(ledger.Rounds().size() == 2);

  RunTotals t = ledger.Totals();
  CHECK(t.rounds == 2);
  CHECK(t.client_rounds == 3);
  CHECK(t.energy().joules() == Approx(7200 + 3600 + 1800));
  // Operational 0.4 + 0.4 + 0.1 = 0.9 g; embodied 0.3 g; SCI total 1.2 g.
  CHECK(t.emissions.grams() == Approx(0.9));
  CHECK(t.embodied.grams() == Approx(0.3));
  CHECK(t.sci_per_round.grams() == Approx(0.6));              // 1.2 / 2 rounds
  CHECK(t.sci_per_client_update.grams() == Approx(0.4));      // 1.2 / 3 updates
  CHECK(t.sci_per_accuracy_point->grams() == Approx(0.015));  // 1.2 / 80 points
  CHECK(*t.final_accuracy == 0.8);

  auto j = ledger.SummaryJson();
  CHECK(j["energy_joules"].get<double>() == Approx(12600));
  CHECK(j["emissions_g"].get<double>() == Approx(0.9));
  CHECK(j["embodied_g"].get<double>() == Approx(0.3));
  CHECK(j["sci_g_per_round"].get<double>() == Approx(0.6));
  CHECK(j["sci_g_per_accuracy_point"].get<double>() == Approx(0.015));
  CHECK(j["energy_methods"]["model:phone-midrange"].get<int>() == 2);
  CHECK(j["intensity_kind"] == "average");

  testing::TempDir dir;
  REQUIRE(ledger.WriteClientsCsv(dir.path() / "clients.csv").ok());
  auto lines = Lines(testing::ReadFile(dir.path() / "clients.csv"));
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].rfind("round,client_id,zone,time_utc,compute_joules,radio_joules,idle_joules,"
                       "bytes_up,bytes_down,"
                       "intensity_g_per_kwh,emissions_g,embodied_g,energy_method",
                       0) == 0);
  CHECK(lines[1].rfind("1,c1,Z,2022-01-01T00:00:00Z,5000,1200,1000,1000,2000,200,0.4,0.1,model:"
                       "phone-midrange,7200,",
                       0) == 0);
  for (const auto& l : lines) CHECK(Fields(l) == ClientsCsvColumns().size());

  REQUIRE(ledger.WriteEmissionsCsv(dir.path() / "emissions.csv", {.run_id = "run-1"}).ok());
  auto em = Lines(testing::ReadFile(dir.path() / "emissions.csv"));
  REQUIRE(em.size() == 3);  // header + 2 rounds
  CHECK(em[0].rfind(
            "timestamp,project_name,run_id,duration,emissions,emissions_rate,cpu_power,gpu_power,"
            "ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,country_name",
            0) == 0);
  for (const auto& l : em) CHECK(Fields(l) == EmissionsCsvColumns().size());
  // Round 1: ends 03:10, spans 00:30..03:10 = 9600 s; 0.8 g = 0.0008 kg;
  // energy_consumed = 10800 J = 0.003 kWh.
  CHECK(em[1].rfind("2022-01-01T03:10:00,verdant,run-1,9600,0.0008,", 0) == 0);
  CHECK(em[1].find(",0.003,") != std::string::npos);
  REQUIRE(ledger.WriteEmissionsCsv(dir.path() / "run.csv", {.per_round = false}).ok());
  CHECK(Lines(testing::ReadFile(dir.path() / "run.csv")).size() == 2);
  CHECK(ledger.WriteClientsCsv(dir.path() / "no" / "such" / "dir.csv").code() ==
        StatusCode::kUnavailable);
}

TEST_CASE("Ledger intensity fallbacks and validation") {
  auto src = FourHourTrace();
  ClientRoundInput in{.round = 1,
                      .client_id = "c",
                      .zone = "ELSEWHERE",
                      .start = At("2022-01-01T00:00:00Z"),
                      .compute = Energy::Joules(3.6e6)};
  Ledger strict;
  auto err = strict.AddClientRound(in, *src);
  CHECK(err.status().code() == StatusCode::kNotFound);
  CHECK(err.status().message().find("client c round 1") != std::string::npos);

  // Client-reported intensity fills in: 1 kWh * 120 = 120 g.
  in.reported_intensity = CarbonIntensity::GramsPerKwh(120);
  auto rep = strict.AddClientRound(in, *src);
  REQUIRE(rep.ok());
  CHECK(rep->emissions.grams() == Approx(120));
  CHECK(rep->intensity_source == "client-reported");

  Ledger fallback(LedgerOptions{.fallback_intensity = CarbonIntensity::GramsPerKwh(475)});
  in.reported_intensity.reset();
  CHECK(fallback.AddClientRound(in, *src)->emissions.grams() == Approx(475));

  Ledger prefer(LedgerOptions{.prefer_client_intensity = true});
  ClientRoundInput known{.round = 1,
                         .client_id = "c",
                         .zone = "Z",
                         .start = At("2022-01-01T00:00:00Z"),
                         .compute = Energy::Joules(3.6e6),
                         .reported_intensity = CarbonIntensity::GramsPerKwh(50)};
  CHECK(prefer.AddClientRound(known, *src)->emissions.grams() ==
        Approx(50));  // not the trace's 100
  CHECK(strict.AddClientRound(known, *src)->emissions.grams() ==
        Approx(100));  // trace wins by default

  ClientRoundInput neg{.round = 1, .client_id = "c", .zone = "Z", .compute = Energy::Joules(-1)};
  CHECK(strict.AddClientRound(neg, *src).status().code() == StatusCode::kInvalidArgument);
  ClientRoundRecord noid;
  CHECK(strict.Add(noid).code() == StatusCode::kInvalidArgument);
  ClientRoundRecord marginal;
  marginal.client_id = "m";
  marginal.intensity_kind = IntensityKind::kMarginal;
  CHECK(strict.Add(marginal).code() == StatusCode::kInvalidArgument);  // mixes with average
  Ledger empty;
  CHECK(empty.Totals().rounds == 0);
  CHECK(empty.SummaryJson()["sci_g_per_accuracy_point"].is_null());
}
