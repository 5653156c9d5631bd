#include "verdant/aggregation/strategy.h"

#include <spdlog/spdlog.h>

#include "verdant/aggregation/dp.h"
#include "verdant/core/state_io.h"

namespace verdant {

FedAvgStrategy::FedAvgStrategy(TrainConfig train, std::unique_ptr<Aggregator> aggregator,
                               std::unique_ptr<ServerOptimizer> optimizer, std::string name)
    : train_(train),
      aggregator_(std::move(aggregator)),
      optimizer_(std::move(optimizer)),
      name_(std::move(name)) {}

TrainConfig FedAvgStrategy::ConfigureTrain(RoundId, const ParameterVector&) { return train_; }

Status FedAvgStrategy::BeginRound(RoundId, const ParameterVector& global) {
  rejected_ = 0;
  return aggregator_->Begin(global.size());
}

Status FedAvgStrategy::AddResult(const ClientResult& result) {
  Status st = aggregator_->Add(result.delta, static_cast<double>(result.num_examples));
  if (!st.ok()) ++rejected_;
  return st;
}

Result<std::optional<ParameterVector>> FedAvgStrategy::FinishRound(
    RoundId round, const ParameterVector& global, std::span<const ClientFailure> failures) {
  metrics_.clear();
  metrics_["aggregated_updates"] = static_cast<double>(aggregator_->count());
  metrics_["rejected_updates"] = static_cast<double>(rejected_);
  metrics_["failed_clients"] = static_cast<double>(failures.size());
  metrics_["model_updated"] = 0.0;
  if (aggregator_->count() == 0) return std::optional<ParameterVector>();
  auto mean = aggregator_->Finish();
  if (!mean.ok()) {
    // Every result had weight zero, or too few for the rule: keep the model.
    if (mean.status().code() == StatusCode::kFailedPrecondition) {
      spdlog::warn("{} round {}: keeping the model: {}", name_, round, mean.status().message());
      return std::optional<ParameterVector>();
    }
    return mean.status();
  }
  for (const auto& [k, v] : aggregator_->Metrics()) metrics_[k] = v;
  // The aggregate buffer becomes the next model: no extra model-sized copy.
  std::vector<float> values = std::move(*mean);
  VERDANT_RETURN_IF_ERROR(optimizer_->ApplyInto(global.values(), values));
  VERDANT_ASSIGN_OR_RETURN(ParameterVector next,
                           ParameterVector::FromValues(global.layout(), std::move(values)));
  if (!next.AllFinite()) return InternalError("aggregated model is not finite");
  metrics_["model_updated"] = 1.0;
  return std::optional<ParameterVector>(std::move(next));
}

Result<std::string> FedAvgStrategy::SaveState() const {
  VERDANT_ASSIGN_OR_RETURN(std::string opt, optimizer_->SaveState());
  StateWriter w("VSTR", 1);
  w.String(name_);
  w.String(opt);
  return w.Take();
}

Status FedAvgStrategy::RestoreState(std::string_view state) {
  StateReader r(state);
  VERDANT_RETURN_IF_ERROR(r.Header("VSTR", 1));
  std::string name, opt;
  VERDANT_RETURN_IF_ERROR(r.String(name));
  if (name != name_) {
    return InvalidArgumentError("state of strategy '" + name + "' given to '" + name_ + "'");
  }
  VERDANT_RETURN_IF_ERROR(r.String(opt));
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  return optimizer_->RestoreState(opt);
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

namespace {

// How a built-in is assembled: which aggregator and server optimizer, which
// of the strategy's option keys go to each, and per-strategy defaults.
struct Recipe {
  std::string aggregator;
  std::vector<std::string> aggregator_keys;
  std::string optimizer;
  std::vector<std::string> optimizer_keys;
  std::map<std::string, std::string> defaults;  // applied when the user gave none
};

// Moves `keys` from `from` (marking them used) into `to`, falling back to
// `defaults`; the raw strings travel, so no precision is lost.
Status Forward(const OptionMap& from, const std::vector<std::string>& keys,
               const std::map<std::string, std::string>& defaults, OptionMap& to) {
  for (const auto& k : keys) {
    auto d = defaults.find(k);
    if (from.Has(k)) {
      VERDANT_ASSIGN_OR_RETURN(std::string v, from.GetString(k, ""));
      to.Set(k, v);
    } else if (d != defaults.end()) {
      to.Set(k, d->second);
    }
  }
  return OkStatus();
}

Result<std::unique_ptr<Strategy>> Build(const std::string& name, const Recipe& recipe,
                                        const OptionMap& o) {
  VERDANT_ASSIGN_OR_RETURN(TrainConfig train, TrainConfigFromOptions(o));
  auto mu_default = recipe.defaults.find("mu");
  if (!o.Has("mu") && mu_default != recipe.defaults.end()) {
    train.proximal_mu = std::stof(mu_default->second);
  }
  OptionMap agg_options, opt_options;
  VERDANT_RETURN_IF_ERROR(Forward(o, recipe.aggregator_keys, recipe.defaults, agg_options));
  VERDANT_RETURN_IF_ERROR(Forward(o, recipe.optimizer_keys, recipe.defaults, opt_options));
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("strategy '" + name + "'"));
  auto agg = CreateAggregator(recipe.aggregator, agg_options);
  if (!agg.ok()) return agg.status().WithContext("strategy '" + name + "'");
  auto opt = CreateServerOptimizer(recipe.optimizer, opt_options);
  if (!opt.ok()) return opt.status().WithContext("strategy '" + name + "'");
  return std::unique_ptr<Strategy>(
      std::make_unique<FedAvgStrategy>(train, std::move(*agg), std::move(*opt), name));
}

// The built-ins. Defaults of the adaptive optimizers follow Flower's
// FedAdagrad/FedAdam/FedYogi (flwr >= 1.20); see docs/strategies.md.
std::map<std::string, Recipe> Recipes() {
  const std::vector<std::string> adaptive{"server_lr", "beta1", "beta2", "tau", "bias_correction"};
  return {
      {"fedavg", {"mean", {}, "sgd", {"server_lr"}, {}}},
      {"fedprox", {"mean", {}, "sgd", {"server_lr"}, {{"mu", "0.01"}}}},
      {"fedavgm", {"mean", {}, "momentum", {"server_lr", "momentum"}, {}}},
      {"fedadagrad",
       {"mean", {}, "adagrad", {"server_lr", "beta1", "tau", "bias_correction"},
        {{"server_lr", "0.1"}, {"beta1", "0.0"}, {"tau", "1e-3"}}}},
      {"fedadam",
       {"mean", {}, "adam", adaptive,
        {{"server_lr", "0.1"}, {"beta1", "0.9"}, {"beta2", "0.99"}, {"tau", "1e-3"}}}},
      {"fedyogi",
       {"mean", {}, "yogi", adaptive,
        {{"server_lr", "0.01"}, {"beta1", "0.9"}, {"beta2", "0.99"}, {"tau", "1e-3"}}}},
      {"median", {"median", {}, "sgd", {"server_lr"}, {}}},
      {"trimmedmean", {"trimmedmean", {"beta"}, "sgd", {"server_lr"}, {}}},
      {"krum", {"krum", {"f"}, "sgd", {"server_lr"}, {}}},
      {"multikrum", {"multikrum", {"f", "m"}, "sgd", {"server_lr"}, {}}},
  };
}

}  // namespace

Registry<Strategy>& StrategyRegistry() {
  static Registry<Strategy>* reg = [] {
    auto* r = new Registry<Strategy>("strategy");
    for (auto& [name, recipe] : Recipes()) {
      r->Register(name, [name = name, recipe = recipe](const OptionMap& o) {
         return Build(name, recipe, o);
       }).IgnoreError();
    }
    r->Register("dp-fedavg", MakeDpFedAvgStrategy).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<Strategy>> CreateStrategy(const std::string& name, const OptionMap& options) {
  return StrategyRegistry().Create(name, options);
}

}  // namespace verdant
