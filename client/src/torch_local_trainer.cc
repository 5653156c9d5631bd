#include "verdant/client/torch_local_trainer.h"

#include "verdant/client/model_zoo.h"

namespace verdant {

Result<std::unique_ptr<TorchLocalTrainer>> TorchLocalTrainer::Create(Dataset shard) {
  if (shard.size() == 0) return InvalidArgumentError("this client's data shard is empty");
  return std::unique_ptr<TorchLocalTrainer>(new TorchLocalTrainer(std::move(shard)));
}

Result<TaskOutcome> TorchLocalTrainer::Train(const TaskSpec& task, std::span<const float> global,
                                             std::vector<float>& delta) {
  auto it = trainers_.find(task.model_name);
  if (it == trainers_.end()) {
    VERDANT_ASSIGN_OR_RETURN(auto t, Trainer::Create(task.model_name));
    it = trainers_.emplace(task.model_name, std::move(t)).first;
  }
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(task.model_name));
  VERDANT_ASSIGN_OR_RETURN(ParameterVector model,
                           ParameterVector::FromValues(layout, std::vector<float>(global.begin(), global.end())));
  LocalTrainOptions opts;
  opts.local_epochs = task.local_epochs;
  opts.batch_size = task.batch_size;
  opts.learning_rate = task.learning_rate;
  opts.proximal_mu = task.proximal_mu;
  opts.max_examples = task.max_examples;
  opts.seed = task.seed;
  VERDANT_ASSIGN_OR_RETURN(LocalTrainResult r, it->second->Train(model, shard_, opts, delta));
  TaskOutcome out;
  out.num_examples = r.num_examples;
  out.train_loss = r.train_loss;
  out.train_seconds = r.seconds;
  return out;
}

}  // namespace verdant
