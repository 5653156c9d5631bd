// verdant/transport/keys.h
//
// Long-term identities for the secure channel: X25519 static key pairs, their
// files, a copy-pasteable text form of public keys, the ledger id derived from
// a key, and the coordinator's allow-list of client keys.
//   VERDANT_RETURN_IF_ERROR(InitCrypto());
//   VERDANT_ASSIGN_OR_RETURN(KeyPair kp, GenerateKeyPair());
//   VERDANT_RETURN_IF_ERROR(SaveKeyPair(kp, "/etc/verdant"));   // verdant.key (0600) + verdant.pub
//   std::cout << FormatPublicKey(kp.public_key());              // "vpk1..."
//   VERDANT_ASSIGN_OR_RETURN(KeyPair again, LoadKeyPair("/etc/verdant"));
//   VERDANT_ASSIGN_OR_RETURN(auto allow, AllowList::Load("clients.allow"));
//   if (!allow->Contains(peer)) Reject();  ...  allow->Reload();   // e.g. on SIGHUP
//
// Text forms (docs/security.md): a public key is "vpk1" followed by the
// unpadded base64url encoding of key(32) | checksum(4), 52 characters in all,
// where checksum = BLAKE2b-128("vpk1" | key)[0..4). The secret key file holds
// "vsk1" + base64url(secret(32) | BLAKE2b-128("vsk1" | secret)[0..4)) and a
// newline. ParsePublicKey also accepts 64 hex digits (no checksum).
//
// Thread-safety: free functions are reentrant. KeyPair is an immutable value
// after construction (share it by const reference). AllowList::Contains,
// Reload and size may be called concurrently from any threads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

// Initialises libsodium (sodium_init) once. Safe to call repeatedly and from
// several threads; every function in the secure channel calls it itself.
// kInternal if libsodium cannot initialise (no entropy source).
Status InitCrypto();

inline constexpr size_t kKeyBytes = 32;
using PublicKey = std::array<uint8_t, kKeyBytes>;

inline constexpr std::string_view kSecretKeyFileName = "verdant.key";
inline constexpr std::string_view kPublicKeyFileName = "verdant.pub";

// An X25519 static key pair. The secret is wiped (sodium_memzero) on
// destruction and when moved from. Move-only; Clone() copies explicitly.
class KeyPair {
 public:
  KeyPair() = default;  // empty: valid() == false
  ~KeyPair();
  KeyPair(const KeyPair&) = delete;
  KeyPair& operator=(const KeyPair&) = delete;
  KeyPair(KeyPair&& other) noexcept;
  KeyPair& operator=(KeyPair&& other) noexcept;

  // Derives the public key from a 32-byte secret (X25519 base-point
  // multiplication). kInvalidArgument when `secret` is not 32 bytes.
  static Result<KeyPair> FromSecret(std::span<const uint8_t> secret);
  KeyPair Clone() const;

  bool valid() const { return valid_; }
  const PublicKey& public_key() const { return public_; }
  std::span<const uint8_t, kKeyBytes> secret_key() const {
    return std::span<const uint8_t, kKeyBytes>(secret_);
  }

 private:
  void Wipe();
  PublicKey public_{};
  std::array<uint8_t, kKeyBytes> secret_{};
  bool valid_ = false;
};

// A fresh key pair from the OS CSPRNG. kInternal if libsodium cannot start.
Result<KeyPair> GenerateKeyPair();

// Writes `dir`/verdant.key (the secret, mode 0600, created exclusively: it is
// never readable by group or others, not even briefly) and `dir`/verdant.pub
// (mode 0644, text form + newline). Creates `dir` (mode 0700) if missing.
// kAlreadyExists if verdant.key exists and !overwrite; with overwrite the
// files are replaced atomically (rename). kPermissionDenied / kInternal on
// I/O errors, naming the path.
Status SaveKeyPair(const KeyPair& key, const std::filesystem::path& dir, bool overwrite = false);

// Loads a secret key file, or `path`/verdant.key when `path` is a directory.
// kNotFound when missing; kPermissionDenied when the file is readable or
// writable by group/others (with the chmod that fixes it); kDataLoss when it
// is malformed or its checksum fails; kFailedPrecondition when a sibling
// verdant.pub exists and holds another key.
Result<KeyPair> LoadKeyPair(const std::filesystem::path& path);

// "vpk1" + base64url(key | checksum): 52 characters.
std::string FormatPublicKey(const PublicKey& key);
// Parses the text form (surrounding whitespace ignored) or 64 hex digits.
// kInvalidArgument naming what is wrong (prefix, length, checksum).
Result<PublicKey> ParsePublicKey(std::string_view text);
// Reads a public key file (e.g. the coordinator's verdant.pub): the first
// non-blank, non-comment line. kNotFound / kInvalidArgument.
Result<PublicKey> LoadPublicKey(const std::filesystem::path& file);
// Either a key in text form or the path of a file holding one (for a
// --server-key flag).
Result<PublicKey> ParsePublicKeyOrFile(std::string_view text_or_path);

// Constant-time comparison.
bool PublicKeysEqual(const PublicKey& a, const PublicKey& b);

// The ledger id of a client: the first 16 hex digits (64 bits) of
// BLAKE2b-256("verdant-client-id" | key). Stable across runs and machines.
std::string ClientIdFromKey(const PublicKey& key);

// The coordinator's allow-list: a text file with one public key per line;
// '#' starts a comment (whole line or after the key); blank lines ignored.
class AllowList {
 public:
  // kNotFound when the file is missing; kInvalidArgument listing each bad
  // line as "<file>:<line>: <reason>".
  static Result<std::unique_ptr<AllowList>> Load(const std::filesystem::path& file);
  // Parses allow-list text; `source` names it in errors.
  static Result<std::set<PublicKey>> Parse(std::string_view text, std::string_view source);
  // From keys in memory (tests, the demo). Reload() then fails (no file).
  explicit AllowList(std::set<PublicKey> keys, std::filesystem::path file = {});

  AllowList(const AllowList&) = delete;
  AllowList& operator=(const AllowList&) = delete;

  bool Contains(const PublicKey& key) const;
  size_t size() const;
  const std::filesystem::path& path() const { return file_; }
  // Re-reads the file and swaps the new list in atomically. On any error the
  // old list stays in force and the error is returned.
  Status Reload();

 private:
  std::shared_ptr<const std::set<PublicKey>> Snapshot() const;
  const std::filesystem::path file_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::set<PublicKey>> keys_;  // guarded by mu_
};

}  // namespace verdant
