// verdant/compression/codec.h
//
// UpdateCodec: turns a float32 vector (a model delta or a model) into bytes
// and back. Sending is a pipeline — encode -> transport -> decode — with an
// `identity` codec, so every codec is tested against "no compression".
//   auto codec = CreateCodec("identity");             // Result<unique_ptr>
//   std::vector<uint8_t> bytes;
//   VERDANT_RETURN_IF_ERROR((*codec)->Encode(delta, rng, bytes));
//   VERDANT_RETURN_IF_ERROR((*codec)->DecodeAccumulate(bytes, 0.25f, acc));
// Thread-safety: Encode may keep per-instance state (e.g. error feedback):
// one instance per client. Decode/DecodeAccumulate are const and safe to call
// concurrently.
#pragma once

#include <bit>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/options.h"
#include "verdant/core/registry.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"

namespace verdant {

class UpdateCodec {
 public:
  virtual ~UpdateCodec() = default;
  UpdateCodec(const UpdateCodec&) = delete;
  UpdateCodec& operator=(const UpdateCodec&) = delete;

  // The codec's spec, e.g. "identity" or "topk:0.05+int8"; CreateCodec(Name())
  // builds an equivalent codec.
  virtual std::string_view Name() const = 0;
  // Bumped whenever the byte format changes; exchanged in the handshake.
  virtual uint32_t Version() const { return 1; }

  // Appends the encoding of `values` to `out` (cleared first). Stochastic
  // codecs draw from `rng`. kInvalidArgument on non-finite input.
  virtual Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) = 0;

  // Decodes `bytes` into `out`, whose size is the number of values expected.
  // kDataLoss if the bytes are malformed or do not hold out.size() values.
  // Never reads past `bytes`, never throws, never asserts: input is untrusted.
  virtual Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const = 0;

  // acc += weight * Decode(bytes), without materialising a float copy where
  // the codec can fuse the two (FedPAQ-style quantized aggregation). The
  // default decodes into a temporary. Same errors as Decode; on error `acc`
  // may be partly updated, so callers validate first (see Validate).
  virtual Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                  std::span<float> acc) const;

  // Checks that `bytes` is a well-formed encoding of `n` values whose decoded
  // values are all finite, without allocating a float copy where possible.
  virtual Status Validate(std::span<const uint8_t> bytes, size_t n) const;

 protected:
  UpdateCodec() = default;
};

// The process-wide codec registry with the built-ins registered.
Registry<UpdateCodec>& CodecRegistry();

// Creates a codec from its spec string: "identity", "name:arg" (e.g.
// "topk:0.05"), or a '+'-separated composition. kInvalidArgument naming the
// valid codecs for an unknown name or a bad argument.
//
// Built-in specs (see docs/compression.md for byte formats and error bounds):
//   identity                       float32, 4 bytes/value
//   fp16                           IEEE binary16, round-to-nearest-even
//   int8[:chunk=N]                 stochastic 8-bit, one float scale per N values (1024)
//   int4[:chunk=N]                 stochastic 4-bit, one float scale per N values (1024)
//   qsgd:<levels>[,chunk=N]        QSGD, L2 norm per N values (512), 1 <= levels <= 32767
//   topk:<fraction>[+<codec>]      the ceil(fraction*n) largest magnitudes, 0 < fraction <= 1;
//                                  kept values coded by <codec> (default identity)
// Arguments are "value" or "key=value" items separated by ','; e.g.
// "int8:chunk=512", "qsgd:levels=16,chunk=256", "topk:0.1+int8".
// Composition: only topk takes a following codec, and that codec must be a
// dense one (not topk).
Result<std::unique_ptr<UpdateCodec>> CreateCodec(std::string_view spec);

// Multi-line help text listing every valid codec spec (built-ins with their
// arguments, then any plug-in names), for CLI --help and error messages.
std::string DescribeCodecs();

// The registry names a spec uses, in order: "topk:0.1+int8:chunk=512" ->
// {"topk", "int8"}. For handshake checks ("does the client offer every
// codec this run needs?"); no validation beyond splitting.
std::vector<std::string> CodecNamesInSpec(std::string_view spec);

// The bytes of `values` in the identity format (little-endian float32), as a
// view of the floats themselves: what IdentityCodec::Encode would copy out.
// Senders chunk a model or delta from it in place.
inline std::span<const uint8_t> IdentityBytes(std::span<const float> values) {
  static_assert(std::endian::native == std::endian::little, "the identity wire format is the floats' own bytes");
  return {reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes()};
}

// Identity: little-endian float32, 4 bytes per value.
class IdentityCodec final : public UpdateCodec {
 public:
  IdentityCodec() = default;
  std::string_view Name() const override { return "identity"; }
  Status Encode(std::span<const float> values, Rng& rng, std::vector<uint8_t>& out) override;
  Status Decode(std::span<const uint8_t> bytes, std::span<float> out) const override;
  Status DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                          std::span<float> acc) const override;
  Status Validate(std::span<const uint8_t> bytes, size_t n) const override;
};

}  // namespace verdant
