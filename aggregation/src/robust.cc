#include "verdant/aggregation/robust.h"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels.h"
#include "verdant/core/parameter_vector.h"

namespace verdant {

// Columns per block: the k x kBlock block stays in L2 for up to a few hundred
// clients, and every row is read in kBlock-long runs.
static constexpr size_t kBlock = 512;

Status BufferedAggregator::Begin(size_t num_params) {
  rows_.clear();
  weights_.clear();
  num_params_ = num_params;
  begun_ = true;
  return OkStatus();
}

Status BufferedAggregator::Add(const UpdateView& update, double weight) {
  if (!begun_) return FailedPreconditionError("Add before Begin");
  if (!(weight >= 0.0) || !std::isfinite(weight)) {
    return InvalidArgumentError("weight must be finite and non-negative");
  }
  if (update.codec == nullptr && update.values.size() != num_params_) {
    return InvalidArgumentError("update has " + std::to_string(update.values.size()) +
                                " values, the model has " + std::to_string(num_params_));
  }
  std::vector<float> row(num_params_);
  VERDANT_RETURN_IF_ERROR(update.DecodeInto(row));
  if (!internal::AllFiniteFast(row.data(), row.size())) return DataLossError("update holds NaN or Inf");
  rows_.push_back(std::move(row));
  weights_.push_back(weight);
  return OkStatus();
}

Result<std::vector<float>> BufferedAggregator::Finish() {
  if (!begun_ || rows_.empty()) return FailedPreconditionError("no update was aggregated");
  std::vector<const float*> rows;
  std::vector<double> weights;
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (weights_[i] > 0.0) {
      rows.push_back(rows_[i].data());
      weights.push_back(weights_[i]);
    }
  }
  if (rows.empty()) return FailedPreconditionError("all update weights were zero");
  auto out = Reduce(rows, weights, num_params_);
  rows_.clear();
  rows_.shrink_to_fit();
  weights_.clear();
  begun_ = false;
  return out;
}

// Batcher's odd-even merge sort network for k inputs (comparators touching
// an index >= k are dropped, which is the same as padding with +inf).
static std::vector<std::pair<uint32_t, uint32_t>> SortingNetwork(size_t k) {
  std::vector<std::pair<uint32_t, uint32_t>> net;
  for (size_t p = 1; p < k; p <<= 1) {
    for (size_t d = p; d >= 1; d >>= 1) {
      for (size_t j = d % p; j + d < k; j += 2 * d) {
        for (size_t i = 0; i < std::min(d, k - j - d); ++i) {
          if ((i + j) / (2 * p) == (i + j + d) / (2 * p)) {
            net.emplace_back(static_cast<uint32_t>(i + j), static_cast<uint32_t>(i + j + d));
          }
        }
      }
    }
  }
  return net;
}

// Sorts, independently for every column j < width, the k values
// buf[r * kBlock + j] (r = 0..k-1). Each comparator is a branch-free min/max
// over a whole row segment, so the work vectorises across columns.
static void SortColumns(const std::vector<std::pair<uint32_t, uint32_t>>& net, float* buf,
                        size_t width) {
  for (const auto& [a, b] : net) {
    float* __restrict x = buf + a * kBlock;
    float* __restrict y = buf + b * kBlock;
    for (size_t j = 0; j < width; ++j) {
      const float lo = y[j] < x[j] ? y[j] : x[j];
      const float hi = y[j] < x[j] ? x[j] : y[j];
      x[j] = lo;
      y[j] = hi;
    }
  }
}

// Copies columns [base, base + width) of every row into the row-major block.
static void LoadBlock(const std::vector<const float*>& rows, size_t base, size_t width,
                      std::vector<float>& buf) {
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(buf.data() + r * kBlock, rows[r] + base, width * sizeof(float));
  }
}

Result<std::vector<float>> MedianAggregator::Reduce(const std::vector<const float*>& rows,
                                                    const std::vector<double>&, size_t n) {
  const size_t k = rows.size();
  const auto net = SortingNetwork(k);
  std::vector<float> out(n);
  std::vector<float> buf(k * kBlock);
  const size_t mid = k / 2;
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t width = std::min(kBlock, n - base);
    LoadBlock(rows, base, width, buf);
    SortColumns(net, buf.data(), width);
    const float* upper = buf.data() + mid * kBlock;
    if (k % 2 == 1) {
      std::memcpy(out.data() + base, upper, width * sizeof(float));
    } else {
      const float* lower = buf.data() + (mid - 1) * kBlock;
      for (size_t j = 0; j < width; ++j) {
        out[base + j] = static_cast<float>((static_cast<double>(lower[j]) + upper[j]) * 0.5);
      }
    }
  }
  return out;
}

Result<std::vector<float>> TrimmedMeanAggregator::Reduce(const std::vector<const float*>& rows,
                                                         const std::vector<double>&, size_t n) {
  const size_t k = rows.size();
  const size_t t = static_cast<size_t>(std::floor(beta_ * static_cast<double>(k)));
  if (2 * t >= k) {
    return FailedPreconditionError("trimmed mean with beta " + std::to_string(beta_) +
                                   " leaves nothing of " + std::to_string(k) + " updates");
  }
  const auto net = SortingNetwork(k);
  const double inv = 1.0 / static_cast<double>(k - 2 * t);
  std::vector<float> out(n);
  std::vector<float> buf(k * kBlock);
  std::vector<double> acc(kBlock);
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t width = std::min(kBlock, n - base);
    LoadBlock(rows, base, width, buf);
    if (t > 0) SortColumns(net, buf.data(), width);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (size_t r = t; r < k - t; ++r) {
      const float* row = buf.data() + r * kBlock;
      for (size_t j = 0; j < width; ++j) acc[j] += row[j];
    }
    for (size_t j = 0; j < width; ++j) out[base + j] = static_cast<float>(acc[j] * inv);
  }
  return out;
}

std::vector<double> KrumScores(const std::vector<const float*>& rows, size_t n,
                               size_t neighbours) {
  const size_t k = rows.size();
  std::vector<double> dist(k * k, 0.0);
  // Blocked over columns so each pair reads two short runs that stay in cache.
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t width = std::min(kBlock, n - base);
    for (size_t i = 0; i < k; ++i) {
      const float* a = rows[i] + base;
      for (size_t j = i + 1; j < k; ++j) {
        const float* b = rows[j] + base;
        double s = 0.0;
        for (size_t c = 0; c < width; ++c) {
          const double d = static_cast<double>(a[c]) - static_cast<double>(b[c]);
          s += d * d;
        }
        dist[i * k + j] += s;
      }
    }
  }
  std::vector<double> scores(k, 0.0);
  std::vector<double> di;
  for (size_t i = 0; i < k; ++i) {
    di.clear();
    for (size_t j = 0; j < k; ++j) {
      if (j == i) continue;
      di.push_back(i < j ? dist[i * k + j] : dist[j * k + i]);
    }
    const size_t take = std::min(neighbours, di.size());
    std::partial_sort(di.begin(), di.begin() + take, di.end());
    scores[i] = std::accumulate(di.begin(), di.begin() + take, 0.0);
  }
  return scores;
}

Result<std::vector<float>> KrumAggregator::Reduce(const std::vector<const float*>& rows,
                                                  const std::vector<double>&, size_t n) {
  const int64_t k = static_cast<int64_t>(rows.size());
  const int64_t neighbours = std::max<int64_t>(1, k - f_ - 2);
  std::vector<double> scores = KrumScores(rows, n, static_cast<size_t>(neighbours));
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Stable: ties go to the earlier arrival, so results are reproducible.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  int64_t m = 1;
  if (multi_) m = m_ > 0 ? m_ : k - f_;
  m = std::clamp<int64_t>(m, 1, k);
  std::vector<double> acc(n, 0.0);
  for (int64_t s = 0; s < m; ++s) {
    const float* r = rows[order[static_cast<size_t>(s)]];
    for (size_t i = 0; i < n; ++i) acc[i] += r[i];
  }
  std::vector<float> out(n);
  const double inv = 1.0 / static_cast<double>(m);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(acc[i] * inv);
  metrics_ = {{"krum_selected", static_cast<double>(m)},
              {"krum_first", static_cast<double>(order[0])}};
  return out;
}

namespace internal {

Status RegisterRobustAggregators(Registry<Aggregator>& reg) {
  VERDANT_RETURN_IF_ERROR(reg.Register(
      "median", [](const OptionMap& o) -> Result<std::unique_ptr<Aggregator>> {
        VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("aggregator 'median'"));
        return std::unique_ptr<Aggregator>(std::make_unique<MedianAggregator>());
      }));
  VERDANT_RETURN_IF_ERROR(reg.Register(
      "trimmedmean", [](const OptionMap& o) -> Result<std::unique_ptr<Aggregator>> {
        VERDANT_ASSIGN_OR_RETURN(double beta, o.GetDouble("beta", 0.1));
        VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("aggregator 'trimmedmean'"));
        if (!(beta >= 0.0 && beta < 0.5)) {
          return InvalidArgumentError("trimmedmean: beta must be in [0, 0.5), got " +
                                      std::to_string(beta));
        }
        return std::unique_ptr<Aggregator>(std::make_unique<TrimmedMeanAggregator>(beta));
      }));
  for (bool multi : {false, true}) {
    const std::string name = multi ? "multikrum" : "krum";
    VERDANT_RETURN_IF_ERROR(reg.Register(
        name, [multi, name](const OptionMap& o) -> Result<std::unique_ptr<Aggregator>> {
          VERDANT_ASSIGN_OR_RETURN(int64_t f, o.GetInt("f", 1));
          int64_t m = 1;
          if (multi) {
            VERDANT_ASSIGN_OR_RETURN(m, o.GetInt("m", 0));
          }
          VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("aggregator '" + name + "'"));
          if (f < 0 || f > 1000000) {
            return InvalidArgumentError(name + ": f (byzantine clients) must be >= 0, got " +
                                        std::to_string(f));
          }
          if (m < 0) return InvalidArgumentError(name + ": m must be >= 0 (0: k - f), got " + std::to_string(m));
          return std::unique_ptr<Aggregator>(std::make_unique<KrumAggregator>(f, m, multi));
        }));
  }
  return OkStatus();
}

}  // namespace internal
}  // namespace verdant
