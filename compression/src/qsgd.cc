// QSGD (Alistarh et al., NeurIPS 2017) with per-bucket L2 norms; see
// verdant/compression/codecs.h for the byte format and error bounds.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "codec_internal.h"
#include "verdant/compression/codecs.h"

namespace verdant {

using codec_internal::BitReader;
using codec_internal::BitWriter;
using codec_internal::DitherUniform;
using codec_internal::LoadF32;

namespace {

constexpr size_t kMaxChunk = size_t{1} << 24;
constexpr int kMaxLevels = 32767;

VERDANT_KERNEL double SumSquares(const float* x, size_t m) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= m; i += 8) {
    for (int j = 0; j < 8; ++j) part[j] += static_cast<double>(x[i + j]) * x[i + j];
  }
  for (; i < m; ++i) part[0] += static_cast<double>(x[i]) * x[i];
  double s = 0;
  for (double p : part) s += p;
  return s;
}

// field[i] = sign(x)*l + levels, l the stochastic rounding of |x|*k clamped
// to [0, levels].
VERDANT_KERNEL void QsgdFields(const float* x, size_t m, float k, int levels, uint32_t seed_lo,
                               uint32_t seed_hi, uint32_t base, uint32_t* field) {
  const float lv = static_cast<float>(levels);
  for (size_t i = 0; i < m; ++i) {
    const float y = std::min(std::fabs(x[i]) * k, lv);  // in [0, levels]
    const auto fl = static_cast<int32_t>(y);              // floor: y >= 0
    const float u = DitherUniform(seed_lo, seed_hi, base + static_cast<uint32_t>(i));
    const int32_t li = std::min(fl + (u < y - static_cast<float>(fl) ? 1 : 0), levels);
    field[i] = static_cast<uint32_t>((x[i] < 0.0f ? -li : li) + levels);
  }
}

}  // namespace

QsgdCodec::QsgdCodec(Key, const Options& options)
    : options_(options), bits_(std::bit_width(2u * static_cast<unsigned>(options.levels))) {
  name_ = "qsgd:" + std::to_string(options.levels);
  if (options.chunk != Options{}.chunk) name_ += ",chunk=" + std::to_string(options.chunk);
}

Result<std::unique_ptr<QsgdCodec>> QsgdCodec::Create(const Options& options) {
  if (options.levels < 1 || options.levels > kMaxLevels) {
    return InvalidArgumentError("qsgd levels must be in [1, " + std::to_string(kMaxLevels) + "], got " +
                                std::to_string(options.levels));
  }
  if (options.chunk < 1 || options.chunk > kMaxChunk) {
    return InvalidArgumentError("qsgd chunk must be in [1, " + std::to_string(kMaxChunk) + "], got " +
                                std::to_string(options.chunk));
  }
  return std::make_unique<QsgdCodec>(Key{}, options);
}

size_t QsgdCodec::EncodedSize(size_t n) const {
  const size_t c = options_.chunk;
  const size_t full = n / c, rem = n % c;
  auto chunk_bytes = [&](size_t m) { return 4 + (m * static_cast<size_t>(bits_) + 7) / 8; };
  return full * chunk_bytes(c) + (rem ? chunk_bytes(rem) : 0);
}

Status QsgdCodec::Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) {
  out.clear();
  const size_t n = values.size(), c = options_.chunk;
  const int levels = options_.levels;
  const uint64_t seed = rng.Next();
  const auto seed_lo = static_cast<uint32_t>(seed), seed_hi = static_cast<uint32_t>(seed >> 32);
  out.reserve(EncodedSize(n));
  scratch_.resize(std::min(c, n));
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    const float* x = values.data() + start;
    if (codec_internal::MaxMagnitudeBits(x, m) >= 0x7f800000u) {
      out.clear();
      return InvalidArgumentError("cannot quantise NaN or Inf (value near index " + std::to_string(start) + ")");
    }
    const double ss = SumSquares(x, m);
    float r = static_cast<float>(std::sqrt(ss));
    if (!std::isfinite(r)) r = std::numeric_limits<float>::max();
    codec_internal::PutF32(out, r);
    uint32_t* f = scratch_.data();
    const auto base = static_cast<uint32_t>(start);
    const float k = r > 0.0f ? static_cast<float>(levels / static_cast<double>(r)) : 0.0f;
    if (r == 0.0f) {
      std::fill(f, f + m, static_cast<uint32_t>(levels));
    } else if (std::isfinite(k) && k > 0.0f) {
      QsgdFields(x, m, k, levels, seed_lo, seed_hi, base, f);
    } else {  // tiny norm: do the chunk in double precision
      for (size_t i = 0; i < m; ++i) {
        const double y = std::fabs(static_cast<double>(x[i])) * levels / static_cast<double>(r);
        const double fl = std::floor(y);
        const double u = DitherUniform(seed_lo, seed_hi, base + static_cast<uint32_t>(i));
        const auto l = static_cast<int32_t>(std::min(fl + (u < y - fl ? 1.0 : 0.0), double(levels)));
        f[i] = static_cast<uint32_t>((x[i] < 0.0f ? -l : l) + levels);
      }
    }
    BitWriter w(out);
    for (size_t i = 0; i < m; ++i) w.Put(f[i], bits_);
    w.Flush();
  }
  return OkStatus();
}

// Calls sink(start, m, step, fields_reader) per chunk after checking the
// chunk header; fields are read by the sink through `next(field)`.
template <typename Sink>
Status QsgdCodec::Walk(std::span<const uint8_t> bytes, size_t n, Sink&& sink) const {
  const size_t want = EncodedSize(n);
  if (bytes.size() != want) {
    return DataLossError(name_ + " payload has " + std::to_string(bytes.size()) + " bytes, expected " +
                         std::to_string(want) + " for " + std::to_string(n) + " values");
  }
  const size_t c = options_.chunk;
  const auto levels = static_cast<uint32_t>(options_.levels);
  const float lv = static_cast<float>(options_.levels);
  const uint8_t* p = bytes.data();
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    const float r = LoadF32(p);
    p += 4;
    const float step = r / lv;
    if (!(r >= 0.0f) || !std::isfinite(step * lv) || !std::isfinite(r)) {
      return DataLossError(name_ + ": invalid chunk norm");
    }
    const size_t nbytes = (m * static_cast<size_t>(bits_) + 7) / 8;
    BitReader br(std::span<const uint8_t>(p, nbytes));
    for (size_t i = 0; i < m; ++i) {
      uint32_t f;
      if (!br.Get(bits_, f) || f > 2 * levels) return DataLossError(name_ + ": invalid level");
      sink(start + i, step * static_cast<float>(static_cast<int32_t>(f) - static_cast<int32_t>(levels)));
    }
    if (!br.AtCanonicalEnd()) return DataLossError(name_ + ": non-zero padding bits");
    p += nbytes;
  }
  return OkStatus();
}

Status QsgdCodec::Decode(std::span<const uint8_t> bytes, std::span<float> out) const {
  float* o = out.data();
  return Walk(bytes, out.size(), [o](size_t i, float v) { o[i] = v; });
}

Status QsgdCodec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                   std::span<float> acc) const {
  float* a = acc.data();
  return Walk(bytes, acc.size(), [a, weight](size_t i, float v) { a[i] += weight * v; });
}

Status QsgdCodec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  return Walk(bytes, n, [](size_t, float) {});
}

}  // namespace verdant
