// The bare LibTorch reference for `verdant simulate --train`'s overhead
// (docs/simulator.md): the same federated training — Fashion-MNIST split
// Dirichlet(0.5) over N devices, K random devices per round, one local epoch
// of plain SGD (batch 32, lr 0.05) on the mlp, FedAvg weighted by examples —
// as one loop in one process: no coordinator, no codec, no sessions, no
// ledger. Prints the wall time and the final accuracy.
//   sim_train_reference [devices=1000] [per_round=100] [rounds=50] [eval_examples=2000]
#include <dlfcn.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "verdant/client/dataset.h"
#include "verdant/client/partition.h"
#include "verdant/core/rng.h"

namespace {

struct Mlp : torch::nn::Module {
  Mlp()
      : fc1(register_module("fc1", torch::nn::Linear(784, 200))),
        fc2(register_module("fc2", torch::nn::Linear(200, 200))),
        fc3(register_module("fc3", torch::nn::Linear(200, 10))) {}
  torch::Tensor forward(torch::Tensor x) {
    x = x.view({x.size(0), 784});
    x = torch::relu(fc1->forward(x));
    x = torch::relu(fc2->forward(x));
    return fc3->forward(x);
  }
  torch::nn::Linear fc1, fc2, fc3;
};

}  // namespace

int main(int argc, char** argv) {
  const size_t devices = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000;
  const size_t per_round = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 100;
  const size_t rounds = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 50;
  const size_t eval_n = argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 2000;
  torch::set_num_threads(1);
  // As libverdant_torch does (ConfigureTorchThreads): OpenBLAS's own pool too.
  if (void* blas = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD)) {
    if (auto set = reinterpret_cast<void (*)(int)>(dlsym(blas, "openblas_set_num_threads"))) set(1);
    dlclose(blas);
  }
  torch::manual_seed(1);
  const std::string dir = verdant::DefaultFashionMnistDir();
  auto train = verdant::LoadFashionMnist(dir, "train");
  auto test = verdant::LoadFashionMnist(dir, "test", eval_n);
  if (!train.ok() || !test.ok()) {
    std::fprintf(stderr, "Fashion-MNIST not found in %s\n", dir.c_str());
    return 1;
  }
  auto parts = verdant::PartitionAllIndices("dirichlet:0.5", train->labels, verdant::kFashionMnistClasses, devices, 1);
  if (!parts.ok()) return 1;
  const auto t0 = std::chrono::steady_clock::now();
  // Shards as tensors, built once.
  std::vector<torch::Tensor> xs(devices), ys(devices);
  for (size_t d = 0; d < devices; ++d) {
    const auto& idx = (*parts)[d];
    auto x = torch::empty({static_cast<int64_t>(idx.size()), 784});
    auto y = torch::empty({static_cast<int64_t>(idx.size())}, torch::kLong);
    for (size_t i = 0; i < idx.size(); ++i) {
      std::memcpy(x[i].data_ptr<float>(), train->images.data() + idx[i] * 784, 784 * sizeof(float));
      y[i] = static_cast<int64_t>(train->labels[idx[i]]);
    }
    xs[d] = x;
    ys[d] = y;
  }
  Mlp global, local;
  verdant::Rng rng(1);
  uint64_t examples_trained = 0;
  for (size_t r = 1; r <= rounds; ++r) {
    std::vector<torch::Tensor> sum;
    for (const auto& p : global.parameters()) sum.push_back(torch::zeros_like(p));
    double total = 0;
    std::vector<size_t> order(devices);
    for (size_t i = 0; i < devices; ++i) order[i] = i;
    rng.Shuffle(std::span<size_t>(order));
    for (size_t k = 0; k < per_round; ++k) {
      const size_t d = order[k];
      const int64_t n = xs[d].size(0);
      if (n == 0) continue;
      {
        torch::NoGradGuard g;
        auto gp = global.parameters();
        auto lp = local.parameters();
        for (size_t i = 0; i < gp.size(); ++i) lp[i].copy_(gp[i]);
      }
      torch::optim::SGD opt(local.parameters(), torch::optim::SGDOptions(0.05));
      auto perm = torch::randperm(n, torch::kLong);
      for (int64_t b = 0; b < n; b += 32) {
        auto ix = perm.slice(0, b, std::min<int64_t>(b + 32, n));
        opt.zero_grad();
        auto loss = torch::nn::functional::cross_entropy(local.forward(xs[d].index_select(0, ix)),
                                                         ys[d].index_select(0, ix));
        loss.backward();
        opt.step();
      }
      torch::NoGradGuard g;
      auto gp = global.parameters();
      auto lp = local.parameters();
      for (size_t i = 0; i < gp.size(); ++i) sum[i] += (lp[i] - gp[i]) * static_cast<double>(n);
      total += static_cast<double>(n);
      examples_trained += static_cast<uint64_t>(n);
    }
    torch::NoGradGuard g;
    auto gp = global.parameters();
    if (total > 0) {
      for (size_t i = 0; i < gp.size(); ++i) gp[i] += sum[i] / total;
    }
  }
  const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  torch::NoGradGuard g;
  auto tx = torch::from_blob(test->images.data(), {static_cast<int64_t>(test->size()), 784}).clone();
  std::vector<int64_t> tl(test->labels.begin(), test->labels.end());
  auto ty = torch::tensor(tl);
  const double acc = global.forward(tx).argmax(1).eq(ty).to(torch::kFloat).mean().item<double>();
  std::printf("bare LibTorch loop: %zu devices, %zu per round, %zu rounds: %.2f s, accuracy %.4f on %zu, %llu examples trained\n",
              devices, per_round, rounds, train_s, acc, test->size(), static_cast<unsigned long long>(examples_trained));
  return 0;
}
