// verdant/aggregation/robust.h
//
// Byzantine-robust reducers. They need every update (NeedsIndividualUpdates()
// is true), so they buffer the decoded float32 updates: memory is
// (updates x parameters x 4 bytes) for the round. Non-finite or malformed
// updates are rejected at Add, as the streaming mean does, so a NaN client
// never reaches the buffer. Example weights do not weight the robust
// statistics (as in the papers); an update of weight 0 is accepted but left
// out, and Finish fails with kFailedPrecondition when nothing of positive
// weight remains.
//   auto agg = CreateAggregator("trimmedmean", OptionMap{{"beta", "0.2"}});
//   VERDANT_RETURN_IF_ERROR((*agg)->Begin(num_params));
//   for (auto& u : updates) VERDANT_RETURN_IF_ERROR((*agg)->Add(u, 1.0));
//   auto robust_mean = (*agg)->Finish();
// Thread-safety: not thread-safe; the coordinator serialises calls.
#pragma once

#include <cstdint>
#include <vector>

#include "verdant/aggregation/aggregator.h"

namespace verdant {

// Holds the decoded updates of a round; subclasses reduce them in Reduce().
class BufferedAggregator : public Aggregator {
 public:
  bool NeedsIndividualUpdates() const final { return true; }
  Status Begin(size_t num_params) final;
  Status Add(const UpdateView& update, double weight) final;
  size_t count() const final { return weights_.size(); }
  Result<std::vector<float>> Finish() final;

 protected:
  BufferedAggregator() = default;
  // The reduction over `rows` (each num_params long, all of positive weight,
  // at least one), with their weights.
  virtual Result<std::vector<float>> Reduce(const std::vector<const float*>& rows,
                                            const std::vector<double>& weights,
                                            size_t num_params) = 0;

 private:
  std::vector<std::vector<float>> rows_;
  std::vector<double> weights_;
  size_t num_params_ = 0;
  bool begun_ = false;
};

// Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed
// Learning: Towards Optimal Statistical Rates"); for an even count, the mean
// of the two middle values (numpy's convention). Columns are processed in
// cache-sized blocks, each sorted by a Batcher sorting network whose
// comparators are branch-free min/max over whole rows (vectorised across
// columns).
class MedianAggregator final : public BufferedAggregator {
 public:
  MedianAggregator() = default;
  std::string_view Name() const override { return "median"; }

 protected:
  Result<std::vector<float>> Reduce(const std::vector<const float*>& rows,
                                    const std::vector<double>& weights, size_t n) override;
};

// Coordinate-wise beta-trimmed mean (Yin et al. 2018): per coordinate, drop
// the floor(beta * k) smallest and largest of the k values and average the
// rest (scipy.stats.trim_mean's convention). beta in [0, 0.5).
class TrimmedMeanAggregator final : public BufferedAggregator {
 public:
  explicit TrimmedMeanAggregator(double beta) : beta_(beta) {}
  std::string_view Name() const override { return "trimmedmean"; }

 protected:
  Result<std::vector<float>> Reduce(const std::vector<const float*>& rows,
                                    const std::vector<double>& weights, size_t n) override;

 private:
  double beta_;
};

// Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with
// Adversaries: Byzantine Tolerant Gradient Descent"). Each update's score is
// the sum of squared L2 distances to its k - f - 2 nearest other updates
// (at least 1, as Flower clamps it; the paper's guarantee needs k > 2f + 2).
// Krum returns the update of lowest score; Multi-Krum the plain mean of the
// m lowest-scoring updates (m = 0: k - f).
class KrumAggregator final : public BufferedAggregator {
 public:
  KrumAggregator(int64_t f, int64_t m, bool multi) : f_(f), m_(m), multi_(multi) {}
  std::string_view Name() const override { return multi_ ? "multikrum" : "krum"; }
  // krum_selected: how many updates were averaged; krum_first: the index (in
  // arrival order among positive-weight updates) of the best one.
  std::map<std::string, double> Metrics() const override { return metrics_; }

 protected:
  Result<std::vector<float>> Reduce(const std::vector<const float*>& rows,
                                    const std::vector<double>& weights, size_t n) override;

 private:
  int64_t f_, m_;
  bool multi_;
  std::map<std::string, double> metrics_;
};

// Krum scores for `rows` (exposed for tests): score[i] = sum of the
// `neighbours` smallest squared distances from row i to the other rows,
// accumulated in double.
std::vector<double> KrumScores(const std::vector<const float*>& rows, size_t n, size_t neighbours);

}  // namespace verdant
