// verdant/core/parameter_vector.h
//
// ParameterVector: a model as one flat float32 buffer plus its layout (named
// tensors with shapes). Every module but client/ works on this view, so the
// coordinator, codecs and aggregators never see LibTorch.
//   ParameterVector p(Layout{{"fc1.weight", {200, 784}}, {"fc1.bias", {200}}});
//   p.values()[0] = 0.5f;
//   auto delta = local.Minus(global);   // same layout or kInvalidArgument
// Thread-safety: a value type; concurrent const access is safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  // Number of elements (product of the shape; 1 for a scalar).
  size_t NumElements() const;
  friend bool operator==(const TensorSpec&, const TensorSpec&) = default;
};

// The ordered list of tensors that make up a model.
class Layout {
 public:
  Layout() = default;
  explicit Layout(std::vector<TensorSpec> tensors);
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  size_t NumParameters() const { return num_parameters_; }
  // A stable 64-bit fingerprint of names and shapes (FNV-1a), sent on the
  // wire so both ends agree on the model they exchange.
  uint64_t Fingerprint() const;
  friend bool operator==(const Layout& a, const Layout& b) { return a.tensors_ == b.tensors_; }

 private:
  std::vector<TensorSpec> tensors_;
  size_t num_parameters_ = 0;
};

class ParameterVector {
 public:
  ParameterVector() = default;
  // Zero-filled vector for the layout.
  explicit ParameterVector(Layout layout);
  // Takes ownership of values; kInvalidArgument if sizes disagree.
  static Result<ParameterVector> FromValues(Layout layout, std::vector<float> values);
  // A layout-less vector of n values (one tensor named "flat").
  static ParameterVector Flat(std::vector<float> values);

  const Layout& layout() const { return layout_; }
  size_t size() const { return values_.size(); }
  std::span<float> values() { return values_; }
  std::span<const float> values() const { return values_; }
  std::vector<float>& mutable_storage() { return values_; }

  // this - other, elementwise. kInvalidArgument on a layout mismatch.
  Result<ParameterVector> Minus(const ParameterVector& other) const;
  // this += scale * delta. kInvalidArgument on a size mismatch.
  Status AddScaled(std::span<const float> delta, float scale);
  // True when every value is finite (no NaN or Inf).
  bool AllFinite() const;

 private:
  Layout layout_;
  std::vector<float> values_;
};

// True when every value is finite. Vectorises well; used on untrusted input.
bool AllFinite(std::span<const float> values);

}  // namespace verdant
