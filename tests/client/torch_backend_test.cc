// The LibTorch backend is a shared library loaded on first use
// (torch_backend.h). CTest runs every case in its own process, so each case
// starts with the backend unloaded.
#include "verdant/client/torch_backend.h"

#include <doctest/doctest.h>
#include <dlfcn.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "verdant/client/model_zoo.h"
#include "verdant/client/synthetic_trainer.h"

using namespace verdant;

TEST_CASE("synthetic work never loads the torch backend") {
  REQUIRE_FALSE(TorchBackendLoaded());
  auto model = InitialModel("synthetic:1000", 7);
  REQUIRE(model.ok());
  SyntheticTrainerOptions o;
  o.num_params = 1000;
  auto trainer = SyntheticTrainer::Create(o);
  REQUIRE(trainer.ok());
  TaskSpec task;
  task.model_name = "synthetic:1000";
  std::vector<float> delta;
  REQUIRE((*trainer)->Train(task, model->values(), delta).ok());
  // Names that cannot be trained fail before anything is loaded.
  CHECK(Trainer::Create("synthetic:1000").status().code() == StatusCode::kInvalidArgument);
  CHECK(Trainer::Create("nope").status().code() == StatusCode::kInvalidArgument);
  CHECK(ModelEvaluator::Create("synthetic:10", Dataset{}).status().code() == StatusCode::kInvalidArgument);
  CHECK_FALSE(TorchBackendLoaded());
}

TEST_CASE("the torch backend loads on the first trainer") {
  REQUIRE_FALSE(TorchBackendLoaded());
  auto t = Trainer::Create("mlp");
  REQUIRE(t.ok());
  CHECK(TorchBackendLoaded());
  CHECK((*t)->model_name() == "mlp");
  auto init = InitialModel("mlp", 1);
  REQUIRE(init.ok());
  CHECK(init->size() == (*t)->layout().NumParameters());
}

TEST_CASE("ConfigureTorchThreads caps OpenBLAS's own thread pool too") {
  auto t = Trainer::Create("mlp");
  REQUIRE(t.ok());
  ConfigureTorchThreads(1);
  void* blas = ::dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
  if (blas == nullptr) return;  // LibTorch on another BLAS: nothing to cap
  void* sym = ::dlsym(blas, "openblas_get_num_threads");
  REQUIRE(sym != nullptr);
  const int threads = reinterpret_cast<int (*)()>(sym)();
  CHECK(threads == 1);
  ::dlclose(blas);
}

TEST_CASE("a missing torch backend is a clear error") {
  REQUIRE(::setenv("VERDANT_TORCH_BACKEND", "/nonexistent/libverdant_torch.so", 1) == 0);
  auto t = Trainer::Create("mlp");
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == StatusCode::kUnavailable);
  CHECK(t.status().message().find("/nonexistent/libverdant_torch.so") != std::string::npos);
  CHECK(t.status().message().find("VERDANT_TORCH_BACKEND") != std::string::npos);
  CHECK(InitialModel("cnn", 1).status().code() == StatusCode::kUnavailable);
  CHECK_FALSE(TorchBackendLoaded());
  ::unsetenv("VERDANT_TORCH_BACKEND");
}

TEST_CASE("a library without the backend entry point is rejected") {
  const std::string other = "/lib/x86_64-linux-gnu/libz.so.1";
  if (!std::filesystem::exists(other)) return;  // not a Debian layout: nothing to point at
  REQUIRE(::setenv("VERDANT_TORCH_BACKEND", other.c_str(), 1) == 0);
  auto t = Trainer::Create("mlp");
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == StatusCode::kFailedPrecondition);
  CHECK(t.status().message().find("verdant_torch_backend_v1") != std::string::npos);
  CHECK_FALSE(TorchBackendLoaded());
  ::unsetenv("VERDANT_TORCH_BACKEND");
}
