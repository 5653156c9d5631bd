// IID and Dirichlet label-skew partitioners. No LibTorch here; randomness
// only from verdant::Rng so that splits are identical on every platform.
#include "verdant/client/partition.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "verdant/core/rng.h"

namespace verdant {
namespace {

constexpr int kDirichletAttempts = 20;
constexpr size_t kMinShardTarget = 10;

struct Spec {
  enum class Kind { kIid, kDirichlet } kind = Kind::kIid;
  double alpha = 0.0;
};

Result<Spec> ParseSpec(std::string_view spec) {
  constexpr std::string_view kValid = "valid: \"iid\", \"dirichlet:<alpha>\" with alpha > 0";
  if (spec == "iid") return Spec{};
  constexpr std::string_view kPrefix = "dirichlet:";
  if (spec.substr(0, kPrefix.size()) == kPrefix) {
    std::string_view num = spec.substr(kPrefix.size());
    double alpha = 0.0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), alpha);
    if (num.empty() || ec != std::errc() || ptr != num.data() + num.size()) {
      return InvalidArgumentError("partition spec '" + std::string(spec) + "': alpha '" +
                                  std::string(num) + "' is not a number (" + std::string(kValid) +
                                  ")");
    }
    if (!(alpha > 0.0) || !std::isfinite(alpha)) {
      return InvalidArgumentError("partition spec '" + std::string(spec) +
                                  "': the Dirichlet alpha must be a finite number > 0");
    }
    return Spec{Spec::Kind::kDirichlet, alpha};
  }
  return InvalidArgumentError("unknown partition spec '" + std::string(spec) + "' (" +
                              std::string(kValid) + ")");
}

// Dirichlet(alpha, ..., alpha) of dimension k, computed in log space so that
// tiny alphas (where Gamma(alpha) underflows to 0) still give a proper draw.
std::vector<double> SampleDirichlet(Rng& rng, double alpha, size_t k) {
  std::vector<double> logs(k);
  for (auto& l : logs) {
    if (alpha < 1.0) {
      // Gamma(a) = Gamma(a + 1) * U^(1/a)  =>  log = log Gamma(a+1) + log(U)/a.
      double u = 0.0;
      while (u <= 0.0) u = rng.Uniform();
      double g = rng.Gamma(alpha + 1.0);
      l = std::log(std::max(g, std::numeric_limits<double>::min())) + std::log(u) / alpha;
    } else {
      l = std::log(std::max(rng.Gamma(alpha), std::numeric_limits<double>::min()));
    }
  }
  const double mx = *std::max_element(logs.begin(), logs.end());
  double sum = 0.0;
  for (auto& l : logs) sum += (l = std::exp(l - mx));
  for (auto& l : logs) l /= sum;
  return logs;
}

std::vector<std::vector<size_t>> IidSplit(size_t n_examples, size_t n_clients, uint64_t seed) {
  std::vector<size_t> perm(n_examples);
  for (size_t i = 0; i < n_examples; ++i) perm[i] = i;
  Rng rng(seed);
  rng.Shuffle(std::span<size_t>(perm));
  std::vector<std::vector<size_t>> shards(n_clients);
  const size_t base = n_examples / n_clients;
  const size_t extra = n_examples % n_clients;
  size_t pos = 0;
  for (size_t j = 0; j < n_clients; ++j) {
    size_t len = base + (j < extra ? 1 : 0);
    shards[j].assign(perm.begin() + static_cast<ptrdiff_t>(pos),
                     perm.begin() + static_cast<ptrdiff_t>(pos + len));
    pos += len;
  }
  return shards;
}

size_t MinSize(const std::vector<std::vector<size_t>>& shards) {
  size_t m = std::numeric_limits<size_t>::max();
  for (const auto& s : shards) m = std::min(m, s.size());
  return m;
}

// One draw of the per-class Dirichlet split.
std::vector<std::vector<size_t>> DirichletDraw(const std::vector<std::vector<size_t>>& by_class,
                                               size_t n_examples, size_t n_clients, double alpha,
                                               Rng& rng) {
  std::vector<std::vector<size_t>> shards(n_clients);
  const double cap = static_cast<double>(n_examples) / static_cast<double>(n_clients);
  for (const auto& cls : by_class) {
    if (cls.empty()) continue;
    std::vector<size_t> idx = cls;
    rng.Shuffle(std::span<size_t>(idx));
    std::vector<double> p = SampleDirichlet(rng, alpha, n_clients);
    double sum = 0.0;
    for (size_t j = 0; j < n_clients; ++j) {
      if (static_cast<double>(shards[j].size()) >= cap) p[j] = 0.0;  // NIID-Bench balancing
      sum += p[j];
    }
    if (!(sum > 0.0)) {
      std::fill(p.begin(), p.end(), 1.0);
      sum = static_cast<double>(n_clients);
    }
    const double len = static_cast<double>(idx.size());
    double cum = 0.0;
    size_t start = 0;
    for (size_t j = 0; j < n_clients; ++j) {
      cum += p[j];
      size_t end = (j + 1 == n_clients)
                       ? idx.size()
                       : std::min(idx.size(), static_cast<size_t>(std::floor(cum / sum * len)));
      end = std::max(end, start);
      shards[j].insert(shards[j].end(), idx.begin() + static_cast<ptrdiff_t>(start),
                       idx.begin() + static_cast<ptrdiff_t>(end));
      start = end;
    }
  }
  return shards;
}

// Moves examples from the largest shards to the smallest until every shard
// holds at least `target` (requires n_examples >= target * n_clients).
void RaiseMinimum(std::vector<std::vector<size_t>>& shards, size_t target) {
  for (;;) {
    size_t lo = 0, hi = 0;
    for (size_t j = 1; j < shards.size(); ++j) {
      if (shards[j].size() < shards[lo].size()) lo = j;
      if (shards[j].size() > shards[hi].size()) hi = j;
    }
    if (shards[lo].size() >= target || shards[hi].size() <= target) return;
    // Move as many as both sides allow in one go.
    size_t k = std::min(target - shards[lo].size(), shards[hi].size() - target);
    for (size_t i = 0; i < k; ++i) {
      shards[lo].push_back(shards[hi].back());
      shards[hi].pop_back();
    }
  }
}

}  // namespace

Result<std::vector<std::vector<size_t>>> PartitionAllIndices(std::string_view spec,
                                                             std::span<const uint8_t> labels,
                                                             int num_classes, size_t num_clients,
                                                             uint64_t seed) {
  VERDANT_ASSIGN_OR_RETURN(Spec parsed, ParseSpec(spec));
  if (num_clients == 0) return InvalidArgumentError("partition: num_clients must be > 0");
  if (num_classes <= 0) return InvalidArgumentError("partition: num_classes must be > 0");
  const size_t n = labels.size();
  if (n < num_clients) {
    return InvalidArgumentError("partition: " + std::to_string(n) +
                                " examples cannot be split over " + std::to_string(num_clients) +
                                " clients without leaving one empty");
  }
  std::vector<std::vector<size_t>> shards;
  if (parsed.kind == Spec::Kind::kIid) {
    shards = IidSplit(n, num_clients, seed);
  } else {
    std::vector<std::vector<size_t>> by_class(static_cast<size_t>(num_classes));
    for (size_t i = 0; i < n; ++i) {
      if (labels[i] >= num_classes) {
        return InvalidArgumentError("partition: label " + std::to_string(labels[i]) +
                                    " of example " + std::to_string(i) + " is >= num_classes " +
                                    std::to_string(num_classes));
      }
      by_class[labels[i]].push_back(i);
    }
    const size_t target = std::min(kMinShardTarget, n / num_clients);
    Rng root(seed);
    size_t best_min = 0;
    for (int attempt = 0; attempt < kDirichletAttempts; ++attempt) {
      Rng rng = root.Fork(static_cast<uint64_t>(attempt));
      auto draw = DirichletDraw(by_class, n, num_clients, parsed.alpha, rng);
      size_t m = MinSize(draw);
      if (attempt == 0 || m > best_min) {
        best_min = m;
        shards = std::move(draw);
      }
      if (best_min >= target) break;
    }
    if (best_min < target) RaiseMinimum(shards, target);
  }
  for (auto& s : shards) std::sort(s.begin(), s.end());
  return shards;
}

Result<std::vector<size_t>> PartitionIndices(std::string_view spec, std::span<const uint8_t> labels,
                                             int num_classes, size_t num_clients,
                                             size_t client_index, uint64_t seed) {
  if (client_index >= num_clients) {
    return InvalidArgumentError("partition: client_index " + std::to_string(client_index) +
                                " is out of range for " + std::to_string(num_clients) + " clients");
  }
  VERDANT_ASSIGN_OR_RETURN(auto shards,
                           PartitionAllIndices(spec, labels, num_classes, num_clients, seed));
  return std::move(shards[client_index]);
}

}  // namespace verdant
