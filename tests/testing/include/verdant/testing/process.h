// verdant/testing/process.h
//
// Process: a child process (posix_spawn) with stdout and stderr appended to
// a log file, for tests that drive the `verdant` binary: start, signal,
// wait with a timeout. The destructor SIGKILLs and reaps a child still
// running, so a failing test leaves no process behind.
//   Process p({VERDANT_BINARY, "server", "--config", cfg}, dir / "server.log");
//   p.Signal(SIGTERM);
//   std::optional<int> code = p.Wait(std::chrono::seconds(10));   // exit code
// Thread-safety: not thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace verdant::testing {

class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::filesystem::path& log);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  bool started() const { return pid_ > 0; }
  bool running();
  void Signal(int sig);
  // The exit code (128 + signal when killed by one), or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::optional<int> code_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t FreeLoopbackPort();

// Runs `binary args` through the shell (args are shell words, as typed),
// waits for it and returns its exit code (-1 if it did not exit normally or
// could not be started) with stdout and stderr together.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& binary, const std::string& args);

}  // namespace verdant::testing
