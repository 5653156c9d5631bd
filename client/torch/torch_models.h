// Private to client/: the LibTorch modules behind the model zoo and the
// copies between them and flat float buffers. Includes <torch/torch.h>, so
// only model_zoo.cc and trainer.cc include it.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <span>
#include <string_view>

#include "verdant/core/parameter_vector.h"
#include "verdant/core/status.h"

namespace verdant::internal {

// A zoo network: [B, 784] float (or [B, 1, 28, 28]) -> [B, 10] logits.
class ZooNet : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

// Builds the named network with PyTorch's default initialisation (from the
// global generator) and checks its parameters against ModelLayout(name).
// kInvalidArgument for an unknown name; kInternal on a layout mismatch.
// May throw c10::Error; callers catch.
Result<std::shared_ptr<ZooNet>> MakeNet(std::string_view name);

// The module's parameters, in layout order.
std::vector<torch::Tensor> ParametersInOrder(ZooNet& net);

// Copies flat values into / out of the parameters (one memcpy per tensor).
// `values` must hold exactly the layout's NumParameters() floats.
void LoadFlat(const std::vector<torch::Tensor>& params, std::span<const float> values);
void StoreFlat(const std::vector<torch::Tensor>& params, std::span<float> values);
// delta = parameters - base, in one pass (not a copy, then a second pass to
// subtract). `base` and `delta` hold the layout's NumParameters() floats.
void StoreDelta(const std::vector<torch::Tensor>& params, std::span<const float> base, std::span<float> delta);

}  // namespace verdant::internal

namespace verdant {

// InitialModel for the zoo's networks: LibTorch's default initialisation
// after torch::manual_seed(seed).
Result<ParameterVector> InitialTorchModel(std::string_view model, uint64_t seed);

}  // namespace verdant
