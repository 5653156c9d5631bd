// verdant/transport/hkdf.h
//
// HMAC-SHA256 and HKDF (RFC 5869) built on libsodium's crypto_auth_hmacsha256
// (libsodium 1.0.18 has no crypto_kdf_hkdf). The Noise handshake uses the same
// HKDF: Noise's HKDF(ck, ikm, n) is RFC 5869 with salt = ck, empty info and
// L = 32 * n bytes.
//   std::array<uint8_t, 64> okm;
//   VERDANT_RETURN_IF_ERROR(Hkdf(salt, ikm, info, okm));
//   auto prk = HkdfExtract(salt, ikm);          // SecretDigest, wiped when dropped
//   VERDANT_RETURN_IF_ERROR(HkdfExpand(prk.span(), info, okm));
// Callers own every output buffer and should wipe secret outputs
// (sodium_memzero) when done; intermediate keys are wiped here.
// Thread-safety: pure functions, safe from any thread once InitCrypto() ran
// (keys.h; these functions call it themselves).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "verdant/core/status.h"

namespace verdant {

inline constexpr size_t kSha256Bytes = 32;
// RFC 5869: L <= 255 * HashLen.
inline constexpr size_t kHkdfMaxOutputBytes = 255 * kSha256Bytes;

// A 32-byte digest that is wiped (sodium_memzero) on destruction. Copyable
// only through Clone(); movable (the source is wiped).
class SecretDigest {
 public:
  SecretDigest() = default;
  ~SecretDigest();
  SecretDigest(const SecretDigest&) = delete;
  SecretDigest& operator=(const SecretDigest&) = delete;
  SecretDigest(SecretDigest&& other) noexcept;
  SecretDigest& operator=(SecretDigest&& other) noexcept;
  uint8_t* data() { return bytes_.data(); }
  const uint8_t* data() const { return bytes_.data(); }
  static constexpr size_t size() { return kSha256Bytes; }
  std::span<const uint8_t, kSha256Bytes> span() const { return std::span<const uint8_t, kSha256Bytes>(bytes_); }

 private:
  std::array<uint8_t, kSha256Bytes> bytes_{};
};

// HMAC-SHA256(key, data); any key length.
void HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data,
                std::span<uint8_t, kSha256Bytes> out);

// RFC 5869 2.2: PRK = HMAC-Hash(salt, IKM). An empty salt means HashLen zeros.
SecretDigest HkdfExtract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm);

// RFC 5869 2.3: fills `okm` (any length 1..8160). kInvalidArgument when `okm`
// is empty or longer than 255 * 32 bytes, or `prk` is shorter than 32 bytes.
Status HkdfExpand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> okm);

// Extract then Expand. Same errors as HkdfExpand.
Status Hkdf(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, std::span<const uint8_t> info,
            std::span<uint8_t> okm);

}  // namespace verdant
