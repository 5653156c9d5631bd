// The status/metrics endpoint: renderers on hand-made snapshots, and the
// HTTP server in front of a real coordinator with fake clients on 127.0.0.1.
#include <doctest/doctest.h>
#include <httplib.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "verdant/server/coordinator.h"
#include "verdant/server/status_server.h"
#include "verdant/testing/fake_client.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::FakeClient;

namespace {

// Parses the Prometheus text format strictly enough to catch mistakes: every
// sample line is `name[{labels}] value`, every sample's family has # HELP and
// # TYPE before it. Returns "name{labels}" -> value; FAILs on a bad line.
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  std::map<std::string, double> out;
  std::map<std::string, std::string> types;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    REQUIRE_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      CHECK((type == "counter" || type == "gauge" || type == "histogram"));
      types[name] = type;
      continue;
    }
    REQUIRE(line[0] != '#');
    const size_t sp = line.rfind(' ');
    REQUIRE(sp != std::string::npos);
    const std::string key = line.substr(0, sp), value = line.substr(sp + 1);
    std::string name = key.substr(0, key.find('{'));
    for (char c : name) CHECK((std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'));
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx = suffix;
      if (!types.count(family) && family.size() > sfx.size() &&
          family.compare(family.size() - sfx.size(), sfx.size(), sfx) == 0) {
        family.resize(family.size() - sfx.size());
      }
    }
    INFO("sample without # TYPE: ", line);
    CHECK(types.count(family) == 1);
    if (key.find('{') != std::string::npos) CHECK(key.back() == '}');
    double v = value == "+Inf" ? INFINITY : value == "NaN" ? NAN : std::stod(value);
    out[key] = v;
  }
  return out;
}

class MeanEvaluator final : public Evaluator {
 public:
  std::string_view Name() const override { return "mean"; }
  Result<EvalSummary> Evaluate(const ParameterVector& m) override {
    double s = 0;
    for (float v : m.values()) s += v;
    return EvalSummary{0.0, s / static_cast<double>(m.size()), m.size()};
  }
};

// Waits (bounded) until `pred` holds.
template <typename F>
bool Eventually(F pred, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

CoordinatorStatus SampleStatus() {
  CoordinatorStatus s;
  s.run_id = "run \"7\"\n<b>";
  s.state = "training";
  s.rounds_planned = 10;
  s.current_round = 3;
  s.rounds_completed = 2;
  s.clients_connected = 2;
  s.sessions_open = 2;
  s.heartbeats_total = 41;
  s.bytes_up_total = 123456;
  s.energy_joules_total = 12.5;
  s.emissions_g_total = 0.00125;
  s.round_seconds.Observe(0.3);
  s.round_seconds.Observe(7);
  s.round_seconds.Observe(5000);  // above every bound: only +Inf
  RoundRecord r;
  r.round = 2;
  r.selected = 2;
  r.completed = 1;
  r.failed = 1;
  r.accuracy = 0.75;
  s.last_round = r;
  ClientStatusEntry c;
  c.client_id = "<script>alert(1)</script>";
  c.battery_percent = 55;
  c.charging = true;
  c.power_source = "grid";
  c.network = "unmetered";
  c.zone = "NO";
  s.clients.push_back(c);
  s.clients_omitted = 1;
  return s;
}

}  // namespace

TEST_CASE("the Prometheus rendering is well-formed with HELP, TYPE, escaped labels and a cumulative histogram") {
  const std::string text = RenderPrometheusMetrics(SampleStatus());
  INFO(text);
  auto m = ParsePrometheus(text);
  CHECK(m.at("verdant_rounds_completed_total") == 2);
  CHECK(m.at("verdant_current_round") == 3);
  CHECK(m.at("verdant_clients_connected") == 2);
  CHECK(m.at("verdant_heartbeats_total") == 41);
  CHECK(m.at("verdant_bytes_up_total") == 123456);
  CHECK(m.at("verdant_energy_joules_total") == doctest::Approx(12.5));
  CHECK(m.at("verdant_emissions_grams_total") == doctest::Approx(0.00125));
  CHECK(m.at("verdant_state{state=\"training\"}") == 1);
  CHECK(m.at("verdant_state{state=\"finished\"}") == 0);
  CHECK(m.at("verdant_last_round_accuracy") == doctest::Approx(0.75));
  CHECK(m.at("verdant_info{run_id=\"run \\\"7\\\"\\n<b>\"}") == 1);
  // Buckets are cumulative and end at +Inf == count.
  CHECK(m.at("verdant_round_duration_seconds_bucket{le=\"0.25\"}") == 0);
  CHECK(m.at("verdant_round_duration_seconds_bucket{le=\"0.5\"}") == 1);
  CHECK(m.at("verdant_round_duration_seconds_bucket{le=\"10\"}") == 2);
  CHECK(m.at("verdant_round_duration_seconds_bucket{le=\"1800\"}") == 2);
  CHECK(m.at("verdant_round_duration_seconds_bucket{le=\"+Inf\"}") == 3);
  CHECK(m.at("verdant_round_duration_seconds_count") == 3);
  CHECK(m.at("verdant_round_duration_seconds_sum") == doctest::Approx(5007.3));
  double prev = 0;
  for (double le : RoundLatencyHistogram::kBoundsSeconds) {
    std::ostringstream k;
    k << "verdant_round_duration_seconds_bucket{le=\"" << le << "\"}";
    INFO(k.str());
    REQUIRE(m.count(k.str()) == 1);
    CHECK(m.at(k.str()) >= prev);
    prev = m.at(k.str());
  }
}

TEST_CASE("the status JSON and HTML page carry the snapshot, escaped") {
  const auto s = SampleStatus();
  auto j = nlohmann::json::parse(RenderStatusJson(s));
  CHECK(j["run_id"] == s.run_id);
  CHECK(j["state"] == "training");
  CHECK(j["round"] == 3);
  CHECK(j["last_round"]["accuracy"] == doctest::Approx(0.75));
  REQUIRE(j["clients"].size() == 1);
  CHECK(j["clients"][0]["device"]["battery_percent"] == doctest::Approx(55));
  CHECK(j["clients"][0]["device"]["zone"] == "NO");
  CHECK(j["clients_omitted"] == 1);
  const std::string html = RenderStatusHtml(s, 7);
  CHECK(html.find("<meta http-equiv=\"refresh\" content=\"7\">") != std::string::npos);
  CHECK(html.find("<script>") == std::string::npos);
  CHECK(html.find("&lt;script&gt;") != std::string::npos);
  CHECK(html.find("http://") == std::string::npos);  // self-contained: no external assets
  CHECK(html.find("55%") != std::string::npos);
}

TEST_CASE("the status endpoint rejects bad options and a taken port") {
  auto fn = [](size_t) { return CoordinatorStatus{}; };
  StatusServerOptions o;
  o.address = "not an address";
  CHECK(StatusServer::Start(o, fn).status().code() == StatusCode::kInvalidArgument);
  o.address = "127.0.0.1";
  CHECK(StatusServer::Start(o, nullptr).status().code() == StatusCode::kInvalidArgument);
  auto first = StatusServer::Start(o, fn);
  REQUIRE(first.ok());
  o.port = (*first)->port();
  CHECK(StatusServer::Start(o, fn).status().code() == StatusCode::kUnavailable);
  (*first)->Stop();
  (*first)->Stop();  // idempotent
}

TEST_CASE("the endpoint serves a live coordinator: clients, device state, and figures that move after rounds") {
  CoordinatorOptions o;
  o.rounds = 2;
  o.min_clients = 2;
  o.round_timeout = 20s;
  o.run_id = "status-test";
  MeanEvaluator eval;
  Coordinator coord(o, ParameterVector::Flat(std::vector<float>(1000, 0.0f)),
                    std::move(*CreateStrategy("fedavg", {})), std::move(*CreateSelector("random", {})), &eval,
                    SystemClock::Default());
  auto tcp = TcpServer::Start({}, coord);
  REQUIRE(tcp.ok());
  StatusServerOptions so;
  auto http = StatusServer::Start(so, [&coord](size_t n) { return coord.Snapshot(n); });
  REQUIRE(http.ok());
  CHECK((*http)->address() == "127.0.0.1");
  httplib::Client cli("127.0.0.1", (*http)->port());
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(5, 0);

  auto before = cli.Get("/metrics");
  REQUIRE(before);
  CHECK(before->status == 200);
  CHECK(before->get_header_value("Content-Type").find("text/plain; version=0.0.4") == 0);
  auto m0 = ParsePrometheus(before->body);
  CHECK(m0.at("verdant_rounds_completed_total") == 0);
  CHECK(m0.at("verdant_clients_connected") == 0);
  CHECK(m0.at("verdant_bytes_up_total") == 0);
  CHECK(m0.at("verdant_state{state=\"starting\"}") == 1);

  std::vector<std::unique_ptr<FakeClient>> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(std::make_unique<FakeClient>("c" + std::to_string(i), (*tcp)->port()));
    clients.back()->state.set_battery_known(true);
    clients.back()->state.set_battery_percent(40.0f + 10.0f * static_cast<float>(i));
    clients.back()->state.set_charging(i == 1);
    clients.back()->state.set_zone(i == 0 ? "NO" : "ES");
    clients.back()->state.set_network(wire::DeviceState::NETWORK_UNMETERED);
  }
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back([&c] { (void)c->Run(); });
  // Connected before the run starts: /status lists them with their device state.
  REQUIRE(Eventually([&] { return coord.connected_clients() == 2; }));
  auto st = cli.Get("/status");
  REQUIRE(st);
  CHECK(st->status == 200);
  CHECK(st->get_header_value("Content-Type") == "application/json");
  auto j = nlohmann::json::parse(st->body);
  CHECK(j["run_id"] == "status-test");
  CHECK(j["round"] == 0);
  CHECK(j["clients_connected"] == 2);
  REQUIRE(j["clients"].size() == 2);
  CHECK(j["clients"][0]["id"] == "c0");  // sorted by id
  CHECK(j["clients"][0]["device"]["zone"] == "NO");
  CHECK(j["clients"][0]["device"]["battery_percent"] == doctest::Approx(40));
  CHECK(j["clients"][1]["device"]["charging"] == true);
  CHECK(j["clients"][1]["device"]["network"] == "unmetered");
  CHECK(j["last_round"].is_null());
  // Snapshot's client cap.
  auto capped = coord.Snapshot(1);
  CHECK(capped.clients.size() == 1);
  CHECK(capped.clients_omitted == 1);

  auto summary = coord.Run();
  for (auto& t : threads) t.join();
  REQUIRE(summary.ok());

  auto after = cli.Get("/metrics");
  REQUIRE(after);
  auto m1 = ParsePrometheus(after->body);
  CHECK(m1.at("verdant_rounds_completed_total") == 2);
  CHECK(m1.at("verdant_current_round") == 2);
  CHECK(m1.at("verdant_clients_selected_total") == 4);
  CHECK(m1.at("verdant_client_results_total") == 4);
  CHECK(m1.at("verdant_client_failures_total") == 0);
  CHECK(m1.at("verdant_clients_joined_total") == 2);
  CHECK(m1.at("verdant_bytes_up_total") > 2 * 2 * 4000);
  CHECK(m1.at("verdant_bytes_down_total") > 2 * 2 * 4000);
  CHECK(m1.at("verdant_energy_joules_total") > 0);
  CHECK(m1.at("verdant_emissions_grams_total") > 0);
  CHECK(m1.at("verdant_round_duration_seconds_count") == 2);
  CHECK(m1.at("verdant_round_duration_seconds_bucket{le=\"+Inf\"}") == 2);
  CHECK(m1.at("verdant_state{state=\"finished\"}") == 1);
  CHECK(m1.at("verdant_last_round_accuracy") == doctest::Approx(1.0).epsilon(1e-4));  // two rounds of delta 0.5
  auto j1 = nlohmann::json::parse(cli.Get("/status")->body);
  CHECK(j1["state"] == "finished");
  CHECK(j1["rounds_completed"] == 2);
  CHECK(j1["last_round"]["round"] == 2);
  CHECK(j1["last_round"]["completed"] == 2);

  auto page = cli.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type").find("text/html") == 0);
  CHECK(page->body.find("status-test") != std::string::npos);
  CHECK(page->body.find("http-equiv=\"refresh\"") != std::string::npos);

  for (const char* bad : {"/nope", "/metrics/x", "/status.json", "/../etc/passwd"}) {
    auto r = cli.Get(bad);
    REQUIRE(r);
    CHECK(r->status == 404);
  }
  auto post = cli.Post("/metrics", "x", "text/plain");
  REQUIRE(post);
  CHECK(post->status != 200);
  (*http)->Stop();
  (*tcp)->Stop();
}
