#include <doctest/doctest.h>

#include <sodium.h>

#include <algorithm>
#include <string>
#include <vector>

#include "verdant/transport/hkdf.h"

using namespace verdant;

namespace {

std::string ToHex(std::span<const uint8_t> b) {
  std::string s(b.size() * 2 + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), b.data(), b.size());
  s.pop_back();
  return s;
}

std::vector<uint8_t> Range(int from, int to) {  // [from, to)
  std::vector<uint8_t> v;
  for (int i = from; i < to; ++i) v.push_back(static_cast<uint8_t>(i));
  return v;
}

struct Rfc5869Case {
  const char* name;
  std::vector<uint8_t> ikm, salt, info;
  size_t length;
  const char* prk;
  const char* okm;
};

}  // namespace

TEST_CASE("HMAC-SHA256 matches RFC 4231 test case 2") {
  const std::string key = "Jefe", data = "what do ya want for nothing?";
  std::array<uint8_t, 32> mac{};
  HmacSha256(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(key.data()), key.size()),
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()), mac);
  CHECK(ToHex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

// RFC 5869 Appendix A, test cases 1-3 (HKDF-SHA256).
TEST_CASE("HKDF matches the RFC 5869 SHA-256 test vectors") {
  const std::vector<Rfc5869Case> cases = {
      {"A.1 basic", std::vector<uint8_t>(22, 0x0b), Range(0x00, 0x0d), Range(0xf0, 0xfa), 42,
       "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {"A.2 long inputs", Range(0x00, 0x50), Range(0x60, 0xb0), Range(0xb0, 0x100), 82,
       "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {"A.3 empty salt and info", std::vector<uint8_t>(22, 0x0b), {}, {}, 42,
       "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    SecretDigest prk = HkdfExtract(c.salt, c.ikm);
    CHECK(ToHex(prk.span()) == c.prk);
    std::vector<uint8_t> okm(c.length);
    REQUIRE(HkdfExpand(prk.span(), c.info, okm).ok());
    CHECK(ToHex(okm) == c.okm);
    std::vector<uint8_t> okm2(c.length);
    REQUIRE(Hkdf(c.salt, c.ikm, c.info, okm2).ok());
    CHECK(okm2 == okm);
    // A shorter output is a prefix of the longer one.
    std::vector<uint8_t> shorter(7);
    REQUIRE(Hkdf(c.salt, c.ikm, c.info, shorter).ok());
    CHECK(std::equal(shorter.begin(), shorter.end(), okm.begin()));
  }
}

TEST_CASE("HKDF rejects impossible output lengths and short PRKs") {
  std::vector<uint8_t> ikm(16, 1);
  std::vector<uint8_t> empty;
  CHECK(Hkdf({}, ikm, {}, empty).code() == StatusCode::kInvalidArgument);
  std::vector<uint8_t> too_long(kHkdfMaxOutputBytes + 1);
  CHECK(Hkdf({}, ikm, {}, too_long).code() == StatusCode::kInvalidArgument);
  std::vector<uint8_t> max_len(kHkdfMaxOutputBytes);
  CHECK(Hkdf({}, ikm, {}, max_len).ok());
  std::vector<uint8_t> short_prk(16, 2), out(32);
  CHECK(HkdfExpand(short_prk, {}, out).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("SecretDigest wipes its source when moved") {
  SecretDigest a = HkdfExtract({}, std::vector<uint8_t>(8, 3));
  std::array<uint8_t, 32> before{};
  std::copy_n(a.data(), 32, before.begin());
  SecretDigest b = std::move(a);
  CHECK(std::equal(before.begin(), before.end(), b.data()));
  CHECK(std::all_of(a.data(), a.data() + 32, [](uint8_t x) { return x == 0; }));  // NOLINT(bugprone-use-after-move)
}
