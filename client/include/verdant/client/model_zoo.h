// verdant/client/model_zoo.h
//
// The model zoo: the networks Verdant trains, by name, as layouts and
// initial ParameterVectors (no LibTorch in this header).
//   "mlp": 784-200-200-10 with ReLU (fc1, fc2, fc3)                 199,210 params
//   "cnn": the FedAvg paper's CNN (McMahan et al. 2017): conv5x5 32 (pad 2)
//          -> ReLU -> maxpool2 -> conv5x5 64 (pad 2) -> ReLU -> maxpool2
//          -> fc 3136->512 -> ReLU -> fc 512->10                     1,663,370 params
// Both take 28x28 single-channel images and output 10 logits.
//   auto layout = ModelLayout("cnn");                 // names/shapes, stable order
//   auto model = InitialModel("cnn", /*seed=*/42);    // same seed, same values
//   coordinator.SetInitialModel(std::move(*model));
// Tensor order and names follow the torch modules ("conv1.weight",
// "conv1.bias", ..., "fc2.bias") and never change for a given name.
// Thread-safety: ModelLayout and ModelNames are reentrant. InitialModel
// reseeds LibTorch's global generator (torch::manual_seed), so do not call
// it while another thread relies on that generator.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/parameter_vector.h"
#include "verdant/core/status.h"

namespace verdant {

// The valid model names: {"mlp", "cnn"}.
std::vector<std::string> ModelNames();

// The model's tensors in flattening order. kInvalidArgument for an unknown
// name (the message lists the valid ones). Cheap: no torch module is built.
Result<Layout> ModelLayout(std::string_view model);

// Freshly initialised parameters: torch::manual_seed(seed), then PyTorch's
// default initialisation of each layer (Kaiming-uniform weights, uniform
// biases). Deterministic for a given seed and LibTorch version.
// kInvalidArgument for an unknown name; kInternal if LibTorch fails.
Result<ParameterVector> InitialModel(std::string_view model, uint64_t seed);

}  // namespace verdant
