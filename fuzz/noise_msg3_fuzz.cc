// Fuzzes the responder's parser of handshake message 3 (-> s, se) after a
// genuine exchange of messages 1 and 2 with fixed keys.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto i = verdant::fuzz::MakeInitiator();
  auto r = verdant::fuzz::MakeResponder();
  auto m1 = i->WriteMessage();
  if (!m1.ok() || !r->ReadMessage(*m1).ok()) std::abort();
  if (!r->WriteMessage().ok()) std::abort();
  auto payload = r->ReadMessage(std::span<const uint8_t>(data, size));
  if (!payload.ok()) return 0;
  if (!r->Complete()) std::abort();
  auto records = r->Split();
  if (!records.ok()) std::abort();
  return 0;
}
