// verdant/transport/session.h
//
// Session: one TCP connection speaking wire protocol v1 — handshake frames
// first, then one RecordLayer-protected Envelope per frame. Reads and writes
// run on the session's strand; Send/Close may be called from any thread.
// TcpServer accepts sessions on a small io_context thread pool;
// ClientConnection is the blocking connector a client uses.
//   TcpServer::Options o;  o.port = 7070;  o.handshaker = PlaintextHandshakerFactory();
//   auto server = TcpServer::Start(o, handler);     // handler: SessionHandler
//   session->Send(envelope);                         // queued, never blocks
//   session->CloseWithError(wire::Error::PROTOCOL_VIOLATION, "expected Hello");
// Thread-safety: Session, TcpServer and ClientConnection are thread-safe.
// SessionHandler callbacks for one session are serialised on its strand;
// callbacks for different sessions may run concurrently.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/transport/framing.h"
#include "verdant/transport/handshake.h"
#include "verdant/transport/message.h"

namespace asio {
class io_context;
}

namespace verdant {

using SessionId = uint64_t;
class Session;
using SessionPtr = std::shared_ptr<Session>;

struct SessionOptions {
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;  // bytes; checked before allocation
  Duration handshake_timeout = std::chrono::seconds(10);
  // Close a session that sends nothing for this long (0 = never).
  Duration idle_timeout = Duration::zero();
};

class SessionHandler {
 public:
  virtual ~SessionHandler() = default;
  // The handshake completed; the session can send and receive messages.
  virtual void OnSessionOpen(const SessionPtr& session) = 0;
  // One decoded message. Malformed frames never reach here: they close the
  // session with the reason.
  virtual void OnMessage(const SessionPtr& session, wire::Envelope&& message) = 0;
  // A Chunk message, as a view of the decrypted frame that is valid only
  // during the call, so a handler can copy model-sized payloads once. The
  // default makes the Envelope and calls OnMessage.
  virtual void OnChunk(const SessionPtr& session, const ChunkView& chunk);
  // Called exactly once per session that reached OnSessionOpen, with why it closed.
  virtual void OnSessionClosed(const SessionPtr& session, const Status& reason) = 0;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  virtual SessionId id() const = 0;
  // Authenticated peer identity from the handshake (empty for plaintext).
  virtual const std::string& peer_id() const = 0;
  virtual const std::string& peer_key() const = 0;
  virtual const std::string& remote_address() const = 0;
  // Queues one serialised Envelope (shared: a model's chunks are serialised
  // once and sent to many sessions). No-op once closing.
  virtual void Send(SharedBytes message) = 0;
  void Send(const wire::Envelope& message);
  // Sends an Error message, flushes, then closes.
  virtual void CloseWithError(wire::Error::Code code, const std::string& message) = 0;
  // Flushes queued messages, then closes.
  virtual void Close(const Status& reason) = 0;
  virtual bool closed() const = 0;
  // Bytes that crossed the socket (frame headers and record overhead included).
  virtual uint64_t bytes_sent() const = 0;
  virtual uint64_t bytes_received() const = 0;
  // Messages queued but not yet written.
  virtual size_t queued_messages() const = 0;
};

class TcpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;  // 0 = pick a free port (see port())
    int threads = 2;    // io_context threads
    SessionOptions session;
    HandshakerFactory handshaker = PlaintextHandshakerFactory();
    size_t max_sessions = 20000;  // further connections are refused
  };
  virtual ~TcpServer() = default;
  // Binds and starts accepting. kUnavailable when the address cannot be bound.
  static Result<std::unique_ptr<TcpServer>> Start(const Options& options, SessionHandler& handler);
  virtual uint16_t port() const = 0;
  // Stops accepting, closes every session (handlers see OnSessionClosed),
  // joins the threads. Idempotent.
  virtual void Stop() = 0;
  virtual size_t session_count() const = 0;
};

// A client's connection to the coordinator: a session on its own io thread,
// with a blocking receive queue.
class ClientConnection {
 public:
  struct Options {
    SessionOptions session;
    HandshakerFactory handshaker = PlaintextHandshakerFactory();
    Duration connect_timeout = std::chrono::seconds(10);
  };
  virtual ~ClientConnection() = default;
  // Connects and completes the handshake. kUnavailable when the server is
  // unreachable; the handshake's error when it fails.
  static Result<std::unique_ptr<ClientConnection>> Connect(const std::string& host, uint16_t port,
                                                           const Options& options);
  virtual Status Send(const wire::Envelope& message) = 0;
  virtual Status Send(SharedBytes message) = 0;
  // Next message. kDeadlineExceeded on timeout; kUnavailable with the reason
  // once the connection is closed and the queue drained.
  virtual Result<wire::Envelope> Receive(Duration timeout) = 0;
  // Feeds the Chunk messages that follow into `assembler`, in order, until
  // it is complete: chunks already queued first, then each straight from
  // its decrypted frame (one copy, on the connection's thread, while this
  // call waits). kDataLoss when another message comes first (it stays
  // queued for Receive) or the assembler refuses a chunk;
  // kDeadlineExceeded when no chunk arrives for `timeout`; kUnavailable once
  // the connection is closed.
  virtual Status ReceivePayload(PayloadAssembler& assembler, Duration timeout) = 0;
  // Blocks until every queued message has been written (or the connection
  // closed: kUnavailable).
  virtual Status Flush(Duration timeout) = 0;
  virtual void Close() = 0;
  virtual const Session& session() const = 0;
};

// Many client sessions on one small io_context thread pool, their events
// delivered to one SessionHandler: for load tests and tools that stand in for
// thousands of devices (ClientConnection costs a thread per connection).
// Sessions are the same Session implementation servers use.
//   auto pool = ClientPool::Create({}, handler);
//   VERDANT_RETURN_IF_ERROR(pool->Connect("127.0.0.1", port, handshaker_factory()));
//   // handler.OnSessionOpen(session) once the handshake completes
// Thread-safety: thread-safe; handler callbacks as for TcpServer.
class ClientPool {
 public:
  struct Options {
    SessionOptions session;
    int threads = 2;  // io_context threads
  };
  virtual ~ClientPool() = default;
  static std::unique_ptr<ClientPool> Create(const Options& options, SessionHandler& handler);
  // Connects (blocking, bounded by `timeout`) and starts the handshake; the
  // handler sees OnSessionOpen when it completes, or nothing if it fails
  // (the failure is logged). kUnavailable when the connection fails.
  virtual Status Connect(const std::string& host, uint16_t port, std::unique_ptr<Handshaker> handshaker,
                         Duration timeout = std::chrono::seconds(10)) = 0;
  // Closes every session (handlers see OnSessionClosed) and joins the
  // threads. Idempotent.
  virtual void Stop() = 0;
  // Sessions connected and not yet closed (handshaking or open).
  virtual size_t session_count() const = 0;
};

// Parses "host:port". kInvalidArgument otherwise.
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s);

}  // namespace verdant
