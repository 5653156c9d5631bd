// SyntheticTrainer (the --no-train benchmark workload) and the synthetic:N
// entries of the model zoo. No LibTorch or data needed.
#include "verdant/client/synthetic_trainer.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "verdant/client/model_zoo.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;

namespace {

TaskSpec SyntheticTask(uint64_t n, uint64_t round, uint64_t seed) {
  TaskSpec t;
  t.round = round;
  t.model_name = "synthetic:" + std::to_string(n);
  t.seed = seed;
  return t;
}

}  // namespace

TEST_CASE("synthetic trainer: the delta is small seeded noise of the model's size") {
  const uint64_t seed = testing::TestSeed(7);
  MESSAGE("seed " << seed);
  const size_t n = 100000;
  std::vector<float> global(n, 0.25f);
  SyntheticTrainerOptions o;
  o.seed = seed;
  auto t = SyntheticTrainer::Create(o);
  REQUIRE(t.ok());
  CHECK((*t)->Name() == "synthetic");
  CHECK((*t)->num_examples() == 100);
  std::vector<float> delta;
  auto out = (*t)->Train(SyntheticTask(n, 1, 42), global, delta);
  REQUIRE(out.ok());
  CHECK(out->num_examples == 100);
  CHECK(std::isfinite(out->train_loss));
  REQUIRE(delta.size() == n);
  // Mean ~0, standard deviation ~1e-3, Gaussian tails but no outliers.
  double sum = 0, sum2 = 0, max_abs = 0;
  size_t non_finite = 0;
  for (float d : delta) {
    non_finite += std::isfinite(d) ? 0 : 1;
    sum += d;
    sum2 += static_cast<double>(d) * d;
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(d)));
  }
  REQUIRE(non_finite == 0);
  const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
  CHECK(std::fabs(mean) < 2e-5);  // 6 standard errors of the mean (1e-3 / sqrt(1e5) = 3.2e-6)
  CHECK(sd == doctest::Approx(1e-3).epsilon(0.02));
  CHECK(max_abs < 7e-3);
  CHECK(max_abs > 3e-3);
}

TEST_CASE("synthetic trainer: deterministic for a seed and task and different across rounds") {
  const size_t n = 4096;
  std::vector<float> global(n, 0.0f);
  SyntheticTrainerOptions o;
  o.seed = 11;
  auto a = SyntheticTrainer::Create(o);
  auto b = SyntheticTrainer::Create(o);
  o.seed = 12;
  auto c = SyntheticTrainer::Create(o);
  REQUIRE((a.ok() && b.ok() && c.ok()));
  std::vector<float> da, db, dc, dnext;
  REQUIRE((*a)->Train(SyntheticTask(n, 3, 99), global, da).ok());
  REQUIRE((*b)->Train(SyntheticTask(n, 3, 99), global, db).ok());
  REQUIRE((*c)->Train(SyntheticTask(n, 3, 99), global, dc).ok());
  REQUIRE((*a)->Train(SyntheticTask(n, 4, 99), global, dnext).ok());
  CHECK(da == db);
  CHECK(da != dc);
  CHECK(da != dnext);
}

TEST_CASE("synthetic trainer: rejects a task whose model does not match") {
  std::vector<float> global(1000, 0.0f), delta;
  SyntheticTrainerOptions o;
  o.num_params = 1000;
  auto t = SyntheticTrainer::Create(o);
  REQUIRE(t.ok());
  CHECK((*t)->Train(SyntheticTask(1000, 1, 1), global, delta).ok());
  TaskSpec wrong_size = SyntheticTask(999, 1, 1);
  CHECK((*t)->Train(wrong_size, global, delta).status().code() == StatusCode::kInvalidArgument);
  TaskSpec mlp = SyntheticTask(1000, 1, 1);
  mlp.model_name = "mlp";
  CHECK((*t)->Train(mlp, global, delta).status().code() == StatusCode::kInvalidArgument);
  std::vector<float> other(2000, 0.0f);
  CHECK((*t)->Train(SyntheticTask(2000, 1, 1), other, delta).status().code() == StatusCode::kInvalidArgument);
  SyntheticTrainerOptions bad;
  bad.noise_std = -1.0f;
  CHECK(SyntheticTrainer::Create(bad).status().code() == StatusCode::kInvalidArgument);
  bad = SyntheticTrainerOptions();
  bad.num_examples = 0;
  CHECK(SyntheticTrainer::Create(bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("model zoo: synthetic:N layouts and seeded initial models without LibTorch") {
  auto n = SyntheticModelSize("synthetic:1000000");
  REQUIRE(n.ok());
  CHECK(*n == 1000000);
  CHECK(*SyntheticModelSize("synthetic:100k") == 100000);
  CHECK(*SyntheticModelSize("synthetic:10M") == 10000000);
  for (const char* bad : {"synthetic:", "synthetic:0", "synthetic:-5", "synthetic:1.5", "synthetic:12x", "synthetic:2000M",
                          "synthetic:99999999999999999999", "mlp"}) {
    CAPTURE(bad);
    CHECK(SyntheticModelSize(bad).status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(IsSyntheticModel("synthetic:7"));
  CHECK(!IsSyntheticModel("mlp"));
  auto layout = ModelLayout("synthetic:1234");
  REQUIRE(layout.ok());
  CHECK(layout->NumParameters() == 1234);
  CHECK(ModelLayout("synthetic:0").status().code() == StatusCode::kInvalidArgument);
  CHECK(ModelLayout("synthetic:1234")->Fingerprint() != ModelLayout("synthetic:1235")->Fingerprint());
  auto a = InitialModel("synthetic:1234", 5);
  auto b = InitialModel("synthetic:1234", 5);
  auto c = InitialModel("synthetic:1234", 6);
  REQUIRE((a.ok() && b.ok() && c.ok()));
  CHECK(a->size() == 1234);
  CHECK(std::vector<float>(a->values().begin(), a->values().end()) ==
        std::vector<float>(b->values().begin(), b->values().end()));
  CHECK(std::vector<float>(a->values().begin(), a->values().end()) !=
        std::vector<float>(c->values().begin(), c->values().end()));
  size_t outside = 0;
  for (float v : a->values()) outside += (v >= -0.05f && v < 0.05f) ? 0 : 1;
  CHECK(outside == 0);
}

TEST_CASE("synthetic trainer: weighted sums of its deltas do not depend on the order") {
  // The coordinator folds results as they arrive (float32, weight 100): with
  // deltas on the trainer's power-of-two grid every partial sum is exact, so
  // any arrival order gives the same aggregate bit for bit.
  const size_t n = 20000;
  const int clients = 16;
  std::vector<float> global(n, 0.0f);
  std::vector<std::vector<float>> deltas(clients);
  for (int i = 0; i < clients; ++i) {
    SyntheticTrainerOptions o;
    o.seed = 1000 + i;
    auto t = SyntheticTrainer::Create(o);
    REQUIRE(t.ok());
    REQUIRE((*t)->Train(SyntheticTask(n, 5, 77 + i), global, deltas[i]).ok());
  }
  auto fold = [&](bool reverse) {
    std::vector<float> sum(n, 0.0f);
    for (int k = 0; k < clients; ++k) {
      const auto& d = deltas[reverse ? clients - 1 - k : k];
      for (size_t j = 0; j < n; ++j) sum[j] = std::fma(100.0f, d[j], sum[j]);
    }
    return sum;
  };
  auto forward = fold(false), backward = fold(true);
  CHECK(std::memcmp(forward.data(), backward.data(), n * sizeof(float)) == 0);
}
