#include "verdant/client/synthetic_trainer.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "verdant/client/model_zoo.h"
#include "verdant/core/rng.h"

namespace verdant {

Result<std::unique_ptr<SyntheticTrainer>> SyntheticTrainer::Create(const SyntheticTrainerOptions& options) {
  if (!(options.noise_std >= 0.0f) || !std::isfinite(options.noise_std)) {
    return InvalidArgumentError("synthetic trainer: noise_std must be finite and >= 0");
  }
  if (options.num_examples == 0) return InvalidArgumentError("synthetic trainer: num_examples must be > 0");
  if (options.num_params > kMaxSyntheticParameters) {
    return InvalidArgumentError("synthetic trainer: num_params exceeds " + std::to_string(kMaxSyntheticParameters));
  }
  return std::unique_ptr<SyntheticTrainer>(new SyntheticTrainer(options));
}

SyntheticTrainer::SyntheticTrainer(const SyntheticTrainerOptions& options) : options_(options) {
  // kNoiseTable exact Gaussians (Box-Muller), shifted and scaled so that the
  // table's mean is 0 and its standard deviation noise_std, then the first
  // kNoiseBlock values repeated at the end so a block never wraps.
  Rng rng = Rng(options.seed).Fork(0x6e6f697365);  // "noise"
  std::vector<double> g(kNoiseTable);
  double mean = 0;
  for (double& v : g) {
    v = rng.Normal();
    mean += v;
  }
  mean /= kNoiseTable;
  double var = 0;
  for (double v : g) var += (v - mean) * (v - mean);
  const double scale = var > 0 ? options.noise_std / std::sqrt(var / kNoiseTable) : 0.0;
  // Every value is a multiple of a power-of-two step near noise_std / 256,
  // so weighted sums of such deltas are exact in float32 (while below 2^24
  // steps) and the coordinator's streaming mean does not depend on the order
  // results arrive in: runs with the same seeds give the same model bit for
  // bit (docs/operations.md, "Determinism").
  const double step = options.noise_std > 0 ? std::exp2(std::floor(std::log2(options.noise_std / 256.0))) : 0.0;
  noise_.resize(kNoiseTable + kNoiseBlock);
  for (size_t i = 0; i < noise_.size(); ++i) {
    double v = (g[i % kNoiseTable] - mean) * scale;
    if (step > 0) v = std::nearbyint(v / step) * step;
    noise_[i] = static_cast<float>(v);
  }
}

Result<TaskOutcome> SyntheticTrainer::Train(const TaskSpec& task, std::span<const float> global,
                                            std::vector<float>& delta) {
  const auto start = std::chrono::steady_clock::now();
  VERDANT_ASSIGN_OR_RETURN(uint64_t n, SyntheticModelSize(task.model_name));
  if (n != global.size()) {
    return InvalidArgumentError("task model '" + task.model_name + "' has " + std::to_string(n) +
                                " parameters, the received model " + std::to_string(global.size()));
  }
  if (options_.num_params != 0 && n != options_.num_params) {
    return InvalidArgumentError("task model '" + task.model_name + "', but this client runs synthetic:" +
                                std::to_string(options_.num_params));
  }
  delta.resize(n);
  // Blocks of the noise table at random offsets: memcpy speed.
  Rng rng = Rng(options_.seed).Fork(task.seed).Fork(task.round);
  float* out = delta.data();
  for (uint64_t i = 0; i < n; i += kNoiseBlock) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(kNoiseBlock, n - i));
    const size_t at = static_cast<size_t>(rng.UniformInt(kNoiseTable));
    std::memcpy(out + i, noise_.data() + at, len * sizeof(float));
  }
  TaskOutcome outcome;
  outcome.num_examples = options_.num_examples;
  outcome.train_loss = 1.0;
  outcome.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return outcome;
}

}  // namespace verdant
