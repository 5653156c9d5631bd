// Codec throughput on one core, in bytes of float32 input per second:
// encode, decode, fused decode+aggregate (acc += w * decode(bytes)) and
// top-k selection on 10M floats. Figures: docs/compression.md.
//   cmake -S . -B build -DVERDANT_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release
//   cmake --build build --target codec_bench && build/bench/codec_bench
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "verdant/compression/codec.h"
#include "verdant/core/rng.h"

namespace {

using verdant::CreateCodec;
using verdant::Rng;
using verdant::UpdateCodec;

const char* const kSpecs[] = {"identity", "fp16",     "int8",           "int4",           "qsgd:16",
                              "qsgd:127", "topk:0.1", "topk:0.01+int8", "topk:0.1+int8"};

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(0.01 * rng.Normal());
  return v;
}

std::unique_ptr<UpdateCodec> Make(const std::string& spec) {
  auto c = CreateCodec(spec);
  if (!c.ok()) std::abort();
  return std::move(*c);
}

void SetBytes(benchmark::State& state, size_t n) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n * sizeof(float)));
}

void BM_Encode(benchmark::State& state, std::string spec) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto codec = Make(spec);
  const auto x = Gaussian(n, 1);
  Rng rng(2);
  std::vector<uint8_t> bytes;
  for (auto _ : state) {
    if (!codec->Encode(x, rng, bytes).ok()) state.SkipWithError("encode failed");
    benchmark::DoNotOptimize(bytes.data());
  }
  SetBytes(state, n);
  state.counters["ratio"] = static_cast<double>(n * 4) / static_cast<double>(bytes.size());
}

void BM_Decode(benchmark::State& state, std::string spec) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto codec = Make(spec);
  const auto x = Gaussian(n, 1);
  Rng rng(2);
  std::vector<uint8_t> bytes;
  if (!codec->Encode(x, rng, bytes).ok()) std::abort();
  std::vector<float> out(n);
  for (auto _ : state) {
    if (!codec->Decode(bytes, out).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out.data());
  }
  SetBytes(state, n);
}

void BM_DecodeAccumulate(benchmark::State& state, std::string spec) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto codec = Make(spec);
  const auto x = Gaussian(n, 1);
  Rng rng(2);
  std::vector<uint8_t> bytes;
  if (!codec->Encode(x, rng, bytes).ok()) std::abort();
  std::vector<float> acc(n, 0.0f);
  for (auto _ : state) {
    if (!codec->DecodeAccumulate(bytes, 0.5f, acc).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(acc.data());
  }
  SetBytes(state, n);
}

// What the aggregator does per update: Validate, then the fused fold.
void BM_ValidateAccumulate(benchmark::State& state, std::string spec) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto codec = Make(spec);
  const auto x = Gaussian(n, 1);
  Rng rng(2);
  std::vector<uint8_t> bytes;
  if (!codec->Encode(x, rng, bytes).ok()) std::abort();
  std::vector<float> acc(n, 0.0f);
  for (auto _ : state) {
    if (!codec->Validate(bytes, n).ok() || !codec->DecodeAccumulate(bytes, 0.5f, acc).ok()) {
      state.SkipWithError("decode failed");
    }
    benchmark::DoNotOptimize(acc.data());
  }
  SetBytes(state, n);
}

// Reference: a plain float axpy over the same sizes.
void BM_FloatAxpy(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const auto x = Gaussian(n, 1);
  std::vector<float> acc(n, 0.0f);
  for (auto _ : state) {
    float* a = acc.data();
    const float* p = x.data();
    for (size_t i = 0; i < n; ++i) a[i] += 0.5f * p[i];
    benchmark::DoNotOptimize(acc.data());
  }
  SetBytes(state, n);
}

void RegisterAll() {
  constexpr int64_t kN = 1 << 20;  // 1M floats (4 MB), a small model
  for (const char* spec : kSpecs) {
    benchmark::RegisterBenchmark((std::string("Encode/") + spec).c_str(), BM_Encode, std::string(spec))->Arg(kN);
    benchmark::RegisterBenchmark((std::string("Decode/") + spec).c_str(), BM_Decode, std::string(spec))->Arg(kN);
    benchmark::RegisterBenchmark((std::string("DecodeAccumulate/") + spec).c_str(), BM_DecodeAccumulate,
                                 std::string(spec))
        ->Arg(kN);
  }
  for (const char* spec : {"identity", "fp16", "int8", "int4"}) {
    benchmark::RegisterBenchmark((std::string("ValidateAccumulate/") + spec).c_str(), BM_ValidateAccumulate,
                                 std::string(spec))
        ->Arg(kN);
  }
  benchmark::RegisterBenchmark("FloatAxpy", BM_FloatAxpy)->Arg(kN);
  // The target: topk:0.01 on 10 million floats in under 50 ms.
  benchmark::RegisterBenchmark("Encode/topk:0.01", BM_Encode, std::string("topk:0.01"))
      ->Arg(10'000'000)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Encode/int8", BM_Encode, std::string("int8"))->Arg(10'000'000)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("DecodeAccumulate/int8", BM_DecodeAccumulate, std::string("int8"))
      ->Arg(10'000'000)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
