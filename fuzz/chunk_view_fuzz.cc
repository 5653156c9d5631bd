// Fuzzes ParseChunkView (message.h), the hand-written reader that hands
// Chunk payloads to receivers without a copy: whatever it accepts, protobuf
// must parse to the same stream id, seq and data, and the data must lie
// inside the input.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "verdant/transport/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto view = verdant::ParseChunkView(in);
  if (!view) return 0;
  if (!view->data.empty() && (view->data.data() < data || view->data.data() + view->data.size() > data + size)) {
    std::abort();
  }
  auto env = verdant::ParseEnvelope(in);
  if (!env.ok() || !env->has_chunk()) std::abort();
  const auto& c = env->chunk();
  if (c.stream_id() != view->stream_id || c.seq() != view->seq || c.data().size() != view->data.size() ||
      !std::equal(view->data.begin(), view->data.end(), reinterpret_cast<const uint8_t*>(c.data().data()))) {
    std::abort();
  }
  return 0;
}
