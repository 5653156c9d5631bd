#include "verdant/transport/secure_channel.h"

#include <string>

namespace verdant {

// ---- SecureRecordLayer --------------------------------------------------------

SecureRecordLayer::SecureRecordLayer(CipherState send, CipherState receive, RekeyPolicy policy)
    : policy_(policy) {
  send_.cipher = std::move(send);
  recv_.cipher = std::move(receive);
}

void SecureRecordLayer::Account(Direction& d, size_t bytes) {
  ++d.records_since_rekey;
  d.bytes_since_rekey += bytes;
  if ((policy_.records != 0 && d.records_since_rekey >= policy_.records) ||
      (policy_.bytes != 0 && d.bytes_since_rekey >= policy_.bytes)) {
    d.cipher.Rekey();
    d.records_since_rekey = 0;
    d.bytes_since_rekey = 0;
    d.rekeys.fetch_add(1, std::memory_order_relaxed);
  }
}

Status SecureRecordLayer::SealTo(std::span<const uint8_t> plaintext, uint8_t* out) {
  if (failed()) return FailedPreconditionError("secure channel failed earlier; the session must close");
  Status st = send_.cipher.EncryptWithAd({}, plaintext, out);
  if (!st.ok()) {
    failed_.store(true, std::memory_order_release);
    return st;
  }
  Account(send_, plaintext.size());
  sealed_.fetch_add(1, std::memory_order_relaxed);
  return OkStatus();
}

Status SecureRecordLayer::Seal(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) {
  // `plaintext` may not alias `out` (resize could move it); sessions never do.
  out.resize(plaintext.size() + kNoiseTagBytes);
  return SealTo(plaintext, out.data());
}

Status SecureRecordLayer::SealFrameInto(std::span<const uint8_t> plaintext, std::span<uint8_t> frame,
                                        uint32_t max_frame_bytes) {
  VERDANT_RETURN_IF_ERROR(CheckFrameSpan(plaintext.size(), frame.size(), max_frame_bytes));
  PutFrameHeader(static_cast<uint32_t>(frame.size() - kFrameHeaderBytes), frame.data());
  return SealTo(plaintext, frame.data() + kFrameHeaderBytes);
}

Status SecureRecordLayer::SealInPlace(std::span<uint8_t> buffer) {
  if (buffer.size() < kNoiseTagBytes) return InvalidArgumentError("buffer has no room for the tag");
  return SealTo(buffer.first(buffer.size() - kNoiseTagBytes), buffer.data());
}

Result<size_t> SecureRecordLayer::OpenInPlace(std::span<uint8_t> record) {
  if (failed()) return DataLossError("secure channel failed earlier; the session must close");
  if (record.size() < kNoiseTagBytes) {
    failed_.store(true, std::memory_order_release);
    return DataLossError("record of " + std::to_string(record.size()) + " bytes is truncated (no tag)");
  }
  const uint64_t n = recv_.cipher.nonce();
  Status st = recv_.cipher.DecryptWithAd({}, record, record.data());
  if (!st.ok()) {
    failed_.store(true, std::memory_order_release);
    return DataLossError("record " + std::to_string(n) +
                         " failed authentication (tampered, replayed, reordered, truncated or dropped): " +
                         st.message());
  }
  const size_t len = record.size() - kNoiseTagBytes;
  Account(recv_, len);
  opened_.fetch_add(1, std::memory_order_relaxed);
  return len;
}

Status SecureRecordLayer::Open(std::span<const uint8_t> record, std::vector<uint8_t>& out) {
  if (failed()) return DataLossError("secure channel failed earlier; the session must close");
  if (record.size() < kNoiseTagBytes) {
    failed_.store(true, std::memory_order_release);
    return DataLossError("record of " + std::to_string(record.size()) + " bytes is truncated (no tag)");
  }
  const uint64_t n = recv_.cipher.nonce();
  out.resize(record.size() - kNoiseTagBytes);
  Status st = recv_.cipher.DecryptWithAd({}, record, out.data());
  if (!st.ok()) {
    failed_.store(true, std::memory_order_release);
    out.clear();
    return DataLossError("record " + std::to_string(n) +
                         " failed authentication (tampered, replayed, reordered, truncated or dropped): " +
                         st.message());
  }
  Account(recv_, out.size());
  opened_.fetch_add(1, std::memory_order_relaxed);
  return OkStatus();
}

// ---- NoiseHandshaker ----------------------------------------------------------

Result<std::unique_ptr<NoiseHandshaker>> NoiseHandshaker::Create(NoiseHandshake::Role role,
                                                                 const SecureChannelOptions& options) {
  if (!options.static_key || !options.static_key->valid()) {
    return InvalidArgumentError("secure channel needs this side's static key pair");
  }
  if (role == NoiseHandshake::Role::kInitiator && !options.expected_peer_key) {
    return InvalidArgumentError("the client must pin the coordinator's public key (expected_peer_key)");
  }
  auto hs = role == NoiseHandshake::Role::kInitiator
                ? NoiseHandshake::Initiator(*options.static_key, AsBytes(options.prologue))
                : NoiseHandshake::Responder(*options.static_key, AsBytes(options.prologue));
  if (!hs.ok()) return hs.status();
  return std::unique_ptr<NoiseHandshaker>(new NoiseHandshaker(std::move(*hs), options));
}

Result<std::vector<ByteBuffer>> NoiseHandshaker::Start() {
  std::vector<ByteBuffer> out;
  if (failed_ || hs_->Complete()) return FailedPreconditionError("handshake already started");
  if (hs_->role() == NoiseHandshake::Role::kInitiator) {
    VERDANT_ASSIGN_OR_RETURN(auto msg1, hs_->WriteMessage());
    out.push_back(std::move(msg1));
  }
  return out;
}

Result<std::vector<ByteBuffer>> NoiseHandshaker::OnFrame(std::span<const uint8_t> frame) {
  if (failed_) return FailedPreconditionError("handshake already failed");
  auto out = Step(frame);
  if (!out.ok()) failed_ = true;
  return out;
}

Result<std::vector<ByteBuffer>> NoiseHandshaker::Step(std::span<const uint8_t> frame) {
  if (hs_->Complete()) return FailedPreconditionError("handshake frame after the handshake completed");
  VERDANT_ASSIGN_OR_RETURN(auto payload, hs_->ReadMessage(frame));
  (void)payload;  // v1 sends empty payloads and ignores received ones (reserved)
  std::vector<ByteBuffer> out;
  if (hs_->role() == NoiseHandshake::Role::kInitiator) {
    // Check the coordinator's key before revealing ours in msg3.
    VERDANT_RETURN_IF_ERROR(VerifyRemoteStatic(*hs_, *options_.expected_peer_key)
                                .WithContext("coordinator authentication"));
  } else if (hs_->Complete() && options_.allow_list) {
    const PublicKey peer = hs_->RemoteStatic();
    if (!options_.allow_list->Contains(peer)) {
      return PermissionDeniedError("client key " + FormatPublicKey(peer) + " (id " + ClientIdFromKey(peer) +
                                   ") is not on the allow-list " + options_.allow_list->path().string());
    }
  }
  if (hs_->IsMyTurn()) {
    VERDANT_ASSIGN_OR_RETURN(auto msg, hs_->WriteMessage());
    out.push_back(std::move(msg));
  }
  return out;
}

Result<HandshakeOutcome> NoiseHandshaker::Finish() {
  if (failed_ || !hs_->Complete()) return FailedPreconditionError("handshake did not complete");
  if (finished_) return FailedPreconditionError("handshake already finished");
  VERDANT_ASSIGN_OR_RETURN(auto records, hs_->Split(options_.rekey));
  finished_ = true;
  HandshakeOutcome o;
  const PublicKey peer = hs_->RemoteStatic();
  o.records = std::move(records);
  o.peer_id = ClientIdFromKey(peer);
  o.peer_key = FormatPublicKey(peer);
  return o;
}

Result<HandshakerFactory> NoiseHandshakerFactory(NoiseHandshake::Role role, SecureChannelOptions options) {
  VERDANT_RETURN_IF_ERROR(InitCrypto());
  // Validate once, so a misconfiguration fails at startup, not per connection.
  auto probe = NoiseHandshaker::Create(role, options);
  if (!probe.ok()) return probe.status();
  auto shared = std::make_shared<const SecureChannelOptions>(std::move(options));
  return HandshakerFactory([role, shared]() -> std::unique_ptr<Handshaker> {
    auto hs = NoiseHandshaker::Create(role, *shared);
    // Create only fails on options already validated above.
    return hs.ok() ? std::unique_ptr<Handshaker>(std::move(*hs)) : nullptr;
  });
}

}  // namespace verdant
