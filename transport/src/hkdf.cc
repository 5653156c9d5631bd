#include "verdant/transport/hkdf.h"

#include <sodium.h>

#include <algorithm>
#include <string>

#include "verdant/transport/keys.h"

namespace verdant {

SecretDigest::~SecretDigest() { sodium_memzero(bytes_.data(), bytes_.size()); }

SecretDigest::SecretDigest(SecretDigest&& other) noexcept : bytes_(other.bytes_) {
  sodium_memzero(other.bytes_.data(), other.bytes_.size());
}

SecretDigest& SecretDigest::operator=(SecretDigest&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    sodium_memzero(other.bytes_.data(), other.bytes_.size());
  }
  return *this;
}

namespace {

// The HMAC state holds key-derived pads: wipe it on every exit.
struct HmacState {
  crypto_auth_hmacsha256_state st;
  ~HmacState() { sodium_memzero(&st, sizeof(st)); }
};

}  // namespace

void HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data,
                std::span<uint8_t, kSha256Bytes> out) {
  InitCrypto().IgnoreError();  // sodium_init failing leaves libsodium usable for HMAC (no RNG)
  HmacState s;
  crypto_auth_hmacsha256_init(&s.st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&s.st, data.data(), data.size());
  crypto_auth_hmacsha256_final(&s.st, out.data());
}

SecretDigest HkdfExtract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm) {
  static constexpr std::array<uint8_t, kSha256Bytes> kZeroSalt{};
  SecretDigest prk;
  if (salt.empty()) salt = kZeroSalt;
  HmacSha256(salt, ikm, std::span<uint8_t, kSha256Bytes>(prk.data(), kSha256Bytes));
  return prk;
}

Status HkdfExpand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> okm) {
  if (okm.empty() || okm.size() > kHkdfMaxOutputBytes) {
    return InvalidArgumentError("HKDF output of " + std::to_string(okm.size()) +
                                " bytes is outside 1.." + std::to_string(kHkdfMaxOutputBytes));
  }
  if (prk.size() < kSha256Bytes) {
    return InvalidArgumentError("HKDF PRK must be at least 32 bytes, got " + std::to_string(prk.size()));
  }
  InitCrypto().IgnoreError();
  SecretDigest t;  // T(i)
  size_t t_len = 0;
  size_t done = 0;
  for (uint8_t i = 1; done < okm.size(); ++i) {
    // T(i) = HMAC(PRK, T(i-1) | info | i)
    HmacState s;
    crypto_auth_hmacsha256_init(&s.st, prk.data(), prk.size());
    crypto_auth_hmacsha256_update(&s.st, t.data(), t_len);
    crypto_auth_hmacsha256_update(&s.st, info.data(), info.size());
    crypto_auth_hmacsha256_update(&s.st, &i, 1);
    crypto_auth_hmacsha256_final(&s.st, t.data());
    t_len = kSha256Bytes;
    size_t take = std::min(kSha256Bytes, okm.size() - done);
    std::copy_n(t.data(), take, okm.data() + done);
    done += take;
  }
  return OkStatus();
}

Status Hkdf(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, std::span<const uint8_t> info,
            std::span<uint8_t> okm) {
  SecretDigest prk = HkdfExtract(salt, ikm);
  return HkdfExpand(prk.span(), info, okm);
}

}  // namespace verdant
