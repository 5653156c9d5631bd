#include "verdant/cli/cli.h"

#include <CLI/CLI.hpp>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>
#include <toml++/toml.h>

#include "common.h"
#include "simulate_cmd.h"
#include "verdant/client/client_loop.h"
#include "verdant/client/dataset.h"
#include "verdant/client/model_zoo.h"
#include "verdant/client/partition.h"
#include "verdant/client/synthetic_trainer.h"
#include "verdant/client/torch_local_trainer.h"
#include "verdant/client/trainer.h"
#include "verdant/aggregation/plugins.h"
#include "verdant/core/plugin.h"

extern char** environ;

namespace verdant {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;

int Report(const Status& st, int code = kExitFailure) {
  std::fprintf(stderr, "verdant: %s\n", st.ToString().c_str());
  return code;
}

int ExitFor(const Status& st) {
  if (st.ok()) return kExitOk;
  if (st.code() == StatusCode::kCancelled || cli::Interrupted()) return Report(st, kExitInterrupted);
  if (st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound) return Report(st, kExitUsage);
  return Report(st);
}

// "i/n" -> {i, n}.
Result<std::pair<size_t, size_t>> ParseShard(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return InvalidArgumentError("--shard must be INDEX/COUNT, e.g. 0/10");
  try {
    size_t i = std::stoul(s.substr(0, slash)), n = std::stoul(s.substr(slash + 1));
    if (n == 0 || i >= n) return InvalidArgumentError("--shard " + s + ": need 0 <= INDEX < COUNT");
    return std::make_pair(i, n);
  } catch (...) {
    return InvalidArgumentError("--shard must be INDEX/COUNT, e.g. 0/10");
  }
}

// Loads strategy/aggregator/optimizer/selector plug-ins into the registries.
Status LoadPlugins(const std::vector<std::string>& paths) {
  if (paths.empty()) return OkStatus();
  static PluginHost* host = [] {
    auto* h = new PluginHost();
    Status st = RegisterAggregationPluginKinds(*h);
    if (st.ok()) st = h->AddRegistry<ClientSelector>("selector", SelectorRegistry());
    if (!st.ok()) spdlog::error("plug-in host: {}", st.ToString());
    return h;
  }();
  for (const auto& p : paths) {
    VERDANT_RETURN_IF_ERROR(LoadPlugin(p, *host));
    spdlog::info("loaded plug-in {}", p);
  }
  return OkStatus();
}

// "--server-lr 0.01 --beta=0.9" (the arguments CLI11 did not know) -> options
// {server_lr: 0.01, beta: 0.9} for the strategy, which rejects unknown ones.
Status ParseStrategyExtras(const std::vector<std::string>& extras, OptionMap& options) {
  for (size_t i = 0; i < extras.size(); ++i) {
    const std::string& a = extras[i];
    if (a.rfind("--", 0) != 0 || a.size() < 3) {
      return InvalidArgumentError("unexpected argument '" + a + "' (strategy options look like --server-lr 0.01)");
    }
    std::string key = a.substr(2), value;
    auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key.resize(eq);
    } else {
      if (i + 1 >= extras.size()) return InvalidArgumentError("strategy option --" + key + " needs a value");
      value = extras[++i];
    }
    for (char& c : key) c = c == '-' ? '_' : c;
    options.Set(key, value);
  }
  return OkStatus();
}

// Fault injection for robustness experiments: wraps a trainer and corrupts
// its updates ("scale:F" multiplies the delta by F, "nan" poisons it).
class AttackTrainer final : public LocalTrainer {
 public:
  static Result<std::unique_ptr<AttackTrainer>> Create(const std::string& spec, std::unique_ptr<LocalTrainer> inner) {
    float scale = 0;
    bool nan = false;
    if (spec == "nan") {
      nan = true;
    } else if (spec.rfind("scale:", 0) == 0) {
      try {
        scale = std::stof(spec.substr(6));
      } catch (...) {
        return InvalidArgumentError("--attack scale:F needs a number, got '" + spec + "'");
      }
    } else {
      return InvalidArgumentError("unknown --attack '" + spec + "' (scale:F or nan)");
    }
    return std::unique_ptr<AttackTrainer>(new AttackTrainer(std::move(inner), scale, nan));
  }
  std::string_view Name() const override { return "attack"; }
  uint64_t num_examples() const override { return inner_->num_examples(); }
  Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global, std::vector<float>& delta) override {
    VERDANT_ASSIGN_OR_RETURN(TaskOutcome out, inner_->Train(task, global, delta));
    if (nan_) {
      for (size_t i = 0; i < delta.size(); i += 7) delta[i] = std::numeric_limits<float>::quiet_NaN();
    } else {
      for (float& d : delta) d *= scale_;
    }
    return out;
  }

 private:
  AttackTrainer(std::unique_ptr<LocalTrainer> inner, float scale, bool nan)
      : inner_(std::move(inner)), scale_(scale), nan_(nan) {}
  std::unique_ptr<LocalTrainer> inner_;
  float scale_;
  bool nan_;
};

// ---- client -------------------------------------------------------------------

struct ClientArgs {
  std::string server = "127.0.0.1:7070";
  std::string name;
  std::string data_dir = DefaultFashionMnistDir();
  std::string partition = "iid";
  std::string shard = "0/1";
  uint64_t seed = 1;
  size_t max_examples = 0;
  int max_reconnects = 5;
  std::string log_level = "info";
  std::string log_file;
  std::string log_format = "text";
  cli::ClientSecurity security;
  std::string state_dir;
  std::string attack;  // fault injection: "scale:F" or "nan"
  std::string model;   // with no_train: the synthetic:N model the tasks must match ("" = any)
  bool no_train = false;  // answer tasks with SyntheticTrainer (no data, no LibTorch)
  // Device state (the app or agent would feed these; sysfs fills battery and power when present).
  std::string zone, profile, power, network;
  double battery = -1;
  bool charging = false, idle = false;
  double intensity = 0;
  // sysfs root: power_supply and powercap are read under <root>/class/ (tests
  // point it at a fake tree; also $VERDANT_SYSFS_ROOT).
  std::string sysfs_root = "/sys";
  std::string meter = "auto";  // auto, rapl, battery or none
};

// --no-train and --model: the synthetic benchmark workload (issue 9).
// --no-train needs no model or synthetic:N; a synthetic model needs --no-train.
Status CheckNoTrain(const std::string& model, bool no_train, bool model_required) {
  if (no_train) {
    if (model.empty() && !model_required) return OkStatus();
    if (!IsSyntheticModel(model)) {
      return InvalidArgumentError("--no-train runs the synthetic benchmark workload and needs --model synthetic:N "
                                  "(e.g. synthetic:1000000), not '" + model + "'; mlp and cnn train with LibTorch");
    }
    return SyntheticModelSize(model).status();
  }
  if (IsSyntheticModel(model)) {
    return InvalidArgumentError("model '" + model + "' has nothing to train: add --no-train");
  }
  return model.empty() ? OkStatus() : ModelLayout(model).status();
}

Status RunClient(const ClientArgs& a) {
  VERDANT_RETURN_IF_ERROR(cli::ConfigureLogging(a.log_level, a.log_file, a.log_format));
  VERDANT_ASSIGN_OR_RETURN(auto hp, ParseHostPort(a.server));
  VERDANT_ASSIGN_OR_RETURN(auto shard, ParseShard(a.shard));
  VERDANT_RETURN_IF_ERROR(CheckNoTrain(a.model, a.no_train, /*model_required=*/false));
  if (!a.no_train) VERDANT_RETURN_IF_ERROR(cli::CheckDataDir(a.data_dir));
  VERDANT_ASSIGN_OR_RETURN(HandshakerFactory handshaker, cli::MakeClientHandshaker(a.security));
  energy::DeviceState ds;
  ds.zone = a.zone;
  if (a.battery >= 0) ds.battery_percent = a.battery;
  ds.charging = a.charging;
  ds.idle = a.idle;
  if (!a.power.empty()) {
    VERDANT_ASSIGN_OR_RETURN(ds.power_source, energy::ParsePowerSource(a.power));
  }
  if (!a.network.empty()) {
    VERDANT_ASSIGN_OR_RETURN(ds.network, energy::ParseNetworkType(a.network));
  }
  if (a.intensity > 0) ds.local_intensity = CarbonIntensity::GramsPerKwh(a.intensity);
  energy::ManualDeviceStateProvider manual;
  VERDANT_RETURN_IF_ERROR(manual.Set(ds).WithContext("device state flags"));
  const fs::path power_supply = fs::path(a.sysfs_root) / "class" / "power_supply";
  energy::SysfsDeviceStateProvider sysfs(energy::PowerSupplyReaderOptions{power_supply}, &manual);
  const bool use_sysfs = a.battery < 0 && std::filesystem::is_directory(power_supply);
  std::optional<energy::MeterSelectionOptions> metering;
  if (a.meter != "none") {
    if (a.meter != "auto" && a.meter != "rapl" && a.meter != "battery") {
      return InvalidArgumentError("--meter must be auto, rapl, battery or none, got '" + a.meter + "'");
    }
    energy::MeterSelectionOptions m;
    m.profile.name = a.profile.empty() ? "unnamed" : a.profile;
    m.try_rapl = a.meter != "battery";
    m.try_battery = a.meter != "rapl";
    m.rapl.root = fs::path(a.sysfs_root) / "class" / "powercap";
    m.battery.root = power_supply;
    metering = m;
  }
  const uint64_t client_seed = a.seed * 1000003 + shard.first;
  std::unique_ptr<LocalTrainer> trainer;
  if (a.no_train) {
    SyntheticTrainerOptions so;
    if (!a.model.empty()) {
      VERDANT_ASSIGN_OR_RETURN(so.num_params, SyntheticModelSize(a.model));
    }
    so.seed = client_seed;
    VERDANT_ASSIGN_OR_RETURN(auto synthetic, SyntheticTrainer::Create(so));
    trainer = std::move(synthetic);
    spdlog::info("client {}: --no-train: answering tasks with synthetic updates ({} examples, noise std {})", a.name,
                 so.num_examples, so.noise_std);
  } else {
    ConfigureTorchThreads(1);
    VERDANT_ASSIGN_OR_RETURN(Dataset train, LoadFashionMnist(a.data_dir, "train"));
    VERDANT_ASSIGN_OR_RETURN(auto idx,
                             PartitionIndices(a.partition, train.labels, 10, shard.second, shard.first, a.seed));
    if (a.max_examples > 0 && idx.size() > a.max_examples) idx.resize(a.max_examples);
    Dataset mine = Subset(train, idx);
    train = Dataset();
    spdlog::info("client {}: shard {} of {} ({}, seed {}): {} examples", a.name, shard.first, shard.second,
                 a.partition, a.seed, mine.size());
    VERDANT_ASSIGN_OR_RETURN(auto torch_trainer, TorchLocalTrainer::Create(std::move(mine)));
    trainer = std::move(torch_trainer);
  }
  if (!a.attack.empty()) {
    VERDANT_ASSIGN_OR_RETURN(auto attacker, AttackTrainer::Create(a.attack, std::move(trainer)));
    trainer = std::move(attacker);
    spdlog::warn("this client is ADVERSARIAL (--attack {}): its updates are corrupted on purpose", a.attack);
  }
  ClientLoopOptions o;
  o.host = hp.first;
  o.port = hp.second;
  o.name = a.name.empty() ? "client-" + std::to_string(shard.first) : a.name;
  o.max_reconnects = a.max_reconnects;
  o.seed = client_seed;
  o.connection.handshaker = std::move(handshaker);
  o.state_dir = a.state_dir;
  o.state_provider = use_sysfs ? static_cast<const energy::DeviceStateProvider*>(&sysfs) : &manual;
  o.device_profile = a.profile;
  o.metering = metering;
  ClientLoop loop(o, *trainer);
  cli::SetStopCallback([&loop] { loop.Stop(); });
  Status st = loop.Run();
  cli::SetStopCallback(nullptr);
  return st;
}

// ---- server (TOML) -------------------------------------------------------------

template <typename T>
Result<T> TomlGet(const toml::table& t, std::string_view key, T fallback, const std::string& where) {
  auto node = t[key];
  if (!node) return fallback;
  if (auto v = node.value<T>()) return *v;
  return InvalidArgumentError(where + "." + std::string(key) + " has the wrong type");
}

// Every key of a TOML table except `name`, as strings, for an OptionMap.
OptionMap TableOptions(const toml::table* t) {
  OptionMap o;
  if (t == nullptr) return o;
  for (const auto& [k, v] : *t) {
    std::string key(k.str());
    if (key == "name") continue;
    if (auto s = v.value<std::string>()) o.Set(key, *s);
    else if (auto i = v.value<int64_t>()) o.Set(key, std::to_string(*i));
    else if (auto d = v.value<double>()) o.Set(key, std::to_string(*d));
    else if (auto b = v.value<bool>()) o.Set(key, *b ? "true" : "false");
  }
  return o;
}

Status CheckKeys(const toml::table* t, std::initializer_list<std::string_view> allowed, const std::string& where) {
  if (t == nullptr) return OkStatus();
  for (const auto& [k, v] : *t) {
    bool ok = false;
    for (auto a : allowed) ok |= (k.str() == a);
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return InvalidArgumentError("unknown key '" + std::string(k.str()) + "' in [" + where + "] (known: " + list + ")");
    }
  }
  return OkStatus();
}

Result<toml::table> ParseTomlFile(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::string msg = std::string(e.description());
    if (e.source().begin) msg += " (line " + std::to_string(e.source().begin.line) + ")";
    return InvalidArgumentError(path + ": " + msg);
  }
}

// Makes the config's relative file paths absolute (relative to `base`), so
// the copy a run keeps in its folder (config.toml, for --resume) is
// self-contained.
void AbsolutizeConfigPaths(toml::table& cfg, const fs::path& base) {
  auto fix = [&](const char* section, const char* key) {
    toml::table* t = cfg[section].as_table();
    if (t == nullptr) return;
    auto v = (*t)[key].value<std::string>();
    if (v && !v->empty() && fs::path(*v).is_relative()) t->insert_or_assign(key, fs::absolute(base / *v).string());
  };
  fix("security", "key_dir");
  fix("security", "allow_list");
  fix("carbon", "trace_dir");
  fix("carbon", "profiles_file");
}

Result<cli::ServeSetup> LoadServerConfig(const toml::table& cfg, const std::string& path) {
  for (const auto& [k, v] : cfg) {
    std::string key(k.str());
    if (key != "server" && key != "run" && key != "strategy" && key != "selector" && key != "security" &&
        key != "carbon" && key != "metrics") {
      return InvalidArgumentError(path + ": unknown section [" + key +
                                  "] (known: server, run, strategy, selector, security, carbon, metrics)");
    }
  }
  cli::ServeSetup s;
  const toml::table* server = cfg["server"].as_table();
  const toml::table* run = cfg["run"].as_table();
  VERDANT_RETURN_IF_ERROR(CheckKeys(server, {"listen", "threads", "max_frame_bytes"}, "server"));
  VERDANT_RETURN_IF_ERROR(CheckKeys(run, {"rounds", "min_clients", "clients_per_round", "round_timeout_s",
                                          "wait_for_clients_s", "seed", "out", "model", "codec", "downlink_codec", "data_dir",
                                          "eval_examples", "eval_every", "run_id", "over_selection", "shutdown_grace_s"},
                                    "run"));
  toml::table empty;
  const toml::table& sv = server ? *server : empty;
  const toml::table& rn = run ? *run : empty;
  VERDANT_ASSIGN_OR_RETURN(std::string listen, TomlGet<std::string>(sv, "listen", "0.0.0.0:7070", "server"));
  VERDANT_ASSIGN_OR_RETURN(auto hp, ParseHostPort(listen));
  s.tcp.host = hp.first;
  s.tcp.port = hp.second;
  VERDANT_ASSIGN_OR_RETURN(int64_t threads, TomlGet<int64_t>(sv, "threads", 2, "server"));
  if (threads < 1 || threads > 64) return InvalidArgumentError("server.threads must be 1..64");
  s.tcp.threads = static_cast<int>(threads);
  auto& c = s.coordinator;
  VERDANT_ASSIGN_OR_RETURN(int64_t rounds, TomlGet<int64_t>(rn, "rounds", 10, "run"));
  VERDANT_ASSIGN_OR_RETURN(int64_t min_clients, TomlGet<int64_t>(rn, "min_clients", 2, "run"));
  VERDANT_ASSIGN_OR_RETURN(int64_t per_round, TomlGet<int64_t>(rn, "clients_per_round", 0, "run"));
  VERDANT_ASSIGN_OR_RETURN(double round_timeout, TomlGet<double>(rn, "round_timeout_s", 300.0, "run"));
  VERDANT_ASSIGN_OR_RETURN(double wait_clients, TomlGet<double>(rn, "wait_for_clients_s", 600.0, "run"));
  VERDANT_ASSIGN_OR_RETURN(int64_t seed, TomlGet<int64_t>(rn, "seed", 1, "run"));
  VERDANT_ASSIGN_OR_RETURN(c.out_dir, TomlGet<std::string>(rn, "out", "verdant-run", "run"));
  VERDANT_ASSIGN_OR_RETURN(c.model_name, TomlGet<std::string>(rn, "model", "mlp", "run"));
  VERDANT_ASSIGN_OR_RETURN(c.uplink_codec, TomlGet<std::string>(rn, "codec", "identity", "run"));
  VERDANT_ASSIGN_OR_RETURN(c.downlink_codec, TomlGet<std::string>(rn, "downlink_codec", "identity", "run"));
  VERDANT_ASSIGN_OR_RETURN(c.run_id, TomlGet<std::string>(rn, "run_id", "run", "run"));
  VERDANT_ASSIGN_OR_RETURN(s.data_dir, TomlGet<std::string>(rn, "data_dir", DefaultFashionMnistDir(), "run"));
  VERDANT_ASSIGN_OR_RETURN(int64_t eval_examples, TomlGet<int64_t>(rn, "eval_examples", 0, "run"));
  VERDANT_ASSIGN_OR_RETURN(int64_t eval_every, TomlGet<int64_t>(rn, "eval_every", 1, "run"));
  VERDANT_ASSIGN_OR_RETURN(c.over_selection, TomlGet<double>(rn, "over_selection", 0.0, "run"));
  VERDANT_ASSIGN_OR_RETURN(double grace, TomlGet<double>(rn, "shutdown_grace_s", 30.0, "run"));
  if (!(c.over_selection >= 0) || !std::isfinite(c.over_selection)) {
    return InvalidArgumentError("run.over_selection must be >= 0 (e.g. 0.3 selects 30% more clients than needed)");
  }
  if (!(grace >= 0)) return InvalidArgumentError("run.shutdown_grace_s must be >= 0");
  s.shutdown_grace = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(grace));
  if (rounds < 1) return InvalidArgumentError("run.rounds must be >= 1");
  if (min_clients < 1) return InvalidArgumentError("run.min_clients must be >= 1");
  if (per_round < 0) return InvalidArgumentError("run.clients_per_round must be >= 0");
  if (!(round_timeout > 0) || !(wait_clients > 0)) return InvalidArgumentError("timeouts must be > 0");
  if (eval_examples < 0) return InvalidArgumentError("run.eval_examples must be >= 0");
  if (eval_every < 0 || eval_every > UINT32_MAX) {
    return InvalidArgumentError("run.eval_every must be >= 0 (0 = never evaluate)");
  }
  c.evaluate_every = static_cast<uint32_t>(eval_every);
  c.rounds = static_cast<uint64_t>(rounds);
  c.min_clients = static_cast<size_t>(min_clients);
  c.clients_per_round = static_cast<size_t>(per_round);
  c.round_timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(round_timeout));
  c.wait_for_clients = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(wait_clients));
  c.seed = static_cast<uint64_t>(seed);
  s.init_seed = c.seed;
  s.eval_examples = static_cast<size_t>(eval_examples);
  if (const toml::table* sec = cfg["security"].as_table()) {
    VERDANT_RETURN_IF_ERROR(CheckKeys(sec, {"key_dir", "allow_list", "insecure", "handshake_timeout_s"}, "security"));
    VERDANT_ASSIGN_OR_RETURN(s.security.key_dir, TomlGet<std::string>(*sec, "key_dir", "", "security"));
    VERDANT_ASSIGN_OR_RETURN(s.security.allow_list, TomlGet<std::string>(*sec, "allow_list", "", "security"));
    VERDANT_ASSIGN_OR_RETURN(s.security.insecure, TomlGet<bool>(*sec, "insecure", false, "security"));
    VERDANT_ASSIGN_OR_RETURN(double hs, TomlGet<double>(*sec, "handshake_timeout_s", 10.0, "security"));
    if (!(hs > 0)) return InvalidArgumentError("security.handshake_timeout_s must be > 0");
    s.tcp.session.handshake_timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(hs));
    // Relative paths are relative to the config file.
    auto base = fs::path(path).parent_path();
    if (!s.security.key_dir.empty() && fs::path(s.security.key_dir).is_relative()) {
      s.security.key_dir = (base / s.security.key_dir).string();
    }
    if (!s.security.allow_list.empty() && fs::path(s.security.allow_list).is_relative()) {
      s.security.allow_list = (base / s.security.allow_list).string();
    }
  }
  if (const toml::table* cb = cfg["carbon"].as_table()) {
    VERDANT_RETURN_IF_ERROR(CheckKeys(cb, {"trace_dir", "scope", "constant_g_per_kwh", "start", "hours_per_round",
                                           "max_defer_h", "profiles_file", "default_profile", "json_file", "url",
                                           "auth_header", "auth_token", "auth_token_env", "http_timeout_s",
                                           "refresh_s", "kind"},
                                      "carbon"));
    auto& c = s.carbon;
    VERDANT_ASSIGN_OR_RETURN(c.trace_dir, TomlGet<std::string>(*cb, "trace_dir", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.scope, TomlGet<std::string>(*cb, "scope", "direct", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.constant_g_per_kwh, TomlGet<double>(*cb, "constant_g_per_kwh", 0.0, "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.start, TomlGet<std::string>(*cb, "start", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.hours_per_round, TomlGet<double>(*cb, "hours_per_round", 1.0, "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.max_defer_h, TomlGet<double>(*cb, "max_defer_h", 0.0, "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.profiles_file, TomlGet<std::string>(*cb, "profiles_file", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.default_profile, TomlGet<std::string>(*cb, "default_profile", "phone-midrange", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.json_file, TomlGet<std::string>(*cb, "json_file", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.url, TomlGet<std::string>(*cb, "url", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.auth_header, TomlGet<std::string>(*cb, "auth_header", "auth-token", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.auth_token, TomlGet<std::string>(*cb, "auth_token", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.auth_token_env, TomlGet<std::string>(*cb, "auth_token_env", "", "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.http_timeout_s, TomlGet<double>(*cb, "http_timeout_s", 5.0, "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.refresh_s, TomlGet<double>(*cb, "refresh_s", 900.0, "carbon"));
    VERDANT_ASSIGN_OR_RETURN(c.kind, TomlGet<std::string>(*cb, "kind", "average", "carbon"));
    auto base = fs::path(path).parent_path();
    if (!c.json_file.empty() && fs::path(c.json_file).is_relative()) c.json_file = (base / c.json_file).string();
    if (!c.trace_dir.empty() && fs::path(c.trace_dir).is_relative()) c.trace_dir = (base / c.trace_dir).string();
    if (!c.profiles_file.empty() && fs::path(c.profiles_file).is_relative()) {
      c.profiles_file = (base / c.profiles_file).string();
    }
  }
  if (const toml::table* mt = cfg["metrics"].as_table()) {
    // The status endpoint: on when [metrics] has a port.
    VERDANT_RETURN_IF_ERROR(CheckKeys(mt, {"port", "address"}, "metrics"));
    VERDANT_ASSIGN_OR_RETURN(int64_t port, TomlGet<int64_t>(*mt, "port", -1, "metrics"));
    VERDANT_ASSIGN_OR_RETURN(s.metrics.address, TomlGet<std::string>(*mt, "address", "127.0.0.1", "metrics"));
    if (port > 65535 || port < -1) return InvalidArgumentError("metrics.port must be 0..65535");
    if (port >= 0) {
      s.metrics.enabled = true;
      s.metrics.port = static_cast<uint16_t>(port);
    }
  }
  if (const toml::table* st = cfg["strategy"].as_table()) {
    VERDANT_ASSIGN_OR_RETURN(s.strategy, TomlGet<std::string>(*st, "name", "fedavg", "strategy"));
    s.strategy_options = TableOptions(st);
  }
  if (const toml::table* se = cfg["selector"].as_table()) {
    VERDANT_ASSIGN_OR_RETURN(s.selector, TomlGet<std::string>(*se, "name", "random", "selector"));
    s.selector_options = TableOptions(se);
  }
  return s;
}

// ---- demo -----------------------------------------------------------------------

struct DemoArgs {
  size_t clients = 10;
  uint64_t rounds = 20;
  size_t clients_per_round = 0;
  std::string model = "mlp";
  std::string partition = "iid";
  uint64_t seed = 1;
  uint16_t port = 0;
  std::string out = "verdant-demo";
  std::string strategy = "fedavg";
  std::string codec = "identity";
  std::string downlink = "identity";
  uint32_t local_epochs = 1;
  uint32_t batch_size = 32;
  double lr = 0.05;
  size_t max_examples = 0;
  size_t eval_examples = 0;
  uint32_t eval_every = 1;
  double round_timeout = 300;
  std::string data_dir = DefaultFashionMnistDir();
  std::string log_level = "warn";
  std::string log_format = "text";
  bool insecure = false;
  std::vector<std::string> plugins;
  std::string selector = "random";
  std::vector<std::string> selector_opts;  // KEY=VALUE
  size_t adversarial = 0;          // clients 0..N-1 corrupt their updates
  std::string attack = "scale:1e6";
  OptionMap strategy_options;      // from extra --key value arguments
  std::string zones;               // comma-separated; clients spread round-robin
  std::string profile = "phone-midrange";
  cli::CarbonSetup carbon{.start = "2022-06-01T00:00:00Z"};
  bool no_train = false;           // synthetic:N with SyntheticTrainer clients (benchmarks)
  int metrics_port = -1;           // -1 = no status endpoint; 0 = any free port
  std::string metrics_address = "127.0.0.1";
  double over_selection = 0;       // select K (1 + e), close each round at the first K results
};

class ChildProcesses {
 public:
  ~ChildProcesses() { StopAll(10s); }
  Status Spawn(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty;
    sigemptyset(&empty);
    posix_spawnattr_setsigmask(&attr, &empty);  // children handle signals themselves
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);        // a terminal's Ctrl-C reaches only us; we stop them
    pid_t pid = 0;
    int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return InternalError(std::string("cannot start a client process: ") + std::strerror(rc));
    pids_.push_back(pid);
    return OkStatus();
  }
  // Waits for every child up to `grace`, then SIGTERM, then SIGKILL.
  void StopAll(Duration grace) {
    auto deadline = std::chrono::steady_clock::now() + grace;
    auto reap = [this] {
      for (auto it = pids_.begin(); it != pids_.end();) {
        int status = 0;
        pid_t r = waitpid(*it, &status, WNOHANG);
        if (r == *it || r < 0) {
          if (r == *it && WIFEXITED(status) && WEXITSTATUS(status) != 0) ++failed_;
          it = pids_.erase(it);
        } else {
          ++it;
        }
      }
    };
    while (!pids_.empty() && std::chrono::steady_clock::now() < deadline) {
      reap();
      if (!pids_.empty()) std::this_thread::sleep_for(20ms);
    }
    for (int sig : {SIGTERM, SIGKILL}) {
      if (pids_.empty()) break;
      for (pid_t p : pids_) kill(p, sig);
      for (int i = 0; i < 100 && !pids_.empty(); ++i) {
        reap();
        if (!pids_.empty()) std::this_thread::sleep_for(20ms);
      }
    }
  }
  int failed() const { return failed_; }

 private:
  std::vector<pid_t> pids_;
  int failed_ = 0;
};

Status RunDemo(const DemoArgs& a) {
  VERDANT_RETURN_IF_ERROR(cli::ConfigureLogging(a.log_level, "", a.log_format));
  if (a.clients < 1 || a.clients > 1000) return InvalidArgumentError("--clients must be 1..1000");
  if (a.clients_per_round > a.clients) return InvalidArgumentError("--clients-per-round cannot exceed --clients");
  if (a.adversarial > a.clients) return InvalidArgumentError("--adversarial cannot exceed --clients");
  VERDANT_RETURN_IF_ERROR(CheckNoTrain(a.model, a.no_train, /*model_required=*/true));
  if (!a.no_train) VERDANT_RETURN_IF_ERROR(cli::CheckDataDir(a.data_dir));
  VERDANT_RETURN_IF_ERROR(LoadPlugins(a.plugins));
  VERDANT_ASSIGN_OR_RETURN(auto layout, ModelLayout(a.model));
  {
    // Fail fast on a bad partition spec, before starting processes.
    std::vector<uint8_t> probe(a.clients * 10);
    for (size_t i = 0; i < probe.size(); ++i) probe[i] = static_cast<uint8_t>(i % 10);
    VERDANT_RETURN_IF_ERROR(PartitionIndices(a.partition, probe, 10, a.clients, 0, a.seed).status());
  }
  fs::path out(a.out);
  std::error_code ec;
  fs::create_directories(out / "logs", ec);
  if (ec) return UnavailableError("cannot create " + (out / "logs").string() + ": " + ec.message());

  cli::ServeSetup s;
  s.tcp.host = "127.0.0.1";
  s.tcp.port = a.port;
  s.coordinator.rounds = a.rounds;
  s.coordinator.min_clients = a.clients;
  s.coordinator.clients_per_round = a.clients_per_round;
  s.coordinator.model_name = a.model;
  s.coordinator.uplink_codec = a.codec;
  s.coordinator.downlink_codec = a.downlink;
  s.coordinator.seed = a.seed;
  s.coordinator.out_dir = out.string();
  s.coordinator.run_id = "demo";
  s.coordinator.wait_for_clients = 120s;
  s.coordinator.round_timeout = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(a.round_timeout));
  if (!(a.over_selection >= 0) || !std::isfinite(a.over_selection)) {
    return InvalidArgumentError("--over-selection must be >= 0 (e.g. 0.3)");
  }
  s.coordinator.over_selection = a.over_selection;
  s.strategy = a.strategy;
  s.strategy_options = a.strategy_options;
  s.selector = a.selector;
  for (const auto& kv : a.selector_opts) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError("--selector-opt wants KEY=VALUE, got '" + kv + "'");
    }
    s.selector_options.Set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  s.strategy_options.Set("local_epochs", std::to_string(a.local_epochs));
  s.strategy_options.Set("batch_size", std::to_string(a.batch_size));
  s.strategy_options.Set("lr", std::to_string(a.lr));
  s.data_dir = a.data_dir;
  s.eval_examples = a.eval_examples;
  s.coordinator.evaluate_every = a.eval_every;
  s.init_seed = a.seed;
  s.security.insecure = a.insecure;
  s.carbon = a.carbon;
  if (a.metrics_port >= 0) {
    s.metrics.enabled = true;
    s.metrics.port = static_cast<uint16_t>(a.metrics_port);
    s.metrics.address = a.metrics_address;
  }
  std::vector<std::string> zones;
  {
    std::stringstream zs(a.zones);
    std::string z;
    while (std::getline(zs, z, ',')) {
      if (!z.empty()) zones.push_back(z);
    }
  }
  std::string server_pub;
  if (!a.insecure) {
    // Throwaway identities for this demo: the coordinator's key in out/keys/,
    // each client creates its own on first use.
    fs::path keys = out / "keys";
    fs::remove_all(keys, ec);
    VERDANT_ASSIGN_OR_RETURN(KeyPair kp, cli::LoadOrCreateKeyPair(keys / "coordinator"));
    server_pub = FormatPublicKey(kp.public_key());
    s.security.key_dir = (keys / "coordinator").string();
  }

  std::printf("verdant demo: %zu clients, %llu rounds, %s, %s partition, %zu parameters, seed %llu, %s -> %s\n",
              a.clients, static_cast<unsigned long long>(a.rounds), a.model.c_str(), a.partition.c_str(),
              layout.NumParameters(), static_cast<unsigned long long>(a.seed),
              a.insecure ? "PLAINTEXT" : "encrypted (Noise XX)", out.string().c_str());
  std::fflush(stdout);
  ChildProcesses children;
  auto start_clients = [&](uint16_t port) -> Status {
    for (size_t i = 0; i < a.clients; ++i) {
      std::vector<std::string> args = {"verdant", "client",
                                       "--server", "127.0.0.1:" + std::to_string(port),
                                       "--name", "client-" + std::to_string(i),
                                       "--shard", std::to_string(i) + "/" + std::to_string(a.clients),
                                       "--partition", a.partition,
                                       "--seed", std::to_string(a.seed),
                                       "--data-dir", a.data_dir,
                                       "--max-examples", std::to_string(a.max_examples),
                                       "--max-reconnects", "2",
                                       "--log-file", (out / "logs" / ("client-" + std::to_string(i) + ".log")).string(),
                                       "--log-format", a.log_format,
                                       "--state-dir", (out / "state" / ("client-" + std::to_string(i))).string()};
      if (i < a.adversarial) args.insert(args.end(), {"--attack", a.attack});
      if (a.no_train) args.insert(args.end(), {"--model", a.model, "--no-train"});
      if (!zones.empty()) args.insert(args.end(), {"--zone", zones[i % zones.size()]});
      // Demo clients stand for phones on one host: a package-wide RAPL counter
      // would count every client's (and the coordinator's) work in each
      // client, so they are modelled, not metered.
      args.insert(args.end(), {"--profile", a.profile, "--network", "wifi", "--power", "grid", "--battery", "80",
                               "--charging", "--meter", "none"});
      if (a.insecure) {
        args.push_back("--insecure");
      } else {
        args.insert(args.end(), {"--server-key", server_pub, "--key",
                                 (out / "keys" / ("client-" + std::to_string(i))).string()});
      }
      VERDANT_RETURN_IF_ERROR(children.Spawn(args));
    }
    return OkStatus();
  };
  auto summary = cli::Serve(std::move(s), start_clients);
  // After SIGTERM the coordinator closes the sessions without a Bye (so real
  // clients reconnect to a resumed coordinator): the demo stops its own.
  children.StopAll(cli::Interrupted() ? 0s : 15s);
  if (!summary.ok()) return summary.status();
  const std::string accuracy =
      a.no_train ? std::string("no evaluation (--no-train)") : "final accuracy " + std::to_string(summary->final_accuracy);
  std::printf("done: %s after %llu rounds in %.1f s; %s up, %s down; outputs in %s\n", accuracy.c_str(),
              static_cast<unsigned long long>(summary->rounds_completed), summary->wall_seconds,
              cli::HumanBytes(summary->bytes_up).c_str(), cli::HumanBytes(summary->bytes_down).c_str(),
              out.string().c_str());
  if (children.failed() > 0) {
    std::printf("note: %d client process(es) exited with an error; see %s\n", children.failed(),
                (out / "logs").string().c_str());
  }
  return OkStatus();
}

Status RunKeygen(const std::string& out, bool force) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  VERDANT_ASSIGN_OR_RETURN(KeyPair kp, GenerateKeyPair());
  VERDANT_RETURN_IF_ERROR(SaveKeyPair(kp, out, force));
  std::printf("wrote %s (secret, mode 0600) and %s\npublic key: %s\nclient id:  %s\n",
              (fs::path(out) / kSecretKeyFileName).string().c_str(), (fs::path(out) / kPublicKeyFileName).string().c_str(),
              FormatPublicKey(kp.public_key()).c_str(), ClientIdFromKey(kp.public_key()).c_str());
  return OkStatus();
}

}  // namespace

int RunCli(int argc, char** argv) {
  cli::InstallSignalHandling();
  CLI::App app{"Verdant: carbon-aware federated learning"};
  app.require_subcommand(1);
  // A later flag wins (scripts/demo.sh passes defaults, the user overrides them).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_version_flag("--version", "verdant 0.1.0 (wire protocol 1)");
  cli::AddSimulateCommands(app);  // simulate, fleet generate (simulate_cmd.cc)

  // server
  std::string config;
  std::string server_listen, server_out, server_log = "info";
  auto* server = app.add_subcommand("server", "Run a coordinator from a TOML config");
  std::string server_resume;
  server->add_option("--config", config, "TOML file (see examples/server.toml)")->check(CLI::ExistingFile);
  server->add_option("--resume", server_resume,
                     "continue the run in this output folder from its last completed round "
                     "(its config.toml, unless --config is given; see docs/operations.md)");
  server->add_option("--listen", server_listen, "HOST:PORT to listen on (overrides server.listen)");
  server->add_option("--out", server_out, "output folder (overrides run.out)");
  server->add_option("--log-level", server_log, "trace, debug, info, warn, error, critical, off");
  std::string server_log_format = "text";
  server->add_option("--log-format", server_log_format, "text, or json (one object per line)");
  int server_metrics_port = -1;
  std::string server_metrics_address;
  server->add_option("--metrics-port", server_metrics_port,
                     "serve /metrics, /status and a status page on this port (0 = any free port; overrides "
                     "metrics.port)")
      ->check(CLI::Range(0, 65535));
  server->add_option("--metrics-address", server_metrics_address,
                     "address for the status endpoint (default 127.0.0.1; 0.0.0.0 exposes it to the network)");
  std::string server_key, server_allow;
  bool server_insecure = false;
  server->add_option("--key", server_key, "folder with the coordinator's key pair (overrides security.key_dir)");
  server->add_option("--allow-list", server_allow, "file of allowed client public keys (overrides security.allow_list)");
  server->add_flag("--insecure", server_insecure, "plaintext, unauthenticated (debugging only)");
  std::vector<std::string> server_plugins;
  server->add_option("--plugin", server_plugins, "load a strategy/selector plug-in (.so); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);

  // keygen
  std::string keygen_out;
  bool keygen_force = false;
  auto* keygen = app.add_subcommand("keygen", "Write a long-term key pair (verdant.key, 0600; verdant.pub)");
  keygen->add_option("--out", keygen_out, "folder to write the key pair to")->required();
  keygen->add_flag("--force", keygen_force, "overwrite an existing key pair");

  // client
  ClientArgs ca;
  auto* client = app.add_subcommand("client", "Run an edge client that trains on its local data");
  client->add_option("--server", ca.server, "coordinator HOST:PORT")->capture_default_str();
  client->add_option("--name", ca.name, "a label for logs (the coordinator assigns the id)");
  client->add_option("--data-dir", ca.data_dir, "Fashion-MNIST IDX folder")->capture_default_str();
  client->add_option("--partition", ca.partition, "iid or dirichlet:ALPHA")->capture_default_str();
  client->add_option("--shard", ca.shard, "INDEX/COUNT: which shard of the training set is local")->capture_default_str();
  client->add_option("--seed", ca.seed, "partition seed (same on every client)")->capture_default_str();
  client->add_option("--max-examples", ca.max_examples, "cap the local shard (0 = all)");
  client->add_option("--max-reconnects", ca.max_reconnects, "-1 = forever")->capture_default_str();
  client->add_option("--log-level", ca.log_level, "trace, debug, info, warn, error, critical, off")
      ->capture_default_str();
  client->add_option("--log-file", ca.log_file, "log to this file instead of stderr");
  client->add_option("--log-format", ca.log_format, "text, or json (one object per line)")->capture_default_str();
  client->add_option("--key", ca.security.key_dir, "folder with this client's key pair (created on first use)");
  client->add_option("--server-key", ca.security.server_key, "the coordinator's public key: vpk1... or its verdant.pub");
  client->add_option("--state-dir", ca.state_dir, "folder for state that survives restarts (error-feedback residual)");
  client->add_option("--zone", ca.zone, "grid zone of this device, as the carbon traces name it (e.g. NO, US-CISO)");
  client->add_option("--profile", ca.profile, "device energy profile (phone-midrange, phone-flagship, laptop, ...)");
  client->add_option("--battery", ca.battery, "battery level 0..100 (default: read /sys/class/power_supply)");
  client->add_flag("--charging", ca.charging, "the device is charging");
  client->add_option("--power", ca.power, "grid, solar or battery");
  client->add_option("--network", ca.network, "wifi (unmetered) or cellular");
  client->add_flag("--idle", ca.idle, "the device is idle (not in use)");
  client->add_option("--intensity", ca.intensity, "grid intensity the device knows locally, gCO2e/kWh");
  client->add_option("--meter", ca.meter,
                     "measure training energy: auto (RAPL, else the battery while discharging), rapl, battery, none")
      ->capture_default_str();
  client->add_option("--sysfs-root", ca.sysfs_root, "where class/power_supply and class/powercap are read")
      ->envname("VERDANT_SYSFS_ROOT")
      ->capture_default_str();
  client->add_option("--attack", ca.attack, "fault injection for robustness tests: scale:F or nan");
  client->add_option("--model", ca.model, "with --no-train: the synthetic:N model the tasks must match");
  client->add_flag("--no-train", ca.no_train,
                   "benchmark client: answer each task with the model plus small noise (no data, no LibTorch)");
  client->add_flag("--insecure", ca.security.insecure, "plaintext, unauthenticated (debugging only)");

  // demo
  DemoArgs da;
  auto* demo = app.add_subcommand("demo", "Run a coordinator and N client processes on 127.0.0.1");
  demo->add_option("--clients", da.clients, "client processes")->capture_default_str();
  demo->add_option("--rounds", da.rounds, "rounds")->capture_default_str();
  demo->add_option("--clients-per-round", da.clients_per_round, "K (default: all clients)");
  demo->add_option("--model", da.model, "mlp, cnn, or synthetic:N (N float32 parameters; needs --no-train)")
      ->capture_default_str();
  demo->add_flag("--no-train", da.no_train,
                 "benchmark workload: clients answer with the model plus small noise, no data or evaluation "
                 "(needs --model synthetic:N; see bench/round_overhead.sh)");
  demo->add_option("--partition", da.partition, "iid or dirichlet:ALPHA")->capture_default_str();
  demo->add_option("--seed", da.seed, "seed for the model, partition and selection")->capture_default_str();
  demo->add_option("--port", da.port, "coordinator port (0 = any free port)")->capture_default_str();
  demo->add_option("--out", da.out, "output folder")->capture_default_str();
  demo->add_option("--strategy", da.strategy, "aggregation strategy")->capture_default_str();
  demo->add_option("--codec", da.codec, "uplink codec, e.g. int8 or topk:0.1+int8 (see docs/compression.md)")
      ->capture_default_str();
  demo->add_option("--downlink", da.downlink, "downlink: identity, fp16 or delta:<codec>")->capture_default_str();
  demo->add_option("--local-epochs", da.local_epochs, "local epochs per round")->capture_default_str();
  demo->add_option("--batch-size", da.batch_size, "local batch size")->capture_default_str();
  demo->add_option("--lr", da.lr, "local learning rate")->capture_default_str();
  demo->add_option("--max-examples", da.max_examples, "cap each client's shard (0 = all)");
  demo->add_option("--eval-examples", da.eval_examples, "test examples to evaluate on (0 = all 10k)");
  demo->add_option("--eval-every", da.eval_every, "evaluate every N-th round and the last one (0 = never)")
      ->capture_default_str();
  demo->add_option("--round-timeout", da.round_timeout, "seconds per round before stragglers fail")->capture_default_str();
  demo->add_option("--over-selection", da.over_selection,
                   "select K x (1 + E) clients and close each round at the first K results (needs --clients-per-round)");
  demo->add_option("--data-dir", da.data_dir, "Fashion-MNIST IDX folder")->capture_default_str();
  demo->add_option("--log-level", da.log_level, "coordinator log level (trace..off)")->capture_default_str();
  demo->add_option("--log-format", da.log_format, "text, or json (one object per line; clients too)")
      ->capture_default_str();
  demo->add_option("--metrics-port", da.metrics_port,
                   "serve /metrics, /status and a status page during the demo (0 = any free port)")
      ->check(CLI::Range(0, 65535));
  demo->add_option("--metrics-address", da.metrics_address, "address for the status endpoint")
      ->capture_default_str();
  demo->add_flag("--insecure", da.insecure, "plaintext between coordinator and clients (debugging only)");
  demo->add_option("--plugin", da.plugins, "load a strategy/selector plug-in (.so); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  demo->add_option("--selector", da.selector, "client selector")->capture_default_str();
  demo->add_option("--selector-opt", da.selector_opts, "selector option KEY=VALUE (e.g. max_share=0.5); repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  demo->add_option("--adversarial", da.adversarial, "how many clients corrupt their updates (robustness demo)");
  demo->add_option("--attack", da.attack, "what adversarial clients do: scale:F or nan")->capture_default_str();
  demo->add_option("--zones", da.zones, "grid zones, comma-separated (e.g. NO,ES,US-CISO); clients round-robin");
  demo->add_option("--profile", da.profile, "device energy profile of every client")->capture_default_str();
  demo->add_option("--start", da.carbon.start, "grid time of round 1 on the traces (UTC)")->capture_default_str();
  demo->add_option("--hours-per-round", da.carbon.hours_per_round, "grid hours between rounds")->capture_default_str();
  demo->add_option("--max-defer-h", da.carbon.max_defer_h, "how long carbon-deferral may hold a round, hours");
  demo->add_option("--carbon-dir", da.carbon.trace_dir, "folder of hourly carbon traces (default: shipped data)");
  demo->add_option("--carbon-scope", da.carbon.scope, "Electricity Maps column: direct or lifecycle")
      ->capture_default_str();
  demo->add_option("--carbon-json", da.carbon.json_file,
                   "grid intensity from a JSON file (Carbon Aware SDK / Electricity Maps shape) instead of traces");
  demo->add_option("--carbon-url", da.carbon.url,
                   "grid intensity over HTTP(S) in that shape; {zone} is replaced by the zone (pass --start '' for "
                   "live data)");
  demo->add_option("--carbon-token-env", da.carbon.auth_token_env,
                   "environment variable holding the carbon API token (sent as auth-token)");
  demo->allow_extras();
  demo->footer("Strategy options follow as --name value, e.g. --strategy fedadam --server-lr 0.01 "
               "(see docs/strategies.md).");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*keygen) return ExitFor(RunKeygen(keygen_out, keygen_force));
  if (*client) return ExitFor(RunClient(ca));
  if (*demo) {
    Status st = ParseStrategyExtras(demo->remaining(), da.strategy_options);
    if (!st.ok()) return ExitFor(st);
    return ExitFor(RunDemo(da));
  }
  if (*server) {
    Status st = cli::ConfigureLogging(server_log, "", server_log_format);
    if (!st.ok()) return ExitFor(st);
    st = LoadPlugins(server_plugins);
    if (!st.ok()) return ExitFor(st);
    if (config.empty() && server_resume.empty()) {
      return ExitFor(InvalidArgumentError("server needs --config FILE (a new run) or --resume DIR (continue a run)"));
    }
    if (!server_resume.empty() && !server_out.empty() && fs::path(server_out) != fs::path(server_resume)) {
      return ExitFor(InvalidArgumentError("--resume DIR continues the run in DIR; drop --out"));
    }
    std::string config_path = config;
    if (config_path.empty()) {
      config_path = (fs::path(server_resume) / "config.toml").string();
      if (!fs::is_directory(server_resume)) {
        return ExitFor(NotFoundError("--resume " + server_resume + ": no such run folder"));
      }
      if (!fs::exists(config_path)) {
        return ExitFor(NotFoundError("--resume " + server_resume + ": no config.toml in it (is it a run folder? "
                                     "pass the run's --config to resume it anyway)"));
      }
    }
    auto table = ParseTomlFile(config_path);
    if (!table.ok()) return ExitFor(table.status());
    AbsolutizeConfigPaths(*table, fs::path(config_path).parent_path());
    auto setup = LoadServerConfig(*table, config_path);
    if (!setup.ok()) return ExitFor(setup.status());
    if (!server_resume.empty()) {
      setup->coordinator.out_dir = server_resume;
      setup->coordinator.resume = true;
    }
    setup->coordinator.replace_existing_run = false;
    if (!server_listen.empty()) {
      auto hp = ParseHostPort(server_listen);
      if (!hp.ok()) return ExitFor(hp.status());
      setup->tcp.host = hp->first;
      setup->tcp.port = hp->second;
    }
    if (!server_out.empty()) setup->coordinator.out_dir = server_out;
    if (!server_key.empty()) setup->security.key_dir = server_key;
    if (!server_allow.empty()) setup->security.allow_list = server_allow;
    if (server_insecure) setup->security.insecure = true;
    if (server_metrics_port >= 0) {
      setup->metrics.enabled = true;
      setup->metrics.port = static_cast<uint16_t>(server_metrics_port);
    }
    if (!server_metrics_address.empty()) setup->metrics.address = server_metrics_address;
    if (server_resume.empty()) {
      // A new run keeps its configuration beside its state, for --resume.
      const fs::path out(setup->coordinator.out_dir);
      if (RunStore::HoldsRun(out)) {
        return ExitFor(Status(StatusCode::kAlreadyExists,
                              out.string() + " already holds a run: continue it with --resume " + out.string() +
                                  ", or choose another output folder (--out)"));
      }
      std::error_code ec;
      fs::create_directories(out, ec);
      std::ofstream f(out / "config.toml", std::ios::trunc);
      f << "# The configuration this run started with (verdant server --resume reads it).\n" << *table << "\n";
      if (!f) return ExitFor(UnavailableError("cannot write " + (out / "config.toml").string()));
    }
    const std::string out_dir = setup->coordinator.out_dir;
    auto summary = cli::Serve(std::move(*setup), nullptr);
    if (!summary.ok()) return ExitFor(summary.status());
    auto status = summary->strings.find("status");
    if (status != summary->strings.end() && status->second != "ok") {
      std::printf("%s; outputs in %s\n", status->second.c_str(), out_dir.c_str());
      return kExitOk;
    }
    std::printf("done: final accuracy %.4f after %llu rounds; outputs in %s\n", summary->final_accuracy,
                static_cast<unsigned long long>(summary->rounds_completed), out_dir.c_str());
    return kExitOk;
  }
  return kExitUsage;
}

}  // namespace verdant
