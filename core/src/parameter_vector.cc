#include "verdant/core/parameter_vector.h"

#include <cmath>
#include <string>

namespace verdant {

size_t TensorSpec::NumElements() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d < 0 ? 0 : d);
  return n;
}

Layout::Layout(std::vector<TensorSpec> tensors) : tensors_(std::move(tensors)) {
  for (const auto& t : tensors_) num_parameters_ += t.NumElements();
}

uint64_t Layout::Fingerprint() const {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  };
  for (const auto& t : tensors_) {
    mix(t.name.data(), t.name.size());
    uint64_t rank = t.shape.size();
    mix(&rank, sizeof(rank));
    for (int64_t d : t.shape) mix(&d, sizeof(d));
  }
  return h;
}

ParameterVector::ParameterVector(Layout layout)
    : layout_(std::move(layout)), values_(layout_.NumParameters(), 0.0f) {}

Result<ParameterVector> ParameterVector::FromValues(Layout layout, std::vector<float> values) {
  if (layout.NumParameters() != values.size()) {
    return InvalidArgumentError("layout has " + std::to_string(layout.NumParameters()) +
                                " parameters but " + std::to_string(values.size()) +
                                " values were given");
  }
  ParameterVector p;
  p.layout_ = std::move(layout);
  p.values_ = std::move(values);
  return p;
}

ParameterVector ParameterVector::Flat(std::vector<float> values) {
  ParameterVector p;
  p.layout_ = Layout({TensorSpec{"flat", {static_cast<int64_t>(values.size())}}});
  p.values_ = std::move(values);
  return p;
}

Result<ParameterVector> ParameterVector::Minus(const ParameterVector& other) const {
  if (!(layout_ == other.layout_)) return InvalidArgumentError("layout mismatch in Minus");
  ParameterVector out(layout_);
  for (size_t i = 0; i < values_.size(); ++i) out.values_[i] = values_[i] - other.values_[i];
  return out;
}

Status ParameterVector::AddScaled(std::span<const float> delta, float scale) {
  if (delta.size() != values_.size()) {
    return InvalidArgumentError("AddScaled: " + std::to_string(delta.size()) + " values for a " +
                                std::to_string(values_.size()) + "-parameter model");
  }
  for (size_t i = 0; i < values_.size(); ++i) values_[i] += scale * delta[i];
  return OkStatus();
}

bool ParameterVector::AllFinite() const { return verdant::AllFinite(values_); }

bool AllFinite(std::span<const float> values) {
  // Branch-free accumulation so the loop vectorises: x - x is 0 for finite x
  // and NaN for NaN/Inf; any NaN poisons the sum.
  float acc = 0.0f;
  for (float x : values) acc += (x - x);
  return acc == 0.0f;
}

}  // namespace verdant
