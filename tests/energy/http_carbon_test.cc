// HttpIntensitySource against a cpp-httplib server on 127.0.0.1: both JSON
// shapes, the auth header, caching and refresh, and every failure path
// (unreachable, timeout, non-200, bad JSON, oversized body) without a crash.
#include "verdant/energy/http_carbon.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

using namespace verdant;
using namespace verdant::energy;
using namespace std::chrono_literals;

namespace {

// A local HTTP server on 127.0.0.1 with an ephemeral port, stopped on scope exit.
class LocalServer {
 public:
  LocalServer() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the accept loop runs would be lost: wait for it (bounded).
    for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(2ms);
    REQUIRE(server_.is_running());
  }
  ~LocalServer() { Stop(); }
  void Stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  httplib::Server& server() { return server_; }
  std::string url(const std::string& target) const {
    return "http://127.0.0.1:" + std::to_string(port_) + target;
  }
  int port() const { return port_; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// 2022-06-01T00:00Z and the Electricity Maps history shape for `zone`,
// hourly from then, values base, base+1, ...
TimePoint June1() { return *ParseUtcTimestamp("2022-06-01T00:00:00Z"); }
std::string EmHistory(const std::string& zone, int base, int hours) {
  std::string s = "{\"zone\":\"" + zone + "\",\"history\":[";
  for (int h = 0; h < hours; ++h) {
    char t[64];
    std::snprintf(t, sizeof(t), "2022-06-01T%02d:00:00.000Z", h);
    s += (h ? "," : "") + std::string("{\"zone\":\"") + zone + "\",\"carbonIntensity\":" +
         std::to_string(base + h) + ",\"datetime\":\"" + t + "\",\"emissionFactorType\":\"lifecycle\"}";
  }
  return s + "]}";
}

}  // namespace

TEST_CASE("http source: Electricity Maps history per zone with an auth-token header, cached and refreshed") {
  LocalServer srv;
  std::atomic<int> requests{0}, base{100};
  std::mutex mu;
  std::string seen_zone;
  srv.server().Get("/v3/carbon-intensity/history", [&](const httplib::Request& req, httplib::Response& res) {
    ++requests;
    if (req.get_header_value("auth-token") != "s3cret") {
      res.status = 401;
      res.set_content("{\"error\":\"bad token\"}", "application/json");
      return;
    }
    std::lock_guard<std::mutex> l(mu);
    seen_zone = req.get_param_value("zone");
    res.set_content(EmHistory(seen_zone, base, 24), "application/json");
  });
  ManualClock clock(June1());
  HttpSourceOptions o;
  o.url = srv.url("/v3/carbon-intensity/history?zone={zone}");
  o.headers = {{"auth-token", "s3cret"}};
  o.timeout = 2s;
  o.refresh = 15min;
  o.clock = &clock;
  auto src = HttpIntensitySource::Create(o);
  REQUIRE(src.ok());
  auto r = (*src)->IntensityAt("US-CAL-CISO", June1() + 3h + 10min);
  REQUIRE(r.ok());
  CHECK(r->value.grams_per_kwh() == doctest::Approx(103));
  CHECK(r->trace_time == June1() + 3h);
  CHECK(r->scope == EmissionScope::kLifecycle);
  CHECK(r->source.find("http:http://127.0.0.1") == 0);
  CHECK(r->source.find("s3cret") == std::string::npos);
  CHECK(r->source.find('?') == std::string::npos);
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(seen_zone == "US-CAL-CISO");
  }
  // Cached: no new request within the refresh interval.
  REQUIRE((*src)->IntensityAt("US-CAL-CISO", June1() + 5h).ok());
  auto fc = (*src)->Forecast("US-CAL-CISO", June1() + 2h, 3h);
  REQUIRE(fc.ok());
  CHECK(fc->size() == 3);
  CHECK(requests == 1);
  CHECK((*src)->fetches() == 1);
  // Another zone is its own request.
  REQUIRE((*src)->IntensityAt("DE", June1()).ok());
  CHECK(requests == 2);
  // After the refresh interval the data is fetched again.
  base = 500;
  clock.Advance(16min);
  r = (*src)->IntensityAt("US-CAL-CISO", June1() + 3h);
  REQUIRE(r.ok());
  CHECK(r->value.grams_per_kwh() == doctest::Approx(503));
  CHECK(requests == 3);

  SUBCASE("a wrong token is a clear non-200 error") {
    HttpSourceOptions bad = o;
    bad.headers = {{"auth-token", "wrong"}};
    auto b = HttpIntensitySource::Create(bad);
    REQUIRE(b.ok());
    auto x = (*b)->IntensityAt("DE", June1());
    CHECK(x.status().code() == StatusCode::kUnavailable);
    CHECK(x.status().message().find("HTTP 401") != std::string::npos);
    CHECK(x.status().message().find("wrong") == std::string::npos);  // the token is not echoed
  }
}

TEST_CASE("http source: one Carbon Aware SDK response answers every zone") {
  LocalServer srv;
  std::atomic<int> requests{0};
  srv.server().Get("/emissions/bylocations", [&](const httplib::Request&, httplib::Response& res) {
    ++requests;
    res.set_content(R"([
      {"location":"eastus","time":"2022-06-01T00:00:00Z","rating":420.5,"duration":"01:00:00"},
      {"location":"westus","time":"2022-06-01T00:00:00Z","rating":210.25,"duration":"01:00:00"},
      {"location":"westus","time":"2022-06-01T01:00:00Z","rating":200,"duration":"01:00:00"}])",
                    "application/json");
  });
  ManualClock clock(June1());
  HttpSourceOptions o;
  o.url = srv.url("/emissions/bylocations?location=eastus&location=westus");
  o.clock = &clock;
  o.timeout = 2s;
  o.json.kind = IntensityKind::kMarginal;
  auto src = HttpIntensitySource::Create(o);
  REQUIRE(src.ok());
  auto e = (*src)->IntensityAt("eastus", June1() + 30min);
  auto w = (*src)->IntensityAt("westus", June1() + 70min);
  REQUIRE(e.ok());
  REQUIRE(w.ok());
  CHECK(e->value.grams_per_kwh() == doctest::Approx(420.5));
  CHECK(w->value.grams_per_kwh() == doctest::Approx(200));
  CHECK(e->kind == IntensityKind::kMarginal);
  CHECK(requests == 1);
  CHECK((*src)->Zones() == std::vector<std::string>{"eastus", "westus"});
  CHECK((*src)->IntensityAt("northpole", June1()).status().code() == StatusCode::kNotFound);
  // Past the data: the last point answers for hold_last (2 h), then kOutOfRange.
  auto held = (*src)->IntensityAt("eastus", June1() + 2h);
  REQUIRE(held.ok());
  CHECK(held->trace_time == June1());
  CHECK((*src)->IntensityAt("eastus", June1() + 4h).status().code() == StatusCode::kOutOfRange);
}

TEST_CASE("http source: failures are errors, the last good data stays, retries are spaced") {
  LocalServer srv;
  std::atomic<int> mode{0}, requests{0};  // 0 good, 1 HTTP 500, 2 bad JSON, 3 malformed field, 4 big
  srv.server().Get("/ci", [&](const httplib::Request&, httplib::Response& res) {
    ++requests;
    switch (mode.load()) {
      case 0: res.set_content(EmHistory("ES", 150, 24), "application/json"); break;
      case 1: res.status = 500; res.set_content("upstream down", "text/plain"); break;
      case 2: res.set_content("{\"zone\":\"ES\",\"history\":[", "application/json"); break;
      case 3: res.set_content(R"({"zone":"ES","carbonIntensity":"high","datetime":"2022-06-01T00:00:00Z"})",
                              "application/json"); break;
      default: res.set_content(std::string(4096, ' ') + EmHistory("ES", 1, 1), "application/json"); break;
    }
  });
  ManualClock clock(June1());
  HttpSourceOptions o;
  o.url = srv.url("/ci");
  o.clock = &clock;
  o.timeout = 2s;
  o.refresh = 10min;
  o.retry = 1min;

  SUBCASE("non-200 with no data yet: kUnavailable naming the status; the retry waits") {
    mode = 1;
    auto src = *HttpIntensitySource::Create(o);
    auto r = src->IntensityAt("ES", June1());
    CHECK(r.status().code() == StatusCode::kUnavailable);
    CHECK(r.status().message().find("HTTP 500") != std::string::npos);
    CHECK(r.status().message().find("upstream down") != std::string::npos);
    CHECK(src->IntensityAt("ES", June1()).status().code() == StatusCode::kUnavailable);
    CHECK(requests == 1);  // within the retry interval: no second request
    mode = 0;
    clock.Advance(61s);
    CHECK(src->IntensityAt("ES", June1()).ok());
    CHECK(requests == 2);
  }
  SUBCASE("bad JSON and a malformed field name what is wrong") {
    auto src = *HttpIntensitySource::Create(o);
    mode = 2;
    Status st = src->Refresh();
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK(st.message().find("invalid JSON") != std::string::npos);
    mode = 3;
    st = src->Refresh();
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK(st.message().find("carbonIntensity") != std::string::npos);
  }
  SUBCASE("an oversized body is refused") {
    mode = 4;
    o.max_body_bytes = 2048;
    auto src = *HttpIntensitySource::Create(o);
    Status st = src->Refresh();
    CHECK(st.code() == StatusCode::kDataLoss);
    CHECK(st.message().find("larger than 2048") != std::string::npos);
  }
  SUBCASE("a failed refresh keeps the data fetched before") {
    auto src = *HttpIntensitySource::Create(o);
    REQUIRE(src->IntensityAt("ES", June1() + 1h).ok());
    mode = 1;
    clock.Advance(11min);
    auto r = src->IntensityAt("ES", June1() + 1h);
    REQUIRE(r.ok());
    CHECK(r->value.grams_per_kwh() == doctest::Approx(151));
    CHECK(requests == 2);
  }
}

TEST_CASE("http source: unreachable and slow servers fail within the timeout") {
  int dead_port = 0;
  {
    LocalServer gone;  // a port that was just free: nothing listens there after Stop()
    dead_port = gone.port();
  }
  HttpSourceOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(dead_port) + "/ci";
  o.timeout = 1s;
  auto src = HttpIntensitySource::Create(o);
  REQUIRE(src.ok());
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*src)->IntensityAt("ES", June1());
  CHECK(r.status().code() == StatusCode::kUnavailable);
  CHECK(r.status().message().find("127.0.0.1") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);

  LocalServer slow;
  slow.server().Get("/ci", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(1500ms);
    res.set_content(EmHistory("ES", 1, 1), "application/json");
  });
  o.url = slow.url("/ci");
  o.timeout = 300ms;
  auto s2 = HttpIntensitySource::Create(o);
  REQUIRE(s2.ok());
  t0 = std::chrono::steady_clock::now();
  Status st = (*s2)->Refresh();
  CHECK(st.code() == StatusCode::kUnavailable);
  CHECK(std::chrono::steady_clock::now() - t0 < 1400ms);

  // https to a plain-HTTP port: a TLS error, not a crash (the Debian build has OpenSSL).
  LocalServer plain;
  plain.server().Get("/ci", [](const httplib::Request&, httplib::Response& res) { res.set_content("{}", "text/plain"); });
  o.url = "https://127.0.0.1:" + std::to_string(plain.port()) + "/ci";
  o.timeout = 1s;
  auto s3 = HttpIntensitySource::Create(o);
  REQUIRE(s3.ok());
  CHECK((*s3)->Refresh().code() == StatusCode::kUnavailable);
}

TEST_CASE("http source: Create rejects malformed settings") {
  auto bad = [](HttpSourceOptions o) { return HttpIntensitySource::Create(std::move(o)).status().code(); };
  HttpSourceOptions o;
  o.url = "ftp://example.org/x";
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.url = "http://";
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.url = "http://127.0.0.1:99999/x";
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.url = "http://user@127.0.0.1/x";
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.url = "http://127.0.0.1:8080/v3/ci?zone={zone}";
  CHECK(HttpIntensitySource::Create(o).ok());
  o.headers = {{"auth token", "x"}};
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.headers = {{"auth-token", "x\r\nInjected: 1"}};
  CHECK(bad(o) == StatusCode::kInvalidArgument);
  o.headers = {{"auth-token", "x"}};
  o.timeout = Duration::zero();
  CHECK(bad(o) == StatusCode::kInvalidArgument);
}
