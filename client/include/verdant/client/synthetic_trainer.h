// verdant/client/synthetic_trainer.h
//
// SyntheticTrainer: a LocalTrainer that does not train. It answers every
// task with the received model plus small seeded noise (delta = noise), for
// the round-overhead benchmark (`verdant demo --model synthetic:N
// --no-train`, bench/round_overhead.sh): selection, encryption, codecs,
// aggregation and the ledger run as usual, with no data and no LibTorch.
//   SyntheticTrainerOptions o;  o.num_params = 1'000'000;  o.seed = 7;
//   auto trainer = SyntheticTrainer::Create(o);       // Result<unique_ptr<...>>
//   ClientLoop loop(loop_options, **trainer);
// The noise is Gaussian with standard deviation noise_std, drawn once: a
// table of 65,536 Gaussians (from the seed; mean exactly 0, standard
// deviation exactly noise_std) is copied in blocks of 1,024 values from
// offsets drawn per task, so a 10M-parameter "training" step costs a memcpy
// (a few ms) instead of ~0.1 s of fresh Gaussians, which on the benchmark's
// shared cores would be charged to every round. The delta is a function of
// (seed, task seed, round) only; it is not independent across blocks, which
// no part of the pipeline depends on. Its values lie on a power-of-two grid
// (step ~noise_std/256), so the coordinator's float32 weighted sums of them
// are exact and independent of arrival order (with up to ~70 clients of
// weight 100 per round in the worst case): same seeds, same final model.
// Thread-safety: not thread-safe; the client loop calls it from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "verdant/client/client_loop.h"
#include "verdant/core/status.h"

namespace verdant {

struct SyntheticTrainerOptions {
  // Expected model size in parameters; 0 = any size (each task's
  // "synthetic:N" model name and the received model must still agree).
  uint64_t num_params = 0;
  // Standard deviation of each delta value. Default 1e-3; finite, >= 0.
  float noise_std = 1e-3f;
  // The weight of each update (reported in Hello and every result). Default 100; > 0.
  uint64_t num_examples = 100;
  // Noise seed; the task's seed and round are mixed in.
  uint64_t seed = 1;
};

class SyntheticTrainer final : public LocalTrainer {
 public:
  // kInvalidArgument for a negative or non-finite noise_std, or
  // num_examples == 0.
  static Result<std::unique_ptr<SyntheticTrainer>> Create(const SyntheticTrainerOptions& options);

  std::string_view Name() const override { return "synthetic"; }
  uint64_t num_examples() const override { return options_.num_examples; }
  // delta (resized to global.size()) = noise. kInvalidArgument when the
  // task's model is not "synthetic:N" with N == global.size(), or N differs
  // from options.num_params (when set). train_loss is 1.0.
  Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global,
                            std::vector<float>& delta) override;

 private:
  static constexpr size_t kNoiseTable = size_t{1} << 16;  // values
  static constexpr size_t kNoiseBlock = 1024;              // values copied per offset
  explicit SyntheticTrainer(const SyntheticTrainerOptions& options);
  SyntheticTrainerOptions options_;
  std::vector<float> noise_;  // kNoiseTable + kNoiseBlock values

};

}  // namespace verdant
