// verdant/client/trainer.h
//
// Trainer: local SGD on a client's Dataset with LibTorch, from a global
// model to delta = local - global. ModelEvaluator: loss and accuracy of a
// model on a held-out set (what the coordinator's Evaluator calls). Both
// are interfaces implemented in the LibTorch backend, a shared library
// (libverdant_torch.so) loaded on first use (see torch_backend.h), so this
// header compiles without LibTorch and a process that never trains or
// evaluates (a coordinator on a synthetic model, a benchmark client) never
// maps LibTorch. Create() fails with kUnavailable when the backend cannot be
// loaded.
//   ConfigureTorchThreads(1);
//   auto trainer = Trainer::Create("mlp");             // one torch module, reused
//   std::vector<float> delta;
//   auto r = (*trainer)->Train(global, shard, LocalTrainOptions{.local_epochs = 2}, delta);
//   auto eval = ModelEvaluator::Create("mlp", std::move(test_set));
//   auto m = (*eval)->Evaluate(next_global);             // m->accuracy in [0, 1]
// Errors are Status values; no exception (torch's or other) escapes.
// Thread-safety: a Trainer or ModelEvaluator is not thread-safe (one thread
// at a time); distinct instances may run on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "verdant/client/dataset.h"
#include "verdant/core/parameter_vector.h"
#include "verdant/core/status.h"

namespace verdant {

struct LocalTrainOptions {
  uint32_t local_epochs = 1;    // passes over the (capped) local data, >= 1
  uint32_t batch_size = 32;     // examples per SGD step, >= 1; the last batch may be smaller
  float learning_rate = 0.05f;  // plain SGD, no momentum or weight decay, > 0
  float proximal_mu = 0.0f;     // FedProx mu (>= 0); 0 = FedAvg
  uint64_t max_examples = 0;    // > 0: train on a seeded random subset of this many examples
  uint64_t seed = 0;            // subset choice and per-epoch shuffling
};

struct LocalTrainResult {
  uint64_t num_examples = 0;       // examples per epoch actually used (the update's weight)
  double train_loss = 0;           // mean cross-entropy over the last epoch (without the prox term)
  double seconds = 0;              // wall-clock seconds spent in Train
  uint64_t samples_processed = 0;  // num_examples * local_epochs
};

class Trainer {
 public:
  // kInvalidArgument for an unknown model name (see model_zoo.h).
  static Result<std::unique_ptr<Trainer>> Create(std::string_view model);
  virtual ~Trainer() = default;
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Loads `global` into the module, trains on `data` with plain SGD for
  // opts.local_epochs epochs (shuffled from opts.seed) and writes
  // delta = local - global into `delta` (resized to global.size()).
  // With proximal_mu > 0 the loss gains FedProx's (mu/2)*||w - w_global||^2;
  // that term is applied by its exact proximal step,
  //   w <- (w - lr*grad + lr*mu*w_global) / (1 + lr*mu),
  // which matches the plain gradient step to first order in lr*mu and,
  // unlike it, stays stable for any mu.
  // Errors: kInvalidArgument if `global` does not match the model's layout
  // (size, and names/shapes unless it is a layout-less Flat vector), if
  // `data` is empty, not 28x28 or inconsistent, or an option is out of
  // range; kInternal for any LibTorch failure (non-finite loss included).
  // On error `delta` is unspecified.
  virtual Result<LocalTrainResult> Train(const ParameterVector& global, const Dataset& data,
                                         const LocalTrainOptions& opts, std::vector<float>& delta) = 0;

  virtual std::string_view model_name() const = 0;
  virtual const Layout& layout() const = 0;

 protected:
  Trainer() = default;
};

struct EvalMetrics {
  double loss = 0;            // mean cross-entropy
  double accuracy = 0;        // fraction of correct top-1 predictions, [0, 1]
  uint64_t num_examples = 0;  // size of the test set
};

class ModelEvaluator {
 public:
  // Takes the test set by value (move it in). kInvalidArgument for an
  // unknown model, an empty set or one that is not 28x28.
  static Result<std::unique_ptr<ModelEvaluator>> Create(std::string_view model, Dataset test_set);
  virtual ~ModelEvaluator() = default;
  ModelEvaluator(const ModelEvaluator&) = delete;
  ModelEvaluator& operator=(const ModelEvaluator&) = delete;

  // Batched (1000 per batch) inference without gradients. kInvalidArgument
  // if `model` does not match the layout; kInternal for LibTorch failures.
  virtual Result<EvalMetrics> Evaluate(const ParameterVector& model) = 0;

  virtual const Layout& layout() const = 0;

 protected:
  ModelEvaluator() = default;
};

// Intra-op threads LibTorch uses in this process (torch::set_num_threads).
// One per process is fastest on small models and 2-core machines; values
// < 1 are treated as 1. Process-wide; call once at startup.
void ConfigureTorchThreads(int intra_op_threads = 1);

}  // namespace verdant
