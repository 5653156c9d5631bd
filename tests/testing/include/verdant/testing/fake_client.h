// verdant/testing/fake_client.h
//
// Protocol-level fakes for failure-path tests, without LibTorch:
// FakeClient speaks wire protocol v1 through a real ClientConnection and
// answers TrainTasks with a delta it is told to send (or misbehaves on
// purpose: NaN, wrong shape, disconnect mid-upload, silence). RawSocket
// writes arbitrary bytes (garbage, oversize or truncated frames).
//   FakeClient c("c1", port);
//   c.behaviour = FakeClient::Behaviour::kNaN;
//   std::thread t([&] { c.Run(); });
// Thread-safety: Run() on one thread; the fields are set before it starts.
#pragma once

#include <atomic>
#include <cstdint>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "verdant/core/status.h"
#include "verdant/transport/session.h"

namespace verdant::testing {

class FakeClient {
 public:
  enum class Behaviour {
    kHonest,           // delta = value everywhere
    kNaN,              // one NaN in the delta
    kWrongShape,       // one value too few
    kDisconnectMidUpload,  // sends the header and half the chunks, then drops
    kSilent,           // never answers (tests the round deadline)
    kScaled,           // delta scaled by 1e6
    kTrainFails,       // reports that its local training failed (no payload)
    kOthersTask,       // answers as if it held the round's other task (task ids 1 <-> 2)
  };
  FakeClient(std::string name, uint16_t port) : name_(std::move(name)), port_(port) {}
  Behaviour behaviour = Behaviour::kHonest;
  float value = 0.5f;           // the honest delta's value
  uint64_t num_examples = 100;
  uint32_t protocol_version = 1;
  std::string codec = "identity";
  wire::DeviceState state;      // reported in Hello
  std::string device_profile;   // reported in Hello
  std::optional<wire::EnergyReport> energy_report;  // sent with every TrainResult
  std::chrono::milliseconds answer_delay{0};        // waits this long before each answer
  ClientConnection::Options connection;
  // Runs until Bye, an error, or `max_tasks` tasks answered. Returns why it stopped.
  Status Run(int max_tasks = 1000);
  int tasks_seen() const { return tasks_seen_; }
  const std::string& assigned_id() const { return assigned_id_; }

 private:
  std::string name_;
  uint16_t port_;
  std::atomic<int> tasks_seen_{0};
  std::string assigned_id_;
};

// A blocking raw TCP socket to 127.0.0.1:port for sending hand-made bytes.
class RawSocket {
 public:
  explicit RawSocket(uint16_t port);
  ~RawSocket();
  bool connected() const { return fd_ >= 0; }
  bool Write(const std::vector<uint8_t>& bytes);
  // Reads until EOF or timeout; returns true if the peer closed the connection.
  bool WaitClosed(int timeout_ms);
  void Close();

 private:
  int fd_ = -1;
};

// Frame = 4-byte big-endian length + payload.
std::vector<uint8_t> Frame(const std::vector<uint8_t>& payload);
std::vector<uint8_t> FrameEnvelope(const wire::Envelope& env);

}  // namespace verdant::testing
