// The zoo's LibTorch modules (part of the backend library, libverdant_torch.so):
// MLP and CNN matching the hand-written layouts in model_zoo.cc, and the
// flat <-> tensor copies the trainer and evaluator use.
#include <cstring>

#include "torch_models.h"
#include "verdant/client/model_zoo.h"

namespace verdant {
namespace {

class Mlp final : public internal::ZooNet {
 public:
  Mlp()
      : fc1_(register_module("fc1", torch::nn::Linear(784, 200))),
        fc2_(register_module("fc2", torch::nn::Linear(200, 200))),
        fc3_(register_module("fc3", torch::nn::Linear(200, 10))) {}
  torch::Tensor forward(torch::Tensor x) override {
    x = x.reshape({x.size(0), 784});
    x = torch::relu(fc1_->forward(x));
    x = torch::relu(fc2_->forward(x));
    return fc3_->forward(x);
  }

 private:
  torch::nn::Linear fc1_, fc2_, fc3_;
};

class Cnn final : public internal::ZooNet {
 public:
  Cnn()
      : conv1_(register_module("conv1",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 5).padding(2)))),
        conv2_(register_module("conv2",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)))),
        fc1_(register_module("fc1", torch::nn::Linear(3136, 512))),
        fc2_(register_module("fc2", torch::nn::Linear(512, 10))) {}
  torch::Tensor forward(torch::Tensor x) override {
    x = x.reshape({x.size(0), 1, 28, 28});
    x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
    x = x.reshape({x.size(0), 3136});
    x = torch::relu(fc1_->forward(x));
    return fc2_->forward(x);
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::Linear fc1_, fc2_;
};

}  // namespace

namespace internal {

Result<std::shared_ptr<ZooNet>> MakeNet(std::string_view name) {
  if (IsSyntheticModel(name)) {
    return InvalidArgumentError("model '" + std::string(name) +
                                "' is synthetic: it has no network to train or evaluate (use --no-train)");
  }
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(name));
  std::shared_ptr<ZooNet> net;
  if (name == "mlp") {
    net = std::make_shared<Mlp>();
  } else {
    net = std::make_shared<Cnn>();
  }
  // The hand-written layout is the contract; the module must match it.
  auto named = net->named_parameters(/*recurse=*/true);
  const auto& specs = layout.tensors();
  if (named.size() != specs.size()) {
    return InternalError("model '" + std::string(name) + "': module has " +
                         std::to_string(named.size()) + " parameter tensors, layout has " +
                         std::to_string(specs.size()));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& item = named[i];
    std::vector<int64_t> shape(item.value().sizes().begin(), item.value().sizes().end());
    if (item.key() != specs[i].name || shape != specs[i].shape ||
        item.value().scalar_type() != torch::kFloat || !item.value().is_contiguous()) {
      return InternalError("model '" + std::string(name) + "': module parameter " + item.key() +
                           " does not match layout tensor " + specs[i].name);
    }
  }
  return net;
}

std::vector<torch::Tensor> ParametersInOrder(ZooNet& net) {
  return net.parameters(/*recurse=*/true);
}

void LoadFlat(const std::vector<torch::Tensor>& params, std::span<const float> values) {
  size_t offset = 0;
  for (const auto& p : params) {
    const size_t n = static_cast<size_t>(p.numel());
    std::memcpy(p.data_ptr<float>(), values.data() + offset, n * sizeof(float));
    offset += n;
  }
}

void StoreFlat(const std::vector<torch::Tensor>& params, std::span<float> values) {
  size_t offset = 0;
  for (const auto& p : params) {
    const size_t n = static_cast<size_t>(p.numel());
    std::memcpy(values.data() + offset, p.data_ptr<float>(), n * sizeof(float));
    offset += n;
  }
}

void StoreDelta(const std::vector<torch::Tensor>& params, std::span<const float> base, std::span<float> delta) {
  size_t offset = 0;
  for (const auto& p : params) {
    const size_t n = static_cast<size_t>(p.numel());
    const float* w = p.data_ptr<float>();
    const float* b = base.data() + offset;
    float* d = delta.data() + offset;
    for (size_t i = 0; i < n; ++i) d[i] = w[i] - b[i];
    offset += n;
  }
}

}  // namespace internal

Result<ParameterVector> InitialTorchModel(std::string_view model, uint64_t seed) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));
  try {
    torch::manual_seed(seed);
    VERDANT_ASSIGN_OR_RETURN(auto net, internal::MakeNet(model));
    ParameterVector out(std::move(layout));
    internal::StoreFlat(internal::ParametersInOrder(*net), out.values());
    return out;
  } catch (const std::exception& e) {
    return InternalError("initialising model '" + std::string(model) + "': " + e.what());
  }
}

}  // namespace verdant
