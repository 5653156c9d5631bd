#include "verdant/transport/framing.h"

#include <algorithm>
#include <string>

namespace verdant {

void PutFrameHeader(uint32_t length, uint8_t out[kFrameHeaderBytes]) {
  out[0] = static_cast<uint8_t>(length >> 24);
  out[1] = static_cast<uint8_t>(length >> 16);
  out[2] = static_cast<uint8_t>(length >> 8);
  out[3] = static_cast<uint8_t>(length);
}

uint32_t ReadFrameHeader(const uint8_t in[kFrameHeaderBytes]) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | uint32_t{in[3]};
}

Status CheckFrameLength(uint32_t length, uint32_t max_frame_bytes) {
  if (length == 0) return DataLossError("empty frame");
  if (length > max_frame_bytes) {
    return ResourceExhaustedError("frame of " + std::to_string(length) + " bytes exceeds the " +
                                  std::to_string(max_frame_bytes) + "-byte limit");
  }
  return OkStatus();
}

Status AppendFrame(std::span<const uint8_t> payload, std::vector<uint8_t>& out,
                   uint32_t max_frame_bytes) {
  if (payload.size() > max_frame_bytes || payload.empty()) {
    return InvalidArgumentError("cannot frame a payload of " + std::to_string(payload.size()) +
                                " bytes (limit " + std::to_string(max_frame_bytes) + ")");
  }
  uint8_t h[kFrameHeaderBytes];
  PutFrameHeader(static_cast<uint32_t>(payload.size()), h);
  out.insert(out.end(), h, h + kFrameHeaderBytes);
  out.insert(out.end(), payload.begin(), payload.end());
  return OkStatus();
}

Status FrameDecoder::Feed(std::span<const uint8_t> bytes) {
  if (!failed_.ok()) return failed_;
  size_t i = 0;
  while (i < bytes.size()) {
    if (!have_header_) {
      size_t take = std::min(kFrameHeaderBytes - header_fill_, bytes.size() - i);
      std::copy_n(bytes.data() + i, take, header_ + header_fill_);
      header_fill_ += take;
      i += take;
      if (header_fill_ < kFrameHeaderBytes) break;
      need_ = ReadFrameHeader(header_);
      Status st = CheckFrameLength(need_, max_);
      if (!st.ok()) {
        failed_ = st;
        return st;
      }
      have_header_ = true;
      header_fill_ = 0;
      current_.clear();
      // Reserve at most what is already here plus a bounded amount: the
      // peer has not proven it will send `need_` bytes.
      current_.reserve(std::min<size_t>(need_, 64 * 1024));
    }
    size_t take = std::min<size_t>(need_ - current_.size(), bytes.size() - i);
    current_.insert(current_.end(), bytes.data() + i, bytes.data() + i + take);
    i += take;
    if (current_.size() == need_) {
      ready_.push_back(std::move(current_));
      current_ = {};
      have_header_ = false;
    }
  }
  return OkStatus();
}

std::optional<std::vector<uint8_t>> FrameDecoder::Next() {
  if (ready_.empty()) return std::nullopt;
  auto f = std::move(ready_.front());
  ready_.pop_front();
  return f;
}

}  // namespace verdant
