// verdant/transport/record_layer.h
//
// RecordLayer: what sits between frames and messages. Each frame payload is
// one record; the record layer turns a plaintext message into a record
// (Seal) and back (Open). PlaintextRecordLayer passes bytes through (only
// with --insecure); the secure channel (Noise, libsodium) implements the same
// interface with AEAD records, so sessions never know which one they run.
//   std::unique_ptr<RecordLayer> rl = std::make_unique<PlaintextRecordLayer>();
//   VERDANT_RETURN_IF_ERROR(rl->Seal(message_bytes, record));
//   VERDANT_RETURN_IF_ERROR(rl->Open(record, message_bytes));  // kDataLoss if tampered
// The session's hot path avoids copies of model-sized buffers: SealFrame /
// SealFrameInto write header + record straight into the socket write buffer,
// and OpenInPlace decrypts the received frame where it lies.
//   VERDANT_RETURN_IF_ERROR(rl->SealFrame(message_bytes, write_buffer, max_frame_bytes));  // appends
//   VERDANT_ASSIGN_OR_RETURN(size_t n, rl->OpenInPlace(frame));   // plaintext = frame[0, n)
// Thread-safety: not thread-safe. Seal and Open keep separate state
// (per-direction keys and counters), so one thread may Seal while another
// Opens; two concurrent Seals (or Opens) must be serialised by the caller.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/framing.h"

namespace verdant {

class RecordLayer {
 public:
  virtual ~RecordLayer() = default;
  RecordLayer(const RecordLayer&) = delete;
  RecordLayer& operator=(const RecordLayer&) = delete;
  virtual std::string_view Name() const = 0;
  // Bytes a record adds to its plaintext (0 for plaintext, 16 for an AEAD tag).
  virtual size_t Overhead() const = 0;
  // Writes the record for `plaintext` into `out` (replacing its content).
  virtual Status Seal(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) = 0;
  // Writes the plaintext of `record` into `out`. kDataLoss when the record is
  // tampered, replayed, reordered or truncated; after that the layer stays
  // failed and the session must close.
  virtual Status Open(std::span<const uint8_t> record, std::vector<uint8_t>& out) = 0;

  // Bytes of the frame that carries a message of `plaintext_bytes`:
  // u32 big-endian length | record.
  size_t FrameBytes(size_t plaintext_bytes) const { return kFrameHeaderBytes + plaintext_bytes + Overhead(); }
  // Writes the whole frame for `plaintext` into `frame`, which must be exactly
  // FrameBytes(plaintext.size()) bytes and must not overlap `plaintext`.
  // kInvalidArgument, before any record state is used, for another size or a
  // record that is empty or exceeds `max_frame_bytes`; errors of Seal
  // otherwise. The default seals into a scratch buffer and copies it in;
  // layers override it to write the record in place (the session's path: its
  // write buffer is not zero-filled first).
  virtual Status SealFrameInto(std::span<const uint8_t> plaintext, std::span<uint8_t> frame,
                               uint32_t max_frame_bytes) {
    VERDANT_RETURN_IF_ERROR(CheckFrameSpan(plaintext.size(), frame.size(), max_frame_bytes));
    std::vector<uint8_t> record;
    VERDANT_RETURN_IF_ERROR(Seal(plaintext, record));
    if (record.size() + kFrameHeaderBytes != frame.size()) {
      return InternalError("record layer produced a record of an unexpected size");
    }
    PutFrameHeader(static_cast<uint32_t>(record.size()), frame.data());
    std::copy(record.begin(), record.end(), frame.begin() + kFrameHeaderBytes);
    return OkStatus();
  }
  // Appends the frame for `plaintext` to `out` (through SealFrameInto); `out`
  // is unchanged on error. Errors as SealFrameInto.
  Status SealFrame(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out,
                   uint32_t max_frame_bytes = kDefaultMaxFrameBytes) {
    const size_t n = FrameBytes(plaintext.size());
    VERDANT_RETURN_IF_ERROR(CheckFrameSpan(plaintext.size(), n, max_frame_bytes));
    const size_t at = out.size();
    out.resize(at + n);
    Status st = SealFrameInto(plaintext, std::span<uint8_t>(out).subspan(at), max_frame_bytes);
    if (!st.ok()) out.resize(at);
    return st;
  }
  // Opens `record` in place and returns the plaintext length n: the
  // plaintext is record[0, n). Errors as Open. The default opens into a
  // scratch buffer and copies back; layers override it to avoid the copy.
  virtual Result<size_t> OpenInPlace(std::span<uint8_t> record) {
    std::vector<uint8_t> plain;
    VERDANT_RETURN_IF_ERROR(Open(record, plain));
    if (plain.size() > record.size()) return InternalError("record layer expanded a record when opening it");
    std::copy(plain.begin(), plain.end(), record.begin());
    return plain.size();
  }

 protected:
  RecordLayer() = default;
  // SealFrameInto's argument checks.
  Status CheckFrameSpan(size_t plaintext_bytes, size_t frame_bytes, uint32_t max_frame_bytes) const {
    const size_t record = plaintext_bytes + Overhead();
    if (frame_bytes != kFrameHeaderBytes + record) {
      return InvalidArgumentError("a frame for " + std::to_string(plaintext_bytes) + " bytes takes " +
                                  std::to_string(kFrameHeaderBytes + record) + " bytes, not " +
                                  std::to_string(frame_bytes));
    }
    if (record == 0 || record > max_frame_bytes) {
      return InvalidArgumentError("record of " + std::to_string(record) + " bytes does not fit the " +
                                  std::to_string(max_frame_bytes) + "-byte frame limit");
    }
    return OkStatus();
  }
};

class PlaintextRecordLayer final : public RecordLayer {
 public:
  PlaintextRecordLayer() = default;
  std::string_view Name() const override { return "plaintext"; }
  size_t Overhead() const override { return 0; }
  Status Seal(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) override {
    out.assign(plaintext.begin(), plaintext.end());
    return OkStatus();
  }
  Status Open(std::span<const uint8_t> record, std::vector<uint8_t>& out) override {
    out.assign(record.begin(), record.end());
    return OkStatus();
  }
  // The frame is header + message: one copy, no scratch buffer.
  Status SealFrameInto(std::span<const uint8_t> plaintext, std::span<uint8_t> frame,
                       uint32_t max_frame_bytes) override {
    VERDANT_RETURN_IF_ERROR(CheckFrameSpan(plaintext.size(), frame.size(), max_frame_bytes));
    PutFrameHeader(static_cast<uint32_t>(plaintext.size()), frame.data());
    std::copy(plaintext.begin(), plaintext.end(), frame.begin() + kFrameHeaderBytes);
    return OkStatus();
  }
  Result<size_t> OpenInPlace(std::span<uint8_t> record) override { return record.size(); }
};

}  // namespace verdant
