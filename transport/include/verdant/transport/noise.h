// verdant/transport/noise.h
//
// The Noise protocol framework (revision 34), instantiated as
// Noise_XX_25519_ChaChaPoly_SHA256: X25519 DH, ChaCha20-Poly1305 (IETF) AEAD,
// SHA-256 with HKDF over HMAC-SHA256 (hkdf.h). Sans-IO: the caller moves the
// messages; nothing here touches a socket.
//
//   XX:  -> e
//        <- e, ee, s, es
//        -> s, se
//
//   auto i = NoiseHandshake::Initiator(client_key, AsBytes(kVerdantPrologue));
//   auto r = NoiseHandshake::Responder(server_key, AsBytes(kVerdantPrologue));
//   auto m1 = (*i)->WriteMessage({});  (*r)->ReadMessage(*m1);
//   auto m2 = (*r)->WriteMessage({});  (*i)->ReadMessage(*m2);
//   VERDANT_RETURN_IF_ERROR(VerifyRemoteStatic(**i, pinned_server_key));  // before m3
//   auto m3 = (*i)->WriteMessage({});  (*r)->ReadMessage(*m3);
//   std::unique_ptr<RecordLayer> records = std::move(*(*i)->Split());
//
// Errors: kDataLoss for a malformed (truncated, oversize) message,
// kUnauthenticated when a message fails authentication or carries a
// low-order key, kFailedPrecondition when called out of turn. After any
// error the handshake is failed for good and its secrets are wiped.
// Thread-safety: not thread-safe; one object per connection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/hkdf.h"
#include "verdant/transport/keys.h"

struct evp_cipher_ctx_st;  // OpenSSL's EVP_CIPHER_CTX

namespace verdant {

class SecureRecordLayer;

inline constexpr std::string_view kNoiseProtocolName = "Noise_XX_25519_ChaChaPoly_SHA256";
// Verdant binds its protocol id into every handshake (Noise prologue): a peer
// speaking another protocol or version fails the handshake.
inline constexpr std::string_view kVerdantPrologue = "verdant/1";
inline constexpr size_t kNoiseMaxMessageBytes = 65535;
inline constexpr size_t kNoiseTagBytes = 16;
inline constexpr size_t kNoiseDhBytes = 32;

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// When each direction of a transport replaces its key (Noise Rekey()): after
// `records` records or `bytes` plaintext bytes since the last rekey, whichever
// comes first. Both peers count the same records, so they agree without
// signalling. 0 disables that trigger.
struct RekeyPolicy {
  uint64_t records = uint64_t{1} << 20;  // records per direction
  uint64_t bytes = uint64_t{1} << 30;    // plaintext bytes per direction (1 GiB)
};

// Noise CipherState: a ChaCha20-Poly1305 key and a 64-bit nonce counter. The
// 96-bit AEAD nonce is 32 zero bits then the counter, little-endian. The key
// is wiped on destruction and when moved from. Move-only.
// The AEAD runs on OpenSSL's libcrypto (RFC 8439, the same bytes as
// libsodium's crypto_aead_chacha20poly1305_ietf_*, but with AVX2 code paths:
// about 1.8x libsodium 1.0.18's throughput on this machine, docs/security.md);
// libsodium's when OpenSSL's cipher cannot be fetched.
class CipherState {
 public:
  CipherState() = default;
  ~CipherState();
  CipherState(const CipherState&) = delete;
  CipherState& operator=(const CipherState&) = delete;
  CipherState(CipherState&& other) noexcept;
  CipherState& operator=(CipherState&& other) noexcept;

  void InitializeKey(std::span<const uint8_t, 32> key);
  bool HasKey() const { return has_key_; }
  uint64_t nonce() const { return n_; }
  void SetNonce(uint64_t n) { n_ = n; }

  // Writes plaintext.size() + 16 bytes to `out` (ciphertext then tag; exactly
  // plaintext.size() bytes, a copy, when there is no key). `out` may equal
  // plaintext.data() (in place) but must not otherwise overlap it.
  // kResourceExhausted when the nonce space is used up (n = 2^64-1).
  Status EncryptWithAd(std::span<const uint8_t> ad, std::span<const uint8_t> plaintext, uint8_t* out);
  // Writes ciphertext.size() - 16 bytes to `out` (may equal ciphertext.data()).
  // kDataLoss when shorter than a tag or authentication fails; the nonce
  // then stays where it was and `out` holds zeros (never unauthenticated
  // plaintext).
  Status DecryptWithAd(std::span<const uint8_t> ad, std::span<const uint8_t> ciphertext, uint8_t* out);
  // k = first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zero bytes). Nonce kept.
  void Rekey();

 private:
  void Wipe();
  evp_cipher_ctx_st* OpenSslContext();
  bool Seal(const uint8_t* nonce, std::span<const uint8_t> ad, std::span<const uint8_t> plaintext, uint8_t* out);
  bool Open(const uint8_t* nonce, std::span<const uint8_t> ad, std::span<const uint8_t> ciphertext,
            const uint8_t* tag, uint8_t* out);
  std::array<uint8_t, 32> k_{};
  bool has_key_ = false;
  uint64_t n_ = 0;
  evp_cipher_ctx_st* ctx_ = nullptr;  // OpenSSL's AEAD context, made on first use
};

namespace internal {
// Tests only: true makes every CipherState use libsodium's ChaCha20-Poly1305
// (the fallback when OpenSSL's is unavailable) instead of OpenSSL's. The two
// produce the same bytes. Not thread-safe; set it before any traffic.
void ForceLibsodiumAead(bool force);
// Whether OpenSSL's ChaCha20-Poly1305 could be fetched (the fast path).
bool OpenSslAeadAvailable();
}  // namespace internal

class NoiseHandshake {
 public:
  enum class Role { kInitiator, kResponder };

  // kInvalidArgument for an empty key pair; kInternal if libsodium fails.
  static Result<std::unique_ptr<NoiseHandshake>> Initiator(const KeyPair& static_key,
                                                            std::span<const uint8_t> prologue);
  static Result<std::unique_ptr<NoiseHandshake>> Responder(const KeyPair& static_key,
                                                            std::span<const uint8_t> prologue);
  ~NoiseHandshake();
  NoiseHandshake(const NoiseHandshake&) = delete;
  NoiseHandshake& operator=(const NoiseHandshake&) = delete;

  // Test vectors only: use this ephemeral key instead of a fresh random one.
  // kFailedPrecondition once the ephemeral key has been used.
  Status SetEphemeralKeyForTesting(KeyPair ephemeral);

  // The next handshake message carrying `payload` (encrypted where the
  // pattern allows: msg1's payload travels in clear). kFailedPrecondition
  // when it is the peer's turn; kInvalidArgument if the message would exceed
  // 65535 bytes.
  Result<std::vector<uint8_t>> WriteMessage(std::span<const uint8_t> payload = {});
  // Consumes the peer's next message and returns its payload.
  Result<std::vector<uint8_t>> ReadMessage(std::span<const uint8_t> message);

  Role role() const { return role_; }
  // True when the next call is WriteMessage (false once complete or failed).
  bool IsMyTurn() const;
  bool Complete() const { return step_ == 3 && !failed_; }
  bool failed() const { return failed_; }
  // The peer's static public key once received (initiator: after msg2;
  // responder: after msg3), else all zeros.
  bool HasRemoteStatic() const { return has_rs_; }
  PublicKey RemoteStatic() const { return rs_; }
  // h: a unique, both-sides-equal id of this handshake (channel binding).
  // Meaningful once Complete().
  std::array<uint8_t, 32> HandshakeHash() const { return h_; }

  // After Complete(): this side's (send, receive) cipher states. Once only;
  // the handshake's chaining key is wiped. kFailedPrecondition otherwise.
  Result<std::pair<CipherState, CipherState>> SplitCipherStates();
  // After Complete(): the transport record layer. Once only.
  Result<std::unique_ptr<SecureRecordLayer>> Split(RekeyPolicy policy = {});

 private:
  NoiseHandshake(Role role, const KeyPair& static_key, std::span<const uint8_t> prologue);
  Status Fail(Status st);
  void MixHash(std::span<const uint8_t> data);
  Status MixKey(std::span<const uint8_t> ikm);
  Status MixDh(const KeyPair& local, const PublicKey& remote);
  Status EncryptAndHash(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out);
  Status DecryptAndHash(std::span<const uint8_t> ciphertext, std::vector<uint8_t>& out);
  Status EnsureEphemeral();

  Role role_;
  int step_ = 0;  // messages processed: 0..3
  bool failed_ = false;
  bool split_done_ = false;
  KeyPair s_;
  KeyPair e_;
  PublicKey re_{};
  PublicKey rs_{};
  bool has_rs_ = false;
  SecretDigest ck_;
  std::array<uint8_t, 32> h_{};
  CipherState cs_;
};

// kUnauthenticated (naming both keys in text form) unless the completed or
// in-progress handshake has received `expected` as the peer's static key.
// The client calls this right after reading msg2, before sending msg3.
Status VerifyRemoteStatic(const NoiseHandshake& handshake, const PublicKey& expected);

}  // namespace verdant

// Split() returns a SecureRecordLayer: make it a complete type for every
// includer of this header (secure_channel.h includes this file first).
#include "verdant/transport/secure_channel.h"  // IWYU pragma: export
