#include "verdant/client/client_loop.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

namespace verdant {

namespace {

// A measurement in progress: the meter started, and a thread calling
// Sample() every `interval` (RAPL counters wrap) until Stop().
class MeteredSection {
 public:
  MeteredSection(energy::EnergyMeter& meter, Duration interval) : meter_(meter) {
    started_ = meter_.Start();
    if (!started_.ok()) return;
    sampler_ = std::thread([this, interval] {
      std::unique_lock<std::mutex> l(mu_);
      while (!cv_.wait_for(l, interval, [this] { return done_; })) {
        Status st = meter_.Sample();
        if (!st.ok()) spdlog::debug("energy meter sample: {}", st.ToString());
      }
    });
  }
  ~MeteredSection() { Join(); }
  MeteredSection(const MeteredSection&) = delete;
  MeteredSection& operator=(const MeteredSection&) = delete;

  // The reading, or why there is none (the meter could not start or stop).
  Result<energy::MeterReading> Stop() {
    if (!started_.ok()) return started_;
    Join();
    return meter_.Stop();
  }

 private:
  void Join() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (sampler_.joinable()) sampler_.join();
  }
  energy::EnergyMeter& meter_;
  Status started_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread sampler_;
};

}  // namespace

std::vector<std::string> SupportedCodecs() {
  std::vector<std::string> out;
  for (const auto& name : CodecRegistry().Names()) out.push_back(name + "/1");
  return out;
}

wire::DeviceState ToWire(const energy::DeviceState& s) {
  wire::DeviceState w;
  if (s.battery_percent) {
    w.set_battery_known(true);
    w.set_battery_percent(static_cast<float>(*s.battery_percent));
  }
  w.set_battery_capacity_wh(static_cast<float>(energy::ToWattHours(s.battery_capacity)));
  w.set_charging(s.charging);
  w.set_power_source(static_cast<wire::DeviceState::PowerSource>(s.power_source));
  w.set_network(static_cast<wire::DeviceState::NetworkType>(s.network));
  w.set_idle(s.idle);
  w.set_zone(s.zone);
  if (s.local_intensity) w.set_local_intensity_g_per_kwh(static_cast<float>(s.local_intensity->grams_per_kwh()));
  return w;
}

wire::DeviceState ClientLoop::CurrentState() const {
  if (options_.state_provider == nullptr) return options_.device_state;
  auto s = options_.state_provider->Current();
  if (!s.ok()) {
    spdlog::debug("device state unavailable: {}", s.status().ToString());
    return options_.device_state;
  }
  return ToWire(*s);
}

ClientLoop::ClientLoop(ClientLoopOptions options, LocalTrainer& trainer)
    : options_(std::move(options)), trainer_(trainer), rng_(options_.seed) {}

std::unique_ptr<energy::EnergyMeter> ClientLoop::PickMeter() {
  if (!options_.metering) return nullptr;
  energy::MeterSelection sel = energy::MakeBestMeter(*options_.metering);
  const bool measures = sel.meter != nullptr && sel.meter->Name() != "model";
  const std::string method = measures ? sel.meter->Method() : "none";
  if (method != last_meter_method_) {
    last_meter_method_ = method;
    std::string why;
    for (const auto& r : sel.fallback_reasons) why += (why.empty() ? "" : "; ") + r;
    if (measures) {
      spdlog::info("energy meter: {}{}", method, why.empty() ? "" : " (" + why + ")");
    } else {
      spdlog::info("energy meter: none, the coordinator models this client's energy ({})", why);
    }
  }
  if (!measures) return nullptr;
  return std::move(sel.meter);
}

Result<UpdateCodec*> ClientLoop::CodecFor(const std::string& spec) {
  auto it = codecs_.find(spec);
  if (it != codecs_.end()) return it->second.get();
  VERDANT_ASSIGN_OR_RETURN(auto codec, CreateCodec(spec));
  UpdateCodec* raw = codec.get();
  codecs_[spec] = std::move(codec);
  return raw;
}

Status ClientLoop::EncodeWithErrorFeedback(UpdateCodec& codec, uint64_t tag, std::span<const float> delta, Rng& rng,
                                           ByteBuffer& out) {
  namespace fs = std::filesystem;
  const fs::path file = options_.state_dir.empty() ? fs::path() : fs::path(options_.state_dir) / "error_feedback.bin";
  if (!error_feedback_loaded_) {
    error_feedback_loaded_ = true;
    if (!file.empty()) {
      auto restored = ErrorFeedback::LoadFromFile(file);
      if (restored.ok()) {
        error_feedback_ = std::move(*restored);
        spdlog::info("restored the error-feedback residual from {}", file.string());
      } else if (restored.status().code() != StatusCode::kNotFound) {
        spdlog::warn("ignoring the error-feedback residual in {}: {}", file.string(), restored.status().ToString());
      }
    }
  }
  if (error_feedback_.tag() != tag || error_feedback_.residual().size() != delta.size()) {
    if (!error_feedback_.residual().empty()) spdlog::info("the model changed: dropping the error-feedback residual");
    error_feedback_.Reset();
    error_feedback_.set_tag(tag);
  }
  VERDANT_RETURN_IF_ERROR(error_feedback_.Encode(codec, delta, rng, out).WithContext("encoding the delta"));
  if (!file.empty()) {
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    Status st = error_feedback_.SaveToFile(file);
    if (!st.ok()) spdlog::warn("cannot persist the error-feedback residual: {}", st.ToString());
  }
  return OkStatus();
}

Status ClientLoop::Run() {
  Duration backoff = options_.backoff_initial;
  int failures = 0;
  Status last;
  while (!stop_) {
    welcomed_ = false;
    auto conn = ClientConnection::Connect(options_.host, options_.port, options_.connection);
    Status st = conn.ok() ? RunSession(**conn) : conn.status();
    if (conn.ok()) (*conn)->Close();
    if (st.ok() || stop_) return OkStatus();
    if (st.code() == StatusCode::kFailedPrecondition || st.code() == StatusCode::kUnauthenticated ||
        st.code() == StatusCode::kPermissionDenied) {
      return st;  // retrying cannot help
    }
    last = st;
    if (welcomed_) {
      // The session worked until it dropped (e.g. the coordinator restarted):
      // a fresh start for the backoff and the attempt count.
      failures = 0;
      backoff = options_.backoff_initial;
    }
    ++failures;
    if (options_.max_reconnects >= 0 && failures > options_.max_reconnects) {
      return st.WithContext("giving up after " + std::to_string(failures) + " attempts");
    }
    // Exponential backoff with full jitter (AWS architecture blog's "full jitter").
    auto wait = Duration(static_cast<int64_t>(rng_.Uniform() * static_cast<double>(backoff.count())));
    spdlog::warn("{}; reconnecting in {:.2f} s", st.ToString(), ToSeconds(wait));
    // Sleep in small steps so that Stop() is not held up by a long backoff.
    for (auto until = std::chrono::steady_clock::now() + wait; !stop_ && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(std::min<Duration>(std::chrono::milliseconds(50),
                                                     std::chrono::duration_cast<Duration>(
                                                         until - std::chrono::steady_clock::now())));
    }
    backoff = std::min(options_.backoff_max, backoff * 2);
  }
  return OkStatus();
}

static Status ErrorToStatus(const wire::Error& e) {
  switch (e.code()) {
    case wire::Error::VERSION_MISMATCH:
    case wire::Error::PROTOCOL_VIOLATION:
      return FailedPreconditionError("coordinator refused us: " + e.message());
    case wire::Error::UNAUTHENTICATED:
      return UnauthenticatedError("coordinator refused us: " + e.message());
    case wire::Error::SHUTTING_DOWN:
      return OkStatus();
    default:
      return UnavailableError("coordinator error: " + e.message());
  }
}

Status ClientLoop::RunSession(ClientConnection& conn) {
  wire::Envelope hello;
  auto* h = hello.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_client_name(options_.name);
  for (const auto& c : SupportedCodecs()) h->add_codecs(c);
  h->set_num_examples(trainer_.num_examples());
  *h->mutable_state() = CurrentState();
  h->set_device_profile(options_.device_profile);
  h->add_capabilities("train");
  h->add_capabilities("fedprox");
  h->add_capabilities("downlink-delta");
  h->set_held_model_version(held_version_);
  VERDANT_RETURN_IF_ERROR(conn.Send(hello));
  auto welcome = conn.Receive(std::chrono::seconds(30));
  if (!welcome.ok()) return welcome.status().WithContext("waiting for Welcome");
  if (welcome->has_error()) return ErrorToStatus(welcome->error());
  if (!welcome->has_welcome()) {
    return FailedPreconditionError(std::string("expected Welcome, got ") + std::string(MessageTypeName(*welcome)));
  }
  if (welcome->welcome().chunk_bytes() > 0) chunk_bytes_ = welcome->welcome().chunk_bytes();
  const auto hb_interval = std::chrono::milliseconds(
      std::max<uint32_t>(100, welcome->welcome().heartbeat_interval_ms() ? welcome->welcome().heartbeat_interval_ms() : 5000));
  spdlog::info("joined: run_id={:?} client={}", welcome->welcome().run_id(), welcome->welcome().client_id());
  welcomed_ = true;

  auto next_heartbeat = std::chrono::steady_clock::now() + hb_interval;
  uint64_t hb_seq = 0;
  while (!stop_) {
    auto msg = conn.Receive(std::chrono::milliseconds(200));
    if (std::chrono::steady_clock::now() >= next_heartbeat) {
      wire::Envelope hb;
      hb.mutable_heartbeat()->set_seq(++hb_seq);
      *hb.mutable_heartbeat()->mutable_state() = CurrentState();
      // A failed send means the connection closed; a Bye or Error may still be
      // waiting in the inbox, so the next Receive reports what happened.
      (void)conn.Send(hb);
      next_heartbeat = std::chrono::steady_clock::now() + hb_interval;
    }
    if (!msg.ok()) {
      if (msg.status().code() == StatusCode::kDeadlineExceeded) continue;
      return msg.status();
    }
    switch (msg->body_case()) {
      case wire::Envelope::kTrainTask:
        VERDANT_RETURN_IF_ERROR(HandleTrainTask(conn, msg->train_task()));
        next_heartbeat = std::min(next_heartbeat, std::chrono::steady_clock::now() + hb_interval);
        break;
      case wire::Envelope::kBye:
        spdlog::info("coordinator bye: reason={:?}", msg->bye().reason());
        return OkStatus();
      case wire::Envelope::kError:
        return ErrorToStatus(msg->error());
      case wire::Envelope::kEvalTask:
        spdlog::debug("ignoring EvalTask (federated evaluation is not enabled on this client)");
        break;
      default:
        spdlog::warn("ignoring unexpected {}", MessageTypeName(*msg));
        break;
    }
  }
  return OkStatus();
}

Status ClientLoop::HandleTrainTask(ClientConnection& conn, const wire::TrainTask& task) {
  // 1. Receive the model.
  const auto& info = task.payload();
  PayloadAssembler assembler(info, /*max_payload_bytes=*/info.num_params() * 8 + (1u << 20), std::move(model_bytes_));
  if (!assembler.status().ok()) return assembler.status().WithContext("TrainTask");
  VERDANT_RETURN_IF_ERROR(conn.ReceivePayload(assembler, std::chrono::seconds(60)).WithContext("receiving the model"));
  VERDANT_ASSIGN_OR_RETURN(UpdateCodec * down_codec, CodecFor(info.encoding()));
  model_bytes_ = assembler.Take();
  const ByteBuffer& model_bytes = model_bytes_;
  if (info.base_version() != 0) {
    // A delta against the model we hold: held += Decode(bytes), exactly as
    // the coordinator updated its copy of what clients hold.
    if (info.base_version() != held_version_ || held_model_.size() != info.num_params()) {
      return DataLossError("the coordinator sent a delta against model version " +
                           std::to_string(info.base_version()) + ", we hold version " + std::to_string(held_version_));
    }
    VERDANT_RETURN_IF_ERROR(down_codec->Validate(model_bytes, held_model_.size()).WithContext("model delta"));
    VERDANT_RETURN_IF_ERROR(down_codec->DecodeAccumulate(model_bytes, 1.0f, held_model_).WithContext("model delta"));
  } else {
    held_version_ = 0;
    // Decode writes every value (codec.h): no zero-fill of a reused buffer.
    held_model_.resize(info.num_params());
    VERDANT_RETURN_IF_ERROR(down_codec->Decode(model_bytes, held_model_).WithContext("decoding the model"));
  }
  held_version_ = task.model_version();
  const std::vector<float>& global = held_model_;

  // 2. Train.
  TaskSpec spec;
  spec.round = task.round();
  spec.model_name = task.model_name();
  spec.local_epochs = task.local_epochs();
  spec.batch_size = task.batch_size();
  spec.learning_rate = task.learning_rate();
  spec.proximal_mu = task.proximal_mu();
  spec.max_examples = task.max_examples();
  spec.seed = task.seed();
  std::vector<float>& delta = delta_;
  // The meter covers training and encoding (not the transfers or the wait).
  std::unique_ptr<energy::EnergyMeter> meter = PickMeter();
  std::optional<MeteredSection> metered;
  if (meter) metered.emplace(*meter, options_.meter_sample_interval);
  auto outcome = trainer_.Train(spec, global, delta);
  if (!outcome.ok()) {
    // A local failure fails this round for us, not the session.
    spdlog::error("training failed: round={} reason={:?}", task.round(), outcome.status().ToString());
    // Tell the coordinator at once, so the round does not wait for its deadline.
    wire::Envelope env;
    auto* r = env.mutable_train_result();
    r->set_round(task.round());
    r->set_task_id(task.task_id());
    (*r->mutable_metrics())[std::string(kTrainFailedMetric)] = 1.0;
    return conn.Send(env);
  }
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  if (task.deadline_unix_ms() != 0 && static_cast<uint64_t>(now_ms) > task.deadline_unix_ms()) {
    spdlog::warn("deadline missed: round={} (not uploading)", task.round());
    return OkStatus();
  }

  // 3. Encode and upload.
  VERDANT_ASSIGN_OR_RETURN(UpdateCodec * codec, CodecFor(task.uplink_codec()));
  Rng rng(task.seed());
  ByteBuffer& encoded = encoded_;
  encoded.clear();
  std::span<const uint8_t> payload;
  if (codec->Name() == "identity") {
    // The identity encoding is the floats' own bytes: chunk them in place.
    payload = IdentityBytes(delta);
  } else if (task.uplink_codec().find("topk") != std::string::npos) {
    VERDANT_RETURN_IF_ERROR(EncodeWithErrorFeedback(*codec, info.layout_fingerprint(), delta, rng, encoded));
    payload = encoded;
  } else {
    VERDANT_RETURN_IF_ERROR(codec->Encode(delta, rng, encoded).WithContext("encoding the delta"));
    payload = encoded;
  }
  wire::Envelope env;
  auto* r = env.mutable_train_result();
  r->set_round(task.round());
  r->set_task_id(task.task_id());
  r->set_num_examples(outcome->num_examples);
  r->set_train_loss(outcome->train_loss);
  r->set_train_seconds(outcome->train_seconds);
  if (metered) {
    auto reading = metered->Stop();
    const double joules = reading.ok() ? reading->energy.joules() : 0.0;
    const double seconds = reading.ok() ? reading->elapsed.count() : 0.0;
    if (!reading.ok()) {
      spdlog::warn("round {}: energy not measured ({}); the coordinator models it", task.round(),
                   reading.status().ToString());
    } else if (!(std::isfinite(joules) && joules > 0 && std::isfinite(seconds) && seconds > 0)) {
      spdlog::warn("round {}: energy meter {} read {} J over {} s; not reported", task.round(), reading->method,
                   joules, seconds);
    } else {
      auto* e = r->mutable_energy();
      e->set_compute_joules(joules);
      e->set_seconds(seconds);
      e->set_method(reading->method);
      spdlog::info("round {}: measured {:.3f} J over {:.3f} s ({})", task.round(), joules, seconds, reading->method);
    }
  }
  auto* p = r->mutable_payload();
  p->set_stream_id(task.task_id());
  p->set_encoding(task.uplink_codec());
  p->set_num_params(delta.size());
  p->set_layout_fingerprint(info.layout_fingerprint());
  p->set_payload_bytes(payload.size());
  auto chunks = MakeChunkMessages(task.task_id(), payload, chunk_bytes_);
  p->set_num_chunks(static_cast<uint32_t>(chunks.size()));
  VERDANT_RETURN_IF_ERROR(conn.Send(env));
  for (auto& c : chunks) VERDANT_RETURN_IF_ERROR(conn.Send(std::move(c)));
  ++tasks_completed_;
  spdlog::info("task done: round={} examples={} train_seconds={:.2f} loss={:.4f} payload_bytes={}", task.round(),
               outcome->num_examples, outcome->train_seconds, outcome->train_loss, payload.size());
  return OkStatus();
}

}  // namespace verdant
