#include "verdant/testing/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "verdant/transport/framing.h"

namespace verdant::testing {

namespace {

constexpr size_t kReadBytes = 64 * 1024;
// A frame header claiming more than this switches a frame-mode pump back to
// pass-through (no test traffic comes close; a hostile length must not make
// the proxy buffer without bound).
constexpr uint32_t kMaxBufferedFrame = 64u << 20;

bool SendAll(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool SendAll(int fd, std::span<const uint8_t> bytes) { return SendAll(fd, bytes.data(), bytes.size()); }

// Reads up to kReadBytes, waking every 50 ms to check `stopping`.
// Returns >0 bytes read, 0 on EOF or error, -1 when stopping.
ssize_t ReadSome(int fd, uint8_t* buf, const std::atomic<bool>& stopping) {
  while (!stopping.load()) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r < 0 && errno != EINTR) return 0;
    if (r <= 0) continue;
    ssize_t n = ::recv(fd, buf, kReadBytes, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    return n < 0 ? 0 : n;
  }
  return -1;
}

int ConnectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

struct RecordingProxy::Connection {
  size_t index = 0;
  int client_fd = -1;
  int server_fd = -1;
  std::vector<uint8_t> c2s, s2c;  // guarded by RecordingProxy::mu_
  std::thread c2s_thread, s2c_thread;
};

Result<std::unique_ptr<RecordingProxy>> RecordingProxy::Start(uint16_t target_port, Options options) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return UnavailableError(std::string("proxy socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 256) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    return UnavailableError("proxy cannot listen on 127.0.0.1: " + why);
  }
  return std::make_unique<RecordingProxy>(PassKey(), fd, ntohs(addr.sin_port), target_port, options);
}

RecordingProxy::RecordingProxy(PassKey, int listen_fd, uint16_t port, uint16_t target, Options options)
    : listen_fd_(listen_fd), port_(port), target_(target), options_(options) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

RecordingProxy::~RecordingProxy() {
  Stop();
  ::close(listen_fd_);
}

void RecordingProxy::Stop() {
  stopping_.store(true);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<Connection*> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& c : connections_) all.push_back(c.get());
  }
  for (Connection* c : all) {
    // Wakes threads blocked in send(); readers notice `stopping_` within 50 ms.
    ::shutdown(c->client_fd, SHUT_RDWR);
    ::shutdown(c->server_fd, SHUT_RDWR);
  }
  for (Connection* c : all) {
    if (c->c2s_thread.joinable()) c->c2s_thread.join();
    if (c->s2c_thread.joinable()) c->s2c_thread.join();
    if (c->client_fd >= 0) ::close(c->client_fd);
    if (c->server_fd >= 0) ::close(c->server_fd);
    c->client_fd = c->server_fd = -1;
  }
}

void RecordingProxy::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int server = ConnectLoopback(target_);
    if (server < 0) {
      ::close(client);
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->index = accepted_.fetch_add(1);
    c->client_fd = client;
    c->server_fd = server;
    Connection* raw = c.get();
    std::lock_guard<std::mutex> l(mu_);
    connections_.push_back(std::move(c));
    raw->c2s_thread = std::thread([this, raw] { PumpClientToServer(*raw); });
    raw->s2c_thread = std::thread([this, raw] { PumpServerToClient(*raw); });
  }
}

void RecordingProxy::Record(Connection& c, bool client_to_server, std::span<const uint8_t> bytes) {
  std::lock_guard<std::mutex> l(mu_);
  size_t& total = client_to_server ? recorded_c2s_ : recorded_s2c_;
  const size_t room = options_.max_recorded_bytes - std::min(options_.max_recorded_bytes, total);
  const size_t n = std::min(room, bytes.size());
  auto& into = client_to_server ? c.c2s : c.s2c;
  into.insert(into.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
  total += n;
}

void RecordingProxy::PumpServerToClient(Connection& c) {
  std::vector<uint8_t> buf(kReadBytes);
  for (;;) {
    ssize_t n = ReadSome(c.server_fd, buf.data(), stopping_);
    if (n <= 0) break;
    Record(c, false, {buf.data(), static_cast<size_t>(n)});
    if (!SendAll(c.client_fd, buf.data(), static_cast<size_t>(n))) break;
  }
  // Pass the end of the stream on (EOF, or the server's reset) to the client.
  ::shutdown(c.client_fd, SHUT_WR);
}

void RecordingProxy::PumpClientToServer(Connection& c) {
  using Kind = Mutation::Kind;
  const Mutation& m = options_.mutation;
  const bool mine = m.kind != Kind::kNone &&
                    (m.connection < 0 || static_cast<size_t>(m.connection) == c.index);
  const bool by_offset = mine && m.kind == Kind::kFlipByte && m.frame < 0;
  // Frame mode: split the stream into frames until the mutation is applied.
  bool frame_mode = mine && !by_offset && m.frame >= 0;
  bool cut = false;  // kCutFrame applied: forward nothing more
  uint64_t offset = 0;
  int frame_index = 0;
  std::vector<uint8_t> pending;             // bytes of incomplete frames (frame mode)
  std::optional<std::vector<uint8_t>> held;  // kSwapFrames: frame `m.frame`, header included
  std::vector<uint8_t> buf(kReadBytes);
  bool ok = true;

  // Handles one whole frame (header + payload) in frame mode.
  auto on_frame = [&](std::vector<uint8_t> frame) {
    const int k = frame_index++;
    const size_t payload = frame.size() - kFrameHeaderBytes;
    if (k < m.frame) return SendAll(c.server_fd, frame);
    bool sent = true;
    switch (m.kind) {
      case Kind::kFlipByte: {
        size_t at = m.offset_in_frame == SIZE_MAX ? payload / 2 : std::min(m.offset_in_frame, payload - 1);
        frame[kFrameHeaderBytes + at] ^= m.xor_mask;
        sent = SendAll(c.server_fd, frame);
        break;
      }
      case Kind::kReplayFrame:
        sent = SendAll(c.server_fd, frame) && SendAll(c.server_fd, frame);
        break;
      case Kind::kDropFrame:
        break;
      case Kind::kTruncateFrame:
      case Kind::kCutFrame: {
        const size_t keep = std::min(payload, m.truncate_to == SIZE_MAX ? payload / 2 : m.truncate_to);
        if (m.kind == Kind::kTruncateFrame) PutFrameHeader(static_cast<uint32_t>(keep), frame.data());
        frame.resize(kFrameHeaderBytes + keep);
        sent = SendAll(c.server_fd, frame);
        if (m.kind == Kind::kCutFrame) {
          ::shutdown(c.server_fd, SHUT_WR);
          cut = true;
        }
        break;
      }
      case Kind::kSwapFrames:
        if (k == m.frame) {
          held = std::move(frame);
          return true;  // not applied yet: wait for the next frame
        }
        sent = SendAll(c.server_fd, frame) && SendAll(c.server_fd, *held);
        held.reset();
        break;
      case Kind::kNone:
        break;
    }
    applied_.fetch_add(1);
    frame_mode = false;
    return sent;
  };

  while (ok && !cut) {
    ssize_t got = ReadSome(c.client_fd, buf.data(), stopping_);
    if (got <= 0) break;
    const size_t n = static_cast<size_t>(got);
    Record(c, true, {buf.data(), n});
    if (!frame_mode) {
      if (by_offset && m.after_bytes >= 0) {
        const uint64_t at = static_cast<uint64_t>(m.after_bytes);
        if (at >= offset && at < offset + n) {
          buf[at - offset] ^= m.xor_mask;
          applied_.fetch_add(1);
        }
      }
      offset += n;
      ok = SendAll(c.server_fd, buf.data(), n);
      continue;
    }
    offset += n;
    pending.insert(pending.end(), buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n));
    size_t pos = 0;
    while (ok && frame_mode && !cut && pending.size() - pos >= kFrameHeaderBytes) {
      const uint32_t len = ReadFrameHeader(pending.data() + pos);
      if (len == 0 || len > kMaxBufferedFrame) {
        frame_mode = false;  // not a frame we can handle: pass the rest through
        break;
      }
      if (pending.size() - pos < kFrameHeaderBytes + len) break;
      std::vector<uint8_t> frame(pending.begin() + static_cast<ptrdiff_t>(pos),
                                 pending.begin() + static_cast<ptrdiff_t>(pos + kFrameHeaderBytes + len));
      pos += kFrameHeaderBytes + len;
      ok = on_frame(std::move(frame));
    }
    if (!frame_mode && !cut && ok) {
      // Mutation done (or abandoned): forward the rest unchanged from now on.
      ok = SendAll(c.server_fd, std::span<const uint8_t>(pending).subspan(pos));
      pending.clear();
    } else {
      pending.erase(pending.begin(), pending.begin() + static_cast<ptrdiff_t>(pos));
    }
  }
  if (ok && !cut) {
    // EOF from the client: forward what is still buffered, unchanged.
    if (held) ok = SendAll(c.server_fd, *held);
    if (ok && !pending.empty()) SendAll(c.server_fd, pending);
  }
  ::shutdown(c.server_fd, SHUT_WR);
  // After a cut, keep reading (and recording) the client until it closes, so
  // its writes do not fail before it sees the server's reaction.
  while (cut) {
    ssize_t got = ReadSome(c.client_fd, buf.data(), stopping_);
    if (got <= 0) break;
    Record(c, true, {buf.data(), static_cast<size_t>(got)});
  }
}

std::vector<uint8_t> RecordingProxy::ClientToServer() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<uint8_t> out;
  for (const auto& c : connections_) out.insert(out.end(), c->c2s.begin(), c->c2s.end());
  return out;
}

std::vector<uint8_t> RecordingProxy::ServerToClient() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<uint8_t> out;
  for (const auto& c : connections_) out.insert(out.end(), c->s2c.begin(), c->s2c.end());
  return out;
}

bool Contains(std::span<const uint8_t> haystack, std::span<const uint8_t> needle) {
  if (needle.empty() || haystack.size() < needle.size()) return false;
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

}  // namespace verdant::testing
