// verdant/client/torch_backend.h
//
// The LibTorch backend. Everything that runs LibTorch -- Trainer,
// ModelEvaluator, the zoo networks' initialisation, torch's thread setting --
// is built into a shared library, libverdant_torch.so, that this module
// loads with dlopen the first time one of them is asked for. A process that
// never trains or evaluates (a coordinator on a synthetic model, a benchmark
// client, `verdant keygen`) therefore never maps LibTorch, which costs about
// 160 MB of resident memory at load (docs/performance.md).
//   auto backend = LoadTorchBackend();    // kUnavailable: lists the paths tried
//   TorchBackendLoaded();                 // true once mapped
// Search order, first hit wins:
//   1. $VERDANT_TORCH_BACKEND (a path to the library; only this one if set),
//   2. the build tree's copy (absolute path compiled in),
//   3. <directory of the executable>/libverdant_torch.so, then ../lib/,
//   4. libverdant_torch.so through the dynamic loader's search path.
// The library exports one C symbol, verdant_torch_backend_v1, returning a
// TorchBackendV1 whose abi must equal kTorchBackendAbi and whose compiler
// and struct sizes must equal this binary's: a mismatch is
// kFailedPrecondition, never a crash. Thread-safety: LoadTorchBackend may be
// called from any thread; the table it returns is immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "verdant/client/dataset.h"
#include "verdant/client/trainer.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/status.h"

namespace verdant {

inline constexpr uint32_t kTorchBackendAbi = 1;

// The entry table. Function pointers, not virtual calls, so the executable
// needs no link-time symbol from the library.
struct TorchBackendV1 {
  uint32_t abi = 0;
  const char* compiler = nullptr;  // __VERSION__ of the library's compiler
  size_t dataset_size = 0;         // sizeof of the types that cross the boundary
  size_t parameter_vector_size = 0;
  size_t status_size = 0;
  Result<std::unique_ptr<Trainer>> (*create_trainer)(std::string_view model) = nullptr;
  Result<std::unique_ptr<ModelEvaluator>> (*create_evaluator)(std::string_view model, Dataset test_set) = nullptr;
  Result<ParameterVector> (*initial_model)(std::string_view model, uint64_t seed) = nullptr;
  void (*configure_threads)(int intra_op_threads) = nullptr;
};

Result<const TorchBackendV1*> LoadTorchBackend();
bool TorchBackendLoaded();

}  // namespace verdant

extern "C" const verdant::TorchBackendV1* verdant_torch_backend_v1();
