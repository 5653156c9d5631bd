#include <doctest/doctest.h>

#include <algorithm>
#include <sodium.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "verdant/testing/temp_dir.h"
#include "verdant/transport/framing.h"
#include "verdant/transport/noise.h"
#include "verdant/transport/secure_channel.h"

using namespace verdant;

namespace {

KeyPair Fixed(uint8_t fill) {
  std::vector<uint8_t> secret(32, fill);
  auto kp = KeyPair::FromSecret(secret);
  REQUIRE(kp.ok());
  return std::move(*kp);
}

// A completed handshake's cipher states: (initiator send, initiator receive,
// responder send, responder receive). With `deterministic`, fixed static and
// ephemeral keys make every call produce the same keys.
struct Ciphers {
  CipherState i_send, i_recv, r_send, r_recv;
};

Ciphers Handshake(bool deterministic) {
  KeyPair ik = deterministic ? Fixed(1) : *GenerateKeyPair();
  KeyPair rk = deterministic ? Fixed(2) : *GenerateKeyPair();
  auto i = NoiseHandshake::Initiator(ik, AsBytes(kVerdantPrologue));
  auto r = NoiseHandshake::Responder(rk, AsBytes(kVerdantPrologue));
  REQUIRE(i.ok());
  REQUIRE(r.ok());
  if (deterministic) {
    REQUIRE((*i)->SetEphemeralKeyForTesting(Fixed(3)).ok());
    REQUIRE((*r)->SetEphemeralKeyForTesting(Fixed(4)).ok());
  }
  REQUIRE((*r)->ReadMessage(*(*i)->WriteMessage()).ok());
  REQUIRE((*i)->ReadMessage(*(*r)->WriteMessage()).ok());
  REQUIRE((*r)->ReadMessage(*(*i)->WriteMessage()).ok());
  auto a = (*i)->SplitCipherStates();
  auto b = (*r)->SplitCipherStates();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  return {std::move(a->first), std::move(a->second), std::move(b->first), std::move(b->second)};
}

struct Channel {
  std::unique_ptr<SecureRecordLayer> client, server;
};

Channel MakeChannel(RekeyPolicy policy = {}, bool deterministic = false) {
  Ciphers c = Handshake(deterministic);
  return {std::make_unique<SecureRecordLayer>(std::move(c.i_send), std::move(c.i_recv), policy),
          std::make_unique<SecureRecordLayer>(std::move(c.r_send), std::move(c.r_recv), policy)};
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> Sealed(SecureRecordLayer& l, const std::string& s) {
  std::vector<uint8_t> out;
  REQUIRE(l.Seal(Bytes(s), out).ok());
  return out;
}

}  // namespace

TEST_CASE("records round-trip in both directions at many sizes") {
  Channel ch = MakeChannel();
  CHECK(ch.client->Name() == "noise-xx-chachapoly");
  CHECK(ch.client->Overhead() == 16);
  std::mt19937_64 rng(testing::TestSeed(7));
  std::vector<uint8_t> rec, out;
  for (size_t size : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{1000}, size_t{1} << 20}) {
    CAPTURE(size);
    std::vector<uint8_t> msg(size);
    for (auto& b : msg) b = static_cast<uint8_t>(rng());
    REQUIRE(ch.client->Seal(msg, rec).ok());
    CHECK(rec.size() == size + 16);
    REQUIRE(ch.server->Open(rec, out).ok());
    CHECK(out == msg);
    REQUIRE(ch.server->Seal(msg, rec).ok());
    REQUIRE(ch.client->Open(rec, out).ok());
    CHECK(out == msg);
  }
  CHECK(ch.client->records_sealed() == 7);
  CHECK(ch.server->records_opened() == 7);
}

TEST_CASE("a tampered record fails authentication and the layer stays failed") {
  // Flip each byte position in turn (fresh channel each time).
  const auto probe = Sealed(*MakeChannel().client, "a model delta of some length");
  for (size_t pos = 0; pos < probe.size(); ++pos) {
    CAPTURE(pos);
    Channel ch = MakeChannel();
    auto rec = Sealed(*ch.client, "a model delta of some length");
    rec[pos] ^= 0x01;
    std::vector<uint8_t> out;
    Status st = ch.server->Open(rec, out);
    CHECK(st.code() == StatusCode::kDataLoss);
    CHECK(ch.server->failed());
    // Even a genuine record is refused afterwards.
    rec[pos] ^= 0x01;
    CHECK(ch.server->Open(rec, out).code() == StatusCode::kDataLoss);
    CHECK(ch.server->Seal(Bytes("x"), out).code() == StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("a replayed record is rejected") {
  Channel ch = MakeChannel();
  auto r0 = Sealed(*ch.client, "TrainResult chunk 0");
  std::vector<uint8_t> out;
  REQUIRE(ch.server->Open(r0, out).ok());
  Status st = ch.server->Open(r0, out);
  CHECK(st.code() == StatusCode::kDataLoss);
  CHECK(st.message().find("record 1") != std::string::npos);
}

TEST_CASE("reordered or dropped records are rejected") {
  SUBCASE("reorder") {
    Channel ch = MakeChannel();
    auto r0 = Sealed(*ch.client, "first");
    auto r1 = Sealed(*ch.client, "second");
    std::vector<uint8_t> out;
    CHECK(ch.server->Open(r1, out).code() == StatusCode::kDataLoss);
    CHECK(ch.server->Open(r0, out).code() == StatusCode::kDataLoss);  // stays failed
  }
  SUBCASE("drop") {
    Channel ch = MakeChannel();
    Sealed(*ch.client, "lost");
    auto r1 = Sealed(*ch.client, "after the loss");
    std::vector<uint8_t> out;
    CHECK(ch.server->Open(r1, out).code() == StatusCode::kDataLoss);
  }
  SUBCASE("a record from the other direction (reflection)") {
    Channel ch = MakeChannel();
    auto r0 = Sealed(*ch.client, "reflect me");
    std::vector<uint8_t> out;
    CHECK(ch.client->Open(r0, out).code() == StatusCode::kDataLoss);
  }
}

TEST_CASE("truncated records are rejected") {
  for (size_t cut : {size_t{1}, size_t{15}, size_t{16}, size_t{20}}) {
    CAPTURE(cut);
    Channel ch = MakeChannel();
    auto rec = Sealed(*ch.client, "twenty bytes of text");  // 36-byte record
    rec.resize(rec.size() - cut);
    std::vector<uint8_t> out;
    CHECK(ch.server->Open(rec, out).code() == StatusCode::kDataLoss);
  }
  Channel ch = MakeChannel();
  std::vector<uint8_t> out, empty;
  CHECK(ch.server->Open(empty, out).code() == StatusCode::kDataLoss);
}

TEST_CASE("both sides rekey at the same record and keep talking") {
  RekeyPolicy every3{3, 0};
  Channel ch = MakeChannel(every3);
  std::vector<uint8_t> rec, out;
  for (int k = 0; k < 10; ++k) {
    CAPTURE(k);
    auto msg = Bytes("record " + std::to_string(k));
    REQUIRE(ch.client->Seal(msg, rec).ok());
    REQUIRE(ch.server->Open(rec, out).ok());
    CHECK(out == msg);
  }
  CHECK(ch.client->send_rekeys() == 3);
  CHECK(ch.server->receive_rekeys() == 3);
  CHECK(ch.server->send_rekeys() == 0);

  // Byte trigger: 300-byte records with a 1000-byte budget rekey after the 4th.
  RekeyPolicy bytes{0, 1000};
  Channel b = MakeChannel(bytes);
  std::vector<uint8_t> big(300, 9);
  for (int k = 0; k < 9; ++k) {
    REQUIRE(b.server->Seal(big, rec).ok());
    REQUIRE(b.client->Open(rec, out).ok());
  }
  CHECK(b.server->send_rekeys() == 2);
  CHECK(b.client->receive_rekeys() == 2);
}

TEST_CASE("rekey really changes the key: peers with different policies diverge at the boundary") {
  // Identical handshakes (fixed keys) give identical transport keys.
  Channel with = MakeChannel(RekeyPolicy{3, 0}, /*deterministic=*/true);
  Channel without = MakeChannel(RekeyPolicy{0, 0}, /*deterministic=*/true);
  for (int k = 0; k < 5; ++k) {
    auto a = Sealed(*with.client, "same plaintext");
    auto b = Sealed(*without.client, "same plaintext");
    if (k < 3) {
      CHECK(a == b);
    } else {
      CHECK(a != b);  // records 3, 4 are under the rekeyed key
    }
  }
  // A receiver that does not rekey cannot read past the boundary.
  Channel w = MakeChannel(RekeyPolicy{3, 0}, true);
  Channel wo = MakeChannel(RekeyPolicy{0, 0}, true);
  std::vector<uint8_t> out;
  for (int k = 0; k < 3; ++k) REQUIRE(wo.server->Open(Sealed(*w.client, "x"), out).ok());
  CHECK(wo.server->Open(Sealed(*w.client, "x"), out).code() == StatusCode::kDataLoss);
}

TEST_CASE("Noise Rekey follows the spec: k' is the first 32 bytes of ENCRYPT(k, maxnonce, empty, zeros)") {
  std::array<uint8_t, 32> k{};
  for (size_t j = 0; j < k.size(); ++j) k[j] = static_cast<uint8_t>(j);
  CipherState cs;
  cs.InitializeKey(k);
  cs.SetNonce(5);
  cs.Rekey();
  CHECK(cs.nonce() == 5);  // rekey keeps the nonce
  // Expected: libsodium directly.
  uint8_t nonce[12] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  std::array<uint8_t, 48> buf{};
  crypto_aead_chacha20poly1305_ietf_encrypt(buf.data(), nullptr, buf.data(), 32, nullptr, 0, nullptr, nonce,
                                            k.data());
  CipherState expect;
  expect.InitializeKey(std::span<const uint8_t, 32>(buf.data(), 32));
  expect.SetNonce(5);
  std::vector<uint8_t> msg = Bytes("after rekey"), a(msg.size() + 16), b(msg.size() + 16);
  REQUIRE(cs.EncryptWithAd({}, msg, a.data()).ok());
  REQUIRE(expect.EncryptWithAd({}, msg, b.data()).ok());
  CHECK(a == b);
  // Moving wipes the source.
  CipherState moved = std::move(cs);
  CHECK(moved.HasKey());
  CHECK_FALSE(cs.HasKey());  // NOLINT(bugprone-use-after-move)
  // The nonce 2^64-1 is reserved.
  moved.SetNonce(~uint64_t{0});
  CHECK(moved.EncryptWithAd({}, msg, a.data()).code() == StatusCode::kResourceExhausted);
}

// CipherState's AEAD (OpenSSL's, or libsodium's as the fallback) against
// libsodium's crypto_aead_chacha20poly1305_ietf directly, byte for byte, over
// sizes around the 64-byte block and the 16-byte Poly1305 block, with and
// without associated data, out of place and in place; and a failed open
// leaves zeros, not unauthenticated plaintext.
TEST_CASE("CipherState's ChaCha20-Poly1305 matches libsodium's byte for byte, on both code paths") {
  CHECK(internal::OpenSslAeadAvailable());  // the fast path exists on Debian 12
  for (const bool force_libsodium : {false, true}) {
    CAPTURE(force_libsodium);
    internal::ForceLibsodiumAead(force_libsodium);
    std::mt19937_64 rng(force_libsodium ? 7 : 8);
    std::array<uint8_t, 32> k{};
    for (auto& b : k) b = static_cast<uint8_t>(rng());
    for (const size_t len : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{63}, size_t{64}, size_t{65},
                             size_t{1000}, size_t{1} << 20, (size_t{1} << 20) + 3}) {
      for (const size_t ad_len : {size_t{0}, size_t{13}}) {
        CAPTURE(len);
        CAPTURE(ad_len);
        std::vector<uint8_t> pt(len), ad(ad_len);
        for (auto& b : pt) b = static_cast<uint8_t>(rng());
        for (auto& b : ad) b = static_cast<uint8_t>(rng());
        const uint64_t n = rng() >> 1;
        CipherState enc;
        enc.InitializeKey(k);
        enc.SetNonce(n);
        std::vector<uint8_t> got(len + kNoiseTagBytes);
        REQUIRE(enc.EncryptWithAd(ad, pt, got.data()).ok());
        CHECK(enc.nonce() == n + 1);
        uint8_t nonce[12] = {};
        for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<uint8_t>(n >> (8 * i));
        std::vector<uint8_t> want(len + kNoiseTagBytes);
        crypto_aead_chacha20poly1305_ietf_encrypt(want.data(), nullptr, pt.data(), len, ad.data(), ad_len, nullptr,
                                                  nonce, k.data());
        CHECK(got == want);
        // In place gives the same bytes.
        std::vector<uint8_t> inplace = pt;
        inplace.resize(len + kNoiseTagBytes);
        enc.SetNonce(n);
        REQUIRE(enc.EncryptWithAd(ad, std::span<const uint8_t>(inplace.data(), len), inplace.data()).ok());
        CHECK(inplace == want);
        // Open in place round-trips; a flipped bit fails and leaves zeros.
        CipherState dec;
        dec.InitializeKey(k);
        dec.SetNonce(n);
        REQUIRE(dec.DecryptWithAd(ad, inplace, inplace.data()).ok());
        CHECK(std::equal(pt.begin(), pt.end(), inplace.begin()));
        std::vector<uint8_t> bad = want;
        bad[rng() % bad.size()] ^= 0x10;
        dec.SetNonce(n);
        CHECK(dec.DecryptWithAd(ad, bad, bad.data()).code() == StatusCode::kDataLoss);
        CHECK(dec.nonce() == n);
        CHECK(std::all_of(bad.begin(), bad.begin() + static_cast<std::ptrdiff_t>(len), [](uint8_t b) { return b == 0; }));
      }
    }
  }
  internal::ForceLibsodiumAead(false);
}

TEST_CASE("SealFrame writes a whole frame, and in-place seal and open round-trip") {
  Channel ch = MakeChannel();
  std::vector<uint8_t> stream;
  REQUIRE(ch.client->SealFrame(Bytes("one"), stream).ok());
  REQUIRE(ch.client->SealFrame(Bytes("two!"), stream).ok());
  // Over the frame limit: refused before a nonce is spent.
  CHECK(ch.client->SealFrame(std::vector<uint8_t>(100), stream, 64).code() == StatusCode::kInvalidArgument);
  FrameDecoder dec(1 << 20);
  REQUIRE(dec.Feed(stream).ok());
  std::vector<uint8_t> out;
  for (const char* want : {"one", "two!"}) {
    auto f = dec.Next();
    REQUIRE(f.has_value());
    REQUIRE(ch.server->Open(*f, out).ok());
    CHECK(std::string(out.begin(), out.end()) == want);
  }
  std::vector<uint8_t> buf = Bytes("in place payload");
  const size_t n = buf.size();
  buf.resize(n + 16);
  REQUIRE(ch.client->SealInPlace(buf).ok());
  auto len = ch.server->OpenInPlace(buf);
  REQUIRE(len.ok());
  CHECK(*len == n);
  CHECK(std::string(buf.begin(), buf.begin() + n) == "in place payload");
  std::vector<uint8_t> tiny(3);
  CHECK(ch.client->SealInPlace(tiny).code() == StatusCode::kInvalidArgument);
  CHECK(ch.server->OpenInPlace(tiny).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("Seal and Open run concurrently on one layer from two threads") {
  Channel ch = MakeChannel(RekeyPolicy{64, 0});
  constexpr int kRecords = 2000;
  // The server pre-seals records for the client to open while the client seals.
  std::vector<std::vector<uint8_t>> inbound(kRecords);
  for (int k = 0; k < kRecords; ++k) inbound[k] = Sealed(*ch.server, "down " + std::to_string(k));
  std::vector<std::vector<uint8_t>> outbound(kRecords);
  bool open_ok = true, seal_ok = true;
  std::thread opener([&] {
    std::vector<uint8_t> out;
    for (int k = 0; k < kRecords; ++k) {
      if (!ch.client->Open(inbound[k], out).ok() || std::string(out.begin(), out.end()) != "down " + std::to_string(k)) {
        open_ok = false;
        return;
      }
    }
  });
  std::thread sealer([&] {
    for (int k = 0; k < kRecords; ++k) {
      if (!ch.client->Seal(Bytes("up " + std::to_string(k)), outbound[k]).ok()) {
        seal_ok = false;
        return;
      }
    }
  });
  opener.join();
  sealer.join();
  CHECK(open_ok);
  CHECK(seal_ok);
  std::vector<uint8_t> out;
  for (int k = 0; k < kRecords; ++k) REQUIRE(ch.server->Open(outbound[k], out).ok());
  CHECK(ch.client->send_rekeys() == kRecords / 64);
}
