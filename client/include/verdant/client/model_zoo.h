// verdant/client/model_zoo.h
//
// The model zoo: the networks Verdant trains, by name, as layouts and
// initial ParameterVectors (no LibTorch in this header).
//   "mlp": 784-200-200-10 with ReLU (fc1, fc2, fc3)                 199,210 params
//   "cnn": the FedAvg paper's CNN (McMahan et al. 2017): conv5x5 32 (pad 2)
//          -> ReLU -> maxpool2 -> conv5x5 64 (pad 2) -> ReLU -> maxpool2
//          -> fc 3136->512 -> ReLU -> fc 512->10                     1,663,370 params
// Both take 28x28 single-channel images and output 10 logits.
//   "synthetic:N": N float32 parameters in one tensor "synthetic" of shape
//          {N}, for benchmarks (`verdant demo --model synthetic:1000000
//          --no-train`): no network, no data; clients run SyntheticTrainer
//          (synthetic_trainer.h). N is a positive integer with an optional
//          k/M suffix (x1e3, x1e6), at most kMaxSyntheticParameters.
//   auto layout = ModelLayout("cnn");                 // names/shapes, stable order
//   auto model = InitialModel("cnn", /*seed=*/42);    // same seed, same values
//   coordinator.SetInitialModel(std::move(*model));
// Tensor order and names follow the torch modules ("conv1.weight",
// "conv1.bias", ..., "fc2.bias") and never change for a given name.
// Thread-safety: ModelLayout, ModelNames and SyntheticModelSize are
// reentrant. InitialModel
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

// The trainable model names: {"mlp", "cnn"} (synthetic:N is not listed).
std::vector<std::string> ModelNames();

// Upper bound on N in "synthetic:N" (4 GB of float32).
inline constexpr uint64_t kMaxSyntheticParameters = 1'000'000'000;

// True for any name starting with "synthetic:" (valid or not).
bool IsSyntheticModel(std::string_view model);

// N of "synthetic:N". kInvalidArgument when `model` is not synthetic:N or N
// is not a positive integer (optionally suffixed k or M) up to
// kMaxSyntheticParameters.
Result<uint64_t> SyntheticModelSize(std::string_view model);

// The model's tensors in flattening order. kInvalidArgument for an unknown
// name (the message lists the valid ones). Cheap: no torch module is built.
Result<Layout> ModelLayout(std::string_view model);

// Freshly initialised parameters: torch::manual_seed(seed), then PyTorch's
// default initialisation of each layer (Kaiming-uniform weights, uniform
// biases). Deterministic for a given seed and LibTorch version.
// synthetic:N: N values uniform in [-0.05, 0.05) from Rng(seed), without
// LibTorch (deterministic for a seed on every platform).
// kInvalidArgument for an unknown name; kInternal if LibTorch fails.
Result<ParameterVector> InitialModel(std::string_view model, uint64_t seed);

}  // namespace verdant
