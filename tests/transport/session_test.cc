#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "verdant/testing/fake_client.h"
#include "verdant/transport/session.h"

using namespace verdant;
using namespace std::chrono_literals;

namespace {

// Echoes every Heartbeat back; records closes.
class EchoHandler : public SessionHandler {
 public:
  void OnSessionOpen(const SessionPtr&) override { ++opened; }
  void OnMessage(const SessionPtr& s, wire::Envelope&& m) override {
    ++messages;
    s->Send(m);
  }
  void OnSessionClosed(const SessionPtr&, const Status& reason) override {
    std::lock_guard<std::mutex> l(mu);
    reasons.push_back(reason);
    ++closed;
  }
  bool WaitClosed(int n, std::chrono::milliseconds t = 5000ms) {
    auto end = std::chrono::steady_clock::now() + t;
    while (closed < n && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
    return closed >= n;
  }
  std::string LastReason() {
    std::lock_guard<std::mutex> l(mu);
    return reasons.empty() ? "" : reasons.back().ToString();
  }
  std::atomic<int> opened{0}, messages{0}, closed{0};
  std::mutex mu;
  std::vector<Status> reasons;
};

wire::Envelope Heartbeat(uint64_t seq) {
  wire::Envelope e;
  e.mutable_heartbeat()->set_seq(seq);
  return e;
}

}  // namespace

TEST_CASE("a client and server exchange messages and bytes are counted on both sides") {
  EchoHandler h;
  TcpServer::Options o;
  auto server = TcpServer::Start(o, h);
  REQUIRE(server.ok());
  auto conn = ClientConnection::Connect("127.0.0.1", (*server)->port(), {});
  REQUIRE(conn.ok());
  for (uint64_t i = 1; i <= 50; ++i) REQUIRE((*conn)->Send(Heartbeat(i)).ok());
  for (uint64_t i = 1; i <= 50; ++i) {
    auto m = (*conn)->Receive(5s);
    REQUIRE(m.ok());
    CHECK(m->heartbeat().seq() == i);
  }
  CHECK((*conn)->session().bytes_sent() > 50 * 4);
  CHECK((*conn)->session().bytes_received() == (*conn)->session().bytes_sent());
  (*conn)->Close();
  CHECK(h.WaitClosed(1));
  (*server)->Stop();
}

TEST_CASE("large payloads stream as chunks through frames smaller than the model") {
  EchoHandler h;
  TcpServer::Options o;
  o.session.max_frame_bytes = 64 * 1024;
  auto server = TcpServer::Start(o, h);
  REQUIRE(server.ok());
  ClientConnection::Options co;
  co.session.max_frame_bytes = 64 * 1024;
  auto conn = ClientConnection::Connect("127.0.0.1", (*server)->port(), co);
  REQUIRE(conn.ok());
  std::vector<uint8_t> payload(1 << 20);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 31);
  auto chunks = MakeChunkMessages(9, payload, 32 * 1024);
  for (auto& c : chunks) REQUIRE((*conn)->Send(c).ok());
  wire::PayloadInfo info;
  info.set_stream_id(9);
  info.set_payload_bytes(payload.size());
  info.set_num_chunks(static_cast<uint32_t>(chunks.size()));
  PayloadAssembler a(info, 1 << 24);
  while (!a.complete()) {
    auto m = (*conn)->Receive(5s);
    REQUIRE(m.ok());
    REQUIRE(a.Add(m->chunk()).ok());
  }
  CHECK(a.Take() == payload);
  (*server)->Stop();
}

TEST_CASE("ReceivePayload assembles queued chunks and then chunks straight from the frames") {
  EchoHandler h;  // echoes chunks back through the default OnChunk -> OnMessage
  auto server = TcpServer::Start({}, h);
  REQUIRE(server.ok());
  auto conn = ClientConnection::Connect("127.0.0.1", (*server)->port(), {});
  REQUIRE(conn.ok());
  std::vector<uint8_t> payload(1 << 20);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 29 + 3);
  auto chunks = MakeChunkMessages(4, payload, 16 * 1024);
  wire::PayloadInfo info;
  info.set_stream_id(4);
  info.set_payload_bytes(payload.size());
  info.set_num_chunks(static_cast<uint32_t>(chunks.size()));

  SUBCASE("half queued before the call, half arriving during it") {
    const size_t half = chunks.size() / 2;
    for (size_t i = 0; i < half; ++i) REQUIRE((*conn)->Send(chunks[i]).ok());
    std::this_thread::sleep_for(200ms);  // the echoes wait in the queue
    std::thread rest([&] {
      std::this_thread::sleep_for(50ms);
      for (size_t i = half; i < chunks.size(); ++i) (void)(*conn)->Send(chunks[i]);
    });
    PayloadAssembler a(info, 1 << 24);
    Status st = (*conn)->ReceivePayload(a, 5s);
    rest.join();
    REQUIRE(st.ok());
    CHECK(a.Take() == payload);
  }
  SUBCASE("another message first is data loss and stays queued") {
    REQUIRE((*conn)->Send(Heartbeat(7)).ok());
    for (auto& c : chunks) REQUIRE((*conn)->Send(c).ok());
    std::this_thread::sleep_for(100ms);
    PayloadAssembler a(info, 1 << 24);
    Status st = (*conn)->ReceivePayload(a, 5s);
    CHECK(st.code() == StatusCode::kDataLoss);
    CHECK(st.message().find("Heartbeat") != std::string::npos);
    auto m = (*conn)->Receive(1s);
    REQUIRE(m.ok());
    CHECK(m->heartbeat().seq() == 7);
    // The chunks behind it are still there, in order.
    REQUIRE((*conn)->ReceivePayload(a, 5s).ok());
    CHECK(a.Take() == payload);
  }
  SUBCASE("a chunk of another stream is refused") {
    auto other = MakeChunkMessages(5, payload, 16 * 1024);
    std::thread send([&] {
      std::this_thread::sleep_for(50ms);
      (void)(*conn)->Send(other[0]);
    });
    PayloadAssembler a(info, 1 << 24);
    Status st = (*conn)->ReceivePayload(a, 5s);
    send.join();
    CHECK(st.code() == StatusCode::kDataLoss);
    CHECK(st.message().find("stream 5") != std::string::npos);
  }
  SUBCASE("silence is a deadline") {
    PayloadAssembler a(info, 1 << 24);
    CHECK((*conn)->ReceivePayload(a, 100ms).code() == StatusCode::kDeadlineExceeded);
  }
  (*server)->Stop();
}

TEST_CASE("bad input closes only the offending session while the server keeps serving") {
  EchoHandler h;
  TcpServer::Options o;
  o.session.max_frame_bytes = 1024;
  auto server = TcpServer::Start(o, h);
  REQUIRE(server.ok());
  const uint16_t port = (*server)->port();
  auto good = ClientConnection::Connect("127.0.0.1", port, {});
  REQUIRE(good.ok());

  SUBCASE("a frame longer than the maximum") {
    testing::RawSocket raw(port);
    REQUIRE(raw.connected());
    raw.Write({0x7f, 0xff, 0xff, 0xff});
    CHECK(raw.WaitClosed(3000));
    CHECK(h.WaitClosed(1));
    CHECK(h.LastReason().find("exceeds") != std::string::npos);
  }
  SUBCASE("garbage bytes") {
    testing::RawSocket raw(port);
    raw.Write(testing::Frame({0xde, 0xad, 0xbe, 0xef, 0xff, 0xff}));
    CHECK(raw.WaitClosed(3000));
    CHECK(h.WaitClosed(1));
    CHECK(h.LastReason().find("DATA_LOSS") != std::string::npos);
  }
  SUBCASE("an unknown message type") {
    testing::RawSocket raw(port);
    raw.Write(testing::Frame({0x98, 0x06, 0x05}));
    CHECK(raw.WaitClosed(3000));
    CHECK(h.WaitClosed(1));
    CHECK(h.LastReason().find("unknown message type") != std::string::npos);
  }
  SUBCASE("a truncated frame followed by disconnect") {
    {
      testing::RawSocket raw(port);
      raw.Write({0, 0, 0, 100, 1, 2, 3});
    }
    CHECK(h.WaitClosed(1));
    CHECK(h.LastReason().find("middle of a frame") != std::string::npos);
  }
  SUBCASE("an empty frame") {
    testing::RawSocket raw(port);
    raw.Write({0, 0, 0, 0});
    CHECK(raw.WaitClosed(3000));
    CHECK(h.WaitClosed(1));
  }
  // The established session is unaffected.
  REQUIRE((*good)->Send(Heartbeat(77)).ok());
  auto m = (*good)->Receive(5s);
  REQUIRE(m.ok());
  CHECK(m->heartbeat().seq() == 77);
  (*server)->Stop();
}

TEST_CASE("idle sessions are closed after the idle timeout") {
  EchoHandler h;
  TcpServer::Options o;
  o.session.idle_timeout = 200ms;
  auto server = TcpServer::Start(o, h);
  REQUIRE(server.ok());
  auto conn = ClientConnection::Connect("127.0.0.1", (*server)->port(), {});
  REQUIRE(conn.ok());
  CHECK(h.WaitClosed(1, 3000ms));
  CHECK(h.LastReason().find("no message") != std::string::npos);
  (*server)->Stop();
}

TEST_CASE("connecting to a closed port fails with kUnavailable") {
  uint16_t port;
  {
    EchoHandler h;
    auto server = TcpServer::Start({}, h);
    REQUIRE(server.ok());
    port = (*server)->port();
    (*server)->Stop();
  }
  auto conn = ClientConnection::Connect("127.0.0.1", port, {});
  CHECK(conn.status().code() == StatusCode::kUnavailable);
}

TEST_CASE("Stop closes every session and is idempotent") {
  EchoHandler h;
  auto server = TcpServer::Start({}, h);
  REQUIRE(server.ok());
  std::vector<std::unique_ptr<ClientConnection>> conns;
  for (int i = 0; i < 5; ++i) {
    auto c = ClientConnection::Connect("127.0.0.1", (*server)->port(), {});
    REQUIRE(c.ok());
    conns.push_back(std::move(*c));
  }
  for (int i = 0; i < 100 && h.opened < 5; ++i) std::this_thread::sleep_for(10ms);
  CHECK((*server)->session_count() == 5);
  (*server)->Stop();
  (*server)->Stop();
  CHECK(h.closed == 5);
  for (auto& c : conns) CHECK((*c).Receive(2s).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("a ClientPool runs many sessions on a few threads against a server, and Stop closes them all") {
  EchoHandler server_side;
  auto server = TcpServer::Start({}, server_side);
  REQUIRE(server.ok());
  EchoHandler client_side;  // the pool's sessions echo back too: count what arrives
  ClientPool::Options po;
  po.threads = 1;
  auto pool = ClientPool::Create(po, client_side);
  constexpr int kSessions = 50;
  for (int i = 0; i < kSessions; ++i) {
    REQUIRE(pool->Connect("127.0.0.1", (*server)->port(), std::make_unique<PlaintextHandshaker>()).ok());
  }
  auto end = std::chrono::steady_clock::now() + 10s;
  while ((client_side.opened < kSessions || server_side.opened < kSessions) && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(client_side.opened == kSessions);
  CHECK(pool->session_count() == kSessions);
  CHECK(pool->Connect("127.0.0.1", 1, std::make_unique<PlaintextHandshaker>()).code() == StatusCode::kUnavailable);
  CHECK(pool->Connect("not-an-ip", (*server)->port(), std::make_unique<PlaintextHandshaker>()).code() ==
        StatusCode::kInvalidArgument);
  pool->Stop();
  CHECK(client_side.closed == kSessions);
  CHECK(pool->session_count() == 0);
  CHECK(server_side.WaitClosed(kSessions));
  pool->Stop();  // idempotent
}
