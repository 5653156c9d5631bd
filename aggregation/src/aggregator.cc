#include "verdant/aggregation/aggregator.h"

#include <cmath>
#include <string>

#include "kernels.h"
#include "verdant/core/parameter_vector.h"

namespace verdant {
namespace internal {
Status RegisterRobustAggregators(Registry<Aggregator>& reg);  // robust.cc
}  // namespace internal


Status UpdateView::DecodeInto(std::span<float> out) const {
  if (codec != nullptr) return codec->Decode(encoded, out);
  if (values.size() != out.size()) {
    return InvalidArgumentError("update has " + std::to_string(values.size()) +
                                " values, expected " + std::to_string(out.size()));
  }
  std::copy(values.begin(), values.end(), out.begin());
  return OkStatus();
}

Status WeightedMeanAggregator::Begin(size_t num_params) {
  num_params_ = num_params;
  sum_.assign(num_params, 0.0f);
  total_weight_ = 0.0;
  count_ = 0;
  begun_ = true;
  return OkStatus();
}

Status WeightedMeanAggregator::Add(const UpdateView& update, double weight) {
  if (!begun_) return FailedPreconditionError("Add before Begin");
  if (!(weight >= 0.0) || !std::isfinite(weight)) {
    return InvalidArgumentError("weight must be finite and non-negative");
  }
  if (update.codec != nullptr) {
    if (dynamic_cast<const IdentityCodec*>(update.codec) != nullptr) {
      // Fast path for the identity format (little-endian float32, see
      // codec.h): one vectorised check, one vectorised fold.
      if (update.encoded.size() != num_params_ * sizeof(float)) {
        return DataLossError("identity payload has " + std::to_string(update.encoded.size()) +
                             " bytes, expected " + std::to_string(num_params_ * sizeof(float)));
      }
      if (!internal::AllFiniteBytes(update.encoded.data(), num_params_)) {
        return DataLossError("update holds NaN or Inf");
      }
      internal::AxpyBytes(static_cast<float>(weight), update.encoded.data(), sum_.data(), num_params_);
      total_weight_ += weight;
      ++count_;
      return OkStatus();
    }
    // Validate first so a malformed or non-finite update never touches sum_.
    VERDANT_RETURN_IF_ERROR(update.codec->Validate(update.encoded, num_params_));
    VERDANT_RETURN_IF_ERROR(
        update.codec->DecodeAccumulate(update.encoded, static_cast<float>(weight), sum_));
  } else {
    if (update.values.size() != num_params_) {
      return InvalidArgumentError("update has " + std::to_string(update.values.size()) +
                                  " values, the model has " + std::to_string(num_params_));
    }
    // Check everything first, so a bad update never touches the sum.
    if (!internal::AllFiniteFast(update.values.data(), num_params_)) {
      return DataLossError("update holds NaN or Inf");
    }
    internal::Axpy(static_cast<float>(weight), update.values.data(), sum_.data(), num_params_);
  }
  total_weight_ += weight;
  ++count_;
  return OkStatus();
}

Result<std::vector<float>> WeightedMeanAggregator::Finish() {
  if (!begun_ || count_ == 0) return FailedPreconditionError("no update was aggregated");
  if (total_weight_ <= 0.0) return FailedPreconditionError("all update weights were zero");
  const float inv = static_cast<float>(1.0 / total_weight_);
  for (float& v : sum_) v *= inv;
  begun_ = false;
  return std::move(sum_);
}

Registry<Aggregator>& AggregatorRegistry() {
  static Registry<Aggregator>* reg = [] {
    auto* r = new Registry<Aggregator>("aggregator");
    r->Register("mean", [](const OptionMap& o) -> Result<std::unique_ptr<Aggregator>> {
       VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("aggregator 'mean'"));
       return std::unique_ptr<Aggregator>(std::make_unique<WeightedMeanAggregator>());
     }).IgnoreError();
    internal::RegisterRobustAggregators(*r).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<Aggregator>> CreateAggregator(const std::string& name,
                                                     const OptionMap& options) {
  return AggregatorRegistry().Create(name, options);
}

}  // namespace verdant
