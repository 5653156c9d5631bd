// The built-in policies eligible, carbon and carbon-deferral, the carbon
// estimate, and registration of every built-in. Oort and utility-per-gram
// are in oort_selector.cc.
#include "verdant/server/selectors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "selector_internal.h"

namespace verdant {

using nlohmann::json;
using selector_internal::HumanDuration;
using selector_internal::Num;
using selector_internal::ReadDouble;
using selector_internal::ShuffledOrder;

// ---- eligible ----------------------------------------------------------------------------

PolicyOptions EligibleSelector::Defaults() {
  PolicyOptions p;
  p.eligibility.min_battery_percent = 20;
  return p;
}

Result<SelectionDecision> EligibleSelector::Choose(const SelectionRequest& request,
                                                   const SelectionPool& pool, Rng& rng) {
  std::vector<size_t> idx = ShuffledOrder(pool.open, rng);
  SelectionDecision d;
  for (size_t i = 0; i < pool.slots; ++i) d.selected.push_back(pool.open[idx[i]].client_id);
  d.reason = "eligible: uniform random " + std::to_string(pool.slots) + " of " +
             std::to_string(pool.open.size()) + " eligible";
  return d;
}

// ---- carbon estimate ---------------------------------------------------------------------

Result<CarbonEstimateOptions> ReadCarbonEstimateOptions(const OptionMap& o,
                                                        CarbonEstimateOptions d) {
  CarbonEstimateOptions e = d;
  VERDANT_ASSIGN_OR_RETURN(
      double ci, ReadDouble(o, "default_intensity", d.default_intensity.grams_per_kwh(), 0,
                            std::numeric_limits<double>::max()));
  e.default_intensity = CarbonIntensity::GramsPerKwh(ci);
  VERDANT_ASSIGN_OR_RETURN(double w,
                           ReadDouble(o, "assumed_power_w", d.assumed_power.watts(), 0,
                                      std::numeric_limits<double>::max(), /*lo_open=*/true));
  e.assumed_power = Power::Watts(w);
  VERDANT_ASSIGN_OR_RETURN(e.assumed_ms_per_sample,
                           ReadDouble(o, "assumed_ms_per_sample", d.assumed_ms_per_sample, 0,
                                      std::numeric_limits<double>::max(), /*lo_open=*/true));
  return e;
}

std::pair<Energy, std::string_view> ExpectedRoundEnergy(const ClientCandidate& c,
                                                        const CarbonEstimateOptions& o) {
  if (c.expected_energy_joules > 0) return {Energy::Joules(c.expected_energy_joules), "expected"};
  if (c.expected_round_seconds > 0)
    return {o.assumed_power.Over(c.expected_round_seconds), "round-time"};
  if (c.last_train_seconds > 0) return {o.assumed_power.Over(c.last_train_seconds), "train-time"};
  const double train_s =
      3.0 * static_cast<double>(c.num_examples) * o.assumed_ms_per_sample / 1000.0;
  return {o.assumed_power.Over(train_s), "samples"};
}

std::pair<CarbonIntensity, std::string_view> CurrentIntensity(const ClientCandidate& c,
                                                              const SelectionRequest& request,
                                                              const CarbonEstimateOptions& o) {
  if (c.intensity_g_per_kwh && std::isfinite(*c.intensity_g_per_kwh) &&
      *c.intensity_g_per_kwh >= 0) {
    return {CarbonIntensity::GramsPerKwh(*c.intensity_g_per_kwh), "client"};
  }
  if (request.intensity != nullptr && !c.zone.empty()) {
    auto r = request.intensity->IntensityAt(c.zone, request.now);
    if (r.ok()) return {r->value, "source"};
  }
  return {o.default_intensity, "default"};
}

CarbonEstimate EstimateRoundCarbon(const ClientCandidate& c, CarbonIntensity intensity,
                                   const CarbonEstimateOptions& o) {
  CarbonEstimate e;
  std::tie(e.energy, e.energy_basis) = ExpectedRoundEnergy(c, o);
  e.intensity = intensity;
  e.intensity_basis = "given";
  e.emissions = e.energy * e.intensity;
  e.grams_per_sample = c.num_examples > 0
                           ? e.emissions.grams() / static_cast<double>(c.num_examples)
                           : std::numeric_limits<double>::infinity();
  return e;
}

CarbonEstimate EstimateRoundCarbon(const ClientCandidate& c, const SelectionRequest& request,
                                   const CarbonEstimateOptions& o) {
  auto [intensity, basis] = CurrentIntensity(c, request, o);
  CarbonEstimate e = EstimateRoundCarbon(c, intensity, o);
  e.intensity_basis = basis;
  return e;
}

// ---- carbon ------------------------------------------------------------------------------

namespace {

struct Ranked {
  size_t index;  // into pool.open
  CarbonEstimate estimate;
};

// pool.open by expected gCO2e per sample now, lowest first; ties at random.
std::vector<Ranked> RankByCarbon(const SelectionRequest& request,
                                 std::span<const ClientCandidate> open,
                                 const CarbonEstimateOptions& o, Rng& rng) {
  std::vector<Ranked> ranked;
  ranked.reserve(open.size());
  for (size_t i : ShuffledOrder(open, rng))
    ranked.push_back({i, EstimateRoundCarbon(open[i], request, o)});
  std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    return a.estimate.grams_per_sample < b.estimate.grams_per_sample;
  });
  return ranked;
}

// The first `slots` of `ranked`, except that each slot goes with
// probability epsilon to a uniformly random client among the rest.
SelectionDecision TakeCleanest(const std::vector<Ranked>& ranked, const SelectionPool& pool,
                               double epsilon, Rng& rng, std::string_view policy) {
  size_t explore = 0;
  if (epsilon > 0) {
    for (size_t i = 0; i < pool.slots; ++i) explore += rng.Uniform() < epsilon ? 1 : 0;
  }
  const size_t greedy = pool.slots - explore;
  SelectionDecision d;
  double worst = 0;
  for (size_t i = 0; i < greedy; ++i) {
    d.selected.push_back(pool.open[ranked[i].index].client_id);
    worst = ranked[i].estimate.grams_per_sample;
  }
  if (explore > 0) {
    std::vector<size_t> rest;
    for (size_t i = greedy; i < ranked.size(); ++i) rest.push_back(ranked[i].index);
    rng.Shuffle(std::span<size_t>(rest));
    for (size_t i = 0; i < explore; ++i) d.selected.push_back(pool.open[rest[i]].client_id);
  }
  d.reason = std::string(policy) + ": " + std::to_string(greedy) + " of " +
             std::to_string(pool.open.size()) + " by lowest expected gCO2e per sample";
  if (greedy > 0) {
    d.reason += " (" + Num(ranked[0].estimate.grams_per_sample) + " to " + Num(worst) + " g)";
  }
  if (explore > 0)
    d.reason += ", " + std::to_string(explore) + " at random (epsilon " + Num(epsilon) + ")";
  return d;
}

Result<CarbonOptions> ReadCarbonOptions(const OptionMap& o) {
  CarbonOptions c;
  VERDANT_ASSIGN_OR_RETURN(c.estimate, ReadCarbonEstimateOptions(o));
  VERDANT_ASSIGN_OR_RETURN(c.epsilon, ReadDouble(o, "epsilon", c.epsilon, 0, 1));
  return c;
}

}  // namespace

Result<SelectionDecision> CarbonSelector::Choose(const SelectionRequest& request,
                                                 const SelectionPool& pool, Rng& rng) {
  auto ranked = RankByCarbon(request, pool.open, options_.estimate, rng);
  return TakeCleanest(ranked, pool, options_.epsilon, rng, Name());
}

// ---- carbon-deferral ------------------------------------------------------------------------

namespace {

// One zone's forecast in query time: interval starts and values.
struct ZoneForecast {
  std::vector<TimePoint> start;
  std::vector<Duration> length;
  std::vector<double> g_per_kwh;
  // The value of the interval containing t, if any.
  std::optional<double> At(TimePoint t) const {
    auto it = std::upper_bound(start.begin(), start.end(), t);
    if (it == start.begin()) return std::nullopt;
    const size_t i = static_cast<size_t>(it - start.begin()) - 1;
    if (length[i].count() > 0 && t >= start[i] + length[i]) return std::nullopt;
    return g_per_kwh[i];
  }
};

Duration FloorModDuration(Duration a, Duration b) {
  Duration m = a % b;
  return m.count() < 0 ? m + b : m;
}

// Readings carry trace times (for wrapped traces, the 2022 hour used); map
// them to query time: the first reading contains `now`, each later one
// starts where its trace time says relative to the previous one (or right
// after it, across a wrap).
ZoneForecast ToQueryTime(const std::vector<energy::IntensityReading>& readings, TimePoint now) {
  ZoneForecast f;
  for (size_t j = 0; j < readings.size(); ++j) {
    const auto& r = readings[j];
    TimePoint s;
    if (j == 0) {
      s = r.interval.count() > 0 ? now - FloorModDuration(now - r.trace_time, r.interval) : now;
    } else {
      const Duration step = r.trace_time - readings[j - 1].trace_time;
      s = step.count() > 0
              ? f.start.back() + step
              : f.start.back() + (f.length.back().count() > 0 ? f.length.back()
                                                              : Duration(std::chrono::hours(1)));
    }
    if (!f.start.empty() && s <= f.start.back()) continue;  // not increasing: ignore
    f.start.push_back(s);
    f.length.push_back(r.interval);
    f.g_per_kwh.push_back(r.value.grams_per_kwh());
  }
  return f;
}

// gCO2e per useful sample of the round if it started at a time where the
// clients' intensities are `open_ci` / `fixed_ci`: the best `slots` of open
// by per-sample cost (ties by `order`) plus the fixed clients.
double RoundCostPerSample(const SelectionPool& pool, const std::vector<Energy>& open_e,
                          const std::vector<double>& open_ci, const std::vector<Energy>& fixed_e,
                          const std::vector<double>& fixed_ci, const std::vector<size_t>& order) {
  double grams = 0, samples = 0;
  for (size_t i = 0; i < pool.fixed.size(); ++i) {
    grams += (fixed_e[i] * CarbonIntensity::GramsPerKwh(fixed_ci[i])).grams();
    samples += static_cast<double>(pool.fixed[i].num_examples);
  }
  auto per_sample = [&](size_t i) {
    const double n = static_cast<double>(pool.open[i].num_examples);
    return n > 0 ? (open_e[i] * CarbonIntensity::GramsPerKwh(open_ci[i])).grams() / n
                 : std::numeric_limits<double>::infinity();
  };
  std::vector<size_t> by_cost = order;
  std::stable_sort(by_cost.begin(), by_cost.end(),
                   [&](size_t a, size_t b) { return per_sample(a) < per_sample(b); });
  for (size_t j = 0; j < pool.slots && j < by_cost.size(); ++j) {
    const size_t i = by_cost[j];
    grams += (open_e[i] * CarbonIntensity::GramsPerKwh(open_ci[i])).grams();
    samples += static_cast<double>(pool.open[i].num_examples);
  }
  return samples > 0 ? grams / samples : std::numeric_limits<double>::infinity();
}

}  // namespace

Result<SelectionDecision> CarbonDeferralSelector::Choose(const SelectionRequest& request,
                                                         const SelectionPool& pool, Rng& rng) {
  if (pending_round_ != request.round) {
    pending_round_ = request.round;
    pending_since_ = request.now;
  }
  const CarbonEstimateOptions& eo = options_.carbon.estimate;
  auto ranked = RankByCarbon(request, pool.open, eo, rng);
  std::string why_not;

  TimePoint latest = std::min(
      {pending_since_ + options_.max_delay, request.round_deadline, request.now + options_.window});
  if (request.intensity == nullptr) {
    why_not = "no intensity source";
  } else if (latest <= request.now) {
    why_not = request.round_deadline <= request.now ? "no time before the round deadline"
              : pending_since_ + options_.max_delay <= request.now ? "held for max_delay_h already"
                                                                   : "no look-ahead window";
  } else if (pool.fixed.empty() && pool.slots == 0) {
    why_not = "nothing to select";
  } else {
    // Now: observed intensities, the order carbon would take.
    std::vector<Energy> open_e, fixed_e;
    std::vector<double> open_now, fixed_now;
    std::vector<size_t> order;
    for (const auto& c : pool.open) {
      auto e = EstimateRoundCarbon(c, request, eo);
      open_e.push_back(e.energy);
      open_now.push_back(e.intensity.grams_per_kwh());
    }
    for (const auto& c : pool.fixed) {
      auto e = EstimateRoundCarbon(c, request, eo);
      fixed_e.push_back(e.energy);
      fixed_now.push_back(e.intensity.grams_per_kwh());
    }
    for (const auto& r : ranked) order.push_back(r.index);
    const double cost_now = RoundCostPerSample(pool, open_e, open_now, fixed_e, fixed_now, order);

    // Forecasts per zone, and the interval starts inside (now, latest].
    std::map<std::string, ZoneForecast, std::less<>> forecasts;
    std::set<TimePoint> starts;
    auto add_zone = [&](const std::string& zone) {
      if (zone.empty() || forecasts.count(zone)) return;
      auto fc = request.intensity->Forecast(zone, request.now, latest - request.now + Duration(1));
      if (!fc.ok() || fc->empty()) return;  // unknown zone: assumed flat
      ZoneForecast f = ToQueryTime(*fc, request.now);
      for (TimePoint s : f.start) {
        if (s > request.now && s <= latest) starts.insert(s);
      }
      forecasts.emplace(zone, std::move(f));
    };
    for (const auto& c : pool.open) add_zone(c.zone);
    for (const auto& c : pool.fixed) add_zone(c.zone);

    auto ci_at = [&](const ClientCandidate& c, double now_value, TimePoint t) {
      auto it = forecasts.find(c.zone);
      if (it == forecasts.end()) return now_value;
      return it->second.At(t).value_or(now_value);
    };
    double best_cost = cost_now;
    TimePoint best_start = request.now;
    for (TimePoint s : starts) {
      std::vector<double> open_ci(pool.open.size()), fixed_ci(pool.fixed.size());
      for (size_t i = 0; i < pool.open.size(); ++i)
        open_ci[i] = ci_at(pool.open[i], open_now[i], s);
      for (size_t i = 0; i < pool.fixed.size(); ++i)
        fixed_ci[i] = ci_at(pool.fixed[i], fixed_now[i], s);
      const double cost = RoundCostPerSample(pool, open_e, open_ci, fixed_e, fixed_ci, order);
      if (cost < best_cost) {
        best_cost = cost;
        best_start = s;
      }
    }
    if (!std::isfinite(cost_now) || cost_now <= 0) {
      why_not = "no emissions to save";
    } else {
      const double saving = 1.0 - best_cost / cost_now;
      if (best_start > request.now && saving > options_.min_saving) {
        SelectionDecision d;
        d.defer_for = best_start - request.now;
        d.reason = "carbon-deferral: waiting " + HumanDuration(*d.defer_for) + " for a forecast " +
                   Num(saving * 100) + "% cleaner round (" + Num(best_cost) + " vs " +
                   Num(cost_now) + " gCO2e per sample now; held since " +
                   FormatUtc(pending_since_) + ", latest start " + FormatUtc(latest) + ")";
        return d;
      }
      why_not = best_start > request.now
                    ? "best forecast saving " + Num(saving * 100) + "% <= min_saving " +
                          Num(options_.min_saving * 100) + "%"
                    : "no cleaner hour within " + HumanDuration(latest - request.now);
    }
  }
  SelectionDecision d = TakeCleanest(ranked, pool, options_.carbon.epsilon, rng, Name());
  d.reason += "; not deferring: " + why_not;
  return d;
}

Result<std::string> CarbonDeferralSelector::SavePolicyState() const {
  json j{{"pending_round", pending_round_},
         {"pending_since_us", pending_since_.time_since_epoch().count()}};
  return j.dump();
}

Status CarbonDeferralSelector::RestorePolicyState(std::string_view text) {
  if (text.empty()) {
    pending_round_ = 0;
    pending_since_ = TimePoint{};
    return OkStatus();
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  try {
    if (j.is_discarded()) return DataLossError("carbon-deferral state is not JSON");
    const uint64_t round = j.at("pending_round").get<uint64_t>();
    const int64_t since = j.at("pending_since_us").get<int64_t>();
    pending_round_ = round;
    pending_since_ = TimePoint(Duration(since));
  } catch (const json::exception& e) {
    return DataLossError(std::string("carbon-deferral state: ") + e.what());
  }
  return OkStatus();
}

// ---- registration ------------------------------------------------------------------------------

namespace {

Duration Hours(double h) { return Duration(static_cast<int64_t>(std::llround(h * 3600.0 * 1e6))); }

Result<OortOptions> ReadOortOptions(const OptionMap& o) {
  OortOptions p;
  constexpr double kBig = std::numeric_limits<double>::max();
  VERDANT_ASSIGN_OR_RETURN(p.alpha, ReadDouble(o, "alpha", p.alpha, 0, kBig));
  VERDANT_ASSIGN_OR_RETURN(p.preferred_duration_s,
                           ReadDouble(o, "preferred_duration_s", p.preferred_duration_s, 0, kBig));
  VERDANT_ASSIGN_OR_RETURN(
      p.duration_percentile,
      ReadDouble(o, "duration_percentile", p.duration_percentile, 0, 100, /*lo_open=*/true));
  VERDANT_ASSIGN_OR_RETURN(p.epsilon, ReadDouble(o, "epsilon", p.epsilon, 0, 1));
  VERDANT_ASSIGN_OR_RETURN(p.epsilon_decay,
                           ReadDouble(o, "epsilon_decay", p.epsilon_decay, 0, 1, /*lo_open=*/true));
  // Default floor: the smaller of 0.3 and the initial epsilon.
  VERDANT_ASSIGN_OR_RETURN(
      p.epsilon_min,
      ReadDouble(o, "epsilon_min", std::min(p.epsilon_min, p.epsilon), 0, p.epsilon));
  VERDANT_ASSIGN_OR_RETURN(p.cutoff, ReadDouble(o, "cutoff", p.cutoff, 0, 1, /*lo_open=*/true));
  VERDANT_ASSIGN_OR_RETURN(p.clip_quantile,
                           ReadDouble(o, "clip_quantile", p.clip_quantile, 0, 1, /*lo_open=*/true));
  return p;
}

using Factory =
    std::function<Result<std::unique_ptr<ClientSelector>>(const OptionMap&, PolicyOptions)>;

// Reads the shared options (from `defaults`), then the selector's own
// through `make`, then rejects unknown keys.
Status Add(Registry<ClientSelector>& r, const std::string& name, PolicyOptions defaults,
           Factory make) {
  return r.Register(
      name, [name, defaults, make](const OptionMap& o) -> Result<std::unique_ptr<ClientSelector>> {
        const std::string what = "selector '" + name + "'";
        auto policy = ReadPolicyOptions(o, defaults);
        if (!policy.ok()) return policy.status().WithContext(what);
        auto s = make(o, *policy);
        if (!s.ok()) return s.status().WithContext(what);
        VERDANT_RETURN_IF_ERROR(o.CheckAllUsed(what));
        return s;
      });
}

}  // namespace

Status RegisterBuiltinSelectors(Registry<ClientSelector>& r) {
  using Ptr = std::unique_ptr<ClientSelector>;
  VERDANT_RETURN_IF_ERROR(
      Add(r, "random", {}, [](const OptionMap&, PolicyOptions p) -> Result<Ptr> {
        return Ptr(std::make_unique<RandomSelector>(p));
      }));
  VERDANT_RETURN_IF_ERROR(Add(r, "eligible", EligibleSelector::Defaults(),
                              [](const OptionMap&, PolicyOptions p) -> Result<Ptr> {
                                return Ptr(std::make_unique<EligibleSelector>(p));
                              }));
  VERDANT_RETURN_IF_ERROR(
      Add(r, "carbon", {}, [](const OptionMap& o, PolicyOptions p) -> Result<Ptr> {
        VERDANT_ASSIGN_OR_RETURN(CarbonOptions c, ReadCarbonOptions(o));
        return Ptr(std::make_unique<CarbonSelector>(p, c));
      }));
  VERDANT_RETURN_IF_ERROR(
      Add(r, "carbon-deferral", {}, [](const OptionMap& o, PolicyOptions p) -> Result<Ptr> {
        DeferralOptions d;
        VERDANT_ASSIGN_OR_RETURN(d.carbon, ReadCarbonOptions(o));
        constexpr double kYear = 24.0 * 366;
        VERDANT_ASSIGN_OR_RETURN(double window_h,
                                 ReadDouble(o, "window_h", 6, 0, kYear, /*lo_open=*/true));
        VERDANT_ASSIGN_OR_RETURN(double max_delay_h, ReadDouble(o, "max_delay_h", 12, 0, kYear));
        VERDANT_ASSIGN_OR_RETURN(
            d.min_saving, ReadDouble(o, "min_saving", d.min_saving, 0, 1, false, /*hi_open=*/true));
        d.window = Hours(window_h);
        d.max_delay = Hours(max_delay_h);
        return Ptr(std::make_unique<CarbonDeferralSelector>(p, d));
      }));
  VERDANT_RETURN_IF_ERROR(
      Add(r, "oort", {}, [](const OptionMap& o, PolicyOptions p) -> Result<Ptr> {
        VERDANT_ASSIGN_OR_RETURN(OortOptions oo, ReadOortOptions(o));
        return Ptr(std::make_unique<OortSelector>(p, oo));
      }));
  VERDANT_RETURN_IF_ERROR(
      Add(r, "utility-per-gram", {}, [](const OptionMap& o, PolicyOptions p) -> Result<Ptr> {
        VERDANT_ASSIGN_OR_RETURN(OortOptions oo, ReadOortOptions(o));
        VERDANT_ASSIGN_OR_RETURN(CarbonEstimateOptions e, ReadCarbonEstimateOptions(o));
        return Ptr(std::make_unique<UtilityPerGramSelector>(p, oo, e));
      }));
  return OkStatus();
}

}  // namespace verdant
