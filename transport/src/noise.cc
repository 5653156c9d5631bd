#include "verdant/transport/noise.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <algorithm>
#include <limits>
#include <string>

#include "verdant/transport/secure_channel.h"

namespace verdant {

namespace {

constexpr uint64_t kMaxNonce = std::numeric_limits<uint64_t>::max();

void NonceBytes(uint64_t n, uint8_t out[crypto_aead_chacha20poly1305_ietf_NPUBBYTES]) {
  static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
  std::fill_n(out, 4, 0);
  for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<uint8_t>(n >> (8 * i));
}

bool g_force_libsodium = false;

// OpenSSL's ChaCha20-Poly1305, fetched once; null when unavailable (a
// restricted provider configuration), and then libsodium's is used.
const EVP_CIPHER* OpenSslChaChaPoly() {
  static const EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  return cipher;
}

// EVP_CipherUpdate takes an int length: feed large inputs in pieces.
bool UpdateAll(EVP_CIPHER_CTX* ctx, uint8_t* out, const uint8_t* in, size_t len) {
  constexpr size_t kStep = size_t{1} << 30;
  for (size_t off = 0; off < len;) {
    const size_t step = std::min(kStep, len - off);
    int written = 0;
    if (EVP_CipherUpdate(ctx, out == nullptr ? nullptr : out + off, &written, in + off, static_cast<int>(step)) != 1) {
      return false;
    }
    off += step;
  }
  return true;
}

// One ChaCha20-Poly1305 operation on `ctx` (OpenSSL): encrypts `len` bytes of
// `in` to `out` and writes the tag to `tag`, or decrypts and checks `tag`.
// `out` may equal `in`. False on an OpenSSL error or a failed check.
bool OpenSslAead(EVP_CIPHER_CTX* ctx, bool encrypt, const uint8_t* key, const uint8_t* nonce,
                 std::span<const uint8_t> ad, const uint8_t* in, size_t len, uint8_t* out, uint8_t* tag) {
  if (EVP_CipherInit_ex2(ctx, OpenSslChaChaPoly(), key, nonce, encrypt ? 1 : 0, nullptr) != 1) return false;
  if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, kNoiseTagBytes, tag) != 1) return false;
  if (!ad.empty() && !UpdateAll(ctx, nullptr, ad.data(), ad.size())) return false;
  if (len > 0 && !UpdateAll(ctx, out, in, len)) return false;
  uint8_t final_block[32];
  int written = 0;
  if (EVP_CipherFinal_ex(ctx, final_block, &written) != 1) return false;
  return !encrypt || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kNoiseTagBytes, tag) == 1;
}

}  // namespace

namespace internal {
void ForceLibsodiumAead(bool force) { g_force_libsodium = force; }
bool OpenSslAeadAvailable() { return OpenSslChaChaPoly() != nullptr; }
}  // namespace internal

// ---- CipherState --------------------------------------------------------------

CipherState::~CipherState() { Wipe(); }

void CipherState::Wipe() {
  sodium_memzero(k_.data(), k_.size());
  has_key_ = false;
  n_ = 0;
  EVP_CIPHER_CTX_free(ctx_);  // OpenSSL clears the key material it held
  ctx_ = nullptr;
}

CipherState::CipherState(CipherState&& other) noexcept : k_(other.k_), has_key_(other.has_key_), n_(other.n_) {
  other.Wipe();
}

CipherState& CipherState::operator=(CipherState&& other) noexcept {
  if (this != &other) {
    Wipe();
    k_ = other.k_;
    has_key_ = other.has_key_;
    n_ = other.n_;
    other.Wipe();
  }
  return *this;
}

// The AEAD itself: OpenSSL's when available (OpenSslContext() not null),
// libsodium's otherwise.
evp_cipher_ctx_st* CipherState::OpenSslContext() {
  if (g_force_libsodium || OpenSslChaChaPoly() == nullptr) return nullptr;
  if (ctx_ == nullptr) ctx_ = EVP_CIPHER_CTX_new();
  return ctx_;
}

bool CipherState::Seal(const uint8_t* nonce, std::span<const uint8_t> ad, std::span<const uint8_t> plaintext,
                       uint8_t* out) {
  if (EVP_CIPHER_CTX* ctx = OpenSslContext()) {
    return OpenSslAead(ctx, true, k_.data(), nonce, ad, plaintext.data(), plaintext.size(), out,
                       out + plaintext.size());
  }
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(out, out + plaintext.size(), nullptr, plaintext.data(),
                                                     plaintext.size(), ad.data(), ad.size(), nullptr, nonce,
                                                     k_.data());
  return true;
}

bool CipherState::Open(const uint8_t* nonce, std::span<const uint8_t> ad, std::span<const uint8_t> ciphertext,
                       const uint8_t* tag, uint8_t* out) {
  bool ok;
  if (EVP_CIPHER_CTX* ctx = OpenSslContext()) {
    // OpenSSL decrypts before it checks the tag: copy the tag first (it may
    // sit right after `out`), and clear `out` when the check fails.
    uint8_t expected[kNoiseTagBytes];
    std::copy_n(tag, kNoiseTagBytes, expected);
    ok = OpenSslAead(ctx, false, k_.data(), nonce, ad, ciphertext.data(), ciphertext.size(), out, expected);
  } else {
    ok = crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, nullptr, ciphertext.data(), ciphertext.size(), tag,
                                                            ad.data(), ad.size(), nonce, k_.data()) == 0;
  }
  if (!ok && !ciphertext.empty()) sodium_memzero(out, ciphertext.size());
  return ok;
}

void CipherState::InitializeKey(std::span<const uint8_t, 32> key) {
  std::copy(key.begin(), key.end(), k_.begin());
  has_key_ = true;
  n_ = 0;
}

Status CipherState::EncryptWithAd(std::span<const uint8_t> ad, std::span<const uint8_t> plaintext, uint8_t* out) {
  if (!has_key_) {
    if (out != plaintext.data()) std::copy(plaintext.begin(), plaintext.end(), out);
    return OkStatus();
  }
  if (n_ == kMaxNonce) return ResourceExhaustedError("cipher nonce space exhausted");
  uint8_t nonce[12];
  NonceBytes(n_, nonce);
  if (!Seal(nonce, ad, plaintext, out)) return InternalError("ChaCha20-Poly1305 encryption failed");
  ++n_;
  return OkStatus();
}

Status CipherState::DecryptWithAd(std::span<const uint8_t> ad, std::span<const uint8_t> ciphertext, uint8_t* out) {
  if (!has_key_) {
    if (out != ciphertext.data()) std::copy(ciphertext.begin(), ciphertext.end(), out);
    return OkStatus();
  }
  if (ciphertext.size() < kNoiseTagBytes) {
    return DataLossError("ciphertext of " + std::to_string(ciphertext.size()) + " bytes is shorter than its tag");
  }
  if (n_ == kMaxNonce) return ResourceExhaustedError("cipher nonce space exhausted");
  uint8_t nonce[12];
  NonceBytes(n_, nonce);
  const size_t len = ciphertext.size() - kNoiseTagBytes;
  if (!Open(nonce, ad, ciphertext.first(len), ciphertext.data() + len, out)) {
    return DataLossError("authentication failed");
  }
  ++n_;
  return OkStatus();
}

void CipherState::Rekey() {
  uint8_t nonce[12];
  NonceBytes(kMaxNonce, nonce);
  std::array<uint8_t, 32 + kNoiseTagBytes> buf{};  // ENCRYPT(k, maxnonce, zerolen, zeros)
  if (!Seal(nonce, {}, std::span<const uint8_t>(buf.data(), 32), buf.data())) {
    // Cannot happen short of memory exhaustion inside OpenSSL; libsodium's
    // AEAD cannot fail. Rekey must not silently keep the old key.
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf.data(), buf.data() + 32, nullptr, buf.data(), 32,
                                                       nullptr, 0, nullptr, nonce, k_.data());
  }
  std::copy_n(buf.begin(), 32, k_.begin());
  sodium_memzero(buf.data(), buf.size());
}

// ---- NoiseHandshake -----------------------------------------------------------

NoiseHandshake::NoiseHandshake(Role role, const KeyPair& static_key, std::span<const uint8_t> prologue)
    : role_(role), s_(static_key.Clone()) {
  // InitializeSymmetric: the name is exactly HASHLEN (32) bytes, so h = name.
  static_assert(kNoiseProtocolName.size() == 32);
  std::copy(kNoiseProtocolName.begin(), kNoiseProtocolName.end(), h_.begin());
  std::copy(h_.begin(), h_.end(), ck_.data());
  MixHash(prologue);
}

NoiseHandshake::~NoiseHandshake() {
  sodium_memzero(h_.data(), h_.size());
}

Result<std::unique_ptr<NoiseHandshake>> NoiseHandshake::Initiator(const KeyPair& static_key,
                                                                   std::span<const uint8_t> prologue) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  if (!static_key.valid()) return InvalidArgumentError("Noise initiator needs a static key pair");
  return std::unique_ptr<NoiseHandshake>(new NoiseHandshake(Role::kInitiator, static_key, prologue));
}

Result<std::unique_ptr<NoiseHandshake>> NoiseHandshake::Responder(const KeyPair& static_key,
                                                                   std::span<const uint8_t> prologue) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  if (!static_key.valid()) return InvalidArgumentError("Noise responder needs a static key pair");
  return std::unique_ptr<NoiseHandshake>(new NoiseHandshake(Role::kResponder, static_key, prologue));
}

Status NoiseHandshake::SetEphemeralKeyForTesting(KeyPair ephemeral) {
  if (e_.valid() || step_ > 0 || failed_) {
    return FailedPreconditionError("the ephemeral key can only be set before it is used");
  }
  if (!ephemeral.valid()) return InvalidArgumentError("empty ephemeral key pair");
  e_ = std::move(ephemeral);
  return OkStatus();
}

bool NoiseHandshake::IsMyTurn() const {
  if (failed_ || step_ >= 3) return false;
  // Initiator writes messages 0 and 2; the responder writes message 1.
  return (step_ % 2 == 0) == (role_ == Role::kInitiator);
}

Status NoiseHandshake::Fail(Status st) {
  failed_ = true;
  s_ = KeyPair();
  e_ = KeyPair();
  ck_ = SecretDigest();
  cs_ = CipherState();
  return st;
}

void NoiseHandshake::MixHash(std::span<const uint8_t> data) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, h_.data(), h_.size());
  crypto_hash_sha256_update(&st, data.data(), data.size());
  crypto_hash_sha256_final(&st, h_.data());
}

Status NoiseHandshake::MixKey(std::span<const uint8_t> ikm) {
  std::array<uint8_t, 64> out{};
  Status st = Hkdf(ck_.span(), ikm, {}, out);
  if (st.ok()) {
    std::copy_n(out.begin(), 32, ck_.data());
    cs_.InitializeKey(std::span<const uint8_t, 32>(out.data() + 32, 32));
  }
  sodium_memzero(out.data(), out.size());
  return st;
}

Status NoiseHandshake::MixDh(const KeyPair& local, const PublicKey& remote) {
  std::array<uint8_t, kNoiseDhBytes> shared{};
  // libsodium refuses (returns -1) when the result is all zeros: the peer sent
  // a low-order point, which would make the exchange contribute nothing.
  if (crypto_scalarmult(shared.data(), local.secret_key().data(), remote.data()) != 0) {
    sodium_memzero(shared.data(), shared.size());
    return UnauthenticatedError("peer sent a low-order X25519 public key");
  }
  Status st = MixKey(shared);
  sodium_memzero(shared.data(), shared.size());
  return st;
}

Status NoiseHandshake::EncryptAndHash(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + plaintext.size() + (cs_.HasKey() ? kNoiseTagBytes : 0));
  VERDANT_RETURN_IF_ERROR(cs_.EncryptWithAd(h_, plaintext, out.data() + at));
  MixHash(std::span<const uint8_t>(out.data() + at, out.size() - at));
  return OkStatus();
}

Status NoiseHandshake::DecryptAndHash(std::span<const uint8_t> ciphertext, std::vector<uint8_t>& out) {
  const bool keyed = cs_.HasKey();
  if (keyed && ciphertext.size() < kNoiseTagBytes) return DataLossError("handshake message truncated");
  out.resize(ciphertext.size() - (keyed ? kNoiseTagBytes : 0));
  Status st = cs_.DecryptWithAd(h_, ciphertext, out.data());
  if (!st.ok()) {
    return st.code() == StatusCode::kDataLoss ? UnauthenticatedError("handshake message failed authentication")
                                              : st;
  }
  MixHash(ciphertext);
  return OkStatus();
}

Status NoiseHandshake::EnsureEphemeral() {
  if (e_.valid()) return OkStatus();
  VERDANT_ASSIGN_OR_RETURN(e_, GenerateKeyPair());
  return OkStatus();
}

Result<std::vector<uint8_t>> NoiseHandshake::WriteMessage(std::span<const uint8_t> payload) {
  if (failed_) return FailedPreconditionError("handshake already failed");
  if (!IsMyTurn()) return FailedPreconditionError("not this side's turn to write a handshake message");
  const size_t overhead = step_ == 0 ? kNoiseDhBytes
                          : step_ == 1 ? kNoiseDhBytes + kNoiseDhBytes + 2 * kNoiseTagBytes
                                       : kNoiseDhBytes + 2 * kNoiseTagBytes;
  if (payload.size() > kNoiseMaxMessageBytes - overhead) {
    return InvalidArgumentError("handshake payload of " + std::to_string(payload.size()) + " bytes is too large");
  }
  std::vector<uint8_t> msg;
  msg.reserve(overhead + payload.size());
  Status st;
  auto fail = [&](Status s) -> Result<std::vector<uint8_t>> { return Fail(std::move(s)); };
  switch (step_) {
    case 0:  // -> e
      if (st = EnsureEphemeral(); !st.ok()) return fail(st);
      msg.insert(msg.end(), e_.public_key().begin(), e_.public_key().end());
      MixHash(e_.public_key());
      break;
    case 1:  // <- e, ee, s, es
      if (st = EnsureEphemeral(); !st.ok()) return fail(st);
      msg.insert(msg.end(), e_.public_key().begin(), e_.public_key().end());
      MixHash(e_.public_key());
      if (st = MixDh(e_, re_); !st.ok()) return fail(st);
      if (st = EncryptAndHash(s_.public_key(), msg); !st.ok()) return fail(st);
      if (st = MixDh(s_, re_); !st.ok()) return fail(st);  // es (responder: DH(s, re))
      break;
    case 2:  // -> s, se
      if (st = EncryptAndHash(s_.public_key(), msg); !st.ok()) return fail(st);
      if (st = MixDh(s_, re_); !st.ok()) return fail(st);  // se (initiator: DH(s, re))
      break;
  }
  if (st = EncryptAndHash(payload, msg); !st.ok()) return fail(st);
  ++step_;
  if (step_ == 3) e_ = KeyPair();
  return msg;
}

Result<std::vector<uint8_t>> NoiseHandshake::ReadMessage(std::span<const uint8_t> message) {
  if (failed_) return FailedPreconditionError("handshake already failed");
  if (step_ >= 3 || IsMyTurn()) {
    return Fail(FailedPreconditionError("unexpected handshake message (not the peer's turn)"));
  }
  if (message.size() > kNoiseMaxMessageBytes) {
    return Fail(DataLossError("handshake message of " + std::to_string(message.size()) +
                              " bytes exceeds the Noise limit of 65535"));
  }
  const size_t min_size = step_ == 0 ? kNoiseDhBytes
                          : step_ == 1 ? kNoiseDhBytes + kNoiseDhBytes + 2 * kNoiseTagBytes
                                       : kNoiseDhBytes + 2 * kNoiseTagBytes;
  if (message.size() < min_size) {
    return Fail(DataLossError("handshake message " + std::to_string(step_ + 1) + " truncated: " +
                              std::to_string(message.size()) + " bytes, need at least " +
                              std::to_string(min_size)));
  }
  std::span<const uint8_t> rest = message;
  std::vector<uint8_t> scratch;
  Status st;
  auto fail = [&](Status s) -> Result<std::vector<uint8_t>> { return Fail(std::move(s)); };
  switch (step_) {
    case 0:  // -> e   (responder reads)
      std::copy_n(rest.begin(), kNoiseDhBytes, re_.begin());
      MixHash(re_);
      rest = rest.subspan(kNoiseDhBytes);
      break;
    case 1:  // <- e, ee, s, es   (initiator reads)
      std::copy_n(rest.begin(), kNoiseDhBytes, re_.begin());
      MixHash(re_);
      rest = rest.subspan(kNoiseDhBytes);
      if (st = MixDh(e_, re_); !st.ok()) return fail(st);
      if (st = DecryptAndHash(rest.first(kNoiseDhBytes + kNoiseTagBytes), scratch); !st.ok()) return fail(st);
      std::copy_n(scratch.begin(), kNoiseDhBytes, rs_.begin());
      has_rs_ = true;
      rest = rest.subspan(kNoiseDhBytes + kNoiseTagBytes);
      if (st = MixDh(e_, rs_); !st.ok()) return fail(st);  // es (initiator: DH(e, rs))
      break;
    case 2:  // -> s, se   (responder reads)
      if (st = DecryptAndHash(rest.first(kNoiseDhBytes + kNoiseTagBytes), scratch); !st.ok()) return fail(st);
      std::copy_n(scratch.begin(), kNoiseDhBytes, rs_.begin());
      has_rs_ = true;
      rest = rest.subspan(kNoiseDhBytes + kNoiseTagBytes);
      if (st = MixDh(e_, rs_); !st.ok()) return fail(st);  // se (responder: DH(e, rs))
      break;
  }
  std::vector<uint8_t> payload;
  if (st = DecryptAndHash(rest, payload); !st.ok()) return fail(st);
  ++step_;
  if (step_ == 3) e_ = KeyPair();
  return payload;
}

Result<std::pair<CipherState, CipherState>> NoiseHandshake::SplitCipherStates() {
  if (!Complete()) return FailedPreconditionError("handshake is not complete");
  if (split_done_) return FailedPreconditionError("handshake already split");
  std::array<uint8_t, 64> out{};
  VERDANT_RETURN_IF_ERROR(Hkdf(ck_.span(), {}, {}, out));
  CipherState c1, c2;
  c1.InitializeKey(std::span<const uint8_t, 32>(out.data(), 32));
  c2.InitializeKey(std::span<const uint8_t, 32>(out.data() + 32, 32));
  sodium_memzero(out.data(), out.size());
  split_done_ = true;
  ck_ = SecretDigest();
  cs_ = CipherState();
  s_ = KeyPair();
  // c1 protects initiator -> responder, c2 the other way.
  if (role_ == Role::kInitiator) return std::make_pair(std::move(c1), std::move(c2));
  return std::make_pair(std::move(c2), std::move(c1));
}

Result<std::unique_ptr<SecureRecordLayer>> NoiseHandshake::Split(RekeyPolicy policy) {
  VERDANT_ASSIGN_OR_RETURN(auto ciphers, SplitCipherStates());
  return std::make_unique<SecureRecordLayer>(std::move(ciphers.first), std::move(ciphers.second), policy);
}

Status VerifyRemoteStatic(const NoiseHandshake& handshake, const PublicKey& expected) {
  if (!handshake.HasRemoteStatic()) {
    return FailedPreconditionError("the peer's static key has not been received yet");
  }
  PublicKey got = handshake.RemoteStatic();
  if (!PublicKeysEqual(got, expected)) {
    return UnauthenticatedError("peer key mismatch: expected " + FormatPublicKey(expected) + ", got " +
                                FormatPublicKey(got) + " (wrong server, or its key changed)");
  }
  return OkStatus();
}

}  // namespace verdant
