#include "verdant/transport/keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace verdant {

Status InitCrypto() {
  // sodium_init is itself thread-safe and idempotent (returns 1 when already
  // initialised); the static only caches the outcome.
  static const int rc = sodium_init();
  if (rc < 0) return InternalError("libsodium failed to initialise (sodium_init)");
  return OkStatus();
}

namespace {

constexpr std::string_view kPublicPrefix = "vpk1";
constexpr std::string_view kSecretPrefix = "vsk1";
constexpr size_t kChecksumBytes = 4;
constexpr size_t kMaxSecretFileBytes = 4096;
constexpr int kB64 = sodium_base64_VARIANT_URLSAFE_NO_PADDING;

std::array<uint8_t, kChecksumBytes> Checksum(std::string_view prefix, std::span<const uint8_t> body) {
  crypto_generichash_state st;
  std::array<uint8_t, 16> h{};
  crypto_generichash_init(&st, nullptr, 0, h.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size());
  crypto_generichash_update(&st, body.data(), body.size());
  crypto_generichash_final(&st, h.data(), h.size());
  sodium_memzero(&st, sizeof(st));
  std::array<uint8_t, kChecksumBytes> out{};
  std::copy_n(h.begin(), kChecksumBytes, out.begin());
  return out;
}

// prefix + base64url(body | checksum). Wipes its scratch buffers.
std::string EncodeWithChecksum(std::string_view prefix, std::span<const uint8_t, kKeyBytes> body) {
  std::array<uint8_t, kKeyBytes + kChecksumBytes> raw{};
  std::copy(body.begin(), body.end(), raw.begin());
  auto sum = Checksum(prefix, body);
  std::copy(sum.begin(), sum.end(), raw.begin() + kKeyBytes);
  char b64[sodium_base64_ENCODED_LEN(kKeyBytes + kChecksumBytes, kB64)];
  sodium_bin2base64(b64, sizeof(b64), raw.data(), raw.size(), kB64);
  std::string out(prefix);
  out += b64;
  sodium_memzero(raw.data(), raw.size());
  sodium_memzero(b64, sizeof(b64));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Decodes prefix + base64url(32 | 4) into `out`. The message never contains
// the input (it may be a secret).
Status DecodeWithChecksum(std::string_view text, std::string_view prefix, std::string_view what,
                          std::span<uint8_t, kKeyBytes> out) {
  if (text.substr(0, prefix.size()) != prefix) {
    return InvalidArgumentError(std::string(what) + " must start with \"" + std::string(prefix) + "\"");
  }
  text.remove_prefix(prefix.size());
  constexpr size_t kEncodedLen = sodium_base64_ENCODED_LEN(kKeyBytes + kChecksumBytes, kB64) - 1;
  if (text.size() != kEncodedLen) {
    return InvalidArgumentError(std::string(what) + " has " + std::to_string(text.size() + prefix.size()) +
                                " characters, expected " + std::to_string(kEncodedLen + prefix.size()));
  }
  std::array<uint8_t, kKeyBytes + kChecksumBytes> raw{};
  size_t len = 0;
  const char* end = nullptr;
  int rc = sodium_base642bin(raw.data(), raw.size(), text.data(), text.size(), nullptr, &len, &end, kB64);
  if (rc != 0 || len != raw.size() || end != text.data() + text.size()) {
    sodium_memzero(raw.data(), raw.size());
    return InvalidArgumentError(std::string(what) + " is not valid base64url");
  }
  auto sum = Checksum(prefix, std::span<const uint8_t>(raw.data(), kKeyBytes));
  bool ok = sodium_memcmp(sum.data(), raw.data() + kKeyBytes, kChecksumBytes) == 0;
  if (ok) std::copy_n(raw.begin(), kKeyBytes, out.begin());
  sodium_memzero(raw.data(), raw.size());
  if (!ok) return InvalidArgumentError(std::string(what) + " checksum mismatch (mistyped or truncated?)");
  return OkStatus();
}

Status IoError(const std::string& what, const std::filesystem::path& p) {
  int e = errno;
  std::string msg = what + " " + p.string() + ": " + std::strerror(e);
  if (e == EACCES || e == EPERM) return PermissionDeniedError(msg);
  if (e == ENOENT) return NotFoundError(msg);
  if (e == EEXIST) return Status(StatusCode::kAlreadyExists, msg);
  return InternalError(msg);
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Writes `content` to `final_path` via an exclusively created temporary file
// with `mode` set before any byte is written. Without `overwrite`, link(2)
// publishes it only if `final_path` does not exist (atomic); with it,
// rename(2) replaces it atomically.
Status WriteFileAtomically(const std::filesystem::path& final_path, std::span<const uint8_t> content,
                           mode_t mode, bool overwrite) {
  uint8_t rnd[8];
  randombytes_buf(rnd, sizeof(rnd));
  char hex[sizeof(rnd) * 2 + 1];
  sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
  std::string name = ".";
  name += final_path.filename().string();
  name += ".tmp-";
  name += hex;
  std::filesystem::path tmp = final_path.parent_path() / name;
  Status st;
  {
    Fd f;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (f.fd < 0) return IoError("cannot create", tmp);
    // open() applied the umask, which can only remove bits; make the mode exact.
    if (::fchmod(f.fd, mode) != 0) st = IoError("cannot chmod", tmp);
    size_t off = 0;
    while (st.ok() && off < content.size()) {
      ssize_t n = ::write(f.fd, content.data() + off, content.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        st = IoError("cannot write", tmp);
        break;
      }
      off += static_cast<size_t>(n);
    }
    if (st.ok() && ::fsync(f.fd) != 0) st = IoError("cannot fsync", tmp);
  }
  if (st.ok()) {
    if (overwrite) {
      if (::rename(tmp.c_str(), final_path.c_str()) != 0) st = IoError("cannot rename into", final_path);
    } else if (::link(tmp.c_str(), final_path.c_str()) != 0) {
      st = IoError("cannot create", final_path);
    }
  }
  ::unlink(tmp.c_str());  // after rename this is a no-op (ENOENT)
  return st;
}

void SyncDir(const std::filesystem::path& dir) {
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd >= 0) ::fsync(d.fd);
}

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

// ---- KeyPair ------------------------------------------------------------------

KeyPair::~KeyPair() { Wipe(); }

void KeyPair::Wipe() {
  sodium_memzero(secret_.data(), secret_.size());
  valid_ = false;
}

KeyPair::KeyPair(KeyPair&& other) noexcept
    : public_(other.public_), secret_(other.secret_), valid_(other.valid_) {
  other.Wipe();
}

KeyPair& KeyPair::operator=(KeyPair&& other) noexcept {
  if (this != &other) {
    public_ = other.public_;
    secret_ = other.secret_;
    valid_ = other.valid_;
    other.Wipe();
  }
  return *this;
}

Result<KeyPair> KeyPair::FromSecret(std::span<const uint8_t> secret) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  if (secret.size() != kKeyBytes) {
    return InvalidArgumentError("an X25519 secret key is 32 bytes, got " + std::to_string(secret.size()));
  }
  KeyPair kp;
  std::copy(secret.begin(), secret.end(), kp.secret_.begin());
  if (crypto_scalarmult_base(kp.public_.data(), kp.secret_.data()) != 0) {
    return InvalidArgumentError("X25519 secret key yields no public key");
  }
  kp.valid_ = true;
  return kp;
}

KeyPair KeyPair::Clone() const {
  KeyPair kp;
  kp.public_ = public_;
  kp.secret_ = secret_;
  kp.valid_ = valid_;
  return kp;
}

Result<KeyPair> GenerateKeyPair() {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  std::array<uint8_t, kKeyBytes> secret{};
  randombytes_buf(secret.data(), secret.size());
  auto kp = KeyPair::FromSecret(secret);
  sodium_memzero(secret.data(), secret.size());
  return kp;
}

// ---- files --------------------------------------------------------------------

Status SaveKeyPair(const KeyPair& key, const std::filesystem::path& dir, bool overwrite) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  if (!key.valid()) return InvalidArgumentError("cannot save an empty key pair");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return IoError("cannot create directory", dir);
  const auto secret_path = dir / kSecretKeyFileName;
  const auto public_path = dir / kPublicKeyFileName;
  if (!overwrite) {
    struct stat st;
    if (::lstat(secret_path.c_str(), &st) == 0) {
      return Status(StatusCode::kAlreadyExists,
                    secret_path.string() + " already exists; refusing to replace an identity key");
    }
  }
  std::string secret_text = EncodeWithChecksum(kSecretPrefix, key.secret_key()) + "\n";
  Status st = WriteFileAtomically(
      secret_path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(secret_text.data()), secret_text.size()),
      0600, overwrite);
  sodium_memzero(secret_text.data(), secret_text.size());
  VERDANT_RETURN_IF_ERROR(st);
  std::string pub_text = FormatPublicKey(key.public_key()) + "\n";
  VERDANT_RETURN_IF_ERROR(WriteFileAtomically(
      public_path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pub_text.data()), pub_text.size()),
      0644, /*overwrite=*/true));
  SyncDir(dir);
  return OkStatus();
}

Result<KeyPair> LoadKeyPair(const std::filesystem::path& path) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  std::error_code ec;
  std::filesystem::path file = std::filesystem::is_directory(path, ec) ? path / kSecretKeyFileName : path;
  Fd f;
  f.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (f.fd < 0) return IoError("cannot open secret key", file);
  struct stat st;
  if (::fstat(f.fd, &st) != 0) return IoError("cannot stat", file);
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError(file.string() + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return PermissionDeniedError("secret key " + file.string() + " has mode " + mode +
                                 " and is accessible by group or others; run: chmod 600 " + file.string());
  }
  std::array<char, kMaxSecretFileBytes> buf{};
  size_t len = 0;
  while (len < buf.size()) {
    ssize_t n = ::read(f.fd, buf.data() + len, buf.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      sodium_memzero(buf.data(), buf.size());
      return IoError("cannot read", file);
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  std::array<uint8_t, kKeyBytes> secret{};
  Status parsed = len == buf.size()
                      ? DataLossError("secret key file " + file.string() + " is too large")
                      : DecodeWithChecksum(Trim(std::string_view(buf.data(), len)), kSecretPrefix,
                                           "secret key", secret);
  sodium_memzero(buf.data(), buf.size());
  if (!parsed.ok()) return DataLossError(file.string() + ": " + parsed.message());
  auto kp = KeyPair::FromSecret(secret);
  sodium_memzero(secret.data(), secret.size());
  if (!kp.ok()) return kp.status();
  // A verdant.pub beside it must agree (catches mixed-up key directories).
  std::filesystem::path pub = file.parent_path() / kPublicKeyFileName;
  if (file.filename() != kSecretKeyFileName) pub = std::filesystem::path(file).replace_extension(".pub");
  if (std::filesystem::exists(pub, ec)) {
    auto on_disk = LoadPublicKey(pub);
    if (on_disk.ok() && !PublicKeysEqual(*on_disk, kp->public_key())) {
      return FailedPreconditionError(pub.string() + " does not match the public key of " + file.string());
    }
  }
  return kp;
}

std::string FormatPublicKey(const PublicKey& key) {
  InitCrypto().IgnoreError();
  return EncodeWithChecksum(kPublicPrefix, key);
}

Result<PublicKey> ParsePublicKey(std::string_view text) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  text = Trim(text);
  PublicKey key{};
  if (text.size() == 2 * kKeyBytes && IsHex(text)) {
    size_t len = 0;
    if (sodium_hex2bin(key.data(), key.size(), text.data(), text.size(), nullptr, &len, nullptr) != 0 ||
        len != key.size()) {
      return InvalidArgumentError("public key is not valid hex");
    }
    return key;
  }
  VERDANT_RETURN_IF_ERROR(DecodeWithChecksum(text, kPublicPrefix, "public key", key));
  return key;
}

Result<PublicKey> LoadPublicKey(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return NotFoundError("cannot open public key file " + file.string());
  std::string line;
  while (std::getline(in, line)) {
    std::string_view v = line;
    if (auto hash = v.find('#'); hash != std::string_view::npos) v = v.substr(0, hash);
    v = Trim(v);
    if (v.empty()) continue;
    auto key = ParsePublicKey(v);
    if (!key.ok()) return InvalidArgumentError(file.string() + ": " + key.status().message());
    return key;
  }
  return InvalidArgumentError(file.string() + " holds no public key");
}

Result<PublicKey> ParsePublicKeyOrFile(std::string_view text_or_path) {
  auto key = ParsePublicKey(text_or_path);
  if (key.ok()) return key;
  std::error_code ec;
  std::filesystem::path p(Trim(text_or_path));
  if (std::filesystem::is_directory(p, ec)) p /= kPublicKeyFileName;
  if (std::filesystem::exists(p, ec)) return LoadPublicKey(p);
  return InvalidArgumentError("\"" + std::string(Trim(text_or_path)) +
                              "\" is neither a public key (" + key.status().message() + ") nor a key file");
}

bool PublicKeysEqual(const PublicKey& a, const PublicKey& b) {
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string ClientIdFromKey(const PublicKey& key) {
  InitCrypto().IgnoreError();
  static constexpr std::string_view kDomain = "verdant-client-id";
  crypto_generichash_state st;
  std::array<uint8_t, 32> h{};
  crypto_generichash_init(&st, nullptr, 0, h.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kDomain.data()), kDomain.size());
  crypto_generichash_update(&st, key.data(), key.size());
  crypto_generichash_final(&st, h.data(), h.size());
  char hex[17];
  sodium_bin2hex(hex, sizeof(hex), h.data(), 8);
  return std::string(hex);
}

// ---- AllowList ----------------------------------------------------------------

AllowList::AllowList(std::set<PublicKey> keys, std::filesystem::path file)
    : file_(std::move(file)), keys_(std::make_shared<const std::set<PublicKey>>(std::move(keys))) {}

Result<std::set<PublicKey>> AllowList::Parse(std::string_view text, std::string_view source) {
  std::set<PublicKey> keys;
  std::string errors;
  int bad = 0;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    std::string why;
    if (line.find_first_of(" \t") != std::string_view::npos) {
      why = "expected one public key per line";
    } else if (auto key = ParsePublicKey(line); !key.ok()) {
      why = key.status().message();
    } else {
      keys.insert(*key);
      continue;
    }
    if (++bad <= 20) {
      if (!errors.empty()) errors += "; ";
      errors += std::string(source) + ":" + std::to_string(line_no) + ": " + why;
    }
  }
  if (bad > 0) {
    if (bad > 20) errors += "; ... " + std::to_string(bad - 20) + " more";
    return InvalidArgumentError("allow-list has " + std::to_string(bad) + " bad line(s): " + errors);
  }
  return keys;
}

Result<std::unique_ptr<AllowList>> AllowList::Load(const std::filesystem::path& file) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFoundError("cannot open allow-list " + file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  VERDANT_ASSIGN_OR_RETURN(auto keys, Parse(ss.str(), file.string()));
  return std::make_unique<AllowList>(std::move(keys), file);
}

std::shared_ptr<const std::set<PublicKey>> AllowList::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_;
}

bool AllowList::Contains(const PublicKey& key) const {
  auto keys = Snapshot();
  return keys->count(key) > 0;
}

size_t AllowList::size() const { return Snapshot()->size(); }

Status AllowList::Reload() {
  if (file_.empty()) return FailedPreconditionError("allow-list was not loaded from a file");
  auto fresh = Load(file_);
  if (!fresh.ok()) return fresh.status().WithContext("allow-list reload failed, keeping the previous list");
  auto keys = (*fresh)->Snapshot();
  std::lock_guard<std::mutex> lock(mu_);
  keys_ = std::move(keys);
  return OkStatus();
}

}  // namespace verdant
