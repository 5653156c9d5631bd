#include "verdant/aggregation/server_optimizer.h"

#include <cmath>
#include <vector>

#include "verdant/core/state_io.h"

namespace verdant {

static Status CheckSizes(std::span<const float> model, size_t delta_size) {
  if (model.size() != delta_size) {
    return InvalidArgumentError("server optimizer: delta has " + std::to_string(delta_size) +
                                " values, the model " + std::to_string(model.size()));
  }
  return OkStatus();
}

Status ServerOptimizer::ApplyInto(std::span<const float> model, std::span<float> delta_inout) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta_inout.size()));
  std::vector<float> next(model.begin(), model.end());
  VERDANT_RETURN_IF_ERROR(Apply(next, delta_inout));
  std::copy(next.begin(), next.end(), delta_inout.begin());
  return OkStatus();
}

// ---- sgd ---------------------------------------------------------------------

Status SgdServerOptimizer::Apply(std::span<float> model, std::span<const float> delta) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta.size()));
  const float lr = static_cast<float>(lr_);
  float* __restrict x = model.data();
  const float* __restrict d = delta.data();
  const size_t n = model.size();
  for (size_t i = 0; i < n; ++i) x[i] += lr * d[i];
  return OkStatus();
}

Status SgdServerOptimizer::ApplyInto(std::span<const float> model, std::span<float> delta_inout) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta_inout.size()));
  const float lr = static_cast<float>(lr_);
  const float* __restrict x = model.data();
  float* __restrict d = delta_inout.data();
  const size_t n = model.size();
  for (size_t i = 0; i < n; ++i) d[i] = x[i] + lr * d[i];
  return OkStatus();
}

// ---- momentum ------------------------------------------------------------------

Status MomentumServerOptimizer::Apply(std::span<float> model, std::span<const float> delta) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta.size()));
  if (v_.empty()) v_.assign(model.size(), 0.0f);
  if (v_.size() != model.size()) {
    return InvalidArgumentError("momentum optimizer: model has " + std::to_string(model.size()) +
                                " values, its velocity " + std::to_string(v_.size()));
  }
  const float lr = static_cast<float>(lr_), beta = static_cast<float>(beta_);
  for (size_t i = 0; i < model.size(); ++i) {
    v_[i] = beta * v_[i] + delta[i];
    model[i] += lr * v_[i];
  }
  return OkStatus();
}

Status MomentumServerOptimizer::ApplyInto(std::span<const float> model,
                                          std::span<float> delta_inout) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta_inout.size()));
  if (v_.empty()) v_.assign(model.size(), 0.0f);
  if (v_.size() != model.size()) {
    return InvalidArgumentError("momentum optimizer: model has " + std::to_string(model.size()) +
                                " values, its velocity " + std::to_string(v_.size()));
  }
  const float lr = static_cast<float>(lr_), beta = static_cast<float>(beta_);
  for (size_t i = 0; i < model.size(); ++i) {
    v_[i] = beta * v_[i] + delta_inout[i];
    delta_inout[i] = model[i] + lr * v_[i];
  }
  return OkStatus();
}

Result<std::string> MomentumServerOptimizer::SaveState() const {
  StateWriter w("VOPT", 1);
  w.String(Name());
  w.Floats(v_);
  return w.Take();
}

Status MomentumServerOptimizer::RestoreState(std::string_view state) {
  StateReader r(state);
  VERDANT_RETURN_IF_ERROR(r.Header("VOPT", 1));
  std::string name;
  VERDANT_RETURN_IF_ERROR(r.String(name));
  if (name != Name()) {
    return InvalidArgumentError("state of server optimizer '" + name + "' given to '" +
                                std::string(Name()) + "'");
  }
  std::vector<float> v;
  VERDANT_RETURN_IF_ERROR(r.Floats(v));
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  v_ = std::move(v);
  return OkStatus();
}

// ---- adagrad / adam / yogi ---------------------------------------------------

std::string_view AdaptiveServerOptimizer::Name() const {
  switch (o_.kind) {
    case AdaptiveOptimizerOptions::Kind::kAdagrad:
      return "adagrad";
    case AdaptiveOptimizerOptions::Kind::kAdam:
      return "adam";
    case AdaptiveOptimizerOptions::Kind::kYogi:
      return "yogi";
  }
  return "adaptive";
}

Status AdaptiveServerOptimizer::Step(std::span<const float> model, std::span<const float> delta,
                                     std::span<float> out) {
  VERDANT_RETURN_IF_ERROR(CheckSizes(model, delta.size()));
  const size_t n = model.size();
  const float tau = static_cast<float>(o_.tau);
  if (m_.empty() && v_.empty()) {
    m_.assign(n, 0.0f);
    v_.assign(n, tau * tau);  // v_{-1} = tau^2 (Reddi et al. 2021, Algorithm 2)
  }
  if (m_.size() != n || v_.size() != n) {
    return InvalidArgumentError(std::string(Name()) + " optimizer: model has " + std::to_string(n) +
                                " values, its moments " + std::to_string(m_.size()));
  }
  ++t_;
  double lr = o_.server_lr;
  if (o_.bias_correction) {
    const double t = static_cast<double>(t_);
    const double c1 = 1.0 - std::pow(o_.beta1, t);
    const double c2 = o_.kind == AdaptiveOptimizerOptions::Kind::kAdagrad
                          ? 1.0
                          : 1.0 - std::pow(o_.beta2, t);
    if (c1 > 0.0) lr *= std::sqrt(c2) / c1;
  }
  const float eta = static_cast<float>(lr);
  const float b1 = static_cast<float>(o_.beta1), b2 = static_cast<float>(o_.beta2);
  float* m = m_.data();
  float* v = v_.data();
  for (size_t i = 0; i < n; ++i) {
    const float d = delta[i];
    const float d2 = d * d;
    m[i] = b1 * m[i] + (1.0f - b1) * d;
    switch (o_.kind) {
      case AdaptiveOptimizerOptions::Kind::kAdagrad:
        v[i] = v[i] + d2;
        break;
      case AdaptiveOptimizerOptions::Kind::kAdam:
        v[i] = b2 * v[i] + (1.0f - b2) * d2;
        break;
      case AdaptiveOptimizerOptions::Kind::kYogi: {
        const float diff = v[i] - d2;
        const float sign = diff > 0.0f ? 1.0f : (diff < 0.0f ? -1.0f : 0.0f);
        v[i] = v[i] - (1.0f - b2) * d2 * sign;
        break;
      }
    }
    out[i] = model[i] + eta * m[i] / (std::sqrt(v[i]) + tau);
  }
  return OkStatus();
}

Status AdaptiveServerOptimizer::Apply(std::span<float> model, std::span<const float> delta) {
  return Step(model, delta, model);
}

Status AdaptiveServerOptimizer::ApplyInto(std::span<const float> model,
                                          std::span<float> delta_inout) {
  return Step(model, delta_inout, delta_inout);
}

Result<std::string> AdaptiveServerOptimizer::SaveState() const {
  StateWriter w("VOPT", 1);
  w.String(Name());
  w.U64(t_);
  w.Floats(m_);
  w.Floats(v_);
  return w.Take();
}

Status AdaptiveServerOptimizer::RestoreState(std::string_view state) {
  StateReader r(state);
  VERDANT_RETURN_IF_ERROR(r.Header("VOPT", 1));
  std::string name;
  VERDANT_RETURN_IF_ERROR(r.String(name));
  if (name != Name()) {
    return InvalidArgumentError("state of server optimizer '" + name + "' given to '" +
                                std::string(Name()) + "'");
  }
  uint64_t t = 0;
  std::vector<float> m, v;
  VERDANT_RETURN_IF_ERROR(r.U64(t));
  VERDANT_RETURN_IF_ERROR(r.Floats(m));
  VERDANT_RETURN_IF_ERROR(r.Floats(v));
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  if (m.size() != v.size()) return DataLossError(std::string(Name()) + " state: moment sizes differ");
  t_ = t;
  m_ = std::move(m);
  v_ = std::move(v);
  return OkStatus();
}

// ---- registry ----------------------------------------------------------------

static Status CheckUnit(const char* key, double v, bool allow_one) {
  if (!(v >= 0.0) || (allow_one ? v > 1.0 : v >= 1.0)) {
    return InvalidArgumentError(std::string(key) + " must be in [0, 1" + (allow_one ? "]" : ")") +
                                ", got " + std::to_string(v));
  }
  return OkStatus();
}

static Result<std::unique_ptr<ServerOptimizer>> MakeAdaptive(AdaptiveOptimizerOptions::Kind kind,
                                                             const OptionMap& o) {
  AdaptiveOptimizerOptions a;
  a.kind = kind;
  VERDANT_ASSIGN_OR_RETURN(a.server_lr, o.GetDouble("server_lr", a.server_lr));
  VERDANT_ASSIGN_OR_RETURN(a.beta1, o.GetDouble("beta1", a.beta1));
  VERDANT_ASSIGN_OR_RETURN(a.beta2, o.GetDouble("beta2", a.beta2));
  VERDANT_ASSIGN_OR_RETURN(a.tau, o.GetDouble("tau", a.tau));
  VERDANT_ASSIGN_OR_RETURN(a.bias_correction, o.GetBool("bias_correction", false));
  if (!(a.server_lr > 0.0)) return InvalidArgumentError("server_lr must be > 0");
  VERDANT_RETURN_IF_ERROR(CheckUnit("beta1", a.beta1, false));
  VERDANT_RETURN_IF_ERROR(CheckUnit("beta2", a.beta2, false));
  if (!(a.tau > 0.0)) return InvalidArgumentError("tau must be > 0");
  return std::unique_ptr<ServerOptimizer>(std::make_unique<AdaptiveServerOptimizer>(a));
}

Registry<ServerOptimizer>& ServerOptimizerRegistry() {
  static Registry<ServerOptimizer>* reg = [] {
    auto* r = new Registry<ServerOptimizer>("server optimizer");
    r->Register("sgd", [](const OptionMap& o) -> Result<std::unique_ptr<ServerOptimizer>> {
       VERDANT_ASSIGN_OR_RETURN(double lr, o.GetDouble("server_lr", 1.0));
       if (!(lr > 0.0)) return InvalidArgumentError("server_lr must be > 0");
       return std::unique_ptr<ServerOptimizer>(std::make_unique<SgdServerOptimizer>(lr));
     }).IgnoreError();
    r->Register("momentum", [](const OptionMap& o) -> Result<std::unique_ptr<ServerOptimizer>> {
       VERDANT_ASSIGN_OR_RETURN(double lr, o.GetDouble("server_lr", 1.0));
       VERDANT_ASSIGN_OR_RETURN(double beta, o.GetDouble("momentum", 0.9));
       if (!(lr > 0.0)) return InvalidArgumentError("server_lr must be > 0");
       VERDANT_RETURN_IF_ERROR(CheckUnit("momentum", beta, false));
       return std::unique_ptr<ServerOptimizer>(std::make_unique<MomentumServerOptimizer>(lr, beta));
     }).IgnoreError();
    r->Register("adagrad", [](const OptionMap& o) {
       return MakeAdaptive(AdaptiveOptimizerOptions::Kind::kAdagrad, o);
     }).IgnoreError();
    r->Register("adam", [](const OptionMap& o) {
       return MakeAdaptive(AdaptiveOptimizerOptions::Kind::kAdam, o);
     }).IgnoreError();
    r->Register("yogi", [](const OptionMap& o) {
       return MakeAdaptive(AdaptiveOptimizerOptions::Kind::kYogi, o);
     }).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<ServerOptimizer>> CreateServerOptimizer(const std::string& name,
                                                               const OptionMap& options) {
  return ServerOptimizerRegistry().Create(name, options);
}

}  // namespace verdant
