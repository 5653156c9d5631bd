// examples/custom_strategy/clipped_mean_strategy.cc
//
// A complete aggregation rule in one file, loaded as a plug-in:
//   verdant demo --plugin build/examples/libverdant_clipped_mean.so --strategy clippedmean
//
// "clippedmean": the example-weighted mean of the client deltas after each
// delta is scaled down to L2 norm at most `clip_norm` (a cheap defence
// against a few clients sending huge updates; DP-FedAvg without the noise),
// applied with a server learning rate that decays as
// server_lr / (1 + decay * (round - 1)).
// Options: clip_norm (default 10), server_lr (1.0), decay (0.0), and the
// usual training options (local_epochs, batch_size, lr, ...).
//
// It streams: one model-sized sum plus one scratch buffer, whatever the
// number of clients. Build: see examples/examples.cmake (a MODULE library
// linked with verdant::aggregation).
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/plugin.h"

namespace {

using namespace verdant;

class ClippedMeanStrategy final : public Strategy {
 public:
  ClippedMeanStrategy(TrainConfig train, double clip_norm, double server_lr, double decay)
      : train_(train), clip_(clip_norm), lr_(server_lr), decay_(decay) {}

  std::string_view Name() const override { return "clippedmean"; }
  bool NeedsIndividualUpdates() const override { return true; }  // clips each update

  TrainConfig ConfigureTrain(RoundId, const ParameterVector&) override { return train_; }

  Status BeginRound(RoundId, const ParameterVector& global) override {
    sum_.assign(global.size(), 0.0f);
    scratch_.resize(global.size());
    total_weight_ = 0.0;
    count_ = clipped_ = 0;
    return OkStatus();
  }

  Status AddResult(const ClientResult& r) override {
    // Decode (any codec) and reject non-finite updates before touching sum_.
    VERDANT_RETURN_IF_ERROR(r.delta.DecodeInto(scratch_));
    if (!AllFinite(scratch_)) return DataLossError("update holds NaN or Inf");
    double sq = 0.0;
    for (float v : scratch_) sq += double(v) * v;
    const double norm = std::sqrt(sq);
    double scale = 1.0;
    if (norm > clip_) {
      scale = clip_ / norm;
      ++clipped_;
    }
    const double w = static_cast<double>(r.num_examples);
    const float ws = static_cast<float>(w * scale);
    for (size_t i = 0; i < sum_.size(); ++i) sum_[i] += ws * scratch_[i];
    total_weight_ += w;
    ++count_;
    return OkStatus();
  }

  Result<std::optional<ParameterVector>> FinishRound(
      RoundId round, const ParameterVector& global, std::span<const ClientFailure>) override {
    if (count_ == 0 || total_weight_ <= 0.0) return std::optional<ParameterVector>();
    const double lr = lr_ / (1.0 + decay_ * static_cast<double>(round > 0 ? round - 1 : 0));
    const float step = static_cast<float>(lr / total_weight_);
    std::vector<float> next(global.values().begin(), global.values().end());
    for (size_t i = 0; i < next.size(); ++i) next[i] += step * sum_[i];
    last_lr_ = lr;
    auto pv = ParameterVector::FromValues(global.layout(), std::move(next));
    if (!pv.ok()) return pv.status();
    return std::optional<ParameterVector>(std::move(*pv));
  }

  std::map<std::string, double> RoundMetrics() const override {
    return {{"aggregated_updates", double(count_)},
            {"clipped_updates", double(clipped_)},
            {"server_lr", last_lr_}};
  }

 private:
  TrainConfig train_;
  double clip_, lr_, decay_;
  std::vector<float> sum_, scratch_;
  double total_weight_ = 0.0, last_lr_ = 0.0;
  size_t count_ = 0, clipped_ = 0;
};

// The factory: validates the options once (unknown keys are errors).
Result<std::unique_ptr<Strategy>> MakeClippedMean(const OptionMap& o) {
  VERDANT_ASSIGN_OR_RETURN(TrainConfig train, TrainConfigFromOptions(o));
  VERDANT_ASSIGN_OR_RETURN(double clip, o.GetDouble("clip_norm", 10.0));
  VERDANT_ASSIGN_OR_RETURN(double lr, o.GetDouble("server_lr", 1.0));
  VERDANT_ASSIGN_OR_RETURN(double decay, o.GetDouble("decay", 0.0));
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("strategy 'clippedmean'"));
  if (!(clip > 0.0)) return InvalidArgumentError("clippedmean: clip_norm must be > 0");
  if (!(lr > 0.0)) return InvalidArgumentError("clippedmean: server_lr must be > 0");
  if (!(decay >= 0.0)) return InvalidArgumentError("clippedmean: decay must be >= 0");
  return std::unique_ptr<Strategy>(std::make_unique<ClippedMeanStrategy>(train, clip, lr, decay));
}

}  // namespace

// The two C entry points Verdant looks for.
VERDANT_PLUGIN_DEFINE_ABI_VERSION()

VERDANT_PLUGIN_EXPORT int verdant_plugin_register(const VerdantPluginHost* host) {
  return verdant::RegisterPluginFactory<verdant::Strategy>(host, "strategy", "clippedmean",
                                                           &MakeClippedMean);
}
