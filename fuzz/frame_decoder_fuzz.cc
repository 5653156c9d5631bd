// Fuzzes FrameDecoder (framing.h): arbitrary byte streams, fed in chunks
// whose sizes come from the input itself, with a small frame limit so the
// oversize path is reachable. Checks the decoder's invariants.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "verdant/transport/framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint32_t max_frame = 1 + (uint32_t{data[0]} << 4);  // 1..4081 bytes
  const size_t chunk = 1 + data[1] % 64;
  std::span<const uint8_t> in(data + 2, size - 2);
  verdant::FrameDecoder dec(max_frame);
  size_t total = 0;
  bool failed = false;
  for (size_t off = 0; off < in.size(); off += chunk) {
    auto st = dec.Feed(in.subspan(off, std::min(chunk, in.size() - off)));
    if (!st.ok()) {
      failed = true;
      // Once failed, it stays failed.
      if (dec.Feed(in.subspan(0, std::min<size_t>(1, in.size()))).ok()) std::abort();
      break;
    }
    while (auto f = dec.Next()) {
      if (f->empty() || f->size() > max_frame) std::abort();
      total += f->size() + verdant::kFrameHeaderBytes;
    }
  }
  if (!failed && total > in.size()) std::abort();
  return 0;
}
