// verdant/simulations/simulator.h
//
// The fleet simulator: runs the real Coordinator (with the real selector,
// strategy, codecs and ledger) against a replayed device fleet on virtual
// time. Nothing of the coordinator is copied: the simulator is a transport
// (in-process Sessions), a set of simulated clients that answer TrainTasks,
// and a discrete-event engine on a ManualClock (docs/simulator.md).
//   auto fleet = LoadFleet("fleet/");
//   SimulationOptions o;  o.selector = "carbon";  o.clients_per_round = 100;
//   o.intensity = traces.get();  o.out_dir = "out/";
//   auto result = RunSimulation(*fleet, o);   // rounds.csv, clients.csv, summary.json, simulation.csv
//   result->summary.numbers["emissions_g"], result->virtual_seconds, result->dropouts_unavailable
//
// A round: the coordinator selects among the devices connected (available)
// at the round's virtual start, from the device states the fleet's events
// set (sent as Hello/Heartbeat). Each selected device answers after a
// virtual duration  download/down_rate + 3 x samples x ms_per_sample +
// upload/up_rate. A device that becomes unavailable before it would finish,
// whose battery would fall below the threshold, or that would finish after
// the round timeout, drops out (its session closes with the reason: the
// coordinator records a failure). The round takes the virtual time of its
// slowest client (at most the round timeout); the next round starts one
// round interval after this one started, or when it ended if later.
//
// Thread-safety: RunSimulation is reentrant; it runs the coordinator's round
// thread and one engine thread (every simulated client runs on it, in a
// fixed order, so the same inputs give byte-identical outputs).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/status.h"
#include "verdant/energy/carbon.h"
#include "verdant/energy/energy_model.h"
#include "verdant/server/run_report.h"
#include "verdant/simulations/fleet.h"

namespace verdant::sim {

struct SimulationOptions {
  std::string selector = "random";  // CreateSelector name (random, eligible, carbon, carbon-deferral, oort, ...)
  OptionMap selector_options;
  std::string strategy = "fedavg";  // CreateStrategy name
  OptionMap strategy_options;
  size_t clients_per_round = 10;    // K (> 0)
  Duration round_interval = std::chrono::minutes(10);  // virtual time between round starts (> 0)
  // Rounds: `rounds` when > 0, else days x 24 h / round_interval.
  uint32_t days = 1;
  uint64_t rounds = 0;
  // Virtual start; unset: the fleet's first event.
  std::optional<TimePoint> start;
  std::string model = "mlp";        // model zoo name or synthetic:N (its size is what travels)
  std::string uplink_codec = "identity";
  std::string downlink_codec = "identity";
  uint64_t seed = 1;
  std::string run_id = "sim";
  std::string out_dir;              // "" = no files
  Duration round_timeout = std::chrono::minutes(30);  // virtual per-round deadline
  // Battery percent below which a device on battery drops out mid-round when
  // the selector sets no min_battery of its own.
  double battery_floor_percent = 5.0;
  // How long carbon-deferral may hold a round (virtual time; 0 = never).
  Duration max_defer = Duration::zero();
  // Grid intensity per zone. Not owned; required.
  const energy::CarbonIntensitySource* intensity = nullptr;
  // Profiles beyond the built-ins, for devices.csv's profile column.
  std::vector<energy::DeviceProfile> profiles;
  // --train: each selected device trains the received model for real
  // (LibTorch, one Trainer reused for every device) on its Dirichlet shard of
  // Fashion-MNIST; devices.csv's num_examples is then replaced by the shard
  // size, and the global model is evaluated (see eval_every). Needs the identity
  // downlink. Energy-only (false): devices answer with the received model
  // plus a tiny deterministic delta through the real codec.
  bool train = false;
  std::string data_dir;                      // Fashion-MNIST IDX folder; "" = DefaultFashionMnistDir()
  std::string partition = "dirichlet:0.5";   // partitions.h spec over the devices
  size_t eval_examples = 2000;               // test examples evaluated per round (0 = all 10,000)
  uint32_t eval_every = 1;                   // evaluate every N-th round and the last (0 = never)
  // --train: devices given the same model broadcast (the same chunk
  // messages) train from one assembled copy of it. false: each device
  // copies what it receives, as a real client does. The outputs are the
  // same either way (a test compares them); true saves a parse and a copy
  // of the model per device.
  bool share_broadcast = true;
  // Called on the round thread after each round (progress output).
  std::function<void(const RoundRecord&, uint64_t rounds, TimePoint virtual_now)> on_round;
};

struct SimulationResult {
  RunSummary summary;               // as written to summary.json
  uint64_t rounds = 0;
  uint64_t client_rounds = 0;       // tasks sent
  uint64_t completed = 0;
  uint64_t dropouts_unavailable = 0;
  uint64_t dropouts_battery = 0;
  uint64_t dropouts_deadline = 0;
  uint64_t events_applied = 0;      // fleet events replayed
  uint64_t deferrals = 0;
  double virtual_seconds = 0;       // simulation start -> last round end (deferrals included)
  double wall_seconds = 0;
};

// Runs the simulation; writes rounds.csv, clients.csv, summary.json,
// emissions.csv (the coordinator's RunReport and Ledger) and simulation.csv
// (per round: virtual start, duration, dropouts) into out_dir.
// kInvalidArgument for bad options or a device with an unknown profile;
// kFailedPrecondition when no device is ever available.
Result<SimulationResult> RunSimulation(const Fleet& fleet, const SimulationOptions& options);

}  // namespace verdant::sim
