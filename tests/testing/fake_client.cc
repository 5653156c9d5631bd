#include "verdant/testing/fake_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <thread>

#include "verdant/transport/framing.h"
#include "verdant/transport/message.h"

namespace verdant::testing {

Status FakeClient::Run(int max_tasks) {
  auto conn = ClientConnection::Connect("127.0.0.1", port_, connection);
  if (!conn.ok()) return conn.status();
  auto& c = **conn;
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol_version(protocol_version);
  hello.mutable_hello()->set_client_name(name_);
  hello.mutable_hello()->add_codecs(codec + "/1");
  hello.mutable_hello()->set_num_examples(num_examples);
  *hello.mutable_hello()->mutable_state() = state;
  hello.mutable_hello()->set_device_profile(device_profile);
  VERDANT_RETURN_IF_ERROR(c.Send(hello));
  auto w = c.Receive(std::chrono::seconds(10));
  if (!w.ok()) return w.status();
  if (w->has_error()) return FailedPreconditionError(w->error().message());
  if (!w->has_welcome()) return DataLossError("expected Welcome");
  assigned_id_ = w->welcome().client_id();
  int answered = 0;
  while (answered < max_tasks) {
    auto m = c.Receive(std::chrono::seconds(30));
    if (!m.ok()) return m.status();
    if (m->has_bye()) return OkStatus();
    if (m->has_error()) return AbortedError(m->error().message());
    if (!m->has_train_task()) continue;
    ++tasks_seen_;
    const auto task = m->train_task();
    PayloadAssembler a(task.payload(), 1ull << 32);
    while (!a.complete()) {
      auto ch = c.Receive(std::chrono::seconds(30));
      if (!ch.ok()) return ch.status();
      if (!ch->has_chunk()) return DataLossError("expected chunk");
      VERDANT_RETURN_IF_ERROR(a.Add(ch->chunk()));
    }
    if (behaviour == Behaviour::kSilent) {
      ++answered;
      continue;
    }
    if (answer_delay.count() > 0) std::this_thread::sleep_for(answer_delay);
    if (behaviour == Behaviour::kTrainFails) {
      wire::Envelope env;
      env.mutable_train_result()->set_round(task.round());
      env.mutable_train_result()->set_task_id(task.task_id());
      (*env.mutable_train_result()->mutable_metrics())["train_failed"] = 1.0;
      VERDANT_RETURN_IF_ERROR(c.Send(env));
      ++answered;
      continue;
    }
    size_t n = task.payload().num_params();
    std::vector<float> delta(behaviour == Behaviour::kWrongShape ? n - 1 : n, value);
    if (behaviour == Behaviour::kNaN && !delta.empty()) delta[delta.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    if (behaviour == Behaviour::kScaled) for (auto& d : delta) d *= 1e6f;
    ByteBuffer bytes(delta.size() * sizeof(float));
    std::memcpy(bytes.data(), delta.data(), bytes.size());
    wire::Envelope env;
    auto* r = env.mutable_train_result();
    r->set_round(task.round());
    r->set_task_id(behaviour == Behaviour::kOthersTask ? (task.task_id() == 1 ? 2 : 1) : task.task_id());
    r->set_num_examples(num_examples);
    r->set_train_loss(1.0);
    if (energy_report) *r->mutable_energy() = *energy_report;
    auto* p = r->mutable_payload();
    p->set_stream_id(task.task_id());
    p->set_encoding(codec);
    p->set_num_params(behaviour == Behaviour::kWrongShape ? n : n);  // lies about the shape
    p->set_layout_fingerprint(task.payload().layout_fingerprint());
    p->set_payload_bytes(bytes.size());
    const uint32_t chunk = 4096;
    auto chunks = MakeChunkMessages(task.task_id(), bytes, chunk);
    p->set_num_chunks(static_cast<uint32_t>(chunks.size()));
    VERDANT_RETURN_IF_ERROR(c.Send(env));
    if (behaviour == Behaviour::kDisconnectMidUpload) {
      for (size_t i = 0; i < chunks.size() / 2; ++i) VERDANT_RETURN_IF_ERROR(c.Send(chunks[i]));
      (void)c.Flush(std::chrono::seconds(5));
      return OkStatus();  // the connection is dropped by the destructor
    }
    for (auto& ch : chunks) VERDANT_RETURN_IF_ERROR(c.Send(ch));
    ++answered;
  }
  (void)c.Flush(std::chrono::seconds(5));
  return OkStatus();
}

RawSocket::RawSocket(uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RawSocket::~RawSocket() { Close(); }

void RawSocket::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawSocket::Write(const std::vector<uint8_t>& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool RawSocket::WaitClosed(int timeout_ms) {
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now()).count());
    if (::poll(&p, 1, std::max(1, left)) <= 0) continue;
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

std::vector<uint8_t> Frame(const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out(4);
  PutFrameHeader(static_cast<uint32_t>(payload.size()), out.data());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> FrameEnvelope(const wire::Envelope& env) {
  auto b = SerializeEnvelope(env);
  return Frame(*b);
}

}  // namespace verdant::testing
