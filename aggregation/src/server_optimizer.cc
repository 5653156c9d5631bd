#include "verdant/aggregation/server_optimizer.h"

namespace verdant {

Status SgdServerOptimizer::Apply(std::span<float> model, std::span<const float> delta) {
  if (model.size() != delta.size()) {
    return InvalidArgumentError("server optimizer: delta has " + std::to_string(delta.size()) +
                                " values, the model " + std::to_string(model.size()));
  }
  const float lr = static_cast<float>(lr_);
  for (size_t i = 0; i < model.size(); ++i) model[i] += lr * delta[i];
  return OkStatus();
}

Registry<ServerOptimizer>& ServerOptimizerRegistry() {
  static Registry<ServerOptimizer>* reg = [] {
    auto* r = new Registry<ServerOptimizer>("server optimizer");
    r->Register("sgd", [](const OptionMap& o) -> Result<std::unique_ptr<ServerOptimizer>> {
       VERDANT_ASSIGN_OR_RETURN(double lr, o.GetDouble("server_lr", 1.0));
       if (!(lr > 0.0)) return InvalidArgumentError("server_lr must be > 0");
       return std::unique_ptr<ServerOptimizer>(std::make_unique<SgdServerOptimizer>(lr));
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
