// fuzz/fuzz_common.h
//
// Deterministic keys and handshake prefixes shared by the fuzz targets and
// the seed generator, so a seed message recorded once stays valid: every
// static and ephemeral key is fixed, hence every handshake message too.
// Thread-safety: single-threaded fuzz drivers only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "verdant/transport/keys.h"
#include "verdant/transport/noise.h"

namespace verdant::fuzz {

inline KeyPair FixedKey(uint8_t fill) {
  std::vector<uint8_t> secret(32, fill);
  auto kp = KeyPair::FromSecret(secret);
  if (!kp.ok()) std::abort();
  return std::move(*kp);
}

inline std::unique_ptr<NoiseHandshake> MakeInitiator() {
  auto hs = NoiseHandshake::Initiator(FixedKey(0x11), AsBytes(kVerdantPrologue));
  if (!hs.ok() || !(*hs)->SetEphemeralKeyForTesting(FixedKey(0x12)).ok()) std::abort();
  return std::move(*hs);
}

inline std::unique_ptr<NoiseHandshake> MakeResponder() {
  auto hs = NoiseHandshake::Responder(FixedKey(0x21), AsBytes(kVerdantPrologue));
  if (!hs.ok() || !(*hs)->SetEphemeralKeyForTesting(FixedKey(0x22)).ok()) std::abort();
  return std::move(*hs);
}

}  // namespace verdant::fuzz
