#include "verdant/aggregation/strategy.h"

namespace verdant {

FedAvgStrategy::FedAvgStrategy(TrainConfig train, std::unique_ptr<Aggregator> aggregator,
                               std::unique_ptr<ServerOptimizer> optimizer, std::string name)
    : train_(train),
      aggregator_(std::move(aggregator)),
      optimizer_(std::move(optimizer)),
      name_(std::move(name)) {}

TrainConfig FedAvgStrategy::ConfigureTrain(RoundId, const ParameterVector&) { return train_; }

Status FedAvgStrategy::BeginRound(RoundId, const ParameterVector& global) {
  return aggregator_->Begin(global.size());
}

Status FedAvgStrategy::AddResult(const ClientResult& result) {
  return aggregator_->Add(result.delta, static_cast<double>(result.num_examples));
}

Result<std::optional<ParameterVector>> FedAvgStrategy::FinishRound(
    RoundId, const ParameterVector& global, std::span<const ClientFailure>) {
  if (aggregator_->count() == 0) return std::optional<ParameterVector>();
  auto mean = aggregator_->Finish();
  if (!mean.ok()) {
    // Every result had weight zero: keep the model.
    if (mean.status().code() == StatusCode::kFailedPrecondition) return std::optional<ParameterVector>();
    return mean.status();
  }
  ParameterVector next = global;
  VERDANT_RETURN_IF_ERROR(optimizer_->Apply(next.values(), *mean));
  if (!next.AllFinite()) return InternalError("aggregated model is not finite");
  return std::optional<ParameterVector>(std::move(next));
}

Result<TrainConfig> TrainConfigFromOptions(const OptionMap& o) {
  TrainConfig c;
  VERDANT_ASSIGN_OR_RETURN(int64_t epochs, o.GetInt("local_epochs", c.local_epochs));
  VERDANT_ASSIGN_OR_RETURN(int64_t batch, o.GetInt("batch_size", c.batch_size));
  VERDANT_ASSIGN_OR_RETURN(double lr, o.GetDouble("lr", c.learning_rate));
  VERDANT_ASSIGN_OR_RETURN(double mu, o.GetDouble("mu", c.proximal_mu));
  VERDANT_ASSIGN_OR_RETURN(int64_t max_ex, o.GetInt("max_examples", 0));
  if (epochs < 1 || epochs > 1000) return InvalidArgumentError("local_epochs must be in 1..1000");
  if (batch < 1 || batch > 65536) return InvalidArgumentError("batch_size must be in 1..65536");
  if (!(lr > 0.0)) return InvalidArgumentError("lr must be > 0");
  if (mu < 0.0) return InvalidArgumentError("mu must be >= 0");
  if (max_ex < 0) return InvalidArgumentError("max_examples must be >= 0");
  c.local_epochs = static_cast<uint32_t>(epochs);
  c.batch_size = static_cast<uint32_t>(batch);
  c.learning_rate = static_cast<float>(lr);
  c.proximal_mu = static_cast<float>(mu);
  c.max_examples = static_cast<uint64_t>(max_ex);
  return c;
}

static Result<std::unique_ptr<Strategy>> MakeFedAvg(const OptionMap& o) {
  VERDANT_ASSIGN_OR_RETURN(TrainConfig train, TrainConfigFromOptions(o));
  VERDANT_ASSIGN_OR_RETURN(double server_lr, o.GetDouble("server_lr", 1.0));
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("strategy 'fedavg'"));
  VERDANT_ASSIGN_OR_RETURN(auto agg, CreateAggregator("mean", OptionMap()));
  OptionMap opt_options;
  opt_options.Set("server_lr", std::to_string(server_lr));
  VERDANT_ASSIGN_OR_RETURN(auto opt, CreateServerOptimizer("sgd", opt_options));
  return std::unique_ptr<Strategy>(
      std::make_unique<FedAvgStrategy>(train, std::move(agg), std::move(opt)));
}

Registry<Strategy>& StrategyRegistry() {
  static Registry<Strategy>* reg = [] {
    auto* r = new Registry<Strategy>("strategy");
    r->Register("fedavg", MakeFedAvg).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<Strategy>> CreateStrategy(const std::string& name, const OptionMap& options) {
  return StrategyRegistry().Create(name, options);
}

}  // namespace verdant
