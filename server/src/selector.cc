#include "verdant/server/selector.h"

#include <algorithm>
#include <numeric>

namespace verdant {

Result<SelectionDecision> RandomSelector::Select(const SelectionRequest& request,
                                                 std::span<const ClientCandidate> candidates, Rng& rng) {
  if (candidates.empty()) return FailedPreconditionError("no client is available");
  std::vector<size_t> idx(candidates.size());
  std::iota(idx.begin(), idx.end(), 0);
  // Sort by id first so the outcome depends on the seed, not on arrival order.
  std::sort(idx.begin(), idx.end(),
            [&](size_t a, size_t b) { return candidates[a].client_id < candidates[b].client_id; });
  rng.Shuffle(std::span<size_t>(idx));
  size_t k = request.target == 0 ? candidates.size() : std::min(request.target, candidates.size());
  SelectionDecision d;
  for (size_t i = 0; i < k; ++i) d.selected.push_back(candidates[idx[i]].client_id);
  d.reason = "uniform random " + std::to_string(k) + " of " + std::to_string(candidates.size());
  return d;
}

Registry<ClientSelector>& SelectorRegistry() {
  static Registry<ClientSelector>* reg = [] {
    auto* r = new Registry<ClientSelector>("selector");
    r->Register("random", [](const OptionMap& o) -> Result<std::unique_ptr<ClientSelector>> {
       VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("selector 'random'"));
       return std::unique_ptr<ClientSelector>(std::make_unique<RandomSelector>());
     }).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<ClientSelector>> CreateSelector(const std::string& name, const OptionMap& options) {
  return SelectorRegistry().Create(name, options);
}

}  // namespace verdant
