// Carbon intensity sources: CSV trace parsing (both shipped formats, UTF-8
// header, BOM, gaps, WAAT's unnamed column, malformed rows), wrap-around,
// integration over hours, seeded forecast error, JSON shapes.
#include "verdant/energy/carbon.h"

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::energy;
using doctest::Approx;
using std::chrono::hours;
using std::chrono::minutes;

namespace {

// From the source tree's absolute path (a compile definition): __FILE__ is
// relative when ccache's base_dir rewrites paths, and tests run in build/tests.
std::filesystem::path ShippedCarbonDir() {
  return std::filesystem::path(VERDANT_SOURCE_DIR) / "data" / "carbon";
}

TimePoint At(const char* s) { return *ParseUtcTimestamp(s); }

}  // namespace

TEST_CASE("ParseUtcTimestamp accepts the trace and API formats") {
  CHECK(FormatUtc(At("2022-01-01 00:00:00+00:00")) == "2022-01-01T00:00:00Z");
  CHECK(FormatUtc(At("2022-03-13 07:00:00")) == "2022-03-13T07:00:00Z");
  CHECK(FormatUtc(At("2019-05-21T00:00:00.000Z")) == "2019-05-21T00:00:00Z");
  CHECK(FormatUtc(At("2022-06-01T12:00:00-05:00")) == "2022-06-01T17:00:00Z");
  CHECK(FormatUtc(At("2024-02-29")) == "2024-02-29T00:00:00Z");
  CHECK(At("2022-01-01T00:00:00Z").time_since_epoch().count() == 1640995200LL * 1000000);
  CHECK_FALSE(ParseUtcTimestamp("yesterday").ok());
  CHECK_FALSE(ParseUtcTimestamp("2022-13-01 00:00:00").ok());
  CHECK_FALSE(ParseUtcTimestamp("2022-01-01 00:00:00 junk").ok());
}

TEST_CASE("EIA CSV: unnamed time column, blank gap rows and missing hours are interpolated") {
  // WAAT-style header (empty time column name), no trailing newline.
  const std::string text =
      ",WND,avg_CI\n"
      "2022-01-01 00:00:00+00:00,1,100\n"
      "2022-01-01 01:00:00+00:00,,\n"   // blank gap row
      "2022-01-01 02:00:00+00:00,1,\n"  // blank intensity
      "2022-01-01 03:00:00+00:00,1,400\n"
      // 04:00 missing entirely
      "2022-01-01 05:00:00+00:00,1,600";
  auto tr = ParseEiaCsv(text, "US-TEST_2022_hourly_eia.csv");
  REQUIRE_MESSAGE(tr.ok(), tr.status().ToString());
  CHECK(tr->zone == "US-TEST");
  CHECK(tr->source == "eia:US-TEST_2022_hourly_eia.csv");
  REQUIRE(tr->g_per_kwh.size() == 6);
  // Linear between neighbours: 100 -> 400 over 3 h gives 200, 300; 400 -> 600 gives 500.
  CHECK(tr->g_per_kwh == std::vector<double>{100, 200, 300, 400, 500, 600});
  CHECK(tr->gaps_filled == 3);
  CHECK(tr->filled == std::vector<bool>{false, true, true, false, true, false});
  CHECK(tr->kind == IntensityKind::kAverage);

  // Leading and trailing gaps take the nearest value.
  auto edges = ParseEiaCsv(
      "timestamp,avg_CI\n2022-01-01 00:00:00+00:00,\n2022-01-01 01:00:00+00:00,50\n"
      "2022-01-01 02:00:00+00:00,\n",
      "E_x.csv");
  REQUIRE(edges.ok());
  CHECK(edges->g_per_kwh == std::vector<double>{50, 50, 50});
  CHECK(edges->gaps_filled == 2);
}

TEST_CASE("EIA CSV: malformed rows name file, line and field") {
  auto bad_number = ParseEiaCsv(
      "timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,1,100\n2022-01-01 01:00:00+00:00,1,abc\n",
      "bad.csv");
  REQUIRE_FALSE(bad_number.ok());
  CHECK(bad_number.status().code() == StatusCode::kDataLoss);
  CHECK(bad_number.status().message().find("bad.csv:3") != std::string::npos);
  CHECK(bad_number.status().message().find("avg_CI") != std::string::npos);
  CHECK(bad_number.status().message().find("abc") != std::string::npos);

  auto bad_time =
      ParseEiaCsv("timestamp,avg_CI\n2022-01-01 00:00:00+00:00,1\nnot-a-time,2\n", "t.csv");
  CHECK(bad_time.status().message().find("t.csv:3: field 'timestamp'") != std::string::npos);

  auto unnamed_time = ParseEiaCsv(",avg_CI\n2022-01-01 00:00:00+00:00,1\n2022-02-30x,2\n", "u.csv");
  CHECK(unnamed_time.status().message().find("u.csv:3") != std::string::npos);

  auto backwards = ParseEiaCsv(
      "timestamp,avg_CI\n2022-01-01 01:00:00+00:00,1\n2022-01-01 00:00:00+00:00,2\n", "b.csv");
  CHECK(backwards.status().code() == StatusCode::kDataLoss);
  CHECK(backwards.status().message().find("b.csv:3") != std::string::npos);

  auto short_row = ParseEiaCsv("timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,1\n", "s.csv");
  CHECK(short_row.status().message().find("s.csv:2") != std::string::npos);

  auto no_column = ParseEiaCsv("timestamp,WND\n2022-01-01 00:00:00+00:00,1\n", "n.csv");
  CHECK(no_column.status().code() == StatusCode::kInvalidArgument);
  CHECK(no_column.status().message().find("avg_CI") != std::string::npos);

  CHECK(ParseEiaCsv("timestamp,avg_CI\n2022-01-01 00:00:00+00:00,\n", "e.csv").status().code() ==
        StatusCode::kDataLoss);
  CHECK(LoadEiaCsv("/nonexistent/x.csv").status().code() == StatusCode::kNotFound);
}

TEST_CASE(
    "Electricity Maps CSV: UTF-8 subscript header, BOM, CRLF, direct vs LCA chosen explicitly") {
  const std::string header =
      "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO\xE2\x82\x82"
      "eq/kWh (direct),"
      "Carbon Intensity gCO\xE2\x82\x82"
      "eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
      "Data Source,Data Estimated,Data Estimation Method\r\n";
  const std::string body =
      "2022-01-01 00:00:00,Spain,Spain,ES,133.64,175.54,76.35,42.94,entsoe.eu,false,\r\n"
      "2022-01-01 01:00:00,Spain,Spain,ES,139.1,181.54,75.69,41.62,entsoe.eu,false,\r\n";
  const std::string bom = "\xEF\xBB\xBF";
  for (const std::string& text : {header + body, bom + header + body}) {
    auto direct =
        ParseElectricityMapsCsv(text, "ES_2022_hourly_electricitymaps.csv", EmissionScope::kDirect);
    REQUIRE_MESSAGE(direct.ok(), direct.status().ToString());
    CHECK(direct->zone == "ES");
    CHECK(direct->g_per_kwh == std::vector<double>{133.64, 139.1});
    CHECK(direct->scope == EmissionScope::kDirect);
    CHECK(direct->source == "electricitymaps-direct:ES_2022_hourly_electricitymaps.csv");
    auto lca = ParseElectricityMapsCsv(text, "ES.csv", EmissionScope::kLifecycle);
    REQUIRE(lca.ok());
    CHECK(lca->g_per_kwh == std::vector<double>{175.54, 181.54});
    CHECK(lca->scope == EmissionScope::kLifecycle);
  }
  // The caller must choose.
  CHECK(ParseElectricityMapsCsv(header + body, "ES.csv", EmissionScope::kUnspecified)
            .status()
            .code() == StatusCode::kInvalidArgument);
  auto bad = ParseElectricityMapsCsv(
      header + "2022-01-01 00:00:00,Spain,Spain,ES,oops,175.54,76.35,42.94,entsoe.eu,false,\r\n",
      "ES.csv", EmissionScope::kDirect);
  CHECK(bad.status().message().find("ES.csv:2") != std::string::npos);
  CHECK(bad.status().message().find("(direct)") != std::string::npos);
}

TEST_CASE("Shipped traces load: 12 zones, 8760 hours, documented gaps and means") {
  auto src = TraceIntensitySource::LoadDirectory(ShippedCarbonDir(), EmissionScope::kDirect);
  REQUIRE_MESSAGE(src.ok(), src.status().ToString());
  auto zones = (*src)->Zones();
  CHECK(zones.size() == 12);
  for (const auto& z : zones) {
    const HourlyTrace* tr = (*src)->Trace(z);
    REQUIRE(tr != nullptr);
    CHECK_MESSAGE(tr->g_per_kwh.size() == 8760, z);
    CHECK(FormatUtc(tr->start) == "2022-01-01T00:00:00Z");
  }
  // data/README.md: gap hours CISO 3, MISO 3, PJM 23; WAAT (unnamed column) loads.
  CHECK((*src)->Trace("US-CISO")->gaps_filled == 3);
  CHECK((*src)->Trace("US-MISO")->gaps_filled == 3);
  CHECK((*src)->Trace("US-PJM")->gaps_filled == 23);
  CHECK((*src)->Trace("US-WAAT")->gaps_filled == 0);
  auto mean = [&](const char* z) {
    const auto& v = (*src)->Trace(z)->g_per_kwh;
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  };
  // ENERGY.md statistics: CISO 256, ES (direct) 167, NO 13, AZPS 575 (rounded).
  CHECK(mean("US-CISO") == Approx(256).epsilon(0.01));
  CHECK(mean("ES") == Approx(167).epsilon(0.01));
  CHECK(mean("NO") == Approx(13).epsilon(0.05));
  CHECK(mean("US-AZPS") == Approx(575).epsilon(0.01));
  // First rows of the files.
  auto es = (*src)->IntensityAt("ES", At("2022-01-01T00:30:00Z"));
  REQUIRE(es.ok());
  CHECK(es->value.grams_per_kwh() == Approx(133.64));
  CHECK(es->scope == EmissionScope::kDirect);
  auto ciso = (*src)->IntensityAt("US-CISO", At("2022-01-01T01:59:59Z"));
  CHECK(ciso->value.grams_per_kwh() == Approx(260.9175830341113));
  // A filled gap hour is flagged.
  auto gap = (*src)->IntensityAt("US-CISO", At("2022-01-05T10:00:00Z"));
  CHECK(gap->filled);

  auto unknown = (*src)->IntensityAt("XX", At("2022-01-01T00:00:00Z"));
  CHECK(unknown.status().code() == StatusCode::kNotFound);
  CHECK(unknown.status().message().find("US-CISO") != std::string::npos);
}

TEST_CASE("Trace lookups use the hour containing t and wrap modulo the trace length") {
  TraceIntensitySource src;
  HourlyTrace tr;
  tr.zone = "Z";
  tr.source = "test";
  tr.start = At("2022-01-01T00:00:00Z");
  tr.g_per_kwh = {100, 200, 300, 400};
  REQUIRE(src.Add(tr).ok());
  CHECK(src.Add(tr).code() == StatusCode::kAlreadyExists);

  auto r = src.IntensityAt("Z", At("2022-01-01T02:59:00Z"));
  CHECK(r->value.grams_per_kwh() == 300);
  CHECK(FormatUtc(r->trace_time) == "2022-01-01T02:00:00Z");
  // 4 h later wraps to the same hour; 1 h before the start wraps to the last hour.
  CHECK(src.IntensityAt("Z", At("2022-01-01T06:10:00Z"))->value.grams_per_kwh() == 300);
  auto before = src.IntensityAt("Z", At("2021-12-31T23:30:00Z"));
  CHECK(before->value.grams_per_kwh() == 400);
  CHECK(FormatUtc(before->trace_time) == "2022-01-01T03:00:00Z");

  TraceIntensitySource strict(TraceOptions{.wrap = false});
  REQUIRE(strict.Add(tr).ok());
  CHECK(strict.IntensityAt("Z", At("2022-01-01T04:00:00Z")).status().code() ==
        StatusCode::kOutOfRange);

  // Forecast: one reading per hour from the hour containing `from`.
  auto f = src.Forecast("Z", At("2022-01-01T01:30:00Z"), hours(2));
  REQUIRE(f.ok());
  REQUIRE(f->size() == 3);  // hours 1, 2, 3 cover [01:30, 03:30)
  CHECK((*f)[0].value.grams_per_kwh() == 200);
  CHECK((*f)[2].value.grams_per_kwh() == 400);
  auto wrapped = src.Forecast("Z", At("2022-01-01T03:00:00Z"), hours(2));
  CHECK((*wrapped)[1].value.grams_per_kwh() == 100);

  // A shipped trace queried in 2025 maps onto 2022 (8760 h = 365 days keeps the hour of day).
  auto real = TraceIntensitySource::LoadDirectory(ShippedCarbonDir(), EmissionScope::kDirect);
  REQUIRE(real.ok());
  auto now = (*real)->IntensityAt("NO", At("2025-06-01T12:34:00Z"));
  REQUIRE(now.ok());
  CHECK(FormatUtc(now->trace_time).substr(11) == "12:00:00Z");
  CHECK(FormatUtc(now->trace_time).substr(0, 4) == "2022");
}

TEST_CASE("IntegrateEmissions splits energy over the hours a span covers") {
  TraceIntensitySource src;
  HourlyTrace tr;
  tr.zone = "Z";
  tr.source = "test";
  tr.start = At("2022-01-01T00:00:00Z");
  tr.g_per_kwh = {100, 200, 300, 400};
  REQUIRE(src.Add(tr).ok());
  // 1 kWh over 2 h from 00:30: 0.25 kWh at 100 + 0.5 kWh at 200 + 0.25 kWh at 300
  //   = 25 + 100 + 75 = 200 g; mean intensity 200 g/kWh; 3 hours touched.
  auto g =
      IntegrateEmissions(src, "Z", At("2022-01-01T00:30:00Z"), hours(2), Energy::KilowattHours(1));
  REQUIRE(g.ok());
  CHECK(g->emissions.grams() == Approx(200.0));
  CHECK(g->mean_intensity.grams_per_kwh() == Approx(200.0));
  CHECK(g->intervals == 3);
  CHECK(FormatUtc(g->first.trace_time) == "2022-01-01T00:00:00Z");
  // Within one hour: plain E * I. 7200 J = 0.002 kWh at 400 = 0.8 g.
  auto one =
      IntegrateEmissions(src, "Z", At("2022-01-01T03:10:00Z"), minutes(20), Energy::Joules(7200));
  CHECK(one->emissions.grams() == Approx(0.8));
  CHECK(one->intervals == 1);
  // Zero duration: the intensity at start.
  auto zero =
      IntegrateEmissions(src, "Z", At("2022-01-01T01:00:00Z"), Duration(0), Energy::Joules(3.6e6));
  CHECK(zero->emissions.grams() == Approx(200.0));
  // Across the wrap: 03:30 -> 04:30 is 0.5 kWh at 400 + 0.5 kWh at 100 = 250 g.
  auto wrap =
      IntegrateEmissions(src, "Z", At("2022-01-01T03:30:00Z"), hours(1), Energy::KilowattHours(1));
  CHECK(wrap->emissions.grams() == Approx(250.0));
  // Constant source: E * I.
  ConstantIntensitySource c;
  CHECK(IntegrateEmissions(c, "any", At("2022-01-01T03:30:00Z"), hours(5), Energy::KilowattHours(2))
            ->emissions.grams() == Approx(950.0));
}

TEST_CASE("ForecastView: perfect, or seeded multiplicative error reproducible by seed") {
  const uint64_t seed = testing::TestSeed(1234);
  MESSAGE("seed = " << seed);
  TraceIntensitySource src;
  HourlyTrace tr;
  tr.zone = "Z";
  tr.source = "test";
  tr.start = At("2022-01-01T00:00:00Z");
  tr.g_per_kwh.assign(48, 200.0);
  REQUIRE(src.Add(tr).ok());
  const TimePoint from = At("2022-01-01T05:20:00Z");

  ForecastView perfect(src, ForecastOptions{});
  auto p = perfect.Forecast("Z", from, hours(24));
  REQUIRE(p.ok());
  CHECK(p->size() == 25);
  for (const auto& r : *p) CHECK(r.value.grams_per_kwh() == 200.0);
  CHECK(perfect.IntensityAt("Z", from)->value.grams_per_kwh() == 200.0);

  ForecastOptions o{.relative_error = 0.1, .relative_error_per_hour = 0.01, .seed = seed};
  ForecastView a(src, o), b(src, o);
  auto fa = a.Forecast("Z", from, hours(24));
  auto fb = b.Forecast("Z", from, hours(24));
  auto fa2 = a.Forecast("Z", from, hours(24));
  REQUIRE(fa.ok());
  REQUIRE(fb.ok());
  double sq = 0;
  for (size_t i = 0; i < fa->size(); ++i) {
    CHECK((*fa)[i].value == (*fb)[i].value);   // same seed, same forecast
    CHECK((*fa)[i].value == (*fa2)[i].value);  // repeated call, same forecast
    CHECK((*fa)[i].value.grams_per_kwh() >= 0);
    double rel = (*fa)[i].value.grams_per_kwh() / 200.0 - 1.0;
    CHECK(std::abs(rel) < 6 * (0.1 + 0.01 * static_cast<double>(i)));  // 6 sigma
    sq += rel * rel;
  }
  CHECK(sq > 0);  // not perfect
  // Same target hour from a shorter horizon: same error (pure function of seed, zone, hours).
  auto shorter = a.Forecast("Z", from, hours(3));
  CHECK((*shorter)[2].value == (*fa)[2].value);
  // A different seed gives a different forecast.
  ForecastView c(src, ForecastOptions{.relative_error = 0.1, .seed = seed + 1});
  ForecastView d(src, ForecastOptions{.relative_error = 0.1, .seed = seed});
  auto fc = c.Forecast("Z", from, hours(24));
  auto fd = d.Forecast("Z", from, hours(24));
  bool differs = false;
  for (size_t i = 0; i < fc->size(); ++i) differs |= (*fc)[i].value != (*fd)[i].value;
  CHECK(differs);
  // The truth is still observed for "now".
  CHECK(a.IntensityAt("Z", from)->value.grams_per_kwh() == 200.0);
}

TEST_CASE("JSON sources: Carbon Aware SDK and Electricity Maps shapes") {
  auto ca =
      SeriesIntensitySource::Parse(R"([
    {"location":"eastus","time":"2022-06-01T12:00:00Z","rating":420.5,"duration":"00:05:00"},
    {"location":"eastus","time":"2022-06-01T12:05:00+00:00","rating":410,"duration":"00:05:00"},
    {"location":"westus","time":"2022-06-01T12:00:00Z","rating":250,"duration":5}
  ])",
                                   "ca.json", JsonSourceOptions{.kind = IntensityKind::kMarginal});
  REQUIRE_MESSAGE(ca.ok(), ca.status().ToString());
  CHECK((*ca)->Zones() == std::vector<std::string>{"eastus", "westus"});
  auto r = (*ca)->IntensityAt("eastus", At("2022-06-01T12:07:00Z"));
  REQUIRE(r.ok());
  CHECK(r->value.grams_per_kwh() == 410);
  CHECK(r->kind == IntensityKind::kMarginal);
  CHECK(r->interval == minutes(5));
  CHECK((*ca)->IntensityAt("westus", At("2022-06-01T12:04:59Z"))->value.grams_per_kwh() == 250);
  CHECK((*ca)->IntensityAt("eastus", At("2022-06-01T12:10:00Z")).status().code() ==
        StatusCode::kOutOfRange);
  CHECK((*ca)->IntensityAt("eastus", At("2022-06-01T11:59:00Z")).status().code() ==
        StatusCode::kOutOfRange);
  auto f = (*ca)->Forecast("eastus", At("2022-06-01T12:01:00Z"), minutes(10));
  CHECK(f->size() == 2);
  // 1 kWh spread over 12:00-12:10: 0.5 * 420.5 + 0.5 * 410 = 415.25 g.
  auto g = IntegrateEmissions(**ca, "eastus", At("2022-06-01T12:00:00Z"), minutes(10),
                              Energy::KilowattHours(1));
  CHECK(g->emissions.grams() == Approx(415.25));

  auto latest = SeriesIntensitySource::Parse(
      R"({"zone":"DE","carbonIntensity":302,"datetime":"2019-05-21T00:00:00.000Z",
          "updatedAt":"2019-05-21T00:53:00Z","emissionFactorType":"lifecycle","isEstimated":false})",
      "em.json");
  REQUIRE_MESSAGE(latest.ok(), latest.status().ToString());
  auto de = (*latest)->IntensityAt("DE", At("2019-05-21T00:30:00Z"));
  CHECK(de->value.grams_per_kwh() == 302);
  CHECK(de->scope == EmissionScope::kLifecycle);
  CHECK(de->interval == hours(1));

  auto history = SeriesIntensitySource::Parse(R"({"zone":"ES","history":[
      {"zone":"ES","carbonIntensity":150,"datetime":"2022-01-01T00:00:00.000Z"},
      {"carbonIntensity":null,"datetime":"2022-01-01T01:00:00.000Z"},
      {"carbonIntensity":170,"datetime":"2022-01-01T02:00:00.000Z"}]})",
                                              "hist.json");
  REQUIRE_MESSAGE(history.ok(), history.status().ToString());
  CHECK((*history)->IntensityAt("ES", At("2022-01-01T02:10:00Z"))->value.grams_per_kwh() == 170);
  CHECK((*history)->IntensityAt("ES", At("2022-01-01T01:10:00Z")).status().code() ==
        StatusCode::kOutOfRange);

  auto bad = SeriesIntensitySource::Parse(R"([{"location":"x","time":"2022-01-01T00:00:00Z"}])",
                                          "bad.json");
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("bad.json[0]") != std::string::npos);
  CHECK(bad.status().message().find("rating") != std::string::npos);
  CHECK(SeriesIntensitySource::Parse("{not json", "x.json").status().code() ==
        StatusCode::kInvalidArgument);

  testing::TempDir dir;
  testing::WriteFile(
      dir.path() / "ci.json",
      R"([{"location":"l","time":"2022-01-01T00:00:00Z","rating":1,"duration":"01:00:00"}])");
  auto file = SeriesIntensitySource::LoadFile(dir.path() / "ci.json");
  REQUIRE(file.ok());
  CHECK((*file)->IntensityAt("l", At("2022-01-01T00:59:00Z"))->value.grams_per_kwh() == 1);
}

TEST_CASE("Carbon source registry") {
  Registry<CarbonIntensitySource> reg("carbon source");
  REQUIRE(RegisterBuiltinCarbonSources(reg).ok());
  auto c = reg.Create("constant", OptionMap{{"value_g_per_kwh", "300"}});
  REQUIRE(c.ok());
  CHECK((*c)->IntensityAt("x", TimePoint{})->value.grams_per_kwh() == 300);
  auto noscope = reg.Create("trace", OptionMap{{"dir", ShippedCarbonDir().string()}});
  CHECK(noscope.status().code() == StatusCode::kInvalidArgument);
  auto t =
      reg.Create("trace", OptionMap{{"dir", ShippedCarbonDir().string()}, {"scope", "lifecycle"}});
  REQUIRE_MESSAGE(t.ok(), t.status().ToString());
  CHECK((*t)->IntensityAt("ES", At("2022-01-01T00:00:00Z"))->value.grams_per_kwh() ==
        Approx(175.54));
}
