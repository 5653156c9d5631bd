// Fuzzes the initiator's parser of handshake message 2 (<- e, ee, s, es)
// after it sent its (fixed) message 1. The seed is the genuine message 2 of
// the fixed-key handshake, so mutations explore every length and tag check.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto i = verdant::fuzz::MakeInitiator();
  if (!i->WriteMessage().ok()) std::abort();
  auto payload = i->ReadMessage(std::span<const uint8_t>(data, size));
  if (!payload.ok()) {
    if (!i->failed()) std::abort();
    return 0;
  }
  // Accepted: it must be able to continue with message 3.
  if (!i->WriteMessage().ok()) std::abort();
  return 0;
}
