// verdant/transport/framing.h
//
// Length-prefixed framing: each frame on the wire is `u32 big-endian length |
// payload`. The length is checked against a hard maximum before any payload
// byte is buffered, so a hostile peer cannot make us allocate.
//   FrameDecoder dec(8 << 20);
//   VERDANT_RETURN_IF_ERROR(dec.Feed(bytes_from_socket));
//   while (auto frame = dec.Next()) Handle(*frame);
//   AppendFrame(payload, out);                 // header + payload
// Thread-safety: not thread-safe; one decoder per connection direction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

inline constexpr size_t kFrameHeaderBytes = 4;
inline constexpr uint32_t kDefaultMaxFrameBytes = 8u << 20;  // 8 MiB

// Writes the 4-byte big-endian length.
void PutFrameHeader(uint32_t length, uint8_t out[kFrameHeaderBytes]);
uint32_t ReadFrameHeader(const uint8_t in[kFrameHeaderBytes]);
// Appends header + payload to `out`. kInvalidArgument if payload > max.
Status AppendFrame(std::span<const uint8_t> payload, std::vector<uint8_t>& out,
                   uint32_t max_frame_bytes = kDefaultMaxFrameBytes);
// Validates a frame header: kResourceExhausted when the length exceeds the
// maximum, kDataLoss for an empty (zero-length) frame.
Status CheckFrameLength(uint32_t length, uint32_t max_frame_bytes);

// Incremental decoder for a byte stream that may split frames anywhere.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_frame_bytes = kDefaultMaxFrameBytes)
      : max_(max_frame_bytes) {}
  // Consumes bytes. On an oversize or empty frame header returns the error
  // (kResourceExhausted / kDataLoss) and stays failed: the connection must close.
  Status Feed(std::span<const uint8_t> bytes);
  // The next complete frame payload, if any.
  std::optional<std::vector<uint8_t>> Next();
  // True when bytes of an incomplete frame are buffered (a truncated frame at EOF).
  bool HasPartialFrame() const { return have_header_ || header_fill_ > 0; }
  uint32_t max_frame_bytes() const { return max_; }

 private:
  uint32_t max_;
  uint8_t header_[kFrameHeaderBytes] = {};
  size_t header_fill_ = 0;
  bool have_header_ = false;
  uint32_t need_ = 0;
  std::vector<uint8_t> current_;
  std::deque<std::vector<uint8_t>> ready_;
  Status failed_;
};

}  // namespace verdant
