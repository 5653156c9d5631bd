// topk:<fraction>[+<codec>] sparsification; see verdant/compression/codecs.h
// for the byte format.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include "codec_internal.h"
#include "verdant/compression/codecs.h"

namespace verdant {

using codec_internal::BitReader;
using codec_internal::BitWriter;
using codec_internal::ByteReader;
using codec_internal::PutU8;
using codec_internal::PutVarint;

namespace {

constexpr uint8_t kBitmap = 0;
constexpr uint8_t kRice = 1;
constexpr size_t kSampleSize = 16384;
constexpr size_t kSampleAbove = 65536;  // inputs up to this size skip sampling

inline uint32_t MagnitudeBits(const float* x, size_t i) {
  uint32_t b;
  std::memcpy(&b, x + i, 4);
  return b & 0x7fffffffu;
}

// Appends (index, magnitude) of every value with magnitude >= t.
void CollectAtLeast(const float* x, size_t n, uint32_t t, std::vector<uint32_t>& idx,
                    std::vector<uint32_t>& mags) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t m = MagnitudeBits(x, i);
    if (m >= t) [[unlikely]] {
      idx.push_back(static_cast<uint32_t>(i));
      mags.push_back(m);
    }
  }
}

// Rice cost in bits of the gaps for parameter r.
uint64_t RiceBits(const std::vector<uint32_t>& pos, int r) {
  uint64_t bits = static_cast<uint64_t>(pos.size()) * (1 + static_cast<uint64_t>(r));
  int64_t prev = -1;
  for (uint32_t p : pos) {
    bits += static_cast<uint64_t>(p - prev - 1) >> r;
    prev = p;
  }
  return bits;
}

}  // namespace

struct TopKCodec::Parsed {
  size_t k = 0;
  std::span<const uint8_t> values;
};

TopKCodec::TopKCodec(Key, Options options)
    : fraction_(options.fraction), values_codec_(std::move(options.values)) {
  if (!values_codec_) values_codec_ = std::make_unique<IdentityCodec>();
  name_ = "topk:" + codec_internal::FormatDouble(fraction_);
  if (values_codec_->Name() != "identity") name_ += "+" + std::string(values_codec_->Name());
}

Result<std::unique_ptr<TopKCodec>> TopKCodec::Create(Options options) {
  if (!(options.fraction > 0.0 && options.fraction <= 1.0)) {
    return InvalidArgumentError("topk fraction must be in (0, 1], got " + codec_internal::FormatDouble(options.fraction));
  }
  if (options.values && dynamic_cast<const TopKCodec*>(options.values.get()) != nullptr) {
    return InvalidArgumentError("topk's kept values need a dense codec (identity, fp16, int8, int4, qsgd), not another topk");
  }
  return std::make_unique<TopKCodec>(Key{}, std::move(options));
}

size_t TopKCodec::KeptCount(double fraction, size_t n) {
  if (n == 0) return 0;
  const double t = fraction * static_cast<double>(n);
  double k = std::ceil(t * (1.0 - 1e-12));
  if (!(k >= 1.0)) k = 1.0;
  if (k >= static_cast<double>(n)) return n;
  return static_cast<size_t>(k);
}

void TopKCodec::Select(std::span<const float> values, size_t k) {
  const size_t n = values.size();
  const float* x = values.data();
  positions_.clear();
  if (k == 0) return;
  if (k >= n) {
    positions_.resize(n);
    std::iota(positions_.begin(), positions_.end(), 0u);
    return;
  }
  // A lower bound on the k-th largest magnitude from a strided sample, with
  // a margin of about 4 standard deviations so that, almost always, at least
  // k values pass it; if fewer do, fall back to taking every value.
  uint32_t t_lo = 0;
  if (n > kSampleAbove) {
    std::vector<uint32_t> sample(kSampleSize);
    for (size_t j = 0; j < kSampleSize; ++j) sample[j] = MagnitudeBits(x, j * n / kSampleSize);
    const double p = static_cast<double>(k) / static_cast<double>(n);
    const double ps = p * kSampleSize;
    const double want = ps + 4.0 * std::sqrt(ps) + 16.0;
    if (want < static_cast<double>(kSampleSize)) {
      const auto j = static_cast<size_t>(want);
      std::nth_element(sample.begin(), sample.begin() + static_cast<ptrdiff_t>(j), sample.end(),
                       std::greater<>());
      t_lo = sample[j];
    }
  }
  for (;;) {
    candidates_.clear();
    cand_mags_.clear();
    if (t_lo == 0) {
      candidates_.reserve(n);
      cand_mags_.reserve(n);
    } else {
      const size_t guess = k + k / 4 + 1024;
      candidates_.reserve(guess);
      cand_mags_.reserve(guess);
    }
    CollectAtLeast(x, n, t_lo, candidates_, cand_mags_);
    if (candidates_.size() >= k || t_lo == 0) break;
    t_lo = 0;
  }
  // The exact k-th largest magnitude T among the candidates.
  std::vector<uint32_t> tmp(cand_mags_);
  std::nth_element(tmp.begin(), tmp.begin() + static_cast<ptrdiff_t>(k - 1), tmp.end(), std::greater<>());
  const uint32_t t = tmp[k - 1];
  size_t greater = 0;
  for (uint32_t m : cand_mags_) greater += m > t;
  size_t equal_left = k - greater;  // ties at T: the lowest indices win
  positions_.reserve(k);
  for (size_t j = 0; j < candidates_.size(); ++j) {
    const uint32_t m = cand_mags_[j];
    if (m > t || (m == t && equal_left > 0)) {
      if (m == t) --equal_left;
      positions_.push_back(candidates_[j]);
    }
  }
}

Status TopKCodec::Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) {
  out.clear();
  const size_t n = values.size();
  if (n > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError("topk supports at most 2^32-1 values, got " + std::to_string(n));
  }
  if (codec_internal::MaxMagnitudeBits(values.data(), n) >= 0x7f800000u) {
    return InvalidArgumentError("cannot sparsify NaN or Inf values");
  }
  const size_t k = KeptCount(fraction_, n);
  Select(values, k);
  kept_.resize(k);
  for (size_t j = 0; j < k; ++j) kept_[j] = values[positions_[j]];

  // Positions: the smaller of a bitmap and Rice-coded gaps.
  const uint64_t bitmap_bytes = (n + 7) / 8;
  int best_r = 0;
  uint64_t best_bits = std::numeric_limits<uint64_t>::max();
  if (k > 0) {
    const double mean_gap = static_cast<double>(n - k) / static_cast<double>(k);
    const int r0 = mean_gap >= 1.0 ? static_cast<int>(std::floor(std::log2(mean_gap))) : 0;
    for (int r = std::max(0, r0 - 2); r <= std::min(31, r0 + 2); ++r) {
      const uint64_t b = RiceBits(positions_, r);
      if (b < best_bits) best_bits = b, best_r = r;
    }
  }
  const uint64_t rice_bytes = (best_bits == std::numeric_limits<uint64_t>::max()) ? best_bits : (best_bits + 7) / 8;
  PutVarint(out, n);
  PutVarint(out, k);
  if (rice_bytes < bitmap_bytes) {
    PutU8(out, kRice);
    PutU8(out, static_cast<uint8_t>(best_r));
    PutVarint(out, rice_bytes);
    const size_t before = out.size();
    out.reserve(before + rice_bytes);
    BitWriter w(out);
    int64_t prev = -1;
    const uint32_t low_mask = best_r == 0 ? 0u : (best_r == 32 ? ~0u : ((1u << best_r) - 1u));
    for (uint32_t p : positions_) {
      const auto g = static_cast<uint64_t>(p - prev - 1);
      w.PutUnary(g >> best_r);
      w.Put(static_cast<uint32_t>(g) & low_mask, best_r);
      prev = p;
    }
    w.Flush();
    if (out.size() - before != rice_bytes) return InternalError("topk: Rice size mismatch");
  } else {
    PutU8(out, kBitmap);
    PutVarint(out, bitmap_bytes);
    const size_t before = out.size();
    out.resize(before + bitmap_bytes, 0);
    uint8_t* bm = out.data() + before;
    for (uint32_t p : positions_) bm[p >> 3] |= static_cast<uint8_t>(1u << (p & 7));
  }
  VERDANT_RETURN_IF_ERROR(values_codec_->Encode(kept_, rng, inner_bytes_));
  out.insert(out.end(), inner_bytes_.begin(), inner_bytes_.end());
  return OkStatus();
}

Status TopKCodec::Parse(std::span<const uint8_t> bytes, size_t n, Parsed& parsed,
                        std::vector<uint32_t>& positions) const {
  auto bad = [&](const std::string& why) { return DataLossError(name_ + ": " + why); };
  ByteReader rd(bytes);
  uint64_t claimed_n = 0, k = 0, pos_bytes = 0;
  uint8_t mode = 0, r = 0;
  if (!rd.ReadVarint(claimed_n) || !rd.ReadVarint(k)) return bad("truncated header");
  if (claimed_n != n) return bad("encodes " + std::to_string(claimed_n) + " values, expected " + std::to_string(n));
  if (k > n) return bad("claims " + std::to_string(k) + " kept values of " + std::to_string(n));
  if (!rd.ReadU8(mode) || mode > kRice) return bad("unknown position mode");
  if (mode == kRice && (!rd.ReadU8(r) || r > 31)) return bad("invalid Rice parameter");
  std::span<const uint8_t> pb;
  if (!rd.ReadVarint(pos_bytes) || !rd.Take(pos_bytes, pb)) return bad("truncated positions");
  if (mode == kBitmap) {
    if (pos_bytes != (n + 7) / 8) return bad("bitmap has the wrong size");
    uint64_t count = 0;
    for (uint8_t b : pb) count += static_cast<uint64_t>(std::popcount(b));
    if (count != k) return bad("bitmap does not hold " + std::to_string(k) + " positions");
    if ((n & 7) != 0 && (pb.back() >> (n & 7)) != 0) return bad("bitmap padding bits set");
    positions.resize(k);
    size_t j = 0;
    for (size_t byte = 0; byte < pb.size(); ++byte) {
      unsigned b = pb[byte];
      while (b != 0) {
        positions[j++] = static_cast<uint32_t>(byte * 8 + static_cast<size_t>(std::countr_zero(b)));
        b &= b - 1;
      }
    }
  } else {
    // Every Rice code takes at least 1 + r bits: bound k by the real buffer
    // before allocating.
    if (k * (1 + static_cast<uint64_t>(r)) > pos_bytes * 8) return bad("positions truncated");
    positions.resize(k);
    BitReader br(pb);
    const uint64_t max_q = static_cast<uint64_t>(n) >> r;
    int64_t prev = -1;
    for (size_t j = 0; j < k; ++j) {
      uint64_t q;
      uint32_t low;
      if (!br.GetUnary(max_q, q) || !br.Get(r, low)) return bad("invalid position code");
      const uint64_t g = (q << r) | low;
      const uint64_t p = static_cast<uint64_t>(prev + 1) + g;
      if (p >= n) return bad("position out of range");
      positions[j] = static_cast<uint32_t>(p);
      prev = static_cast<int64_t>(p);
    }
    if (!br.AtCanonicalEnd()) return bad("trailing position bits");
  }
  parsed.k = k;
  parsed.values = rd.Rest();
  return OkStatus();
}

Status TopKCodec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                   std::span<float> acc) const {
  Parsed parsed;
  std::vector<uint32_t> positions;
  VERDANT_RETURN_IF_ERROR(Parse(bytes, acc.size(), parsed, positions));
  // The k kept values (k <= n, checked against the position bytes).
  std::vector<float> kept(parsed.k);
  VERDANT_RETURN_IF_ERROR(values_codec_->Decode(parsed.values, kept).WithContext(name_ + " values"));
  float* a = acc.data();
  for (size_t j = 0; j < parsed.k; ++j) a[positions[j]] += weight * kept[j];
  return OkStatus();
}

Status TopKCodec::Decode(std::span<const uint8_t> bytes, std::span<float> out) const {
  Parsed parsed;
  std::vector<uint32_t> positions;
  VERDANT_RETURN_IF_ERROR(Parse(bytes, out.size(), parsed, positions));
  std::vector<float> kept(parsed.k);
  VERDANT_RETURN_IF_ERROR(values_codec_->Decode(parsed.values, kept).WithContext(name_ + " values"));
  std::fill(out.begin(), out.end(), 0.0f);
  for (size_t j = 0; j < parsed.k; ++j) out[positions[j]] = kept[j];
  return OkStatus();
}

Status TopKCodec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  Parsed parsed;
  std::vector<uint32_t> positions;
  VERDANT_RETURN_IF_ERROR(Parse(bytes, n, parsed, positions));
  return values_codec_->Validate(parsed.values, parsed.k).WithContext(name_ + " values");
}

}  // namespace verdant
