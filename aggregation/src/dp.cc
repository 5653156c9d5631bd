#include "verdant/aggregation/dp.h"

#include <cmath>
#include <limits>
#include <random>

#include "kernels.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/state_io.h"

namespace verdant {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double LogAdd(double a, double b) {
  const double lo = std::min(a, b), hi = std::max(a, b);
  if (lo == -kInf) return hi;
  return std::log1p(std::exp(lo - hi)) + hi;
}

// log(exp(a) - exp(b)) for a >= b; -inf when equal.
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;
  const double d = a - b;
  if (d > 700.0) return a;  // exp(d) would overflow; the difference is exp(a)
  return std::log(std::expm1(d)) + b;
}

// log(erfc(x)), accurate in the far tail where erfc underflows.
double LogErfc(double x) {
  if (x < 25.0) return std::log(std::erfc(x));
  // Asymptotic series: erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)).
  const double x2 = x * x;
  const double series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2);
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log(series);
}

// log(A_alpha) for integer alpha (Mironov et al. 2019, Section 3.3).
double LogAInt(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double lq = std::log(q), l1q = std::log1p(-q);
  const double la1 = std::lgamma(static_cast<double>(alpha) + 1.0);
  for (int64_t i = 0; i <= alpha; ++i) {
    const double di = static_cast<double>(i);
    const double log_binom = la1 - std::lgamma(di + 1.0) - std::lgamma(static_cast<double>(alpha - i) + 1.0);
    const double s = log_binom + di * lq + static_cast<double>(alpha - i) * l1q +
                     (di * di - di) / (2.0 * sigma * sigma);
    log_a = LogAdd(log_a, s);
  }
  return log_a;
}

// log(A_alpha) for fractional alpha (Mironov et al. 2019, Section 3.3; the
// series of Opacus' _compute_log_a_for_frac_alpha).
double LogAFrac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  const double lq = std::log(q), l1q = std::log1p(-q);
  double log_abs_coef = 0.0;  // log |binom(alpha, i)|, updated incrementally
  bool coef_positive = true;
  for (int64_t i = 0; i < 100000; ++i) {
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * lq + j * l1q;
    const double log_t1 = log_abs_coef + j * lq + di * l1q;
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (di * di - di) / (2.0 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
    if (coef_positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30.0) break;
    // binom(alpha, i + 1) = binom(alpha, i) * (alpha - i) / (i + 1)
    const double factor = (alpha - di) / (di + 1.0);
    if (factor == 0.0) break;
    if (factor < 0.0) coef_positive = !coef_positive;
    log_abs_coef += std::log(std::abs(factor));
  }
  return LogAdd(log_a0, log_a1);
}

std::vector<double> DefaultOrders() {
  // Opacus' DEFAULT_ALPHAS and TF-Privacy's compute_dp_sgd_privacy orders.
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1.0 + x / 10.0);
  for (int x = 12; x < 64; ++x) orders.push_back(static_cast<double>(x));
  return orders;
}

}  // namespace

// ---- RdpAccountant -------------------------------------------------------------

RdpAccountant::RdpAccountant() : RdpAccountant(DefaultOrders()) {}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

double RdpAccountant::ComputeRdp(double q, double sigma, double alpha) {
  if (q <= 0.0) return 0.0;
  if (sigma <= 0.0) return kInf;
  if (q >= 1.0) return alpha / (2.0 * sigma * sigma);
  if (std::isinf(alpha)) return kInf;
  const double log_a = (alpha == std::floor(alpha))
                           ? LogAInt(q, sigma, static_cast<int64_t>(alpha))
                           : LogAFrac(q, sigma, alpha);
  return log_a / (alpha - 1.0);
}

void RdpAccountant::Compose(double q, double sigma, uint64_t steps) {
  if (steps == 0) return;
  for (size_t k = 0; k < orders_.size(); ++k) {
    rdp_[k] += static_cast<double>(steps) * ComputeRdp(q, sigma, orders_[k]);
  }
  if (!history_.empty() && history_.back().q == q && history_.back().sigma == sigma) {
    history_.back().steps += steps;
  } else {
    history_.push_back({q, sigma, steps});
  }
  steps_ += steps;
}

std::pair<double, double> RdpAccountant::GetPrivacySpent(double delta) const {
  bool all_zero = true;
  for (double r : rdp_) all_zero = all_zero && r == 0.0;
  if (all_zero) return {0.0, orders_.empty() ? 0.0 : orders_.front()};
  double best = kInf, best_order = std::numeric_limits<double>::quiet_NaN();
  const double log_delta = std::log(delta);
  for (size_t k = 0; k < orders_.size(); ++k) {
    const double a = orders_[k];
    if (!(a > 1.0)) continue;
    const double eps = rdp_[k] - (log_delta + std::log(a)) / (a - 1.0) + std::log((a - 1.0) / a);
    if (std::isnan(eps)) continue;
    if (eps < best) {
      best = eps;
      best_order = a;
    }
  }
  return {std::max(0.0, best), best_order};
}

std::string RdpAccountant::SaveState() const {
  StateWriter w("VRDP", 1);
  w.U64(orders_.size());
  for (size_t k = 0; k < orders_.size(); ++k) {
    w.F64(orders_[k]);
    w.F64(rdp_[k]);
  }
  w.U64(history_.size());
  for (const Entry& e : history_) {
    w.F64(e.q);
    w.F64(e.sigma);
    w.U64(e.steps);
  }
  return w.Take();
}

Status RdpAccountant::RestoreState(std::string_view state) {
  StateReader r(state);
  VERDANT_RETURN_IF_ERROR(r.Header("VRDP", 1));
  uint64_t n = 0;
  VERDANT_RETURN_IF_ERROR(r.U64(n));
  if (n > state.size() / 16) return DataLossError("accountant state: bad order count");
  std::vector<double> orders(n), rdp(n);
  for (uint64_t k = 0; k < n; ++k) {
    VERDANT_RETURN_IF_ERROR(r.F64(orders[k]));
    VERDANT_RETURN_IF_ERROR(r.F64(rdp[k]));
  }
  uint64_t h = 0;
  VERDANT_RETURN_IF_ERROR(r.U64(h));
  if (h > state.size() / 24) return DataLossError("accountant state: bad history length");
  std::vector<Entry> history(h);
  uint64_t steps = 0;
  for (auto& e : history) {
    VERDANT_RETURN_IF_ERROR(r.F64(e.q));
    VERDANT_RETURN_IF_ERROR(r.F64(e.sigma));
    VERDANT_RETURN_IF_ERROR(r.U64(e.steps));
    steps += e.steps;
  }
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  orders_ = std::move(orders);
  rdp_ = std::move(rdp);
  history_ = std::move(history);
  steps_ = steps;
  return OkStatus();
}

// ---- DpFedAvgStrategy ----------------------------------------------------------

static uint64_t EntropySeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

DpFedAvgStrategy::DpFedAvgStrategy(TrainConfig train, DpFedAvgOptions options)
    : train_(train), o_(options), base_seed_(options.seed != 0 ? options.seed : EntropySeed()) {}

TrainConfig DpFedAvgStrategy::ConfigureTrain(RoundId, const ParameterVector&) { return train_; }

Status DpFedAvgStrategy::BeginRound(RoundId round, const ParameterVector& global) {
  sum_.assign(global.size(), 0.0f);
  scratch_.resize(global.size());
  count_ = clipped_ = rejected_ = 0;
  round_ = round;
  begun_ = true;
  return OkStatus();
}

Status DpFedAvgStrategy::AddResult(const ClientResult& result) {
  if (!begun_) return FailedPreconditionError("AddResult before BeginRound");
  Status st = result.delta.DecodeInto(scratch_);
  if (st.ok() && !internal::AllFiniteFast(scratch_.data(), scratch_.size())) st = DataLossError("update holds NaN or Inf");
  if (!st.ok()) {
    ++rejected_;
    return st;
  }
  double sq = 0.0;
  for (float v : scratch_) sq += static_cast<double>(v) * v;
  const double norm = std::sqrt(sq);
  double scale = 1.0;
  if (norm > o_.clip_norm) {
    scale = o_.clip_norm / norm;
    ++clipped_;
  }
  const float s = static_cast<float>(scale);
  float* __restrict acc = sum_.data();
  const float* __restrict x = scratch_.data();
  for (size_t i = 0; i < sum_.size(); ++i) acc[i] += s * x[i];
  ++count_;
  return OkStatus();
}

Result<std::optional<ParameterVector>> DpFedAvgStrategy::FinishRound(
    RoundId round, const ParameterVector& global, std::span<const ClientFailure> failures) {
  if (!begun_) return FailedPreconditionError("FinishRound before BeginRound");
  begun_ = false;
  metrics_.clear();
  metrics_["aggregated_updates"] = static_cast<double>(count_);
  metrics_["rejected_updates"] = static_cast<double>(rejected_);
  metrics_["failed_clients"] = static_cast<double>(failures.size());
  auto report_privacy = [&] {
    auto [eps, order] = accountant_.GetPrivacySpent(o_.delta);
    metrics_["dp_epsilon"] = eps;
    metrics_["dp_optimal_order"] = order;
    metrics_["dp_delta"] = o_.delta;
    metrics_["dp_rounds"] = static_cast<double>(accountant_.steps());
    metrics_["dp_sample_rate"] = o_.sample_rate;
    metrics_["dp_noise_multiplier"] = o_.noise_multiplier;
    metrics_["dp_clip_norm"] = o_.clip_norm;
  };
  if (count_ == 0) {
    // Nothing released this round: no privacy spent.
    std::vector<float>().swap(sum_);
    report_privacy();
    return std::optional<ParameterVector>();
  }
  if (sum_.size() != global.size()) return InvalidArgumentError("model size changed during the round");
  // Noise on the sum with std z * S (sensitivity S under add/remove-one), then
  // divide by n: std z * S / n on the mean.
  const double n = static_cast<double>(count_);
  const double sum_std = o_.noise_multiplier * o_.clip_norm;
  Rng rng = Rng(base_seed_).Fork(round);
  const float inv_n = static_cast<float>(1.0 / n);
  const float lr = static_cast<float>(o_.server_lr);
  const auto g = global.values();
  for (size_t i = 0; i < sum_.size(); ++i) {
    const float noisy = sum_[i] + static_cast<float>(sum_std * rng.Normal());
    sum_[i] = g[i] + lr * (noisy * inv_n);
  }
  accountant_.Compose(o_.sample_rate, o_.noise_multiplier, 1);
  report_privacy();
  metrics_["dp_noise_std"] = sum_std / n;
  metrics_["dp_clipped_fraction"] = static_cast<double>(clipped_) / n;
  auto next = ParameterVector::FromValues(global.layout(), std::move(sum_));
  sum_.clear();
  if (!next.ok()) return next.status();
  if (!next->AllFinite()) return InternalError("aggregated model is not finite");
  return std::optional<ParameterVector>(std::move(*next));
}

Result<std::string> DpFedAvgStrategy::SaveState() const {
  StateWriter w("VSTR", 1);
  w.String(Name());
  w.String(accountant_.SaveState());
  return w.Take();
}

Status DpFedAvgStrategy::RestoreState(std::string_view state) {
  StateReader r(state);
  VERDANT_RETURN_IF_ERROR(r.Header("VSTR", 1));
  std::string name, acc;
  VERDANT_RETURN_IF_ERROR(r.String(name));
  if (name != Name()) {
    return InvalidArgumentError("state of strategy '" + name + "' given to '" + std::string(Name()) + "'");
  }
  VERDANT_RETURN_IF_ERROR(r.String(acc));
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  RdpAccountant restored;
  VERDANT_RETURN_IF_ERROR(restored.RestoreState(acc));
  accountant_ = std::move(restored);
  return OkStatus();
}

Result<std::unique_ptr<Strategy>> MakeDpFedAvgStrategy(const OptionMap& o) {
  VERDANT_ASSIGN_OR_RETURN(TrainConfig train, TrainConfigFromOptions(o));
  DpFedAvgOptions d;
  VERDANT_ASSIGN_OR_RETURN(d.clip_norm, o.GetDouble("clip_norm", d.clip_norm));
  VERDANT_ASSIGN_OR_RETURN(d.noise_multiplier, o.GetDouble("noise_multiplier", d.noise_multiplier));
  VERDANT_ASSIGN_OR_RETURN(d.delta, o.GetDouble("delta", d.delta));
  VERDANT_ASSIGN_OR_RETURN(d.server_lr, o.GetDouble("server_lr", d.server_lr));
  VERDANT_ASSIGN_OR_RETURN(int64_t seed, o.GetInt("seed", 0));
  const bool has_rate = o.Has("sample_rate");
  const bool has_cpr = o.Has("clients_per_round"), has_num = o.Has("num_clients");
  VERDANT_ASSIGN_OR_RETURN(d.sample_rate, o.GetDouble("sample_rate", 1.0));
  VERDANT_ASSIGN_OR_RETURN(int64_t cpr, o.GetInt("clients_per_round", 0));
  VERDANT_ASSIGN_OR_RETURN(int64_t num, o.GetInt("num_clients", 0));
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("strategy 'dp-fedavg'"));
  if (!has_rate && (has_cpr || has_num)) {
    if (!(has_cpr && has_num)) {
      return InvalidArgumentError(
          "dp-fedavg: give sample_rate, or both clients_per_round and num_clients");
    }
    if (cpr < 1 || num < 1 || cpr > num) {
      return InvalidArgumentError("dp-fedavg: need 1 <= clients_per_round <= num_clients, got " +
                                  std::to_string(cpr) + " and " + std::to_string(num));
    }
    d.sample_rate = static_cast<double>(cpr) / static_cast<double>(num);
  }
  if (!(d.clip_norm > 0.0)) return InvalidArgumentError("dp-fedavg: clip_norm must be > 0");
  if (!(d.noise_multiplier >= 0.0)) return InvalidArgumentError("dp-fedavg: noise_multiplier must be >= 0");
  if (!(d.delta > 0.0 && d.delta < 1.0)) return InvalidArgumentError("dp-fedavg: delta must be in (0, 1)");
  if (!(d.sample_rate > 0.0 && d.sample_rate <= 1.0)) {
    return InvalidArgumentError("dp-fedavg: sample_rate must be in (0, 1]");
  }
  if (!(d.server_lr > 0.0)) return InvalidArgumentError("dp-fedavg: server_lr must be > 0");
  if (seed < 0) return InvalidArgumentError("dp-fedavg: seed must be >= 0");
  d.seed = static_cast<uint64_t>(seed);
  return std::unique_ptr<Strategy>(std::make_unique<DpFedAvgStrategy>(train, d));
}

}  // namespace verdant
