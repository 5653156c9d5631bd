// verdant/aggregation/aggregator.h
//
// Aggregator: folds client updates into one. Linear rules (weighted mean)
// stream: memory O(model), not O(clients x model), and updates are folded in
// their encoded form where the codec can fuse decode + add. Rules that need
// every update (median, Krum) buffer and say so via NeedsIndividualUpdates(),
// so secure aggregation can refuse them.
//   auto agg = CreateAggregator("mean", {});
//   VERDANT_RETURN_IF_ERROR((*agg)->Begin(num_params));
//   VERDANT_RETURN_IF_ERROR((*agg)->Add(update, /*weight=*/600));
//   auto mean = (*agg)->Finish();        // Result<std::vector<float>>
// Thread-safety: not thread-safe; the coordinator serialises calls.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "verdant/compression/codec.h"
#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/status.h"

namespace verdant {

// One client's update as received: encoded bytes plus the codec that reads
// them, or (for in-process callers) plain floats. Views: the caller owns the
// memory until Add returns.
struct UpdateView {
  std::span<const uint8_t> encoded;
  const UpdateCodec* codec = nullptr;  // null: use `values`
  std::span<const float> values;

  static UpdateView Floats(std::span<const float> v) { return UpdateView{{}, nullptr, v}; }
  static UpdateView Encoded(std::span<const uint8_t> b, const UpdateCodec& c) {
    return UpdateView{b, &c, {}};
  }
  // Decodes into `out` (sized to the number of parameters).
  Status DecodeInto(std::span<float> out) const;
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  Aggregator(const Aggregator&) = delete;
  Aggregator& operator=(const Aggregator&) = delete;
  virtual std::string_view Name() const = 0;
  // True when the rule needs each update individually (cannot be computed
  // from a running sum).
  virtual bool NeedsIndividualUpdates() const = 0;
  // Starts a round with models of `num_params` parameters; drops prior state.
  virtual Status Begin(size_t num_params) = 0;
  // Folds one update with a non-negative weight (e.g. its example count).
  // kInvalidArgument on a size mismatch or a negative/non-finite weight,
  // kDataLoss on a malformed encoding or non-finite values; the aggregator's
  // state is unchanged on error.
  virtual Status Add(const UpdateView& update, double weight) = 0;
  // Number of updates accepted since Begin.
  virtual size_t count() const = 0;
  // The aggregate. kFailedPrecondition when nothing was added or all weights
  // were zero.
  virtual Result<std::vector<float>> Finish() = 0;
  // Figures about the last Finish (e.g. which update Krum picked), for the
  // round report. Default: none.
  virtual std::map<std::string, double> Metrics() const { return {}; }

 protected:
  Aggregator() = default;
};

// Streaming weighted mean: sum_i w_i x_i / sum_i w_i, accumulated in float32
// (one pass, one model-sized buffer) with the weights normalised at the end.
// Encoded updates go through the codec's fused DecodeAccumulate after
// Validate, so a bad update never touches the running sum.
class WeightedMeanAggregator final : public Aggregator {
 public:
  WeightedMeanAggregator() = default;
  std::string_view Name() const override { return "mean"; }
  bool NeedsIndividualUpdates() const override { return false; }
  Status Begin(size_t num_params) override;
  Status Add(const UpdateView& update, double weight) override;
  size_t count() const override { return count_; }
  Result<std::vector<float>> Finish() override;

 private:
  std::vector<float> sum_;
  double total_weight_ = 0.0;
  size_t count_ = 0;
  size_t num_params_ = 0;
  bool begun_ = false;
};

// Registry of aggregators: "mean" (streaming), and the buffered robust
// reducers "median", "trimmedmean" (option beta), "krum" (option f) and
// "multikrum" (options f, m) declared in robust.h.
Registry<Aggregator>& AggregatorRegistry();
Result<std::unique_ptr<Aggregator>> CreateAggregator(const std::string& name,
                                                     const OptionMap& options);

}  // namespace verdant
