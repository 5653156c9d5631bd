// verdant/server/selector.h
//
// ClientSelector: picks which connected clients train in a round — or
// decides to wait for a better moment (carbon-aware deferral), bounded so
// that training always progresses. The coordinator gives it every connected
// client's latest state and history (sorted by client id, one entry per id),
// the carbon-intensity source and the round's deadline.
//   auto sel = CreateSelector("carbon", OptionMap{{"max_share", "0.5"}});
//   auto d = (*sel)->Select(request, candidates, rng);
//   if (d->defer_for) Sleep(*d->defer_for); else Train(d->selected);
//   (*sel)->OnRoundEnd(round, completed_ids, failed_ids);
//   double gini = (*sel)->Participation().gini;   // for summary.json
//
// PolicySelector is the base of every built-in: it applies the shared
// eligibility rules (battery, charging, unmetered network, idle) and
// fairness rules (a cap on any client's share of rounds, a floor that forces
// in a client passed over for too long), keeps participation history, saves
// and restores it, and leaves one decision to the subclass: which of the
// remaining clients to take (Choose). The built-in policies other than
// "random" are in selectors.h; docs/selectors.md describes them all and shows
// a one-file custom selector.
//
// Thread-safety: not thread-safe; the coordinator calls a selector from its
// round thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"
#include "verdant/energy/carbon.h"
#include "verdant/energy/device_state.h"

namespace verdant {

// What the coordinator knows about one connected, idle client. Every field
// past `client_id` may be left at its default ("unknown"); each selector
// documents what it does then.
struct ClientCandidate {
  std::string client_id;
  uint64_t num_examples = 0;
  std::string zone;            // grid zone reported by the client ("" = unknown)
  float battery_percent = -1;  // 0..100; -1 = unknown (no battery, or not reported)
  bool charging = false;
  bool unmetered_network = false;
  bool idle = false;
  // What powers the device now (kGrid / kSolar: plugged in; kBattery: not).
  energy::PowerSource power_source = energy::PowerSource::kUnknown;
  double battery_capacity_wh = 0;  // full-charge capacity, Wh; 0 = unknown / no battery
  // Grid intensity for this client now, gCO2e/kWh, as the coordinator read it
  // (its zone from the run's source, or the client's own reading). nullopt:
  // the selector looks the zone up in SelectionRequest::intensity itself.
  std::optional<double> intensity_g_per_kwh;
  // The coordinator's estimate of this client's device energy for one round,
  // joules, from its energy model; 0 = unknown.
  double expected_energy_joules = 0;
  // Expected wall time of one round for this client (download + train +
  // upload), seconds; 0 = unknown.
  double expected_round_seconds = 0;
  // History.
  uint64_t rounds_selected = 0;
  uint64_t rounds_completed = 0;
  uint64_t rounds_failed = 0;
  double last_train_seconds = 0;  // 0 = never trained
  double last_train_loss = 0;
  // Oort's statistical utility from the client's last report:
  // |B| * sqrt(mean over its samples of loss^2); 0 = unknown / never trained.
  double last_statistical_utility = 0;
  uint64_t last_round_selected = 0;  // 0 = never (rounds are numbered from 1)
};

struct SelectionRequest {
  uint64_t round = 0;
  size_t target = 0;  // how many clients to select (0 = all eligible candidates)
  TimePoint now;
  // Latest time this round may start. A deferral never reaches past it;
  // round_deadline <= now means "no deferral" (the default coordinator
  // setting), so training always progresses.
  TimePoint round_deadline;
  // Grid carbon intensity now and forecast per zone (may be a ForecastView).
  // Not owned; nullptr = none (carbon policies then use each candidate's
  // intensity_g_per_kwh or their default_intensity, and never defer).
  const energy::CarbonIntensitySource* intensity = nullptr;
};

struct SelectionDecision {
  std::vector<std::string> selected;
  // Set when the selector prefers to wait (then `selected` is empty); the
  // coordinator sleeps this long (clipped to the deadline) and asks again
  // for the same round.
  std::optional<Duration> defer_for;
  std::string reason;  // free text for logs and reports
};

// ---- participation statistics ----------------------------------------------------

// One client's participation as a selector saw it.
struct ClientParticipation {
  uint64_t selected = 0;             // rounds it was selected in
  uint64_t completed = 0;            // ... and reported back (OnRoundEnd)
  uint64_t failed = 0;               // ... and failed
  uint64_t first_seen_round = 0;     // first round it was a candidate
  uint64_t last_selected_round = 0;  // 0 = never
  friend bool operator==(const ClientParticipation&, const ClientParticipation&) = default;
};

struct ParticipationStats {
  uint64_t rounds = 0;  // selection decisions made (deferrals do not count)
  // Every client ever offered as a candidate, by id (never selected = 0).
  std::map<std::string, ClientParticipation> clients;
  double gini = 0;       // ParticipationGini of the clients' `selected` counts
  double max_share = 0;  // largest selected / rounds over the clients (0 if no rounds)
  uint64_t never_selected = 0;
};

// Gini coefficient of participation counts: sum_i sum_j |x_i - x_j| /
// (2 n^2 mean). 0 = everyone participated equally; (n-1)/n = one client did
// everything. [1,1,1,1] -> 0, [0,0,0,4] -> 0.75. 0 for no clients or all-zero
// counts.
double ParticipationGini(std::span<const uint64_t> counts);
// Stats (gini, max_share, never_selected) from per-client records.
ParticipationStats MakeParticipationStats(uint64_t rounds,
                                          std::map<std::string, ClientParticipation> clients);

// ---- the interface ----------------------------------------------------------------

class ClientSelector {
 public:
  virtual ~ClientSelector() = default;
  ClientSelector(const ClientSelector&) = delete;
  ClientSelector& operator=(const ClientSelector&) = delete;
  virtual std::string_view Name() const = 0;
  // The clients to train in `request.round` (distinct ids of `candidates`),
  // or a deferral. kFailedPrecondition when no candidate is usable (none
  // given, or none eligible: the message says why).
  virtual Result<SelectionDecision> Select(const SelectionRequest& request,
                                           std::span<const ClientCandidate> candidates,
                                           Rng& rng) = 0;
  // The round's outcome, to feed history-based policies.
  virtual void OnRoundEnd(uint64_t round, std::span<const std::string> completed,
                          std::span<const std::string> failed) {}
  // History (counts, utilities) for checkpoints. RestoreState of SaveState's
  // text, on a selector created with the same name and options, continues
  // the run exactly. kInvalidArgument: state of another selector; kDataLoss:
  // malformed state. An empty state restores nothing.
  virtual Result<std::string> SaveState() const { return std::string(); }
  virtual Status RestoreState(std::string_view state) { return OkStatus(); }
  // Participation history; empty for selectors that keep none.
  virtual ParticipationStats Participation() const { return {}; }

 protected:
  ClientSelector() = default;
};

// ---- shared rules: eligibility and fairness -------------------------------------------

// Who may train at all. Options: min_battery, require_charging,
// require_unmetered, require_idle.
struct EligibilityOptions {
  // Battery percent (0..100) a client on battery must have — at the end of
  // the round when battery_capacity_wh and expected_energy_joules are known,
  // else now. Clients that are charging or on grid/solar power pass; so do
  // clients with no battery reading that do not report running on battery
  // (servers). 0 = no battery rule.
  double min_battery_percent = 0;
  bool require_charging = false;   // charging, or power source grid/solar
  bool require_unmetered = false;  // on Wi-Fi / Ethernet
  bool require_idle = false;       // the user is not using the device
};

// Fairness across rounds. Options: max_share, starvation_rounds.
struct FairnessOptions {
  // A client selected in more than this share of the rounds so far is
  // skipped while enough other eligible clients remain to fill the round.
  // (0, 1]; 1 = no cap.
  double max_share = 1.0;
  // An eligible client not selected in this many consecutive rounds (counted
  // from its first appearance) is forced into the next round, longest-waiting
  // first. 0 = no floor.
  uint64_t starvation_rounds = 0;
};

struct PolicyOptions {
  EligibilityOptions eligibility;
  FairnessOptions fairness;
};

// Reads min_battery, require_charging, require_unmetered, require_idle,
// max_share and starvation_rounds from `options`, starting from `defaults`.
// kInvalidArgument naming the key for a malformed or out-of-range value.
// Does not call CheckAllUsed (the selector's factory does, after reading its
// own options).
Result<PolicyOptions> ReadPolicyOptions(const OptionMap& options, PolicyOptions defaults = {});

// Why `c` may not train under `rules` ("battery 12% below 20%", "not idle",
// ...), or "" when it may.
std::string IneligibleReason(const ClientCandidate& c, const EligibilityOptions& rules);

// What the shared rules leave to a policy.
struct SelectionPool {
  // Already in the round (starving clients forced in by the floor; or the
  // only clients under the share cap, when there are too few of them). For
  // context only — e.g. carbon-deferral counts their emissions.
  std::span<const ClientCandidate> fixed;
  // Eligible clients the policy chooses from.
  std::span<const ClientCandidate> open;
  // How many of `open` to choose (<= open.size()).
  size_t slots = 0;
};

// A ClientSelector made of the shared rules plus one policy (Choose).
// Select: drop duplicate ids; filter by eligibility; force in starving
// clients; hold back clients over the share cap; Choose the rest; record
// history (every non-deferred decision is one round; `selected` lists the
// fixed clients first, then the policy's). Subclasses implement Name() and
// Choose().
class PolicySelector : public ClientSelector {
 public:
  Result<SelectionDecision> Select(const SelectionRequest& request,
                                   std::span<const ClientCandidate> candidates, Rng& rng) final;
  void OnRoundEnd(uint64_t round, std::span<const std::string> completed,
                  std::span<const std::string> failed) final;
  // JSON: {"selector", "version", "rounds", "clients": {id: counts}, "policy"}.
  Result<std::string> SaveState() const final;
  Status RestoreState(std::string_view state) final;
  ParticipationStats Participation() const final;
  const PolicyOptions& policy_options() const { return options_; }

 protected:
  explicit PolicySelector(PolicyOptions options) : options_(std::move(options)) {}
  // Pick up to pool.slots distinct clients of pool.open, or set defer_for
  // (> 0) to wait. An error aborts the selection (nothing is recorded).
  // Selecting an id not in pool.open, twice, or more than `slots` is
  // kInternal.
  virtual Result<SelectionDecision> Choose(const SelectionRequest& request,
                                           const SelectionPool& pool, Rng& rng) = 0;
  // The round's outcome (after the base has counted it). Default: nothing.
  virtual void OnOutcome(uint64_t round, std::span<const std::string> completed,
                         std::span<const std::string> failed) {}
  // The policy's own history as JSON text ("" = none), and its restore
  // (kDataLoss when malformed). Embedded in SaveState's document.
  virtual Result<std::string> SavePolicyState() const { return std::string(); }
  virtual Status RestorePolicyState(std::string_view json) { return OkStatus(); }
  // What the base recorded for a client, or nullptr if never seen.
  const ClientParticipation* History(std::string_view client_id) const;
  // Selection decisions made so far (deferrals excluded).
  uint64_t rounds_decided() const { return rounds_; }

 private:
  PolicyOptions options_;
  uint64_t rounds_ = 0;
  std::map<std::string, ClientParticipation, std::less<>> clients_;
};

// Uniformly random without replacement (after the shared rules, which are
// all off by default: then exactly the historical behaviour — ids sorted,
// shuffled with `rng`, the first `target` taken).
class RandomSelector final : public PolicySelector {
 public:
  explicit RandomSelector(PolicyOptions options = {}) : PolicySelector(std::move(options)) {}
  std::string_view Name() const override { return "random"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override;
};

// The selector registry, with the built-ins registered: random, eligible,
// carbon, carbon-deferral, oort, utility-per-gram (selectors.h).
Registry<ClientSelector>& SelectorRegistry();
// kInvalidArgument listing the registered names for an unknown name, or
// naming the key for an unknown or malformed option.
Result<std::unique_ptr<ClientSelector>> CreateSelector(const std::string& name,
                                                       const OptionMap& options);

}  // namespace verdant
