// verdant/testing/proxy.h
//
// RecordingProxy: a loopback TCP man-in-the-middle for tests. It listens on
// 127.0.0.1:<ephemeral>, forwards every accepted connection to
// 127.0.0.1:<target>, records every byte it reads in both directions, and can
// tamper with the client->server stream of one connection: flip a byte at a
// stream offset or inside the k-th frame, replay (duplicate) a frame, drop a
// frame, truncate a frame, or swap two frames. Frames are `u32 big-endian
// length | payload` (framing.h); frame k counts every client->server frame of
// the connection from 0, handshake messages included (Noise XX: 0 = msg1,
// 1 = msg3, 2 = the first record).
//   RecordingProxy::Options o;
//   o.mutation.kind = RecordingProxy::Mutation::Kind::kReplayFrame;
//   o.mutation.frame = 2;
//   auto proxy = RecordingProxy::Start(server_port, o);      // Result<unique_ptr>
//   ClientConnection::Connect("127.0.0.1", (*proxy)->port(), options);
//   bool leaked = Contains((*proxy)->ClientToServer(), secret_bytes);
// Bounded: two threads per connection plus an acceptor, all joined by Stop()
// and the destructor; recording stops at Options::max_recorded_bytes.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "verdant/core/status.h"

namespace verdant::testing {

class RecordingProxy {
 public:
  // One change to the client->server stream. Frame mutations buffer that
  // direction frame by frame until they have been applied, then pass bytes
  // through unchanged.
  struct Mutation {
    enum class Kind {
      kNone,
      kFlipByte,       // XOR `xor_mask` into one byte: stream byte `after_bytes` if
                       // frame < 0, else payload byte `offset_in_frame` of frame `frame`
      kReplayFrame,    // forward frame `frame` twice
      kDropFrame,      // never forward frame `frame`
      kTruncateFrame,  // forward frame `frame` cut to `truncate_to` payload bytes, with a
                       // consistent length header (a shorter, well-framed record)
      kCutFrame,       // forward the header and `truncate_to` payload bytes of frame
                       // `frame`, then close the connection (EOF inside a frame)
      kSwapFrames,     // forward frame `frame` + 1 before frame `frame` (reorder)
    };
    Kind kind = Kind::kNone;
    int64_t after_bytes = -1;  // kFlipByte on the raw stream: the byte at this offset
    int frame = -1;            // 0-based client->server frame index
    size_t offset_in_frame = SIZE_MAX;  // kFlipByte in a frame; SIZE_MAX = the middle byte
    uint8_t xor_mask = 0x01;
    size_t truncate_to = SIZE_MAX;  // payload bytes kept; SIZE_MAX = half the payload
    int connection = 0;             // which accepted connection (0-based); -1 = every one
  };
  struct Options {
    Mutation mutation;
    size_t max_recorded_bytes = size_t{256} << 20;  // per direction, over all connections
  };

  // Binds 127.0.0.1:0 and starts accepting. kUnavailable when it cannot listen.
  static Result<std::unique_ptr<RecordingProxy>> Start(uint16_t target_port, Options options);
  // A pure recorder (no mutation).
  static Result<std::unique_ptr<RecordingProxy>> Start(uint16_t target_port) { return Start(target_port, Options()); }
  // Use Start().
  struct PassKey {
    explicit PassKey() = default;
  };
  RecordingProxy(PassKey, int listen_fd, uint16_t port, uint16_t target, Options options);
  ~RecordingProxy();
  RecordingProxy(const RecordingProxy&) = delete;
  RecordingProxy& operator=(const RecordingProxy&) = delete;

  uint16_t port() const { return port_; }
  // Stops accepting, closes every connection (both sides see EOF/reset) and
  // joins the threads. Idempotent; the recordings stay readable.
  void Stop();

  // Everything read from clients / from the server, in arrival order per
  // connection, connections concatenated in accept order (unmutated bytes).
  std::vector<uint8_t> ClientToServer() const;
  std::vector<uint8_t> ServerToClient() const;
  size_t connections_accepted() const { return accepted_.load(); }
  // Times the mutation was applied (0 until the chosen frame/byte passed).
  size_t mutations_applied() const { return applied_.load(); }

 private:
  struct Connection;
  void AcceptLoop();
  void PumpClientToServer(Connection& c);
  void PumpServerToClient(Connection& c);
  void Record(Connection& c, bool client_to_server, std::span<const uint8_t> bytes);

  const int listen_fd_;
  const uint16_t port_;
  const uint16_t target_;
  const Options options_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> accepted_{0};
  std::atomic<size_t> applied_{0};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> connections_;  // guarded by mu_
  size_t recorded_c2s_ = 0, recorded_s2c_ = 0;             // guarded by mu_
};

// True when `needle` occurs in `haystack` (needle non-empty).
bool Contains(std::span<const uint8_t> haystack, std::span<const uint8_t> needle);

}  // namespace verdant::testing
