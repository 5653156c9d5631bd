// Aggregation micro-benchmarks (Google Benchmark), one core:
//   - FedAvg streaming aggregation of float32 updates, in GB/s of update
//     bytes folded (plain floats and identity-encoded bytes as received);
//   - server optimizer steps (adam, yogi) in GB/s of model bytes;
//   - coordinate-wise median and trimmed mean: ns per parameter for a whole
//     round (Begin, k Adds, Finish) with 10 and 100 clients; Krum likewise;
//   - peak memory aggregating 100 updates of a 25M-parameter model with
//     FedAvg (printed before the benchmarks; getrusage peak RSS minus the
//     baseline, as a multiple of the model's size).
// Run: build/bench/aggregation_bench [--benchmark_filter=...] [--skip_memory]
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "verdant/aggregation/aggregator.h"
#include "verdant/aggregation/server_optimizer.h"
#include "verdant/aggregation/strategy.h"
#include "verdant/compression/codec.h"
#include "verdant/core/rng.h"

using namespace verdant;

namespace {

std::vector<float> RandomVector(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.UniformFloat() - 0.5f;
  return v;
}

// One Add per iteration into a running mean of n parameters.
void BM_FedAvgStreamingFloats(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto update = RandomVector(n, 1);
  WeightedMeanAggregator agg;
  if (!agg.Begin(n).ok()) state.SkipWithError("Begin failed");
  for (auto _ : state) {
    Status st = agg.Add(UpdateView::Floats(update), 17.0);
    benchmark::DoNotOptimize(st);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * int64_t(n) * 4);
}
BENCHMARK(BM_FedAvgStreamingFloats)->Arg(1 << 16)->Arg(1 << 20)->Arg(25'000'000)->Unit(benchmark::kMicrosecond);

// The same with identity-encoded bytes, as updates arrive from the wire
// (Validate + fused DecodeAccumulate in the codec).
void BM_FedAvgStreamingIdentityEncoded(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto update = RandomVector(n, 2);
  IdentityCodec codec;
  std::vector<uint8_t> bytes;
  Rng rng(3);
  if (!codec.Encode(update, rng, bytes).ok()) state.SkipWithError("Encode failed");
  WeightedMeanAggregator agg;
  if (!agg.Begin(n).ok()) state.SkipWithError("Begin failed");
  for (auto _ : state) {
    Status st = agg.Add(UpdateView::Encoded(bytes, codec), 17.0);
    benchmark::DoNotOptimize(st);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * int64_t(n) * 4);
}
BENCHMARK(BM_FedAvgStreamingIdentityEncoded)->Arg(1 << 20)->Arg(25'000'000)->Unit(benchmark::kMicrosecond);

// Reference: a bare axpy over the same sizes (the machine's ceiling).
void BM_Axpy(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto x = RandomVector(n, 4);
  std::vector<float> y(n, 0.0f);
  for (auto _ : state) {
    float* __restrict yp = y.data();
    const float* __restrict xp = x.data();
    for (size_t i = 0; i < n; ++i) yp[i] += 17.0f * xp[i];
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * int64_t(n) * 4);
}
BENCHMARK(BM_Axpy)->Arg(1 << 20)->Arg(25'000'000)->Unit(benchmark::kMicrosecond);

void BM_ServerOptimizer(benchmark::State& state, const char* name) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto opt = CreateServerOptimizer(name, {});
  auto model = RandomVector(n, 5);
  auto delta = RandomVector(n, 6);
  for (auto _ : state) {
    Status st = (*opt)->Apply(model, delta);
    benchmark::DoNotOptimize(st);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * int64_t(n) * 4);
}
BENCHMARK_CAPTURE(BM_ServerOptimizer, adam, "adam")->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_ServerOptimizer, yogi, "yogi")->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

// A whole robust round: Begin, `clients` Adds (decode copy), Finish.
// ns_per_param = round time / parameters.
void BM_RobustRound(benchmark::State& state, const char* name, const char* key, const char* value) {
  const size_t clients = static_cast<size_t>(state.range(0));
  const size_t n = static_cast<size_t>(state.range(1));
  OptionMap o;
  if (key[0] != '\0') o.Set(key, value);
  auto agg = CreateAggregator(name, o);
  if (!agg.ok()) {
    state.SkipWithError(agg.status().ToString().c_str());
    return;
  }
  std::vector<std::vector<float>> updates;
  for (size_t c = 0; c < clients; ++c) updates.push_back(RandomVector(n, 100 + c));
  for (auto _ : state) {
    Status st = (*agg)->Begin(n);
    for (size_t c = 0; c < clients; ++c) st = (*agg)->Add(UpdateView::Floats(updates[c]), 1.0);
    auto out = (*agg)->Finish();
    benchmark::DoNotOptimize(out);
  }
  state.counters["ns_per_param"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * double(n), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK_CAPTURE(BM_RobustRound, median, "median", "", "")
    ->Args({10, 1 << 20})->Args({100, 1 << 18})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RobustRound, trimmedmean, "trimmedmean", "beta", "0.1")
    ->Args({10, 1 << 20})->Args({100, 1 << 18})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RobustRound, krum, "krum", "f", "2")
    ->Args({10, 1 << 20})->Args({100, 1 << 16})->Unit(benchmark::kMillisecond);

// The same round with the streaming mean, for comparison.
BENCHMARK_CAPTURE(BM_RobustRound, mean, "mean", "", "")
    ->Args({10, 1 << 20})->Args({100, 1 << 18})->Unit(benchmark::kMillisecond);

long MaxRssKb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

long CurrentRssKb() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// FedAvg over 100 identity-encoded updates of a 25M-parameter model, as the
// coordinator runs it: the global model is resident, one received payload is
// held at a time, the strategy streams. Runs before any benchmark so the
// process's peak RSS is this run's.
void PeakMemoryFedAvg() {
  const size_t n = 25'000'000, clients = 100;
  const double model_mb = double(n) * 4 / 1e6;
  const long base_kb = MaxRssKb();
  ParameterVector global = ParameterVector::Flat(std::vector<float>(n, 0.5f));
  const long with_model_kb = CurrentRssKb();
  auto strategy = CreateStrategy("fedavg", {});
  IdentityCodec codec;
  std::vector<uint8_t> payload(n * 4);  // the one in-flight received update
  if (!(*strategy)->BeginRound(1, global).ok()) return;
  long after_first_kb = 0;
  for (size_t c = 0; c < clients; ++c) {
    // A different update per client, written in place as a receive would.
    const float v = 0.001f * float(c);
    for (size_t i = 0; i < n; ++i) std::memcpy(&payload[i * 4], &v, 4);
    Status st = (*strategy)->AddResult({"c", 10 + c, 0.0, UpdateView::Encoded(payload, codec)});
    if (!st.ok()) std::fprintf(stderr, "AddResult: %s\n", st.ToString().c_str());
    if (c == 0) after_first_kb = MaxRssKb();
  }
  auto next = (*strategy)->FinishRound(1, global, {});
  const long peak_kb = MaxRssKb();
  const double total_mb = double(peak_kb - base_kb) * 1024 / 1e6;
  const double over_model_mb = double(peak_kb - with_model_kb) * 1024 / 1e6;
  std::printf(
      "peak memory, FedAvg of %zu updates x %zu params (model %.0f MB): peak RSS - baseline = "
      "%.0f MB = %.2fx the model (global model + one received payload + running sum/next model); "
      "over the resident global model: %.0f MB = %.2fx; after the first update it was %.0f MB over the global "
      "model\n",
      clients, n, model_mb, total_mb, total_mb / model_mb, over_model_mb, over_model_mb / model_mb,
      double(after_first_kb - with_model_kb) * 1024 / 1e6);
  std::fflush(stdout);
  benchmark::DoNotOptimize(next);
}

}  // namespace

int main(int argc, char** argv) {
  bool skip_memory = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--skip_memory") {
      skip_memory = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (!skip_memory) PeakMemoryFedAvg();
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
