// Every codec against a plain double-precision reference: round-trip error
// within the documented bound, fused decode+aggregate equal to
// decode-then-aggregate, clean rejection of corrupt bytes, spec parsing and
// compression ratios.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "codec_test_util.h"
#include "verdant/compression/codecs.h"
#include "verdant/core/parameter_vector.h"

using namespace verdant;
using namespace verdant::codec_test;

namespace {

// The k largest |x| (ties: lower index), by a full stable sort in double.
std::vector<size_t> ReferenceTopK(const std::vector<float>& x, size_t k) {
  std::vector<size_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return std::fabs(static_cast<double>(x[a])) > std::fabs(static_cast<double>(x[b]));
  });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The documented per-value error bound of one encode/decode of x (see
// verdant/compression/codecs.h), computed in double.
std::vector<double> ErrorBound(const UpdateCodec& codec, const std::vector<float>& x) {
  const size_t n = x.size();
  std::vector<double> b(n, 0.0);
  if (codec.Name() == "identity") return b;
  if (codec.Name() == "fp16") {
    for (size_t i = 0; i < n; ++i) b[i] = std::max(std::ldexp(std::fabs(double(x[i])), -11), std::ldexp(1.0, -25));
    return b;
  }
  if (auto* q = dynamic_cast<const UniformQuantCodec*>(&codec)) {
    const double qmax = q->options().bits == 8 ? 127.0 : 7.0;
    const size_t c = q->options().chunk;
    for (size_t s = 0; s < n; s += c) {
      double mx = 0;
      for (size_t i = s; i < std::min(n, s + c); ++i) mx = std::max(mx, std::fabs(double(x[i])));
      for (size_t i = s; i < std::min(n, s + c); ++i) b[i] = mx / qmax * (1 + 1e-6) + 1e-37;
    }
    return b;
  }
  if (auto* q = dynamic_cast<const QsgdCodec*>(&codec)) {
    const size_t c = q->options().chunk;
    for (size_t s = 0; s < n; s += c) {
      double ss = 0;
      for (size_t i = s; i < std::min(n, s + c); ++i) ss += double(x[i]) * x[i];
      for (size_t i = s; i < std::min(n, s + c); ++i) b[i] = std::sqrt(ss) / q->options().levels * (1 + 1e-5) + 1e-37;
    }
    return b;
  }
  if (auto* t = dynamic_cast<const TopKCodec*>(&codec)) {
    const auto kept = ReferenceTopK(x, TopKCodec::KeptCount(t->fraction(), n));
    std::vector<float> kv;
    for (size_t i : kept) kv.push_back(x[i]);
    const auto kb = ErrorBound(t->values_codec(), kv);
    for (size_t i = 0; i < n; ++i) b[i] = std::fabs(double(x[i]));  // dropped: decodes to 0
    for (size_t j = 0; j < kept.size(); ++j) b[kept[j]] = kb[j];
    return b;
  }
  FAIL("no reference bound for " << codec.Name());
  return b;
}

}  // namespace

TEST_CASE("every codec round-trips within its documented bound") {
  const uint64_t seed = Seed(20240501, "round-trip");
  Rng rng(seed);
  for (const auto& spec : AllSpecs()) {
    auto codec = MustCreate(spec);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{4099}}) {
      CAPTURE(spec);
      CAPTURE(n);
      const auto x = RandomVector(rng, n, 0.01);
      std::vector<uint8_t> bytes;
      REQUIRE(codec->Encode(x, rng, bytes).ok());
      REQUIRE(codec->Validate(bytes, n).ok());
      std::vector<float> y(n, 123.0f);
      REQUIRE(codec->Decode(bytes, y).ok());
      const auto bound = ErrorBound(*codec, x);
      size_t over = 0;
      for (size_t i = 0; i < n; ++i) over += std::fabs(double(x[i]) - double(y[i])) > bound[i];
      CHECK(over == 0);
      // The name is a spec that builds an equivalent codec.
      auto again = CreateCodec(codec->Name());
      REQUIRE(again.ok());
      CHECK((*again)->Name() == codec->Name());
      std::vector<float> z(n);
      CHECK((*again)->Decode(bytes, z).ok());
      CHECK(z == y);
    }
  }
}

TEST_CASE("fused decode+aggregate equals decode then aggregate") {
  const uint64_t seed = Seed(77, "fused");
  Rng rng(seed);
  for (const auto& spec : AllSpecs()) {
    CAPTURE(spec);
    auto codec = MustCreate(spec);
    const size_t n = 5003;
    std::vector<double> ref(n, 0.0), mass(n, 0.0);
    std::vector<float> acc(n, 0.0f);
    for (int client = 0; client < 5; ++client) {
      const auto x = RandomVector(rng, n);
      const float w = static_cast<float>(0.1 + rng.Uniform());
      std::vector<uint8_t> bytes;
      REQUIRE(codec->Encode(x, rng, bytes).ok());
      std::vector<float> y(n);
      REQUIRE(codec->Decode(bytes, y).ok());
      for (size_t i = 0; i < n; ++i) ref[i] += double(w) * y[i], mass[i] += std::fabs(double(w) * y[i]);
      REQUIRE(codec->DecodeAccumulate(bytes, w, acc).ok());
    }
    // Five float additions: error <= ~5 ulp of the absolute mass.
    size_t over = 0;
    for (size_t i = 0; i < n; ++i) over += std::fabs(ref[i] - acc[i]) > 6e-7 * mass[i] + 1e-37;
    CHECK(over == 0);
  }
}

TEST_CASE("non-finite input is rejected by every encoder") {
  Rng rng(1);
  for (const auto& spec : AllSpecs()) {
    if (spec == "identity") continue;  // identity forwards bits; Validate catches them
    CAPTURE(spec);
    auto codec = MustCreate(spec);
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      std::vector<float> x(3000, 0.5f);
      x[1234] = bad;
      std::vector<uint8_t> bytes;
      CHECK(codec->Encode(x, rng, bytes).code() == StatusCode::kInvalidArgument);
    }
  }
}

TEST_CASE("truncated, oversized and corrupted bytes are rejected cleanly") {
  const uint64_t seed = Seed(4242, "corruption");
  Rng rng(seed);
  for (const auto& spec : AllSpecs()) {
    CAPTURE(spec);
    auto codec = MustCreate(spec);
    const size_t n = 2500;
    const auto x = RandomVector(rng, n);
    std::vector<uint8_t> good;
    REQUIRE(codec->Encode(x, rng, good).ok());
    std::vector<float> out(n), acc(n);
    // Every truncation, and a byte too many.
    for (size_t cut = 0; cut < good.size(); cut += std::max<size_t>(1, good.size() / 97)) {
      std::span<const uint8_t> t(good.data(), cut);
      CHECK(codec->Validate(t, n).code() == StatusCode::kDataLoss);
      CHECK(codec->Decode(t, out).code() == StatusCode::kDataLoss);
      CHECK(codec->DecodeAccumulate(t, 1.0f, acc).code() == StatusCode::kDataLoss);
    }
    auto longer = good;
    longer.push_back(0);
    CHECK(codec->Validate(longer, n).code() == StatusCode::kDataLoss);
    CHECK(codec->Decode(longer, out).code() == StatusCode::kDataLoss);
    // The right bytes for the wrong size.
    CHECK(codec->Validate(good, n + 100).code() == StatusCode::kDataLoss);
    std::vector<float> bigger(n + 100);
    CHECK(codec->Decode(good, bigger).code() == StatusCode::kDataLoss);
    // Random corruptions: a clean status either way; what validates decodes
    // to finite values, and what is rejected is kDataLoss.
    for (int trial = 0; trial < 200; ++trial) {
      auto bad = good;
      const int flips = 1 + static_cast<int>(rng.UniformInt(4));
      for (int f = 0; f < flips; ++f) {
        bad[rng.UniformInt(bad.size())] = static_cast<uint8_t>(rng.Next());
      }
      if (trial % 5 == 0) bad.resize(rng.UniformInt(bad.size() + 1));
      Status v = codec->Validate(bad, n);
      Status d = codec->Decode(bad, out);
      CHECK((v.ok() || v.code() == StatusCode::kDataLoss));
      CHECK((d.ok() || d.code() == StatusCode::kDataLoss));
      if (v.ok()) {
        CHECK(d.ok());
        CHECK(AllFinite(out));
      }
    }
    // Pure garbage.
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<uint8_t> junk(rng.UniformInt(64));
      for (auto& b : junk) b = static_cast<uint8_t>(rng.Next());
      Status v = codec->Validate(junk, n);
      CHECK((v.ok() || v.code() == StatusCode::kDataLoss));
    }
  }
}

TEST_CASE("topk rejects a huge claimed count without allocating for it") {
  auto codec = MustCreate("topk:0.5");
  // n = 100, varint k = 2^40, Rice mode, r = 0, 1 position byte.
  std::vector<uint8_t> bytes = {100, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 0, 1, 0xff};
  CHECK(codec->Validate(bytes, 100).code() == StatusCode::kDataLoss);
  // Plausible k but far more than the position bytes can hold.
  std::vector<uint8_t> bytes2 = {100, 0x32, 1, 0, 1, 0xff};  // k = 50 in 8 bits
  CHECK(codec->Validate(bytes2, 100).code() == StatusCode::kDataLoss);
}

TEST_CASE("codec specs: names, arguments and clear errors") {
  CHECK(MustCreate("int8")->Name() == "int8");
  CHECK(MustCreate("int8:chunk=1024")->Name() == "int8");
  CHECK(MustCreate("int8:512")->Name() == "int8:chunk=512");
  CHECK(MustCreate("qsgd:4")->Name() == "qsgd:4");
  CHECK(MustCreate("qsgd:levels=4,chunk=64")->Name() == "qsgd:4,chunk=64");
  CHECK(MustCreate("topk:0.05+int8")->Name() == "topk:0.05+int8");
  CHECK(MustCreate("topk:0.05+identity")->Name() == "topk:0.05");
  CHECK(MustCreate(" topk:0.1 + int4:chunk=64 ")->Name() == "topk:0.1+int4:chunk=64");

  for (const char* bad : {"", "zip", "int9", "topk", "topk:0", "topk:-0.1", "topk:1.5", "topk:abc", "topk:nan",
                          "qsgd:0", "qsgd:40000", "qsgd:2.5", "int8:chunk=0", "int8:chunk=-3", "int8:bogus=1",
                          "int8:chunk=1,chunk=2", "int4:7,8", "identity:1", "fp16:x", "int8+int4", "fp16+int8",
                          "topk:0.1+", "topk:0.1+topk:0.2", "topk:0.1+zip", "topk:0.1,chunk=3"}) {
    CAPTURE(bad);
    auto r = CreateCodec(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
  auto unknown = CreateCodec("zip");
  CHECK(unknown.status().message().find("valid codecs") != std::string::npos);
  CHECK(unknown.status().message().find("topk:<fraction>") != std::string::npos);
  CHECK(unknown.status().message().find("int8") != std::string::npos);
  CHECK(CreateCodec("topk:2").status().message().find("(0, 1]") != std::string::npos);

  const std::string help = DescribeCodecs();
  for (const char* name : {"identity", "fp16", "int8", "int4", "qsgd", "topk"}) CHECK(help.find(name) != std::string::npos);
  CHECK(CodecNamesInSpec("topk:0.1+int8:chunk=512") == std::vector<std::string>{"topk", "int8"});
  CHECK(CodecNamesInSpec("identity") == std::vector<std::string>{"identity"});
}

TEST_CASE("compression ratios on a 1M-value vector") {
  const uint64_t seed = Seed(99, "ratios");
  Rng rng(seed);
  const size_t n = 1 << 20;
  const auto x = RandomVector(rng, n);
  auto size_of = [&](const std::string& spec) {
    auto c = MustCreate(spec);
    std::vector<uint8_t> bytes;
    REQUIRE(c->Encode(x, rng, bytes).ok());
    return static_cast<double>(bytes.size());
  };
  const double identity = size_of("identity");
  CHECK(identity == 4.0 * n);
  const double r_fp16 = identity / size_of("fp16");
  const double r_int8 = identity / size_of("int8");
  const double r_int4 = identity / size_of("int4");
  const double r_top = identity / size_of("topk:0.1+int8");
  const double r_top01 = identity / size_of("topk:0.01+int8");
  MESSAGE("ratios: fp16 " << r_fp16 << "x, int8 " << r_int8 << "x, int4 " << r_int4 << "x, topk:0.1+int8 "
                          << r_top << "x, topk:0.01+int8 " << r_top01 << "x");
  CHECK(r_fp16 == 2.0);
  CHECK(r_int8 >= 3.8);
  CHECK(r_int4 >= 7.5);
  CHECK(r_top >= 20.0);
  CHECK(r_top01 >= 150.0);
}
