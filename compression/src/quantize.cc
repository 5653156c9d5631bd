// int8 / int4 stochastic uniform quantisation with a per-chunk scale; see
// verdant/compression/codecs.h for the byte format and error bounds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "codec_internal.h"
#include "verdant/compression/codecs.h"

namespace verdant {

using codec_internal::DitherUniform;
using codec_internal::LoadF32;
using codec_internal::StoreF32;

namespace codec_internal {

VERDANT_KERNEL uint32_t MaxMagnitudeBits(const void* x, size_t n) {
  const auto* p = static_cast<const uint8_t*>(x);
  uint32_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, p + 4 * i, 4);
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

}  // namespace codec_internal

namespace {

constexpr size_t kMaxChunk = size_t{1} << 24;

// q[i] = stochastic rounding of x[i]*inv to an integer in [-qmax, qmax]:
// floor(y) + (u < frac(y)), so E[q] = y up to the 2^-24 dither grid.
VERDANT_KERNEL void QuantizeChunk(const float* x, size_t m, float inv, float qmax, uint32_t seed_lo,
                                  uint32_t seed_hi, uint32_t base, int8_t* q) {
  const auto qmax_i = static_cast<int32_t>(qmax);
  for (size_t i = 0; i < m; ++i) {
    const float y = x[i] * inv;  // in [-qmax, qmax] up to rounding
    // floor(y) without libm (vectorises on SSE2 too): truncate y + 128 > 0,
    // then step down if y + 128 rounded up across an integer.
    int32_t fi = static_cast<int32_t>(y + 128.0f) - 128;
    fi -= static_cast<float>(fi) > y ? 1 : 0;
    const float u = DitherUniform(seed_lo, seed_hi, base + static_cast<uint32_t>(i));
    int32_t r = fi + (u < y - static_cast<float>(fi) ? 1 : 0);
    r = std::min(std::max(r, -qmax_i), qmax_i);
    q[i] = static_cast<int8_t>(r);
  }
}

// The same in double precision, for chunks whose max|x| is so small that
// qmax/max|x| overflows float.
void QuantizeChunkTiny(const float* x, size_t m, double maxabs, float qmax, uint32_t seed_lo,
                       uint32_t seed_hi, uint32_t base, int8_t* q) {
  for (size_t i = 0; i < m; ++i) {
    const double y = static_cast<double>(x[i]) * qmax / maxabs;
    const double fl = std::floor(y);
    const double u = DitherUniform(seed_lo, seed_hi, base + static_cast<uint32_t>(i));
    double r = fl + (u < y - fl ? 1.0 : 0.0);
    r = std::min(std::max(r, -static_cast<double>(qmax)), static_cast<double>(qmax));
    q[i] = static_cast<int8_t>(r);
  }
}

VERDANT_KERNEL void PackNibbles(const int8_t* q, size_t m, uint8_t* out) {
  const size_t pairs = m / 2;
  for (size_t j = 0; j < pairs; ++j) {
    out[j] = static_cast<uint8_t>((q[2 * j] & 0x0f) | ((q[2 * j + 1] & 0x0f) << 4));
  }
  if (m & 1) out[pairs] = static_cast<uint8_t>(q[m - 1] & 0x0f);
}

// Returns the number of invalid (-128) codes seen.
VERDANT_KERNEL uint32_t Int8Decode(const int8_t* q, size_t m, float s, float* out) {
  uint32_t bad = 0;
  for (size_t i = 0; i < m; ++i) {
    bad |= static_cast<uint32_t>(q[i] == -128);
    out[i] = s * static_cast<float>(q[i]);
  }
  return bad;
}

VERDANT_KERNEL uint32_t Int8Accumulate(const int8_t* q, size_t m, float ws, float* acc) {
  uint32_t bad = 0;
  for (size_t i = 0; i < m; ++i) {
    bad |= static_cast<uint32_t>(q[i] == -128);
    acc[i] += ws * static_cast<float>(q[i]);
  }
  return bad;
}

VERDANT_KERNEL uint32_t Int8Check(const int8_t* q, size_t m) {
  uint32_t bad = 0;
  for (size_t i = 0; i < m; ++i) bad |= static_cast<uint32_t>(q[i] == -128);
  return bad;
}

inline int8_t LowNibble(uint8_t b) { return static_cast<int8_t>(static_cast<int8_t>(b << 4) >> 4); }
inline int8_t HighNibble(uint8_t b) { return static_cast<int8_t>(static_cast<int8_t>(b) >> 4); }

// m values from ceil(m/2) bytes; returns non-zero on a -8 code or a non-zero
// padding nibble.
VERDANT_KERNEL uint32_t Int4Decode(const uint8_t* in, size_t m, float s, float* out) {
  uint32_t bad = 0;
  const size_t pairs = m / 2;
  for (size_t j = 0; j < pairs; ++j) {
    const int8_t lo = LowNibble(in[j]);
    const int8_t hi = HighNibble(in[j]);
    bad |= static_cast<uint32_t>(lo == -8) | static_cast<uint32_t>(hi == -8);
    out[2 * j] = s * static_cast<float>(lo);
    out[2 * j + 1] = s * static_cast<float>(hi);
  }
  if (m & 1) {
    const int8_t lo = LowNibble(in[pairs]);
    bad |= static_cast<uint32_t>(lo == -8) | static_cast<uint32_t>((in[pairs] >> 4) != 0);
    out[m - 1] = s * static_cast<float>(lo);
  }
  return bad;
}

VERDANT_KERNEL uint32_t Int4Accumulate(const uint8_t* in, size_t m, float ws, float* acc) {
  uint32_t bad = 0;
  const size_t pairs = m / 2;
  for (size_t j = 0; j < pairs; ++j) {
    const int8_t lo = LowNibble(in[j]);
    const int8_t hi = HighNibble(in[j]);
    bad |= static_cast<uint32_t>(lo == -8) | static_cast<uint32_t>(hi == -8);
    acc[2 * j] += ws * static_cast<float>(lo);
    acc[2 * j + 1] += ws * static_cast<float>(hi);
  }
  if (m & 1) {
    const int8_t lo = LowNibble(in[pairs]);
    bad |= static_cast<uint32_t>(lo == -8) | static_cast<uint32_t>((in[pairs] >> 4) != 0);
    acc[m - 1] += ws * static_cast<float>(lo);
  }
  return bad;
}

VERDANT_KERNEL uint32_t Int4Check(const uint8_t* in, size_t m) {
  uint32_t bad = 0;
  const size_t pairs = m / 2;
  for (size_t j = 0; j < pairs; ++j) {
    bad |= static_cast<uint32_t>((in[j] & 0x0f) == 0x08) | static_cast<uint32_t>((in[j] & 0xf0) == 0x80);
  }
  if (m & 1) bad |= static_cast<uint32_t>((in[pairs] & 0x0f) == 0x08) | static_cast<uint32_t>((in[pairs] >> 4) != 0);
  return bad;
}

}  // namespace

UniformQuantCodec::UniformQuantCodec(Key, const Options& options) : options_(options) {
  name_ = options.bits == 8 ? "int8" : "int4";
  if (options.chunk != Options{}.chunk) name_ += ":chunk=" + std::to_string(options.chunk);
}

Result<std::unique_ptr<UniformQuantCodec>> UniformQuantCodec::Create(const Options& options) {
  if (options.bits != 8 && options.bits != 4) {
    return InvalidArgumentError("uniform quantisation supports 8 or 4 bits, not " + std::to_string(options.bits));
  }
  if (options.chunk < 1 || options.chunk > kMaxChunk) {
    return InvalidArgumentError("chunk must be in [1, " + std::to_string(kMaxChunk) + "], got " +
                                std::to_string(options.chunk));
  }
  return std::make_unique<UniformQuantCodec>(Key{}, options);
}

static size_t CodeBytes(int bits, size_t m) { return bits == 8 ? m : (m + 1) / 2; }

size_t UniformQuantCodec::EncodedSize(size_t n) const {
  const size_t c = options_.chunk;
  const size_t full = n / c, rem = n % c;
  return full * (4 + CodeBytes(options_.bits, c)) + (rem ? 4 + CodeBytes(options_.bits, rem) : 0);
}

Status UniformQuantCodec::Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) {
  out.clear();
  const size_t n = values.size();
  const size_t c = options_.chunk;
  const float qmax = options_.bits == 8 ? 127.0f : 7.0f;
  const uint64_t seed = rng.Next();
  const auto seed_lo = static_cast<uint32_t>(seed), seed_hi = static_cast<uint32_t>(seed >> 32);
  out.resize(EncodedSize(n));
  if (options_.bits == 4) scratch_.resize(std::min(c, n));
  uint8_t* p = out.data();
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    const float* x = values.data() + start;
    const uint32_t mag = codec_internal::MaxMagnitudeBits(x, m);
    if (mag >= 0x7f800000u) {
      out.clear();
      return InvalidArgumentError("cannot quantise NaN or Inf (value near index " + std::to_string(start) + ")");
    }
    const float maxabs = std::bit_cast<float>(mag);
    float s = maxabs / qmax;
    if (!std::isfinite(s * qmax)) s = std::nextafter(s, 0.0f);
    StoreF32(p, s);
    p += 4;
    int8_t* q = options_.bits == 8 ? reinterpret_cast<int8_t*>(p) : scratch_.data();
    const float inv = qmax / maxabs;
    const auto base = static_cast<uint32_t>(start);
    if (maxabs == 0.0f) {
      std::memset(q, 0, m);
    } else if (std::isfinite(inv)) {
      QuantizeChunk(x, m, inv, qmax, seed_lo, seed_hi, base, q);
    } else {
      QuantizeChunkTiny(x, m, maxabs, qmax, seed_lo, seed_hi, base, q);
    }
    if (options_.bits == 4) PackNibbles(q, m, p);
    p += CodeBytes(options_.bits, m);
  }
  return OkStatus();
}

// Size check only; per-chunk checks happen as chunks are read.
Status UniformQuantCodec::Check(std::span<const uint8_t> bytes, size_t n) const {
  const size_t want = EncodedSize(n);
  if (bytes.size() != want) {
    return DataLossError(std::string(name_) + " payload has " + std::to_string(bytes.size()) +
                         " bytes, expected " + std::to_string(want) + " for " + std::to_string(n) + " values");
  }
  return OkStatus();
}

namespace {
// A decoded scale is usable when finite, non-negative and s*qmax is finite.
inline bool ScaleOk(float s, float qmax) { return s >= 0.0f && std::isfinite(s * qmax); }
}  // namespace

Status UniformQuantCodec::Decode(std::span<const uint8_t> bytes, std::span<float> out) const {
  VERDANT_RETURN_IF_ERROR(Check(bytes, out.size()));
  const size_t n = out.size(), c = options_.chunk;
  const float qmax = options_.bits == 8 ? 127.0f : 7.0f;
  const uint8_t* p = bytes.data();
  uint32_t bad = 0;
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    const float s = LoadF32(p);
    p += 4;
    if (!ScaleOk(s, qmax)) return DataLossError(std::string(name_) + ": invalid chunk scale");
    if (options_.bits == 8) {
      bad |= Int8Decode(reinterpret_cast<const int8_t*>(p), m, s, out.data() + start);
    } else {
      bad |= Int4Decode(p, m, s, out.data() + start);
    }
    p += CodeBytes(options_.bits, m);
  }
  if (bad) return DataLossError(std::string(name_) + ": invalid code");
  return OkStatus();
}

Status UniformQuantCodec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                           std::span<float> acc) const {
  VERDANT_RETURN_IF_ERROR(Check(bytes, acc.size()));
  const size_t n = acc.size(), c = options_.chunk;
  const float qmax = options_.bits == 8 ? 127.0f : 7.0f;
  const uint8_t* p = bytes.data();
  uint32_t bad = 0;
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    const float s = LoadF32(p);
    p += 4;
    if (!ScaleOk(s, qmax)) return DataLossError(std::string(name_) + ": invalid chunk scale");
    if (options_.bits == 8) {
      bad |= Int8Accumulate(reinterpret_cast<const int8_t*>(p), m, weight * s, acc.data() + start);
    } else {
      bad |= Int4Accumulate(p, m, weight * s, acc.data() + start);
    }
    p += CodeBytes(options_.bits, m);
  }
  if (bad) return DataLossError(std::string(name_) + ": invalid code");
  return OkStatus();
}

Status UniformQuantCodec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  VERDANT_RETURN_IF_ERROR(Check(bytes, n));
  const size_t c = options_.chunk;
  const float qmax = options_.bits == 8 ? 127.0f : 7.0f;
  const uint8_t* p = bytes.data();
  uint32_t bad = 0;
  for (size_t start = 0; start < n; start += c) {
    const size_t m = std::min(c, n - start);
    if (!ScaleOk(LoadF32(p), qmax)) return DataLossError(std::string(name_) + ": invalid chunk scale");
    p += 4;
    bad |= options_.bits == 8 ? Int8Check(reinterpret_cast<const int8_t*>(p), m) : Int4Check(p, m);
    p += CodeBytes(options_.bits, m);
  }
  if (bad) return DataLossError(std::string(name_) + ": invalid code");
  return OkStatus();
}

}  // namespace verdant
