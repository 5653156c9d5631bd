// Model zoo: layouts (plain C++); the LibTorch modules behind them live in
// the backend library (client/torch/zoo_nets.cc).
#include "verdant/client/model_zoo.h"

#include <charconv>
#include <cstring>

#include "verdant/client/torch_backend.h"
#include "verdant/core/rng.h"

namespace verdant {
namespace {

Layout MlpLayout() {
  return Layout({{"fc1.weight", {200, 784}},
                 {"fc1.bias", {200}},
                 {"fc2.weight", {200, 200}},
                 {"fc2.bias", {200}},
                 {"fc3.weight", {10, 200}},
                 {"fc3.bias", {10}}});
}

Layout CnnLayout() {
  return Layout({{"conv1.weight", {32, 1, 5, 5}},
                 {"conv1.bias", {32}},
                 {"conv2.weight", {64, 32, 5, 5}},
                 {"conv2.bias", {64}},
                 {"fc1.weight", {512, 3136}},
                 {"fc1.bias", {512}},
                 {"fc2.weight", {10, 512}},
                 {"fc2.bias", {10}}});
}

Status UnknownModel(std::string_view model) {
  std::string valid;
  for (const auto& n : ModelNames()) valid += (valid.empty() ? "" : ", ") + n;
  return InvalidArgumentError("unknown model '" + std::string(model) + "' (valid: " + valid +
                              ", or synthetic:N for benchmarks)");
}

constexpr std::string_view kSyntheticPrefix = "synthetic:";

}  // namespace

std::vector<std::string> ModelNames() { return {"mlp", "cnn"}; }

bool IsSyntheticModel(std::string_view model) { return model.starts_with(kSyntheticPrefix); }

Result<uint64_t> SyntheticModelSize(std::string_view model) {
  if (!IsSyntheticModel(model)) {
    return InvalidArgumentError("model '" + std::string(model) + "' is not synthetic:N");
  }
  const std::string_view spec = model.substr(kSyntheticPrefix.size());
  auto bad = [&] {
    return InvalidArgumentError("model '" + std::string(model) +
                                "': N must be a positive integer, optionally with a k or M suffix, up to " +
                                std::to_string(kMaxSyntheticParameters) + " (e.g. synthetic:1000000 or synthetic:1M)");
  };
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), n);
  if (ec != std::errc() || p == spec.data()) return bad();
  std::string_view rest(p, spec.data() + spec.size() - p);
  uint64_t scale = 1;
  if (rest == "k" || rest == "K") scale = 1'000;
  else if (rest == "M") scale = 1'000'000;
  else if (!rest.empty()) return bad();
  if (n == 0 || n > kMaxSyntheticParameters / scale) return bad();
  return n * scale;
}

Result<Layout> ModelLayout(std::string_view model) {
  if (model == "mlp") return MlpLayout();
  if (model == "cnn") return CnnLayout();
  if (IsSyntheticModel(model)) {
    VERDANT_ASSIGN_OR_RETURN(uint64_t n, SyntheticModelSize(model));
    return Layout({{"synthetic", {static_cast<int64_t>(n)}}});
  }
  return UnknownModel(model);
}


Result<ParameterVector> InitialModel(std::string_view model, uint64_t seed) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));
  if (IsSyntheticModel(model)) {
    ParameterVector out(std::move(layout));
    Rng rng(seed);
    for (float& v : out.values()) v = (rng.UniformFloat() - 0.5f) * 0.1f;
    return out;
  }
  // The zoo's networks are initialised by LibTorch (its default init from
  // `seed`), in the backend library.
  VERDANT_ASSIGN_OR_RETURN(const TorchBackendV1* backend, LoadTorchBackend());
  return backend->initial_model(model, seed);
}

}  // namespace verdant
