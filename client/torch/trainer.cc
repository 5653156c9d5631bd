// Trainer and ModelEvaluator: the LibTorch adapters, and the backend's entry
// table (torch_backend.h). Part of libverdant_torch.so. Every torch call is
// wrapped so that exceptions become Status values (STYLE.md rule 9).
#include "verdant/client/trainer.h"

#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "torch_models.h"
#include "verdant/client/model_zoo.h"
#include "verdant/client/torch_backend.h"
#include "verdant/core/rng.h"

namespace verdant {
namespace {

constexpr size_t kImageSize = 28 * 28;
constexpr int64_t kEvalBatch = 1000;

// kInvalidArgument unless `p` fits `layout`: same size, and same names and
// shapes unless `p` is layout-less (ParameterVector::Flat).
Status CheckModel(const ParameterVector& p, const Layout& layout, std::string_view model) {
  if (p.size() != layout.NumParameters()) {
    return InvalidArgumentError("model '" + std::string(model) + "' has " +
                                std::to_string(layout.NumParameters()) +
                                " parameters, the given vector has " + std::to_string(p.size()));
  }
  const auto& t = p.layout().tensors();
  const bool flat = t.size() == 1 && t[0].name == "flat";
  if (!flat && !(p.layout() == layout)) {
    return InvalidArgumentError(
        "the given parameters' layout (names and shapes) does not match model '" +
        std::string(model) + "'");
  }
  return OkStatus();
}

Status CheckData(const Dataset& d, std::string_view what) {
  if (d.size() == 0) return InvalidArgumentError(std::string(what) + " is empty");
  if (d.rows * d.cols != kImageSize) {
    return InvalidArgumentError(std::string(what) + " has " + std::to_string(d.rows) + "x" +
                                std::to_string(d.cols) + " images; the zoo models take 28x28");
  }
  if (d.images.size() != d.size() * kImageSize) {
    return InvalidArgumentError(std::string(what) + ": " + std::to_string(d.images.size()) +
                                " pixels for " + std::to_string(d.size()) + " labels");
  }
  return OkStatus();
}

Status CheckLabels(const Dataset& d, std::string_view what) {
  for (size_t i = 0; i < d.labels.size(); ++i) {
    if (d.labels[i] >= 10) {
      return InvalidArgumentError(std::string(what) + ": label " + std::to_string(d.labels[i]) +
                                  " of example " + std::to_string(i) + " is out of range [0, 10)");
    }
  }
  return OkStatus();
}

// ---- Trainer ------------------------------------------------------------------

class TorchTrainer final : public Trainer {
 public:
  static Result<std::unique_ptr<Trainer>> Create(std::string_view model);
  Result<LocalTrainResult> Train(const ParameterVector& global, const Dataset& data,
                                 const LocalTrainOptions& opts, std::vector<float>& delta) override;
  std::string_view model_name() const override { return name_; }
  const Layout& layout() const override { return layout_; }

 private:
  std::string name_;
  Layout layout_;
  std::shared_ptr<internal::ZooNet> net_;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> global_params_;  // FedProx anchor, allocated on first use
};

Result<std::unique_ptr<Trainer>> TorchTrainer::Create(std::string_view model) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));
  try {
    auto t = std::unique_ptr<TorchTrainer>(new TorchTrainer());
    t->name_ = std::string(model);
    t->layout_ = std::move(layout);
    VERDANT_ASSIGN_OR_RETURN(t->net_, internal::MakeNet(model));
    t->params_ = internal::ParametersInOrder(*t->net_);
    return std::unique_ptr<Trainer>(std::move(t));
  } catch (const std::exception& e) {
    return InternalError("creating trainer for model '" + std::string(model) + "': " + e.what());
  }
}

Result<LocalTrainResult> TorchTrainer::Train(const ParameterVector& global, const Dataset& data,
                                             const LocalTrainOptions& opts, std::vector<float>& delta) {
  const auto start_time = std::chrono::steady_clock::now();
  if (opts.local_epochs < 1) return InvalidArgumentError("local_epochs must be >= 1");
  if (opts.batch_size < 1) return InvalidArgumentError("batch_size must be >= 1");
  if (!(opts.learning_rate > 0.0f) || !std::isfinite(opts.learning_rate)) {
    return InvalidArgumentError("learning_rate must be a finite number > 0");
  }
  if (!(opts.proximal_mu >= 0.0f) || !std::isfinite(opts.proximal_mu)) {
    return InvalidArgumentError("proximal_mu must be a finite number >= 0");
  }
  VERDANT_RETURN_IF_ERROR(CheckModel(global, layout_, name_));
  VERDANT_RETURN_IF_ERROR(CheckData(data, "training set"));
  VERDANT_RETURN_IF_ERROR(CheckLabels(data, "training set"));

  // Which examples, in which order: a seeded subset when capped.
  Rng rng(opts.seed);
  const size_t n_all = data.size();
  std::vector<size_t> order(n_all);
  for (size_t i = 0; i < n_all; ++i) order[i] = i;
  size_t n = n_all;
  if (opts.max_examples > 0 && opts.max_examples < n_all) {
    n = static_cast<size_t>(opts.max_examples);
    // Partial Fisher-Yates: the first n slots become a uniform random subset.
    for (size_t i = 0; i < n; ++i) {
      size_t j = i + static_cast<size_t>(rng.UniformInt(n_all - i));
      std::swap(order[i], order[j]);
    }
    order.resize(n);
  }

  const double lr = opts.learning_rate;
  const double mu = opts.proximal_mu;
  const size_t batch = std::min<size_t>(opts.batch_size, n);
  LocalTrainResult result;
  result.num_examples = n;
  try {
        net_->train();
    {
      torch::NoGradGuard no_grad;
      internal::LoadFlat(params_, global.values());
      if (mu > 0.0) {
        if (global_params_.size() != params_.size()) {
          global_params_.clear();
          for (const auto& p : params_) global_params_.push_back(torch::empty_like(p));
        }
        for (size_t i = 0; i < params_.size(); ++i) global_params_[i].copy_(params_[i]);
      }
    }
    torch::Tensor x_buf =
        torch::empty({static_cast<int64_t>(batch), static_cast<int64_t>(kImageSize)});
    torch::Tensor y_buf = torch::empty({static_cast<int64_t>(batch)}, torch::kLong);
    float* x_ptr = x_buf.data_ptr<float>();
    int64_t* y_ptr = y_buf.data_ptr<int64_t>();
    const float* images = data.images.data();

    double epoch_loss = 0.0;
    for (uint32_t epoch = 0; epoch < opts.local_epochs; ++epoch) {
      rng.Shuffle(std::span<size_t>(order));
      epoch_loss = 0.0;
      for (size_t begin = 0; begin < n; begin += batch) {
        const size_t b = std::min(batch, n - begin);
        for (size_t k = 0; k < b; ++k) {
          const size_t idx = order[begin + k];
          std::memcpy(x_ptr + k * kImageSize, images + idx * kImageSize,
                      kImageSize * sizeof(float));
          y_ptr[k] = data.labels[idx];
        }
        torch::Tensor x = b == batch ? x_buf : x_buf.narrow(0, 0, static_cast<int64_t>(b));
        torch::Tensor y = b == batch ? y_buf : y_buf.narrow(0, 0, static_cast<int64_t>(b));
        net_->zero_grad(/*set_to_none=*/false);
        torch::Tensor loss = torch::nn::functional::cross_entropy(net_->forward(x), y);
        loss.backward();
        const double loss_value = loss.item<double>();
        if (!std::isfinite(loss_value)) {
          return InternalError("training diverged: non-finite loss in epoch " +
                               std::to_string(epoch + 1) + " (try a smaller learning_rate)");
        }
        epoch_loss += loss_value * static_cast<double>(b);
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params_.size(); ++i) {
          torch::Tensor& p = params_[i];
          p.add_(p.grad(), -lr);
          if (mu > 0.0) p.add_(global_params_[i], lr * mu).div_(1.0 + lr * mu);
        }
      }
    }
    result.train_loss = epoch_loss / static_cast<double>(n);
    result.samples_processed = static_cast<uint64_t>(n) * opts.local_epochs;

    delta.resize(global.size());
    internal::StoreDelta(params_, global.values(), delta);
  } catch (const std::exception& e) {
    return InternalError("training model '" + name_ + "': " + e.what());
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  return result;
}

// ---- ModelEvaluator -----------------------------------------------------------

class TorchModelEvaluator final : public ModelEvaluator {
 public:
  static Result<std::unique_ptr<ModelEvaluator>> Create(std::string_view model, Dataset test_set);
  Result<EvalMetrics> Evaluate(const ParameterVector& model) override;
  const Layout& layout() const override { return layout_; }

 private:
  std::string name_;
  Layout layout_;
  std::shared_ptr<internal::ZooNet> net_;
  std::vector<torch::Tensor> params_;
  Dataset test_;
  std::vector<int64_t> labels_;  // test_.labels widened for cross_entropy
};

Result<std::unique_ptr<ModelEvaluator>> TorchModelEvaluator::Create(std::string_view model, Dataset test_set) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));
  VERDANT_RETURN_IF_ERROR(CheckData(test_set, "test set"));
  VERDANT_RETURN_IF_ERROR(CheckLabels(test_set, "test set"));
  try {
    auto e = std::unique_ptr<TorchModelEvaluator>(new TorchModelEvaluator());
    e->name_ = std::string(model);
    e->layout_ = std::move(layout);
    VERDANT_ASSIGN_OR_RETURN(e->net_, internal::MakeNet(model));
    e->params_ = internal::ParametersInOrder(*e->net_);
    e->labels_.assign(test_set.labels.begin(), test_set.labels.end());
    e->test_ = std::move(test_set);
    return std::unique_ptr<ModelEvaluator>(std::move(e));
  } catch (const std::exception& e) {
    return InternalError("creating evaluator for model '" + std::string(model) + "': " + e.what());
  }
}

Result<EvalMetrics> TorchModelEvaluator::Evaluate(const ParameterVector& model) {
  VERDANT_RETURN_IF_ERROR(CheckModel(model, layout_, name_));
  EvalMetrics out;
  out.num_examples = test_.size();
  try {
    torch::NoGradGuard no_grad;
    net_->eval();
    internal::LoadFlat(params_, model.values());
    const int64_t n = static_cast<int64_t>(test_.size());
    double loss_sum = 0.0;
    int64_t correct = 0;
    namespace F = torch::nn::functional;
    for (int64_t begin = 0; begin < n; begin += kEvalBatch) {
      const int64_t b = std::min(kEvalBatch, n - begin);
      // Views over the dataset's own memory: no copy.
      torch::Tensor x =
          torch::from_blob(const_cast<float*>(test_.images.data()) + begin * int64_t{kImageSize},
                           {b, static_cast<int64_t>(kImageSize)}, torch::kFloat);
      torch::Tensor y = torch::from_blob(labels_.data() + begin, {b}, torch::kLong);
      torch::Tensor logits = net_->forward(x);
      loss_sum += F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    }
    out.loss = loss_sum / static_cast<double>(n);
    out.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  } catch (const std::exception& e) {
    return InternalError("evaluating model '" + name_ + "': " + e.what());
  }
  return out;
}

void ConfigureThreads(int intra_op_threads) {
  try {
    torch::set_num_threads(std::max(1, intra_op_threads));
  } catch (const std::exception&) {
    // Best effort: the default thread count still works.
  }
  // Debian's LibTorch calls OpenBLAS, whose own thread pool ignores
  // torch::set_num_threads: with the default (one thread per core) its
  // workers spin in sched_yield between this process's small GEMMs, a whole
  // core of system time (verdant simulate --train, 1,000 devices, K=100,
  // 50 rounds: 21.5 s wall, 26.6 s user + 14.3 s system; capped: 18.0 s,
  // 17.7 s + 1.4 s). Capped the same way when OpenBLAS is what is loaded;
  // a no-op with any other BLAS.
  if (void* blas = ::dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD)) {
    using SetThreads = void (*)(int);
    if (auto set = reinterpret_cast<SetThreads>(::dlsym(blas, "openblas_set_num_threads"))) {
      set(std::max(1, intra_op_threads));
    }
    ::dlclose(blas);
  }
}

}  // namespace
}  // namespace verdant

extern "C" const verdant::TorchBackendV1* verdant_torch_backend_v1() {
  static const verdant::TorchBackendV1 table = [] {
    verdant::TorchBackendV1 t;
    t.abi = verdant::kTorchBackendAbi;
    t.compiler = __VERSION__;
    t.dataset_size = sizeof(verdant::Dataset);
    t.parameter_vector_size = sizeof(verdant::ParameterVector);
    t.status_size = sizeof(verdant::Status);
    t.create_trainer = &verdant::TorchTrainer::Create;
    t.create_evaluator = &verdant::TorchModelEvaluator::Create;
    t.initial_model = &verdant::InitialTorchModel;
    t.configure_threads = &verdant::ConfigureThreads;
    return t;
  }();
  return &table;
}
