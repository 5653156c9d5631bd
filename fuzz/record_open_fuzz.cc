// Fuzzes SecureRecordLayer::Open on a channel keyed by a fixed handshake:
// the input is a sequence of records, each prefixed by one length byte.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "fuzz_common.h"
#include "verdant/transport/secure_channel.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto i = verdant::fuzz::MakeInitiator();
  auto r = verdant::fuzz::MakeResponder();
  auto m1 = i->WriteMessage();
  if (!m1.ok() || !r->ReadMessage(*m1).ok()) std::abort();
  auto m2 = r->WriteMessage();
  if (!m2.ok() || !i->ReadMessage(*m2).ok()) std::abort();
  auto m3 = i->WriteMessage();
  if (!m3.ok() || !r->ReadMessage(*m3).ok()) std::abort();
  auto layer = r->Split(verdant::RekeyPolicy{2, 0});
  if (!layer.ok()) std::abort();
  std::vector<uint8_t> out;
  size_t off = 0;
  while (off < size) {
    size_t len = std::min<size_t>(data[off], size - off - 1);
    ++off;
    auto st = (*layer)->Open(std::span<const uint8_t>(data + off, len), out);
    off += len;
    if (!st.ok()) {
      if (!(*layer)->failed()) std::abort();
      break;
    }
  }
  return 0;
}
