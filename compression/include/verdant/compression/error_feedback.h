// verdant/compression/error_feedback.h
//
// ErrorFeedback: the client-side residual that makes lossy codecs (top-k,
// quantisers) converge like uncompressed training (Seide et al. 2014, Stich
// et al. 2018). Each round the client sends C(delta + residual) and keeps
// residual = (delta + residual) - Decode(C(delta + residual)), so nothing a
// codec drops is lost, only delayed. The residual survives a reconnect or a
// process restart through Serialize/Deserialize (or SaveToFile/LoadFromFile).
//   ErrorFeedback ef(layout.Fingerprint());
//   VERDANT_RETURN_IF_ERROR(ef.Encode(*codec, delta, rng, bytes));
//   VERDANT_RETURN_IF_ERROR(ef.SaveToFile(state_dir / "residual.bin"));
//   auto restored = ErrorFeedback::LoadFromFile(state_dir / "residual.bin");
// Thread-safety: not thread-safe; one instance per client.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "verdant/compression/codec.h"
#include "verdant/core/rng.h"
#include "verdant/core/status.h"

namespace verdant {

class ErrorFeedback {
 public:
  // `tag` names what the residual belongs to (e.g. the model's
  // Layout::Fingerprint()); it is saved with the residual so a client can
  // drop a residual restored for a different model.
  explicit ErrorFeedback(uint64_t tag = 0) : tag_(tag) {}

  // Encodes delta + residual with `codec` into `out` (cleared first) and
  // keeps (delta + residual) - codec.Decode(out) as the residual. The
  // residual starts as zeros of delta's size. kFailedPrecondition if the
  // residual holds a different number of values (a new model: call Reset);
  // the codec's error (kInvalidArgument for NaN/Inf) otherwise. On error the
  // residual is unchanged.
  Status Encode(UpdateCodec& codec, std::span<const float> delta, Rng& rng, std::vector<uint8_t>& out);

  // Drops the residual; the next Encode starts from zeros.
  void Reset() { residual_.clear(); }
  // The residual, empty before the first Encode.
  std::span<const float> residual() const { return residual_; }
  uint64_t tag() const { return tag_; }
  void set_tag(uint64_t tag) { tag_ = tag; }

  // Byte format (little-endian): "VEF1" | u64 tag | u64 n | n x f32 |
  // u64 FNV-1a-64 of all preceding bytes.
  std::vector<uint8_t> Serialize() const;
  // kDataLoss on a wrong magic, size, checksum or a non-finite value; the
  // claimed n is checked against the buffer before anything is allocated.
  static Result<ErrorFeedback> Deserialize(std::span<const uint8_t> bytes);

  // Writes Serialize() to `path` atomically (temporary file + rename).
  // kUnavailable on an I/O error.
  Status SaveToFile(const std::filesystem::path& path) const;
  // kNotFound if the file does not exist, kDataLoss if it is corrupt,
  // kUnavailable on another I/O error.
  static Result<ErrorFeedback> LoadFromFile(const std::filesystem::path& path);

 private:
  uint64_t tag_ = 0;
  std::vector<float> residual_;
  std::vector<float> corrected_;  // scratch: delta + residual
};

}  // namespace verdant
