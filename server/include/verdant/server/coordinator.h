// verdant/server/coordinator.h
//
// Coordinator: the round state machine. It is the SessionHandler of the
// transport (Hello/Welcome, heartbeats, uploads reassembled on each
// session's strand) and runs the round loop on its own thread: wait for
// clients -> select -> send TrainTasks -> collect results until all report or
// the deadline passes (late or disconnected clients become failures of that
// round, never a crash) -> aggregate (streaming, via the Strategy) ->
// evaluate -> record.
//   Coordinator coord(options, InitialModel(), std::move(strategy), std::move(selector),
//                     &evaluator, SystemClock::Default());
//   auto server = TcpServer::Start(tcp_options, coord);
//   auto summary = coord.Run();          // blocks until the rounds are done or Stop()
// Thread-safety: the SessionHandler callbacks and Stop() are thread-safe;
// Run() is called once, from one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/clock.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/rng.h"
#include "verdant/energy/carbon.h"
#include "verdant/energy/energy_model.h"
#include "verdant/energy/ledger.h"
#include "verdant/server/evaluator.h"
#include "verdant/server/run_report.h"
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
  // Called instead of waiting when a deferral holds a round and
  // grid_time_start is unset: the simulator (docs/simulator.md) advances its
  // ManualClock by the deferral and replays the fleet up to the new time.
  // Runs on the round thread without the coordinator's locks held, so it may
  // call the SessionHandler methods. Unset: the round thread waits (real time).
  std::function<void(Duration)> on_defer;
};

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
  bool evaluate_every_round = true;
  CoordinatorEnergyOptions energy;
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
  // Ends the run after the current step (thread-safe; async-signal handlers
  // should call it from a normal thread).
  void Stop();
  // Called after each round (on the round thread), for progress output.
  void SetRoundCallback(std::function<void(const RoundRecord&)> cb) { round_cb_ = std::move(cb); }

  const ParameterVector& global_model() const { return global_; }
  // The model as clients hold it after the last broadcast: global_model()
  // for the identity downlink, else the reconstruction clients compute.
  std::span<const float> broadcast_model() const {
    return broadcast_.empty() ? global_.values() : std::span<const float>(broadcast_);
  }
  size_t connected_clients() const;

  // SessionHandler
  void OnSessionOpen(const SessionPtr& session) override;
  void OnMessage(const SessionPtr& session, wire::Envelope&& message) override;
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
    // History for selectors.
    uint64_t rounds_selected = 0, rounds_completed = 0, rounds_failed = 0;
    double last_train_seconds = 0, last_train_loss = 0;
    uint64_t held_version = 0;  // model version the client holds (0 = none)
    uint64_t last_round_selected = 0;
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
  void HandleChunk(const SessionPtr& s, ClientEntry& e, const wire::Chunk& c);
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
  // Socket bytes over every session, open or closed. Call with mu_ held.
  uint64_t TotalBytesUp() const;
  uint64_t TotalBytesDown() const;
  // The energy model for a client's profile (never null).
  const energy::EnergyModel& ModelFor(const std::string& profile);
  TimePoint GridTime(uint64_t round) const;
  // Ledger row for a client-round; fills the energy fields of `rec`.
  void Account(ClientRoundRecord& rec, const wire::DeviceState& state, const std::string& profile,
               uint64_t samples, uint64_t round);

  CoordinatorOptions options_;
  ParameterVector global_;
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
  std::map<std::string, std::unique_ptr<energy::EnergyModel>, std::less<>> energy_models_;
  energy::Ledger ledger_;
  Duration grid_offset_ = Duration::zero();  // deferrals so far (grid time)
  bool warned_zone_fallback_ = false;
  std::function<void(const RoundRecord&)> round_cb_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<SessionId, ClientEntry> clients_;
  std::unordered_map<std::string, SessionId> by_client_id_;
  uint64_t closed_bytes_up_ = 0, closed_bytes_down_ = 0;
  uint64_t round_bytes_up0_ = 0, round_bytes_down0_ = 0;
  std::deque<Event> events_;
  // Buffers of consumed uploads, reused by the next ones. It never holds
  // more buffers than uploads were once in flight together (a buffer is only
  // allocated when the pool is empty), and is trimmed to the round's number
  // of tasks, so peak memory is what fresh buffers cost; steady-state memory
  // stays at that peak instead of being unmapped between rounds.
  std::vector<ByteBuffer> upload_pool_;
  size_t upload_pool_limit_ = 0;
  std::atomic<bool> stop_{false};
  uint64_t next_task_id_ = 0;
  uint64_t current_round_ = 0;
};

}  // namespace verdant
