// verdant/aggregation/dp.h
//
// Central differential privacy for federated averaging (DP-FedAvg, McMahan
// et al. 2018, "Learning Differentially Private Recurrent Language Models"):
// each client's delta is clipped to L2 norm `clip_norm`, the clipped deltas
// are averaged with equal weight, and Gaussian noise of standard deviation
// noise_multiplier * clip_norm / n (n = updates aggregated) is added to each
// coordinate of the mean. An RDP accountant for the sampled Gaussian
// mechanism (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the
// Sampled Gaussian Mechanism") reports the (epsilon, delta) spent so far.
//   auto s = CreateStrategy("dp-fedavg", OptionMap{{"clip_norm", "0.5"},
//       {"noise_multiplier", "1.1"}, {"clients_per_round", "10"}, {"num_clients", "1000"}});
//   ... BeginRound / AddResult / FinishRound as for any strategy ...
//   double eps = (*s)->RoundMetrics().at("dp_epsilon");
// Assumptions (see docs/strategies.md): client-level DP under add/remove-one
// adjacency; each round's participants are taken to be Poisson-sampled with
// rate q = sample_rate (Verdant's selectors pick a fixed number uniformly,
// the usual approximation, which TF-Privacy and Opacus also make); clients
// that fail still count as sampled; noise comes from a seeded xoshiro
// generator, which is not a cryptographic source.
// Thread-safety: not thread-safe; one round thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "verdant/aggregation/strategy.h"
#include "verdant/core/rng.h"

namespace verdant {

// RDP accountant for the Poisson-subsampled Gaussian mechanism, over the
// orders Opacus and TF-Privacy use by default: 1.1, 1.2, ..., 10.9 and 12..63.
// Conversion to (epsilon, delta) as in Opacus / dp_accounting (Balle et al.
// 2020, "Hypothesis Testing Interpretations and Renyi Differential Privacy").
class RdpAccountant {
 public:
  RdpAccountant();
  explicit RdpAccountant(std::vector<double> orders);

  // Composes `steps` runs of the sampled Gaussian mechanism with sampling
  // rate q in [0, 1] and noise multiplier sigma >= 0 (std / sensitivity).
  void Compose(double q, double sigma, uint64_t steps = 1);
  // Total RDP at each order.
  const std::vector<double>& rdp() const { return rdp_; }
  const std::vector<double>& orders() const { return orders_; }
  uint64_t steps() const { return steps_; }
  // The smallest epsilon over the orders for `delta` in (0, 1), and the
  // order attaining it. +inf when nothing bounds it (sigma = 0).
  std::pair<double, double> GetPrivacySpent(double delta) const;

  // Compact, exact state: the composition history (q, sigma, steps).
  std::string SaveState() const;
  Status RestoreState(std::string_view state);

  // RDP of one sampled Gaussian step at order alpha > 1 (exposed for tests).
  static double ComputeRdp(double q, double sigma, double alpha);

 private:
  struct Entry {
    double q, sigma;
    uint64_t steps;
  };
  std::vector<double> orders_;
  std::vector<double> rdp_;
  std::vector<Entry> history_;
  uint64_t steps_ = 0;
};

struct DpFedAvgOptions {
  double clip_norm = 1.0;          // S: L2 bound per client delta, > 0
  double noise_multiplier = 1.0;   // z: noise std / S on the sum, >= 0
  double delta = 1e-5;             // target delta of the reported epsilon, in (0, 1)
  double sample_rate = 1.0;        // q: per-round client sampling probability, (0, 1]
  double server_lr = 1.0;          // applied to the noised mean (SGD)
  uint64_t seed = 0;               // noise seed; 0 = from std::random_device
};

class DpFedAvgStrategy final : public Strategy {
 public:
  DpFedAvgStrategy(TrainConfig train, DpFedAvgOptions options);
  std::string_view Name() const override { return "dp-fedavg"; }
  // True: the server clips each update, so it cannot run under secure
  // aggregation (memory still streams: two model-sized buffers).
  bool NeedsIndividualUpdates() const override { return true; }
  TrainConfig ConfigureTrain(RoundId round, const ParameterVector& global) override;
  Status BeginRound(RoundId round, const ParameterVector& global) override;
  // Ignores num_examples (equal weights bound the sensitivity). kDataLoss on
  // a non-finite or malformed update, kInvalidArgument on a size mismatch.
  Status AddResult(const ClientResult& result) override;
  Result<std::optional<ParameterVector>> FinishRound(
      RoundId round, const ParameterVector& global,
      std::span<const ClientFailure> failures) override;
  Result<std::string> SaveState() const override;
  Status RestoreState(std::string_view state) override;
  // dp_epsilon, dp_delta, dp_rounds, dp_sample_rate, dp_noise_multiplier,
  // dp_clip_norm, dp_noise_std (on the mean), dp_clipped_fraction,
  // dp_optimal_order, aggregated_updates, rejected_updates, failed_clients.
  std::map<std::string, double> RoundMetrics() const override { return metrics_; }
  const RdpAccountant& accountant() const { return accountant_; }

 private:
  TrainConfig train_;
  DpFedAvgOptions o_;
  uint64_t base_seed_;
  RdpAccountant accountant_;
  std::vector<float> sum_, scratch_;
  size_t count_ = 0, clipped_ = 0, rejected_ = 0;
  RoundId round_ = 0;
  bool begun_ = false;
  std::map<std::string, double> metrics_;
};

// Factory used by the registry ("dp-fedavg"). Options: clip_norm,
// noise_multiplier, delta, sample_rate (or clients_per_round + num_clients),
// server_lr, seed, and the TrainConfig options.
Result<std::unique_ptr<Strategy>> MakeDpFedAvgStrategy(const OptionMap& options);

}  // namespace verdant
