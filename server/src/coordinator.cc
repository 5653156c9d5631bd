#include "verdant/server/coordinator.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <set>
#include <thread>

namespace verdant {

namespace {

// This process's user + system CPU time so far (getrusage RUSAGE_SELF).
double ProcessCpuSeconds() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0.0;
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

// This process's peak resident set so far, MiB (Linux reports ru_maxrss in KiB).
double ProcessPeakRssMb() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0.0;
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// The upload checks of transport's PayloadAssembler: the declared size
// within `max_bytes` and a consistent chunk count.
Status CheckUploadInfo(const wire::PayloadInfo& info, uint64_t max_bytes) {
  if (info.payload_bytes() > max_bytes) {
    return InvalidArgumentError("payload of " + std::to_string(info.payload_bytes()) + " bytes exceeds the " +
                                std::to_string(max_bytes) + "-byte limit");
  }
  if (info.num_chunks() == 0 && info.payload_bytes() != 0) {
    return InvalidArgumentError("payload declares bytes but no chunks");
  }
  if (info.num_chunks() > info.payload_bytes()) return InvalidArgumentError("payload declares more chunks than bytes");
  return OkStatus();
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options, ParameterVector initial_model,
                         std::unique_ptr<Strategy> strategy, std::unique_ptr<ClientSelector> selector,
                         Evaluator* evaluator, Clock& clock)
    : options_(std::move(options)),
      global_(std::move(initial_model)),
      num_params_(global_.size()),
      layout_fingerprint_(global_.layout().Fingerprint()),
      strategy_(std::move(strategy)),
      selector_(std::move(selector)),
      evaluator_(evaluator),
      clock_(clock),
      rng_(options_.seed),
      ledger_options_(energy::LedgerOptions{
          false, CarbonIntensity::GramsPerKwh(energy::ConstantIntensitySource::kWorldAverageGramsPerKwh)}),
      ledger_(ledger_options_) {
  if (options_.energy.intensity != nullptr) {
    intensity_ = options_.energy.intensity;
  } else {
    default_intensity_ = std::make_unique<energy::ConstantIntensitySource>();
    intensity_ = default_intensity_.get();
  }
  status_.run_id = options_.run_id;
  status_.rounds_planned = options_.rounds;
  // A simulated fleet names one profile per device (10^6 of them): a lookup
  // by scanning the list would make the run quadratic. On a repeated name the
  // last one wins, as the list scan did.
  profile_index_.reserve(options_.energy.profiles.size());
  for (size_t i = 0; i < options_.energy.profiles.size(); ++i) {
    profile_index_.insert_or_assign(std::string_view(options_.energy.profiles[i].name), i);
  }
}

Coordinator::~Coordinator() = default;

const energy::EnergyModel& Coordinator::ModelFor(const std::string& profile) {
  const std::string& name = profile.empty() ? options_.energy.default_profile : profile;
  auto it = energy_models_.find(name);
  if (it != energy_models_.end()) return *it->second;
  std::optional<energy::DeviceProfile> found;
  if (auto p = profile_index_.find(name); p != profile_index_.end()) found = options_.energy.profiles[p->second];
  if (!found) {
    auto b = energy::BuiltinProfile(name);
    if (b.ok()) found = *b;
  }
  if (!found) {
    spdlog::warn("unknown device profile '{}': accounting it as '{}'", name, options_.energy.default_profile);
    if (name == options_.energy.default_profile) {
      found = *energy::BuiltinProfile("phone-midrange");
    } else {
      const auto& fallback = ModelFor(options_.energy.default_profile);
      found = fallback.profile();
    }
  }
  auto model = energy::ProfileEnergyModel::Create(*found);
  if (!model.ok()) {
    spdlog::warn("device profile '{}' is invalid ({}); using phone-midrange", name, model.status().ToString());
    model = energy::ProfileEnergyModel::Create(*energy::BuiltinProfile("phone-midrange"));
  }
  auto& slot = energy_models_[name];
  slot = std::move(*model);
  return *slot;
}

TimePoint Coordinator::GridTime(uint64_t round) const {
  const auto& e = options_.energy;
  if (!e.grid_time_start) return clock_.Now() + grid_offset_;
  return *e.grid_time_start + e.grid_time_per_round * static_cast<int64_t>(round - 1) + grid_offset_;
}

// A device state from the network: plausible values or a reason why not.
static std::string InvalidStateReason(const wire::DeviceState& s) {
  if (s.battery_known() && !(s.battery_percent() >= 0 && s.battery_percent() <= 100)) {
    return "battery_percent outside 0..100";
  }
  if (!(s.battery_capacity_wh() >= 0) || !std::isfinite(s.battery_capacity_wh())) return "bad battery_capacity_wh";
  if (!(s.local_intensity_g_per_kwh() >= 0) || !std::isfinite(s.local_intensity_g_per_kwh())) {
    return "bad local_intensity_g_per_kwh";
  }
  if (s.zone().size() > 64) return "zone id longer than 64 characters";
  for (char c : s.zone()) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return "bad zone id";
  }
  return {};
}

static std::optional<energy::LinkType> LinkFor(const wire::DeviceState& s) {
  if (s.network() == wire::DeviceState::NETWORK_CELLULAR) return energy::LinkType::kLte;
  if (s.network() == wire::DeviceState::NETWORK_UNMETERED) return energy::LinkType::kWifi;
  return std::nullopt;  // the profile's default link
}

Status ValidateEnergyReport(const wire::EnergyReport& e, double max_seconds, double max_power_w) {
  const std::string& m = e.method();
  const auto colon = m.find(':');
  if (m.empty() || m.size() > 96 || colon == 0 || colon == std::string::npos) {
    return InvalidArgumentError("method must look like 'kind:detail' such as rapl:package-0 and have at most 96 characters");
  }
  for (char c : m) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '+' || c == '/' || c == '_' || c == '.' ||
          c == '-')) {
      return InvalidArgumentError("method has a character outside [A-Za-z0-9:+/_.-]");
    }
  }
  if (m.rfind("model", 0) == 0) {
    return InvalidArgumentError("method '" + m + "' is a model and not a measurement (the coordinator does the modelling)");
  }
  const double j = e.compute_joules(), s = e.seconds();
  if (!std::isfinite(j) || j <= 0) return InvalidArgumentError("compute_joules " + std::to_string(j) + " is not > 0");
  if (!std::isfinite(s) || s <= 0) return InvalidArgumentError("seconds " + std::to_string(s) + " is not > 0");
  if (s > max_seconds) {
    return InvalidArgumentError("measured over " + std::to_string(s) + " s, longer than the task was out (" +
                                std::to_string(max_seconds) + " s)");
  }
  if (j / s > max_power_w) {
    return InvalidArgumentError("mean power " + std::to_string(j / s) + " W exceeds the plausible " +
                                std::to_string(max_power_w) + " W");
  }
  return OkStatus();
}

std::optional<energy::ClientRoundRecord> Coordinator::Account(energy::Ledger& round_ledger, ClientRoundRecord& rec,
                                                              const wire::DeviceState& state,
                                                              const std::string& profile, uint64_t samples,
                                                              uint64_t round, const wire::EnergyReport* report,
                                                              double task_seconds) {
  const energy::EnergyModel& model = ModelFor(profile);
  energy::RoundUsage usage;
  usage.samples_processed = samples;
  usage.bytes_up = Bytes{rec.bytes_up};
  usage.bytes_down = Bytes{rec.bytes_down};
  usage.link = LinkFor(state);
  // A measured compute figure replaces the modelled one (radio and idle stay
  // modelled); an implausible one is logged and ignored.
  std::optional<Energy> measured;
  if (report != nullptr) {
    // Slack: the task's send and the result's arrival bracket the client's work.
    Status valid = ValidateEnergyReport(*report, task_seconds * 1.1 + 2.0, options_.energy.max_reported_power_w);
    if (valid.ok()) {
      measured = Energy::Joules(report->compute_joules());
      usage.measured_train_time = energy::Seconds(report->seconds());
    } else {
      spdlog::warn("round {}: client {}: ignoring its energy report ({}); using the model", round, rec.client_id,
                   valid.message());
      rec.reason = "energy report rejected: " + valid.message();
    }
  }
  if (usage.link && !model.profile().Link(*usage.link).ok()) usage.link.reset();
  auto est = model.Estimate(usage);
  if (!est.ok()) {
    spdlog::warn("round {}: no energy estimate for {}: {}", round, rec.client_id, est.status().ToString());
    return std::nullopt;
  }
  energy::ClientRoundInput in;
  in.round = round;
  in.client_id = rec.client_id;
  in.zone = state.zone();
  in.start = GridTime(round);
  in.duration = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(est->reserved_time.count()));
  in.compute = measured ? *measured * model.profile().pue : est->compute;
  in.radio = est->radio;
  in.idle = est->idle;
  in.embodied = est->embodied;
  in.bytes_up = usage.bytes_up;
  in.bytes_down = usage.bytes_down;
  // The method of the compute figure; radio and idle are always modelled.
  in.energy_method = measured ? report->method() : est->method;
  in.codec = rec.codec;
  in.samples = samples;
  if (state.local_intensity_g_per_kwh() > 0) {
    in.reported_intensity = CarbonIntensity::GramsPerKwh(state.local_intensity_g_per_kwh());
  }
  auto row = round_ledger.AddClientRound(in, *intensity_);
  if (!row.ok()) {
    spdlog::warn("round {}: ledger: {}", round, row.status().ToString());
    return std::nullopt;
  }
  rec.zone = row->zone;
  rec.time_utc = FormatUtc(row->time_utc);
  rec.compute_joules = row->compute.joules();
  rec.radio_joules = row->radio.joules();
  rec.idle_joules = row->idle.joules();
  rec.intensity_g_per_kwh = row->intensity.grams_per_kwh();
  rec.emissions_g = row->emissions.grams();
  rec.embodied_g = row->embodied.grams();
  rec.energy_method = row->energy_method;
  rec.intensity_source = row->intensity_source;
  return std::move(*row);
}

Result<std::pair<bool, std::unique_ptr<UpdateCodec>>> ParseDownlinkCodec(const std::string& spec) {
  const std::string_view kDelta = "delta:";
  if (spec == "identity") return std::make_pair(false, std::unique_ptr<UpdateCodec>());
  if (spec.rfind(kDelta, 0) == 0) {
    auto inner = CreateCodec(spec.substr(kDelta.size()));
    if (!inner.ok()) return inner.status().WithContext("downlink codec '" + spec + "'");
    return std::make_pair(true, std::move(*inner));
  }
  if (spec.find("topk") != std::string::npos || spec.find('+') != std::string::npos) {
    return InvalidArgumentError("downlink codec '" + spec +
                                "': a whole model needs a dense codec (identity, fp16, int8, ...); "
                                "sparse codecs only make sense as delta:<codec>, e.g. delta:topk:0.1+int8");
  }
  auto c = CreateCodec(spec);
  if (!c.ok()) {
    return c.status().WithContext("downlink codec '" + spec + "' (identity, fp16, or delta:<codec>)");
  }
  return std::make_pair(false, std::move(*c));
}

size_t Coordinator::connected_clients() const {
  std::lock_guard<std::mutex> l(mu_);
  // Welcomed clients by id: a session replaced by a reconnect of the same
  // client, still closing, is not counted twice.
  return by_client_id_.size();
}

void Coordinator::Stop() {
  {
    // Under mu_: a waiter checks stop_ under mu_ and then waits, so the
    // store and the notify cannot both fall between its check and its wait.
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

void Coordinator::SetState(const char* state) {
  std::lock_guard<std::mutex> l(status_mu_);
  status_.state = state;
}

namespace {

const char* PowerSourceName(wire::DeviceState::PowerSource p) {
  switch (p) {
    case wire::DeviceState::POWER_SOURCE_GRID: return "grid";
    case wire::DeviceState::POWER_SOURCE_SOLAR: return "solar";
    case wire::DeviceState::POWER_SOURCE_BATTERY: return "battery";
    default: return "unknown";
  }
}

const char* NetworkName(wire::DeviceState::NetworkType n) {
  switch (n) {
    case wire::DeviceState::NETWORK_UNMETERED: return "unmetered";
    case wire::DeviceState::NETWORK_CELLULAR: return "cellular";
    default: return "unknown";
  }
}

}  // namespace

CoordinatorStatus Coordinator::Snapshot(size_t max_clients) const {
  CoordinatorStatus s;
  std::map<std::string, std::array<uint64_t, 3>> history;  // as of the last round
  {
    std::lock_guard<std::mutex> l(status_mu_);
    s = status_;
    if (max_clients > 0) history = status_history_;
  }
  const auto now = std::chrono::steady_clock::now();
  s.uptime_seconds = std::chrono::duration<double>(now - started_).count();
  s.heartbeats_total = heartbeats_total_.load();
  s.clients_joined_total = joined_total_.load();
  s.clients_left_total = left_total_.load();
  std::lock_guard<std::mutex> l(mu_);
  s.sessions_open = clients_.size();
  const ByteTotals bytes = TotalBytes();
  s.bytes_up_total = bytes.up;
  s.bytes_down_total = bytes.down;
  std::vector<const ClientEntry*> listed;
  for (const auto& [sid, e] : clients_) {
    if (!e.welcomed) continue;
    // A session replaced by a reconnect of the same client is not listed.
    if (auto bi = by_client_id_.find(e.client_id); bi == by_client_id_.end() || bi->second != sid) continue;
    ++s.clients_connected;
    if (e.task_id != 0) ++s.clients_training;
    if (max_clients > 0) listed.push_back(&e);
  }
  s.clients_omitted = s.clients_connected - std::min(s.clients_connected, max_clients);
  const size_t n = std::min(listed.size(), max_clients);
  auto by_id = [](const ClientEntry* a, const ClientEntry* b) { return a->client_id < b->client_id; };
  std::partial_sort(listed.begin(), listed.begin() + static_cast<std::ptrdiff_t>(n), listed.end(), by_id);
  s.clients.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const ClientEntry& e = *listed[i];
    ClientStatusEntry c;
    c.client_id = e.client_id;
    c.address = e.session->remote_address();
    c.device_profile = e.hello.device_profile();
    c.battery_percent = e.state.battery_known() ? e.state.battery_percent() : -1.0;
    c.charging = e.state.charging();
    c.power_source = PowerSourceName(e.state.power_source());
    c.network = NetworkName(e.state.network());
    c.idle = e.state.idle();
    c.zone = e.state.zone();
    c.local_intensity_g_per_kwh = e.state.local_intensity_g_per_kwh();
    c.num_examples = e.hello.num_examples();
    if (auto h = history.find(e.client_id); h != history.end()) {
      c.rounds_selected = h->second[0];
      c.rounds_completed = h->second[1];
      c.rounds_failed = h->second[2];
    }
    c.training = e.task_id != 0;
    c.heartbeats = e.heartbeats;
    c.seconds_since_message = std::chrono::duration<double>(now - e.last_message).count();
    s.clients.push_back(std::move(c));
  }
  return s;
}

void Coordinator::Drain(Duration grace) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!drain_) drain_deadline_ = std::chrono::steady_clock::now() + grace;
    drain_ = true;
  }
  cv_.notify_all();
}

bool Coordinator::draining() const { return drain_; }

// ---- transport callbacks (session strands) ----------------------------------

void Coordinator::OnSessionOpen(const SessionPtr& session) {
  std::lock_guard<std::mutex> l(mu_);
  ClientEntry e;
  e.session = session;
  clients_.emplace(session->id(), std::move(e));
}

void Coordinator::OnSessionClosed(const SessionPtr& session, const Status& reason) {
  std::string client_id;
  uint64_t task_id = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = clients_.find(session->id());
    if (it == clients_.end()) return;
    client_id = it->second.client_id;
    task_id = it->second.task_id;
    closed_bytes_up_ += session->bytes_received();
    closed_bytes_down_ += session->bytes_sent();
    if (!client_id.empty()) {
      auto bi = by_client_id_.find(client_id);
      if (bi != by_client_id_.end() && bi->second == session->id()) by_client_id_.erase(bi);
    }
    clients_.erase(it);
  }
  if (!client_id.empty()) {
    ++left_total_;
    spdlog::info("client left: client={} addr={} reason={:?}", client_id, session->remote_address(),
                 reason.ToString());
  }
  if (task_id != 0) {
    Event ev{Event::kGone};
    ev.session = session->id();
    ev.client_id = client_id;
    ev.task_id = task_id;
    ev.status = UnavailableError("disconnected during the round: " + reason.ToString());
    Push(std::move(ev));
  }
  cv_.notify_all();
}

Coordinator::ClientEntry* Coordinator::TouchEntry(const SessionPtr& s) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = clients_.find(s->id());
  if (it == clients_.end()) return nullptr;
  it->second.last_message = std::chrono::steady_clock::now();
  return &it->second;  // stable: only this session's strand erases it
}

void Coordinator::OnChunk(const SessionPtr& s, const ChunkView& c) {
  ClientEntry* e = TouchEntry(s);
  if (e == nullptr) return;
  if (!e->welcomed) {
    spdlog::warn("session {} ({}): Chunk before Hello; closing", s->id(), s->remote_address());
    s->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "expected Hello first");
    return;
  }
  HandleChunk(s, *e, c);
}

void Coordinator::OnMessage(const SessionPtr& s, wire::Envelope&& m) {
  ClientEntry* e = TouchEntry(s);
  if (e == nullptr) return;
  if (!e->welcomed && m.body_case() != wire::Envelope::kHello) {
    spdlog::warn("session {} ({}): {} before Hello; closing", s->id(), s->remote_address(), MessageTypeName(m));
    s->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "expected Hello first");
    return;
  }
  switch (m.body_case()) {
    case wire::Envelope::kHello:
      if (e->welcomed) {
        s->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "duplicate Hello");
        return;
      }
      HandleHello(s, *e, m.hello());
      return;
    case wire::Envelope::kHeartbeat: {
      const std::string why = InvalidStateReason(m.heartbeat().state());
      if (!why.empty()) {
        spdlog::warn("client {}: ignoring a device state with {}", e->client_id, why);
        return;
      }
      ++heartbeats_total_;
      std::lock_guard<std::mutex> l(mu_);
      e->state = m.heartbeat().state();
      ++e->heartbeats;
      return;
    }
    case wire::Envelope::kTrainResult:
      HandleTrainResult(s, *e, m.train_result());
      return;
    case wire::Envelope::kChunk:
      HandleChunk(s, *e, ToChunkView(m.chunk()));
      return;
    case wire::Envelope::kEvalResult:
      return;  // federated evaluation is not scheduled by this coordinator yet
    case wire::Envelope::kBye:
      spdlog::info("client bye: client={} reason={:?}", e->client_id, m.bye().reason());
      s->Close(CancelledError("client said Bye: " + m.bye().reason()));
      return;
    case wire::Envelope::kError:
      spdlog::warn("client {} reported an error: {}", e->client_id, m.error().message());
      s->Close(AbortedError("client error: " + m.error().message()));
      return;
    default:
      spdlog::warn("client {}: unexpected {} from a client; closing", e->client_id, MessageTypeName(m));
      s->CloseWithError(wire::Error::PROTOCOL_VIOLATION,
                        std::string("a client may not send ") + std::string(MessageTypeName(m)));
      return;
  }
}

void Coordinator::HandleHello(const SessionPtr& s, ClientEntry& e, const wire::Hello& hello) {
  if (hello.protocol_version() != kProtocolVersion) {
    std::string msg = "protocol version " + std::to_string(hello.protocol_version()) +
                      " is not supported; this coordinator speaks version " + std::to_string(kProtocolVersion);
    spdlog::warn("session {} ({}): {}", s->id(), s->remote_address(), msg);
    s->CloseWithError(wire::Error::VERSION_MISMATCH, msg);
    return;
  }
  // The client must be able to run the uplink codec of this run.
  std::string missing;
  std::vector<std::string> needed = CodecNamesInSpec(options_.uplink_codec);
  {
    std::string_view down = options_.downlink_codec;
    if (down.rfind("delta:", 0) == 0) down.remove_prefix(6);
    for (const auto& n : CodecNamesInSpec(down)) needed.push_back(n);
  }
  for (const auto& want : needed) {
    bool has = false;
    for (const auto& c : hello.codecs()) has |= c.substr(0, c.find('/')) == want;
    if (!has) missing += (missing.empty() ? "" : ", ") + want;
  }
  if (!missing.empty()) {
    std::string msg = "this run uses codec(s) " + missing + " (uplink '" + options_.uplink_codec + "', downlink '" +
                      options_.downlink_codec + "'), which the client does not offer";
    spdlog::warn("session {} ({}): {}", s->id(), s->remote_address(), msg);
    s->CloseWithError(wire::Error::VERSION_MISMATCH, msg);
    return;
  }
  SessionPtr replaced;
  std::string id;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (finishing_) {  // after SayGoodbye: no Welcome, the run is over
      s->CloseWithError(wire::Error::SHUTTING_DOWN, "the run is over");
      return;
    }
    // The identity comes from the handshake when there is one; a plaintext
    // session is named after its label, made unique.
    if (!s->peer_id().empty()) {
      id = s->peer_id();
    } else {
      std::string base = hello.client_name().empty() ? "client" : hello.client_name();
      for (char& c : base) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
      }
      if (base.size() > 64) base.resize(64);
      id = base;
      if (by_client_id_.count(id)) id = base + "#" + std::to_string(s->id());
    }
    auto bi = by_client_id_.find(id);
    if (bi != by_client_id_.end()) {
      auto old = clients_.find(bi->second);
      if (old != clients_.end()) replaced = old->second.session;
    }
    by_client_id_[id] = s->id();
    e.client_id = id;
    e.hello = hello;
    e.state = hello.state();
    e.welcomed = true;
    e.held_version = hello.held_model_version();
    if (std::string why = InvalidStateReason(hello.state()); !why.empty()) {
      spdlog::warn("client {}: ignoring its device state ({})", id, why);
      e.state = wire::DeviceState();
    }
    // Queued under mu_, in the same critical section that makes the client
    // a candidate: the round thread queues TrainTasks under mu_ too, so a
    // round that starts the moment this client is counted cannot put its
    // task ahead of the Welcome (the client would see a protocol violation
    // and leave). Send only queues; it never blocks.
    wire::Envelope env;
    auto* w = env.mutable_welcome();
    w->set_protocol_version(kProtocolVersion);
    w->set_client_id(id);
    w->set_run_id(options_.run_id);
    w->set_max_frame_bytes(kDefaultMaxFrameBytes);
    w->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
    w->set_chunk_bytes(options_.chunk_bytes);
    s->Send(env);
  }
  if (replaced) replaced->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "replaced by a new connection");
  ++joined_total_;
  spdlog::info("client joined: client={} addr={} examples={} profile={:?} zone={:?}", id, s->remote_address(),
               hello.num_examples(), hello.device_profile(), hello.state().zone());
  cv_.notify_all();
}

void Coordinator::HandleTrainResult(const SessionPtr& s, ClientEntry& e, const wire::TrainResult& r) {
  uint64_t task_id;
  {
    std::lock_guard<std::mutex> l(mu_);
    task_id = e.task_id;
  }
  if (e.upload) {
    s->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "TrainResult while an upload is in progress");
    return;
  }
  if (r.metrics().count("train_failed") && r.metrics().at("train_failed") != 0) {
    // The client's local training failed: its round fails now, the session stays.
    if (task_id != 0 && r.task_id() == task_id) {
      Event ev{Event::kBadUpload};
      ev.session = s->id();
      ev.client_id = e.client_id;
      ev.task_id = task_id;
      ev.status = AbortedError("the client's local training failed");
      Push(std::move(ev));
    }
    return;
  }
  // A result for a task that is no longer pending (the round ended) is
  // reassembled and dropped, so the session stays usable.
  const auto& p = r.payload();
  const uint64_t n = num_params_;
  // A generous cap: no codec needs more than 8 bytes per value plus framing.
  const uint64_t max_bytes = n * 8 + (1u << 20);
  if (task_id != 0 && r.task_id() == task_id) {
    std::string why;
    if (p.num_params() != n) {
      why = "delta has " + std::to_string(p.num_params()) + " parameters, the model has " + std::to_string(n);
    } else if (p.layout_fingerprint() != 0 && p.layout_fingerprint() != layout_fingerprint_) {
      why = "delta layout does not match the model";
    } else if (p.encoding() != options_.uplink_codec) {
      why = "delta encoded with '" + p.encoding() + "', expected '" + options_.uplink_codec + "'";
    }
    if (!why.empty()) {
      spdlog::warn("client {}: bad TrainResult: {}; closing", e.client_id, why);
      Event ev{Event::kBadUpload};
      ev.session = s->id();
      ev.client_id = e.client_id;
      ev.task_id = task_id;
      ev.status = InvalidArgumentError(why);
      Push(std::move(ev));
      s->CloseWithError(wire::Error::BAD_PAYLOAD, why);
      return;
    }
  }
  if (Status st = CheckUploadInfo(p, max_bytes); !st.ok()) {
    s->CloseWithError(wire::Error::BAD_PAYLOAD, st.message());
    return;
  }
  auto a = std::make_unique<Upload>();
  a->info = p;
  // The buffer is taken at the first chunk, not here: all selected clients
  // send their headers at about the same time, and a buffer that a folded
  // upload returned meanwhile can then serve a later one.
  e.upload_header = r;
  e.upload = std::move(a);
  if (e.upload->complete()) HandleChunk(s, e, ChunkView{});  // empty payload
}

ByteBuffer Coordinator::TakeUploadBuffer(uint64_t declared_bytes) {
  ByteBuffer b;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!upload_pool_.empty()) {
      // The largest buffer: all are model-sized after the first round.
      auto it = std::max_element(upload_pool_.begin(), upload_pool_.end(),
                                 [](const ByteBuffer& x, const ByteBuffer& y) { return x.capacity() < y.capacity(); });
      b = std::move(*it);
      *it = std::move(upload_pool_.back());
      upload_pool_.pop_back();
    }
  }
  b.clear();
  // As PayloadAssembler: reserve what is declared, up to 64 MiB; beyond
  // that the buffer grows with the bytes that actually arrive.
  const uint64_t want = std::min<uint64_t>(declared_bytes, 64ull << 20);
  if (b.capacity() < want) b.reserve(want);
  return b;
}

void Coordinator::ReturnUploadBuffer(ByteBuffer buffer) {
  if (buffer.capacity() == 0) return;
  std::lock_guard<std::mutex> l(mu_);
  if (upload_pool_.size() < upload_pool_limit_) upload_pool_.push_back(std::move(buffer));
}

void Coordinator::HandleChunk(const SessionPtr& s, ClientEntry& e, const ChunkView& c) {
  if (!e.upload) {
    s->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "Chunk without a TrainResult");
    return;
  }
  Upload& u = *e.upload;
  if (!u.complete()) {
    // The checks of PayloadAssembler::Add.
    std::string bad;
    if (c.stream_id != u.info.stream_id()) {
      bad = "chunk for stream " + std::to_string(c.stream_id) + " while receiving stream " +
            std::to_string(u.info.stream_id());
    } else if (c.seq != u.received_chunks) {
      bad = "chunk " + std::to_string(c.seq) + " out of order (expected " + std::to_string(u.received_chunks) + ")";
    } else if (u.received_chunks >= u.info.num_chunks()) {
      bad = "more chunks than declared";
    } else if (u.data.size() + c.data.size() > u.info.payload_bytes()) {
      bad = "chunks overflow the declared payload size";
    } else if (c.data.empty()) {
      bad = "empty chunk";
    } else {
      if (u.received_chunks == 0) u.data = TakeUploadBuffer(u.info.payload_bytes());
      u.data.insert(u.data.end(), c.data.begin(), c.data.end());
      ++u.received_chunks;
      if (u.received_chunks == u.info.num_chunks() && u.data.size() != u.info.payload_bytes()) {
        bad = "payload ended at " + std::to_string(u.data.size()) + " of " + std::to_string(u.info.payload_bytes()) +
              " declared bytes";
      }
    }
    if (!bad.empty()) {
      Status st = DataLossError(bad);
      spdlog::warn("client {}: bad upload: {}; closing", e.client_id, st.ToString());
      s->CloseWithError(wire::Error::BAD_PAYLOAD, st.message());
      ReturnUploadBuffer(std::move(u.data));
      e.upload.reset();
      return;
    }
  }
  if (!u.complete()) return;
  Event ev{Event::kResult};
  ev.session = s->id();
  ev.client_id = e.client_id;
  ev.task_id = e.upload_header.task_id();
  ev.payload = std::move(u.data);
  ev.header = std::move(e.upload_header);
  e.upload.reset();
  Push(std::move(ev));
}

void Coordinator::Push(Event ev) {
  {
    std::lock_guard<std::mutex> l(mu_);
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

// ---- round thread ------------------------------------------------------------

Status Coordinator::WaitForClients() {
  const auto deadline = std::chrono::steady_clock::now() + options_.wait_for_clients;
  size_t last_logged = SIZE_MAX;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    size_t n = by_client_id_.size();  // welcomed clients, one per id
    if (n >= options_.min_clients) return OkStatus();
    if (stop_) return CancelledError("stopped while waiting for clients");
    if (n != last_logged) {
      spdlog::info("waiting for clients: connected={} required={}", n, options_.min_clients);
      last_logged = n;
    }
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout) {
      n = by_client_id_.size();
      if (n >= options_.min_clients) return OkStatus();
      return DeadlineExceededError("only " + std::to_string(n) + " of the " +
                                   std::to_string(options_.min_clients) + " required clients connected within " +
                                   std::to_string(ToSeconds(options_.wait_for_clients)) + " s");
    }
  }
}

Coordinator::ByteTotals Coordinator::TotalBytes() const {
  ByteTotals t{closed_bytes_up_, closed_bytes_down_};
  for (const auto& [id, e] : clients_) {
    t.up += e.session->bytes_received();
    t.down += e.session->bytes_sent();
  }
  return t;
}

Result<RoundRecord> Coordinator::RunRound(uint64_t round) {
  RoundRecord rec;
  rec.round = round;
  rec.started_utc = FormatUtc(clock_.Now());
  {
    std::lock_guard<std::mutex> l(status_mu_);
    status_.current_round = round;
    status_.state = "selecting";
  }

  // 1. Select among connected, idle clients.
  TrainConfig cfg = strategy_->ConfigureTrain(round, global_);
  const uint64_t model_bytes = global_.size() * sizeof(float);
  struct Known {
    std::string profile;
    wire::DeviceState state;
  };
  std::map<std::string, Known> known;  // selected client id -> profile and state when selected
  SelectionDecision decision;
  size_t num_candidates = 0;
  const TimePoint first_ask = GridTime(round);
  // A client whose cached estimate is stale: recomputed outside mu_.
  struct StaleEstimate {
    size_t candidate;
    SessionId session;
    ClientEntry::EstimateInputs inputs;
    std::optional<energy::LinkType> link;
    const energy::EnergyModel* model;  // nullptr: not cached yet
    std::string profile;
  };
  for (;;) {
    std::vector<ClientCandidate> candidates;
    std::vector<StaleEstimate> stale;
    const TimePoint grid_now = GridTime(round);
    // 1a. Under mu_: copy what the entries hold, with cached estimates.
    {
      std::lock_guard<std::mutex> l(mu_);
      candidates.reserve(by_client_id_.size());
      for (const auto& [id, sid] : by_client_id_) {
        auto ci = clients_.find(sid);
        if (ci == clients_.end()) continue;
        ClientEntry& e = ci->second;
        if (!e.welcomed || e.task_id != 0 || e.session->closed()) continue;
        ClientCandidate c;
        c.client_id = e.client_id;
        c.num_examples = e.hello.num_examples();
        c.zone = e.state.zone();
        c.battery_percent = e.state.battery_known() ? e.state.battery_percent() : -1.0f;
        c.charging = e.state.charging();
        c.unmetered_network = e.state.network() == wire::DeviceState::NETWORK_UNMETERED;
        c.idle = e.state.idle();
        c.power_source = static_cast<energy::PowerSource>(e.state.power_source());
        c.battery_capacity_wh = e.state.battery_capacity_wh();
        if (e.history_epoch != history_epoch_) {
          auto hi = history_.find(e.client_id);
          e.history = hi != history_.end() ? &hi->second : nullptr;
          e.history_epoch = history_epoch_;
        }
        if (e.history != nullptr) {
          const ClientHistory& h = *e.history;
          c.rounds_selected = h.rounds_selected;
          c.rounds_completed = h.rounds_completed;
          c.rounds_failed = h.rounds_failed;
          c.last_train_seconds = h.last_train_seconds;
          c.last_train_loss = h.last_train_loss;
          c.last_round_selected = h.last_round_selected;
        }
        // Oort's statistical utility |B| sqrt(mean loss^2), from the mean loss reported.
        c.last_statistical_utility =
            c.rounds_completed > 0 ? static_cast<double>(c.num_examples) * std::fabs(c.last_train_loss) : 0.0;
        if (e.state.local_intensity_g_per_kwh() > 0) c.intensity_g_per_kwh = e.state.local_intensity_g_per_kwh();
        // The energy estimate is recomputed only when its inputs changed.
        const uint64_t examples = cfg.max_examples > 0 ? std::min<uint64_t>(cfg.max_examples, c.num_examples)
                                                       : c.num_examples;
        const auto link = LinkFor(e.state);
        const ClientEntry::EstimateInputs inputs{examples * std::max<uint32_t>(1, cfg.local_epochs), model_bytes,
                                                 link ? static_cast<int>(*link) : -1};
        if (e.model != nullptr && e.estimate_inputs == inputs) {
          c.expected_energy_joules = e.expected_energy_joules;
          c.expected_round_seconds = e.expected_round_seconds;
        } else {
          stale.push_back(StaleEstimate{candidates.size(), sid, inputs, link, e.model,
                                        e.model == nullptr ? e.hello.device_profile() : std::string()});
        }
        candidates.push_back(std::move(c));
      }
    }
    // 1b. Without mu_ (an intensity source may fetch over HTTP; io threads
    // need mu_ for every message): each zone's intensity, read once per
    // selection, and the stale estimates.
    std::unordered_map<std::string, std::optional<double>> zone_intensity;
    for (auto& c : candidates) {
      if (c.intensity_g_per_kwh || c.zone.empty()) continue;
      auto [zi, fresh] = zone_intensity.try_emplace(c.zone);
      if (fresh) {
        auto r = intensity_->IntensityAt(c.zone, grid_now);
        if (r.ok()) zi->second = r->value.grams_per_kwh();
      }
      c.intensity_g_per_kwh = zi->second;
    }
    for (auto& st : stale) {
      if (st.model == nullptr) st.model = &ModelFor(st.profile);
      energy::RoundUsage usage;
      usage.samples_processed = st.inputs.samples;
      usage.bytes_up = Bytes{model_bytes};
      usage.bytes_down = Bytes{model_bytes};
      usage.link = st.link;
      if (usage.link && !st.model->profile().Link(*usage.link).ok()) usage.link.reset();
      auto est = st.model->Estimate(usage);
      ClientCandidate& c = candidates[st.candidate];
      c.expected_energy_joules = est.ok() ? est->DeviceTotal().joules() : 0;
      c.expected_round_seconds = est.ok() ? est->train_time.count() + est->transfer_time.count() : 0;
    }
    // 1c. The new estimates into the cache, with the inputs they came from.
    if (!stale.empty()) {
      std::lock_guard<std::mutex> l(mu_);
      for (const auto& st : stale) {
        auto ci = clients_.find(st.session);
        if (ci == clients_.end()) continue;
        ClientEntry& e = ci->second;
        e.model = st.model;
        e.estimate_inputs = st.inputs;
        e.expected_energy_joules = candidates[st.candidate].expected_energy_joules;
        e.expected_round_seconds = candidates[st.candidate].expected_round_seconds;
      }
    }
    // Sorted by id, as walked from by_client_id_ (one session per id).
    SelectionRequest req;
    req.round = round;
    // Over-selection: ask for K (1 + e), close the round at the first K results.
    req.target = options_.clients_per_round;
    if (options_.clients_per_round > 0 && options_.over_selection > 0) {
      req.target = static_cast<size_t>(
          std::ceil(static_cast<double>(options_.clients_per_round) * (1.0 + options_.over_selection) - 1e-9));
    }
    req.now = grid_now;
    req.round_deadline = first_ask + options_.energy.max_defer;
    req.intensity = intensity_;
    num_candidates = candidates.size();
    auto d = selector_->Select(req, candidates, rng_);
    if (!d.ok()) return d.status().WithContext("selecting clients for round " + std::to_string(round));
    if (!d->defer_for || d->defer_for->count() <= 0) {
      decision = std::move(*d);
      break;
    }
    // The selector waits for a cleaner hour, bounded by max_defer.
    Duration wait = std::min(*d->defer_for, req.round_deadline - grid_now);
    if (wait.count() <= 0) {
      decision = std::move(*d);
      break;
    }
    spdlog::info("round deferred: round={} hours={:.2f} reason={:?}", round, ToSeconds(wait) / 3600.0, d->reason);
    rec.deferred_seconds += ToSeconds(wait);
    {
      std::lock_guard<std::mutex> l(status_mu_);
      ++status_.deferrals_total;
      status_.state = "deferred";
    }
    if (options_.energy.grid_time_start) {
      grid_offset_ += wait;  // replayed grid time: no real waiting
    } else if (options_.energy.on_defer) {
      options_.energy.on_defer(wait);  // virtual time (the simulator): no real waiting
      if (stop_) return CancelledError("stopped while a round was deferred");
    } else {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::duration_cast<std::chrono::steady_clock::duration>(wait),
                   [&] { return stop_.load() || drain_.load(); });
      if (stop_ || drain_) return CancelledError("stopped while a round was deferred");
    }
  }
  const auto& selected = decision.selected;
  rec.selected = selected.size();
  history_touched_.insert(history_touched_.end(), selected.begin(), selected.end());
  {
    // What the ledger accounts each selected client by: its profile and
    // state as the selector saw them.
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& id : selected) {
      auto bi = by_client_id_.find(id);
      if (bi == by_client_id_.end()) continue;
      if (auto ci = clients_.find(bi->second); ci != clients_.end()) {
        known[id] = Known{ci->second.hello.device_profile(), ci->second.state};
      }
    }
  }
  spdlog::info("round started: round={} selected={} candidates={}", round, selected.size(), num_candidates);

  // 2. Configure and send the tasks. The model is encoded and chunked once,
  // and the same immutable chunk messages are queued to every client.
  VERDANT_RETURN_IF_ERROR(strategy_->BeginRound(round, global_));
  // The model goes out as one immutable set of chunk messages shared by
  // every client (full) and, with a delta downlink, a second set for the
  // clients that hold the previous broadcast.
  const uint64_t stream_id = (round << 20) | 1;  // downlink stream ids: distinct per round
  const uint64_t delta_stream_id = (round << 20) | 2;
  std::string full_encoding = "identity";
  std::vector<SharedBytes> chunks, delta_chunks;
  uint64_t full_payload_bytes = 0, delta_payload_bytes = 0, delta_base = 0;
  {
    Rng codec_rng = rng_.Fork(round);
    ByteBuffer bytes;
    // What goes out: `bytes`, or for identity the model's own bytes (the
    // identity format), chunked straight from the model without a copy.
    std::span<const uint8_t> payload;
    if (downlink_codec_ == nullptr) {
      payload = IdentityBytes(global_.values());
    } else if (!downlink_delta_) {
      // fp16 (or another dense codec): clients hold Decode(Encode(global)).
      VERDANT_RETURN_IF_ERROR(downlink_codec_->Encode(global_.values(), codec_rng, bytes));
      payload = bytes;
      full_encoding = options_.downlink_codec;
    } else {
      if (broadcast_version_ == 0) {
        broadcast_.assign(global_.values().begin(), global_.values().end());
        broadcast_version_ = model_version_;
      } else if (broadcast_version_ != model_version_) {
        // delta = global - held, coded; held += Decode(delta), exactly as the
        // clients will compute it. What the code drops stays in global - held
        // and goes out with the next delta.
        std::vector<float> diff(global_.size());
        const auto g = global_.values();
        for (size_t i = 0; i < diff.size(); ++i) diff[i] = g[i] - broadcast_[i];
        ByteBuffer dbytes;
        VERDANT_RETURN_IF_ERROR(downlink_codec_->Encode(diff, codec_rng, dbytes).WithContext("downlink delta"));
        VERDANT_RETURN_IF_ERROR(downlink_codec_->DecodeAccumulate(dbytes, 1.0f, broadcast_));
        delta_base = broadcast_version_;
        broadcast_version_ = model_version_;
        delta_payload_bytes = dbytes.size();
        delta_chunks = MakeChunkMessages(delta_stream_id, dbytes, options_.chunk_bytes);
      }
      payload = IdentityBytes(broadcast_);
    }
    full_payload_bytes = payload.size();
    chunks = MakeChunkMessages(stream_id, payload, options_.chunk_bytes);
  }
  const std::string delta_encoding =
      downlink_delta_ ? options_.downlink_codec.substr(std::string_view("delta:").size()) : std::string();

  struct Pending {
    std::string client_id;
    SessionPtr session;
    uint64_t up0 = 0, down0 = 0;
    std::chrono::steady_clock::time_point sent{};  // when its task went out
  };
  std::map<uint64_t, Pending> pending;  // task id -> client
  std::vector<StoredClientRound> client_recs;
  // Ledger rows are computed here and enter ledger_ only when the round commits.
  energy::Ledger round_ledger(ledger_options_);
  std::vector<ClientFailure> failures;
  std::vector<std::string> completed_ids, failed_ids;
  const TimePoint deadline = clock_.Now() + options_.round_timeout;
  const uint64_t deadline_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline.time_since_epoch()).count();
  {
    std::lock_guard<std::mutex> l(mu_);
    const ByteTotals bytes = TotalBytes();
    round_bytes_up0_ = bytes.up;
    round_bytes_down0_ = bytes.down;
    // Buffers are recycled within a round only: kept across rounds they sat
    // idle through the next broadcast, on top of its sealed frames (S3's
    // peak 75-84 MB with them, 58 MB without; docs/performance.md).
    upload_pool_.clear();
    upload_pool_limit_ = std::max<size_t>(1, selected.size());
    for (const auto& id : selected) {
      auto bi = by_client_id_.find(id);
      if (bi == by_client_id_.end()) {
        failures.push_back({id, UnavailableError("disconnected before its task was sent")});
        continue;
      }
      ClientEntry& e = clients_.at(bi->second);
      const uint64_t task_id = ++next_task_id_;
      e.task_id = task_id;
      e.task_round = round;
      ClientHistory& h = history_[id];
      ++h.rounds_selected;
      h.last_round_selected = round;
      e.history = &h;
      e.history_epoch = history_epoch_;
      wire::Envelope env;
      auto* t = env.mutable_train_task();
      t->set_round(round);
      t->set_task_id(task_id);
      t->set_model_name(options_.model_name);
      t->set_local_epochs(cfg.local_epochs);
      t->set_batch_size(cfg.batch_size);
      t->set_learning_rate(cfg.learning_rate);
      t->set_proximal_mu(cfg.proximal_mu);
      t->set_uplink_codec(options_.uplink_codec);
      t->set_deadline_unix_ms(deadline_ms);
      t->set_max_examples(cfg.max_examples);
      t->set_seed(rng_.Fork(task_id).Next());
      const bool send_delta = !delta_chunks.empty() && e.held_version == delta_base;
      auto* p = t->mutable_payload();
      p->set_stream_id(send_delta ? delta_stream_id : stream_id);
      p->set_encoding(send_delta ? delta_encoding : full_encoding);
      p->set_num_params(global_.size());
      p->set_layout_fingerprint(global_.layout().Fingerprint());
      p->set_payload_bytes(send_delta ? delta_payload_bytes : full_payload_bytes);
      p->set_num_chunks(static_cast<uint32_t>(send_delta ? delta_chunks.size() : chunks.size()));
      p->set_base_version(send_delta ? delta_base : 0);
      t->set_model_version(model_version_);
      e.held_version = model_version_;
      Pending pe{id, e.session, e.session->bytes_received(), e.session->bytes_sent(),
                 std::chrono::steady_clock::now()};
      e.session->Send(env);
      for (const auto& c : send_delta ? delta_chunks : chunks) e.session->Send(c);
      pending.emplace(task_id, std::move(pe));
    }
  }
  chunks.clear();
  delta_chunks.clear();
  const auto t0 = std::chrono::steady_clock::now();
  SetState("training");

  // 3. Collect results as they arrive; fold each into the strategy at once.
  double loss_sum = 0, loss_weight = 0;
  auto client_rec = [&](const Pending& pe, uint64_t round_no) {
    ClientRoundRecord c;
    c.round = round_no;
    c.client_id = pe.client_id;
    c.bytes_up = pe.session->bytes_received() - pe.up0;
    c.bytes_down = pe.session->bytes_sent() - pe.down0;
    c.codec = options_.uplink_codec;
    return c;
  };
  auto fail = [&](uint64_t task_id, const Status& why, const char* status) {
    auto it = pending.find(task_id);
    if (it == pending.end()) return;
    StoredClientRound sc;
    ClientRoundRecord& c = sc.report;
    c = client_rec(it->second, round);
    c.status = status;
    c.reason = why.ToString();
    {
      // What a failed client spent in training is unknown: transfers only.
      const Known& k = known[c.client_id];
      sc.ledger = Account(round_ledger, c, k.state, k.profile, 0, round);
    }
    client_recs.push_back(std::move(sc));
    failures.push_back({it->second.client_id, why});
    failed_ids.push_back(it->second.client_id);
    spdlog::warn("client failed: round={} client={} reason={:?}", round, it->second.client_id, why.ToString());
    pending.erase(it);
  };
  // With over-selection the round closes at the first K results.
  const size_t quorum =
      options_.over_selection > 0 && options_.clients_per_round > 0 ? options_.clients_per_round : 0;
  bool abandon = false;
  while (!pending.empty() && !(quorum > 0 && completed_ids.size() >= quorum)) {
    Event ev;
    {
      std::unique_lock<std::mutex> l(mu_);
      auto steady_deadline =
          std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                 deadline - clock_.Now());
      if (drain_) steady_deadline = std::min(steady_deadline, drain_deadline_);
      if (events_.empty() && !stop_) cv_.wait_until(l, steady_deadline);
      if (stop_ || (drain_ && std::chrono::steady_clock::now() >= drain_deadline_)) {
        abandon = true;
        break;
      }
      if (events_.empty()) {
        if (clock_.Now() >= deadline) break;
        continue;
      }
      ev = std::move(events_.front());
      events_.pop_front();
    }
    // Stale: a previous round's task, or another session's (a task id is
    // guessable; a result counts only from the session the task went to).
    if (auto pi = pending.find(ev.task_id); pi == pending.end() || pi->second.session->id() != ev.session) {
      ReturnUploadBuffer(std::move(ev.payload));
      continue;
    }
    if (ev.kind != Event::kResult) {
      fail(ev.task_id, ev.status, "failed");
      continue;
    }
    ClientResult r;
    r.client_id = ev.client_id;
    r.num_examples = ev.header.num_examples();
    r.train_loss = ev.header.train_loss();
    r.delta = UpdateView::Encoded(ev.payload, *uplink_codec_);
    Status st = std::isfinite(r.train_loss) ? strategy_->AddResult(r)
                                            : DataLossError("reported training loss is not finite");
    // The strategy has folded (or copied) the update: the buffer serves the next upload.
    r.delta = UpdateView();
    ReturnUploadBuffer(std::move(ev.payload));
    if (!st.ok()) {
      auto it = pending.find(ev.task_id);
      if (it != pending.end()) it->second.session->CloseWithError(wire::Error::BAD_PAYLOAD, st.message());
      fail(ev.task_id, st, "failed");
      continue;
    }
    auto it = pending.find(ev.task_id);
    StoredClientRound sc;
    ClientRoundRecord& c = sc.report;
    c = client_rec(it->second, round);
    c.status = "completed";
    c.num_examples = r.num_examples;
    c.train_loss = r.train_loss;
    c.train_seconds = ev.header.train_seconds();
    {
      const Known& k = known[c.client_id];
      const double task_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - it->second.sent).count();
      sc.ledger = Account(round_ledger, c, k.state, k.profile,
                          r.num_examples * std::max<uint32_t>(1, cfg.local_epochs), round,
                          ev.header.has_energy() ? &ev.header.energy() : nullptr, task_seconds);
    }
    client_recs.push_back(std::move(sc));
    completed_ids.push_back(r.client_id);
    loss_sum += r.train_loss * static_cast<double>(r.num_examples);
    loss_weight += static_cast<double>(r.num_examples);
    {
      ClientHistory& h = history_[r.client_id];
      ++h.rounds_completed;
      h.last_train_seconds = ev.header.train_seconds();
      h.last_train_loss = r.train_loss;
    }
    pending.erase(it);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [sid, e] : clients_) {
      if (e.task_round == round && e.task_id != 0) {
        e.task_id = 0;
      }
    }
  }
  if (abandon) {
    // Stop() or the end of a drain's grace period: the round is neither
    // aggregated nor recorded; the run ends and a resume runs it again.
    return CancelledError("round " + std::to_string(round) + " abandoned (" +
                          (stop_ ? std::string("run stopped") : std::string("shutdown grace period over")) + ")");
  }
  // Whoever has not delivered by now failed this round: stragglers past the
  // quorum of an over-selected round are abandoned, the others late.
  const bool closed_early = quorum > 0 && completed_ids.size() >= quorum;
  while (!pending.empty()) {
    if (closed_early) {
      fail(pending.begin()->first,
           AbortedError("straggler: the round closed after the first " + std::to_string(quorum) + " results"),
           "abandoned");
    } else {
      fail(pending.begin()->first, DeadlineExceededError("no result before the round deadline"), "failed");
    }
  }
  for (const auto& f : failed_ids) ++history_[f].rounds_failed;

  // 4. Aggregate.
  SetState("aggregating");
  auto next = strategy_->FinishRound(round, global_, failures);
  if (!next.ok()) return next.status().WithContext("aggregating round " + std::to_string(round));
  if (next->has_value()) {
    if ((*next)->size() != num_params_ || (*next)->layout().Fingerprint() != layout_fingerprint_) {
      return InternalError("strategy '" + std::string(strategy_->Name()) + "' returned a model of " +
                           std::to_string((*next)->size()) + " parameters or another layout (the run's model has " +
                           std::to_string(num_params_) + ")");
    }
    global_ = std::move(**next);
    ++model_version_;
    rec.model_updated = true;
  }
  rec.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec.completed = completed_ids.size();
  rec.failed = failures.size();
  rec.train_loss = loss_weight > 0 ? loss_sum / loss_weight : 0.0;
  rec.metrics = strategy_->RoundMetrics();
  for (const auto& c : client_recs) {
    if (!c.ledger) continue;
    if (Status st = ledger_.Add(*c.ledger); !st.ok()) spdlog::warn("round {}: ledger: {}", round, st.ToString());
  }
  {
    const auto totals = ledger_.Round(round);
    rec.energy_joules = totals.energy().joules();
    rec.emissions_g = totals.emissions.grams();
    rec.embodied_g = totals.embodied.grams();
  }
  selector_->OnRoundEnd(round, completed_ids, failed_ids);

  // 5. Evaluate.
  const bool evaluate = evaluator_ != nullptr && options_.evaluate_every > 0 &&
                        (round % options_.evaluate_every == 0 || round >= options_.rounds);
  if (evaluate) {
    SetState("evaluating");
    const auto e0 = std::chrono::steady_clock::now();
    auto m = evaluator_->Evaluate(global_);
    if (!m.ok()) return m.status().WithContext("evaluating round " + std::to_string(round));
    rec.accuracy = m->accuracy;
    rec.loss = m->loss;
    (void)ledger_.SetRoundAccuracy(round, m->accuracy);
    rec.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    const ByteTotals bytes = TotalBytes();
    rec.bytes_up = bytes.up - round_bytes_up0_;
    rec.bytes_down = bytes.down - round_bytes_down0_;
  }
  // 6. Commit: checkpoint and rows, durably, before the round counts as done.
  if (store_) {
    std::map<std::string, ClientHistory> changed;
    for (const auto& id : selected) {
      if (auto hi = history_.find(id); hi != history_.end()) changed[id] = hi->second;
    }
    StoredRound stored{rec, client_recs};
    VERDANT_RETURN_IF_ERROR(
        store_->Commit(MakeCheckpoint(round), &stored, changed).WithContext("committing round " + std::to_string(round)));
  }
  if (report_) {
    std::vector<ClientRoundRecord> rows;
    rows.reserve(client_recs.size());
    for (const auto& c : client_recs) rows.push_back(c.report);
    VERDANT_RETURN_IF_ERROR(report_->AddRound(rec, rows));
  }
  return rec;
}

void Coordinator::SayGoodbye(const std::string& reason) {
  wire::Envelope env;
  env.mutable_bye()->set_reason(reason);
  auto bytes = SerializeEnvelope(env);
  if (!bytes.ok()) return;
  auto shared = std::make_shared<const ByteBuffer>(std::move(*bytes));
  // Under mu_, as HandleHello welcomes under mu_: a client is either
  // welcomed before this (and gets Bye after its Welcome) or told the run is
  // over instead of a Welcome; none gets Bye before Welcome, and none joins
  // after it. Send, Close and CloseWithError only queue.
  std::lock_guard<std::mutex> l(mu_);
  finishing_ = true;
  for (auto& [sid, e] : clients_) {
    if (e.welcomed) {
      e.session->Send(shared);
      e.session->Close(CancelledError("run finished"));
    } else {
      e.session->CloseWithError(wire::Error::SHUTTING_DOWN, "the run is over");
    }
  }
}

std::string Coordinator::Fingerprint() const {
  char over[32];
  std::snprintf(over, sizeof over, "%.17g", options_.over_selection);
  std::string f;
  auto add = [&f](const std::string& k, const std::string& v) { f += k + "=" + v + "\n"; };
  add("run_id", options_.run_id);
  add("model", options_.model_name);
  add("num_params", std::to_string(global_.size()));
  add("layout", std::to_string(global_.layout().Fingerprint()));
  add("strategy", std::string(strategy_->Name()));
  add("selector", std::string(selector_->Name()));
  add("seed", std::to_string(options_.seed));
  add("uplink_codec", options_.uplink_codec);
  add("downlink_codec", options_.downlink_codec);
  add("clients_per_round", std::to_string(options_.clients_per_round));
  add("over_selection", over);
  return f;
}

CoordinatorCheckpoint Coordinator::MakeCheckpoint(uint64_t round) const {
  CoordinatorCheckpoint c;
  c.round = round;
  c.model_version = model_version_;
  c.layout_fingerprint = global_.layout().Fingerprint();
  c.global.assign(global_.values().begin(), global_.values().end());
  c.broadcast = broadcast_;
  c.broadcast_version = broadcast_version_;
  auto st = strategy_->SaveState();
  c.strategy_state = st.ok() ? *st : std::string();
  if (!st.ok()) spdlog::error("strategy state not saved: {}", st.status().ToString());
  auto sel = selector_->SaveState();
  c.selector_state = sel.ok() ? *sel : std::string();
  if (!sel.ok()) spdlog::error("selector state not saved: {}", sel.status().ToString());
  c.rng = rng_.state();
  c.next_task_id = next_task_id_;
  c.grid_offset_us = grid_offset_.count();
  return c;
}

Status Coordinator::OpenStore(RunSummary& summary) {
  if (options_.out_dir.empty()) return OkStatus();
  const std::filesystem::path dir(options_.out_dir);
  if (!options_.persist) {
    VERDANT_ASSIGN_OR_RETURN(report_, RunReport::Open(dir));
    return OkStatus();
  }
  if (!options_.resume) {
    VERDANT_ASSIGN_OR_RETURN(store_, RunStore::Create(dir, Fingerprint(), options_.replace_existing_run));
    VERDANT_ASSIGN_OR_RETURN(report_, RunReport::Open(dir));
    // Round 0: the initial state, so that a crash in round 1 resumes too.
    return store_->Commit(MakeCheckpoint(0), nullptr, {}).WithContext("initial checkpoint");
  }
  VERDANT_ASSIGN_OR_RETURN(store_, RunStore::Open(dir, Fingerprint()));
  VERDANT_ASSIGN_OR_RETURN(CoordinatorCheckpoint c, store_->LoadCheckpoint());
  if (c.layout_fingerprint != global_.layout().Fingerprint() || c.global.size() != global_.size()) {
    return DataLossError("the checkpoint's model (" + std::to_string(c.global.size()) +
                         " parameters) does not match this run's model (" + std::to_string(global_.size()) + ")");
  }
  if (!c.broadcast.empty() && c.broadcast.size() != global_.size()) {
    return DataLossError("the checkpoint's broadcast model has the wrong size");
  }
  VERDANT_ASSIGN_OR_RETURN(std::vector<StoredRound> rounds, store_->LoadRounds());
  VERDANT_ASSIGN_OR_RETURN(history_, store_->LoadRegistry());
  ++history_epoch_;
  VERDANT_RETURN_IF_ERROR(strategy_->RestoreState(c.strategy_state).WithContext("restoring the strategy"));
  VERDANT_RETURN_IF_ERROR(selector_->RestoreState(c.selector_state).WithContext("restoring the selector"));
  VERDANT_ASSIGN_OR_RETURN(global_, ParameterVector::FromValues(global_.layout(), std::move(c.global)));
  model_version_ = c.model_version;
  broadcast_ = std::move(c.broadcast);
  broadcast_version_ = c.broadcast_version;
  rng_ = Rng::FromState(c.rng);
  next_task_id_ = c.next_task_id;
  grid_offset_ = Duration(c.grid_offset_us);
  first_round_ = c.round + 1;
  // The report files are rewritten from the database: what a crash cut off
  // after the last commit is gone, nothing is duplicated.
  VERDANT_ASSIGN_OR_RETURN(report_, RunReport::Open(dir));
  for (const auto& r : rounds) {
    std::vector<ClientRoundRecord> rows;
    for (const auto& c2 : r.clients) {
      rows.push_back(c2.report);
      if (c2.ledger) VERDANT_RETURN_IF_ERROR(ledger_.Add(*c2.ledger).WithContext("restoring the ledger"));
    }
    if (r.record.accuracy) (void)ledger_.SetRoundAccuracy(r.record.round, *r.record.accuracy);
    VERDANT_RETURN_IF_ERROR(report_->AddRound(r.record, rows));
    summary.rounds_completed = r.record.round;
    summary.bytes_up += r.record.bytes_up;
    summary.bytes_down += r.record.bytes_down;
    if (r.record.accuracy) summary.final_accuracy = *r.record.accuracy;
    if (r.record.loss) summary.final_loss = *r.record.loss;
  }
  return OkStatus();
}

Result<RunSummary> Coordinator::Run() {
  const auto start = std::chrono::steady_clock::now();
  auto codec = CreateCodec(options_.uplink_codec);
  if (!codec.ok()) return codec.status();
  uplink_codec_ = std::move(*codec);
  {
    auto down = ParseDownlinkCodec(options_.downlink_codec);
    if (!down.ok()) return down.status();
    downlink_delta_ = down->first;
    downlink_codec_ = std::move(down->second);
  }
  if (!(options_.over_selection >= 0) || !std::isfinite(options_.over_selection)) {
    return InvalidArgumentError("over_selection must be a finite number >= 0");
  }
  RunSummary summary;
  if (options_.resume && (options_.out_dir.empty() || !options_.persist)) {
    return InvalidArgumentError("resume needs the run's output folder (out_dir) with persistence on");
  }
  VERDANT_RETURN_IF_ERROR(OpenStore(summary));
  if (first_round_ > 1) {
    spdlog::info("resuming {} after round {} of {}", options_.out_dir, first_round_ - 1, options_.rounds);
  }
  SetState("waiting_for_clients");
  Status run_status = first_round_ <= options_.rounds ? WaitForClients() : OkStatus();
  if (!run_status.ok() && drain_) run_status = OkStatus();  // SIGTERM while waiting: a clean stop
  if (run_status.ok() && first_round_ <= options_.rounds && !drain_) {
    spdlog::info("run started: run_id={:?} rounds={} first_round={} clients={}", options_.run_id, options_.rounds,
                 first_round_, connected_clients());
  }
  uint64_t bytes_up = summary.bytes_up, bytes_down = summary.bytes_down;
  std::string stopped;
  const double rounds_cpu0 = ProcessCpuSeconds();
  for (uint64_t round = first_round_; run_status.ok() && round <= options_.rounds; ++round) {
    if (stop_) {
      run_status = CancelledError("stopped after " + std::to_string(round - 1) + " rounds");
      break;
    }
    if (drain_) {
      stopped = "stopped after round " + std::to_string(round - 1) + " (shutdown requested; resume to continue)";
      break;
    }
    current_round_ = round;
    const auto round_t0 = std::chrono::steady_clock::now();
    auto rec = RunRound(round);
    if (!rec.ok()) {
      if (rec.status().code() == StatusCode::kCancelled && drain_ && !stop_) {
        stopped = "stopped after round " + std::to_string(round - 1) + " (shutdown requested; round " +
                  std::to_string(round) + " abandoned; resume to continue)";
        break;
      }
      if (rec.status().code() == StatusCode::kFailedPrecondition) {
        // No client available this round: wait for clients and retry the same round.
        spdlog::warn("round waiting: round={} reason={:?}", round, rec.status().ToString());
        SetState("waiting_for_clients");
        Status w = WaitForClients();
        if (!w.ok() && drain_) {
          stopped = "stopped after round " + std::to_string(round - 1) + " (shutdown requested; resume to continue)";
          break;
        }
        if (!w.ok()) run_status = w;
        --round;
        continue;
      }
      run_status = rec.status();
      break;
    }
    summary.rounds_completed = round;
    {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - round_t0).count();
      const auto totals = ledger_.Totals();
      std::lock_guard<std::mutex> l(status_mu_);
      status_.rounds_completed = round;
      status_.round_seconds.Observe(secs);
      status_.clients_selected_total += rec->selected;
      status_.client_results_total += rec->completed;
      status_.client_failures_total += rec->failed;
      status_.deferred_seconds_total += rec->deferred_seconds;
      status_.energy_joules_total = totals.energy().joules();
      status_.emissions_g_total = totals.emissions.grams();
      status_.embodied_g_total = totals.embodied.grams();
      status_.last_round = *rec;
      // The first round copies all of history_ (a resumed run's too); after
      // that only the round's selected clients changed.
      if (!status_history_full_) {
        for (const auto& [id, h] : history_) status_history_[id] = {h.rounds_selected, h.rounds_completed, h.rounds_failed};
        status_history_full_ = true;
      } else {
        for (const auto& id : history_touched_) {
          if (auto hi = history_.find(id); hi != history_.end()) {
            status_history_[id] = {hi->second.rounds_selected, hi->second.rounds_completed, hi->second.rounds_failed};
          }
        }
      }
      history_touched_.clear();
    }
    spdlog::info("round finished: round={} selected={} completed={} failed={} seconds={:.3f} bytes_up={} "
                 "bytes_down={} energy_j={:.3f} emissions_g={:.6f}",
                 round, rec->selected, rec->completed, rec->failed, rec->wall_seconds, rec->bytes_up,
                 rec->bytes_down, rec->energy_joules, rec->emissions_g);
    bytes_up += rec->bytes_up;
    bytes_down += rec->bytes_down;
    if (rec->accuracy) summary.final_accuracy = *rec->accuracy;
    if (rec->loss) summary.final_loss = *rec->loss;
    if (round_cb_) round_cb_(*rec);
#if defined(__GLIBC__)
    // Hand the round's freed transfer buffers back to the OS: glibc keeps
    // freed 1 MiB blocks in its heap otherwise, and RSS would stay at the
    // round's peak between rounds (docs/performance.md, issue 8).
    malloc_trim(0);
#endif
  }
  summary.bytes_up = bytes_up;
  summary.bytes_down = bytes_down;
  // The coordinator's own cost (the process running it; in `verdant demo`
  // the clients are separate processes): the whole run, and the rounds alone
  // (from round 1's selection to the last round's report, without start-up
  // and waiting for clients).
  summary.numbers["coordinator_cpu_seconds"] = ProcessCpuSeconds();
  summary.numbers["coordinator_rounds_cpu_seconds"] = ProcessCpuSeconds() - rounds_cpu0;
  summary.numbers["coordinator_peak_rss_mb"] = ProcessPeakRssMb();
  summary.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.strings["strategy"] = std::string(strategy_->Name());
  summary.strings["selector"] = std::string(selector_->Name());
  summary.strings["codec"] = options_.uplink_codec;
  summary.strings["model"] = options_.model_name;
  summary.strings["status"] = !run_status.ok() ? run_status.ToString() : stopped.empty() ? "ok" : stopped;
  if (!stopped.empty()) spdlog::info("{}", stopped);
  summary.numbers["num_parameters"] = static_cast<double>(global_.size());
  {
    const auto totals = ledger_.Totals();
    summary.numbers["energy_joules"] = totals.energy().joules();
    summary.numbers["compute_joules"] = totals.compute.joules();
    summary.numbers["radio_joules"] = totals.radio.joules();
    summary.numbers["idle_joules"] = totals.idle.joules();
    summary.numbers["energy_kwh"] = totals.energy().kwh();
    summary.numbers["emissions_g"] = totals.emissions.grams();
    summary.numbers["embodied_g"] = totals.embodied.grams();
    summary.numbers["sci_g_per_round"] = totals.sci_per_round.grams();
    if (totals.sci_per_accuracy_point) {
      summary.numbers["sci_g_per_accuracy_point"] = totals.sci_per_accuracy_point->grams();
    }
    const auto part = selector_->Participation();
    summary.numbers["participation_gini"] = part.gini;
    summary.numbers["clients_never_selected"] = static_cast<double>(part.never_selected);
    summary.strings["intensity_source"] = std::string(intensity_->Name());
    // Which methods produced the compute figures: "rapl:package-0=2 model:phone-midrange=6".
    std::string methods;
    double measured = 0;
    const nlohmann::json ledger_summary = ledger_.SummaryJson();
    for (const auto& [method, n] : ledger_summary["energy_methods"].items()) {
      methods += (methods.empty() ? "" : " ") + method + "=" + std::to_string(n.get<uint64_t>());
      if (method.rfind("model", 0) != 0) measured += n.get<double>();
    }
    summary.strings["energy_methods"] = methods;
    summary.numbers["measured_client_rounds"] = measured;
    if (report_ && !options_.out_dir.empty()) {
      Status st = ledger_.WriteEmissionsCsv(std::filesystem::path(options_.out_dir) / "emissions.csv",
                                            energy::EmissionsCsvOptions{"verdant", options_.run_id, true});
      if (!st.ok()) spdlog::warn("emissions.csv: {}", st.ToString());
    }
  }
  SetState(run_status.ok() ? "finished" : run_status.code() == StatusCode::kCancelled ? "stopped" : "failed");
  if (report_) VERDANT_RETURN_IF_ERROR(report_->WriteSummary(summary));
  // After a drain, clients are told the coordinator is going away; they
  // reconnect (with backoff) to a resumed coordinator.
  if (stopped.empty()) {
    SayGoodbye(run_status.ok() ? "run complete" : run_status.ToString());
  }
  if (!run_status.ok()) return run_status;
  return summary;
}

}  // namespace verdant
