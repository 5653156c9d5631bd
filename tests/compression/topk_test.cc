// topk keeps exactly the k largest magnitudes (ties: lower index), codes
// positions compactly and picks the smaller of bitmap and Rice coding.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "codec_test_util.h"
#include "verdant/compression/codecs.h"

using namespace verdant;
using namespace verdant::codec_test;

namespace {

std::vector<uint32_t> ReferenceTopK(const std::vector<float>& x, size_t k) {
  std::vector<uint32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) {
    return std::fabs(double(x[a])) > std::fabs(double(x[b]));
  });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

TopKCodec& AsTopK(UpdateCodec& c) { return dynamic_cast<TopKCodec&>(c); }

}  // namespace

TEST_CASE("KeptCount is ceil(fraction * n), at least one") {
  CHECK(TopKCodec::KeptCount(0.07, 100) == 7);
  CHECK(TopKCodec::KeptCount(0.1, 1000) == 100);
  CHECK(TopKCodec::KeptCount(0.1, 1001) == 101);
  CHECK(TopKCodec::KeptCount(0.01, 10'000'000) == 100'000);
  CHECK(TopKCodec::KeptCount(1e-9, 10) == 1);
  CHECK(TopKCodec::KeptCount(1.0, 10) == 10);
  CHECK(TopKCodec::KeptCount(0.5, 0) == 0);
}

TEST_CASE("topk keeps exactly the k largest magnitudes") {
  const uint64_t seed = Seed(2718, "topk exact");
  Rng rng(seed);
  for (double fraction : {0.001, 0.01, 0.1, 0.5, 0.9}) {
    for (size_t n : {size_t{1}, size_t{10}, size_t{999}, size_t{70000}, size_t{300000}}) {
      CAPTURE(fraction);
      CAPTURE(n);
      auto x = RandomVector(rng, n);
      auto codec = MustCreate("topk:" + std::to_string(fraction));
      std::vector<uint8_t> bytes;
      REQUIRE(codec->Encode(x, rng, bytes).ok());
      const size_t k = TopKCodec::KeptCount(fraction, n);
      const auto ref = ReferenceTopK(x, k);
      auto got = AsTopK(*codec).last_positions();
      REQUIRE(got.size() == k);
      CHECK(std::equal(got.begin(), got.end(), ref.begin()));
      // Decoding gives the kept values exactly (identity values) and 0 elsewhere.
      std::vector<float> y(n);
      REQUIRE(codec->Decode(bytes, y).ok());
      std::vector<char> kept(n, 0);
      for (uint32_t p : ref) kept[p] = 1;
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) wrong += kept[i] ? (y[i] != x[i]) : (y[i] != 0.0f);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("topk breaks ties by the lower index, including all-equal and all-zero input") {
  Rng rng(1);
  auto codec = MustCreate("topk:0.25");
  std::vector<float> x = {1, -3, 3, 2, -3, 3, 0, 1};  // k = 2: the first two |3|s
  std::vector<uint8_t> bytes;
  REQUIRE(codec->Encode(x, rng, bytes).ok());
  auto got = AsTopK(*codec).last_positions();
  CHECK(std::vector<uint32_t>(got.begin(), got.end()) == std::vector<uint32_t>{1, 2});

  for (float v : {0.0f, 0.5f}) {
    std::vector<float> same(200000, v);
    REQUIRE(codec->Encode(same, rng, bytes).ok());
    auto pos = AsTopK(*codec).last_positions();
    REQUIRE(pos.size() == 50000);
    CHECK(pos.front() == 0);
    CHECK(pos.back() == 49999);
  }
  // Many ties straddling the threshold, large enough to use sampling.
  std::vector<float> steps(400000);
  for (size_t i = 0; i < steps.size(); ++i) steps[i] = static_cast<float>((i * 7919) % 10);
  auto c2 = MustCreate("topk:0.15");
  REQUIRE(c2->Encode(steps, rng, bytes).ok());
  const auto ref = ReferenceTopK(steps, TopKCodec::KeptCount(0.15, steps.size()));
  auto got2 = AsTopK(*c2).last_positions();
  REQUIRE(got2.size() == ref.size());
  CHECK(std::equal(got2.begin(), got2.end(), ref.begin()));
}

TEST_CASE("topk positions are coded compactly: Rice when sparse, bitmap when dense") {
  const uint64_t seed = Seed(31, "topk positions");
  Rng rng(seed);
  const size_t n = 1 << 20;
  auto x = RandomVector(rng, n);
  for (double fraction : {0.001, 0.01, 0.1, 0.3, 0.6}) {
    CAPTURE(fraction);
    auto codec = MustCreate("topk:" + std::to_string(fraction));
    std::vector<uint8_t> bytes;
    REQUIRE(codec->Encode(x, rng, bytes).ok());
    const size_t k = TopKCodec::KeptCount(fraction, n);
    const double position_bits = (static_cast<double>(bytes.size()) - 4.0 * k) * 8.0 / k;
    // Entropy of choosing k of n, per kept value, plus Rice's ~1 bit slack.
    const double p = double(k) / n;
    const double entropy = (-p * std::log2(p) - (1 - p) * std::log2(1 - p)) / p;
    MESSAGE("fraction " << fraction << ": " << position_bits << " bits/position (entropy " << entropy << ")");
    CHECK(position_bits <= std::min(entropy + 1.1, 1.0 / p + 0.01));
    CHECK(position_bits < 32.0);
    size_t header = 0;
    while (bytes[header] & 0x80) ++header;  // skip varint n
    ++header;
    while (bytes[header] & 0x80) ++header;  // skip varint k
    const uint8_t mode = bytes[header + 1];
    if (fraction <= 0.1) CHECK(mode == 1);  // Rice
    if (fraction >= 0.6) CHECK(mode == 0);  // bitmap
    std::vector<float> y(n);
    REQUIRE(codec->Decode(bytes, y).ok());
    size_t nonzero = 0;
    for (float v : y) nonzero += v != 0.0f;
    CHECK(nonzero <= k);
  }
}
