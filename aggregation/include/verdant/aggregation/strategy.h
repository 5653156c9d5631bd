// verdant/aggregation/strategy.h
//
// A Strategy decides each round what the selected clients train with, and
// how their updates (and failures) become the next global model. The
// coordinator calls, per round:
//   auto s = CreateStrategy("fedavg", options);
//   auto cfg = (*s)->ConfigureTrain(round, global);          // hyper-parameters
//   VERDANT_RETURN_IF_ERROR((*s)->BeginRound(round, global));
//   for (each result as it arrives) (*s)->AddResult(result);  // streaming
//   auto next = (*s)->FinishRound(round, global, failures);   // new model or nullopt
//   auto metrics = (*s)->RoundMetrics();   // e.g. {"dp_epsilon", 1.7}
// Built-ins (CreateStrategy names): fedavg, fedavgm, fedprox, fedadagrad,
// fedadam, fedyogi, median, trimmedmean, krum, multikrum, dp-fedavg (dp.h);
// docs/strategies.md lists their options, defaults and references.
// Thread-safety: not thread-safe; the coordinator calls it from its round
// thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verdant/aggregation/aggregator.h"
#include "verdant/aggregation/server_optimizer.h"
#include "verdant/core/options.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"

namespace verdant {

using RoundId = uint64_t;

// What the selected clients train with this round (sent in TrainTask).
struct TrainConfig {
  uint32_t local_epochs = 1;
  uint32_t batch_size = 32;
  float learning_rate = 0.05f;
  float proximal_mu = 0.0f;  // FedProx; 0 = plain local SGD
  uint64_t max_examples = 0;  // 0 = all local examples
};

// A successful client result: its delta (local - global) and weight.
struct ClientResult {
  std::string client_id;
  uint64_t num_examples = 0;
  double train_loss = 0.0;
  UpdateView delta;
};

// A selected client that did not deliver, and why.
struct ClientFailure {
  std::string client_id;
  Status reason;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;
  virtual std::string_view Name() const = 0;
  // True when the rule needs each update individually.
  virtual bool NeedsIndividualUpdates() const = 0;

  // Hyper-parameters for this round's training tasks.
  virtual TrainConfig ConfigureTrain(RoundId round, const ParameterVector& global) = 0;
  // Starts aggregation for `round`.
  virtual Status BeginRound(RoundId round, const ParameterVector& global) = 0;
  // Folds one result as it arrives. On error (bad shape, NaN, malformed
  // encoding) the result is not counted; the caller records the client as
  // failed and the round goes on.
  virtual Status AddResult(const ClientResult& result) = 0;
  // The next global model, or std::nullopt to keep the current one (no
  // usable result). Failures are data: a strategy may use them.
  virtual Result<std::optional<ParameterVector>> FinishRound(
      RoundId round, const ParameterVector& global, std::span<const ClientFailure> failures) = 0;

  // Opaque state for checkpoints and resume (optimizer moments, momentum,
  // privacy accountant). RestoreState(SaveState()) on a strategy created
  // with the same name and options continues the run exactly, and a second
  // SaveState is byte-identical. kDataLoss on malformed state,
  // kInvalidArgument on another strategy's state.
  virtual Result<std::string> SaveState() const { return std::string(); }
  virtual Status RestoreState(std::string_view state) { return OkStatus(); }

  // Figures about the last FinishRound for the round report (names in
  // snake_case, e.g. "aggregated_updates", "dp_epsilon"). Default: none.
  virtual std::map<std::string, double> RoundMetrics() const { return {}; }

 protected:
  Strategy() = default;
};

// FedAvg (McMahan et al. 2017): example-weighted streaming mean of the
// deltas, applied by a ServerOptimizer (plain SGD with lr 1 by default, which
// is exactly FedAvg). Options: local_epochs, batch_size, lr, server_lr.
// The same class, with another Aggregator and/or ServerOptimizer, is
// fedavgm, fedprox, fedadagrad, fedadam, fedyogi, median, trimmedmean, krum
// and multikrum. Updates of every client share one aggregate; a round whose
// aggregate cannot be formed (no update, all weights zero, too few updates
// for the rule) keeps the model.
class FedAvgStrategy : public Strategy {
 public:
  FedAvgStrategy(TrainConfig train, std::unique_ptr<Aggregator> aggregator,
                 std::unique_ptr<ServerOptimizer> optimizer, std::string name = "fedavg");
  std::string_view Name() const override { return name_; }
  bool NeedsIndividualUpdates() const override { return aggregator_->NeedsIndividualUpdates(); }
  TrainConfig ConfigureTrain(RoundId round, const ParameterVector& global) override;
  Status BeginRound(RoundId round, const ParameterVector& global) override;
  Status AddResult(const ClientResult& result) override;
  Result<std::optional<ParameterVector>> FinishRound(
      RoundId round, const ParameterVector& global,
      std::span<const ClientFailure> failures) override;
  // State: the server optimizer's (momentum, moments), tagged with the
  // strategy's name.
  Result<std::string> SaveState() const override;
  Status RestoreState(std::string_view state) override;
  // aggregated_updates, rejected_updates, failed_clients, model_updated
  // (0/1), plus the aggregator's own figures (e.g. krum_selected).
  std::map<std::string, double> RoundMetrics() const override { return metrics_; }
  const ServerOptimizer& optimizer() const { return *optimizer_; }

 protected:
  TrainConfig train_;
  std::unique_ptr<Aggregator> aggregator_;
  std::unique_ptr<ServerOptimizer> optimizer_;
  std::string name_;
  size_t rejected_ = 0;
  std::map<std::string, double> metrics_;
};

// Reads the common training options (local_epochs, batch_size, lr, mu,
// max_examples) from `options`.
Result<TrainConfig> TrainConfigFromOptions(const OptionMap& options);

// The process-wide strategy registry with the built-ins registered; plug-ins
// add theirs through RegisterAggregationPluginKinds (plugins.h).
Registry<Strategy>& StrategyRegistry();
// kInvalidArgument listing the registered names for an unknown name, or
// naming a bad/unknown option.
Result<std::unique_ptr<Strategy>> CreateStrategy(const std::string& name, const OptionMap& options);

}  // namespace verdant
