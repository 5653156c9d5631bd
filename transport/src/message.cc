#include "verdant/transport/message.h"

#include <algorithm>

namespace verdant {

Result<ByteBuffer> SerializeEnvelope(const wire::Envelope& env) {
  ByteBuffer out(env.ByteSizeLong());
  if (!env.SerializeToArray(out.data(), static_cast<int>(out.size()))) {
    return InternalError("failed to serialise " + std::string(MessageTypeName(env)));
  }
  return out;
}

Result<wire::Envelope> ParseEnvelope(std::span<const uint8_t> bytes) {
  wire::Envelope env;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !env.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return DataLossError("malformed message (" + std::to_string(bytes.size()) + " bytes are not an Envelope)");
  }
  if (env.body_case() == wire::Envelope::BODY_NOT_SET) {
    return InvalidArgumentError("unknown message type");
  }
  return env;
}

std::string_view MessageTypeName(const wire::Envelope& env) {
  switch (env.body_case()) {
    case wire::Envelope::kHello: return "Hello";
    case wire::Envelope::kWelcome: return "Welcome";
    case wire::Envelope::kHeartbeat: return "Heartbeat";
    case wire::Envelope::kTrainTask: return "TrainTask";
    case wire::Envelope::kTrainResult: return "TrainResult";
    case wire::Envelope::kEvalTask: return "EvalTask";
    case wire::Envelope::kEvalResult: return "EvalResult";
    case wire::Envelope::kChunk: return "Chunk";
    case wire::Envelope::kError: return "Error";
    case wire::Envelope::kBye: return "Bye";
    case wire::Envelope::BODY_NOT_SET: break;
  }
  return "unknown";
}

uint32_t NumChunks(uint64_t payload_bytes, uint32_t chunk_bytes) {
  return static_cast<uint32_t>((payload_bytes + chunk_bytes - 1) / chunk_bytes);
}

namespace {

size_t VarintBytes(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}

void PutVarint(ByteBuffer& b, uint64_t v) {
  while (v >= 0x80) {
    b.push_back(static_cast<uint8_t>(v) | 0x80);
    v >>= 7;
  }
  b.push_back(static_cast<uint8_t>(v));
}

// Protobuf wire tags: (field number << 3) | wire type.
constexpr uint8_t kEnvelopeChunkTag = (8 << 3) | 2;  // Envelope.chunk, length-delimited
constexpr uint8_t kStreamIdTag = (1 << 3) | 0;       // Chunk.stream_id, varint
constexpr uint8_t kSeqTag = (2 << 3) | 0;            // Chunk.seq, varint
constexpr uint8_t kDataTag = (3 << 3) | 2;           // Chunk.data, length-delimited

// Chunk's own serialised size (inside the Envelope's length prefix).
uint64_t ChunkFieldsBytes(uint64_t stream_id, uint32_t seq, uint64_t len) {
  return (stream_id != 0 ? 1 + VarintBytes(stream_id) : 0) + (seq != 0 ? 1 + VarintBytes(seq) : 0) +
         (len != 0 ? 1 + VarintBytes(len) + len : 0);
}

}  // namespace

uint64_t ChunkEnvelopeBytes(uint64_t stream_id, uint32_t seq, uint64_t len) {
  const uint64_t inner = ChunkFieldsBytes(stream_id, seq, len);
  return 1 + VarintBytes(inner) + inner;
}

// Each Chunk envelope is written in protobuf's wire format by hand, byte for
// byte what Envelope::SerializeToArray produces (proto3: zero fields
// omitted; a test compares the two), so the payload is copied once into
// memory that is not zero-filled first, instead of into the message's
// string and then again into a zero-filled buffer.
std::vector<SharedBytes> MakeChunkMessages(uint64_t stream_id, std::span<const uint8_t> payload,
                                           uint32_t chunk_bytes) {
  std::vector<SharedBytes> out;
  const uint32_t n = NumChunks(payload.size(), chunk_bytes);
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const size_t off = static_cast<size_t>(i) * chunk_bytes;
    const size_t len = std::min<size_t>(chunk_bytes, payload.size() - off);
    const size_t chunk_len = ChunkFieldsBytes(stream_id, i, len);
    auto bytes = std::make_shared<ByteBuffer>();
    bytes->reserve(ChunkEnvelopeBytes(stream_id, i, len));
    bytes->push_back(kEnvelopeChunkTag);
    PutVarint(*bytes, chunk_len);
    if (stream_id != 0) {
      bytes->push_back(kStreamIdTag);
      PutVarint(*bytes, stream_id);
    }
    if (i != 0) {
      bytes->push_back(kSeqTag);
      PutVarint(*bytes, i);
    }
    if (len != 0) {
      bytes->push_back(kDataTag);
      PutVarint(*bytes, len);
      bytes->insert(bytes->end(), payload.data() + off, payload.data() + off + len);
    }
    out.push_back(std::move(bytes));
  }
  return out;
}

PayloadAssembler::PayloadAssembler(const wire::PayloadInfo& info, uint64_t max_payload_bytes, ByteBuffer storage)
    : info_(info), data_(std::move(storage)) {
  data_.clear();
  if (info.payload_bytes() > max_payload_bytes) {
    status_ = InvalidArgumentError("payload of " + std::to_string(info.payload_bytes()) +
                                   " bytes exceeds the " + std::to_string(max_payload_bytes) +
                                   "-byte limit");
  } else if (info.num_chunks() == 0 && info.payload_bytes() != 0) {
    status_ = InvalidArgumentError("payload declares bytes but no chunks");
  } else if (info.num_chunks() > info.payload_bytes()) {
    status_ = InvalidArgumentError("payload declares more chunks than bytes");
  }
  // Memory for what is declared, up to 64 MiB before any chunk arrived (a
  // peer's declaration alone does not get more); reused storage that is
  // already large enough costs nothing here.
  if (status_.ok()) data_.reserve(std::min<uint64_t>(info_.payload_bytes(), std::max<uint64_t>(data_.capacity(), 64ull << 20)));
}

ChunkView ToChunkView(const wire::Chunk& chunk) {
  return ChunkView{chunk.stream_id(), chunk.seq(),
                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(chunk.data().data()), chunk.data().size())};
}

namespace {

// Reads a varint at `p` (protobuf: at most 10 bytes, the 10th carrying one
// bit). False when truncated or overlong.
bool GetVarint(const uint8_t*& p, const uint8_t* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const uint8_t b = *p++;
    if (shift == 63 && b > 1) return false;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

std::optional<ChunkView> ParseChunkView(std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  const uint8_t* end = p + bytes.size();
  uint64_t len = 0;
  // The envelope: one field, the chunk, spanning the rest of the bytes.
  if (p == end || *p++ != kEnvelopeChunkTag || !GetVarint(p, end, len) || len != static_cast<uint64_t>(end - p)) {
    return std::nullopt;
  }
  ChunkView view;
  bool seen_stream = false, seen_seq = false, seen_data = false;
  while (p < end) {
    uint64_t v = 0;
    switch (*p++) {
      case kStreamIdTag:
        if (seen_stream || !GetVarint(p, end, v)) return std::nullopt;
        view.stream_id = v;
        seen_stream = true;
        break;
      case kSeqTag:
        // A uint32 field: protobuf truncates wider values; leave those to it.
        if (seen_seq || !GetVarint(p, end, v) || v > UINT32_MAX) return std::nullopt;
        view.seq = static_cast<uint32_t>(v);
        seen_seq = true;
        break;
      case kDataTag:
        if (seen_data || !GetVarint(p, end, v) || v > static_cast<uint64_t>(end - p)) return std::nullopt;
        view.data = std::span<const uint8_t>(p, static_cast<size_t>(v));
        p += v;
        seen_data = true;
        break;
      default:
        return std::nullopt;  // unknown or multi-byte tags: protobuf's job
    }
  }
  return view;
}

Status PayloadAssembler::Add(const ChunkView& chunk) {
  if (!status_.ok()) return status_;
  if (chunk.stream_id != info_.stream_id()) {
    status_ = DataLossError("chunk for stream " + std::to_string(chunk.stream_id) +
                            " while receiving stream " + std::to_string(info_.stream_id()));
  } else if (chunk.seq != received_chunks_) {
    status_ = DataLossError("chunk " + std::to_string(chunk.seq) + " out of order (expected " +
                            std::to_string(received_chunks_) + ")");
  } else if (received_chunks_ >= info_.num_chunks()) {
    status_ = DataLossError("more chunks than declared");
  } else if (data_.size() + chunk.data.size() > info_.payload_bytes()) {
    status_ = DataLossError("chunks overflow the declared payload size");
  } else if (chunk.data.empty()) {
    status_ = DataLossError("empty chunk");
  }
  if (!status_.ok()) return status_;
  if (data_.capacity() < info_.payload_bytes() && data_.size() + chunk.data.size() > data_.capacity()) {
    // Past the first 64 MiB: grow to the declared size once, not by doubling.
    data_.reserve(info_.payload_bytes());
  }
  data_.insert(data_.end(), chunk.data.begin(), chunk.data.end());
  ++received_chunks_;
  if (received_chunks_ == info_.num_chunks() && data_.size() != info_.payload_bytes()) {
    status_ = DataLossError("payload ended at " + std::to_string(data_.size()) + " of " +
                            std::to_string(info_.payload_bytes()) + " declared bytes");
    return status_;
  }
  return OkStatus();
}

}  // namespace verdant
