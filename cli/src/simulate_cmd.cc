// `verdant fleet generate` and `verdant simulate` (docs/simulator.md).
#include "simulate_cmd.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <toml++/toml.h>

#include "common.h"
#include "verdant/simulations/fleet.h"
#include "verdant/simulations/fleet_generator.h"
#include "verdant/simulations/report.h"
#include "verdant/simulations/simulator.h"

namespace verdant::cli {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void Finish(const Status& st) {
  if (st.ok()) throw CLI::Success();
  std::fprintf(stderr, "verdant: %s\n", st.ToString().c_str());
  const int code = st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound ? 2
                   : st.code() == StatusCode::kCancelled                                             ? 130
                                                                                                     : 1;
  throw CLI::RuntimeError(code);
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t c = s.find(',', start);
    if (c == std::string::npos) c = s.size();
    std::string item = s.substr(start, c - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) out.push_back(item);
    start = c + 1;
  }
  return out;
}

// "10m", "30s", "2h", "1d", "1.5h" or plain seconds.
Result<Duration> ParseDurationText(const std::string& text, const std::string& what) {
  if (text.empty()) return InvalidArgumentError(what + ": empty duration");
  double mult = 1;
  std::string num = text;
  switch (text.back()) {
    case 's': num.pop_back(); break;
    case 'm': mult = 60; num.pop_back(); break;
    case 'h': mult = 3600; num.pop_back(); break;
    case 'd': mult = 86400; num.pop_back(); break;
    default: break;
  }
  char* end = nullptr;
  const double v = std::strtod(num.c_str(), &end);
  if (num.empty() || end != num.c_str() + num.size() || !(v >= 0) || !std::isfinite(v)) {
    return InvalidArgumentError(what + ": '" + text + "' is not a duration (e.g. 30s, 10m, 2h, 1d)");
  }
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(v * mult));
}

// ---- fleet generate --------------------------------------------------------------

struct GenerateArgs {
  uint64_t devices = 1000;
  uint32_t days = 2;
  std::string zones = "US-CISO,US-ERCO,US-PJM,US-MISO,ES,NO";
  uint64_t seed = 1;
  std::string out;
  std::string start = "2022-06-01T00:00:00Z";
  std::string device_data;
};

Status RunGenerate(const GenerateArgs& a) {
  sim::FleetGeneratorOptions o;
  o.devices = a.devices;
  o.days = a.days;
  o.zones = SplitList(a.zones);
  o.seed = a.seed;
  VERDANT_ASSIGN_OR_RETURN(o.start, energy::ParseUtcTimestamp(a.start));
  fs::path data = a.device_data;
  if (data.empty()) {
    VERDANT_ASSIGN_OR_RETURN(data, sim::FindDeviceDataDir());
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Straight to the files: a 10^6-device week does not fit in memory as a Fleet.
  VERDANT_ASSIGN_OR_RETURN(sim::GeneratedFleetFiles f, sim::GenerateFleetFiles(o, data, a.out));
  std::printf("fleet: %llu devices, %llu events over %u days in %s (%.2f s; devices.csv %.1f MB, events.csv %.1f MB)\n",
              static_cast<unsigned long long>(f.devices), static_cast<unsigned long long>(f.events), a.days,
              a.out.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              static_cast<double>(f.devices_bytes) / 1e6, static_cast<double>(f.events_bytes) / 1e6);
  return OkStatus();
}

// ---- simulate --------------------------------------------------------------------

struct SimulateArgs {
  std::string config;
  std::string fleet;
  std::string selector = "random";
  std::vector<std::string> selector_opts;
  std::string strategy = "fedavg";
  size_t clients_per_round = 10;
  std::string round_interval = "10m";
  uint32_t days = 1;
  uint64_t rounds = 0;
  std::string codec = "identity";
  std::string downlink = "identity";
  std::string model = "mlp";
  uint64_t seed = 1;
  std::string out;
  std::string compare;
  std::string round_timeout = "30m";
  std::string max_defer = "12h";
  double battery_floor = 5.0;
  std::string start;
  std::string carbon_dir;
  std::string carbon_scope = "direct";
  double constant_intensity = 0;
  std::string profiles_file;
  bool train = false;
  std::string data_dir;
  std::string partition = "dirichlet:0.5";
  size_t eval_examples = 2000;
  uint32_t eval_every = 1;
  bool progress = false, no_progress = false;
  std::string log_level = "error";
};

// The progress bar (stderr): rounds done, virtual time, elapsed, ETA.
class Progress {
 public:
  Progress(bool enabled, std::string label) : enabled_(enabled), label_(std::move(label)) {}
  void Update(uint64_t done, uint64_t total, double virtual_h) {
    if (!enabled_ || total == 0) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (done < total && elapsed - last_ < 0.2) return;
    last_ = elapsed;
    const int width = 30;
    const int filled = static_cast<int>(static_cast<double>(width) * static_cast<double>(done) / static_cast<double>(total));
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - done) : 0;
    std::fprintf(stderr, "\r%s [%s] %3d%% round %llu/%llu | virtual %.1f h | %.1f s elapsed, ETA %.1f s ",
                 label_.c_str(), bar.c_str(), static_cast<int>(100 * done / total),
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total), virtual_h, elapsed,
                 eta);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::string label_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  double last_ = -1;
};

// Fills `a` from the TOML file for every setting not given on the command
// line. Keys (docs/simulator.md): [simulation] fleet, selector, strategy,
// clients_per_round, round_interval, days, rounds, codec, downlink, model,
// seed, out, compare, round_timeout, max_defer, battery_floor, start;
// [selector] and [strategy] options; [carbon] trace_dir, scope,
// constant_g_per_kwh, profiles_file.
Status ApplyToml(const std::string& path, SimulateArgs& a,
                 const std::function<bool(const std::string&)>& given, sim::SimulationOptions& so) {
  toml::table cfg;
  try {
    cfg = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return InvalidArgumentError(path + ":" + std::to_string(e.source().begin.line) + ":" +
                                std::to_string(e.source().begin.column) + ": " + std::string(e.description()));
  }
  for (const auto& [k, v] : cfg) {
    const std::string key(k.str());
    if (key != "simulation" && key != "selector" && key != "strategy" && key != "carbon") {
      return InvalidArgumentError(path + ": unknown table [" + key + "] (simulation, selector, strategy, carbon)");
    }
  }
  auto where = [&](const std::string& t, const std::string& k) { return path + ": " + t + "." + k; };
  auto str = [&](const toml::table& t, const std::string& tname, const std::string& key, const std::string& flag,
                 std::string& out) -> Status {
    auto n = t[key];
    if (!n) return OkStatus();
    if (auto v = n.value<std::string>()) {
      if (!given(flag)) out = *v;
      return OkStatus();
    }
    return InvalidArgumentError(where(tname, key) + " must be a string");
  };
  auto num = [&](const toml::table& t, const std::string& tname, const std::string& key, const std::string& flag,
                 auto& out) -> Status {
    auto n = t[key];
    if (!n) return OkStatus();
    using T = std::decay_t<decltype(out)>;
    if constexpr (std::is_floating_point_v<T>) {
      if (auto v = n.value<double>()) {
        if (!given(flag)) out = *v;
        return OkStatus();
      }
    } else {
      if (auto v = n.value<int64_t>();
          v && *v >= 0 && static_cast<uint64_t>(*v) <= std::numeric_limits<T>::max()) {
        if (!given(flag)) out = static_cast<T>(*v);
        return OkStatus();
      }
    }
    return InvalidArgumentError(where(tname, key) + " must be a non-negative number");
  };
  if (const auto* s = cfg["simulation"].as_table()) {
    static const char* kKeys[] = {"fleet", "selector", "strategy", "clients_per_round", "round_interval", "days",
                                  "rounds", "codec", "downlink", "model", "seed", "out", "compare", "round_timeout",
                                  "max_defer", "battery_floor", "start", "train", "data_dir",
                                  "partition", "eval_examples", "eval_every"};
    for (const auto& [k, v] : *s) {
      if (std::find(std::begin(kKeys), std::end(kKeys), std::string(k.str())) == std::end(kKeys)) {
        return InvalidArgumentError(path + ": unknown key '" + std::string(k.str()) + "' in [simulation]");
      }
    }
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "fleet", "--fleet", a.fleet));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "selector", "--selector", a.selector));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "strategy", "--strategy", a.strategy));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "clients_per_round", "--clients-per-round", a.clients_per_round));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "round_interval", "--round-interval", a.round_interval));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "days", "--days", a.days));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "rounds", "--rounds", a.rounds));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "codec", "--codec", a.codec));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "downlink", "--downlink", a.downlink));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "model", "--model", a.model));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "seed", "--seed", a.seed));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "out", "--out", a.out));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "round_timeout", "--round-timeout", a.round_timeout));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "max_defer", "--max-defer", a.max_defer));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "battery_floor", "--battery-floor", a.battery_floor));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "start", "--start", a.start));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "data_dir", "--data-dir", a.data_dir));
    VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "partition", "--partition", a.partition));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "eval_examples", "--eval-examples", a.eval_examples));
    VERDANT_RETURN_IF_ERROR(num(*s, "simulation", "eval_every", "--eval-every", a.eval_every));
    if (auto n = (*s)["train"]) {
      auto v = n.value<bool>();
      if (!v) return InvalidArgumentError(where("simulation", "train") + " must be true or false");
      if (!given("--train")) a.train = *v;
    }
    if (auto n = (*s)["compare"]) {
      if (const auto* arr = n.as_array()) {
        std::string list;
        for (const auto& e : *arr) {
          auto v = e.value<std::string>();
          if (!v) return InvalidArgumentError(where("simulation", "compare") + " must be an array of strings");
          list += (list.empty() ? "" : ",") + *v;
        }
        if (!given("--compare")) a.compare = list;
      } else {
        VERDANT_RETURN_IF_ERROR(str(*s, "simulation", "compare", "--compare", a.compare));
      }
    }
  }
  auto options_of = [&](const char* table, OptionMap& out) -> Status {
    if (const auto* t = cfg[table].as_table()) {
      for (const auto& [k, v] : *t) {
        const std::string key(k.str());
        if (auto s = v.value<std::string>()) out.Set(key, *s);
        else if (auto i = v.value<int64_t>()) out.Set(key, std::to_string(*i));
        else if (auto d = v.value<double>()) out.Set(key, std::to_string(*d));
        else if (auto b = v.value<bool>()) out.Set(key, *b ? "true" : "false");
        else return InvalidArgumentError(where(table, key) + " must be a string, number or boolean");
      }
    }
    return OkStatus();
  };
  VERDANT_RETURN_IF_ERROR(options_of("selector", so.selector_options));
  VERDANT_RETURN_IF_ERROR(options_of("strategy", so.strategy_options));
  if (const auto* c = cfg["carbon"].as_table()) {
    for (const auto& [k, v] : *c) {
      const std::string key(k.str());
      if (key != "trace_dir" && key != "scope" && key != "constant_g_per_kwh" && key != "profiles_file") {
        return InvalidArgumentError(path + ": unknown key '" + key +
                                    "' in [carbon] (trace_dir, scope, constant_g_per_kwh, profiles_file)");
      }
    }
    VERDANT_RETURN_IF_ERROR(str(*c, "carbon", "trace_dir", "--carbon-dir", a.carbon_dir));
    VERDANT_RETURN_IF_ERROR(str(*c, "carbon", "scope", "--carbon-scope", a.carbon_scope));
    VERDANT_RETURN_IF_ERROR(num(*c, "carbon", "constant_g_per_kwh", "--constant-intensity", a.constant_intensity));
    VERDANT_RETURN_IF_ERROR(str(*c, "carbon", "profiles_file", "--profiles", a.profiles_file));
  }
  return OkStatus();
}

Status RunSimulate(SimulateArgs a, const std::function<bool(const std::string&)>& given) {
  VERDANT_RETURN_IF_ERROR(ConfigureLogging(a.log_level, ""));
  sim::SimulationOptions so;
  if (!a.config.empty()) VERDANT_RETURN_IF_ERROR(ApplyToml(a.config, a, given, so));
  for (const auto& kv : a.selector_opts) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) return InvalidArgumentError("--selector-opt wants KEY=VALUE, got '" + kv + "'");
    so.selector_options.Set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  if (a.fleet.empty()) return InvalidArgumentError("simulate: give --fleet DIR (or fleet in the config)");
  if (a.out.empty()) return InvalidArgumentError("simulate: give --out DIR (or out in the config)");
  VERDANT_ASSIGN_OR_RETURN(so.round_interval, ParseDurationText(a.round_interval, "--round-interval"));
  VERDANT_ASSIGN_OR_RETURN(so.round_timeout, ParseDurationText(a.round_timeout, "--round-timeout"));
  VERDANT_ASSIGN_OR_RETURN(so.max_defer, ParseDurationText(a.max_defer, "--max-defer"));
  if (!a.start.empty()) {
    VERDANT_ASSIGN_OR_RETURN(TimePoint t, energy::ParseUtcTimestamp(a.start));
    so.start = t;
  }
  so.strategy = a.strategy;
  so.clients_per_round = a.clients_per_round;
  so.days = a.days;
  so.rounds = a.rounds;
  so.model = a.model;
  so.uplink_codec = a.codec;
  so.downlink_codec = a.downlink;
  so.seed = a.seed;
  so.battery_floor_percent = a.battery_floor;
  so.train = a.train;
  so.data_dir = a.data_dir;
  so.partition = a.partition;
  so.eval_examples = a.eval_examples;
  so.eval_every = a.eval_every;
  CarbonSetup cs;
  cs.trace_dir = a.carbon_dir;
  cs.scope = a.carbon_scope;
  cs.constant_g_per_kwh = a.constant_intensity;
  cs.profiles_file = a.profiles_file;
  CoordinatorEnergyOptions energy_out;
  VERDANT_ASSIGN_OR_RETURN(auto intensity, MakeCarbon(cs, energy_out));
  so.intensity = intensity.get();
  so.profiles = energy_out.profiles;

  const auto t_load = std::chrono::steady_clock::now();
  VERDANT_ASSIGN_OR_RETURN(sim::Fleet fleet, sim::LoadFleet(a.fleet));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::printf("fleet %s: %zu devices, %zu events (loaded in %.2f s)\n", a.fleet.c_str(), fleet.devices.size(),
              fleet.events.size(), load_s);

  // Policies: --compare LIST (each SELECTOR or SELECTOR/CODEC), else the one run.
  struct Plan {
    std::string label, selector, codec;
    fs::path dir;
  };
  std::vector<Plan> plans;
  if (a.compare.empty()) {
    plans.push_back({a.selector, a.selector, a.codec, fs::path(a.out)});
  } else {
    for (const auto& item : SplitList(a.compare)) {
      const auto slash = item.find('/');
      Plan p;
      p.label = item;
      p.selector = item.substr(0, slash);
      p.codec = slash == std::string::npos ? a.codec : item.substr(slash + 1);
      std::string folder = item;
      for (char& c : folder) {
        if (c == '/' || c == ':' || c == '+') c = '_';
      }
      p.dir = fs::path(a.out) / folder;
      plans.push_back(std::move(p));
    }
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool show = a.progress || (tty && !a.no_progress);
  std::vector<sim::ReportRun> runs;
  std::vector<sim::RunTotals> totals;
  for (const auto& p : plans) {
    sim::SimulationOptions o = so;
    o.selector = p.selector;
    o.uplink_codec = p.codec;
    o.out_dir = p.dir.string();
    o.run_id = p.label;
    // --selector-opt and [selector] apply to every policy of a comparison
    // (a key a selector does not know is an error, as in a real run).
    Progress bar(show, p.label);
    const TimePoint t0 = o.start.value_or(fleet.Start());
    o.on_round = [&](const RoundRecord& rec, uint64_t total, TimePoint now) {
      bar.Update(rec.round, total, std::chrono::duration<double>(now - t0).count() / 3600.0);
    };
    VERDANT_ASSIGN_OR_RETURN(sim::SimulationResult r, sim::RunSimulation(fleet, o));
    const auto& n = r.summary.numbers;
    auto get = [&](const char* k) {
      auto it = n.find(k);
      return it == n.end() ? 0.0 : it->second;
    };
    std::printf(
        "%s: %llu rounds, %llu client-rounds (%llu completed; dropped: %llu unavailable, %llu battery, %llu "
        "deadline), %.1f kJ, %.3f gCO2e operational + %.3f gCO2e embodied, %.2f virtual h, %.2f s wall\n",
        p.label.c_str(), static_cast<unsigned long long>(r.rounds), static_cast<unsigned long long>(r.client_rounds),
        static_cast<unsigned long long>(r.completed), static_cast<unsigned long long>(r.dropouts_unavailable),
        static_cast<unsigned long long>(r.dropouts_battery), static_cast<unsigned long long>(r.dropouts_deadline),
        get("energy_joules") / 1e3, get("emissions_g"), get("embodied_g"), r.virtual_seconds / 3600.0,
        r.wall_seconds);
    runs.push_back({p.label, p.dir});
    VERDANT_ASSIGN_OR_RETURN(sim::RunTotals t, sim::ReadRunTotals(runs.back()));
    totals.push_back(t);
  }
  const fs::path out(a.out);
  VERDANT_RETURN_IF_ERROR(sim::WriteComparisonCsv(totals, out / "comparison.csv"));
  VERDANT_RETURN_IF_ERROR(sim::WriteHtmlReport(runs, intensity.get(), out / "report.html"));
  if (plans.size() > 1) {
    std::printf("\n%-24s %10s %10s %12s %12s %12s %10s\n", "policy", "completed", "failed", "operational_g",
                "embodied_g", "total_g", "virtual_h");
    for (const auto& t : totals) {
      std::printf("%-24s %10llu %10llu %12.3f %12.3f %12.3f %10.2f\n", t.label.c_str(),
                  static_cast<unsigned long long>(t.completed), static_cast<unsigned long long>(t.failed),
                  t.operational_g, t.embodied_g, t.operational_g + t.embodied_g, t.virtual_hours);
    }
  }
  std::printf("outputs in %s (report.html, comparison.csv)\n", a.out.c_str());
  return OkStatus();
}

}  // namespace

void AddSimulateCommands(CLI::App& app) {
  // fleet generate
  auto* fleet = app.add_subcommand("fleet", "Fleet traces for the simulator");
  fleet->require_subcommand(1);
  auto g = std::make_shared<GenerateArgs>();
  auto* gen = fleet->add_subcommand("generate", "Generate a synthetic phone fleet (devices.csv, events.csv)");
  gen->add_option("--devices", g->devices, "number of devices")->capture_default_str();
  gen->add_option("--days", g->days, "days of events")->capture_default_str();
  gen->add_option("--zones", g->zones, "grid zones, comma-separated (ZONE or ZONE@+H for an unknown zone)")
      ->capture_default_str();
  gen->add_option("--seed", g->seed, "seed: the same seed gives the same bytes")->capture_default_str();
  gen->add_option("--out", g->out, "output folder")->required();
  gen->add_option("--start", g->start, "first instant (ISO 8601 UTC)")->capture_default_str();
  gen->add_option("--device-data", g->device_data, "folder with the FLASH json files (default: shipped data/devices)");
  gen->callback([g] { Finish(RunGenerate(*g)); });

  // simulate
  auto s = std::make_shared<SimulateArgs>();
  auto* sim = app.add_subcommand("simulate", "Replay a fleet through the real coordinator on virtual time");
  sim->add_option("--config", s->config, "TOML file with any of the settings below (flags win)");
  sim->add_option("--fleet", s->fleet, "fleet folder (devices.csv, events.csv)");
  sim->add_option("--selector", s->selector, "client selector")->capture_default_str();
  sim->add_option("--selector-opt", s->selector_opts, "selector option KEY=VALUE; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sim->add_option("--strategy", s->strategy, "aggregation strategy")->capture_default_str();
  sim->add_option("--clients-per-round", s->clients_per_round, "K")->capture_default_str();
  sim->add_option("--round-interval", s->round_interval, "virtual time between round starts")->capture_default_str();
  sim->add_option("--days", s->days, "virtual days (rounds = days x 24 h / interval)")->capture_default_str();
  sim->add_option("--rounds", s->rounds, "number of rounds (overrides --days)");
  sim->add_option("--codec", s->codec, "uplink codec")->capture_default_str();
  sim->add_option("--downlink", s->downlink, "downlink: identity, fp16 or delta:<codec>")->capture_default_str();
  sim->add_option("--model", s->model, "model whose size travels: mlp, cnn or synthetic:N")->capture_default_str();
  sim->add_option("--seed", s->seed, "seed for selection, codecs and the model")->capture_default_str();
  sim->add_option("--out", s->out, "output folder");
  sim->add_option("--compare", s->compare,
                  "run each of these policies on the same fleet and seed: SELECTOR or SELECTOR/CODEC, comma-separated");
  sim->add_option("--round-timeout", s->round_timeout, "virtual per-round deadline")->capture_default_str();
  sim->add_option("--max-defer", s->max_defer, "how long carbon-deferral may hold a round")->capture_default_str();
  sim->add_option("--battery-floor", s->battery_floor,
                  "battery %% below which a device drops out mid-round (when the selector sets no min_battery)")
      ->capture_default_str();
  sim->add_option("--start", s->start, "virtual start (ISO 8601 UTC; default: the fleet's first event)");
  sim->add_option("--carbon-dir", s->carbon_dir, "hourly carbon traces (default: shipped data/carbon)");
  sim->add_option("--carbon-scope", s->carbon_scope, "Electricity Maps column: direct or lifecycle")
      ->capture_default_str();
  sim->add_option("--constant-intensity", s->constant_intensity, "one intensity for every zone, gCO2e/kWh");
  sim->add_option("--profiles", s->profiles_file, "extra device profiles (TOML) for devices.csv's profile column");
  sim->add_flag("--train", s->train,
                "real LibTorch training on each device's shard of Fashion-MNIST, with accuracy (default: energy-only)");
  sim->add_option("--data-dir", s->data_dir, "with --train: Fashion-MNIST IDX folder");
  sim->add_option("--partition", s->partition, "with --train: iid or dirichlet:ALPHA over the devices")
      ->capture_default_str();
  sim->add_option("--eval-examples", s->eval_examples, "with --train: test examples per evaluation (0 = all)")
      ->capture_default_str();
  sim->add_option("--eval-every", s->eval_every,
                  "with --train: evaluate every N-th round and the last one (0 = never)")
      ->capture_default_str();
  sim->add_flag("--progress", s->progress, "show the progress bar even when stderr is not a terminal");
  sim->add_flag("--no-progress", s->no_progress, "never show the progress bar");
  sim->add_option("--log-level", s->log_level, "log level")->capture_default_str();
  sim->callback([s, sim] {
    auto given = [sim](const std::string& flag) { return sim->count(flag) > 0; };
    Finish(RunSimulate(*s, given));
  });
}

}  // namespace verdant::cli
