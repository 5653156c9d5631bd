// verdant/transport/secure_channel.h
//
// The secure channel: SecureRecordLayer (the RecordLayer every frame after
// the handshake goes through) and NoiseHandshaker (the Handshaker that runs
// Noise XX for a Session, checks the peer's key and yields the record layer).
//
// Records: each record is ChaCha20-Poly1305 (IETF) ciphertext | 16-byte tag,
// exactly a Noise transport message: per-direction keys from Split(), the
// nonce an implicit 64-bit counter (never sent), so a replayed, reordered,
// dropped, truncated or altered record fails authentication (kDataLoss) and
// the layer stays failed. Each direction rekeys (Noise Rekey()) by RekeyPolicy.
//
//   // client (initiator), pinning the coordinator's key:
//   SecureChannelOptions o;  o.static_key = client_key;  o.expected_peer_key = server_pub;
//   VERDANT_ASSIGN_OR_RETURN(HandshakerFactory f, NoiseHandshakerFactory(NoiseHandshake::Role::kInitiator, o));
//   // coordinator (responder), open mode or with an allow-list:
//   SecureChannelOptions s;  s.static_key = server_key;  s.allow_list = allow;  // nullptr: open
//   VERDANT_ASSIGN_OR_RETURN(HandshakerFactory g, NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, s));
//
// Thread-safety: SecureRecordLayer keeps separate send and receive state, so
// one thread may Seal while another Opens; two concurrent Seals (or Opens)
// must be serialised by the caller. A NoiseHandshaker is not thread-safe (one
// per connection, on its strand); the factory is safe to call concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/framing.h"
#include "verdant/transport/handshake.h"
#include "verdant/transport/keys.h"
#include "verdant/transport/noise.h"
#include "verdant/transport/record_layer.h"

namespace verdant {

class SecureRecordLayer final : public RecordLayer {
 public:
  // `send` and `receive` are this side's cipher states from Split().
  SecureRecordLayer(CipherState send, CipherState receive, RekeyPolicy policy = {});
  ~SecureRecordLayer() override = default;  // CipherStates wipe their keys

  std::string_view Name() const override { return "noise-xx-chachapoly"; }
  size_t Overhead() const override { return kNoiseTagBytes; }

  // out = ciphertext | tag (out is resized; reuse it across calls to avoid
  // allocation). kFailedPrecondition once the layer failed.
  Status Seal(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) override;
  // out = plaintext. kDataLoss when the record is shorter than a tag or fails
  // authentication (tampered, replayed, reordered, truncated, dropped before
  // it); the layer then stays failed.
  Status Open(std::span<const uint8_t> record, std::vector<uint8_t>& out) override;

  // ---- zero-copy paths (the session's hot path) ----
  // Writes one whole frame into `frame`: u32 big-endian length | ciphertext |
  // tag, encrypting straight into it (the only pass over the data).
  // RecordLayer::SealFrame appends such a frame to a vector.
  // kInvalidArgument, before using a nonce, when `frame` is not
  // FrameBytes(plaintext.size()) bytes or the record would exceed
  // `max_frame_bytes`.
  Status SealFrameInto(std::span<const uint8_t> plaintext, std::span<uint8_t> frame,
                       uint32_t max_frame_bytes) override;
  // Seals buffer[0, size-16) in place and writes the tag into the last 16
  // bytes. kInvalidArgument when buffer is shorter than a tag.
  Status SealInPlace(std::span<uint8_t> buffer);
  // Opens a record in place; returns the plaintext length (record.size()-16),
  // the plaintext being record[0, n). Errors as Open.
  Result<size_t> OpenInPlace(std::span<uint8_t> record) override;

  // Statistics (safe to read from any thread).
  uint64_t records_sealed() const { return sealed_.load(std::memory_order_relaxed); }
  uint64_t records_opened() const { return opened_.load(std::memory_order_relaxed); }
  uint64_t send_rekeys() const { return send_.rekeys.load(std::memory_order_relaxed); }
  uint64_t receive_rekeys() const { return recv_.rekeys.load(std::memory_order_relaxed); }
  bool failed() const { return failed_.load(std::memory_order_acquire); }

 private:
  struct Direction {
    CipherState cipher;
    uint64_t records_since_rekey = 0;
    uint64_t bytes_since_rekey = 0;
    std::atomic<uint64_t> rekeys{0};
  };
  // Counts one record of `bytes` plaintext bytes and rekeys at the threshold.
  void Account(Direction& d, size_t bytes);
  Status SealTo(std::span<const uint8_t> plaintext, uint8_t* out);

  const RekeyPolicy policy_;
  Direction send_;
  Direction recv_;
  std::atomic<uint64_t> sealed_{0};
  std::atomic<uint64_t> opened_{0};
  std::atomic<bool> failed_{false};
};

struct SecureChannelOptions {
  // This side's long-term key (required). Shared by every connection.
  std::shared_ptr<const KeyPair> static_key;
  // Initiator (client): the coordinator's key. Required: the handshake fails
  // (kUnauthenticated) before the client reveals its identity if the
  // responder proves another key.
  std::optional<PublicKey> expected_peer_key;
  // Responder (coordinator): the allowed client keys; nullptr = open mode
  // (any key; identity = key). Reload() it at any time.
  std::shared_ptr<const AllowList> allow_list;
  RekeyPolicy rekey;
  // Bound into the handshake; both sides must agree.
  std::string prologue = std::string(kVerdantPrologue);
};

// Noise XX as a Handshaker (handshake.h). Handshake payloads are empty.
// Finish() yields a SecureRecordLayer, peer_id = ClientIdFromKey(peer key)
// and peer_key = FormatPublicKey(peer key).
class NoiseHandshaker final : public Handshaker {
 public:
  // kInvalidArgument when options lack a static key, or an initiator has no
  // expected_peer_key.
  static Result<std::unique_ptr<NoiseHandshaker>> Create(NoiseHandshake::Role role,
                                                         const SecureChannelOptions& options);
  std::string_view Name() const override { return "noise-xx"; }
  Result<std::vector<ByteBuffer>> Start() override;
  // kDataLoss (malformed), kUnauthenticated (authentication failed, wrong
  // coordinator key), kPermissionDenied (client key not on the allow-list),
  // kFailedPrecondition (a frame after the handshake finished).
  Result<std::vector<ByteBuffer>> OnFrame(std::span<const uint8_t> frame) override;
  bool Done() const override { return !failed_ && hs_->Complete(); }
  Result<HandshakeOutcome> Finish() override;
  const NoiseHandshake& handshake() const { return *hs_; }

 private:
  NoiseHandshaker(std::unique_ptr<NoiseHandshake> hs, const SecureChannelOptions& options)
      : hs_(std::move(hs)), options_(options) {}
  Result<std::vector<ByteBuffer>> Step(std::span<const uint8_t> frame);
  std::unique_ptr<NoiseHandshake> hs_;
  SecureChannelOptions options_;
  bool failed_ = false;  // an error was returned: never Done()
  bool finished_ = false;
};

// Validates `options` once and returns a factory making one NoiseHandshaker
// per connection (TcpServer::Options::handshaker / ClientConnection::Options).
Result<HandshakerFactory> NoiseHandshakerFactory(NoiseHandshake::Role role, SecureChannelOptions options);

}  // namespace verdant
