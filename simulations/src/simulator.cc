#include "verdant/simulations/simulator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "verdant/aggregation/strategy.h"
#include "verdant/client/client_loop.h"
#include "verdant/client/model_zoo.h"
#include "verdant/client/partition.h"
#include "verdant/client/trainer.h"
#include "verdant/compression/codec.h"
#include "verdant/server/coordinator.h"
#include "verdant/server/selector.h"
#include "verdant/transport/message.h"

namespace verdant::sim {

namespace {

using Secs = std::chrono::duration<double>;

Duration ToDuration(double seconds) { return std::chrono::duration_cast<Duration>(Secs(seconds)); }

// Frame header of a length-prefixed message on the real transport.
constexpr uint64_t kFrameOverhead = 4;

class Engine;

Result<energy::DeviceProfile> BaseProfile(const std::string& name, const std::vector<energy::DeviceProfile>& extra) {
  for (const auto& p : extra) {
    if (p.name == name) return p;
  }
  return energy::BuiltinProfile(name);
}

// A device's own profile, `<base>/<device_id>`: its base profile with the
// fleet's compute speed, battery, embodied carbon and link rates.
// kInvalidArgument for an unknown base profile.
Result<energy::DeviceProfile> DeviceProfileFor(const Device& dev, const std::vector<energy::DeviceProfile>& extra) {
  auto base = BaseProfile(dev.profile, extra);
  if (!base.ok()) {
    return InvalidArgumentError("device '" + dev.id + "': unknown profile '" + dev.profile + "' (" +
                                base.status().message() + ")");
  }
  energy::DeviceProfile p = *base;
  p.name = base->name + "/" + dev.id;
  p.ms_per_sample = energy::Milliseconds(dev.ms_per_sample);
  p.battery_capacity = Energy::Joules(dev.battery_wh * 3600.0);
  p.embodied = Emissions::Grams(dev.embodied_kg * 1000.0);
  for (auto& [type, link] : p.links) {
    link.default_up = energy::DataRate::Kbps(dev.up_kbps);
    link.default_down = energy::DataRate::Kbps(dev.down_kbps);
  }
  return p;
}

// The in-process transport: a Session whose messages go to the engine's
// queue (never handled on the caller's thread: the coordinator sends while
// holding its lock).
class SimSession final : public Session {
 public:
  SimSession(Engine& engine, SessionId id, uint32_t device, std::string address)
      : engine_(engine), id_(id), device_(device), address_(std::move(address)) {}
  using Session::Send;
  SessionId id() const override { return id_; }
  const std::string& peer_id() const override { return empty_; }
  const std::string& peer_key() const override { return empty_; }
  const std::string& remote_address() const override { return address_; }
  void Send(SharedBytes message) override;
  void CloseWithError(wire::Error::Code code, const std::string& message) override {
    Close(AbortedError("coordinator closed the session: " + message));
  }
  void Close(const Status& reason) override;
  bool closed() const override { return closed_; }
  uint64_t bytes_sent() const override { return sent_; }
  uint64_t bytes_received() const override { return received_; }
  size_t queued_messages() const override { return 0; }
  uint32_t device() const { return device_; }
  void CountReceived(uint64_t n) { received_ += n; }
  void MarkClosed() { closed_ = true; }
  bool notified = false;  // OnSessionClosed delivered (engine thread only)

 private:
  Engine& engine_;
  const SessionId id_;
  const uint32_t device_;
  const std::string address_, empty_;
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> sent_{0}, received_{0};
};

// What --train mode needs: one Trainer reused by every device, and each
// device's shard.
struct TrainContext {
  std::unique_ptr<Trainer> trainer;
  std::vector<Dataset> shards;  // by device index
};

// The coordinator's Evaluator over LibTorch's ModelEvaluator.
class TorchEvaluator final : public Evaluator {
 public:
  explicit TorchEvaluator(std::unique_ptr<ModelEvaluator> e) : e_(std::move(e)) {}
  std::string_view Name() const override { return "fashion-mnist"; }
  Result<EvalSummary> Evaluate(const ParameterVector& model) override {
    VERDANT_ASSIGN_OR_RETURN(EvalMetrics m, e_->Evaluate(model));
    return EvalSummary{m.loss, m.accuracy, m.num_examples};
  }

 private:
  std::unique_ptr<ModelEvaluator> e_;
};

struct DeviceRuntime {
  bool available = false, charging = false, idle = false;
  float battery = 100;
  Network network = Network::kWifi;
  std::shared_ptr<SimSession> session;  // connected iff set
  bool dirty = false;
  size_t next_event = 0;  // position in the device's event list (applied so far)
  // The task in progress.
  uint64_t task_id = 0;
  uint32_t chunks_left = 0;
  uint64_t bytes_down = 0;
  wire::TrainTask task;
};

// --train: a model being received. Each chunk, read in place, is copied
// once, straight into the values the trainer reads (identity float32); the
// ParameterVector comes from the engine's pool for the task's duration.
struct ModelReceive {
  ParameterVector model;  // empty when the task cannot be trained (TrainOn says why)
  uint64_t bytes = 0;     // received so far
  Status status;          // the first bad chunk, reported when the task is answered
  // Every chunk so far is the cached broadcast's own message (Engine::
  // broadcast_): nothing was copied into `model`, the cache holds it.
  bool from_cache = false;
  // The chunk messages copied so far, and the bytes received after each:
  // the cache's next content if this receive completes. Not kept after a
  // receive that started from the cache and left it.
  bool cacheable = true;
  std::vector<SharedBytes> chunks;
  std::vector<uint64_t> ends;
};

// --train: the last model broadcast a device received whole. The coordinator
// queues the same immutable chunk messages to every device of a round, so a
// later device whose chunks are those very message objects (held here, so
// no other message can take their address) gets the assembled model without
// parsing and copying it again.
struct BroadcastCache {
  uint64_t stream_id = 0;
  std::vector<SharedBytes> chunks;
  std::vector<uint64_t> ends;  // bytes of the model after each chunk
  ParameterVector model;
};

struct RoundStats {
  uint64_t tasks = 0, dropped_unavailable = 0, dropped_battery = 0, dropped_deadline = 0;
  TimePoint start{};
  double slowest_s = 0;
  bool started = false;
};

class Engine {
 public:
  Engine(const Fleet& fleet, const SimulationOptions& o, ManualClock& clock, std::vector<std::string> profile_names,
         double battery_threshold, TrainContext* train)
      : fleet_(fleet),
        o_(o),
        clock_(clock),
        models_(fleet.devices.size()),
        profile_names_(std::move(profile_names)),
        battery_threshold_(battery_threshold),
        devices_(fleet.devices.size()),
        device_events_(fleet.devices.size()),
        codecs_(SupportedCodecs()),
        train_(train) {
    for (size_t i = 0; i < fleet.events.size(); ++i) device_events_[fleet.events[i].device].push_back(i);
  }
  ~Engine() { Shutdown(); }

  void Start(SessionHandler& handler) {
    handler_ = &handler;
    thread_ = std::thread([this] { Loop(); });
  }
  void Shutdown() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!thread_.joinable()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Runs `fn` on the engine thread after what is queued, and waits for it.
  void Call(std::function<void()> fn) {
    std::promise<void> done;
    auto fut = done.get_future();
    Push(Item{Item::kCall, nullptr, nullptr, OkStatus(), [&] {
                fn();
                done.set_value();
              }});
    fut.wait();
  }
  void PushMessage(std::shared_ptr<SimSession> s, SharedBytes bytes) {
    Push(Item{Item::kMessage, std::move(s), std::move(bytes), OkStatus(), nullptr});
  }
  void PushClose(std::shared_ptr<SimSession> s, Status reason) {
    Push(Item{Item::kClose, std::move(s), nullptr, std::move(reason), nullptr});
  }

  // ---- engine thread ----

  // Replays the fleet's events up to `t` (inclusive) and brings the
  // coordinator's view in line: connects, disconnects, heartbeats.
  void ApplyUntil(TimePoint t) {
    const auto& ev = fleet_.events;
    while (cursor_ < ev.size() && ev[cursor_].time <= t) {
      const FleetEvent& e = ev[cursor_++];
      DeviceRuntime& d = devices_[e.device];
      ++d.next_event;
      switch (e.kind) {
        case EventKind::kAvailable: d.available = true; break;
        case EventKind::kUnavailable: d.available = false; break;
        case EventKind::kChargingOn: d.charging = true; break;
        case EventKind::kChargingOff: d.charging = false; break;
        case EventKind::kBattery: d.battery = e.battery_percent; break;
        case EventKind::kNetwork: d.network = e.network; break;
        case EventKind::kIdle: d.idle = true; break;
        case EventKind::kBusy: d.idle = false; break;
      }
      MarkDirty(e.device);
      ++events_applied_;
    }
    std::vector<uint32_t> dirty;
    dirty.swap(dirty_);
    for (uint32_t i : dirty) {
      DeviceRuntime& d = devices_[i];
      d.dirty = false;
      const bool connected = d.session != nullptr;
      if (!d.available && connected) {
        Disconnect(i, UnavailableError("device unavailable (fleet event)"));
      } else if (d.available && !connected) {
        Connect(i);
      } else if (connected) {
        wire::Envelope env;
        *env.mutable_heartbeat()->mutable_state() = WireState(i);
        env.mutable_heartbeat()->set_seq(++heartbeat_seq_);
        Deliver(*d.session, std::move(env));
      }
    }
  }
  size_t connected() const {
    size_t n = 0;
    for (const auto& d : devices_) n += d.session != nullptr;
    return n;
  }
  bool exhausted() const { return cursor_ >= fleet_.events.size(); }
  TimePoint next_event_time() const { return fleet_.events[cursor_].time; }

  // The round is over: the clock moves to the next round's start and the
  // fleet is replayed up to it. Returns the round's row for simulation.csv.
  RoundStats EndRound(uint64_t round) {
    RoundStats s = stats_;
    if (!s.started || current_round_ != round) {
      s = RoundStats{};
      s.start = clock_.Now();
    }
    const double dur = std::min(s.slowest_s, Secs(o_.round_timeout).count());
    const TimePoint end = s.start + ToDuration(dur);
    if (round == 1) first_start_ = s.start;
    last_end_ = end;
    clock_.Set(std::max(end, s.start + o_.round_interval));
    ApplyUntil(clock_.Now());
    stats_ = RoundStats{};
    return s;
  }

  uint64_t events_applied() const { return events_applied_; }
  TimePoint first_start() const { return first_start_; }
  TimePoint last_end() const { return last_end_; }
  uint64_t tasks = 0, completed = 0, dropped_unavailable = 0, dropped_battery = 0, dropped_deadline = 0;

 private:
  struct Item {
    enum Kind { kMessage, kClose, kCall } kind;
    std::shared_ptr<SimSession> session;
    SharedBytes bytes;
    Status reason;
    std::function<void()> call;
  };

  void Push(Item it) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(it));
    }
    cv_.notify_all();
  }

  void Loop() {
    for (;;) {
      Item it;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        it = std::move(queue_.front());
        queue_.pop_front();
      }
      switch (it.kind) {
        case Item::kCall: it.call(); break;
        case Item::kClose: HandleClose(it.session, it.reason); break;
        case Item::kMessage: HandleMessage(it.session, it.bytes); break;
      }
    }
  }

  void MarkDirty(uint32_t i) {
    if (!devices_[i].dirty) {
      devices_[i].dirty = true;
      dirty_.push_back(i);
    }
  }

  wire::DeviceState WireState(uint32_t i) const {
    const Device& dev = fleet_.devices[i];
    const DeviceRuntime& d = devices_[i];
    wire::DeviceState s;
    s.set_battery_known(dev.battery_wh > 0);
    s.set_battery_percent(dev.battery_wh > 0 ? d.battery : 0);
    s.set_battery_capacity_wh(static_cast<float>(dev.battery_wh));
    s.set_charging(d.charging);
    s.set_power_source(d.charging || dev.battery_wh <= 0 ? wire::DeviceState::POWER_SOURCE_GRID
                                                        : wire::DeviceState::POWER_SOURCE_BATTERY);
    s.set_network(d.network == Network::kWifi ? wire::DeviceState::NETWORK_UNMETERED
                                              : wire::DeviceState::NETWORK_CELLULAR);
    s.set_idle(d.idle);
    s.set_zone(dev.zone);
    return s;
  }

  void Deliver(SimSession& s, wire::Envelope&& env) {
    s.CountReceived(env.ByteSizeLong() + kFrameOverhead);
    handler_->OnMessage(s.shared_from_this(), std::move(env));
  }

  void Connect(uint32_t i) {
    auto s = std::make_shared<SimSession>(*this, ++next_session_, i, "sim:" + fleet_.devices[i].id);
    devices_[i].session = s;
    handler_->OnSessionOpen(s);
    wire::Envelope env;
    auto* h = env.mutable_hello();
    h->set_protocol_version(kProtocolVersion);
    h->set_client_name(fleet_.devices[i].id);
    for (const auto& c : codecs_) h->add_codecs(c);
    h->set_num_examples(Examples(i));
    h->set_device_profile(profile_names_[i]);
    *h->mutable_state() = WireState(i);
    h->add_capabilities("train");
    Deliver(*s, std::move(env));
  }

  uint64_t Examples(uint32_t i) const {
    return train_ != nullptr ? train_->shards[i].size() : fleet_.devices[i].num_examples;
  }

  void Disconnect(uint32_t i, const Status& why) {
    DeviceRuntime& d = devices_[i];
    auto s = std::move(d.session);
    d.session.reset();
    d.task_id = 0;
    EndReceive(i);
    if (!s || s->notified) return;
    s->MarkClosed();
    s->notified = true;
    handler_->OnSessionClosed(s, why);
  }

  void HandleClose(const std::shared_ptr<SimSession>& s, const Status& reason) {
    if (s->notified) return;
    DeviceRuntime& d = devices_[s->device()];
    if (d.session == s) {
      Disconnect(s->device(), reason);
      MarkDirty(s->device());  // reconnects at the next replay if still available
    } else {
      s->notified = true;
      handler_->OnSessionClosed(s, reason);
    }
  }

  void HandleMessage(const std::shared_ptr<SimSession>& s, const SharedBytes& message) {
    if (s->notified) return;
    const ByteBuffer& bytes = *message;
    DeviceRuntime& d = devices_[s->device()];
    if (d.session != s) return;
    // An Envelope holding only a Chunk starts with field 8's tag (8 << 3 | 2):
    // the model's chunks are counted, not parsed (energy-only clients do not
    // read the model).
    constexpr uint8_t kChunkTag = (8 << 3) | 2;
    if (!bytes.empty() && bytes[0] == kChunkTag) {
      if (d.task_id != 0 && d.chunks_left > 0) {
        d.bytes_down += bytes.size() + kFrameOverhead;
        if (train_ != nullptr) ReceiveModelChunk(s->device(), d, message);
        if (--d.chunks_left == 0) Answer(s->device());
      }
      return;
    }
    auto env = ParseEnvelope(bytes);
    if (!env.ok() || !env->has_train_task()) return;  // Welcome, Bye, Error: nothing to do
    d.task = env->train_task();
    d.task_id = d.task.task_id();
    d.bytes_down = bytes.size() + kFrameOverhead;
    d.chunks_left = d.task.payload().num_chunks();
    if (train_ != nullptr) {
      EndReceive(s->device());
      ModelReceive& rx = receiving_[s->device()];
      const auto& info = d.task.payload();
      if (info.encoding() == "identity" && info.num_params() == train_->trainer->layout().NumParameters()) {
        rx.model = TakeModel();
      }
    }
    if (d.chunks_left == 0) Answer(s->device());
  }

  // --train: one chunk of the model, read in place (ParseChunkView, as the
  // TCP session reads a frame; protobuf only for what that leaves to it) and
  // copied into the device's model values. The checks are PayloadAssembler's:
  // the task's stream, in order, within the declared size. A chunk that is
  // the cached broadcast's own message at the same place passed them for an
  // earlier device and is not read again.
  void ReceiveModelChunk(uint32_t i, const DeviceRuntime& d, const SharedBytes& message) {
    auto it = receiving_.find(i);
    if (it == receiving_.end()) return;
    ModelReceive& rx = it->second;
    if (!rx.status.ok() || rx.model.size() == 0) return;  // TrainOn reports why
    const std::span<const uint8_t> bytes(*message);
    {
      const auto& info = d.task.payload();
      const uint32_t seq = info.num_chunks() - d.chunks_left;
      if (seq == 0) rx.from_cache = o_.share_broadcast && CachedChunk(info, seq, message);
      if (rx.from_cache) {
        if (CachedChunk(info, seq, message)) {
          rx.bytes = broadcast_.ends[seq];
          return;
        }
        // Not the cached broadcast after all: copy what it held so far, go on copying.
        std::memcpy(rx.model.values().data(), broadcast_.model.values().data(), rx.bytes);
        rx.from_cache = false;
        rx.cacheable = false;
      }
    }
    std::optional<wire::Envelope> env;  // owns the data of a chunk protobuf parsed
    std::optional<ChunkView> c = ParseChunkView(bytes);
    if (!c) {
      auto parsed = ParseEnvelope(bytes);
      if (!parsed.ok() || !parsed->has_chunk()) {
        rx.status = DataLossError("a model chunk is not a Chunk envelope");
        return;
      }
      env = std::move(*parsed);
      c = ToChunkView(env->chunk());
    }
    const auto& info = d.task.payload();
    const uint32_t seq = info.num_chunks() - d.chunks_left;
    const uint64_t room = rx.model.size() * sizeof(float) - rx.bytes;
    if (c->stream_id != info.stream_id() || c->seq != seq || c->data.size() > room) {
      rx.status = DataLossError("model chunk " + std::to_string(c->seq) + " of stream " + std::to_string(c->stream_id) +
                                ": expected chunk " + std::to_string(seq) + " of stream " +
                                std::to_string(info.stream_id()) + " with at most " + std::to_string(room) + " bytes");
      return;
    }
    if (!c->data.empty()) {
      std::memcpy(reinterpret_cast<uint8_t*>(rx.model.values().data()) + rx.bytes, c->data.data(), c->data.size());
    }
    rx.bytes += c->data.size();
    if (rx.cacheable) {
      rx.chunks.push_back(message);
      rx.ends.push_back(rx.bytes);
    }
  }

  // True when `message` is chunk `seq` of the cached broadcast and the task
  // announces that same broadcast (stream, size, chunk count).
  bool CachedChunk(const wire::PayloadInfo& info, uint32_t seq, const SharedBytes& message) const {
    return broadcast_.model.size() == info.num_params() && broadcast_.stream_id == info.stream_id() &&
           broadcast_.chunks.size() == info.num_chunks() && seq < broadcast_.chunks.size() &&
           broadcast_.chunks[seq] == message;
  }

  // --train: device i's receive state ends (trained, failed or gone); its
  // buffer goes back to the pool.
  void EndReceive(uint32_t i) {
    auto it = receiving_.find(i);
    if (it == receiving_.end()) return;
    ReturnModel(it->second.model);
    receiving_.erase(it);
  }

  // --train: model buffers, one per task being received (one at a time in
  // practice: a task's chunks follow it in the queue), kept for later tasks
  // instead of a model-sized allocation per client.
  ParameterVector TakeModel() {
    if (model_pool_.empty()) return ParameterVector(train_->trainer->layout());
    ParameterVector m = std::move(model_pool_.back());
    model_pool_.pop_back();
    return m;
  }
  void ReturnModel(ParameterVector& m) {
    if (m.size() > 0 && model_pool_.size() < kModelPool) model_pool_.push_back(std::move(m));
    m = ParameterVector();
  }

  // The encoded update every energy-only client of `round` uploads: a tiny
  // deterministic delta through the run's real uplink codec.
  const ByteBuffer& UpdateBytes(const wire::TrainTask& t) {
    if (update_round_ == t.round() && update_params_ == t.payload().num_params()) return update_;
    if (!codec_) {
      auto c = CreateCodec(t.uplink_codec());
      if (!c.ok()) {
        spdlog::error("simulator: codec {}: {}", t.uplink_codec(), c.status().ToString());
        update_.clear();
        return update_;
      }
      codec_ = std::move(*c);
    }
    std::vector<float> delta(t.payload().num_params());
    for (size_t i = 0; i < delta.size(); ++i) {
      const uint64_t h = (i * 2654435761u + t.round() * 40503u) % 2001;
      delta[i] = 1e-5f * (static_cast<float>(h) - 1000.0f) / 1000.0f;
    }
    Rng rng = Rng(o_.seed).Fork(t.round());
    update_.clear();
    Status st = codec_->Encode(delta, rng, update_);
    if (!st.ok()) spdlog::error("simulator: encoding the update: {}", st.ToString());
    update_round_ = t.round();
    update_params_ = t.payload().num_params();
    return update_;
  }

  void Answer(uint32_t i) {
    DeviceRuntime& d = devices_[i];
    const Device& dev = fleet_.devices[i];
    const wire::TrainTask task = d.task;
    d.task_id = 0;
    const TimePoint now = clock_.Now();
    if (!stats_.started || current_round_ != task.round()) {
      stats_ = RoundStats{};
      stats_.started = true;
      stats_.start = now;
      current_round_ = task.round();
    }
    ++stats_.tasks;
    ++tasks;
    uint64_t examples =
        task.max_examples() > 0 ? std::min<uint64_t>(task.max_examples(), Examples(i)) : Examples(i);
    uint64_t samples = examples * std::max<uint32_t>(1, task.local_epochs());
    double train_loss = 0;
    // The upload: TrainResult + chunks, as the real client sends them. The
    // chunks go to the coordinator as views of `update` (SessionHandler::
    // OnChunk, as the TCP session hands over a frame read in place), so the
    // update is copied once, into the coordinator's upload buffer. `update`
    // is the engine's (update_, delta_ or trained_update_): it holds until
    // this device's chunks are delivered, below.
    std::span<const uint8_t> update;
    if (train_ != nullptr) {
      Status st = TrainOn(i, task, examples, samples, train_loss, update);
      if (!st.ok()) {
        spdlog::warn("simulator: device {}: training failed: {}", dev.id, st.ToString());
        Disconnect(i, st.WithContext("local training"));
        MarkDirty(i);
        return;
      }
    } else {
      update = UpdateBytes(task);
    }
    const uint64_t stream_id = task.task_id();
    const uint32_t n_chunks = NumChunks(update.size(), kChunkBytes);
    wire::Envelope result;
    {
      auto* r = result.mutable_train_result();
      r->set_round(task.round());
      r->set_task_id(task.task_id());
      r->set_num_examples(examples);
      r->set_train_loss(train_loss);
      auto* p = r->mutable_payload();
      p->set_stream_id(stream_id);
      p->set_encoding(task.uplink_codec());
      p->set_num_params(task.payload().num_params());
      p->set_layout_fingerprint(task.payload().layout_fingerprint());
      p->set_payload_bytes(update.size());
      p->set_num_chunks(n_chunks);
    }
    auto chunk = [&](uint32_t c) {
      const size_t off = static_cast<size_t>(c) * kChunkBytes;
      return ChunkView{stream_id, c, update.subspan(off, std::min<size_t>(kChunkBytes, update.size() - off))};
    };
    uint64_t bytes_up = result.ByteSizeLong() + kFrameOverhead;
    for (uint32_t c = 0; c < n_chunks; ++c) {
      const ChunkView v = chunk(c);
      bytes_up += ChunkEnvelopeBytes(v.stream_id, v.seq, v.data.size()) + kFrameOverhead;
    }
    // Virtual duration: download, train, upload.
    const double t_down = static_cast<double>(d.bytes_down) * 8.0 / (dev.down_kbps * 1e3);
    const double t_train = 3.0 * static_cast<double>(samples) * dev.ms_per_sample / 1000.0;
    const double t_up = static_cast<double>(bytes_up) * 8.0 / (dev.up_kbps * 1e3);
    const double dur = t_down + t_train + t_up;
    result.mutable_train_result()->set_train_seconds(t_train);
    const TimePoint finish = now + ToDuration(dur);

    // Dropouts: the first of unavailability, battery below the threshold,
    // the round timeout.
    std::optional<double> drop_at;
    Status why;
    const auto& mine = device_events_[i];
    float lowest = d.battery;
    for (size_t k = d.next_event; k < mine.size(); ++k) {
      const FleetEvent& e = fleet_.events[mine[k]];
      if (e.time > finish) break;
      if (e.kind == EventKind::kUnavailable) {
        drop_at = Secs(e.time - now).count();
        why = UnavailableError("device became unavailable " + Fmt(*drop_at) + " s into its task (virtual)");
        ++stats_.dropped_unavailable;
        ++dropped_unavailable;
        break;
      }
      if (e.kind == EventKind::kBattery) lowest = std::min(lowest, e.battery_percent);
    }
    if (!drop_at && dev.battery_wh > 0 && !d.charging) {
      energy::RoundUsage u;
      u.samples_processed = samples;
      u.bytes_up = Bytes{bytes_up};
      u.bytes_down = Bytes{d.bytes_down};
      u.link = d.network == Network::kWifi ? energy::LinkType::kWifi : energy::LinkType::kLte;
      auto est = ModelOf(i).Estimate(u);
      const double drain = est.ok() ? est->DeviceTotal().joules() / (dev.battery_wh * 3600.0) * 100.0 : 0.0;
      if (lowest - drain < battery_threshold_) {
        const double frac = drain > 0 ? std::clamp((d.battery - battery_threshold_) / drain, 0.0, 1.0) : 0.0;
        drop_at = dur * frac;
        why = UnavailableError("battery would fall to " + Fmt(lowest - drain) + "% during its task (below " +
                               Fmt(battery_threshold_) + "%)");
        ++stats_.dropped_battery;
        ++dropped_battery;
      }
    }
    const double timeout = Secs(o_.round_timeout).count();
    if (!drop_at && dur > timeout) {
      drop_at = timeout;
      why = DeadlineExceededError("needs " + Fmt(dur) + " s of virtual time (past the " + Fmt(timeout) +
                                  " s round timeout)");
      ++stats_.dropped_deadline;
      ++dropped_deadline;
    }
    stats_.slowest_s = std::max(stats_.slowest_s, drop_at.value_or(dur));
    if (drop_at) {
      Disconnect(i, why);
      MarkDirty(i);
      return;
    }
    ++completed;
    const std::shared_ptr<SimSession> session = d.session;
    Deliver(*session, std::move(result));
    for (uint32_t c = 0; c < n_chunks; ++c) {
      const ChunkView v = chunk(c);
      session->CountReceived(ChunkEnvelopeBytes(v.stream_id, v.seq, v.data.size()) + kFrameOverhead);
      handler_->OnChunk(session, v);
    }
  }

  // --train: OK when `rx` holds the whole model the task announced.
  Status ModelReady(const ModelReceive* rx, const wire::PayloadInfo& info) const {
    const uint64_t n = info.num_params();
    if (info.encoding() != "identity") {
      return FailedPreconditionError("--train needs the identity downlink (got '" + info.encoding() + "')");
    }
    if (rx == nullptr || rx->model.size() != n) {
      return FailedPreconditionError("the task's model has " + std::to_string(n) + " parameters, '" +
                                     std::string(train_->trainer->model_name()) + "' has " +
                                     std::to_string(train_->trainer->layout().NumParameters()));
    }
    VERDANT_RETURN_IF_ERROR(rx->status);
    if (rx->bytes != n * sizeof(float)) {
      return DataLossError("the model ended at " + std::to_string(rx->bytes) + " of " +
                           std::to_string(n * sizeof(float)) + " bytes");
    }
    return OkStatus();
  }

  // --train: the received model (identity float32 downlink), trained on the
  // device's shard. `update` is what the device uploads: the delta's own
  // bytes for the identity codec (chunked in place, as ClientLoop does), the
  // run's codec's encoding of it in trained_update_ otherwise; valid until
  // the next training.
  Status TrainOn(uint32_t i, const wire::TrainTask& task, uint64_t& examples, uint64_t& samples, double& loss,
                 std::span<const uint8_t>& update) {
    auto it = receiving_.find(i);
    if (Status st = ModelReady(it == receiving_.end() ? nullptr : &it->second, task.payload()); !st.ok()) {
      EndReceive(i);
      return st;
    }
    ModelReceive& rx = it->second;
    if (o_.share_broadcast && !rx.from_cache && rx.cacheable && rx.chunks.size() == task.payload().num_chunks()) {
      // Received whole and copied: it becomes the cache (the model it
      // replaces goes back to the pool with this receive).
      broadcast_.stream_id = task.payload().stream_id();
      broadcast_.chunks = std::move(rx.chunks);
      broadcast_.ends = std::move(rx.ends);
      std::swap(broadcast_.model, rx.model);
      rx.from_cache = true;
    }
    const ParameterVector& model = rx.from_cache ? broadcast_.model : rx.model;
    LocalTrainOptions lo;
    lo.local_epochs = std::max<uint32_t>(1, task.local_epochs());
    lo.batch_size = std::max<uint32_t>(1, task.batch_size());
    lo.learning_rate = task.learning_rate();
    lo.proximal_mu = task.proximal_mu();
    lo.max_examples = task.max_examples();
    lo.seed = task.seed();
    auto trained = train_->trainer->Train(model, train_->shards[i], lo, delta_);
    EndReceive(i);
    VERDANT_ASSIGN_OR_RETURN(LocalTrainResult r, std::move(trained));
    examples = r.num_examples;
    samples = r.samples_processed;
    loss = r.train_loss;
    if (!codec_) {
      VERDANT_ASSIGN_OR_RETURN(codec_, CreateCodec(task.uplink_codec()));
    }
    if (codec_->Name() == "identity") {
      update = IdentityBytes(delta_);
      return OkStatus();
    }
    Rng rng(task.seed());
    trained_update_.clear();
    VERDANT_RETURN_IF_ERROR(codec_->Encode(delta_, rng, trained_update_));
    update = trained_update_;
    return OkStatus();
  }

  // Device i's energy model, made when it first trains: one per device of
  // the fleet held for the whole run would cost ~0.5 kB each. RunSimulation
  // has checked every device's profile already.
  const energy::EnergyModel& ModelOf(uint32_t i) {
    if (!models_[i]) {
      if (auto p = DeviceProfileFor(fleet_.devices[i], o_.profiles); p.ok()) {
        if (auto m = energy::ProfileEnergyModel::Create(std::move(*p)); m.ok()) models_[i] = std::move(*m);
      }
      if (!models_[i]) {  // not reached: RunSimulation validated the profile
        spdlog::error("simulator: device {}: invalid profile; using phone-midrange", fleet_.devices[i].id);
        models_[i] = std::move(*energy::ProfileEnergyModel::Create(*energy::BuiltinProfile("phone-midrange")));
      }
    }
    return *models_[i];
  }

  static std::string Fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.1f", v);
    return b;
  }

  static constexpr size_t kChunkBytes = kDefaultChunkBytes;
  static constexpr size_t kModelPool = 4;
  const Fleet& fleet_;
  const SimulationOptions& o_;
  ManualClock& clock_;
  std::vector<std::unique_ptr<energy::EnergyModel>> models_;  // by device; made on first use
  std::vector<std::string> profile_names_;
  const double battery_threshold_;
  std::vector<DeviceRuntime> devices_;
  std::vector<std::vector<size_t>> device_events_;
  std::vector<std::string> codecs_;
  std::vector<uint32_t> dirty_;
  size_t cursor_ = 0;
  uint64_t events_applied_ = 0;
  uint64_t heartbeat_seq_ = 0;
  SessionId next_session_ = 0;
  SessionHandler* handler_ = nullptr;
  std::unique_ptr<UpdateCodec> codec_;
  ByteBuffer update_;
  TrainContext* train_ = nullptr;
  std::unordered_map<uint32_t, ModelReceive> receiving_;  // --train: by device, while its model arrives
  std::vector<ParameterVector> model_pool_;              // --train: see TakeModel
  BroadcastCache broadcast_;                             // --train: see ReceiveModelChunk
  std::vector<float> delta_;
  ByteBuffer trained_update_;
  uint64_t update_round_ = 0, update_params_ = 0;
  uint64_t current_round_ = 0;
  RoundStats stats_;
  TimePoint first_start_{}, last_end_{};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

void SimSession::Send(SharedBytes message) {
  if (closed_) return;
  sent_ += message->size() + kFrameOverhead;
  engine_.PushMessage(std::static_pointer_cast<SimSession>(shared_from_this()), std::move(message));
}

void SimSession::Close(const Status& reason) {
  if (closed_.exchange(true)) return;
  engine_.PushClose(std::static_pointer_cast<SimSession>(shared_from_this()), reason);
}

// The run's selector, unchanged, plus what only a simulation needs: when no
// device can train (kFailedPrecondition), virtual time moves on by one round
// interval (a real coordinator would wait for devices in real time).
class SimSelector final : public ClientSelector {
 public:
  SimSelector(std::unique_ptr<ClientSelector> inner, std::function<bool()> advance)
      : inner_(std::move(inner)), advance_(std::move(advance)) {}
  std::string_view Name() const override { return inner_->Name(); }
  Result<SelectionDecision> Select(const SelectionRequest& request, std::span<const ClientCandidate> candidates,
                                   Rng& rng) override {
    auto d = inner_->Select(request, candidates, rng);
    if (!d.ok() && d.status().code() == StatusCode::kFailedPrecondition) {
      ++idle_waits_;
      if (!advance_()) return CancelledError("the fleet trace ended with no device able to train");
    }
    return d;
  }
  void OnRoundEnd(uint64_t round, std::span<const std::string> completed,
                  std::span<const std::string> failed) override {
    inner_->OnRoundEnd(round, completed, failed);
  }
  Result<std::string> SaveState() const override { return inner_->SaveState(); }
  Status RestoreState(std::string_view state) override { return inner_->RestoreState(state); }
  ParticipationStats Participation() const override { return inner_->Participation(); }
  uint64_t idle_waits() const { return idle_waits_; }

 private:
  std::unique_ptr<ClientSelector> inner_;
  std::function<bool()> advance_;
  uint64_t idle_waits_ = 0;
};

}  // namespace

Result<SimulationResult> RunSimulation(const Fleet& fleet, const SimulationOptions& o) {
  const auto wall0 = std::chrono::steady_clock::now();
  if (fleet.devices.empty()) return InvalidArgumentError("simulate: the fleet has no devices");
  if (o.clients_per_round == 0) return InvalidArgumentError("simulate: clients per round must be > 0");
  if (o.round_interval <= Duration::zero()) return InvalidArgumentError("simulate: round interval must be > 0");
  if (o.round_timeout <= Duration::zero()) return InvalidArgumentError("simulate: round timeout must be > 0");
  if (o.intensity == nullptr) return InvalidArgumentError("simulate: no carbon intensity source");
  if (!(o.battery_floor_percent >= 0 && o.battery_floor_percent <= 100)) {
    return InvalidArgumentError("simulate: battery floor must be within 0..100 %");
  }
  const uint64_t rounds =
      o.rounds > 0 ? o.rounds
                   : static_cast<uint64_t>(std::chrono::hours(24) * o.days / o.round_interval);
  if (rounds == 0) return InvalidArgumentError("simulate: no rounds (days x 24 h shorter than one round interval)");

  // One energy profile per device: its base profile with the fleet's compute
  // speed, battery, embodied carbon and link rates, so the coordinator's
  // ledger accounts each device as the fleet describes it.
  std::vector<energy::DeviceProfile> profiles;
  std::vector<std::string> names;
  profiles.reserve(fleet.devices.size() + o.profiles.size());
  names.reserve(fleet.devices.size());
  for (const auto& dev : fleet.devices) {
    VERDANT_ASSIGN_OR_RETURN(energy::DeviceProfile p, DeviceProfileFor(dev, o.profiles));
    VERDANT_RETURN_IF_ERROR(energy::Validate(p).WithContext("device '" + dev.id + "'"));
    names.push_back(p.name);
    profiles.push_back(std::move(p));
  }
  for (const auto& p : o.profiles) profiles.push_back(p);

  VERDANT_ASSIGN_OR_RETURN(auto strategy, CreateStrategy(o.strategy, o.strategy_options));
  VERDANT_ASSIGN_OR_RETURN(auto inner_selector, CreateSelector(o.selector, o.selector_options));
  double threshold = o.battery_floor_percent;
  if (const auto* ps = dynamic_cast<const PolicySelector*>(inner_selector.get())) {
    const double policy = ps->policy_options().eligibility.min_battery_percent;
    if (policy > 0) threshold = policy;
  }
  VERDANT_ASSIGN_OR_RETURN(ParameterVector initial, InitialModel(o.model, o.seed));

  TrainContext train;
  std::unique_ptr<TorchEvaluator> evaluator;
  if (o.train) {
    if (o.downlink_codec != "identity") {
      return InvalidArgumentError("simulate --train needs the identity downlink, not '" + o.downlink_codec + "'");
    }
    if (IsSyntheticModel(o.model)) return InvalidArgumentError("simulate --train needs a real model (mlp, cnn)");
    ConfigureTorchThreads(1);
    const std::string dir = o.data_dir.empty() ? DefaultFashionMnistDir() : o.data_dir;
    VERDANT_ASSIGN_OR_RETURN(Dataset train_set, LoadFashionMnist(dir, "train"));
    VERDANT_ASSIGN_OR_RETURN(Dataset test_set, LoadFashionMnist(dir, "test", o.eval_examples));
    VERDANT_ASSIGN_OR_RETURN(auto parts, PartitionAllIndices(o.partition, train_set.labels, kFashionMnistClasses,
                                                             fleet.devices.size(), o.seed));
    train.shards.reserve(parts.size());
    for (const auto& p : parts) train.shards.push_back(Subset(train_set, p));
    VERDANT_ASSIGN_OR_RETURN(train.trainer, Trainer::Create(o.model));
    VERDANT_ASSIGN_OR_RETURN(auto me, ModelEvaluator::Create(o.model, std::move(test_set)));
    evaluator = std::make_unique<TorchEvaluator>(std::move(me));
  }
  const TimePoint start = o.start.value_or(fleet.Start());
  const TimePoint end_of_trace = start + o.round_interval * static_cast<int64_t>(rounds);
  ManualClock clock(start);
  Engine engine(fleet, o, clock, std::move(names), threshold, o.train ? &train : nullptr);

  CoordinatorOptions co;
  co.rounds = rounds;
  co.min_clients = 1;
  co.clients_per_round = o.clients_per_round;
  co.wait_for_clients = std::chrono::seconds(5);
  co.round_timeout = o.round_timeout;
  co.model_name = o.model;
  co.uplink_codec = o.uplink_codec;
  co.downlink_codec = o.downlink_codec;
  co.seed = o.seed;
  co.run_id = o.run_id;
  co.out_dir = o.out_dir;
  // No run store: a simulation is rerun, not resumed (it has no --resume),
  // and a checkpoint per round serialises the selector state and registry
  // of every device — most of a round's cost with 10^5 devices.
  co.persist = false;
  co.evaluate_every = evaluator != nullptr ? o.eval_every : 0;
  co.energy.intensity = o.intensity;
  co.energy.profiles = std::move(profiles);
  co.energy.max_defer = o.max_defer;
  uint64_t deferrals = 0;
  co.energy.on_defer = [&](Duration wait) {
    ++deferrals;
    engine.Call([&] {
      clock.Advance(wait);
      engine.ApplyUntil(clock.Now());
    });
  };
  Coordinator* coord_ptr = nullptr;
  // No device can train now: move virtual time on (by one round interval,
  // and further until a device is connected); false (the run stops) when no
  // device is connected any more, or when waiting has run a day past the
  // planned end of the run.
  const TimePoint give_up = end_of_trace + std::chrono::hours(24);
  auto advance = [&]() {
    bool ok = true;
    engine.Call([&] {
      do {
        clock.Advance(o.round_interval);
        engine.ApplyUntil(clock.Now());
      } while (engine.connected() == 0 && !engine.exhausted() && clock.Now() < end_of_trace);
      ok = engine.connected() > 0 && clock.Now() < give_up;
    });
    if (!ok && coord_ptr != nullptr) coord_ptr->Stop();
    return ok;
  };
  auto selector = std::make_unique<SimSelector>(std::move(inner_selector), advance);
  SimSelector* sim_selector = selector.get();
  Coordinator coord(std::move(co), std::move(initial), std::move(strategy), std::move(selector), evaluator.get(), clock);
  coord_ptr = &coord;

  std::ofstream sim_csv;
  if (!o.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    sim_csv.open(std::filesystem::path(o.out_dir) / "simulation.csv", std::ios::trunc);
    if (!sim_csv) return UnavailableError("cannot write " + o.out_dir + "/simulation.csv");
    sim_csv << "round,virtual_start_utc,virtual_seconds,tasks,dropped_unavailable,dropped_battery,"
               "dropped_deadline,deferred_seconds\n";
  }
  uint64_t rounds_done = 0;
  coord.SetRoundCallback([&](const RoundRecord& rec) {
    RoundStats s;
    engine.Call([&] { s = engine.EndRound(rec.round); });
    ++rounds_done;
    if (sim_csv.is_open()) {
      char buf[256];
      std::snprintf(buf, sizeof(buf), "%llu,%s,%.3f,%llu,%llu,%llu,%llu,%.0f\n",
                    static_cast<unsigned long long>(rec.round), FormatUtc(s.start).c_str(),
                    std::min(s.slowest_s, Secs(o.round_timeout).count()), static_cast<unsigned long long>(s.tasks),
                    static_cast<unsigned long long>(s.dropped_unavailable),
                    static_cast<unsigned long long>(s.dropped_battery),
                    static_cast<unsigned long long>(s.dropped_deadline), rec.deferred_seconds);
      sim_csv << buf;
    }
    if (o.on_round) o.on_round(rec, rounds, clock.Now());
  });

  engine.Start(coord);
  // Devices available at the start connect before round 1; if none is,
  // virtual time moves to the first one that becomes available.
  bool any = false;
  engine.Call([&] {
    engine.ApplyUntil(start);
    while (engine.connected() == 0 && !engine.exhausted()) {
      clock.Set(std::max(clock.Now(), engine.next_event_time()));
      engine.ApplyUntil(clock.Now());
    }
    any = engine.connected() > 0;
  });
  if (!any) {
    engine.Shutdown();
    return FailedPreconditionError("simulate: no device of the fleet is ever available");
  }
  auto summary = coord.Run();
  // Let the goodbyes drain before the engine stops.
  engine.Call([] {});
  engine.Shutdown();
  if (sim_csv.is_open()) sim_csv.close();
  if (!summary.ok() && summary.status().code() != StatusCode::kCancelled) return summary.status();

  SimulationResult r;
  r.rounds = rounds_done;
  r.client_rounds = engine.tasks;
  r.completed = engine.completed;
  r.dropouts_unavailable = engine.dropped_unavailable;
  r.dropouts_battery = engine.dropped_battery;
  r.dropouts_deadline = engine.dropped_deadline;
  r.events_applied = engine.events_applied();
  r.deferrals = deferrals;
  r.virtual_seconds = rounds_done > 0 ? Secs(engine.last_end() - start).count() : 0.0;
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  if (summary.ok()) r.summary = *summary;
  r.summary.numbers["sim_virtual_seconds"] = r.virtual_seconds;
  r.summary.numbers["sim_client_rounds"] = static_cast<double>(r.client_rounds);
  r.summary.numbers["sim_completed"] = static_cast<double>(r.completed);
  r.summary.numbers["sim_dropouts_unavailable"] = static_cast<double>(r.dropouts_unavailable);
  r.summary.numbers["sim_dropouts_battery"] = static_cast<double>(r.dropouts_battery);
  r.summary.numbers["sim_dropouts_deadline"] = static_cast<double>(r.dropouts_deadline);
  r.summary.numbers["sim_events_applied"] = static_cast<double>(r.events_applied);
  r.summary.numbers["sim_deferrals"] = static_cast<double>(r.deferrals);
  r.summary.numbers["sim_idle_waits"] = static_cast<double>(sim_selector->idle_waits());
  r.summary.numbers["sim_devices"] = static_cast<double>(fleet.devices.size());
  r.summary.numbers["sim_battery_threshold_percent"] = threshold;
  r.summary.strings["sim_start_utc"] = FormatUtc(start);
  r.summary.strings["sim_mode"] = o.train ? "train" : "energy-only";
  if (!summary.ok()) r.summary.strings["sim_status"] = summary.status().ToString();
  if (!o.out_dir.empty()) {
    // The coordinator wrote summary.json; add the simulation's figures
    // (deterministic ones only: wall-clock figures stay in the coordinator's keys).
    const auto path = std::filesystem::path(o.out_dir) / "summary.json";
    nlohmann::ordered_json j;
    {
      std::ifstream in(path);
      if (in) {
        try {
          j = nlohmann::ordered_json::parse(in);
        } catch (const std::exception& e) {
          return DataLossError(path.string() + ": " + e.what());
        }
      }
    }
    nlohmann::ordered_json s;
    for (const auto& [k, v] : r.summary.numbers) {
      if (k.rfind("sim_", 0) == 0) s[k.substr(4)] = v;
    }
    for (const auto& [k, v] : r.summary.strings) {
      if (k.rfind("sim_", 0) == 0) s[k.substr(4)] = v;
    }
    j["simulation"] = s;
    std::ofstream out(path, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) return UnavailableError("cannot write " + path.string());
  }
  return r;
}

}  // namespace verdant::sim
