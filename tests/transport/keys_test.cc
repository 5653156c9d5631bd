#include <doctest/doctest.h>

#include <algorithm>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "verdant/testing/temp_dir.h"
#include "verdant/transport/keys.h"

using namespace verdant;
using verdant::testing::ReadFile;
using verdant::testing::TempDir;
using verdant::testing::WriteFile;

namespace {

unsigned Mode(const std::filesystem::path& p) {
  struct stat st;
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

KeyPair NewKey() {
  auto kp = GenerateKeyPair();
  REQUIRE(kp.ok());
  return std::move(*kp);
}

}  // namespace

TEST_CASE("InitCrypto is idempotent and key pairs derive their public key") {
  CHECK(InitCrypto().ok());
  CHECK(InitCrypto().ok());
  KeyPair a = NewKey(), b = NewKey();
  CHECK(a.valid());
  CHECK(a.public_key() != b.public_key());
  auto again = KeyPair::FromSecret(a.secret_key());
  REQUIRE(again.ok());
  CHECK(again->public_key() == a.public_key());
  KeyPair c = a.Clone();
  CHECK(c.public_key() == a.public_key());
  KeyPair d = std::move(c);
  CHECK(d.valid());
  CHECK_FALSE(c.valid());  // NOLINT(bugprone-use-after-move): moved-from is wiped
  CHECK(std::all_of(c.secret_key().begin(), c.secret_key().end(), [](uint8_t x) { return x == 0; }));
  CHECK(KeyPair::FromSecret(std::vector<uint8_t>(31)).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("key files: saved owner-only, loaded back, never silently replaced") {
  TempDir tmp;
  const auto dir = tmp.path() / "keys";
  KeyPair kp = NewKey();
  // Even with a permissive umask the secret is 0600.
  mode_t old = ::umask(0);
  Status saved = SaveKeyPair(kp, dir);
  ::umask(old);
  REQUIRE(saved.ok());
  CHECK(Mode(dir) == 0700);
  CHECK(Mode(dir / "verdant.key") == 0600);
  CHECK(Mode(dir / "verdant.pub") == 0644);
  CHECK(ReadFile(dir / "verdant.pub") == FormatPublicKey(kp.public_key()) + "\n");
  CHECK(ReadFile(dir / "verdant.key").rfind("vsk1", 0) == 0);
  // No temporary files left behind.
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) entries += e.is_regular_file();
  CHECK(entries == 2);

  for (auto path : {dir, dir / "verdant.key"}) {
    auto loaded = LoadKeyPair(path);
    REQUIRE(loaded.ok());
    CHECK(loaded->public_key() == kp.public_key());
    CHECK(std::equal(loaded->secret_key().begin(), loaded->secret_key().end(), kp.secret_key().begin()));
  }
  auto pub = LoadPublicKey(dir / "verdant.pub");
  REQUIRE(pub.ok());
  CHECK(*pub == kp.public_key());
  auto via_dir = ParsePublicKeyOrFile(dir.string());
  REQUIRE(via_dir.ok());
  CHECK(*via_dir == kp.public_key());

  KeyPair other = NewKey();
  CHECK(SaveKeyPair(other, dir).code() == StatusCode::kAlreadyExists);
  CHECK(LoadKeyPair(dir)->public_key() == kp.public_key());
  REQUIRE(SaveKeyPair(other, dir, /*overwrite=*/true).ok());
  CHECK(Mode(dir / "verdant.key") == 0600);
  CHECK(LoadKeyPair(dir)->public_key() == other.public_key());
}

TEST_CASE("a secret key readable by group or others is refused with the fix") {
  TempDir tmp;
  REQUIRE(SaveKeyPair(NewKey(), tmp.path()).ok());
  const auto key = tmp.path() / "verdant.key";
  for (unsigned mode : {0644u, 0640u, 0604u, 0660u}) {
    CAPTURE(mode);
    REQUIRE(::chmod(key.c_str(), mode) == 0);
    auto loaded = LoadKeyPair(tmp.path());
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.status().code() == StatusCode::kPermissionDenied);
    CHECK(loaded.status().message().find("chmod 600") != std::string::npos);
  }
  REQUIRE(::chmod(key.c_str(), 0400) == 0);
  CHECK(LoadKeyPair(tmp.path()).ok());
}

TEST_CASE("broken key files are reported, not trusted") {
  TempDir tmp;
  KeyPair kp = NewKey();
  REQUIRE(SaveKeyPair(kp, tmp.path()).ok());
  const auto key = tmp.path() / "verdant.key";
  CHECK(LoadKeyPair(tmp.path() / "missing").status().code() == StatusCode::kNotFound);

  std::string text = ReadFile(key);
  std::string flipped = text;
  flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
  WriteFile(key, flipped);
  REQUIRE(::chmod(key.c_str(), 0600) == 0);
  CHECK(LoadKeyPair(tmp.path()).status().code() == StatusCode::kDataLoss);
  WriteFile(key, "not a key\n");
  CHECK(LoadKeyPair(tmp.path()).status().code() == StatusCode::kDataLoss);

  // A verdant.pub that does not belong to the secret key.
  WriteFile(key, text);
  WriteFile(tmp.path() / "verdant.pub", FormatPublicKey(NewKey().public_key()) + "\n");
  CHECK(LoadKeyPair(tmp.path()).status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("public key text form: round trip, checksum, hex") {
  KeyPair kp = NewKey();
  std::string text = FormatPublicKey(kp.public_key());
  CHECK(text.size() == 52);
  CHECK(text.rfind("vpk1", 0) == 0);
  CHECK(text.find_first_of("+/= \n") == std::string::npos);
  auto parsed = ParsePublicKey("  " + text + "\n");
  REQUIRE(parsed.ok());
  CHECK(*parsed == kp.public_key());
  // Any single-character typo is caught.
  for (size_t pos = 4; pos < text.size(); ++pos) {
    std::string typo = text;
    typo[pos] = typo[pos] == 'x' ? 'y' : 'x';
    CHECK_FALSE(ParsePublicKey(typo).ok());
  }
  CHECK(ParsePublicKey(text.substr(0, 51)).status().code() == StatusCode::kInvalidArgument);
  CHECK(ParsePublicKey("vsk1" + text.substr(4)).status().message().find("vpk1") != std::string::npos);
  std::string hex;
  for (uint8_t b : kp.public_key()) {
    char h[3];
    std::snprintf(h, sizeof(h), "%02x", b);
    hex += h;
  }
  auto from_hex = ParsePublicKey(hex);
  REQUIRE(from_hex.ok());
  CHECK(*from_hex == kp.public_key());
  CHECK(PublicKeysEqual(*from_hex, kp.public_key()));
  CHECK_FALSE(PublicKeysEqual(*from_hex, NewKey().public_key()));
}

TEST_CASE("client ids are short, stable and distinct") {
  KeyPair a = NewKey(), b = NewKey();
  std::string id = ClientIdFromKey(a.public_key());
  CHECK(id.size() == 16);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(ClientIdFromKey(a.public_key()) == id);
  CHECK(ClientIdFromKey(b.public_key()) != id);
  PublicKey zero{};
  CHECK(ClientIdFromKey(zero) == ClientIdFromKey(zero));
}

TEST_CASE("allow-list: comments, blanks and bad lines by number") {
  TempDir tmp;
  KeyPair a = NewKey(), b = NewKey(), c = NewKey();
  const auto file = tmp.path() / "clients.allow";
  WriteFile(file, "# hospital sites\n\n" + FormatPublicKey(a.public_key()) + "   # site A\n  " +
                      FormatPublicKey(b.public_key()) + "\n# end\n");
  auto list = AllowList::Load(file);
  REQUIRE(list.ok());
  CHECK((*list)->size() == 2);
  CHECK((*list)->Contains(a.public_key()));
  CHECK((*list)->Contains(b.public_key()));
  CHECK_FALSE((*list)->Contains(c.public_key()));

  WriteFile(file, FormatPublicKey(a.public_key()) + "\nvpk1garbage\n\n" + FormatPublicKey(b.public_key()) +
                      " extra\n# ok\nhello\n");
  auto bad = AllowList::Load(file);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  const std::string msg = bad.status().message();
  CHECK(msg.find("clients.allow:2:") != std::string::npos);
  CHECK(msg.find("clients.allow:4:") != std::string::npos);
  CHECK(msg.find("clients.allow:6:") != std::string::npos);
  CHECK(msg.find("clients.allow:1:") == std::string::npos);
  CAPTURE(msg);
  CHECK(msg.find("3 bad line") != std::string::npos);
  CHECK(AllowList::Load(tmp.path() / "nope").status().code() == StatusCode::kNotFound);
}

TEST_CASE("allow-list reload swaps atomically and keeps the old list on error") {
  TempDir tmp;
  KeyPair a = NewKey(), b = NewKey();
  const auto file = tmp.path() / "clients.allow";
  WriteFile(file, FormatPublicKey(a.public_key()) + "\n");
  auto loaded = AllowList::Load(file);
  REQUIRE(loaded.ok());
  AllowList& list = **loaded;
  CHECK(list.Contains(a.public_key()));
  CHECK_FALSE(list.Contains(b.public_key()));

  WriteFile(file, FormatPublicKey(b.public_key()) + "\n");
  REQUIRE(list.Reload().ok());
  CHECK(list.Contains(b.public_key()));
  CHECK_FALSE(list.Contains(a.public_key()));

  WriteFile(file, FormatPublicKey(a.public_key()) + "\nbroken line\n");
  Status st = list.Reload();
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("keeping the previous list") != std::string::npos);
  CHECK(list.Contains(b.public_key()));  // old list still in force
  CHECK_FALSE(list.Contains(a.public_key()));
  std::filesystem::remove(file);
  CHECK(list.Reload().code() == StatusCode::kNotFound);
  CHECK(list.Contains(b.public_key()));

  // Readers never see a torn list while a writer reloads.
  WriteFile(file, FormatPublicKey(b.public_key()) + "\n");
  std::atomic<bool> stop{false};
  std::atomic<int> misses{0};
  std::thread reader([&] {
    while (!stop.load()) {
      if (!list.Contains(b.public_key())) misses.fetch_add(1);
    }
  });
  for (int k = 0; k < 100; ++k) {
    WriteFile(file, FormatPublicKey(b.public_key()) + "\n" + (k % 2 ? FormatPublicKey(a.public_key()) + "\n" : ""));
    REQUIRE(list.Reload().ok());
  }
  stop = true;
  reader.join();
  CHECK(misses.load() == 0);
  AllowList in_memory(std::set<PublicKey>{a.public_key()});
  CHECK(in_memory.Reload().code() == StatusCode::kFailedPrecondition);
}
