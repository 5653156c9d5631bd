// Loads libverdant_torch.so on first use and forwards Trainer::Create,
// ModelEvaluator::Create and ConfigureTorchThreads to it (see
// torch_backend.h). This file has no LibTorch dependency.
#include "verdant/client/torch_backend.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "verdant/client/model_zoo.h"

namespace verdant {
namespace {

constexpr const char* kLibraryName = "libverdant_torch.so";
constexpr const char* kEntryPoint = "verdant_torch_backend_v1";

std::mutex g_mu;
const TorchBackendV1* g_backend = nullptr;

std::vector<std::string> Candidates() {
  if (const char* env = std::getenv("VERDANT_TORCH_BACKEND"); env && *env) return {env};
  std::vector<std::string> out;
#ifdef VERDANT_TORCH_BACKEND_BUILD_PATH
  out.emplace_back(VERDANT_TORCH_BACKEND_BUILD_PATH);
#endif
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    const std::filesystem::path dir = std::filesystem::path(std::string(exe, static_cast<size_t>(n))).parent_path();
    out.push_back((dir / kLibraryName).string());
    out.push_back((dir.parent_path() / "lib" / kLibraryName).string());
  }
  out.emplace_back(kLibraryName);  // the loader's search path
  return out;
}

// Opens `path` and checks the table; the handle stays open for the
// process's lifetime (LibTorch does not support being unloaded).
Result<const TorchBackendV1*> Open(const std::string& path) {
  const bool bare = path.find('/') == std::string::npos;
  if (!bare && !std::filesystem::exists(path)) return NotFoundError(path + ": no such file");
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* err = ::dlerror();
    return UnavailableError(path + ": " + (err ? err : "dlopen failed"));
  }
  using Entry = const TorchBackendV1* (*)();
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, kEntryPoint));
  const TorchBackendV1* table = entry ? entry() : nullptr;
  Status bad;
  if (!table) {
    bad = FailedPreconditionError(path + ": no " + std::string(kEntryPoint) + " entry point");
  } else if (table->abi != kTorchBackendAbi) {
    bad = FailedPreconditionError(path + ": backend ABI " + std::to_string(table->abi) + ", this binary needs " +
                                  std::to_string(kTorchBackendAbi) + " (rebuild both from one source tree)");
  } else if (!table->compiler || std::string(table->compiler) != __VERSION__ ||
             table->dataset_size != sizeof(Dataset) || table->parameter_vector_size != sizeof(ParameterVector) ||
             table->status_size != sizeof(Status)) {
    bad = FailedPreconditionError(path + ": built by a different compiler or from different sources than this "
                                  "binary (rebuild both from one source tree)");
  } else if (!table->create_trainer || !table->create_evaluator || !table->initial_model ||
             !table->configure_threads) {
    bad = FailedPreconditionError(path + ": incomplete backend table");
  }
  if (!bad.ok()) {
    ::dlclose(handle);
    return bad;
  }
  return table;
}

}  // namespace

Result<const TorchBackendV1*> LoadTorchBackend() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_backend) return g_backend;
  std::string tried;
  for (const std::string& path : Candidates()) {
    auto table = Open(path);
    if (table.ok()) {
      spdlog::debug("LibTorch backend loaded from {}", path);
      g_backend = *table;
      return g_backend;
    }
    // A library that exists but does not fit is an error to report, not to skip silently.
    if (table.status().code() == StatusCode::kFailedPrecondition) return table.status();
    tried += "\n  " + table.status().message();
  }
  return UnavailableError("cannot load the LibTorch backend (" + std::string(kLibraryName) +
                          "); set VERDANT_TORCH_BACKEND to its path. Tried:" + tried);
}

bool TorchBackendLoaded() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_backend != nullptr;
}

Result<std::unique_ptr<Trainer>> Trainer::Create(std::string_view model) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));  // unknown names: no load
  if (IsSyntheticModel(model)) {
    return InvalidArgumentError("model '" + std::string(model) +
                                "' is synthetic: it has no network to train or evaluate (use --no-train)");
  }
  VERDANT_ASSIGN_OR_RETURN(const TorchBackendV1* backend, LoadTorchBackend());
  return backend->create_trainer(model);
}

Result<std::unique_ptr<ModelEvaluator>> ModelEvaluator::Create(std::string_view model, Dataset test_set) {
  VERDANT_ASSIGN_OR_RETURN(Layout layout, ModelLayout(model));
  if (IsSyntheticModel(model)) {
    return InvalidArgumentError("model '" + std::string(model) +
                                "' is synthetic: it has no network to train or evaluate (use --no-train)");
  }
  VERDANT_ASSIGN_OR_RETURN(const TorchBackendV1* backend, LoadTorchBackend());
  return backend->create_evaluator(model, std::move(test_set));
}

void ConfigureTorchThreads(int intra_op_threads) {
  auto backend = LoadTorchBackend();
  if (!backend.ok()) {
    // Creating a trainer or evaluator reports the error where it matters.
    spdlog::debug("ConfigureTorchThreads: {}", backend.status().ToString());
    return;
  }
  (*backend)->configure_threads(intra_op_threads);
}

}  // namespace verdant
