// verdant/server/coordinator_status.h
//
// CoordinatorStatus: a point-in-time copy of what a running coordinator is
// doing — run state, counters since start, the last round's record and a
// summary of each connected client — for the status/metrics endpoint
// (status_server.h) and for tests. A plain value: copying it out is the only
// time the coordinator's locks are held.
//   CoordinatorStatus s = coordinator.Snapshot(/*max_clients=*/100);
//   std::printf("round %llu, %zu clients\n", s.current_round, s.clients_connected);
// Thread-safety: a value type; Coordinator::Snapshot() is thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "verdant/server/run_report.h"

namespace verdant {

// Fixed-bucket histogram of round durations, seconds (Prometheus style:
// bucket i counts observations <= kBoundsSeconds[i]; cumulative counts are
// computed when rendered).
struct RoundLatencyHistogram {
  static constexpr std::array<double, 13> kBoundsSeconds = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 1800};
  std::array<uint64_t, kBoundsSeconds.size()> counts{};  // per bucket, not cumulative
  uint64_t count = 0;  // every observation, including those above the last bound
  double sum = 0;      // seconds
  void Observe(double seconds) {
    for (size_t i = 0; i < kBoundsSeconds.size(); ++i) {
      if (seconds <= kBoundsSeconds[i]) {
        ++counts[i];
        break;
      }
    }
    ++count;
    sum += seconds;
  }
};

// One connected (welcomed) client.
struct ClientStatusEntry {
  std::string client_id;
  std::string address;         // remote IP:port
  std::string device_profile;  // as named in its Hello ("" = the default)
  // The last device state it reported (Hello or Heartbeat).
  double battery_percent = -1;  // -1 = unknown
  bool charging = false;
  std::string power_source;  // "grid", "solar", "battery" or "unknown"
  std::string network;       // "unmetered", "cellular" or "unknown"
  bool idle = false;
  std::string zone;
  double local_intensity_g_per_kwh = 0;  // 0 = not reported
  uint64_t num_examples = 0;
  uint64_t rounds_selected = 0, rounds_completed = 0, rounds_failed = 0;
  bool training = false;               // holds a task of the current round
  uint64_t heartbeats = 0;             // heartbeats received on this session
  double seconds_since_message = 0;    // since the last message of any kind
};

struct CoordinatorStatus {
  std::string run_id;
  // "starting", "waiting_for_clients", "selecting", "deferred", "training",
  // "aggregating", "evaluating", "finished", "stopped" or "failed".
  std::string state = "starting";
  uint64_t rounds_planned = 0;
  uint64_t current_round = 0;     // 0 before round 1
  uint64_t rounds_completed = 0;  // rounds recorded
  double uptime_seconds = 0;      // since the coordinator was constructed
  // Connections.
  size_t sessions_open = 0;       // handshake done, Hello or not
  size_t clients_connected = 0;   // welcomed clients
  size_t clients_training = 0;    // holding a task right now
  uint64_t clients_joined_total = 0;
  uint64_t clients_left_total = 0;  // welcomed clients whose session closed
  uint64_t heartbeats_total = 0;
  // Rounds, summed over recorded rounds.
  uint64_t clients_selected_total = 0;
  uint64_t client_results_total = 0;   // completed client-rounds
  uint64_t client_failures_total = 0;  // failed client-rounds
  uint64_t deferrals_total = 0;        // rounds a selector held for a cleaner window
  double deferred_seconds_total = 0;   // grid time held, seconds
  // Socket bytes over every session, open or closed (frame headers and record overhead included).
  uint64_t bytes_up_total = 0;    // received by the coordinator
  uint64_t bytes_down_total = 0;  // sent by the coordinator
  // The ledger's totals over recorded rounds.
  double energy_joules_total = 0;   // device energy (compute + radio + idle), J
  double emissions_g_total = 0;     // operational gCO2e
  double embodied_g_total = 0;      // embodied gCO2e share
  RoundLatencyHistogram round_seconds;  // wall time per recorded round
  std::optional<RoundRecord> last_round;
  // Up to the requested number of clients, sorted by id; the rest are counted.
  std::vector<ClientStatusEntry> clients;
  size_t clients_omitted = 0;
};

}  // namespace verdant
