// verdant/transport/message.h
//
// Envelope (de)serialisation and payload chunking for wire protocol v1.
// Models and deltas never travel in one message: a header message carries a
// PayloadInfo and the bytes follow as Chunk envelopes of at most
// `chunk_bytes` each, so no frame limit caps the model size.
//   auto bytes = SerializeEnvelope(env);                 // Result<Bytes>
//   auto env = ParseEnvelope(frame_plaintext);           // kDataLoss on garbage
//   auto chunks = MakeChunks(stream_id, payload, 1 << 20);
//   PayloadAssembler a(info, /*max_payload_bytes=*/1ull << 32);
//   VERDANT_RETURN_IF_ERROR(a.Add(chunk));  if (a.complete()) Use(a.Take());
// Thread-safety: functions are reentrant; a PayloadAssembler is not
// thread-safe (one per stream, on its session's strand).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/wire.pb.h"

namespace verdant {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kDefaultChunkBytes = 1u << 20;  // 1 MiB per Chunk

using ByteBuffer = std::vector<uint8_t>;
using SharedBytes = std::shared_ptr<const ByteBuffer>;

Result<ByteBuffer> SerializeEnvelope(const wire::Envelope& env);
// kDataLoss when the bytes are not an Envelope; kInvalidArgument when the
// envelope carries no known message type (an unknown oneof field).
Result<wire::Envelope> ParseEnvelope(std::span<const uint8_t> bytes);
// Human-readable message type, e.g. "TrainResult" ("unknown" when unset).
std::string_view MessageTypeName(const wire::Envelope& env);

// Splits `payload` into serialised Chunk envelopes (seq 0..n-1). An empty
// payload yields no chunks.
std::vector<SharedBytes> MakeChunkMessages(uint64_t stream_id, std::span<const uint8_t> payload,
                                           uint32_t chunk_bytes = kDefaultChunkBytes);
uint32_t NumChunks(uint64_t payload_bytes, uint32_t chunk_bytes = kDefaultChunkBytes);
// The serialised size of an Envelope holding only Chunk{stream_id, seq, `len`
// bytes of data}, as protobuf (and MakeChunkMessages) writes it.
uint64_t ChunkEnvelopeBytes(uint64_t stream_id, uint32_t seq, uint64_t len);

// A Chunk envelope read in place: `data` points into the bytes given to
// ParseChunkView and is valid only while they are. Receivers of model-sized
// payloads use it to copy each chunk once, into their assembler, instead of
// into a protobuf string first.
struct ChunkView {
  uint64_t stream_id = 0;
  uint32_t seq = 0;
  std::span<const uint8_t> data;
};
ChunkView ToChunkView(const wire::Chunk& chunk);
// The chunk when `bytes` are an Envelope holding a Chunk and nothing else,
// each Chunk field at most once (any order, as protobuf would read them);
// std::nullopt otherwise, including for any malformed input, which
// ParseEnvelope then reports. Whatever this accepts, ParseEnvelope parses
// to the same stream id, seq and data.
std::optional<ChunkView> ParseChunkView(std::span<const uint8_t> bytes);

// Reassembles one payload from its Chunks, enforcing order, stream id and the
// declared size. Allocation grows with bytes actually received, never with a
// claimed size.
class PayloadAssembler {
 public:
  // kInvalidArgument (via status()) when `info` declares more than
  // `max_payload_bytes` or an inconsistent chunk count. `storage`, e.g. the
  // buffer a previous Take() returned, is cleared and its memory reused, so
  // a receiver that assembles one payload per round does not map, fault in
  // and free a model-sized buffer every round.
  PayloadAssembler(const wire::PayloadInfo& info, uint64_t max_payload_bytes, ByteBuffer storage = {});
  const Status& status() const { return status_; }
  const wire::PayloadInfo& info() const { return info_; }
  // kDataLoss for a chunk out of order, of another stream, or overflowing
  // the declared size.
  Status Add(const ChunkView& chunk);
  Status Add(const wire::Chunk& chunk) { return Add(ToChunkView(chunk)); }
  bool complete() const { return status_.ok() && received_chunks_ == info_.num_chunks() &&
                                 data_.size() == info_.payload_bytes(); }
  uint64_t bytes_received() const { return data_.size(); }
  ByteBuffer Take() { return std::move(data_); }

 private:
  wire::PayloadInfo info_;
  ByteBuffer data_;
  uint32_t received_chunks_ = 0;
  Status status_;
};

}  // namespace verdant
