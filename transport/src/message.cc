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

std::vector<SharedBytes> MakeChunkMessages(uint64_t stream_id, std::span<const uint8_t> payload,
                                           uint32_t chunk_bytes) {
  std::vector<SharedBytes> out;
  const uint32_t n = NumChunks(payload.size(), chunk_bytes);
  out.reserve(n);
  wire::Envelope env;
  for (uint32_t i = 0; i < n; ++i) {
    size_t off = static_cast<size_t>(i) * chunk_bytes;
    size_t len = std::min<size_t>(chunk_bytes, payload.size() - off);
    auto* c = env.mutable_chunk();
    c->set_stream_id(stream_id);
    c->set_seq(i);
    c->set_data(payload.data() + off, len);
    auto bytes = std::make_shared<ByteBuffer>(env.ByteSizeLong());
    env.SerializeToArray(bytes->data(), static_cast<int>(bytes->size()));
    out.push_back(std::move(bytes));
  }
  return out;
}

PayloadAssembler::PayloadAssembler(const wire::PayloadInfo& info, uint64_t max_payload_bytes)
    : info_(info) {
  if (info.payload_bytes() > max_payload_bytes) {
    status_ = InvalidArgumentError("payload of " + std::to_string(info.payload_bytes()) +
                                   " bytes exceeds the " + std::to_string(max_payload_bytes) +
                                   "-byte limit");
  } else if (info.num_chunks() == 0 && info.payload_bytes() != 0) {
    status_ = InvalidArgumentError("payload declares bytes but no chunks");
  } else if (info.num_chunks() > info.payload_bytes()) {
    status_ = InvalidArgumentError("payload declares more chunks than bytes");
  }
}

Status PayloadAssembler::Add(const wire::Chunk& chunk) {
  if (!status_.ok()) return status_;
  if (chunk.stream_id() != info_.stream_id()) {
    status_ = DataLossError("chunk for stream " + std::to_string(chunk.stream_id()) +
                            " while receiving stream " + std::to_string(info_.stream_id()));
  } else if (chunk.seq() != received_chunks_) {
    status_ = DataLossError("chunk " + std::to_string(chunk.seq()) + " out of order (expected " +
                            std::to_string(received_chunks_) + ")");
  } else if (received_chunks_ >= info_.num_chunks()) {
    status_ = DataLossError("more chunks than declared");
  } else if (data_.size() + chunk.data().size() > info_.payload_bytes()) {
    status_ = DataLossError("chunks overflow the declared payload size");
  } else if (chunk.data().empty()) {
    status_ = DataLossError("empty chunk");
  }
  if (!status_.ok()) return status_;
  if (data_.empty()) data_.reserve(std::min<uint64_t>(info_.payload_bytes(), 64ull << 20));
  data_.insert(data_.end(), chunk.data().begin(), chunk.data().end());
  ++received_chunks_;
  if (received_chunks_ == info_.num_chunks() && data_.size() != info_.payload_bytes()) {
    status_ = DataLossError("payload ended at " + std::to_string(data_.size()) + " of " +
                            std::to_string(info_.payload_bytes()) + " declared bytes");
    return status_;
  }
  return OkStatus();
}

}  // namespace verdant
