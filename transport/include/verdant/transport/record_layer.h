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
// Thread-safety: not thread-safe. Seal and Open keep separate state
// (per-direction keys and counters), so one thread may Seal while another
// Opens; two concurrent Seals (or Opens) must be serialised by the caller.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

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

 protected:
  RecordLayer() = default;
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
};

}  // namespace verdant
