// Oort (Lai et al., OSDI'21) and the carbon-weighted utility-per-gram policy.
#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "selector_internal.h"
#include "verdant/server/selectors.h"

namespace verdant {

using nlohmann::json;
using selector_internal::Num;
using selector_internal::ShuffledOrder;
using selector_internal::WeightedSample;

double OortStalenessBonus(uint64_t round, uint64_t last_round_selected) {
  if (last_round_selected == 0 || round <= 1) return 0.0;
  return std::sqrt(0.1 * std::log(static_cast<double>(round)) /
                   static_cast<double>(last_round_selected));
}

double OortSpeedPenalty(double duration_s, double preferred_duration_s, double alpha) {
  if (!(duration_s > 0) || !(preferred_duration_s > 0) || !std::isfinite(preferred_duration_s) ||
      duration_s <= preferred_duration_s) {
    return 1.0;
  }
  return std::pow(preferred_duration_s / duration_s, alpha);
}

double OortUtility(double statistical, uint64_t round, uint64_t last_round_selected,
                   double duration_s, double preferred_duration_s, double alpha) {
  return (statistical + OortStalenessBonus(round, last_round_selected)) *
         OortSpeedPenalty(duration_s, preferred_duration_s, alpha);
}

namespace {

double RoundSeconds(const ClientCandidate& c) {
  if (c.expected_round_seconds > 0) return c.expected_round_seconds;
  if (c.last_train_seconds > 0) return c.last_train_seconds;
  return 0.0;
}

// The q-quantile (0 < q <= 1) of non-empty `v` as FedScale takes it: the
// element at index min(floor(n q), n - 1) of the sorted values.
double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(static_cast<size_t>(std::floor(static_cast<double>(v.size()) * q)), v.size() - 1);
  return v[i];
}

}  // namespace

Result<SelectionDecision> OortSelector::Choose(const SelectionRequest& request,
                                               const SelectionPool& pool, Rng& rng) {
  // What the coordinator tells us now overrides what we remembered.
  auto remember = [&](const ClientCandidate& c) {
    Memory& m = memory_[c.client_id];
    if (c.last_statistical_utility > 0) m.utility = c.last_statistical_utility;
    if (const double t = RoundSeconds(c); t > 0) m.duration_s = t;
  };
  for (const auto& c : pool.fixed) remember(c);
  for (const auto& c : pool.open) remember(c);
  epsilon_ = std::max(epsilon_ * options_.epsilon_decay, options_.epsilon_min);

  // Preferred round duration T.
  double preferred = options_.preferred_duration_s;
  if (preferred <= 0) {
    std::vector<double> durations;
    for (const auto& [id, m] : memory_) {
      if (m.duration_s > 0) durations.push_back(m.duration_s);
    }
    preferred = durations.empty()
                    ? std::numeric_limits<double>::infinity()
                    : Quantile(std::move(durations), options_.duration_percentile / 100.0);
  }

  // Explored (utility known or a round completed) vs never tried.
  std::vector<size_t> explored, unexplored;
  std::vector<double> raw_utility;
  for (size_t i : ShuffledOrder(pool.open, rng)) {
    const ClientCandidate& c = pool.open[i];
    const Memory& m = memory_.at(c.client_id);
    const ClientParticipation* h = History(c.client_id);
    const bool tried =
        m.utility > 0 || c.rounds_completed > 0 || (h != nullptr && h->completed > 0);
    if (tried) {
      explored.push_back(i);
      if (m.utility > 0) raw_utility.push_back(m.utility);
    } else {
      unexplored.push_back(i);
    }
  }
  const double clip = raw_utility.empty() ? 0.0 : Quantile(raw_utility, options_.clip_quantile);

  // Scores: Oort utility per unit of cost.
  std::vector<double> score(pool.open.size(), 0.0);
  for (size_t i : explored) {
    const ClientCandidate& c = pool.open[i];
    const Memory& m = memory_.at(c.client_id);
    const double stat = clip > 0 ? std::min(m.utility, clip) / clip : 0.0;
    const ClientParticipation* h = History(c.client_id);
    const uint64_t last =
        std::max(c.last_round_selected, h != nullptr ? h->last_selected_round : uint64_t{0});
    score[i] = OortUtility(stat, request.round, last, m.duration_s, preferred, options_.alpha) /
               std::max(Cost(c, request), 1e-12);
  }

  // Slots: (1 - eps) x slots exploit, the rest explore; either side fills
  // in when the other runs out of clients.
  size_t exploit_len =
      std::min(static_cast<size_t>(std::floor(static_cast<double>(pool.slots) * (1.0 - epsilon_))),
               explored.size());
  const size_t explore_len = std::min(unexplored.size(), pool.slots - exploit_len);
  exploit_len = std::min(pool.slots - explore_len, explored.size());

  SelectionDecision d;
  // Exploitation: admit the clients scoring >= cutoff x the exploit_len-th
  // best, sample exploit_len of them in proportion to their score.
  size_t admitted_count = 0;
  if (exploit_len > 0) {
    std::vector<size_t> by_score = explored;
    std::stable_sort(by_score.begin(), by_score.end(),
                     [&](size_t a, size_t b) { return score[a] > score[b]; });
    const double cut = options_.cutoff * score[by_score[exploit_len - 1]];
    std::vector<size_t> admitted;
    std::vector<double> weights;
    for (size_t j = 0; j < by_score.size(); ++j) {
      if (j >= exploit_len && score[by_score[j]] < cut) break;
      admitted.push_back(by_score[j]);
      weights.push_back(score[by_score[j]]);
    }
    admitted_count = admitted.size();
    for (size_t j : WeightedSample(weights, exploit_len, rng))
      d.selected.push_back(pool.open[admitted[j]].client_id);
  }
  // Exploration: never-tried clients, in proportion to data size x speed
  // penalty per unit of cost.
  if (explore_len > 0) {
    std::vector<double> weights;
    for (size_t i : unexplored) {
      const ClientCandidate& c = pool.open[i];
      weights.push_back(
          static_cast<double>(c.num_examples) *
          OortSpeedPenalty(memory_.at(c.client_id).duration_s, preferred, options_.alpha) /
          std::max(Cost(c, request), 1e-12));
    }
    for (size_t j : WeightedSample(weights, explore_len, rng))
      d.selected.push_back(pool.open[unexplored[j]].client_id);
  }
  d.reason = std::string(Name()) + ": " + std::to_string(exploit_len) + " by utility" +
             std::string(CostTag()) + " (from " + std::to_string(admitted_count) + " admitted of " +
             std::to_string(explored.size()) + " explored), " + std::to_string(explore_len) +
             " exploring of " + std::to_string(unexplored.size()) + " untried; epsilon " +
             Num(epsilon_) + ", preferred duration " + Num(preferred) + " s";
  return d;
}

Result<std::string> OortSelector::SavePolicyState() const {
  json clients = json::object();
  for (const auto& [id, m] : memory_)
    clients[id] = json{{"utility", m.utility}, {"duration_s", m.duration_s}};
  json j{{"epsilon", epsilon_}, {"clients", std::move(clients)}};
  return j.dump();
}

Status OortSelector::RestorePolicyState(std::string_view text) {
  if (text.empty()) {
    epsilon_ = options_.epsilon;
    memory_.clear();
    return OkStatus();
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataLossError("oort state is not JSON");
  decltype(memory_) memory;
  double epsilon = 0;
  try {
    epsilon = j.at("epsilon").get<double>();
    for (const auto& [id, m] : j.at("clients").items()) {
      memory[id] = Memory{m.at("utility").get<double>(), m.at("duration_s").get<double>()};
    }
  } catch (const json::exception& e) {
    return DataLossError(std::string("oort state: ") + e.what());
  }
  if (!(epsilon >= 0 && epsilon <= 1))
    return DataLossError("oort state: epsilon " + Num(epsilon) + " out of [0, 1]");
  epsilon_ = epsilon;
  memory_ = std::move(memory);
  return OkStatus();
}

double UtilityPerGramSelector::Cost(const ClientCandidate& c,
                                    const SelectionRequest& request) const {
  return std::max(EstimateRoundCarbon(c, request, estimate_).emissions.grams(), 1e-9);
}

}  // namespace verdant
