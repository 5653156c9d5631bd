#include "verdant/compression/error_feedback.h"

#include <cstring>
#include <fstream>
#include <system_error>

#include "codec_internal.h"
#include "verdant/core/parameter_vector.h"

namespace verdant {
namespace {

constexpr char kMagic[4] = {'V', 'E', 'F', '1'};
constexpr size_t kHeader = 4 + 8 + 8;
constexpr size_t kTrailer = 8;

uint64_t Fnv1a64(std::span<const uint8_t> bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

void StoreU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

Status ErrorFeedback::Encode(UpdateCodec& codec, std::span<const float> delta, Rng& rng,
                             std::vector<uint8_t>& out) {
  const size_t n = delta.size();
  if (!residual_.empty() && residual_.size() != n) {
    return FailedPreconditionError("error-feedback residual holds " + std::to_string(residual_.size()) +
                                   " values but the delta has " + std::to_string(n) +
                                   "; call Reset() for a new model");
  }
  corrected_.resize(n);
  if (residual_.empty()) {
    std::copy(delta.begin(), delta.end(), corrected_.begin());
  } else {
    for (size_t i = 0; i < n; ++i) corrected_[i] = delta[i] + residual_[i];
  }
  VERDANT_RETURN_IF_ERROR(codec.Encode(corrected_, rng, out));
  // residual = corrected - Decode(out), via the fused path with weight -1
  // (exact: -1 * v == -v).
  Status st = codec.DecodeAccumulate(out, -1.0f, corrected_);
  if (!st.ok()) return InternalError("codec '" + std::string(codec.Name()) + "' cannot decode its own output: " + st.ToString());
  residual_.swap(corrected_);
  return OkStatus();
}

std::vector<uint8_t> ErrorFeedback::Serialize() const {
  const size_t n = residual_.size();
  std::vector<uint8_t> out(kHeader + n * 4 + kTrailer);
  std::memcpy(out.data(), kMagic, 4);
  StoreU64(out.data() + 4, tag_);
  StoreU64(out.data() + 12, n);
  if (n > 0) std::memcpy(out.data() + kHeader, residual_.data(), n * 4);
  StoreU64(out.data() + kHeader + n * 4, Fnv1a64(std::span<const uint8_t>(out).first(kHeader + n * 4)));
  return out;
}

Result<ErrorFeedback> ErrorFeedback::Deserialize(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeader + kTrailer || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return DataLossError("not an error-feedback residual (bad magic or too short)");
  }
  const uint64_t n = LoadU64(bytes.data() + 12);
  const size_t body = bytes.size() - kHeader - kTrailer;
  if (body % 4 != 0 || n != body / 4) {
    return DataLossError("error-feedback residual claims " + std::to_string(n) + " values but holds " +
                         std::to_string(body) + " bytes of them");
  }
  const uint64_t want = LoadU64(bytes.data() + bytes.size() - kTrailer);
  if (Fnv1a64(bytes.first(bytes.size() - kTrailer)) != want) {
    return DataLossError("error-feedback residual checksum mismatch (torn or corrupt file)");
  }
  ErrorFeedback ef(LoadU64(bytes.data() + 4));
  ef.residual_.resize(n);
  if (n > 0) std::memcpy(ef.residual_.data(), bytes.data() + kHeader, n * 4);
  if (!AllFinite(ef.residual_)) return DataLossError("error-feedback residual holds NaN or Inf");
  return ef;
}

Status ErrorFeedback::SaveToFile(const std::filesystem::path& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return UnavailableError("cannot open " + tmp.string() + " for writing");
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) return UnavailableError("cannot write " + tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return UnavailableError("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
  return OkStatus();
}

Result<ErrorFeedback> ErrorFeedback::LoadFromFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFoundError("no residual file at " + path.string());
  std::ifstream f(path, std::ios::binary);
  if (!f) return UnavailableError("cannot open " + path.string());
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) return UnavailableError("cannot read " + path.string());
  auto r = Deserialize(bytes);
  if (!r.ok()) return r.status().WithContext(path.string());
  return r;
}

}  // namespace verdant
