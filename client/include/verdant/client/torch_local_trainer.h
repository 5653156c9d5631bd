// verdant/client/torch_local_trainer.h
//
// TorchLocalTrainer: the LocalTrainer the real client runs — LibTorch
// training (trainer.h) on this client's shard, one Trainer (one torch
// module) per model name, reused across rounds.
//   auto shard = Subset(*LoadFashionMnist(dir, "train"), indices);
//   auto trainer = TorchLocalTrainer::Create(std::move(shard));
//   ClientLoop loop(options, **trainer);
// Thread-safety: not thread-safe; the client loop calls it from one thread.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "verdant/client/client_loop.h"
#include "verdant/client/dataset.h"
#include "verdant/client/trainer.h"

namespace verdant {

class TorchLocalTrainer final : public LocalTrainer {
 public:
  static Result<std::unique_ptr<TorchLocalTrainer>> Create(Dataset shard);
  std::string_view Name() const override { return "torch"; }
  uint64_t num_examples() const override { return shard_.size(); }
  Result<TaskOutcome> Train(const TaskSpec& task, std::span<const float> global,
                            std::vector<float>& delta) override;

 private:
  explicit TorchLocalTrainer(Dataset shard) : shard_(std::move(shard)) {}
  Dataset shard_;
  std::map<std::string, std::unique_ptr<Trainer>> trainers_;
};

}  // namespace verdant
