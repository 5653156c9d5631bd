// verdant/server/selectors.h
//
// The built-in selection policies beyond "random" (selector.h), each a
// PolicySelector, so each also takes the shared eligibility and fairness
// options (min_battery, require_charging, require_unmetered, require_idle,
// max_share, starvation_rounds):
//   eligible          random among clients passing the eligibility rules
//   carbon            lowest expected gCO2e per useful sample now, across zones
//   carbon-deferral   carbon, but may wait for a cleaner forecast hour
//                     ("Let's Wait Awhile", Wiesner et al. 2021), bounded
//   oort              statistical x system utility (Lai et al., OSDI'21)
//   utility-per-gram  Oort utility per expected gCO2e
// Formulas, options and defaults: docs/selectors.md.
//
//   auto sel = CreateSelector("carbon-deferral",
//                             OptionMap{{"window_h", "6"}, {"min_saving", "0.1"}});
//   SelectionRequest req{.round = 3, .target = 4, .now = clock.Now(),
//                        .round_deadline = clock.Now() + std::chrono::hours(12),
//                        .intensity = &forecast};
//   auto d = (*sel)->Select(req, candidates, rng);   // d->defer_for or d->selected
//
// Thread-safety: not thread-safe (one round thread), like every selector.
// The free functions are pure.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"
#include "verdant/core/units.h"
#include "verdant/server/selector.h"

namespace verdant {

// ---- eligible --------------------------------------------------------------------------

// Uniformly random among the clients that pass the eligibility rules, which
// default to on here: min_battery = 20 (or charging / on grid or solar power).
// require_charging, require_unmetered and require_idle default to false.
class EligibleSelector final : public PolicySelector {
 public:
  // The defaults of the "eligible" registry entry.
  static PolicyOptions Defaults();
  explicit EligibleSelector(PolicyOptions options = Defaults())
      : PolicySelector(std::move(options)) {}
  std::string_view Name() const override { return "eligible"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override;
};

// ---- expected carbon of a client's round ----------------------------------------------------

// How to fill in what the coordinator did not know. Options:
// default_intensity, assumed_power_w, assumed_ms_per_sample.
struct CarbonEstimateOptions {
  // Intensity for a client whose zone nobody knows: the world average
  // (CodeCarbon / Green Algorithms, ENERGY.md).
  CarbonIntensity default_intensity = CarbonIntensity::GramsPerKwh(475.0);
  // Device power assumed when only a time is known: a phone SoC under
  // sustained training load, 2-5 W (ENERGY.md, "verify").
  Power assumed_power = Power::Watts(3.0);
  // Forward-pass time per sample when not even a time is known; training
  // time = 3 x samples x this / 1000 (FedScale/EAFL convention).
  double assumed_ms_per_sample = 1.0;
};

// Reads default_intensity (g/kWh, >= 0), assumed_power_w (> 0) and
// assumed_ms_per_sample (> 0). kInvalidArgument naming the key.
Result<CarbonEstimateOptions> ReadCarbonEstimateOptions(const OptionMap& options,
                                                        CarbonEstimateOptions defaults = {});

struct CarbonEstimate {
  Energy energy{};                   // expected device energy of the round
  CarbonIntensity intensity{};       // grid intensity used
  Emissions emissions{};             // energy x intensity
  double grams_per_sample = 0;       // emissions / num_examples; +inf with no examples
  std::string_view energy_basis;     // "expected", "round-time", "train-time" or "samples"
  std::string_view intensity_basis;  // "client", "source", "default" or "given"
};

// Expected device energy of one round, from the first known of:
//   expected_energy_joules                                   ("expected")
//   assumed_power x expected_round_seconds                   ("round-time")
//   assumed_power x last_train_seconds                       ("train-time")
//   assumed_power x 3 x num_examples x assumed_ms_per_sample / 1000  ("samples")
// The last makes the per-sample cost the same for every client, so the
// ranking falls back to grid intensity alone.
std::pair<Energy, std::string_view> ExpectedRoundEnergy(const ClientCandidate& c,
                                                        const CarbonEstimateOptions& options);
// The client's intensity now: intensity_g_per_kwh ("client"); else its zone
// in request.intensity at request.now ("source"); else default_intensity
// ("default": no zone, no source, or the source does not know the zone).
std::pair<CarbonIntensity, std::string_view> CurrentIntensity(const ClientCandidate& c,
                                                              const SelectionRequest& request,
                                                              const CarbonEstimateOptions& options);
// gCO2e = E [kWh] x I [g/kWh]; per useful sample = gCO2e / num_examples.
CarbonEstimate EstimateRoundCarbon(const ClientCandidate& c, const SelectionRequest& request,
                                   const CarbonEstimateOptions& options);
// The same at a given intensity (a forecast hour); intensity_basis "given".
CarbonEstimate EstimateRoundCarbon(const ClientCandidate& c, CarbonIntensity intensity,
                                   const CarbonEstimateOptions& options);

// ---- carbon ---------------------------------------------------------------------------------

// Options: the estimate options, and epsilon.
struct CarbonOptions {
  CarbonEstimateOptions estimate;
  // Each slot is, with this probability, given to a uniformly random
  // remaining client instead of the next-cleanest (exploration). [0, 1].
  double epsilon = 0.0;
};

// The `slots` clients with the lowest expected gCO2e per useful sample now,
// across zones; ties broken at random.
class CarbonSelector final : public PolicySelector {
 public:
  CarbonSelector(PolicyOptions policy, CarbonOptions options)
      : PolicySelector(std::move(policy)), options_(options) {}
  std::string_view Name() const override { return "carbon"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override;

 private:
  CarbonOptions options_;
};

// ---- carbon-deferral --------------------------------------------------------------------------

// Options: carbon's, and window_h, max_delay_h, min_saving.
struct DeferralOptions {
  CarbonOptions carbon;
  // How far ahead each decision looks at the forecast.
  Duration window = std::chrono::hours(6);
  // Longest a round may be held, counted from the first time it was asked
  // for (0 = never defer).
  Duration max_delay = std::chrono::hours(12);
  // Defer only when the best forecast hour is cleaner than now by more than
  // this fraction of now's gCO2e per useful sample. [0, 1).
  double min_saving = 0.10;
};

// "Let's Wait Awhile" (Wiesner et al., Middleware 2021) for FL rounds. Each
// call: rank as `carbon` does and cost the best selection now (gCO2e of the
// chosen and fixed clients / their samples). Then, for each forecast
// interval starting within (now, latest], where latest = min(first asked +
// max_delay, request.round_deadline, now + window), pick the best clients
// by their zones' forecast intensity and cost that selection. If the
// cheapest start saves more than min_saving, defer until it; otherwise
// select now. Assumes the same clients stay available; clients whose zone
// has no forecast are assumed flat. Without request.intensity it never
// defers. The first-asked time of the current round is kept (and saved).
class CarbonDeferralSelector final : public PolicySelector {
 public:
  CarbonDeferralSelector(PolicyOptions policy, DeferralOptions options)
      : PolicySelector(std::move(policy)), options_(options) {}
  std::string_view Name() const override { return "carbon-deferral"; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override;
  Result<std::string> SavePolicyState() const override;
  Status RestorePolicyState(std::string_view json) override;

 private:
  DeferralOptions options_;
  uint64_t pending_round_ = 0;  // the round whose first ask is recorded (0 = none)
  TimePoint pending_since_{};
};

// ---- oort ---------------------------------------------------------------------------------------

// Options: alpha, preferred_duration_s, duration_percentile, epsilon,
// epsilon_decay, epsilon_min, cutoff, clip_quantile. Defaults follow the
// paper and FedScale's reference implementation.
struct OortOptions {
  double alpha = 2.0;               // straggler penalty exponent (>= 0)
  double preferred_duration_s = 0;  // T; 0 = the duration_percentile of known durations
  double duration_percentile = 30;  // (0, 100]; FedScale's round_threshold
  double epsilon = 0.9;             // initial exploration fraction, [0, 1]
  double epsilon_decay = 0.98;      // per decision, (0, 1]
  // Floor of the decayed fraction, [0, epsilon]; the registry's default is
  // min(0.3, epsilon), so epsilon = 0 turns exploration off.
  double epsilon_min = 0.3;
  double cutoff = 0.95;        // admit utilities >= cutoff x the k-th best, (0, 1]
  double clip_quantile = 0.9;  // statistical utilities clipped at this quantile, (0, 1]
};

// Oort's temporal-uncertainty bonus sqrt(0.1 ln(round) / last_round): 0 when
// never selected (last_round 0) or round <= 1.
double OortStalenessBonus(uint64_t round, uint64_t last_round_selected);
// (T / t)^alpha when t > T > 0; 1 otherwise (or t unknown, <= 0).
double OortSpeedPenalty(double duration_s, double preferred_duration_s, double alpha);
// (statistical + OortStalenessBonus) x OortSpeedPenalty, `statistical` being
// the normalised statistical utility.
double OortUtility(double statistical, uint64_t round, uint64_t last_round_selected,
                   double duration_s, double preferred_duration_s, double alpha);

// Oort's training selector (Lai et al., "Oort: Efficient Federated Learning
// via Guided Participant Selection", OSDI 2021). Explored clients (known
// statistical utility or a completed round) are scored by OortUtility with
// the statistical utility |B| sqrt(mean loss^2) clipped at clip_quantile and
// divided by the clip value; (1 - eps) x slots of them are sampled, with
// probability proportional to the score, from those scoring at least cutoff
// x the k-th best. The other slots explore never-tried clients, sampled in
// proportion to num_examples x speed penalty. eps decays per decision:
// max(eps x epsilon_decay, epsilon_min). Remembers each client's last
// utility and duration by id (saved in the state), so a reconnecting client
// keeps its history.
class OortSelector : public PolicySelector {
 public:
  OortSelector(PolicyOptions policy, OortOptions options)
      : PolicySelector(std::move(policy)), options_(options), epsilon_(options.epsilon) {}
  std::string_view Name() const override { return "oort"; }
  // The exploration fraction the next decision will decay from.
  double epsilon() const { return epsilon_; }

 protected:
  Result<SelectionDecision> Choose(const SelectionRequest& request, const SelectionPool& pool,
                                   Rng& rng) override;
  Result<std::string> SavePolicyState() const override;
  Status RestorePolicyState(std::string_view json) override;
  // What a unit of utility costs for this client; scores are divided by it.
  // Oort: 1. `tag` names the cost in reasons ("" for none).
  virtual double Cost(const ClientCandidate& c, const SelectionRequest& request) const {
    return 1.0;
  }
  virtual std::string_view CostTag() const { return ""; }

 private:
  struct Memory {
    double utility = 0;     // last statistical utility seen (0 = unknown)
    double duration_s = 0;  // last round duration seen (0 = unknown)
  };
  OortOptions options_;
  double epsilon_;
  std::map<std::string, Memory, std::less<>> memory_;
};

// ---- utility-per-gram ------------------------------------------------------------------------

// Oort's utility divided by the client's expected gCO2e for the round
// (EstimateRoundCarbon, floored at 1e-9 g), for exploitation and
// exploration alike: most learning per gram. Options: Oort's and the carbon
// estimate options.
class UtilityPerGramSelector final : public OortSelector {
 public:
  UtilityPerGramSelector(PolicyOptions policy, OortOptions oort, CarbonEstimateOptions estimate)
      : OortSelector(std::move(policy), oort), estimate_(estimate) {}
  std::string_view Name() const override { return "utility-per-gram"; }

 protected:
  double Cost(const ClientCandidate& c, const SelectionRequest& request) const override;
  std::string_view CostTag() const override { return " per gCO2e"; }

 private:
  CarbonEstimateOptions estimate_;
};

// ---- registration
// ---------------------------------------------------------------------------------

// Registers random, eligible, carbon, carbon-deferral, oort and
// utility-per-gram. Every factory reads the shared options, then its own,
// and rejects unknown keys (kInvalidArgument naming them). kAlreadyExists if
// a name is taken.
Status RegisterBuiltinSelectors(Registry<ClientSelector>& registry);

}  // namespace verdant
