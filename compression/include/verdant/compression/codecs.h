// verdant/compression/codecs.h
//
// The built-in lossy codecs behind UpdateCodec. Most callers go through
// CreateCodec(spec); these classes are public so tests, benchmarks and
// plug-ins can build them from Options and read their documented bounds.
//   auto q = UniformQuantCodec::Create({.bits = 8, .chunk = 1024});
//   std::vector<uint8_t> bytes;
//   VERDANT_RETURN_IF_ERROR((*q)->Encode(delta, rng, bytes));
//   VERDANT_RETURN_IF_ERROR((*q)->DecodeAccumulate(bytes, 0.25f, acc));
// Thread-safety: as UpdateCodec — Encode on one thread per instance; the
// const decode paths are safe to call concurrently.
//
// All byte formats are little-endian and self-delimiting given n (the
// number of values, known to both ends). Decoders treat bytes as untrusted:
// any malformed, truncated or oversized input is kDataLoss, never an
// out-of-bounds read, and nothing is allocated in proportion to a size field
// before that field is checked against the buffer. Every Encode returns
// kInvalidArgument for NaN/Inf input.
//
// Error bounds (x: input, x': one decode of one encoding, per value):
//   fp16:  |x - x'| <= 2^-11 |x| for 2^-14 <= |x| <= 65504 (round to nearest
//          even), <= 2^-25 below 2^-14; |x| > 65504 saturates to +-65504.
//   int8:  |x - x'| <= s, s = max|x| over the chunk / 127; E[x'] = x.
//   int4:  |x - x'| <= s, s = max|x| over the chunk / 7;   E[x'] = x.
//   qsgd:  |x - x'| <= ||x_chunk||_2 / levels;               E[x'] = x.
//   topk:  kept values as their value codec; dropped values decode to 0.
// "E[x'] = x" holds up to the 2^-24 grid of the dither and float rounding
// of x/s (relative 2^-23 of a step).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "verdant/compression/codec.h"

namespace verdant {

// fp16: n little-endian IEEE binary16 values, 2n bytes, no header. Decoding
// rejects the Inf/NaN exponent. Uses F16C when the CPU has it (see half.h).
class Fp16Codec final : public UpdateCodec {
 public:
  Fp16Codec() = default;
  std::string_view Name() const override { return "fp16"; }
  Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) override;
  Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const override;
  Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                          std::span<float> acc) const override;
  Status Validate(std::span<const uint8_t> bytes, size_t n) const override;
};

// int8 / int4: stochastic (unbiased) symmetric uniform quantisation with one
// float32 scale per chunk of `chunk` consecutive values.
// Byte format, per chunk of m values (the last chunk may be shorter):
//   f32 scale s | codes
//   int8: m bytes, two's complement q in [-127, 127];       x' = s * q
//   int4: ceil(m/2) bytes, value 2j in the low nibble, 2j+1 in the high one,
//         two's complement q in [-7, 7]; an odd chunk's last high nibble is 0.
// s = max|x| / (2^(bits-1) - 1), finite, 0 <= s <= FLT_MAX/128; code -128
// (int8) / -8 (int4) never occurs. Size: ceil(n/chunk)*4 + n (int8) or
// + sum ceil(m/2) (int4).
class UniformQuantCodec final : public UpdateCodec {
 public:
  struct Options {
    int bits = 8;         // 8 or 4
    size_t chunk = 1024;  // values per scale, 1 .. 2^24
  };
  // kInvalidArgument for bits other than 4/8 or chunk out of range.
  static Result<std::unique_ptr<UniformQuantCodec>> Create(const Options& options);
  // Use Create: it validates the options. (Public only for make_unique.)
  class Key {
    explicit Key() = default;
    friend class UniformQuantCodec;
  };
  UniformQuantCodec(Key, const Options& options);

  std::string_view Name() const override { return name_; }
  Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) override;
  Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const override;
  Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                          std::span<float> acc) const override;
  Status Validate(std::span<const uint8_t> bytes, size_t n) const override;
  // Encoded size for n values.
  size_t EncodedSize(size_t n) const;
  const Options& options() const { return options_; }

 private:
  Status Check(std::span<const uint8_t> bytes, size_t n) const;
  Options options_;
  std::string name_;
  std::vector<int8_t> scratch_;
};

// qsgd:<levels>: Alistarh et al. 2017, with buckets of `chunk` values. Per
// chunk, the L2 norm r and, per value, a stochastic level l in [0, levels]
// with E[l] = levels*|x|/r, stored with its sign as the field
// f = sign(x)*l + levels in [0, 2*levels], bit_width(2*levels) bits each.
// Byte format, per chunk of m values: f32 r | ceil(m*b/8) bytes of fields,
// LSB-first bit packed, padding bits zero. x' = r/levels * (f - levels).
class QsgdCodec final : public UpdateCodec {
 public:
  struct Options {
    int levels = 16;     // quantisation levels s, 1 .. 32767
    size_t chunk = 512;  // values per norm (bucket), 1 .. 2^24
  };
  static Result<std::unique_ptr<QsgdCodec>> Create(const Options& options);
  // Use Create: it validates the options. (Public only for make_unique.)
  class Key {
    explicit Key() = default;
    friend class QsgdCodec;
  };
  QsgdCodec(Key, const Options& options);

  std::string_view Name() const override { return name_; }
  Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) override;
  Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const override;
  Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                          std::span<float> acc) const override;
  Status Validate(std::span<const uint8_t> bytes, size_t n) const override;
  size_t EncodedSize(size_t n) const;
  // Bits per value.
  int bits() const { return bits_; }
  const Options& options() const { return options_; }

 private:
  template <typename Sink>
  Status Walk(std::span<const uint8_t> bytes, size_t n, Sink&& sink) const;
  Options options_;
  int bits_;
  std::string name_;
  std::vector<uint32_t> scratch_;
};

// topk:<fraction>[+<codec>]: keeps exactly k = KeptCount(fraction, n)
// values, the largest |x|; among equal magnitudes the lower index wins.
// Byte format:
//   varint n | varint k | u8 mode | [u8 r, mode 1] | varint P | P bytes positions | values
//   mode 0: bitmap, P = ceil(n/8), bit i set iff i kept, k bits set, pad 0
//   mode 1: Golomb-Rice gaps g_j = p_j - p_{j-1} - 1 (p_{-1} = -1): unary
//           g>>r as zeros then a one, then the low r bits; LSB-first, pad 0
//   values: the value codec's encoding of the k kept values in index order
// The encoder picks the smaller of the two modes (and the best r), so
// positions cost about log2(n/k) + 1.5 bits each and never more than n bits.
// Selection runs in O(n) (sampled threshold + nth_element on the survivors).
class TopKCodec final : public UpdateCodec {
 public:
  struct Options {
    double fraction = 0.01;               // kept share, 0 < fraction <= 1
    std::unique_ptr<UpdateCodec> values;  // kept values' codec; null: identity
  };
  static Result<std::unique_ptr<TopKCodec>> Create(Options options);
  // Use Create: it validates the options. (Public only for make_unique.)
  class Key {
    explicit Key() = default;
    friend class TopKCodec;
  };
  TopKCodec(Key, Options options);
  // ceil(fraction*n) (with a 1e-12 relative tolerance, so 0.07*100 -> 7),
  // at least 1 when n > 0, at most n.
  static size_t KeptCount(double fraction, size_t n);

  std::string_view Name() const override { return name_; }
  Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) override;
  Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const override;
  Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                          std::span<float> acc) const override;
  Status Validate(std::span<const uint8_t> bytes, size_t n) const override;
  double fraction() const { return fraction_; }
  // The codec of the kept values (identity unless composed).
  const UpdateCodec& values_codec() const { return *values_codec_; }
  // The indices Encode kept last time, ascending (for tests and metrics).
  std::span<const uint32_t> last_positions() const { return positions_; }

 private:
  struct Parsed;
  Status Parse(std::span<const uint8_t> bytes, size_t n, Parsed& p,
               std::vector<uint32_t>& positions) const;
  void Select(std::span<const float> values, size_t k);
  double fraction_;
  std::unique_ptr<UpdateCodec> values_codec_;
  std::string name_;
  std::vector<uint32_t> positions_;
  std::vector<uint32_t> candidates_;
  std::vector<uint32_t> cand_mags_;
  std::vector<float> kept_;
  std::vector<uint8_t> inner_bytes_;
};

}  // namespace verdant
