#include "verdant/server/selector.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "selector_internal.h"
#include "verdant/server/selectors.h"

namespace verdant {

using nlohmann::json;

// ---- helpers -------------------------------------------------------------------------

namespace selector_internal {

std::vector<size_t> ShuffledOrder(std::span<const ClientCandidate> c, Rng& rng) {
  std::vector<size_t> idx(c.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto by_id = [&](size_t a, size_t b) { return c[a].client_id < c[b].client_id; };
  if (!std::is_sorted(idx.begin(), idx.end(), by_id)) std::sort(idx.begin(), idx.end(), by_id);
  rng.Shuffle(std::span<size_t>(idx));
  return idx;
}

std::vector<size_t> WeightedSample(std::span<const double> weights, size_t k, Rng& rng) {
  std::vector<size_t> left(weights.size());
  std::iota(left.begin(), left.end(), 0);
  std::vector<size_t> out;
  k = std::min(k, left.size());
  out.reserve(k);
  auto w = [&](size_t i) { return std::isfinite(weights[i]) && weights[i] > 0 ? weights[i] : 0.0; };
  while (out.size() < k) {
    double total = 0;
    for (size_t i : left) total += w(i);
    size_t pick = left.size() - 1;
    if (total > 0) {
      double u = rng.Uniform() * total;
      for (size_t j = 0; j < left.size(); ++j) {
        u -= w(left[j]);
        if (u < 0) {
          pick = j;
          break;
        }
      }
      // Rounding may leave u >= 0 after the loop: take the last positive weight.
      if (u >= 0) {
        for (size_t j = left.size(); j-- > 0;) {
          if (w(left[j]) > 0) {
            pick = j;
            break;
          }
        }
      }
    } else {
      pick = static_cast<size_t>(rng.UniformInt(left.size()));
    }
    out.push_back(left[pick]);
    left.erase(left.begin() + static_cast<std::ptrdiff_t>(pick));
  }
  return out;
}

std::string Num(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string HumanDuration(Duration d) {
  int64_t s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 0) return "-" + HumanDuration(-d);
  const int64_t h = s / 3600, m = (s % 3600) / 60, sec = s % 60;
  std::string out;
  if (h > 0) out += std::to_string(h) + "h";
  if (m > 0 || (h > 0 && sec > 0)) out += std::to_string(m) + "m";
  if (sec > 0 || out.empty()) out += std::to_string(sec) + "s";
  return out;
}

Result<double> ReadDouble(const OptionMap& o, const std::string& key, double fallback, double lo,
                          double hi, bool lo_open, bool hi_open) {
  VERDANT_ASSIGN_OR_RETURN(double v, o.GetDouble(key, fallback));
  const bool below = lo_open ? !(v > lo) : !(v >= lo);
  const bool above = hi_open ? !(v < hi) : !(v <= hi);
  if (below || above) {
    return InvalidArgumentError("option '" + key + "': " + Num(v) + " is outside " +
                                (lo_open ? "(" : "[") + Num(lo) + ", " + Num(hi) +
                                (hi_open ? ")" : "]"));
  }
  return v;
}

}  // namespace selector_internal

using selector_internal::Num;

// ---- participation -----------------------------------------------------------------------

double ParticipationGini(std::span<const uint64_t> counts) {
  if (counts.empty()) return 0.0;
  std::vector<uint64_t> x(counts.begin(), counts.end());
  std::sort(x.begin(), x.end());
  long double sum = 0, weighted = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sum += static_cast<long double>(x[i]);
    weighted += static_cast<long double>(i + 1) * static_cast<long double>(x[i]);
  }
  if (sum == 0) return 0.0;
  const long double n = static_cast<long double>(x.size());
  // Sorted form of sum_i sum_j |x_i - x_j| / (2 n^2 mean).
  const long double g = 2.0L * weighted / (n * sum) - (n + 1.0L) / n;
  return std::max(0.0, static_cast<double>(g));
}

ParticipationStats MakeParticipationStats(uint64_t rounds,
                                          std::map<std::string, ClientParticipation> clients) {
  ParticipationStats s;
  s.rounds = rounds;
  std::vector<uint64_t> counts;
  counts.reserve(clients.size());
  for (const auto& [id, c] : clients) {
    counts.push_back(c.selected);
    if (c.selected == 0) ++s.never_selected;
    if (rounds > 0) {
      s.max_share =
          std::max(s.max_share, static_cast<double>(c.selected) / static_cast<double>(rounds));
    }
  }
  s.gini = ParticipationGini(counts);
  s.clients = std::move(clients);
  return s;
}

// ---- shared rules ------------------------------------------------------------------------

Result<PolicyOptions> ReadPolicyOptions(const OptionMap& o, PolicyOptions d) {
  using selector_internal::ReadDouble;
  PolicyOptions p = d;
  VERDANT_ASSIGN_OR_RETURN(p.eligibility.min_battery_percent,
                           ReadDouble(o, "min_battery", d.eligibility.min_battery_percent, 0, 100));
  VERDANT_ASSIGN_OR_RETURN(p.eligibility.require_charging,
                           o.GetBool("require_charging", d.eligibility.require_charging));
  VERDANT_ASSIGN_OR_RETURN(p.eligibility.require_unmetered,
                           o.GetBool("require_unmetered", d.eligibility.require_unmetered));
  VERDANT_ASSIGN_OR_RETURN(p.eligibility.require_idle,
                           o.GetBool("require_idle", d.eligibility.require_idle));
  VERDANT_ASSIGN_OR_RETURN(p.fairness.max_share, ReadDouble(o, "max_share", d.fairness.max_share, 0,
                                                            1, /*lo_open=*/true));
  VERDANT_ASSIGN_OR_RETURN(
      int64_t starve,
      o.GetInt("starvation_rounds", static_cast<int64_t>(d.fairness.starvation_rounds)));
  if (starve < 0) {
    return InvalidArgumentError("option 'starvation_rounds': " + std::to_string(starve) +
                                " is negative (0 = no floor)");
  }
  p.fairness.starvation_rounds = static_cast<uint64_t>(starve);
  return p;
}

std::string IneligibleReason(const ClientCandidate& c, const EligibilityOptions& rules) {
  using energy::PowerSource;
  const bool external_power =
      c.charging || c.power_source == PowerSource::kGrid || c.power_source == PowerSource::kSolar;
  if (rules.require_charging && !external_power) return "not charging";
  if (rules.require_unmetered && !c.unmetered_network) return "not on an unmetered network";
  if (rules.require_idle && !c.idle) return "not idle";
  if (rules.min_battery_percent > 0 && !external_power) {
    if (c.battery_percent < 0) {
      if (c.power_source == PowerSource::kBattery) return "on battery with an unknown level";
      return "";  // no battery reading and not on battery: a mains-powered server
    }
    double level = c.battery_percent;
    std::string when;
    if (c.battery_capacity_wh > 0 && c.expected_energy_joules > 0) {
      level -= c.expected_energy_joules / 3600.0 / c.battery_capacity_wh * 100.0;
      when = " after the round";
    }
    if (level < rules.min_battery_percent) {
      return "battery " + Num(level) + "%" + when + " below " + Num(rules.min_battery_percent) +
             "%";
    }
  }
  return "";
}

// ---- PolicySelector ----------------------------------------------------------------------

namespace {

std::string JoinIds(const std::vector<std::string>& ids, size_t max_items = 8) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < max_items; ++i) s += (i ? ", " : "") + ids[i];
  if (ids.size() > max_items) s += ", ... (" + std::to_string(ids.size() - max_items) + " more)";
  return s;
}

constexpr int kStateVersion = 1;

}  // namespace

const ClientParticipation* PolicySelector::History(std::string_view client_id) const {
  auto it = clients_.find(client_id);
  return it == clients_.end() ? nullptr : &it->second;
}

Result<SelectionDecision> PolicySelector::Select(const SelectionRequest& request,
                                                 std::span<const ClientCandidate> candidates,
                                                 Rng& rng) {
  if (candidates.empty()) return FailedPreconditionError("no client is available");
  const EligibilityOptions& el = options_.eligibility;
  const FairnessOptions& fair = options_.fairness;

  // Distinct ids (the first entry wins); every candidate enters the history.
  std::vector<const ClientCandidate*> unique;
  unique.reserve(candidates.size());
  {
    // The coordinator passes candidates sorted by id: then a duplicate is
    // next to its first entry, and no set of every id is built per round.
    const bool sorted = std::is_sorted(candidates.begin(), candidates.end(),
                                       [](const auto& a, const auto& b) { return a.client_id < b.client_id; });
    std::set<std::string_view> seen;
    const ClientCandidate* prev = nullptr;
    for (const auto& c : candidates) {
      if (sorted ? (prev != nullptr && prev->client_id == c.client_id) : !seen.insert(c.client_id).second) continue;
      prev = &c;
      unique.push_back(&c);
      if (auto [it, fresh] = clients_.try_emplace(c.client_id); fresh) it->second.first_seen_round = request.round;
    }
  }

  // 1. Eligibility.
  std::vector<const ClientCandidate*> eligible;
  std::vector<std::string> why_not;
  for (const ClientCandidate* c : unique) {
    std::string why = IneligibleReason(*c, el);
    if (why.empty()) {
      eligible.push_back(c);
    } else {
      why_not.push_back(c->client_id + ": " + why);
    }
  }
  if (eligible.empty()) {
    return FailedPreconditionError("no eligible client among " + std::to_string(unique.size()) +
                                   " (" + JoinIds(why_not, 5) + ")");
  }
  const size_t k =
      request.target == 0 ? eligible.size() : std::min(request.target, eligible.size());

  // 2. The floor: starving clients are forced in, longest-waiting first.
  std::vector<std::string> forced_ids;
  std::set<const ClientCandidate*> forced;
  std::vector<ClientCandidate> fixed;
  if (fair.starvation_rounds > 0) {
    std::vector<std::pair<uint64_t, const ClientCandidate*>> starving;
    for (const ClientCandidate* c : eligible) {
      const ClientParticipation& h = clients_.at(c->client_id);
      const uint64_t last = std::max(h.last_selected_round, c->last_round_selected);
      uint64_t passed_over = 0;
      if (last > 0) {
        passed_over = request.round > last ? request.round - last - 1 : 0;
      } else {
        passed_over = request.round > h.first_seen_round ? request.round - h.first_seen_round : 0;
      }
      if (passed_over >= fair.starvation_rounds) starving.emplace_back(passed_over, c);
    }
    std::sort(starving.begin(), starving.end(), [](const auto& a, const auto& b) {
      if (a.first != b.first) return a.first > b.first;
      return a.second->client_id < b.second->client_id;
    });
    for (size_t i = 0; i < starving.size() && i < k; ++i) {
      forced.insert(starving[i].second);
      forced_ids.push_back(starving[i].second->client_id);
      fixed.push_back(*starving[i].second);
    }
  }

  // 3. The cap: clients over max_share wait while others can fill the round.
  std::vector<const ClientCandidate*> under, over;
  for (const ClientCandidate* c : eligible) {
    if (forced.count(c)) continue;
    bool capped = false;
    if (fair.max_share < 1.0 && rounds_ > 0) {
      const double share =
          static_cast<double>(clients_.at(c->client_id).selected) / static_cast<double>(rounds_);
      capped = share > fair.max_share + 1e-12;
    }
    (capped ? over : under).push_back(c);
  }
  size_t slots = k - fixed.size();
  std::vector<ClientCandidate> open;
  std::string fairness_note;
  if (under.size() >= slots) {
    for (const ClientCandidate* c : under) open.push_back(*c);
    if (!over.empty()) {
      std::vector<std::string> ids;
      for (const ClientCandidate* c : over) ids.push_back(c->client_id);
      fairness_note += "; over max_share " + Num(fair.max_share) + ", skipped: " + JoinIds(ids);
    }
  } else {
    for (const ClientCandidate* c : under) fixed.push_back(*c);
    for (const ClientCandidate* c : over) open.push_back(*c);
    slots -= under.size();
    if (!over.empty()) {
      fairness_note += "; only " + std::to_string(under.size()) + " under max_share " +
                       Num(fair.max_share) + ", filling from the rest";
    }
  }
  if (!forced_ids.empty()) {
    fairness_note += "; starvation floor (" + std::to_string(fair.starvation_rounds) +
                     " rounds) forced in: " + JoinIds(forced_ids);
  }

  // 4. The policy.
  SelectionPool pool{fixed, open, slots};
  VERDANT_ASSIGN_OR_RETURN(SelectionDecision d, Choose(request, pool, rng));
  if (d.defer_for) {
    if (d.defer_for->count() <= 0) {
      return InternalError("selector '" + std::string(Name()) +
                           "' deferred by a non-positive duration");
    }
    d.selected.clear();
    return d;
  }
  if (d.selected.size() > slots) {
    return InternalError("selector '" + std::string(Name()) + "' chose " +
                         std::to_string(d.selected.size()) + " clients for " +
                         std::to_string(slots) + " slots");
  }
  {
    // Which chosen ids are open candidates: one pass over `open` against the
    // (few) chosen ids, not a set of every open id.
    std::unordered_map<std::string_view, bool> is_open;
    is_open.reserve(d.selected.size());
    for (const auto& id : d.selected) is_open.emplace(id, false);
    for (const auto& c : open) {
      if (auto it = is_open.find(c.client_id); it != is_open.end()) it->second = true;
    }
    std::unordered_set<std::string_view> taken;
    for (const auto& id : d.selected) {
      if (!is_open.at(id) || !taken.insert(id).second) {
        return InternalError("selector '" + std::string(Name()) + "' chose '" + id +
                             "', which is not an open candidate or was chosen twice");
      }
    }
  }
  std::vector<std::string> selected;
  selected.reserve(fixed.size() + d.selected.size());
  for (const auto& c : fixed) selected.push_back(c.client_id);
  for (auto& id : d.selected) selected.push_back(std::move(id));
  d.selected = std::move(selected);
  if (!why_not.empty()) {
    fairness_note += "; " + std::to_string(why_not.size()) + " of " +
                     std::to_string(unique.size()) + " ineligible (" + JoinIds(why_not, 3) + ")";
  }
  d.reason += fairness_note;

  // 5. History.
  ++rounds_;
  for (const auto& id : d.selected) {
    ClientParticipation& h = clients_[id];
    ++h.selected;
    h.last_selected_round = request.round;
  }
  return d;
}

void PolicySelector::OnRoundEnd(uint64_t round, std::span<const std::string> completed,
                                std::span<const std::string> failed) {
  auto rec = [&](const std::string& id) -> ClientParticipation& {
    auto it = clients_.find(id);
    if (it == clients_.end()) {
      it = clients_.emplace(id, ClientParticipation{}).first;
      it->second.first_seen_round = round;
    }
    return it->second;
  };
  for (const auto& id : completed) ++rec(id).completed;
  for (const auto& id : failed) ++rec(id).failed;
  OnOutcome(round, completed, failed);
}

ParticipationStats PolicySelector::Participation() const {
  return MakeParticipationStats(
      rounds_, std::map<std::string, ClientParticipation>(clients_.begin(), clients_.end()));
}

Result<std::string> PolicySelector::SaveState() const {
  json doc;
  doc["format"] = "verdant.selector";
  doc["version"] = kStateVersion;
  doc["selector"] = std::string(Name());
  doc["rounds"] = rounds_;
  json clients = json::object();
  for (const auto& [id, h] : clients_) {
    clients[id] = json{{"selected", h.selected},
                       {"completed", h.completed},
                       {"failed", h.failed},
                       {"first_seen", h.first_seen_round},
                       {"last_selected", h.last_selected_round}};
  }
  doc["clients"] = std::move(clients);
  VERDANT_ASSIGN_OR_RETURN(std::string policy, SavePolicyState());
  if (policy.empty()) {
    doc["policy"] = nullptr;
  } else {
    json p = json::parse(policy, nullptr, /*allow_exceptions=*/false);
    if (p.is_discarded()) {
      return InternalError("selector '" + std::string(Name()) +
                           "' saved policy state that is not JSON");
    }
    doc["policy"] = std::move(p);
  }
  return doc.dump();
}

Status PolicySelector::RestoreState(std::string_view state) {
  if (state.empty()) return OkStatus();
  const std::string what = "selector state for '" + std::string(Name()) + "'";
  json doc = json::parse(state, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return DataLossError(what + ": not a JSON object");
  decltype(clients_) clients;
  uint64_t rounds = 0;
  std::string policy;
  try {
    if (doc.value("format", std::string()) != "verdant.selector") {
      return DataLossError(what + ": not a Verdant selector state");
    }
    const std::string name = doc.at("selector").get<std::string>();
    if (name != Name()) {
      return InvalidArgumentError(what + ": the state belongs to selector '" + name + "'");
    }
    const int version = doc.at("version").get<int>();
    if (version != kStateVersion) {
      return DataLossError(what + ": unsupported version " + std::to_string(version));
    }
    rounds = doc.at("rounds").get<uint64_t>();
    for (const auto& [id, h] : doc.at("clients").items()) {
      ClientParticipation p;
      p.selected = h.at("selected").get<uint64_t>();
      p.completed = h.at("completed").get<uint64_t>();
      p.failed = h.at("failed").get<uint64_t>();
      p.first_seen_round = h.at("first_seen").get<uint64_t>();
      p.last_selected_round = h.at("last_selected").get<uint64_t>();
      clients.emplace(id, p);
    }
    const json& p = doc.at("policy");
    if (!p.is_null()) policy = p.dump();
  } catch (const json::exception& e) {
    return DataLossError(what + ": " + e.what());
  }
  VERDANT_RETURN_IF_ERROR(RestorePolicyState(policy).WithContext(what));
  rounds_ = rounds;
  clients_ = std::move(clients);
  return OkStatus();
}

// ---- random ------------------------------------------------------------------------------

Result<SelectionDecision> RandomSelector::Choose(const SelectionRequest& request,
                                                 const SelectionPool& pool, Rng& rng) {
  std::vector<size_t> idx = selector_internal::ShuffledOrder(pool.open, rng);
  SelectionDecision d;
  for (size_t i = 0; i < pool.slots; ++i) d.selected.push_back(pool.open[idx[i]].client_id);
  d.reason =
      "uniform random " + std::to_string(pool.slots) + " of " + std::to_string(pool.open.size());
  return d;
}

// ---- registry ----------------------------------------------------------------------------

Registry<ClientSelector>& SelectorRegistry() {
  static Registry<ClientSelector>* reg = [] {
    auto* r = new Registry<ClientSelector>("selector");
    RegisterBuiltinSelectors(*r).IgnoreError();  // a fresh registry: no name clashes
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<ClientSelector>> CreateSelector(const std::string& name,
                                                       const OptionMap& options) {
  return SelectorRegistry().Create(name, options);
}

}  // namespace verdant
