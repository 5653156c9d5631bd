// verdant/aggregation/server_optimizer.h
//
// ServerOptimizer: applies the round's aggregated pseudo-gradient (the
// weighted mean of client deltas, local - global) to the global model, as in
// Reddi et al., "Adaptive Federated Optimization". FedAvg is plain SGD with
// server learning rate 1: global += mean_delta.
//   auto opt = CreateServerOptimizer("sgd", OptionMap{{"server_lr", "1.0"}});
//   VERDANT_RETURN_IF_ERROR((*opt)->Apply(global.values(), mean_delta));
// Thread-safety: not thread-safe; called from the coordinator's round thread.
#pragma once

#include <memory>
#include <span>
#include <string>

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
  // Opaque optimizer state (momentum, moments) for checkpoints.
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

 private:
  double lr_;
};

Registry<ServerOptimizer>& ServerOptimizerRegistry();
Result<std::unique_ptr<ServerOptimizer>> CreateServerOptimizer(const std::string& name,
                                                               const OptionMap& options);

}  // namespace verdant
