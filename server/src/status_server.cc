#include "verdant/server/status_server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cmath>
#include <exception>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <thread>

namespace verdant {

namespace {

constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// A sample value in the exposition format: integers exactly, others in the
// shortest form that reads back the same; +Inf, -Inf, NaN spelled as the
// format wants.
std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}
std::string Num(uint64_t v) { return std::to_string(v); }

// A label value: backslash, double quote and newline escaped.
std::string LabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class MetricsWriter {
 public:
  template <typename T>
  void Metric(std::string_view name, std::string_view type, std::string_view help, T value) {
    Header(name, type, help);
    out_ += fmt::format("{} {}\n", name, Num(value));
  }
  void Header(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void Sample(std::string_view name, std::string_view labels, const std::string& value) {
    out_ += fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

constexpr const char* kStates[] = {"starting",    "waiting_for_clients", "selecting", "deferred",
                                   "training",    "aggregating",         "evaluating", "finished",
                                   "stopped",     "failed"};

std::string HtmlEscape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

nlohmann::json RoundJson(const RoundRecord& r) {
  nlohmann::json j = {{"round", r.round},
                      {"selected", r.selected},
                      {"completed", r.completed},
                      {"failed", r.failed},
                      {"bytes_up", r.bytes_up},
                      {"bytes_down", r.bytes_down},
                      {"wall_seconds", r.wall_seconds},
                      {"eval_seconds", r.eval_seconds},
                      {"train_loss", r.train_loss},
                      {"started_utc", r.started_utc},
                      {"model_updated", r.model_updated},
                      {"energy_joules", r.energy_joules},
                      {"emissions_g", r.emissions_g},
                      {"embodied_g", r.embodied_g},
                      {"deferred_seconds", r.deferred_seconds}};
  j["accuracy"] = r.accuracy ? nlohmann::json(*r.accuracy) : nlohmann::json(nullptr);
  j["loss"] = r.loss ? nlohmann::json(*r.loss) : nlohmann::json(nullptr);
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : r.metrics) m[k] = v;
  j["metrics"] = std::move(m);
  return j;
}

// Prometheus and JSON want finite numbers in JSON: NaN/Inf become null.
nlohmann::json Finite(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

class StatusServerImpl final : public StatusServer {
 public:
  StatusServerImpl(const StatusServerOptions& options, StatusSnapshotFn snapshot)
      : options_(options), snapshot_(std::move(snapshot)), address_(options.address) {}
  ~StatusServerImpl() override { Stop(); }

  Status Bind() {
    const int threads = options_.threads;
    // httplib owns the queue it is given and deletes it (its API takes a raw pointer).
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http_.set_keep_alive_max_count(20);
    http_.set_read_timeout(5, 0);
    http_.set_write_timeout(5, 0);
    http_.set_payload_max_length(64 * 1024);  // GET only: bodies are not wanted
    // httplib's default sets SO_REUSEPORT, which lets a second process bind
    // the same port and silently take half the scrapes. SO_REUSEADDR only:
    // a restarted coordinator can rebind at once, a second one fails to.
    http_.set_socket_options([](int sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderPrometheusMetrics(snapshot_(0)), std::string(kPrometheusContentType));
    });
    http_.Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderStatusJson(snapshot_(options_.max_clients_listed)), "application/json");
    });
    http_.Get("/", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderStatusHtml(snapshot_(options_.max_clients_listed), options_.refresh_seconds),
                      "text/html; charset=utf-8");
    });
    http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.status == 404) {
        res.set_content("not found: " + req.path + " (try /, /status or /metrics)\n", "text/plain");
      }
    });
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      res.status = 500;
      res.set_content("internal error: " + what + "\n", "text/plain");
    });
    int port = options_.port;
    if (options_.port == 0) {
      port = http_.bind_to_any_port(options_.address);
      if (port <= 0) return UnavailableError("status endpoint: cannot bind " + options_.address + " on any port");
    } else if (!http_.bind_to_port(options_.address, options_.port)) {
      return UnavailableError("status endpoint: cannot bind " + options_.address + ":" +
                              std::to_string(options_.port) + " (in use, or not an address of this machine)");
    }
    port_ = static_cast<uint16_t>(port);
    thread_ = std::thread([this] {
      http_.listen_after_bind();
      finished_ = true;
    });
    // stop() only takes effect once the loop runs: wait (bounded) for it.
    for (int i = 0; i < 500 && !http_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return OkStatus();
  }

  uint16_t port() const override { return port_; }
  const std::string& address() const override { return address_; }

  void Stop() override {
    if (!thread_.joinable()) return;
    // stop() is a no-op until the loop runs: repeat it until the loop has ended.
    while (!finished_.load()) {
      http_.stop();
      for (int i = 0; i < 20 && !finished_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    thread_.join();
  }

 private:
  StatusServerOptions options_;
  StatusSnapshotFn snapshot_;
  std::string address_;
  httplib::Server http_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  uint16_t port_ = 0;
};

bool IsLoopback(const std::string& address) {
  if (address == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

bool IsIpAddress(const std::string& address) {
  in_addr v4{};
  in6_addr v6{};
  return inet_pton(AF_INET, address.c_str(), &v4) == 1 || inet_pton(AF_INET6, address.c_str(), &v6) == 1;
}

}  // namespace

std::string RenderPrometheusMetrics(const CoordinatorStatus& s) {
  MetricsWriter w;
  w.Header("verdant_info", "gauge", "Run identity (value is always 1).");
  w.Sample("verdant_info", "run_id=\"" + LabelValue(s.run_id) + "\"", "1");
  w.Header("verdant_state", "gauge", "1 for the coordinator's current state, 0 for the others.");
  for (const char* st : kStates) {
    w.Sample("verdant_state", fmt::format("state=\"{}\"", st), s.state == st ? "1" : "0");
  }
  w.Metric("verdant_uptime_seconds", "gauge", "Seconds since the coordinator started.", s.uptime_seconds);
  w.Metric("verdant_rounds_planned", "gauge", "Rounds this run is configured for.", s.rounds_planned);
  w.Metric("verdant_current_round", "gauge", "The round in progress or last run (0 before round 1).",
           s.current_round);
  w.Metric("verdant_rounds_completed_total", "counter", "Rounds completed and recorded.", s.rounds_completed);
  w.Metric("verdant_sessions_open", "gauge", "Connections past the handshake (welcomed or not).",
           static_cast<uint64_t>(s.sessions_open));
  w.Metric("verdant_clients_connected", "gauge", "Clients connected and welcomed.",
           static_cast<uint64_t>(s.clients_connected));
  w.Metric("verdant_clients_training", "gauge", "Clients holding a task of the current round.",
           static_cast<uint64_t>(s.clients_training));
  w.Metric("verdant_clients_joined_total", "counter", "Clients welcomed since start.", s.clients_joined_total);
  w.Metric("verdant_clients_left_total", "counter", "Welcomed clients whose connection closed.",
           s.clients_left_total);
  w.Metric("verdant_heartbeats_total", "counter", "Heartbeats received.", s.heartbeats_total);
  w.Metric("verdant_clients_selected_total", "counter", "Client-rounds selected, over recorded rounds.",
           s.clients_selected_total);
  w.Metric("verdant_client_results_total", "counter", "Client-rounds completed (update aggregated).",
           s.client_results_total);
  w.Metric("verdant_client_failures_total", "counter",
           "Client-rounds failed (deadline, disconnect, bad update, training failure).", s.client_failures_total);
  w.Metric("verdant_round_deferrals_total", "counter", "Times a selector deferred a round to a cleaner window.",
           s.deferrals_total);
  w.Metric("verdant_round_deferred_seconds_total", "counter", "Grid-time seconds rounds were deferred.",
           s.deferred_seconds_total);
  w.Metric("verdant_bytes_up_total", "counter", "Socket bytes received by the coordinator (all sessions).",
           s.bytes_up_total);
  w.Metric("verdant_bytes_down_total", "counter", "Socket bytes sent by the coordinator (all sessions).",
           s.bytes_down_total);
  w.Metric("verdant_energy_joules_total", "counter", "Device energy of recorded rounds (compute + radio + idle), J.",
           s.energy_joules_total);
  w.Metric("verdant_emissions_grams_total", "counter", "Operational emissions of recorded rounds, gCO2e.",
           s.emissions_g_total);
  w.Metric("verdant_embodied_emissions_grams_total", "counter", "Embodied emissions share of recorded rounds, gCO2e.",
           s.embodied_g_total);
  {
    const auto& h = s.round_seconds;
    w.Header("verdant_round_duration_seconds", "histogram",
             "Wall time of a recorded round: selection (with any deferral wait) to record.");
    uint64_t cum = 0;
    for (size_t i = 0; i < h.kBoundsSeconds.size(); ++i) {
      cum += h.counts[i];
      w.Sample("verdant_round_duration_seconds_bucket", "le=\"" + Num(h.kBoundsSeconds[i]) + "\"", Num(cum));
    }
    w.Sample("verdant_round_duration_seconds_bucket", "le=\"+Inf\"", Num(h.count));
    w.Sample("verdant_round_duration_seconds_sum", "", Num(h.sum));
    w.Sample("verdant_round_duration_seconds_count", "", Num(h.count));
  }
  if (s.last_round) {
    const auto& r = *s.last_round;
    w.Metric("verdant_last_round_seconds", "gauge", "The last recorded round: tasks sent to aggregation done.",
             r.wall_seconds);
    w.Metric("verdant_last_round_completed", "gauge", "Clients that completed the last recorded round.",
             static_cast<uint64_t>(r.completed));
    w.Metric("verdant_last_round_failed", "gauge", "Clients that failed the last recorded round.",
             static_cast<uint64_t>(r.failed));
    w.Metric("verdant_last_round_train_loss", "gauge", "Example-weighted mean training loss of the last round.",
             r.train_loss);
    if (r.accuracy) {
      w.Metric("verdant_last_round_accuracy", "gauge", "Evaluation accuracy after the last round.", *r.accuracy);
    }
    if (r.loss) w.Metric("verdant_last_round_eval_loss", "gauge", "Evaluation loss after the last round.", *r.loss);
  }
  std::string out = w.Take();
  // Samples with empty label sets print as name{} — valid, but tidy them.
  for (size_t p; (p = out.find("{} ")) != std::string::npos;) out.erase(p, 2);
  return out;
}

std::string RenderStatusJson(const CoordinatorStatus& s) {
  nlohmann::json j;
  j["run_id"] = s.run_id;
  j["state"] = s.state;
  j["round"] = s.current_round;
  j["rounds_planned"] = s.rounds_planned;
  j["rounds_completed"] = s.rounds_completed;
  j["uptime_seconds"] = s.uptime_seconds;
  j["sessions_open"] = s.sessions_open;
  j["clients_connected"] = s.clients_connected;
  j["clients_training"] = s.clients_training;
  j["totals"] = {{"clients_joined", s.clients_joined_total},
                 {"clients_left", s.clients_left_total},
                 {"heartbeats", s.heartbeats_total},
                 {"clients_selected", s.clients_selected_total},
                 {"client_results", s.client_results_total},
                 {"client_failures", s.client_failures_total},
                 {"deferrals", s.deferrals_total},
                 {"deferred_seconds", s.deferred_seconds_total},
                 {"bytes_up", s.bytes_up_total},
                 {"bytes_down", s.bytes_down_total},
                 {"energy_joules", Finite(s.energy_joules_total)},
                 {"emissions_g", Finite(s.emissions_g_total)},
                 {"embodied_g", Finite(s.embodied_g_total)}};
  j["last_round"] = s.last_round ? RoundJson(*s.last_round) : nlohmann::json(nullptr);
  nlohmann::json clients = nlohmann::json::array();
  for (const auto& c : s.clients) {
    nlohmann::json d = {{"battery_percent", c.battery_percent >= 0 ? nlohmann::json(c.battery_percent)
                                                                     : nlohmann::json(nullptr)},
                        {"charging", c.charging},
                        {"power_source", c.power_source},
                        {"network", c.network},
                        {"idle", c.idle},
                        {"zone", c.zone},
                        {"local_intensity_g_per_kwh", c.local_intensity_g_per_kwh > 0
                                                          ? nlohmann::json(c.local_intensity_g_per_kwh)
                                                          : nlohmann::json(nullptr)}};
    clients.push_back({{"id", c.client_id},
                       {"address", c.address},
                       {"device_profile", c.device_profile},
                       {"num_examples", c.num_examples},
                       {"training", c.training},
                       {"rounds_selected", c.rounds_selected},
                       {"rounds_completed", c.rounds_completed},
                       {"rounds_failed", c.rounds_failed},
                       {"heartbeats", c.heartbeats},
                       {"seconds_since_message", c.seconds_since_message},
                       {"device", std::move(d)}});
  }
  j["clients"] = std::move(clients);
  j["clients_omitted"] = s.clients_omitted;
  // Client-supplied strings may hold invalid UTF-8: replace, never throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string RenderStatusHtml(const CoordinatorStatus& s, int refresh_seconds) {
  std::string h;
  h += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  if (refresh_seconds > 0) h += fmt::format("<meta http-equiv=\"refresh\" content=\"{}\">\n", refresh_seconds);
  h += "<title>Verdant: " + HtmlEscape(s.run_id) + "</title>\n<style>\n"
       "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1b2b1b}\n"
       "h1{color:#2e7d32;margin-bottom:0}\n.sub{color:#555;margin-top:.2em}\n"
       "table{border-collapse:collapse;margin:.6em 0}\n"
       "td,th{border:1px solid #cfd8cf;padding:.25em .6em;text-align:right}\n"
       "th{background:#e8f5e9}\ntd.l,th.l{text-align:left}\n"
       ".state{display:inline-block;padding:.1em .5em;border-radius:.3em;background:#c8e6c9}\n"
       "</style></head><body>\n";
  h += "<h1>Verdant coordinator</h1>\n";
  h += fmt::format(
      "<p class=\"sub\">run <b>{}</b> &middot; <span class=\"state\">{}</span> &middot; round {} of {} "
      "({} completed) &middot; up {:.0f} s &middot; refreshes every {} s &middot; "
      "<a href=\"/status\">JSON</a> &middot; <a href=\"/metrics\">metrics</a></p>\n",
      HtmlEscape(s.run_id), HtmlEscape(s.state), s.current_round, s.rounds_planned, s.rounds_completed,
      s.uptime_seconds, refresh_seconds);
  h += "<h2>Totals</h2>\n<table>\n";
  auto row = [&h](std::string_view k, const std::string& v) {
    h += fmt::format("<tr><th class=\"l\">{}</th><td>{}</td></tr>\n", k, v);
  };
  row("clients connected", fmt::format("{} ({} training, {} sessions)", s.clients_connected, s.clients_training,
                                       s.sessions_open));
  row("clients joined / left", fmt::format("{} / {}", s.clients_joined_total, s.clients_left_total));
  row("client-rounds selected / completed / failed",
      fmt::format("{} / {} / {}", s.clients_selected_total, s.client_results_total, s.client_failures_total));
  row("heartbeats", std::to_string(s.heartbeats_total));
  row("bytes up / down", fmt::format("{} / {}", s.bytes_up_total, s.bytes_down_total));
  row("device energy", fmt::format("{:.3f} J", s.energy_joules_total));
  row("emissions (operational)", fmt::format("{:.6f} gCO2e", s.emissions_g_total));
  row("rounds deferred", fmt::format("{} ({:.1f} h of grid time)", s.deferrals_total,
                                     s.deferred_seconds_total / 3600.0));
  if (s.round_seconds.count > 0) {
    row("mean round time", fmt::format("{:.3f} s", s.round_seconds.sum / static_cast<double>(s.round_seconds.count)));
  }
  h += "</table>\n";
  if (s.last_round) {
    const auto& r = *s.last_round;
    h += "<h2>Last round</h2>\n<table>\n";
    row("round", std::to_string(r.round));
    row("started (UTC)", HtmlEscape(r.started_utc));
    row("selected / completed / failed", fmt::format("{} / {} / {}", r.selected, r.completed, r.failed));
    row("accuracy", r.accuracy ? fmt::format("{:.4f}", *r.accuracy) : "not evaluated");
    row("train loss", fmt::format("{:.4f}", r.train_loss));
    row("time", fmt::format("{:.3f} s", r.wall_seconds));
    row("bytes up / down", fmt::format("{} / {}", r.bytes_up, r.bytes_down));
    row("energy / emissions", fmt::format("{:.3f} J / {:.6f} gCO2e", r.energy_joules, r.emissions_g));
    h += "</table>\n";
  }
  h += fmt::format("<h2>Clients ({})</h2>\n", s.clients_connected);
  h += "<table>\n<tr><th class=\"l\">id</th><th class=\"l\">address</th><th class=\"l\">zone</th>"
       "<th>battery</th><th class=\"l\">power</th><th class=\"l\">network</th><th class=\"l\">state</th>"
       "<th>selected</th><th>completed</th><th>failed</th><th>heard</th></tr>\n";
  for (const auto& c : s.clients) {
    std::string battery = c.battery_percent >= 0 ? fmt::format("{:.0f}%{}", c.battery_percent, c.charging ? " +" : "")
                                                 : std::string("?");
    std::string state = c.training ? "training" : c.idle ? "idle" : "ready";
    h += fmt::format(
        "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td>"
        "<td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0f} s ago</td></tr>\n",
        HtmlEscape(c.client_id), HtmlEscape(c.address), HtmlEscape(c.zone), battery, HtmlEscape(c.power_source),
        HtmlEscape(c.network), state, c.rounds_selected, c.rounds_completed, c.rounds_failed,
        c.seconds_since_message);
  }
  h += "</table>\n";
  if (s.clients_omitted > 0) h += fmt::format("<p>... and {} more clients (not listed).</p>\n", s.clients_omitted);
  h += "</body></html>\n";
  return h;
}

Result<std::unique_ptr<StatusServer>> StatusServer::Start(const StatusServerOptions& options,
                                                          StatusSnapshotFn snapshot) {
  if (!snapshot) return InvalidArgumentError("status endpoint: no snapshot function");
  if (!IsIpAddress(options.address) && options.address != "localhost") {
    return InvalidArgumentError("status endpoint: '" + options.address +
                                "' is not an IP address (e.g. 127.0.0.1, or 0.0.0.0 for every interface)");
  }
  if (options.threads < 1 || options.threads > 16) return InvalidArgumentError("status endpoint: threads must be 1..16");
  auto s = std::make_unique<StatusServerImpl>(options, std::move(snapshot));
  VERDANT_RETURN_IF_ERROR(s->Bind());
  if (!IsLoopback(options.address)) {
    spdlog::warn("status endpoint on {}:{} is reachable from other machines and has no authentication",
                 options.address, s->port());
  }
  spdlog::info("status endpoint: url=http://{}:{}/ metrics=/metrics status=/status", options.address, s->port());
  return std::unique_ptr<StatusServer>(std::move(s));
}

}  // namespace verdant
