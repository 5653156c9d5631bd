// verdant/server/selector.h
//
// ClientSelector: picks which connected clients train in a round — or
// decides to wait for a better moment (carbon-aware deferral), bounded so
// that training always progresses. The coordinator gives it every eligible
// client's latest state and history.
//   auto sel = CreateSelector("random", {});
//   auto d = (*sel)->Select(request, candidates, rng);
//   if (d->defer_for) Sleep(*d->defer_for); else Train(d->selected);
// Thread-safety: not thread-safe; the coordinator calls it from its round
// thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"

namespace verdant {

// What the coordinator knows about one connected, idle client.
struct ClientCandidate {
  std::string client_id;
  uint64_t num_examples = 0;
  std::string zone;             // grid zone reported by the client ("" = unknown)
  float battery_percent = -1;   // -1 = unknown
  bool charging = false;
  bool unmetered_network = false;
  bool idle = false;
  // History.
  uint64_t rounds_selected = 0;
  uint64_t rounds_completed = 0;
  uint64_t rounds_failed = 0;
  double last_train_seconds = 0;  // 0 = never trained
  double last_train_loss = 0;
};

struct SelectionRequest {
  uint64_t round = 0;
  size_t target = 0;       // how many clients to select (0 = all candidates)
  TimePoint now;
  TimePoint round_deadline;  // latest time this round may start
};

struct SelectionDecision {
  std::vector<std::string> selected;
  // Set when the selector prefers to wait; the coordinator sleeps this long
  // (clipped to the deadline) and asks again.
  std::optional<Duration> defer_for;
  std::string reason;  // free text for logs and reports
};

class ClientSelector {
 public:
  virtual ~ClientSelector() = default;
  ClientSelector(const ClientSelector&) = delete;
  ClientSelector& operator=(const ClientSelector&) = delete;
  virtual std::string_view Name() const = 0;
  // kFailedPrecondition when no candidate is usable.
  virtual Result<SelectionDecision> Select(const SelectionRequest& request,
                                           std::span<const ClientCandidate> candidates, Rng& rng) = 0;
  // The round's outcome, to feed history-based policies.
  virtual void OnRoundEnd(uint64_t round, std::span<const std::string> completed,
                          std::span<const std::string> failed) {}
  virtual Result<std::string> SaveState() const { return std::string(); }
  virtual Status RestoreState(std::string_view state) { return OkStatus(); }

 protected:
  ClientSelector() = default;
};

// Uniformly random without replacement.
class RandomSelector final : public ClientSelector {
 public:
  RandomSelector() = default;
  std::string_view Name() const override { return "random"; }
  Result<SelectionDecision> Select(const SelectionRequest& request,
                                   std::span<const ClientCandidate> candidates, Rng& rng) override;
};

Registry<ClientSelector>& SelectorRegistry();
Result<std::unique_ptr<ClientSelector>> CreateSelector(const std::string& name, const OptionMap& options);

}  // namespace verdant
