#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "verdant/client/model_zoo.h"
#include "verdant/core/logging.h"
#include "verdant/server/status_server.h"
#include "verdant/client/trainer.h"
#include "verdant/energy/http_carbon.h"

namespace verdant::cli {

namespace {
std::mutex g_stop_mu;
std::function<void()> g_stop_cb;
std::function<void()> g_reload_cb;
std::atomic<bool> g_interrupted{false};
std::atomic<int> g_signal{0};
pthread_t g_signal_thread;
}  // namespace

void InstallSignalHandling() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::thread handler([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGHUP) {
        std::lock_guard<std::mutex> l(g_stop_mu);
        if (g_reload_cb) g_reload_cb();
        continue;
      }
      bool second = g_interrupted.exchange(true);
      if (!second) g_signal = sig;
      if (second) {
        std::fprintf(stderr, "\nsecond signal: exiting now\n");
        std::_Exit(130);
      }
      std::fprintf(stderr, "\n%s received: finishing the current step and shutting down (again to force)\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      std::lock_guard<std::mutex> l(g_stop_mu);
      if (g_stop_cb) g_stop_cb();
    }
  });
  // Threads started before main (thread pools of linked libraries) do not
  // block these signals, and the default action on one of them would kill
  // the process: a handler forwards such a signal to the thread above.
  g_signal_thread = handler.native_handle();
  handler.detach();
  struct sigaction sa {};
  sa.sa_handler = [](int sig) { pthread_kill(g_signal_thread, sig); };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

void SetStopCallback(std::function<void()> cb) {
  std::lock_guard<std::mutex> l(g_stop_mu);
  g_stop_cb = std::move(cb);
  if (g_interrupted && g_stop_cb) g_stop_cb();
}

bool Interrupted() { return g_interrupted; }

int StopSignal() { return g_signal; }

void SetReloadCallback(std::function<void()> cb) {
  std::lock_guard<std::mutex> l(g_stop_mu);
  g_reload_cb = std::move(cb);
}

void WarnInsecure(const std::string& who) {
  const char* msg =
      "WARNING: --insecure: this %s sends and accepts model updates in PLAINTEXT with no authentication. "
      "Anyone on the path can read and alter them. Use it only for debugging on a trusted network.\n";
  std::fprintf(stderr, msg, who.c_str());
  spdlog::warn("--insecure: plaintext, unauthenticated channel ({})", who);
}

Result<KeyPair> LoadOrCreateKeyPair(const std::filesystem::path& dir, bool* created) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  if (created) *created = false;
  if (std::filesystem::exists(dir / kSecretKeyFileName)) return LoadKeyPair(dir);
  VERDANT_ASSIGN_OR_RETURN(KeyPair kp, GenerateKeyPair());
  std::error_code ec;
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  VERDANT_RETURN_IF_ERROR(SaveKeyPair(kp, dir));
  if (created) *created = true;
  return kp;
}

Result<HandshakerFactory> MakeServerHandshaker(const ServerSecurity& s, std::shared_ptr<AllowList>* allow_out) {
  if (allow_out) allow_out->reset();
  if (s.insecure) {
    WarnInsecure("coordinator");
    return PlaintextHandshakerFactory();
  }
  if (s.key_dir.empty()) {
    return InvalidArgumentError(
        "the coordinator needs a key: run `verdant keygen --out DIR` once and pass --key DIR "
        "(or [security] key_dir), or --insecure for a plaintext test run");
  }
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  VERDANT_ASSIGN_OR_RETURN(KeyPair kp, LoadKeyPair(s.key_dir));
  SecureChannelOptions o;
  o.static_key = std::make_shared<const KeyPair>(std::move(kp));
  if (!s.allow_list.empty()) {
    VERDANT_ASSIGN_OR_RETURN(auto allow, AllowList::Load(s.allow_list));
    std::shared_ptr<AllowList> shared(std::move(allow));
    spdlog::info("allow-list {}: {} client keys (SIGHUP reloads it)", s.allow_list, shared->size());
    o.allow_list = shared;
    if (allow_out) *allow_out = shared;
  } else {
    spdlog::info("open mode: any client key is accepted; a client's id is derived from its key");
  }
  spdlog::info("coordinator public key: {}", FormatPublicKey(o.static_key->public_key()));
  return NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, std::move(o));
}

Result<HandshakerFactory> MakeClientHandshaker(const ClientSecurity& s) {
  if (s.insecure) {
    WarnInsecure("client");
    return PlaintextHandshakerFactory();
  }
  if (s.server_key.empty()) {
    return InvalidArgumentError(
        "the client must pin the coordinator's public key: pass --server-key vpk1... (or the coordinator's "
        "verdant.pub file), or --insecure for a plaintext test run");
  }
  if (s.key_dir.empty()) return InvalidArgumentError("--key DIR is required (the client's identity; created on first use)");
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  VERDANT_ASSIGN_OR_RETURN(PublicKey server, ParsePublicKeyOrFile(s.server_key));
  bool created = false;
  VERDANT_ASSIGN_OR_RETURN(KeyPair kp, LoadOrCreateKeyPair(s.key_dir, &created));
  if (created) spdlog::info("created a new client identity in {}", s.key_dir);
  spdlog::info("client public key {} (id {})", FormatPublicKey(kp.public_key()), ClientIdFromKey(kp.public_key()));
  SecureChannelOptions o;
  o.static_key = std::make_shared<const KeyPair>(std::move(kp));
  o.expected_peer_key = server;
  return NoiseHandshakerFactory(NoiseHandshake::Role::kInitiator, std::move(o));
}

Status ConfigureLogging(const std::string& level, const std::string& file, const std::string& format) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return InvalidArgumentError("unknown log level '" + level + "' (trace, debug, info, warn, error, critical, off)");
  }
  if (format != "text" && format != "json") {
    return InvalidArgumentError("unknown log format '" + format + "' (text or json)");
  }
  std::vector<spdlog::sink_ptr> sinks;
  if (file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  } else {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, /*truncate=*/true));
    } catch (const std::exception& e) {
      return UnavailableError("cannot open log file " + file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("verdant", sinks.begin(), sinks.end());
  logger->set_level(lvl);
  if (format == "json") {
    logger->set_formatter(MakeJsonLogFormatter());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return OkStatus();
}

Status CheckDataDir(const std::string& data_dir) {
  namespace fs = std::filesystem;
  for (const char* f : {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"}) {
    if (!fs::exists(fs::path(data_dir) / f) && !fs::exists(fs::path(data_dir) / (std::string(f) + ".gz"))) {
      return NotFoundError("Fashion-MNIST not found in " + data_dir +
                           " (missing " + f + "[.gz]): install it with `apt-get install dataset-fashion-mnist` "
                           "or point --data-dir at a folder with the IDX files");
    }
  }
  return OkStatus();
}

namespace {

class TorchEvaluator final : public Evaluator {
 public:
  explicit TorchEvaluator(std::unique_ptr<ModelEvaluator> e) : e_(std::move(e)) {}
  std::string_view Name() const override { return "fashion-mnist-test"; }
  Result<EvalSummary> Evaluate(const ParameterVector& model) override {
    VERDANT_ASSIGN_OR_RETURN(EvalMetrics m, e_->Evaluate(model));
    return EvalSummary{m.loss, m.accuracy, m.num_examples};
  }

 private:
  std::unique_ptr<ModelEvaluator> e_;
};

}  // namespace

Result<std::unique_ptr<Evaluator>> MakeFashionMnistEvaluator(const std::string& model, const std::string& data_dir,
                                                             size_t max_examples) {
  VERDANT_RETURN_IF_ERROR(CheckDataDir(data_dir));
  VERDANT_ASSIGN_OR_RETURN(Dataset test, LoadFashionMnist(data_dir, "test", max_examples));
  VERDANT_ASSIGN_OR_RETURN(auto e, ModelEvaluator::Create(model, std::move(test)));
  return std::unique_ptr<Evaluator>(std::make_unique<TorchEvaluator>(std::move(e)));
}

std::string HumanBytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof(buf), "%.1f MB", b / 1e6);
  else if (b >= 1024) std::snprintf(buf, sizeof(buf), "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

Result<std::string> FindCarbonDir() {
  namespace fs = std::filesystem;
  std::vector<fs::path> tries;
  if (const char* d = std::getenv("VERDANT_CARBON_DIR")) tries.push_back(fs::path(d));
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    tries.push_back(exe.parent_path().parent_path() / "data" / "carbon");
    tries.push_back(exe.parent_path().parent_path() / "share" / "verdant" / "data" / "carbon");
  }
  tries.push_back(fs::current_path(ec) / "data" / "carbon");
  std::string list;
  for (const auto& t : tries) {
    if (fs::is_directory(t, ec)) return t.string();
    list += (list.empty() ? "" : ", ") + t.string();
  }
  return NotFoundError("no carbon traces found (looked in " + list +
                       "); pass --carbon-dir or set VERDANT_CARBON_DIR");
}

Result<std::unique_ptr<energy::CarbonIntensitySource>> MakeCarbon(const CarbonSetup& c,
                                                                  CoordinatorEnergyOptions& out) {
  std::unique_ptr<energy::CarbonIntensitySource> source;
  const int sources = (c.constant_g_per_kwh > 0) + !c.json_file.empty() + !c.url.empty() + !c.trace_dir.empty();
  if (sources > 1) {
    return InvalidArgumentError("carbon: set only one of constant_g_per_kwh, json_file, url and trace_dir");
  }
  energy::JsonSourceOptions json;
  if (c.kind == "marginal") json.kind = energy::IntensityKind::kMarginal;
  else if (c.kind != "average") return InvalidArgumentError("carbon kind must be average or marginal, got '" + c.kind + "'");
  if (c.constant_g_per_kwh > 0) {
    source = std::make_unique<energy::ConstantIntensitySource>(CarbonIntensity::GramsPerKwh(c.constant_g_per_kwh));
  } else if (!c.json_file.empty()) {
    VERDANT_ASSIGN_OR_RETURN(source, energy::SeriesIntensitySource::LoadFile(c.json_file, json));
    spdlog::info("carbon intensity from {}", c.json_file);
  } else if (!c.url.empty()) {
    energy::HttpSourceOptions h;
    h.url = c.url;
    h.json = json;
    std::string token = c.auth_token;
    if (!c.auth_token_env.empty()) {
      const char* v = std::getenv(c.auth_token_env.c_str());
      if (v == nullptr || *v == '\0') {
        return InvalidArgumentError("carbon auth_token_env names " + c.auth_token_env + ", which is not set");
      }
      token = v;
    }
    if (!token.empty()) h.headers.emplace_back(c.auth_header, token);
    if (!(c.http_timeout_s > 0) || !(c.refresh_s > 0)) {
      return InvalidArgumentError("carbon http_timeout_s and refresh_s must be > 0");
    }
    h.timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(c.http_timeout_s));
    h.refresh = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(c.refresh_s));
    VERDANT_ASSIGN_OR_RETURN(auto http, energy::HttpIntensitySource::Create(h));
    // One response for every zone: fetch now so a wrong URL or token shows at
    // start-up. Failure is logged; lookups fall back until a fetch succeeds.
    if (c.url.find("{zone}") == std::string::npos && http->Refresh().ok()) {
      spdlog::info("carbon intensity from {}", http->tag());
    }
    source = std::move(http);
  } else {
    std::string dir = c.trace_dir;
    if (dir.empty()) {
      VERDANT_ASSIGN_OR_RETURN(dir, FindCarbonDir());
    }
    energy::EmissionScope scope;
    if (c.scope == "direct") scope = energy::EmissionScope::kDirect;
    else if (c.scope == "lifecycle") scope = energy::EmissionScope::kLifecycle;
    else return InvalidArgumentError("carbon scope must be direct or lifecycle, got '" + c.scope + "'");
    VERDANT_ASSIGN_OR_RETURN(auto traces, energy::TraceIntensitySource::LoadDirectory(dir, scope));
    std::string zones;
    for (const auto& z : traces->Zones()) zones += (zones.empty() ? "" : ",") + z;
    spdlog::info("carbon traces from {}: {}", dir, zones);
    source = std::move(traces);
  }
  if (!c.start.empty()) {
    VERDANT_ASSIGN_OR_RETURN(TimePoint t, energy::ParseUtcTimestamp(c.start));
    out.grid_time_start = t;
  }
  if (!(c.hours_per_round > 0)) return InvalidArgumentError("hours per round must be > 0");
  if (!(c.max_defer_h >= 0)) return InvalidArgumentError("max defer hours must be >= 0");
  out.grid_time_per_round = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(c.hours_per_round * 3600));
  out.max_defer = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(c.max_defer_h * 3600));
  if (!c.profiles_file.empty()) {
    VERDANT_ASSIGN_OR_RETURN(out.profiles, energy::LoadDeviceProfiles(c.profiles_file));
  }
  bool known = false;
  for (const auto& p : out.profiles) known |= p.name == c.default_profile;
  if (!known && !energy::BuiltinProfile(c.default_profile).ok()) {
    return energy::BuiltinProfile(c.default_profile).status();
  }
  out.default_profile = c.default_profile;
  out.intensity = source.get();
  return source;
}

Result<RunSummary> Serve(ServeSetup setup, const std::function<Status(uint16_t)>& on_listening) {
  // Validate everything before binding a port.
  VERDANT_ASSIGN_OR_RETURN(auto strategy, CreateStrategy(setup.strategy, setup.strategy_options));
  VERDANT_ASSIGN_OR_RETURN(auto selector, CreateSelector(setup.selector, setup.selector_options));
  VERDANT_ASSIGN_OR_RETURN(auto codec_check, CreateCodec(setup.coordinator.uplink_codec));
  codec_check.reset();
  VERDANT_RETURN_IF_ERROR(ParseDownlinkCodec(setup.coordinator.downlink_codec).status());
  VERDANT_ASSIGN_OR_RETURN(auto carbon, MakeCarbon(setup.carbon, setup.coordinator.energy));
  // A synthetic model (benchmarks) has no network: no LibTorch, no test set,
  // no evaluation (rounds.csv leaves accuracy empty).
  const bool synthetic = IsSyntheticModel(setup.coordinator.model_name);
  if (!synthetic) ConfigureTorchThreads(1);
  VERDANT_ASSIGN_OR_RETURN(ParameterVector initial, InitialModel(setup.coordinator.model_name, setup.init_seed));
  std::unique_ptr<Evaluator> evaluator;
  if (!synthetic) {
    VERDANT_ASSIGN_OR_RETURN(evaluator, MakeFashionMnistEvaluator(setup.coordinator.model_name, setup.data_dir,
                                                                  setup.eval_examples));
  }

  Coordinator coord(setup.coordinator, std::move(initial), std::move(strategy), std::move(selector), evaluator.get(),
                    SystemClock::Default());
  const uint64_t total_rounds = setup.coordinator.rounds;
  if (setup.progress) {
    coord.SetRoundCallback([total_rounds](const RoundRecord& r) {
      char quality[64] = "no evaluation";
      if (r.accuracy) std::snprintf(quality, sizeof(quality), "acc %.4f | loss %.4f", *r.accuracy, r.loss.value_or(0.0));
      std::printf("round %3llu/%llu | %s | %zu/%zu clients%s | up %s down %s | %.2f s\n",
                  static_cast<unsigned long long>(r.round), static_cast<unsigned long long>(total_rounds), quality,
                  r.completed, r.selected,
                  r.failed ? (" (" + std::to_string(r.failed) + " failed)").c_str() : "",
                  HumanBytes(r.bytes_up).c_str(), HumanBytes(r.bytes_down).c_str(), r.wall_seconds);
      std::fflush(stdout);
    });
  }
  std::shared_ptr<AllowList> allow;
  VERDANT_ASSIGN_OR_RETURN(setup.tcp.handshaker, MakeServerHandshaker(setup.security, &allow));
  if (allow) {
    SetReloadCallback([allow] {
      Status st = allow->Reload();
      if (st.ok()) spdlog::info("allow-list reloaded: {} client keys", allow->size());
      else spdlog::error("allow-list reload failed (the previous list stays in force): {}", st.ToString());
    });
  }
  VERDANT_ASSIGN_OR_RETURN(auto server, TcpServer::Start(setup.tcp, coord));
  spdlog::info("coordinator listening on {}:{}", setup.tcp.host, server->port());
  std::unique_ptr<StatusServer> status_http;
  if (setup.metrics.enabled) {
    StatusServerOptions so;
    so.address = setup.metrics.address;
    so.port = setup.metrics.port;
    VERDANT_ASSIGN_OR_RETURN(status_http,
                             StatusServer::Start(so, [&coord](size_t n) { return coord.Snapshot(n); }));
    if (setup.progress) {
      std::printf("status endpoint: http://%s:%u/ (metrics: /metrics, JSON: /status)\n", so.address.c_str(),
                  static_cast<unsigned>(status_http->port()));
      std::fflush(stdout);
    }
  }
  const Duration grace = setup.shutdown_grace;
  SetStopCallback([&coord, grace] {
    if (StopSignal() == SIGTERM) {
      spdlog::info("SIGTERM: finishing the current round (up to {:.0f} s), then checkpoint and exit",
                   ToSeconds(grace));
      coord.Drain(grace);
    } else {
      coord.Stop();
    }
  });
  Status st = on_listening ? on_listening(server->port()) : OkStatus();
  Result<RunSummary> summary = st.ok() ? coord.Run() : Result<RunSummary>(st);
  SetStopCallback(nullptr);
  SetReloadCallback(nullptr);
  // Let the Bye messages flush before tearing the sessions down.
  for (int i = 0; i < 100 && server->session_count() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->Stop();
  if (status_http) status_http->Stop();
  return summary;
}

}  // namespace verdant::cli
