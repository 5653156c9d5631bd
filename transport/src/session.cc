#include "verdant/transport/session.h"

#include <asio.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <future>
#include <charconv>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>

namespace verdant {

void Session::Send(const wire::Envelope& message) {
  auto bytes = SerializeEnvelope(message);
  if (!bytes.ok()) {
    spdlog::error("session {}: {}", id(), bytes.status().ToString());
    return;
  }
  Send(std::make_shared<const ByteBuffer>(std::move(*bytes)));
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& s) {
  auto pos = s.rfind(':');
  if (pos == std::string::npos || pos == 0 || pos + 1 >= s.size()) {
    return InvalidArgumentError("'" + s + "' is not HOST:PORT");
  }
  std::string host = s.substr(0, pos);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(s.data() + pos + 1, s.data() + s.size(), port);
  if (ec != std::errc() || p != s.data() + s.size() || port == 0 || port > 65535) {
    return InvalidArgumentError("'" + s + "': port must be 1..65535");
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

namespace {

using asio::ip::tcp;

// Read and write buffers larger than this are released once the session has
// nothing more to read (or write) right now: a stream of 1 MiB chunks reuses
// one buffer, while thousands of idle sessions pin no model-sized memory.
constexpr size_t kKeepBufferBytes = 256 * 1024;
// Frames one session handles in a row before it yields its strand.
constexpr int kFramesPerTurn = 16;
// The most a session waits to accumulate before its reader is woken in the
// middle of a large frame (SO_RCVLOWAT; well under any receive buffer).
constexpr size_t kMaxLowWater = 256 * 1024;
// Sealing the next frame while one is written doubles a session's write
// memory. For a model broadcast to 1,000 clients that is 1,000 x 2 sealed
// 1 MiB chunks: 2 GiB (measured by the load test, docs/performance.md). So
// frames larger than kKeepBufferBytes are sealed ahead by at most this many
// sessions of the process at a time; the others seal each frame when the
// previous one is written. Never a stall: sealing ahead is an optimisation.
constexpr int kMaxLargeSealAhead = 16;
std::atomic<int> g_large_seal_ahead{0};

// A frame buffer that is not zero-filled when it grows (a socket read, or
// sealing, overwrites every byte before use) and keeps its storage between
// frames.
class FrameBuffer {
 public:
  void Resize(size_t n) {
    if (n > capacity_) {
      data_ = std::make_unique_for_overwrite<uint8_t[]>(n);
      capacity_ = n;
    }
    size_ = n;
  }
  void Release() {
    data_.reset();
    size_ = capacity_ = 0;
  }
  std::span<uint8_t> span() { return {data_.get(), size_}; }
  size_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

class SessionImpl;

wire::Envelope ChunkEnvelope(const ChunkView& c) {
  wire::Envelope env;
  wire::Chunk* chunk = env.mutable_chunk();
  chunk->set_stream_id(c.stream_id);
  chunk->set_seq(c.seq);
  chunk->set_data(c.data.data(), c.data.size());
  return env;
}

// Receives session events; owned by the server or the client connection.
class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  virtual void Opened(const std::shared_ptr<SessionImpl>& s) = 0;
  virtual void Message(const std::shared_ptr<SessionImpl>& s, wire::Envelope&& m) = 0;
  virtual void Chunk(const std::shared_ptr<SessionImpl>& s, const ChunkView& c) { Message(s, ChunkEnvelope(c)); }
  virtual void Closed(const std::shared_ptr<SessionImpl>& s, const Status& reason, bool was_open) = 0;
};

class SessionImpl final : public Session {
 public:
  SessionImpl(SessionId id, tcp::socket socket, const SessionOptions& options,
              std::unique_ptr<Handshaker> handshaker, SessionOwner* owner)
      : id_(id),
        socket_(std::move(socket)),
        strand_(asio::make_strand(socket_.get_executor())),
        timer_(strand_),
        options_(options),
        handshaker_(std::move(handshaker)),
        owner_(owner) {
    std::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    remote_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
    socket_.set_option(tcp::no_delay(true), ec);
  }

  ~SessionImpl() override {
    if (ahead_large_) g_large_seal_ahead.fetch_sub(1);
  }

  SessionId id() const override { return id_; }
  const std::string& peer_id() const override { return peer_id_; }
  const std::string& peer_key() const override { return peer_key_; }
  const std::string& remote_address() const override { return remote_; }
  bool closed() const override { return closed_.load(); }
  uint64_t bytes_sent() const override { return bytes_sent_.load(); }
  uint64_t bytes_received() const override { return bytes_received_.load(); }
  size_t queued_messages() const override { return queued_.load(); }

  std::shared_ptr<SessionImpl> Self() { return std::static_pointer_cast<SessionImpl>(shared_from_this()); }

  void Start() {
    asio::post(strand_, [self = Self()] { self->DoStart(); });
  }

  void Send(SharedBytes message) override {
    if (!message || message->empty()) return;
    ++queued_;
    asio::post(strand_, [self = Self(), m = std::move(message)]() mutable {
      if (self->closing_ || self->closed_) {
        --self->queued_;
        return;
      }
      self->out_.push_back(Out{std::move(m), false});
      self->PumpWrites();
    });
  }

  void CloseWithError(wire::Error::Code code, const std::string& message) override {
    wire::Envelope env;
    env.mutable_error()->set_code(code);
    env.mutable_error()->set_message(message);
    auto bytes = SerializeEnvelope(env);
    asio::post(strand_, [self = Self(), message,
                         b = bytes.ok() ? std::make_shared<const ByteBuffer>(std::move(*bytes)) : nullptr] {
      if (self->closing_ || self->closed_) return;
      if (b && self->records_) {
        ++self->queued_;
        self->out_.push_back(Out{b, false});
      }
      self->BeginGracefulClose(Status(StatusCode::kAborted, message));
    });
  }

  void Close(const Status& reason) override {
    asio::post(strand_, [self = Self(), reason] { self->BeginGracefulClose(reason); });
  }

  // Immediate close (server stop): cancels pending I/O.
  void Abort(const Status& reason) {
    asio::post(strand_, [self = Self(), reason] { self->Fail(reason); });
  }

 private:
  struct Out {
    SharedBytes bytes;
    bool raw;  // handshake frame: not protected by the record layer
  };

  void DoStart() {
    if (options_.handshake_timeout.count() > 0) {
      timer_.expires_after(options_.handshake_timeout);
      timer_.async_wait([self = Self()](const std::error_code& ec) {
        if (!ec && !self->records_) {
          self->Fail(DeadlineExceededError("handshake did not complete within " +
                                           std::to_string(ToSeconds(self->options_.handshake_timeout)) + " s"));
        }
      });
    }
    auto frames = handshaker_->Start();
    if (!frames.ok()) return Fail(frames.status().WithContext("handshake"));
    for (auto& f : *frames) QueueRaw(std::move(f));
    if (!MaybeFinishHandshake()) return;
    std::error_code ec;
    socket_.non_blocking(true, ec);  // ReadSome's reads never block the strand
    if (ec) return Fail(UnavailableError("cannot make the socket non-blocking: " + ec.message()));
    ReadSome();
  }

  void QueueRaw(ByteBuffer frame) {
    ++queued_;
    out_.push_back(Out{std::make_shared<const ByteBuffer>(std::move(frame)), true});
    PumpWrites();
  }

  // Returns false if the session failed.
  bool MaybeFinishHandshake() {
    if (records_ || !handshaker_->Done()) return true;
    auto outcome = handshaker_->Finish();
    if (!outcome.ok()) {
      Fail(outcome.status().WithContext("handshake"));
      return false;
    }
    records_ = std::move(outcome->records);
    peer_id_ = std::move(outcome->peer_id);
    peer_key_ = std::move(outcome->peer_key);
    handshaker_.reset();
    timer_.cancel();
    open_ = true;
    owner_->Opened(Self());
    ArmIdleTimer();
    PumpWrites();
    return !closed_;
  }

  void ArmIdleTimer() {
    if (options_.idle_timeout.count() <= 0 || closed_ || closing_) return;
    timer_.expires_after(options_.idle_timeout);
    timer_.async_wait([self = Self()](const std::error_code& ec) {
      if (ec) return;  // re-armed or cancelled
      self->Fail(DeadlineExceededError("no message for " +
                                       std::to_string(ToSeconds(self->options_.idle_timeout)) + " s"));
    });
  }

  // The read loop. Every frame already in the socket buffer is read and
  // handled here, on the session's strand, with non-blocking reads; only
  // when the socket is drained does the session wait for readability. A
  // busy stream thus stays on one thread instead of bouncing every frame
  // between the reactor and the strand across the pool's threads (which
  // costs wake-ups and moves model-sized buffers between cores).
  void ReadSome() {
    for (int frames = 0; !closed_;) {
      std::error_code ec;
      size_t n;
      if (header_fill_ < kFrameHeaderBytes) {
        n = socket_.read_some(asio::buffer(header_.data() + header_fill_, kFrameHeaderBytes - header_fill_), ec);
      } else {
        const auto dst = frame_.span().subspan(frame_fill_);
        n = socket_.read_some(asio::buffer(dst.data(), dst.size()), ec);
      }
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        // Mid-frame, ask to be woken when (up to kMaxLowWater of) the rest
        // of it has arrived, not for every segment; for a header, at once.
        const size_t want = header_fill_ < kFrameHeaderBytes ? 1 : frame_.span().size() - frame_fill_;
        SetLowWater(std::min(want, kMaxLowWater));
        return WaitReadable();
      }
      if (ec == asio::error::interrupted) continue;
      if (ec) return OnReadError(ec);
      bytes_received_ += n;
      if (header_fill_ < kFrameHeaderBytes) {
        header_fill_ += n;
        if (header_fill_ < kFrameHeaderBytes) continue;
        const uint32_t len = ReadFrameHeader(header_.data());
        Status st = CheckFrameLength(len, options_.max_frame_bytes);
        if (!st.ok()) return Fail(st);
        frame_.Resize(len);
        frame_fill_ = 0;
        // Segments of this frame need not wake anyone until much of it is here.
        SetLowWater(std::min<size_t>(len, kMaxLowWater));
        continue;
      }
      frame_fill_ += n;
      if (frame_fill_ < frame_.span().size()) continue;
      header_fill_ = 0;
      frame_fill_ = 0;
      if (!HandleFrame()) return;
      if (++frames == kFramesPerTurn) {
        // Let this strand's other work (writes, timers) run, then go on.
        asio::post(strand_, [self = Self()] { self->ReadSome(); });
        return;
      }
    }
  }

  // SO_RCVLOWAT: the kernel reports the socket readable (and wakes the
  // reactor, including idle pool threads) only once this many bytes are
  // buffered. Set for each frame and again before every wait (the wait's
  // epoll_ctl re-checks readiness against it). A hint: errors ignored.
  void SetLowWater(size_t bytes) {
    if (bytes == low_water_) return;
    std::error_code ec;
    socket_.set_option(asio::socket_base::receive_low_watermark(static_cast<int>(bytes)), ec);
    low_water_ = ec ? 0 : bytes;
  }

  void WaitReadable() {
    socket_.async_wait(tcp::socket::wait_read,
                       asio::bind_executor(strand_, [self = Self()](const std::error_code& ec) {
                         if (self->closed_) return;
                         if (ec) return self->OnReadError(ec);
                         self->ReadSome();
                       }));
  }

  void OnReadError(const std::error_code& ec) {
    if (closing_) return Fail(close_reason_);
    if (ec == asio::error::eof) {
      if (header_fill_ > 0) return Fail(DataLossError("connection closed in the middle of a frame"));
      return Fail(UnavailableError("peer closed the connection"));
    }
    Fail(UnavailableError("read failed: " + ec.message()));
  }

  // Handles the complete frame in frame_. Returns false once the session closed.
  bool HandleFrame() {
    if (!records_) {
      auto frames = handshaker_->OnFrame(frame_.span());
      if (!frames.ok()) {
        Fail(frames.status().WithContext("handshake"));
        return false;
      }
      for (auto& f : *frames) QueueRaw(std::move(f));
      if (!MaybeFinishHandshake()) return false;
    } else {
      // Decrypt where the frame lies, then parse: no copy of the record.
      auto n = records_->OpenInPlace(frame_.span());
      if (!n.ok()) {
        Fail(n.status().WithContext("record"));
        return false;
      }
      // Chunks, i.e. nearly all the bytes of a model, reach the owner as a
      // view of this frame: no copy into a protobuf string.
      if (auto chunk = ParseChunkView(frame_.span().first(*n))) {
        ArmIdleTimer();
        if (!closing_) owner_->Chunk(Self(), *chunk);
        if (closed_) return false;
        return ReleaseIdleFrame();
      }
      auto env = ParseEnvelope(frame_.span().first(*n));
      if (!env.ok()) {
        Fail(env.status());
        return false;
      }
      ArmIdleTimer();
      if (!closing_) owner_->Message(Self(), std::move(*env));
      if (closed_) return false;
    }
    return ReleaseIdleFrame();
  }

  // Keeps a large frame buffer while a stream is flowing; releases it when
  // idle. Returns true (the session is still open).
  bool ReleaseIdleFrame() {
    if (frame_.capacity() > kKeepBufferBytes) {
      std::error_code ec;
      if (socket_.available(ec) == 0 || ec) frame_.Release();
    }
    return true;
  }

  // Frames the front message into `buf` (raw handshake frame, or a record
  // sealed straight into the buffer, which is not zero-filled first). False
  // when nothing can be framed now (queue empty, or a record waiting for the
  // handshake) or the session failed. The message stays counted in queued_
  // until its write completes.
  bool FrameNext(FrameBuffer& buf) {
    if (out_.empty() || closed_) return false;
    const Out& o = out_.front();
    if (!o.raw && !records_) return false;  // wait for the handshake
    const ByteBuffer& m = *o.bytes;
    Status st;
    if (o.raw) {
      st = m.size() > options_.max_frame_bytes
               ? InvalidArgumentError("handshake message of " + std::to_string(m.size()) + " bytes exceeds the " +
                                      std::to_string(options_.max_frame_bytes) + "-byte frame limit")
               : OkStatus();
      if (st.ok()) {
        buf.Resize(kFrameHeaderBytes + m.size());
        PutFrameHeader(static_cast<uint32_t>(m.size()), buf.span().data());
        std::copy(m.begin(), m.end(), buf.span().begin() + kFrameHeaderBytes);
      }
    } else {
      buf.Resize(records_->FrameBytes(m.size()));
      st = records_->SealFrameInto(m, buf.span(), options_.max_frame_bytes).WithContext("seal");
    }
    out_.pop_front();
    if (!st.ok()) {
      --queued_;
      Fail(st);
      return false;
    }
    return true;
  }

  // One write in flight, and the next frame sealed ahead while it drains:
  // the strand encrypts frame n+1 while the kernel and the peer take frame n.
  void PumpWrites() {
    if (closed_) return;
    if (!writing_) {
      if (ahead_ready_) {
        std::swap(wbuf_, ahead_);
        ahead_ready_ = false;
        if (ahead_large_) {
          g_large_seal_ahead.fetch_sub(1);
          ahead_large_ = false;
        }
      } else if (!FrameNext(wbuf_)) {
        if (!closed_ && closing_ && out_.empty()) Finish(close_reason_);
        return;
      }
      writing_ = true;
      // Counted when handed to the socket: a peer may answer before this
      // write's completion handler runs, and per-round byte counts must
      // already include what the peer answered to. A failed write ends the
      // session.
      bytes_sent_ += wbuf_.span().size();
      asio::async_write(socket_, asio::buffer(wbuf_.span().data(), wbuf_.span().size()),
                        asio::bind_executor(strand_, [self = Self()](const std::error_code& ec, size_t n) {
                          self->writing_ = false;
                          --self->queued_;  // written, or failed for good
                          if (ec) return self->Fail(UnavailableError("write failed: " + ec.message()));
                          (void)n;
                          self->PumpWrites();
                          if (!self->writing_) self->ReleaseIdleWriteBuffers();
                        }));
    }
    if (ahead_ready_ || out_.empty() || closed_) return;
    const bool large = out_.front().bytes->size() > kKeepBufferBytes;
    if (large && g_large_seal_ahead.fetch_add(1) >= kMaxLargeSealAhead) {
      g_large_seal_ahead.fetch_sub(1);
      // Not sealing ahead: don't keep a large spare buffer either.
      if (ahead_.capacity() > kKeepBufferBytes) ahead_.Release();
      return;
    }
    if (FrameNext(ahead_)) {
      ahead_ready_ = true;
      ahead_large_ = large;
    } else if (large) {
      g_large_seal_ahead.fetch_sub(1);
    }
  }

  // Idle: don't pin model-sized write buffers.
  void ReleaseIdleWriteBuffers() {
    if (wbuf_.capacity() > kKeepBufferBytes) wbuf_.Release();
    if (!ahead_ready_ && ahead_.capacity() > kKeepBufferBytes) ahead_.Release();
  }

  void BeginGracefulClose(const Status& reason) {
    if (closing_ || closed_) return;
    closing_ = true;
    close_reason_ = reason;
    PumpWrites();
  }

  // Half-closes after flushing, so the peer reads everything we sent.
  // The socket closes when the peer answers with EOF, or after a grace period
  // (closing with unread input would reset the connection and could destroy
  // the Error message we just sent).
  void Finish(const Status& reason) {
    if (closed_ || half_closed_) return;
    half_closed_ = true;
    std::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    timer_.expires_after(std::chrono::seconds(2));
    timer_.async_wait([self = Self(), reason](const std::error_code& e) {
      if (!e) self->Fail(reason);
    });
  }

  void Fail(const Status& reason) {
    if (closed_) return;
    closed_ = true;
    std::error_code ec;
    timer_.cancel();
    socket_.close(ec);
    // The frame being written (if any) is uncounted by its write handler,
    // which still runs (with operation_aborted).
    queued_ -= out_.size() + (ahead_ready_ ? 1 : 0);
    out_.clear();
    ahead_ready_ = false;
    if (ahead_large_) {
      g_large_seal_ahead.fetch_sub(1);
      ahead_large_ = false;
    }
    owner_->Closed(Self(), reason, open_);
  }

  const SessionId id_;
  tcp::socket socket_;
  asio::strand<asio::any_io_executor> strand_;
  asio::steady_timer timer_;
  SessionOptions options_;
  std::unique_ptr<Handshaker> handshaker_;
  std::unique_ptr<RecordLayer> records_;
  SessionOwner* owner_;
  std::string peer_id_, peer_key_, remote_;
  std::array<uint8_t, kFrameHeaderBytes> header_{};
  size_t header_fill_ = 0;  // header bytes read so far
  size_t frame_fill_ = 0;   // payload bytes of frame_ read so far
  size_t low_water_ = 1;    // SO_RCVLOWAT in force (0: unknown)
  FrameBuffer frame_;
  FrameBuffer wbuf_;   // the frame being written
  FrameBuffer ahead_;  // the next frame, sealed while wbuf_ is written
  std::deque<Out> out_;
  bool writing_ = false;
  bool ahead_ready_ = false;
  bool ahead_large_ = false;  // ahead_ holds a large frame counted in g_large_seal_ahead
  bool closing_ = false;
  bool half_closed_ = false;
  bool open_ = false;
  Status close_reason_;
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> bytes_sent_{0}, bytes_received_{0};
  std::atomic<size_t> queued_{0};
};

// ---------------------------------------------------------------------------

class TcpServerImpl final : public TcpServer, public SessionOwner {
 public:
  TcpServerImpl(const Options& options, SessionHandler& handler)
      : options_(options), handler_(handler), acceptor_(io_) {}

  ~TcpServerImpl() override { Stop(); }

  Status Bind() {
    std::error_code ec;
    auto addr = asio::ip::make_address(options_.host, ec);
    if (ec) return InvalidArgumentError("bad listen address '" + options_.host + "': " + ec.message());
    tcp::endpoint ep(addr, options_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return UnavailableError("cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                              ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    Accept();
    int n = std::max(1, options_.threads);
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { io_.run(); });
    return OkStatus();
  }

  uint16_t port() const override { return port_; }

  size_t session_count() const override {
    std::lock_guard<std::mutex> l(mu_);
    return sessions_.size();
  }

  void Stop() override {
    bool expected = false;
    if (!stopping_.compare_exchange_strong(expected, true)) {
      JoinThreads();
      return;
    }
    asio::post(io_, [this] {
      std::error_code ec;
      acceptor_.close(ec);
    });
    std::vector<std::shared_ptr<SessionImpl>> all;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& [id, s] : sessions_) all.push_back(s);
    }
    for (auto& s : all) s->Abort(CancelledError("server shutting down"));
    // Wait (bounded) for sessions to report closed, then stop the loop.
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (sessions_.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    work_.reset();
    io_.stop();
    JoinThreads();
  }

  void Opened(const std::shared_ptr<SessionImpl>& s) override { handler_.OnSessionOpen(s); }
  void Message(const std::shared_ptr<SessionImpl>& s, wire::Envelope&& m) override {
    handler_.OnMessage(s, std::move(m));
  }
  void Chunk(const std::shared_ptr<SessionImpl>& s, const ChunkView& c) override { handler_.OnChunk(s, c); }
  void Closed(const std::shared_ptr<SessionImpl>& s, const Status& reason, bool was_open) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      sessions_.erase(s->id());
    }
    if (was_open) {
      handler_.OnSessionClosed(s, reason);
    } else {
      spdlog::info("connection {} from {} dropped before the handshake completed: {}", s->id(),
                   s->remote_address(), reason.ToString());
    }
  }

 private:
  void Accept() {
    acceptor_.async_accept([this](const std::error_code& ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted || stopping_) return;
        spdlog::warn("accept failed: {}", ec.message());
        // Back off briefly on resource exhaustion (EMFILE) instead of spinning.
        auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
        t->async_wait([this, t](const std::error_code&) { Accept(); });
        return;
      }
      if (stopping_) return;
      std::shared_ptr<SessionImpl> s;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (sessions_.size() >= options_.max_sessions) {
          std::error_code ignored;
          socket.close(ignored);
        } else {
          s = std::make_shared<SessionImpl>(++next_id_, std::move(socket), options_.session,
                                            options_.handshaker(), this);
          sessions_[s->id()] = s;
        }
      }
      if (s) s->Start();
      Accept();
    });
  }

  void JoinThreads() {
    for (auto& t : threads_) {
      if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
    }
    threads_.clear();
  }

  Options options_;
  SessionHandler& handler_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::unordered_map<SessionId, std::shared_ptr<SessionImpl>> sessions_;
  SessionId next_id_ = 0;
  std::atomic<bool> stopping_{false};
};

// ---------------------------------------------------------------------------

class ClientConnectionImpl final : public ClientConnection, public SessionOwner {
 public:
  ClientConnectionImpl() = default;
  ~ClientConnectionImpl() override {
    Close();
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  Status Connect(const std::string& host, uint16_t port, const Options& options) {
    thread_ = std::thread([this] { io_.run(); });
    std::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(host, std::to_string(port), ec);
    if (ec) return UnavailableError("cannot resolve " + host + ": " + ec.message());
    tcp::socket socket(io_);
    // Connect with a timeout: async connect + wait on a future.
    std::promise<std::error_code> done;
    auto fut = done.get_future();
    asio::async_connect(socket, endpoints,
                        [&done](const std::error_code& e, const tcp::endpoint&) { done.set_value(e); });
    if (fut.wait_for(options.connect_timeout) != std::future_status::ready) {
      asio::post(io_, [&socket] {
        std::error_code ignored;
        socket.close(ignored);
      });
      fut.wait();
      return UnavailableError("connecting to " + host + ":" + std::to_string(port) + " timed out");
    }
    ec = fut.get();
    if (ec) {
      return UnavailableError("cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message());
    }
    session_ = std::make_shared<SessionImpl>(1, std::move(socket), options.session,
                                             options.handshaker(), this);
    session_->Start();
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return opened_ || closed_; });
    if (!opened_) return close_reason_;
    return OkStatus();
  }

  Status Send(const wire::Envelope& message) override {
    auto bytes = SerializeEnvelope(message);
    if (!bytes.ok()) return bytes.status();
    return Send(std::make_shared<const ByteBuffer>(std::move(*bytes)));
  }

  Status Send(SharedBytes message) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (closed_) return UnavailableError("connection closed: " + close_reason_.ToString());
    }
    session_->Send(std::move(message));
    return OkStatus();
  }

  Result<wire::Envelope> Receive(Duration timeout) override {
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, timeout, [this] { return !inbox_.empty() || closed_; })) {
      return DeadlineExceededError("no message within " + std::to_string(ToSeconds(timeout)) + " s");
    }
    if (!inbox_.empty()) {
      auto m = std::move(inbox_.front());
      inbox_.pop_front();
      return m;
    }
    return UnavailableError("connection closed: " + close_reason_.ToString());
  }

  Status ReceivePayload(PayloadAssembler& assembler, Duration timeout) override {
    std::unique_lock<std::mutex> l(mu_);
    // What arrived before the call, in order.
    while (!inbox_.empty() && !assembler.complete()) {
      if (!inbox_.front().has_chunk()) {
        return DataLossError("expected a payload Chunk, got " + std::string(MessageTypeName(inbox_.front())));
      }
      Status st = assembler.Add(inbox_.front().chunk());
      inbox_.pop_front();
      VERDANT_RETURN_IF_ERROR(st);
    }
    if (assembler.complete()) return OkStatus();
    // The rest on the connection's thread, as the frames are opened.
    sink_ = &assembler;
    sink_status_ = OkStatus();
    for (;;) {
      const uint64_t before = assembler.bytes_received();
      const bool woke = cv_.wait_for(l, timeout, [&] {
        return assembler.complete() || !sink_status_.ok() || !inbox_.empty() || closed_ ||
               assembler.bytes_received() != before;
      });
      if (assembler.complete() || !sink_status_.ok() || !inbox_.empty() || closed_ || !woke) break;
    }
    sink_ = nullptr;
    if (!sink_status_.ok()) return sink_status_;
    if (assembler.complete()) return OkStatus();
    if (!inbox_.empty()) {
      return DataLossError("expected a payload Chunk, got " + std::string(MessageTypeName(inbox_.front())));
    }
    if (closed_) return UnavailableError("connection closed: " + close_reason_.ToString());
    return DeadlineExceededError("no payload chunk within " + std::to_string(ToSeconds(timeout)) + " s");
  }

  Status Flush(Duration timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (session_->queued_messages() > 0) {
      if (session_->closed()) return UnavailableError("connection closed before the data was sent");
      if (std::chrono::steady_clock::now() > deadline) return DeadlineExceededError("flush timed out");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return OkStatus();
  }

  void Close() override {
    if (!session_) return;
    session_->Close(CancelledError("closed by client"));
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(5), [this] { return closed_; });
  }

  const Session& session() const override { return *session_; }

  void Opened(const std::shared_ptr<SessionImpl>&) override {
    std::lock_guard<std::mutex> l(mu_);
    opened_ = true;
    cv_.notify_all();
  }
  void Message(const std::shared_ptr<SessionImpl>&, wire::Envelope&& m) override {
    std::lock_guard<std::mutex> l(mu_);
    inbox_.push_back(std::move(m));
    cv_.notify_all();
  }
  void Chunk(const std::shared_ptr<SessionImpl>&, const ChunkView& c) override {
    std::lock_guard<std::mutex> l(mu_);
    // Into the waiting ReceivePayload's assembler, unless something is
    // queued ahead of this chunk (order) or the sink already failed.
    if (sink_ != nullptr && inbox_.empty() && sink_status_.ok() && !sink_->complete()) {
      sink_status_ = sink_->Add(c);
    } else {
      inbox_.push_back(ChunkEnvelope(c));
    }
    cv_.notify_all();
  }
  void Closed(const std::shared_ptr<SessionImpl>&, const Status& reason, bool) override {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    close_reason_ = reason;
    cv_.notify_all();
  }

 private:
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
  std::thread thread_;
  std::shared_ptr<SessionImpl> session_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<wire::Envelope> inbox_;
  PayloadAssembler* sink_ = nullptr;  // set while ReceivePayload waits
  Status sink_status_;
  bool opened_ = false;
  bool closed_ = false;
  Status close_reason_;
};

// ---------------------------------------------------------------------------

class ClientPoolImpl final : public ClientPool, public SessionOwner {
 public:
  ClientPoolImpl(const Options& options, SessionHandler& handler) : options_(options), handler_(handler) {
    const int n = std::max(1, options_.threads);
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~ClientPoolImpl() override { Stop(); }

  Status Connect(const std::string& host, uint16_t port, std::unique_ptr<Handshaker> handshaker,
                 Duration timeout) override {
    if (stopping_) return UnavailableError("client pool stopped");
    std::error_code ec;
    auto addr = asio::ip::make_address(host, ec);
    if (ec) return InvalidArgumentError("bad address '" + host + "': " + ec.message());
    tcp::socket socket(io_);
    std::promise<std::error_code> done;
    auto fut = done.get_future();
    socket.async_connect(tcp::endpoint(addr, port), [&done](const std::error_code& e) { done.set_value(e); });
    if (fut.wait_for(timeout) != std::future_status::ready) {
      asio::post(io_, [&socket] {
        std::error_code ignored;
        socket.close(ignored);
      });
      fut.wait();
      return UnavailableError("connecting to " + host + ":" + std::to_string(port) + " timed out");
    }
    ec = fut.get();
    if (ec) return UnavailableError("cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message());
    std::shared_ptr<SessionImpl> s;
    {
      std::lock_guard<std::mutex> l(mu_);
      s = std::make_shared<SessionImpl>(++next_id_, std::move(socket), options_.session, std::move(handshaker), this);
      sessions_[s->id()] = s;
    }
    s->Start();
    return OkStatus();
  }

  void Stop() override {
    bool expected = false;
    if (!stopping_.compare_exchange_strong(expected, true)) return;
    std::vector<std::shared_ptr<SessionImpl>> all;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& [id, s] : sessions_) all.push_back(s);
    }
    for (auto& s : all) s->Abort(CancelledError("client pool stopped"));
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (sessions_.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    work_.reset();
    io_.stop();
    for (auto& t : threads_) {
      if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
    }
  }

  size_t session_count() const override {
    std::lock_guard<std::mutex> l(mu_);
    return sessions_.size();
  }

  void Opened(const std::shared_ptr<SessionImpl>& s) override { handler_.OnSessionOpen(s); }
  void Message(const std::shared_ptr<SessionImpl>& s, wire::Envelope&& m) override {
    handler_.OnMessage(s, std::move(m));
  }
  void Chunk(const std::shared_ptr<SessionImpl>& s, const ChunkView& c) override { handler_.OnChunk(s, c); }
  void Closed(const std::shared_ptr<SessionImpl>& s, const Status& reason, bool was_open) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      sessions_.erase(s->id());
    }
    if (was_open) {
      handler_.OnSessionClosed(s, reason);
    } else {
      spdlog::warn("client session {} failed before its handshake completed: {}", s->id(), reason.ToString());
    }
  }

 private:
  Options options_;
  SessionHandler& handler_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::unordered_map<SessionId, std::shared_ptr<SessionImpl>> sessions_;
  SessionId next_id_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace

void SessionHandler::OnChunk(const SessionPtr& session, const ChunkView& chunk) {
  OnMessage(session, ChunkEnvelope(chunk));
}

std::unique_ptr<ClientPool> ClientPool::Create(const Options& options, SessionHandler& handler) {
  return std::make_unique<ClientPoolImpl>(options, handler);
}

Result<std::unique_ptr<TcpServer>> TcpServer::Start(const Options& options, SessionHandler& handler) {
  auto s = std::make_unique<TcpServerImpl>(options, handler);
  VERDANT_RETURN_IF_ERROR(s->Bind());
  return std::unique_ptr<TcpServer>(std::move(s));
}

Result<std::unique_ptr<ClientConnection>> ClientConnection::Connect(const std::string& host, uint16_t port,
                                                                    const Options& options) {
  auto c = std::make_unique<ClientConnectionImpl>();
  VERDANT_RETURN_IF_ERROR(c->Connect(host, port, options));
  return std::unique_ptr<ClientConnection>(std::move(c));
}

}  // namespace verdant
