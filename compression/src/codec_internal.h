// compression/src/codec_internal.h
//
// Private helpers shared by the codecs: little-endian byte I/O with bounds
// checks, LEB128 varints, an LSB-first bit writer/reader, argument parsing
// for codec specs and the counter-based dither used by stochastic rounding.
// Nothing here is part of the public API.
// Thread-safety: free functions are pure; the reader/writer objects are not
// shared between threads.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/options.h"
#include "verdant/core/status.h"

// Hot kernels are compiled twice — for x86-64-v3 (AVX2, FMA, F16C) and for
// the baseline — and picked at load time (GCC ifunc), so one binary runs
// everywhere and still vectorises wide where it can.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(VERDANT_NO_MULTIVERSION)
#define VERDANT_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VERDANT_KERNEL
#endif

namespace verdant::codec_internal {

// ---- little-endian writes ------------------------------------------------------
inline void PutU8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
inline void PutF32(std::vector<uint8_t>& out, float v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  out.insert(out.end(), b, b + 4);
}
inline void PutVarint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}
inline float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void StoreF32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }

// ---- bounds-checked reader ---------------------------------------------------
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t remaining() const { return bytes_.size() - pos_; }
  size_t position() const { return pos_; }
  bool ReadU8(uint8_t& v) {
    if (remaining() < 1) return false;
    v = bytes_[pos_++];
    return true;
  }
  // Canonical LEB128 only (no over-long encodings), at most 10 bytes.
  bool ReadVarint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!ReadU8(b)) return false;
      if (shift == 63 && b > 1) return false;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return !(b == 0 && shift != 0);
    }
    return false;
  }
  bool Take(size_t n, std::span<const uint8_t>& out) {
    if (remaining() < n) return false;
    out = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> Rest() const { return bytes_.subspan(pos_); }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

// ---- bit I/O (LSB-first: bit i is (byte[i/8] >> (i%8)) & 1) -----------------------
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  // Appends the low `bits` bits of v (bits <= 32).
  void Put(uint32_t v, int bits) {
    if (bits == 0) return;
    acc_ |= static_cast<uint64_t>(v & (bits == 32 ? ~0u : ((1u << bits) - 1))) << fill_;
    fill_ += bits;
    Drain();
  }
  // q zero bits then a one bit.
  void PutUnary(uint64_t q) {
    while (q >= 32) {
      fill_ += 32;
      Drain();
      q -= 32;
    }
    fill_ += static_cast<int>(q);
    Drain();
    Put(1, 1);
  }
  // Pads the last byte with zero bits.
  void Flush() {
    while (fill_ > 0) {
      out_.push_back(static_cast<uint8_t>(acc_));
      acc_ >>= 8;
      fill_ = fill_ > 8 ? fill_ - 8 : 0;
    }
  }

 private:
  void Drain() {
    while (fill_ >= 8) {
      out_.push_back(static_cast<uint8_t>(acc_));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  // Reads `bits` (<= 32) bits; false past the end.
  bool Get(int bits, uint32_t& v) {
    if (bits == 0) {
      v = 0;
      return true;
    }
    if (!Fill(bits)) return false;
    v = static_cast<uint32_t>(acc_ & ((uint64_t{1} << bits) - 1));
    acc_ >>= bits;
    fill_ -= bits;
    return true;
  }
  // Counts zero bits up to the next one bit (consumed); false if more than
  // `max_q` zeros or the stream ends first.
  bool GetUnary(uint64_t max_q, uint64_t& q) {
    q = 0;
    for (;;) {
      if (fill_ == 0 && !Fill(1)) return false;
      if (acc_ != 0) {
        int z = std::countr_zero(acc_);
        if (z < fill_) {
          q += static_cast<uint64_t>(z);
          acc_ >>= z + 1;
          fill_ -= z + 1;
          return q <= max_q;
        }
      }
      q += static_cast<uint64_t>(fill_);
      acc_ = 0;
      fill_ = 0;
      if (q > max_q) return false;
    }
  }
  // Bits consumed so far.
  uint64_t consumed() const { return static_cast<uint64_t>(pos_) * 8 - static_cast<uint64_t>(fill_); }
  // True when every unconsumed bit is zero and fewer than 8 remain.
  bool AtCanonicalEnd() const { return pos_ == bytes_.size() && fill_ < 8 && acc_ == 0; }

 private:
  bool Fill(int need) {
    while (fill_ < need) {
      if (pos_ >= bytes_.size()) return false;
      acc_ |= static_cast<uint64_t>(bytes_[pos_++]) << fill_;
      fill_ += 8;
    }
    return true;
  }
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// ---- stochastic rounding dither --------------------------------------------------
// A counter-based generator: Dither(seed, i) is a well-mixed 32-bit value
// for every index, so each lane of a vector loop computes its own draw.
// Two rounds of Wellons' lowbias32 keyed by a 64-bit seed.
inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
inline uint32_t Dither(uint32_t seed_lo, uint32_t seed_hi, uint32_t i) {
  return Mix32(Mix32(i ^ seed_lo) + seed_hi);
}
// Uniform float in [0, 1) on a 2^-24 grid.
inline float DitherUniform(uint32_t seed_lo, uint32_t seed_hi, uint32_t i) {
  return static_cast<float>(Dither(seed_lo, seed_hi, i) >> 8) * (1.0f / 16777216.0f);
}

// ---- spec arguments ----------------------------------------------------------------
// Parses "v", "key=v" or "v,key=v,..." into an OptionMap; a bare leading
// value is stored under `positional_key` (empty: positional not allowed).
Result<OptionMap> ParseArgs(std::string_view codec, std::string_view arg,
                            std::string_view positional_key);
// Shortest decimal that reads back to the same double ("0.05").
std::string FormatDouble(double v);
// kInvalidArgument when o holds the composition key "next": only sparsifiers
// compose with a following value codec.
Status RejectComposition(std::string_view codec, const OptionMap& o);

// Largest |value| of n float32 at `x` (any alignment) as float bits;
// >= 0x7f800000 if any value is non-finite.
uint32_t MaxMagnitudeBits(const void* x, size_t n);

}  // namespace verdant::codec_internal
