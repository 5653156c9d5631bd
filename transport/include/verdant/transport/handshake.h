// verdant/transport/handshake.h
//
// Handshaker: the sans-IO first phase of every connection. A session feeds it
// raw frames until Done(), then takes the RecordLayer that protects every
// later frame and the peer's authenticated identity. PlaintextHandshaker is
// done at once (only with --insecure); the Noise XX handshaker (secure
// channel) implements the same interface.
//   auto hs = factory();                        // one per connection
//   for (auto& f : *hs->Start()) Write(f);      // initiator's first message
//   for (auto& f : *hs->OnFrame(frame)) Write(f);
//   if (hs->Done()) { auto out = hs->Finish(); records = std::move(out->records); }
// Thread-safety: not thread-safe; one per connection, driven on its strand.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/message.h"
#include "verdant/transport/record_layer.h"

namespace verdant {

struct HandshakeOutcome {
  std::unique_ptr<RecordLayer> records;
  // The peer's identity as established by the handshake: derived from its
  // static public key for the secure channel, empty for plaintext.
  std::string peer_id;
  // The peer's public key in its text form (empty for plaintext).
  std::string peer_key;
};

class Handshaker {
 public:
  virtual ~Handshaker() = default;
  Handshaker(const Handshaker&) = delete;
  Handshaker& operator=(const Handshaker&) = delete;
  virtual std::string_view Name() const = 0;
  // Frames to send as soon as the connection opens (may be empty).
  virtual Result<std::vector<ByteBuffer>> Start() = 0;
  // Consumes one received handshake frame; returns frames to send. Any error
  // (malformed message, authentication failure, untrusted key) ends the
  // connection with that status.
  virtual Result<std::vector<ByteBuffer>> OnFrame(std::span<const uint8_t> frame) = 0;
  virtual bool Done() const = 0;
  // After Done(): the record layer and peer identity. Called once.
  virtual Result<HandshakeOutcome> Finish() = 0;

 protected:
  Handshaker() = default;
};

using HandshakerFactory = std::function<std::unique_ptr<Handshaker>()>;

class PlaintextHandshaker final : public Handshaker {
 public:
  PlaintextHandshaker() = default;
  std::string_view Name() const override { return "plaintext"; }
  Result<std::vector<ByteBuffer>> Start() override { return std::vector<ByteBuffer>{}; }
  Result<std::vector<ByteBuffer>> OnFrame(std::span<const uint8_t>) override {
    return FailedPreconditionError("plaintext handshake takes no frames");
  }
  bool Done() const override { return true; }
  Result<HandshakeOutcome> Finish() override {
    HandshakeOutcome o;
    o.records = std::make_unique<PlaintextRecordLayer>();
    return o;
  }
};

inline HandshakerFactory PlaintextHandshakerFactory() {
  return [] { return std::make_unique<PlaintextHandshaker>(); };
}

}  // namespace verdant
