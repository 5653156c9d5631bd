// verdant/aggregation/server_optimizer.h
//
// ServerOptimizer: applies the round's aggregated pseudo-gradient (the
// weighted mean of client deltas, local - global) to the global model, as in
// Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2.
// FedAvg is plain SGD with server learning rate 1: global += mean_delta.
//   auto opt = CreateServerOptimizer("adam", OptionMap{{"server_lr", "0.01"}});
//   VERDANT_RETURN_IF_ERROR((*opt)->Apply(global.values(), mean_delta));
//   auto state = (*opt)->SaveState();   // moments, for checkpoints
// Built-ins: "sgd", "momentum" (FedAvgM), "adagrad", "adam", "yogi".
// Thread-safety: not thread-safe; called from the coordinator's round thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"

namespace verdant {

class ServerOptimizer {
 public:
  virtual ~ServerOptimizer() = default;
  ServerOptimizer(const ServerOptimizer&) = delete;
  ServerOptimizer& operator=(const ServerOptimizer&) = delete;
  virtual std::string_view Name() const = 0;
  // model += step(delta). kInvalidArgument on a size mismatch (model unchanged).
  virtual Status Apply(std::span<float> model, std::span<const float> delta) = 0;
  // Same step, written the other way round: on entry `delta_inout` holds the
  // aggregated delta, on return the new model (model + step(delta)). Saves a
  // model-sized copy at the end of a round. The default copies through
  // Apply; the built-ins override it. kInvalidArgument on a size mismatch.
  virtual Status ApplyInto(std::span<const float> model, std::span<float> delta_inout);
  // Opaque optimizer state (momentum, moments) for checkpoints. RestoreState
  // of SaveState's bytes gives an optimizer whose SaveState is byte-identical.
  // kDataLoss on malformed state, kInvalidArgument on state of another
  // optimizer.
  virtual Result<std::string> SaveState() const { return std::string(); }
  virtual Status RestoreState(std::string_view state) { return OkStatus(); }

 protected:
  ServerOptimizer() = default;
};

// model += server_lr * delta.
class SgdServerOptimizer final : public ServerOptimizer {
 public:
  explicit SgdServerOptimizer(double server_lr = 1.0) : lr_(server_lr) {}
  std::string_view Name() const override { return "sgd"; }
  Status Apply(std::span<float> model, std::span<const float> delta) override;
  Status ApplyInto(std::span<const float> model, std::span<float> delta_inout) override;

 private:
  double lr_;
};

// Server momentum (FedAvgM, Hsu et al. 2019, "Measuring the Effects of
// Non-Identical Data Distribution for Federated Visual Classification"):
//   v = momentum * v + delta;  model += server_lr * v
// (the same update as Flower's FedAvgM with pseudo-gradient -delta).
class MomentumServerOptimizer final : public ServerOptimizer {
 public:
  MomentumServerOptimizer(double server_lr, double momentum) : lr_(server_lr), beta_(momentum) {}
  std::string_view Name() const override { return "momentum"; }
  Status Apply(std::span<float> model, std::span<const float> delta) override;
  Status ApplyInto(std::span<const float> model, std::span<float> delta_inout) override;
  Result<std::string> SaveState() const override;
  Status RestoreState(std::string_view state) override;
  const std::vector<float>& velocity() const { return v_; }

 private:
  double lr_, beta_;
  std::vector<float> v_;  // empty until the first step
};

// FedAdagrad / FedAdam / FedYogi: Reddi et al. 2021, Algorithm 2.
//   m_t = beta1 m_{t-1} + (1 - beta1) delta
//   v_t = v_{t-1} + delta^2                                      (adagrad)
//   v_t = beta2 v_{t-1} + (1 - beta2) delta^2                    (adam)
//   v_t = v_{t-1} - (1 - beta2) delta^2 sign(v_{t-1} - delta^2)  (yogi)
//   model += server_lr * m_t / (sqrt(v_t) + tau)
// with m_{-1} = 0 and v_{-1} = tau^2 as in the paper (no bias correction,
// unless bias_correction is set: then server_lr is scaled by
// sqrt(1 - beta2^t) / (1 - beta1^t) as Flower's FedAdam does).
struct AdaptiveOptimizerOptions {
  enum class Kind { kAdagrad, kAdam, kYogi };
  Kind kind = Kind::kAdam;
  double server_lr = 0.1;  // eta
  double beta1 = 0.9;      // first-moment decay, [0, 1)
  double beta2 = 0.99;     // second-moment decay, [0, 1) (unused by adagrad)
  double tau = 1e-3;       // adaptivity / epsilon, > 0
  bool bias_correction = false;
};

class AdaptiveServerOptimizer final : public ServerOptimizer {
 public:
  explicit AdaptiveServerOptimizer(AdaptiveOptimizerOptions options) : o_(options) {}
  std::string_view Name() const override;
  Status Apply(std::span<float> model, std::span<const float> delta) override;
  Status ApplyInto(std::span<const float> model, std::span<float> delta_inout) override;
  Result<std::string> SaveState() const override;
  Status RestoreState(std::string_view state) override;
  uint64_t steps() const { return t_; }
  const std::vector<float>& first_moment() const { return m_; }
  const std::vector<float>& second_moment() const { return v_; }

 private:
  // Shared kernel: writes model + step into out (out may alias delta).
  Status Step(std::span<const float> model, std::span<const float> delta, std::span<float> out);
  AdaptiveOptimizerOptions o_;
  uint64_t t_ = 0;
  std::vector<float> m_, v_;  // empty until the first step
};

// Registry of server optimizers. Options: server_lr (all); momentum
// ("momentum"); beta1, beta2, tau, bias_correction ("adagrad"/"adam"/"yogi").
Registry<ServerOptimizer>& ServerOptimizerRegistry();
Result<std::unique_ptr<ServerOptimizer>> CreateServerOptimizer(const std::string& name,
                                                               const OptionMap& options);

}  // namespace verdant
