// fleet_csv.h (private to simulations/)
//
// The one way rows of devices.csv and events.csv are written, shared by
// WriteFleet and the streaming generator (GenerateFleetFiles) so both give
// the same bytes; and a buffered file writer, since a 10^6-device week is
// ~300 million event rows and per-row iostream calls would dominate.
//   VERDANT_ASSIGN_OR_RETURN(auto w, CsvWriter::Open(dir / "events.csv"));
//   w.buffer() += EventsCsvHeader();
//   AppendEventRow(w.buffer(), time, id, kind, battery, network);
//   VERDANT_RETURN_IF_ERROR(w.FlushIfFull());  ...  VERDANT_RETURN_IF_ERROR(w.Close());
// Thread-safety: a CsvWriter is used by one thread.
#pragma once

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "verdant/core/status.h"
#include "verdant/simulations/fleet.h"

namespace verdant::sim {

std::string DevicesCsvHeader();  // with the trailing '\n'
std::string EventsCsvHeader();   // with the trailing '\n'
void AppendDeviceRow(std::string& out, const Device& d);
// `battery` is written for kBattery (one decimal), `network` for kNetwork.
void AppendEventRow(std::string& out, std::string_view time, std::string_view device_id, EventKind kind,
                    float battery, Network network);

class CsvWriter {
 public:
  // Creates or truncates `path` (its folder must exist). kUnavailable naming it.
  static Result<CsvWriter> Open(const std::filesystem::path& path);
  std::string& buffer() { return buffer_; }
  // Writes the buffer out once it holds a few MB. kUnavailable on a write error.
  Status FlushIfFull() { return buffer_.size() >= kFlushBytes ? Flush() : OkStatus(); }
  // Writes the rest and closes the file; kUnavailable naming it on an error.
  Status Close();

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  static constexpr size_t kFlushBytes = 4 << 20;
  CsvWriter(std::unique_ptr<std::FILE, FileCloser> f, std::filesystem::path path)
      : file_(std::move(f)), path_(std::move(path)) {}
  Status Flush();
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::filesystem::path path_;
  std::string buffer_;
};

}  // namespace verdant::sim
