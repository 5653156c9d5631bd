// Internal helpers shared by the subcommands (not a public header).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "verdant/client/dataset.h"
#include "verdant/core/options.h"
#include "verdant/core/status.h"
#include "verdant/server/coordinator.h"
#include "verdant/server/evaluator.h"
#include "verdant/transport/keys.h"
#include "verdant/transport/secure_channel.h"

namespace verdant::cli {

// Blocks SIGINT/SIGTERM in every thread and handles them on a dedicated
// thread that calls the current stop callback. Call first thing in main.
void InstallSignalHandling();
void SetStopCallback(std::function<void()> cb);
bool Interrupted();
// The signal that asked us to stop (SIGINT, SIGTERM), or 0.
int StopSignal();
// Called on SIGHUP (the coordinator reloads its allow-list).
void SetReloadCallback(std::function<void()> cb);

// Logging to stderr (and optionally a file) at the given level name (trace,
// debug, info, warn, error, critical, off), as "text" lines or one "json"
// object per line (verdant/core/logging.h). kInvalidArgument for unknown names.
Status ConfigureLogging(const std::string& level, const std::string& file, const std::string& format = "text");

// A LibTorch evaluator over the Fashion-MNIST test split.
Result<std::unique_ptr<Evaluator>> MakeFashionMnistEvaluator(const std::string& model,
                                                             const std::string& data_dir,
                                                             size_t max_examples);

// "Fashion-MNIST not found ... install dataset-fashion-mnist" when missing.
Status CheckDataDir(const std::string& data_dir);

// ---- security ----------------------------------------------------------------

// The coordinator's side of the secure channel.
struct ServerSecurity {
  bool insecure = false;   // plaintext (prints a warning)
  std::string key_dir;     // holds verdant.key; required unless insecure
  std::string allow_list;  // file of client public keys; empty = open mode
};
// The client's side.
struct ClientSecurity {
  bool insecure = false;
  std::string key_dir;     // this client's identity; created on first use
  std::string server_key;  // the coordinator's public key (vpk1... or a file)
};

// Prints the plaintext warning on stderr and in the log.
void WarnInsecure(const std::string& who);
// Responder factory; `allow_out` receives the allow-list (nullptr in open mode).
Result<HandshakerFactory> MakeServerHandshaker(const ServerSecurity& s, std::shared_ptr<AllowList>* allow_out);
// Initiator factory; loads (or creates, on first use) the client's key pair.
Result<HandshakerFactory> MakeClientHandshaker(const ClientSecurity& s);
// Loads the key pair in `dir`, or generates and saves one when `dir` has none.
Result<KeyPair> LoadOrCreateKeyPair(const std::filesystem::path& dir, bool* created = nullptr);

// ---- energy and carbon -------------------------------------------------------

struct CarbonSetup {
  std::string trace_dir;             // "" = find the shipped data/carbon
  std::string scope = "direct";      // Electricity Maps column: direct | lifecycle
  double constant_g_per_kwh = 0;     // > 0: one constant intensity for every zone instead of traces
  // JSON in the Carbon Aware SDK / Electricity Maps shape, from a file or
  // over HTTP(S) ("{zone}" in the URL: one request per zone). At most one of
  // constant, json_file, url and trace_dir may be set.
  std::string json_file;
  std::string url;
  std::string auth_header = "auth-token";  // header carrying the token (Electricity Maps)
  std::string auth_token;                  // the token itself (prefer auth_token_env)
  std::string auth_token_env;              // environment variable holding the token
  double http_timeout_s = 5;               // connect and read timeout
  double refresh_s = 900;                  // re-fetch after this
  std::string kind = "average";            // JSON/HTTP data: average or marginal
  std::string start;                 // grid time of round 1 (ISO 8601 UTC); "" = the wall clock
  double hours_per_round = 1.0;      // grid time between rounds when `start` is set
  double max_defer_h = 0;            // how long carbon-deferral may hold a round
  std::string profiles_file;         // extra device profiles (TOML)
  std::string default_profile = "phone-midrange";
};
// The shipped carbon traces: $VERDANT_CARBON_DIR, then <exe>/../data/carbon,
// <exe>/../share/verdant/data/carbon, ./data/carbon. kNotFound listing them.
Result<std::string> FindCarbonDir();
// Builds the intensity source and fills the coordinator's energy options.
Result<std::unique_ptr<energy::CarbonIntensitySource>> MakeCarbon(const CarbonSetup& c,
                                                                  CoordinatorEnergyOptions& out);

// The status/metrics endpoint (verdant/server/status_server.h); off unless enabled.
struct MetricsSetup {
  bool enabled = false;
  std::string address = "127.0.0.1";  // a public interface only when asked for
  uint16_t port = 0;                  // 0 = any free port (printed and logged)
};

struct ServeSetup {
  CoordinatorOptions coordinator;
  TcpServer::Options tcp;
  std::string strategy = "fedavg";
  OptionMap strategy_options;
  std::string selector = "random";
  OptionMap selector_options;
  std::string data_dir;          // for evaluation
  size_t eval_examples = 0;      // 0 = the whole 10k test set
  uint64_t init_seed = 1;
  bool progress = true;
  // SIGTERM lets the current round finish for this long, then abandons it
  // (Coordinator::Drain); SIGINT stops at once (Coordinator::Stop).
  Duration shutdown_grace = std::chrono::seconds(30);
  ServerSecurity security;
  CarbonSetup carbon;
  MetricsSetup metrics;
};

// Builds model, strategy, selector and evaluator (none for a synthetic:N
// model: nothing to evaluate), starts the TCP server,
// calls `on_listening(port)` (the demo starts its clients there), runs the
// coordinator and prints a progress line per round. Returns the summary.
Result<RunSummary> Serve(ServeSetup setup, const std::function<Status(uint16_t)>& on_listening);

std::string HumanBytes(uint64_t b);

}  // namespace verdant::cli
