// Fuzzes the responder's parser of handshake message 1 (-> e), then lets it
// answer (message 2: DH with the fuzzed ephemeral, including low-order
// points). Any input must end in a clean Status, never a crash.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = verdant::fuzz::MakeResponder();
  auto payload = r->ReadMessage(std::span<const uint8_t>(data, size));
  if (!payload.ok()) return 0;
  auto m2 = r->WriteMessage();
  (void)m2;
  return 0;
}
