// Secure channel micro-benchmarks (issue 3):
//   BM_RawAeadSeal/Open   libsodium ChaCha20-Poly1305 (IETF), detached, in
//                         place, on 1 MiB records: the ceiling.
//   BM_RecordSeal/Open    SecureRecordLayer::Seal/Open (RecordLayer API,
//                         copying into the caller's reused buffer).
//   BM_RecordSealFrame    SealFrame: header + ciphertext straight into the
//                         write buffer (the session's zero-extra-copy path).
//   BM_RecordInPlace      SealInPlace + OpenInPlace round trip.
//   BM_XXHandshake        a full Noise XX handshake, both sides, in memory.
// Throughput is reported as bytes_per_second of plaintext.
//   cmake -S . -B /work/build-bench -G Ninja -DVERDANT_BUILD_BENCH=ON -DVERDANT_WITH_TORCH=OFF
//   cmake --build /work/build-bench --target secure_channel_bench
//   /work/build-bench/bench/secure_channel_bench --benchmark_min_time=2
#include <benchmark/benchmark.h>
#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "verdant/transport/noise.h"
#include "verdant/transport/secure_channel.h"

namespace {

using namespace verdant;

constexpr size_t kRecord = size_t{1} << 20;  // 1 MiB, the default chunk size

struct Pair {
  std::unique_ptr<SecureRecordLayer> client, server;
};

Pair MakePair() {
  KeyPair ck = *GenerateKeyPair(), sk = *GenerateKeyPair();
  auto i = std::move(*NoiseHandshake::Initiator(ck, AsBytes(kVerdantPrologue)));
  auto r = std::move(*NoiseHandshake::Responder(sk, AsBytes(kVerdantPrologue)));
  if (!r->ReadMessage(*i->WriteMessage()).ok() || !i->ReadMessage(*r->WriteMessage()).ok() ||
      !r->ReadMessage(*i->WriteMessage()).ok()) {
    std::abort();
  }
  return {std::move(*i->Split()), std::move(*r->Split())};
}

std::vector<uint8_t> Payload(size_t n) {
  std::vector<uint8_t> v(n);
  randombytes_buf(v.data(), v.size());
  return v;
}

void BM_RawAeadSeal(benchmark::State& state) {
  (void)InitCrypto();
  std::vector<uint8_t> buf = Payload(kRecord + 16);
  uint8_t key[32], nonce[12] = {};
  randombytes_buf(key, sizeof(key));
  uint64_t n = 0;
  for (auto _ : state) {
    std::memcpy(nonce + 4, &n, 8);
    ++n;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf.data(), buf.data() + kRecord, nullptr, buf.data(),
                                                       kRecord, nullptr, 0, nullptr, nonce, key);
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord));
}
BENCHMARK(BM_RawAeadSeal);

void BM_RawAeadOpen(benchmark::State& state) {
  (void)InitCrypto();
  std::vector<uint8_t> pt = Payload(kRecord), ct(kRecord + 16), out(kRecord);
  uint8_t key[32], nonce[12] = {};
  randombytes_buf(key, sizeof(key));
  crypto_aead_chacha20poly1305_ietf_encrypt(ct.data(), nullptr, pt.data(), kRecord, nullptr, 0, nullptr, nonce,
                                            key);
  for (auto _ : state) {
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out.data(), nullptr, nullptr, ct.data(), ct.size(), nullptr, 0,
                                                  nonce, key) != 0) {
      state.SkipWithError("decrypt failed");
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord));
}
BENCHMARK(BM_RawAeadOpen);

void BM_RecordSeal(benchmark::State& state) {
  Pair p = MakePair();
  std::vector<uint8_t> msg = Payload(kRecord), rec;
  for (auto _ : state) {
    if (!p.client->Seal(msg, rec).ok()) state.SkipWithError("seal failed");
    benchmark::DoNotOptimize(rec.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord));
}
BENCHMARK(BM_RecordSeal);

void BM_RecordOpen(benchmark::State& state) {
  // Pre-seal a batch, then open it in order (records cannot be replayed).
  constexpr int kBatch = 64;
  Pair p = MakePair();
  std::vector<uint8_t> msg = Payload(kRecord), out;
  std::vector<std::vector<uint8_t>> recs(kBatch);
  int next = kBatch;
  for (auto _ : state) {
    if (next == kBatch) {
      state.PauseTiming();
      for (auto& r : recs) (void)p.client->Seal(msg, r);
      next = 0;
      state.ResumeTiming();
    }
    if (!p.server->Open(recs[next++], out).ok()) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord));
}
BENCHMARK(BM_RecordOpen);

void BM_RecordSealFrame(benchmark::State& state) {
  Pair p = MakePair();
  std::vector<uint8_t> msg = Payload(kRecord), wbuf;
  for (auto _ : state) {
    wbuf.clear();
    if (!p.client->SealFrame(msg, wbuf).ok()) state.SkipWithError("seal failed");
    benchmark::DoNotOptimize(wbuf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord));
}
BENCHMARK(BM_RecordSealFrame);

void BM_RecordInPlace(benchmark::State& state) {
  Pair p = MakePair();
  std::vector<uint8_t> buf = Payload(kRecord + 16);
  for (auto _ : state) {
    if (!p.client->SealInPlace(buf).ok()) state.SkipWithError("seal failed");
    if (!p.server->OpenInPlace(buf).ok()) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(buf.data());
  }
  // Two AEAD passes per iteration: report per-pass bytes.
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRecord * 2));
}
BENCHMARK(BM_RecordInPlace);

void BM_XXHandshake(benchmark::State& state) {
  KeyPair ck = *GenerateKeyPair(), sk = *GenerateKeyPair();
  for (auto _ : state) {
    auto i = std::move(*NoiseHandshake::Initiator(ck, AsBytes(kVerdantPrologue)));
    auto r = std::move(*NoiseHandshake::Responder(sk, AsBytes(kVerdantPrologue)));
    if (!r->ReadMessage(*i->WriteMessage()).ok() || !i->ReadMessage(*r->WriteMessage()).ok() ||
        !VerifyRemoteStatic(*i, sk.public_key()).ok() || !r->ReadMessage(*i->WriteMessage()).ok()) {
      state.SkipWithError("handshake failed");
    }
    auto a = i->Split();
    auto b = r->Split();
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
  }
}
BENCHMARK(BM_XXHandshake)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
