// Live secure sessions (TcpServer + ClientConnection over Noise XX) under
// attack: each attack must end the attacked session with a clean, named
// rejection while another established session on the same server keeps
// exchanging messages. Record attacks go through testing::RecordingProxy.
#include <doctest/doctest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "verdant/testing/fake_client.h"
#include "verdant/testing/proxy.h"
#include "verdant/testing/temp_dir.h"
#include "verdant/transport/secure_channel.h"
#include "verdant/transport/session.h"

using namespace verdant;
using namespace std::chrono_literals;
using testing::RecordingProxy;
using Kind = RecordingProxy::Mutation::Kind;

namespace {

// Client->server frames of a Noise XX connection: 0 = msg1 (4 + 32 bytes),
// 1 = msg3 (4 + 64 bytes), 2.. = records.
constexpr int kFirstRecordFrame = 2;
constexpr int64_t kHandshakeBytesFromClient = (4 + 32) + (4 + 64);
constexpr auto kHandshakeTimeout = 500ms;  // short, with room for a busy CI host

// Keeps every log line the server writes, so tests can check the logged
// reason for connections dropped before their handshake completed (those
// never reach the SessionHandler).
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  bool Contains(const std::string& a, const std::string& b = "") {
    std::lock_guard<std::mutex> l(mutex_);
    return std::any_of(lines_.begin(), lines_.end(), [&](const std::string& s) {
      return s.find(a) != std::string::npos && s.find(b) != std::string::npos;
    });
  }
  bool WaitFor(const std::string& a, const std::string& b = "", std::chrono::milliseconds t = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + t;
    while (!Contains(a, b)) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
  void Clear() {
    std::lock_guard<std::mutex> l(mutex_);
    lines_.clear();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.payload.data(), msg.payload.size());
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

// Installed once, before any server thread runs; cleared by each fixture.
CaptureSink& Logs() {
  static std::shared_ptr<CaptureSink> sink = [] {
    auto s = std::make_shared<CaptureSink>();
    auto old = spdlog::default_logger();
    std::vector<spdlog::sink_ptr> sinks(old->sinks().begin(), old->sinks().end());
    sinks.push_back(s);
    auto logger = std::make_shared<spdlog::logger>("verdant-test", sinks.begin(), sinks.end());
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
    return s;
  }();
  return *sink;
}

// Echoes every message; records how sessions closed.
class EchoHandler final : public SessionHandler {
 public:
  void OnSessionOpen(const SessionPtr&) override { ++opened; }
  void OnMessage(const SessionPtr& s, wire::Envelope&& m) override { s->Send(m); }
  void OnSessionClosed(const SessionPtr& s, const Status& reason) override {
    std::lock_guard<std::mutex> l(mu);
    reasons.push_back(reason);
    peers.push_back(s->peer_id());
    ++closed;
  }
  bool WaitClosed(int n, std::chrono::milliseconds t = 5000ms) {
    const auto end = std::chrono::steady_clock::now() + t;
    while (closed < n && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
    return closed >= n;
  }
  Status LastReason() {
    std::lock_guard<std::mutex> l(mu);
    return reasons.empty() ? OkStatus() : reasons.back();
  }
  std::atomic<int> opened{0}, closed{0};
  std::mutex mu;
  std::vector<Status> reasons;
  std::vector<std::string> peers;
};

std::shared_ptr<const KeyPair> NewKey() {
  auto kp = GenerateKeyPair();
  REQUIRE(kp.ok());
  return std::make_shared<const KeyPair>(std::move(*kp));
}

wire::Envelope Heartbeat(uint64_t seq) {
  wire::Envelope e;
  e.mutable_heartbeat()->set_seq(seq);
  return e;
}

// Sends heartbeat `seq` and expects it echoed.
bool Ping(ClientConnection& c, uint64_t seq) {
  if (!c.Send(Heartbeat(seq)).ok()) return false;
  auto m = c.Receive(5s);
  return m.ok() && m->has_heartbeat() && m->heartbeat().seq() == seq;
}

// Drains echoes until the connection reports closed (kUnavailable).
Status WaitConnectionClosed(ClientConnection& c, std::chrono::milliseconds t = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + t;
  while (std::chrono::steady_clock::now() < end) {
    auto m = c.Receive(100ms);
    if (!m.ok() && m.status().code() != StatusCode::kDeadlineExceeded) return m.status();
  }
  return DeadlineExceededError("connection still open");
}

bool WaitSessions(const TcpServer& s, size_t n, std::chrono::milliseconds t = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + t;
  while (s.session_count() != n && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
  return s.session_count() == n;
}

// A Noise coordinator (responder, short handshake timeout) with one
// established client ("good") that must keep working through every attack.
struct SecureServer {
  explicit SecureServer(std::shared_ptr<const AllowList> allow = nullptr,
                        std::shared_ptr<const KeyPair> good_client_key = nullptr)
      : server_key(NewKey()), good_key(good_client_key ? std::move(good_client_key) : NewKey()) {
    Logs().Clear();
    SecureChannelOptions so;
    so.static_key = server_key;
    so.allow_list = std::move(allow);
    auto factory = NoiseHandshakerFactory(NoiseHandshake::Role::kResponder, so);
    REQUIRE(factory.ok());
    TcpServer::Options o;
    o.session.handshake_timeout = kHandshakeTimeout;
    o.handshaker = *factory;
    auto s = TcpServer::Start(o, handler);
    REQUIRE(s.ok());
    server = std::move(*s);
    auto g = ClientConnection::Connect("127.0.0.1", port(), ClientOptions(good_key));
    REQUIRE_MESSAGE(g.ok(), g.status().ToString());
    good = std::move(*g);
    REQUIRE(Ping(*good, 1));
    REQUIRE(WaitSessions(*server, 1));
  }
  ~SecureServer() { server->Stop(); }

  uint16_t port() const { return server->port(); }
  ClientConnection::Options ClientOptions(std::shared_ptr<const KeyPair> key) const {
    return ClientOptions(std::move(key), server_key->public_key());
  }
  static ClientConnection::Options ClientOptions(std::shared_ptr<const KeyPair> key, const PublicKey& pin) {
    SecureChannelOptions co;
    co.static_key = std::move(key);
    co.expected_peer_key = pin;
    auto factory = NoiseHandshakerFactory(NoiseHandshake::Role::kInitiator, co);
    REQUIRE(factory.ok());
    ClientConnection::Options o;
    o.handshaker = *factory;
    o.session.handshake_timeout = 2s;
    return o;
  }
  // The established session still works, and only it remains on the server.
  void CheckGoodSessionUnaffected(uint64_t seq = 1000) {
    CHECK(Ping(*good, seq));
    CHECK(Ping(*good, seq + 1));
    CHECK(WaitSessions(*server, 1));
    CHECK_FALSE(good->session().closed());
  }

  EchoHandler handler;
  std::shared_ptr<const KeyPair> server_key, good_key;
  std::unique_ptr<TcpServer> server;
  std::unique_ptr<ClientConnection> good;
};

// Runs a client through a proxy that applies `m` to its stream: one ping
// before the attack (frame 2) proves the session worked, then three
// heartbeats back to back (frames 3, 4, 5). Returns the server's close reason.
Status RecordAttack(SecureServer& f, RecordingProxy::Mutation m, int expected_applied = 1) {
  RecordingProxy::Options po;
  po.mutation = m;
  auto proxy = RecordingProxy::Start(f.port(), po);
  REQUIRE(proxy.ok());
  auto victim = ClientConnection::Connect("127.0.0.1", (*proxy)->port(), f.ClientOptions(NewKey()));
  REQUIRE_MESSAGE(victim.ok(), victim.status().ToString());
  if (m.frame != kFirstRecordFrame && m.after_bytes < 0) REQUIRE(Ping(**victim, 1));
  CHECK(Ping(*f.good, 2));  // two sessions open side by side
  for (uint64_t seq = 2; seq <= 4; ++seq) (void)(*victim)->Send(Heartbeat(seq));
  // The server closes the attacked session; the victim sees it closed.
  REQUIRE(f.handler.WaitClosed(1));
  Status victim_end = WaitConnectionClosed(**victim);
  CHECK(victim_end.code() == StatusCode::kUnavailable);
  // The proxy counts a mutation after forwarding it, which may be after the
  // server already closed the session: wait briefly for the count.
  for (int i = 0; i < 200 && (*proxy)->mutations_applied() < static_cast<size_t>(expected_applied); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK((*proxy)->mutations_applied() == static_cast<size_t>(expected_applied));
  f.CheckGoodSessionUnaffected();
  CHECK(f.handler.closed == 1);  // the good session was never closed
  return f.handler.LastReason();
}

RecordingProxy::Mutation AtFrame(Kind kind, int frame) {
  RecordingProxy::Mutation m;
  m.kind = kind;
  m.frame = frame;
  return m;
}

std::string AllowFile(std::initializer_list<const KeyPair*> keys) {
  std::string text = "# test allow-list\n";
  for (auto* k : keys) text += FormatPublicKey(k->public_key()) + "\n";
  return text;
}

}  // namespace

TEST_CASE("secure session: a tampered record ends that session with DATA_LOSS and others keep working") {
  SecureServer f;
  SUBCASE("one flipped byte inside a record frame") {
    Status r = RecordAttack(f, AtFrame(Kind::kFlipByte, kFirstRecordFrame + 1));
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("record") != std::string::npos);
    CHECK(r.message().find("failed authentication") != std::string::npos);
  }
  SUBCASE("one flipped byte at a stream offset inside the first record") {
    RecordingProxy::Mutation m;
    m.kind = Kind::kFlipByte;
    m.after_bytes = kHandshakeBytesFromClient + 4 + 3;  // past the handshake and the record's header
    Status r = RecordAttack(f, m);
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("record 0 failed authentication") != std::string::npos);
  }
  SUBCASE("one flipped bit in the tag") {
    RecordingProxy::Mutation m = AtFrame(Kind::kFlipByte, kFirstRecordFrame + 1);
    m.offset_in_frame = 1u << 20;  // clamped to the last byte: the tag
    m.xor_mask = 0x80;
    Status r = RecordAttack(f, m);
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("record 1 failed authentication") != std::string::npos);
  }
}

TEST_CASE("secure session: a replayed record ends that session with DATA_LOSS and others keep working") {
  SecureServer f;
  // Frame 3 (record 1) arrives twice: the copy is read as record 2 and fails.
  Status r = RecordAttack(f, AtFrame(Kind::kReplayFrame, kFirstRecordFrame + 1));
  CHECK(r.code() == StatusCode::kDataLoss);
  CHECK(r.message().find("record: record 2 failed authentication") != std::string::npos);
}

TEST_CASE("secure session: reordered records end that session with DATA_LOSS and others keep working") {
  SecureServer f;
  Status r = RecordAttack(f, AtFrame(Kind::kSwapFrames, kFirstRecordFrame + 1));
  CHECK(r.code() == StatusCode::kDataLoss);
  CHECK(r.message().find("record: record 1 failed authentication") != std::string::npos);
}

TEST_CASE("secure session: a dropped record ends that session with DATA_LOSS at the next record") {
  SecureServer f;
  Status r = RecordAttack(f, AtFrame(Kind::kDropFrame, kFirstRecordFrame + 1));
  CHECK(r.code() == StatusCode::kDataLoss);
  CHECK(r.message().find("record: record 1 failed authentication") != std::string::npos);
}

TEST_CASE("secure session: a truncated record ends that session with DATA_LOSS and others keep working") {
  SecureServer f;
  SUBCASE("a well-framed record missing its last bytes") {
    // A heartbeat record is 20 bytes (4 of message + 16 of tag); keep 17.
    RecordingProxy::Mutation m = AtFrame(Kind::kTruncateFrame, kFirstRecordFrame + 1);
    m.truncate_to = 17;
    Status r = RecordAttack(f, m);
    INFO(r.ToString());
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("record: record 1 failed authentication") != std::string::npos);
  }
  SUBCASE("a record cut shorter than its tag") {
    Status r = RecordAttack(f, AtFrame(Kind::kTruncateFrame, kFirstRecordFrame + 1));  // half: 10 bytes
    INFO(r.ToString());
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("truncated") != std::string::npos);
  }
  SUBCASE("the stream ends in the middle of a record") {
    Status r = RecordAttack(f, AtFrame(Kind::kCutFrame, kFirstRecordFrame + 1));
    CHECK(r.code() == StatusCode::kDataLoss);
    CHECK(r.message().find("middle of a frame") != std::string::npos);
  }
}

TEST_CASE("secure session: a client pinning the wrong coordinator key refuses the handshake") {
  SecureServer f;
  auto impostor_pin = NewKey();
  auto victim = ClientConnection::Connect("127.0.0.1", f.port(),
                                          SecureServer::ClientOptions(NewKey(), impostor_pin->public_key()));
  REQUIRE_FALSE(victim.ok());
  CHECK(victim.status().code() == StatusCode::kUnauthenticated);
  CHECK(victim.status().message().find("coordinator authentication") != std::string::npos);
  CHECK(victim.status().message().find(FormatPublicKey(impostor_pin->public_key())) != std::string::npos);
  // The client stopped before msg3: the server drops the half-done handshake.
  CHECK(Logs().WaitFor("dropped before the handshake completed"));
  CHECK(f.handler.opened == 1);
  f.CheckGoodSessionUnaffected();
  CHECK(f.handler.closed == 0);
}

TEST_CASE("secure session: a client key not on the allow-list is refused with PERMISSION_DENIED") {
  testing::TempDir dir;
  const auto file = dir.path() / "clients.allow";
  auto good_key = NewKey();
  testing::WriteFile(file, AllowFile({good_key.get()}));
  auto list = AllowList::Load(file);
  REQUIRE(list.ok());
  SecureServer f(std::shared_ptr<const AllowList>(std::move(*list)), good_key);

  auto stranger = NewKey();
  // XX: the client finishes its side with msg3, so it may see the refusal
  // as the connection closing right after Connect.
  auto victim = ClientConnection::Connect("127.0.0.1", f.port(), f.ClientOptions(stranger));
  if (victim.ok()) {
    CHECK(WaitConnectionClosed(**victim).code() == StatusCode::kUnavailable);
  } else {
    CHECK(victim.status().code() == StatusCode::kUnavailable);
  }
  CHECK(Logs().WaitFor("PERMISSION_DENIED", ClientIdFromKey(stranger->public_key())));
  CHECK(Logs().Contains("is not on the allow-list"));
  CHECK(f.handler.opened == 1);
  f.CheckGoodSessionUnaffected();
  CHECK(f.handler.closed == 0);
}

TEST_CASE("secure session: an allow-list reload admits an added key and refuses a removed one") {
  testing::TempDir dir;
  const auto file = dir.path() / "clients.allow";
  auto good_key = NewKey();
  auto newcomer = NewKey();
  testing::WriteFile(file, AllowFile({good_key.get()}));
  auto loaded = AllowList::Load(file);
  REQUIRE(loaded.ok());
  std::shared_ptr<AllowList> list = std::move(*loaded);
  SecureServer f(list, good_key);
  auto refused = [&](const char* when) {
    INFO(when);
    Logs().Clear();
    auto c = ClientConnection::Connect("127.0.0.1", f.port(), f.ClientOptions(newcomer));
    if (c.ok()) CHECK(WaitConnectionClosed(**c).code() == StatusCode::kUnavailable);
    CHECK(Logs().WaitFor("PERMISSION_DENIED", ClientIdFromKey(newcomer->public_key())));
  };

  refused("before the key is listed");
  CHECK(f.handler.opened == 1);

  // Added to the file and reloaded: accepted, identity derived from the key.
  testing::WriteFile(file, AllowFile({good_key.get(), newcomer.get()}));
  REQUIRE(list->Reload().ok());
  CHECK(list->size() == 2);
  auto admitted = ClientConnection::Connect("127.0.0.1", f.port(), f.ClientOptions(newcomer));
  REQUIRE_MESSAGE(admitted.ok(), admitted.status().ToString());
  CHECK(Ping(**admitted, 7));
  CHECK((*admitted)->session().peer_key() == FormatPublicKey(f.server_key->public_key()));
  CHECK(f.handler.opened == 2);
  CHECK(Ping(*f.good, 8));

  // Removed and reloaded: new sessions are refused; the established one
  // continues until it reconnects (docs/security.md).
  testing::WriteFile(file, AllowFile({good_key.get()}));
  REQUIRE(list->Reload().ok());
  CHECK(list->size() == 1);
  refused("after the key is removed");
  CHECK(f.handler.opened == 2);
  CHECK(Ping(**admitted, 9));
  (*admitted)->Close();
  CHECK(f.handler.WaitClosed(1));
  f.CheckGoodSessionUnaffected();

  // A broken file is refused as a whole and the list in force stays.
  testing::WriteFile(file, AllowFile({good_key.get()}) + "not-a-key\n");
  CHECK(list->Reload().code() == StatusCode::kInvalidArgument);
  CHECK(list->Contains(good_key->public_key()));
  CHECK_FALSE(list->Contains(newcomer->public_key()));
}

TEST_CASE("secure session: a truncated or stalled handshake is dropped and others keep working") {
  SecureServer f;
  // A genuine msg1 (32 bytes: the initiator's ephemeral key).
  auto initiator = f.ClientOptions(NewKey()).handshaker();
  REQUIRE(initiator != nullptr);
  auto start = initiator->Start();
  REQUIRE(start.ok());
  REQUIRE(start->size() == 1);
  const std::vector<uint8_t> msg1 = start->front();
  REQUIRE(msg1.size() == 32);
  const std::vector<uint8_t> half(msg1.begin(), msg1.begin() + 16);
  std::vector<uint8_t> header_then_half(4);
  PutFrameHeader(32, header_then_half.data());
  header_then_half.insert(header_then_half.end(), half.begin(), half.end());

  // The server's handshake timer starts at accept, after t0.
  const auto t0 = std::chrono::steady_clock::now();
  testing::RawSocket raw(f.port());
  REQUIRE(raw.connected());
  auto since = [&] { return std::chrono::steady_clock::now() - t0; };

  SUBCASE("half a handshake message then close") {
    REQUIRE(raw.Write(header_then_half));
    raw.Close();
    CHECK(Logs().WaitFor("dropped before the handshake completed", "middle of a frame"));
  }
  SUBCASE("half a handshake message then stall until the timeout") {
    REQUIRE(raw.Write(header_then_half));
    CHECK(raw.WaitClosed(5000));
    CHECK(since() >= kHandshakeTimeout - 20ms);
    CHECK(Logs().WaitFor("dropped before the handshake completed", "handshake did not complete"));
  }
  SUBCASE("a whole frame holding half a handshake message") {
    REQUIRE(raw.Write(testing::Frame(half)));
    CHECK(raw.WaitClosed(5000));
    CHECK(since() < kHandshakeTimeout);  // refused at once, not by the timer
    CHECK(Logs().WaitFor("dropped before the handshake completed", "DATA_LOSS"));
  }
  SUBCASE("a whole msg1 then silence after msg2") {
    REQUIRE(raw.Write(testing::Frame(msg1)));
    CHECK(raw.WaitClosed(5000));  // reads msg2, then the server's close
    CHECK(since() >= kHandshakeTimeout - 20ms);
    CHECK(Logs().WaitFor("dropped before the handshake completed", "DEADLINE_EXCEEDED"));
  }
  SUBCASE("nothing at all") {
    CHECK(raw.WaitClosed(5000));
    CHECK(since() >= kHandshakeTimeout - 20ms);
    CHECK(Logs().WaitFor("dropped before the handshake completed", "DEADLINE_EXCEEDED"));
  }
  CHECK(f.handler.opened == 1);
  f.CheckGoodSessionUnaffected();
  CHECK(f.handler.closed == 0);
}
