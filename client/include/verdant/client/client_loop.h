// verdant/client/client_loop.h
//
// ClientLoop: the edge client's session with the coordinator. It connects
// (secure handshake), says Hello, heartbeats, and for each TrainTask
// receives the model in chunks, trains through a LocalTrainer, encodes
// delta = local - global with the task's codec and streams it back. The
// model arrives whole, or as a delta against the version the client still
// holds (downlink "delta:<codec>"). Top-k uplinks go through error feedback,
// whose residual survives reconnects and, with state_dir, restarts. It
// reconnects with exponential backoff and jitter when the connection drops,
// and exits cleanly when the coordinator says Bye. With `metering` set, it
// measures the energy of each task's training and encoding (RAPL, or the
// battery while discharging; energy/meter.h) and reports it in
// TrainResult.energy; a model-only device reports nothing and the
// coordinator models its energy.
//   ClientLoop loop(options, trainer);       // trainer: LocalTrainer&
//   Status st = loop.Run();                  // blocks; Stop() from another thread
// Thread-safety: Run() from one thread; Stop() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verdant/compression/codec.h"
#include "verdant/compression/error_feedback.h"
#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/energy/device_state.h"
#include "verdant/energy/meter.h"
#include "verdant/transport/session.h"

namespace verdant {

// What one TrainTask asks of the local trainer.
struct TaskSpec {
  uint64_t round = 0;
  std::string model_name;
  uint32_t local_epochs = 1;
  uint32_t batch_size = 32;
  float learning_rate = 0.05f;
  float proximal_mu = 0.0f;
  uint64_t max_examples = 0;
  uint64_t seed = 0;
};

struct TaskOutcome {
  uint64_t num_examples = 0;  // the weight of this update
  double train_loss = 0.0;
  double train_seconds = 0.0;
};

// Trains locally. The LibTorch implementation is TorchLocalTrainer
// (torch_local_trainer.h); tests and the synthetic benchmark use others.
class LocalTrainer {
 public:
  virtual ~LocalTrainer() = default;
  LocalTrainer(const LocalTrainer&) = delete;
  LocalTrainer& operator=(const LocalTrainer&) = delete;
  virtual std::string_view Name() const = 0;
  // Examples in the local training set (reported in Hello).
  virtual uint64_t num_examples() const = 0;
  // Trains from `global` and writes delta = local - global into `delta`
  // (resized to global.size()). kInvalidArgument for an unknown model or a
  // size mismatch.
  virtual Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global,
                                    std::vector<float>& delta) = 0;

 protected:
  LocalTrainer() = default;
};

struct ClientLoopOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 7070;
  std::string name;                  // a label; the coordinator derives the id
  ClientConnection::Options connection;
  wire::DeviceState device_state;    // reported in Hello and heartbeats (when no provider)
  // Live device state (battery, power, network, zone), read at Hello and at
  // every heartbeat; not owned; nullptr = the fixed `device_state`.
  const energy::DeviceStateProvider* state_provider = nullptr;
  std::string device_profile;        // energy profile name reported in Hello
  // Reconnect attempts in a row before Run() gives up (-1 = forever). The
  // count and the backoff start again after a session that was welcomed, so
  // a coordinator restart costs one short wait, however many came before.
  int max_reconnects = 5;
  Duration backoff_initial = std::chrono::milliseconds(500);
  Duration backoff_max = std::chrono::seconds(30);
  uint64_t seed = 0;                 // jitter and stochastic codecs
  // Where client state survives a restart (the error-feedback residual of
  // top-k uplinks, `error_feedback.bin`). "" = in memory only (it still
  // survives reconnects within the process).
  std::string state_dir;
  // Measure the energy of each task's training + encoding. The meter is
  // chosen per task with energy::MakeBestMeter (RAPL if readable, else the
  // battery if discharging), so it follows the power state; when only the
  // model meter is left, nothing is reported. nullopt = never measure.
  std::optional<energy::MeterSelectionOptions> metering;
  // How often a running measurement samples its counters (RAPL wraps after
  // ~262 kJ: at least once per wrap period).
  Duration meter_sample_interval = std::chrono::seconds(60);
};

class ClientLoop {
 public:
  ClientLoop(ClientLoopOptions options, LocalTrainer& trainer);
  // Returns OK after the coordinator's Bye; the last error when reconnects
  // are exhausted; kFailedPrecondition when the coordinator rejects us
  // (version or codec mismatch, not trusted).
  Status Run();
  void Stop() { stop_ = true; }
  uint64_t tasks_completed() const { return tasks_completed_; }

 private:
  Status RunSession(ClientConnection& conn);
  Status HandleTrainTask(ClientConnection& conn, const wire::TrainTask& task);
  wire::DeviceState CurrentState() const;
  Result<UpdateCodec*> CodecFor(const std::string& spec);
  // The meter for the next task (nullptr: none measures), logging changes.
  std::unique_ptr<energy::EnergyMeter> PickMeter();
  Status EncodeWithErrorFeedback(UpdateCodec& codec, uint64_t tag, std::span<const float> delta, Rng& rng,
                                 ByteBuffer& out);

  ClientLoopOptions options_;
  LocalTrainer& trainer_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> tasks_completed_{0};
  bool welcomed_ = false;  // the current session got its Welcome
  uint32_t chunk_bytes_ = kDefaultChunkBytes;
  // One codec instance per spec, kept across rounds and reconnects.
  std::map<std::string, std::unique_ptr<UpdateCodec>> codecs_;
  Rng rng_;
  // The global model as last received (a downlink delta applies to it).
  std::vector<float> held_model_;
  // Model-sized working buffers kept across tasks: a fresh 40 MB buffer per
  // round costs a page fault per 4 KiB (docs/performance.md).
  ByteBuffer model_bytes_;
  std::vector<float> delta_;
  ByteBuffer encoded_;
  uint64_t held_version_ = 0;  // 0 = none
  std::vector<float> scratch_;
  // Residual of biased (top-k) uplink codecs; kept across rounds,
  // reconnects and (with state_dir) restarts.
  ErrorFeedback error_feedback_;
  bool error_feedback_loaded_ = false;
  std::string last_meter_method_ = "-";  // for logging meter changes
};

// TrainResult.metrics key a client sets (with no payload) when its local
// training failed: the coordinator fails that client's round at once.
inline constexpr std::string_view kTrainFailedMetric = "train_failed";

// The wire form of a device state.
wire::DeviceState ToWire(const energy::DeviceState& s);

// Every codec this build can run, as "name/version" for Hello.
std::vector<std::string> SupportedCodecs();

}  // namespace verdant
