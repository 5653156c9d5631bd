// verdant/server/status_server.h
//
// StatusServer: the coordinator's HTTP endpoint (cpp-httplib) for people and
// monitoring. GET /metrics is the Prometheus text exposition format (0.0.4),
// GET /status a JSON document, GET / a small self-contained HTML page that
// refreshes itself; any other path is 404; only GET/HEAD are served. Every
// request takes one Coordinator::Snapshot() (locks held only while copying)
// and renders it; nothing in a handler blocks the round. Off unless started;
// binds 127.0.0.1 unless told otherwise (it has no authentication).
//   StatusServerOptions o;  o.port = 9090;
//   auto http = StatusServer::Start(o, [&](size_t n) { return coord.Snapshot(n); });
//   ... (*http)->port() ...;  (*http)->Stop();   // or let it go out of scope
// The metric names are listed in docs/observability.md.
// Thread-safety: Start/Stop from one thread; handlers run on the server's
// own threads and only call the snapshot function, which must be thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "verdant/core/status.h"
#include "verdant/server/coordinator_status.h"

namespace verdant {

struct StatusServerOptions {
  std::string address = "127.0.0.1";  // an IP address; a public one only when asked for
  uint16_t port = 0;                  // 0 = any free port (see StatusServer::port())
  int threads = 2;                    // request threads
  size_t max_clients_listed = 200;    // per-client rows in /status and the page
  int refresh_seconds = 5;            // the HTML page reloads itself this often
};

// What a request reads: a snapshot with up to `max_clients` client rows.
using StatusSnapshotFn = std::function<CoordinatorStatus(size_t max_clients)>;

class StatusServer {
 public:
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;
  virtual ~StatusServer() = default;
  // Binds and serves on its own threads. kInvalidArgument for a bad address
  // or options; kUnavailable when the address cannot be bound.
  static Result<std::unique_ptr<StatusServer>> Start(const StatusServerOptions& options, StatusSnapshotFn snapshot);
  virtual uint16_t port() const = 0;
  virtual const std::string& address() const = 0;
  // Stops serving and joins the threads. Idempotent; the destructor calls it.
  virtual void Stop() = 0;

 protected:
  StatusServer() = default;
};

// The renderers, public for tests and for tools that write snapshots to files.
std::string RenderPrometheusMetrics(const CoordinatorStatus& s);
std::string RenderStatusJson(const CoordinatorStatus& s);
std::string RenderStatusHtml(const CoordinatorStatus& s, int refresh_seconds);

}  // namespace verdant
