// verdant/server/coordinator.h
//
// Coordinator: the round state machine. It is the SessionHandler of the
// transport (Hello/Welcome, heartbeats, uploads reassembled on each
// session's strand) and runs the round loop on its own thread: wait for
// clients -> select -> send TrainTasks -> collect results until all report or
// the deadline passes (late or disconnected clients become failures of that
// round, never a crash) -> aggregate (streaming, via the Strategy) ->
// evaluate -> checkpoint and record. With an out_dir, the run's state lives
// in a RunStore (run_store.h: SQLite + checksummed checkpoint files) and
// every round is committed there before it counts as done, so a coordinator
// killed at any point continues with `resume` from its last completed round
// (docs/operations.md).
//   Coordinator coord(options, InitialModel(), std::move(strategy), std::move(selector),
//                     &evaluator, SystemClock::Default());
//   auto server = TcpServer::Start(tcp_options, coord);
//   auto summary = coord.Run();          // blocks until the rounds are done or Stop()
// Thread-safety: the SessionHandler callbacks and Stop() are thread-safe;
// Run() is called once, from one thread.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/clock.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/rng.h"
#include "verdant/energy/carbon.h"
#include "verdant/energy/energy_model.h"
#include "verdant/energy/ledger.h"
#include "verdant/server/coordinator_status.h"
#include "verdant/server/evaluator.h"
#include "verdant/server/run_report.h"
#include "verdant/server/run_store.h"
#include "verdant/server/selector.h"
#include "verdant/transport/session.h"

namespace verdant {

// Energy and carbon accounting (docs/energy-model.md, docs/carbon.md).
struct CoordinatorEnergyOptions {
  // Grid intensity per zone (traces, forecast view, constant). Not owned;
  // nullptr = the world average (475 gCO2e/kWh) for every zone.
  const energy::CarbonIntensitySource* intensity = nullptr;
  // Device profiles by name (a client names its profile in Hello); unknown
  // names fall back to `default_profile`. Built-in profiles are always known.
  std::vector<energy::DeviceProfile> profiles;
  std::string default_profile = "phone-midrange";
  // The grid time a round reads intensities for. Unset: the wall clock.
  // Set (demo, replay): round r starts at grid_time_start + (r-1) x
  // grid_time_per_round, plus any deferral so far.
  std::optional<TimePoint> grid_time_start;
  Duration grid_time_per_round = std::chrono::hours(1);
  // How long a carbon-deferral selector may hold one round (0 = never).
  Duration max_defer = Duration::zero();
  // A client's measured energy (TrainResult.energy) is booked as its compute
  // energy (x the profile's PUE) when plausible; a mean power above this is
  // rejected as implausible and the model is used instead. Default 10 kW.
  double max_reported_power_w = 10'000;
  // Called instead of waiting when a deferral holds a round and
  // grid_time_start is unset: the simulator (docs/simulator.md) advances its
  // ManualClock by the deferral and replays the fleet up to the new time.
  // Runs on the round thread without the coordinator's locks held, so it may
  // call the SessionHandler methods. Unset: the round thread waits (real time).
  std::function<void(Duration)> on_defer;
};

// Checks a client's EnergyReport before the ledger trusts it: compute_joules
// finite and > 0; seconds finite, > 0 and at most `max_seconds` (the time
// the coordinator has waited for the task, with slack); mean power at most
// `max_power_w`; method a measurement tag ("kind:detail", e.g.
// "rapl:package-0", "battery:BAT0"; at most 96 characters of [A-Za-z0-9:+/_.-],
// never "model:..."). kInvalidArgument saying which check failed.
Status ValidateEnergyReport(const wire::EnergyReport& report, double max_seconds, double max_power_w);

struct CoordinatorOptions {
  uint64_t rounds = 10;
  size_t min_clients = 1;          // clients connected before round 1 starts
  size_t clients_per_round = 0;    // 0 = every connected client
  Duration wait_for_clients = std::chrono::minutes(5);  // then fail with kDeadlineExceeded
  Duration round_timeout = std::chrono::minutes(5);     // per-round deadline for results
  std::string model_name = "mlp";  // sent in TrainTask; the client builds it from its model zoo
  std::string uplink_codec = "identity";
  // How the global model travels to clients: "identity" (float32), "fp16",
  // or "delta:<codec>" (e.g. "delta:int8"): a client that holds the previous
  // broadcast gets the change encoded with <codec>, others the whole model
  // in float32. The coordinator keeps what clients hold and carries the
  // downlink's coding error into the next round's delta.
  std::string downlink_codec = "identity";
  uint32_t chunk_bytes = kDefaultChunkBytes;
  uint32_t heartbeat_interval_ms = 5000;
  uint64_t seed = 1;
  std::string run_id = "run";
  std::string out_dir;             // "" = no files
  // With an evaluator: evaluate the global model after every N-th round and
  // after the run's last round (`rounds`); 0 = never. Rounds not evaluated
  // have no accuracy (blank in rounds.csv).
  uint32_t evaluate_every = 1;
  CoordinatorEnergyOptions energy;
  // Persistence (docs/operations.md). With out_dir set and `persist`, the
  // run's state goes to out_dir/run.db and a checkpoint per round.
  bool persist = true;
  // Continue the run in out_dir from its last completed round instead of
  // starting one. kNotFound / kDataLoss / kFailedPrecondition from Run()
  // when out_dir holds no run, a damaged one, or one started with another
  // configuration (run_id, model, strategy, selector, seed, codecs,
  // clients_per_round, over_selection must match; `rounds` may grow).
  bool resume = false;
  // A fresh run in an out_dir that already holds one replaces it (true, as
  // the demo does) or fails with kAlreadyExists (false, `verdant server`).
  bool replace_existing_run = true;
  // Over-selection for stragglers: with clients_per_round = K > 0, select
  // ceil(K x (1 + over_selection)) clients and close the round as soon as K
  // results are in; the others are recorded as "abandoned" (a failure of
  // that round for the strategy, the selector and the client's history).
  // 0 = off. Must be >= 0.
  double over_selection = 0;
};

// Parses CoordinatorOptions::downlink_codec: {is_delta, codec} (codec null
// for "identity"). kInvalidArgument naming the valid forms.
Result<std::pair<bool, std::unique_ptr<UpdateCodec>>> ParseDownlinkCodec(const std::string& spec);

class Coordinator final : public SessionHandler {
 public:
  Coordinator(CoordinatorOptions options, ParameterVector initial_model, std::unique_ptr<Strategy> strategy,
              std::unique_ptr<ClientSelector> selector, Evaluator* evaluator, Clock& clock);
  ~Coordinator() override;

  // Runs every round; returns the run summary. kDeadlineExceeded when not
  // enough clients connect in time; kCancelled after Stop() (the summary of
  // the rounds done so far is still written).
  Result<RunSummary> Run();
  // Ends the run now: the current round is abandoned (neither aggregated
  // nor recorded; with persistence a resume runs it again). Thread-safe;
  // async-signal handlers should call it from a normal thread.
  void Stop();
  // Graceful shutdown (SIGTERM): lets the current round finish and commit
  // if it does within `grace`, else abandons it, then Run() returns OK with
  // summary status "stopped". Thread-safe.
  void Drain(Duration grace);
  // Called after each round (on the round thread), for progress output.
  void SetRoundCallback(std::function<void(const RoundRecord&)> cb) { round_cb_ = std::move(cb); }

  const ParameterVector& global_model() const { return global_; }
  // The model as clients hold it after the last broadcast: global_model()
  // for the identity downlink, else the reconstruction clients compute.
  std::span<const float> broadcast_model() const {
    return broadcast_.empty() ? global_.values() : std::span<const float>(broadcast_);
  }
  size_t connected_clients() const;
  // A copy of the run's state and counters, with up to `max_clients` client
  // summaries (sorted by id; the rest counted in clients_omitted). Holds the
  // coordinator's locks only while copying; safe from any thread, e.g. an
  // HTTP handler, while Run() runs.
  CoordinatorStatus Snapshot(size_t max_clients = 0) const;

  // SessionHandler
  void OnSessionOpen(const SessionPtr& session) override;
  void OnMessage(const SessionPtr& session, wire::Envelope&& message) override;
  void OnChunk(const SessionPtr& session, const ChunkView& chunk) override;
  void OnSessionClosed(const SessionPtr& session, const Status& reason) override;

 private:
  // One upload being reassembled, with the checks of transport's
  // PayloadAssembler (order, stream id, declared size; allocation follows
  // the bytes received), into a buffer recycled through upload_pool_.
  struct Upload {
    wire::PayloadInfo info;
    ByteBuffer data;
    uint32_t received_chunks = 0;
    bool complete() const {
      return received_chunks == info.num_chunks() && data.size() == info.payload_bytes();
    }
  };
  struct ClientEntry {
    SessionPtr session;
    std::string client_id;
    bool welcomed = false;
    wire::Hello hello;
    wire::DeviceState state;
    // The task this client owes, if any.
    uint64_t task_id = 0;
    uint64_t task_round = 0;
    std::unique_ptr<Upload> upload;
    wire::TrainResult upload_header;
    uint64_t held_version = 0;  // model version the client holds (0 = none)
    // For the status endpoint.
    std::chrono::steady_clock::time_point last_message = std::chrono::steady_clock::now();
    uint64_t heartbeats = 0;
    // RunRound's per-client caches (round thread, under mu_), so a round
    // does not look up every connected client's profile and history by
    // name nor re-run its energy estimate while nothing it depends on moved:
    // the energy model of the Hello's profile; the client's history_ entry
    // (nullptr: none yet) as of history_epoch_ `history_epoch` (0: not
    // looked up); the last estimate and the inputs it was computed from.
    const energy::EnergyModel* model = nullptr;
    const ClientHistory* history = nullptr;
    uint64_t history_epoch = 0;
    struct EstimateInputs {
      uint64_t samples = 0;
      uint64_t model_bytes = 0;
      int link = -1;  // energy::LinkType, or -1 for none
      friend bool operator==(const EstimateInputs&, const EstimateInputs&) = default;
    };
    std::optional<EstimateInputs> estimate_inputs;
    double expected_energy_joules = 0;  // 0 = no estimate
    double expected_round_seconds = 0;
  };
  struct Event {
    enum Kind { kResult, kGone, kBadUpload } kind;
    SessionId session = 0;
    std::string client_id;
    uint64_t task_id = 0;
    wire::TrainResult header;
    ByteBuffer payload;
    Status status;
  };

  void HandleHello(const SessionPtr& s, ClientEntry& e, const wire::Hello& hello);
  void HandleTrainResult(const SessionPtr& s, ClientEntry& e, const wire::TrainResult& r);
  void HandleChunk(const SessionPtr& s, ClientEntry& e, const ChunkView& c);
  // The session's entry (nullptr once it is gone), its last_message stamped.
  ClientEntry* TouchEntry(const SessionPtr& s);
  void Push(Event ev);
  // An empty buffer for an upload of `declared_bytes`, from upload_pool_
  // when it has one (so a model-sized buffer is not allocated, page-faulted
  // and unmapped for every upload of every round). Thread-safe.
  ByteBuffer TakeUploadBuffer(uint64_t declared_bytes);
  // Gives a consumed upload's buffer back to the pool. Thread-safe.
  void ReturnUploadBuffer(ByteBuffer buffer);
  Status WaitForClients();
  Result<RoundRecord> RunRound(uint64_t round);
  // Sends Bye to every client and closes the sessions after flushing.
  void SayGoodbye(const std::string& reason);
  // The run state Snapshot() reports (CoordinatorStatus::state).
  void SetState(const char* state);
  // Socket bytes over every session, open or closed. Call with mu_ held.
  // Bytes received from (up) and sent to (down) clients over the run: closed
  // sessions plus every open session's counters, in one pass. Under mu_.
  struct ByteTotals {
    uint64_t up = 0, down = 0;
  };
  ByteTotals TotalBytes() const;
  // The energy model for a client's profile (never null).
  const energy::EnergyModel& ModelFor(const std::string& profile);
  TimePoint GridTime(uint64_t round) const;
  // Ledger row for a client-round, computed in `round_ledger` (rows enter
  // ledger_ when the round commits); fills the energy fields of `rec`.
  // `report`: the client's measured energy, if it sent one; `task_seconds`:
  // how long the task had been out when its result arrived.
  std::optional<energy::ClientRoundRecord> Account(energy::Ledger& round_ledger, ClientRoundRecord& rec,
                                                   const wire::DeviceState& state, const std::string& profile,
                                                   uint64_t samples, uint64_t round,
                                                   const wire::EnergyReport* report = nullptr,
                                                   double task_seconds = 0);
  // What must not change when a run resumes ("key=value" lines).
  std::string Fingerprint() const;
  CoordinatorCheckpoint MakeCheckpoint(uint64_t round) const;
  // Opens (or creates) the run store and, on resume, restores the state and
  // rewrites the report files from it; adds the restored rounds to `summary`.
  Status OpenStore(RunSummary& summary);
  bool draining() const;

  CoordinatorOptions options_;
  ParameterVector global_;  // round thread only
  // The model's size and layout, fixed for the run: what io threads check
  // uploads against (they must not read global_, which the round thread
  // replaces after each aggregation).
  const uint64_t num_params_;
  const uint64_t layout_fingerprint_;
  uint64_t model_version_ = 1;  // versions start at 1; 0 means "no model"
  // Downlink: what clients hold, when it differs from global_ (fp16/delta).
  std::unique_ptr<UpdateCodec> downlink_codec_;  // the codec of fp16 / delta:<codec>
  bool downlink_delta_ = false;
  std::vector<float> broadcast_;                 // the model clients hold (empty: = global_)
  uint64_t broadcast_version_ = 0;               // its version (0 = none yet)
  std::unique_ptr<Strategy> strategy_;
  std::unique_ptr<ClientSelector> selector_;
  std::unique_ptr<UpdateCodec> uplink_codec_;
  Evaluator* evaluator_;
  Clock& clock_;
  Rng rng_;
  std::unique_ptr<RunReport> report_;
  // Energy and carbon.
  std::unique_ptr<energy::CarbonIntensitySource> default_intensity_;
  const energy::CarbonIntensitySource* intensity_ = nullptr;
  // By profile name; hashed, since ModelFor runs for every candidate of every
  // round and a simulated fleet has one profile per device.
  std::unordered_map<std::string, std::unique_ptr<energy::EnergyModel>> energy_models_;
  // options_.energy.profiles by name (views into that list, which is not
  // changed after construction).
  std::unordered_map<std::string_view, size_t> profile_index_;
  energy::LedgerOptions ledger_options_;
  energy::Ledger ledger_;
  std::unique_ptr<RunStore> store_;
  // Participation history by client id, across sessions (the registry).
  // Round thread only.
  std::map<std::string, ClientHistory> history_;
  // Bumped when history_ is replaced wholesale (resume), which invalidates
  // the ClientHistory pointers cached in ClientEntry. Round thread only.
  uint64_t history_epoch_ = 1;
  // Ids whose history_ entries changed since status_history_ was last
  // updated (the selected clients of every round attempt, including one
  // that failed and is retried), for status_history_. Round thread only.
  std::vector<std::string> history_touched_;
  uint64_t first_round_ = 1;
  Duration grid_offset_ = Duration::zero();  // deferrals so far (grid time)
  bool warned_zone_fallback_ = false;
  std::function<void(const RoundRecord&)> round_cb_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<SessionId, ClientEntry> clients_;
  // Welcomed clients by id, in id order: RunRound lists its candidates by
  // walking it, already sorted as selectors receive them.
  std::map<std::string, SessionId, std::less<>> by_client_id_;
  uint64_t closed_bytes_up_ = 0, closed_bytes_down_ = 0;
  uint64_t round_bytes_up0_ = 0, round_bytes_down0_ = 0;
  std::deque<Event> events_;
  // Buffers of consumed uploads, reused by later uploads of the same round.
  // It never holds more buffers than uploads were once in flight together
  // (a buffer is only allocated when the pool is empty) nor more than the
  // round's tasks, and is emptied when the next round's tasks go out, so
  // the previous round's buffers do not sit idle through the broadcast.
  std::vector<ByteBuffer> upload_pool_;
  size_t upload_pool_limit_ = 0;
  bool finishing_ = false;  // SayGoodbye ran: no more Welcomes (guarded by mu_)
  std::atomic<bool> stop_{false};
  std::atomic<bool> drain_{false};
  std::chrono::steady_clock::time_point drain_deadline_;  // guarded by mu_
  uint64_t next_task_id_ = 0;
  uint64_t current_round_ = 0;

  // Status endpoint: run-level figures, updated by the round thread under
  // status_mu_ (never held together with mu_); client counters as atomics.
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  mutable std::mutex status_mu_;
  CoordinatorStatus status_;  // without clients and connection figures (Snapshot adds them)
  // Per-client participation (selected, completed, failed) as of the last
  // round: a copy of history_, which only the round thread touches.
  std::map<std::string, std::array<uint64_t, 3>> status_history_;
  bool status_history_full_ = false;  // status_history_ copied from all of history_ once
  std::atomic<uint64_t> heartbeats_total_{0}, joined_total_{0}, left_total_{0};
};

}  // namespace verdant
