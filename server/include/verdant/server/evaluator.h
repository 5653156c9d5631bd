// verdant/server/evaluator.h
//
// Evaluator: centralised evaluation of the global model on a held-out set.
// Declared here so the coordinator never includes LibTorch; the LibTorch
// implementation lives in client/ and cli/ injects it (dependency inversion).
//   auto m = evaluator.Evaluate(global);   // Result<EvalSummary>
// Thread-safety: implementations need not be thread-safe; the coordinator
// calls Evaluate from its round thread only.
#pragma once

#include <cstdint>
#include <string_view>

#include "verdant/core/parameter_vector.h"
#include "verdant/core/status.h"

namespace verdant {

struct EvalSummary {
  double loss = 0.0;
  double accuracy = 0.0;  // 0..1
  uint64_t num_examples = 0;
};

class Evaluator {
 public:
  virtual ~Evaluator() = default;
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;
  virtual std::string_view Name() const = 0;
  virtual Result<EvalSummary> Evaluate(const ParameterVector& model) = 0;

 protected:
  Evaluator() = default;
};

}  // namespace verdant
