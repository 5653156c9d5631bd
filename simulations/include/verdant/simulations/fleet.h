// verdant/simulations/fleet.h
//
// Fleet: the devices a simulation replays and what happens to them over
// time, read from two plain CSV files (docs/simulator.md gives the format):
//   devices.csv  device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples
//   events.csv   time,device_id,kind,value   (time in ISO 8601 UTC; kinds below)
//   auto fleet = LoadFleet("fleet/");                 // Result<Fleet>
//   for (const auto& e : fleet->events) ...          // sorted by time (stable)
//   Status st = WriteFleet(*fleet, "out/");          // byte-stable writer
// Bad rows are kInvalidArgument errors naming the file, the line (1-based,
// the header is line 1) and the field, e.g.
//   "devices.csv:7: field 'battery_wh': 'abc' is not a number".
// Thread-safety: plain values; the functions are reentrant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"

namespace verdant::sim {

// One device of the fleet (one row of devices.csv).
struct Device {
  std::string id;                 // unique, [A-Za-z0-9_.-], at most 64 characters
  std::string profile;            // energy profile name (built-in or from a profiles file)
  std::string zone;               // grid zone of its carbon trace, e.g. "US-CISO"
  double battery_wh = 0;          // battery capacity, Wh (0 = no battery: mains-powered)
  double ms_per_sample = 0;       // forward pass per sample, ms (> 0); t_train = 3 x samples x this
  double up_kbps = 0;             // uplink throughput, kbit/s (> 0)
  double down_kbps = 0;           // downlink throughput, kbit/s (> 0)
  double embodied_kg = 0;         // embodied emissions of the device, kgCO2e (>= 0)
  uint64_t num_examples = 0;      // local training examples (> 0)
};

enum class EventKind {
  kAvailable,    // the device can take part (app running, connected)
  kUnavailable,  // it cannot (switched off, no connectivity, app killed)
  kChargingOn,
  kChargingOff,
  kBattery,      // value: battery level, percent 0..100
  kNetwork,      // value: "wifi" (unmetered) or "cellular"
  kIdle,         // the user stopped using the device
  kBusy,         // the user is using it
};
// "available", "unavailable", "charging_on", "charging_off", "battery",
// "network", "idle", "busy".
std::string_view EventKindName(EventKind k);

enum class Network : uint8_t { kWifi, kCellular };

// One row of events.csv. `device` indexes Fleet::devices.
struct FleetEvent {
  TimePoint time;
  uint32_t device = 0;
  EventKind kind = EventKind::kAvailable;
  float battery_percent = 0;  // kBattery only
  Network network = Network::kWifi;  // kNetwork only
};

// Hashes std::string and std::string_view alike, so an id read from a file
// is looked up without copying it into a string.
struct IdHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct Fleet {
  std::vector<Device> devices;
  std::vector<FleetEvent> events;  // sorted by time; ties keep file order
  std::unordered_map<std::string, uint32_t, IdHash, std::equal_to<>> index;  // device id -> position in `devices`
  // The earliest event time (TimePoint{} when there are no events).
  TimePoint Start() const { return events.empty() ? TimePoint{} : events.front().time; }
};

// Parses devices.csv text; `name` is used in error messages. Duplicate ids,
// missing or extra fields, malformed numbers and out-of-range values are
// kInvalidArgument naming name:line and the field.
Result<Fleet> ParseDevicesCsv(std::string_view text, std::string_view name = "devices.csv");
// Parses events.csv text into `fleet` (devices must be parsed first: an
// unknown device id is an error), then sorts the events by time (stable).
// `threads`: parts parsed in parallel (0: one below 16 MiB of rows, else
// the hardware's threads, at most 4). The result and the error reported
// (the first bad row in file order) do not depend on it.
Status ParseEventsCsv(std::string_view text, Fleet& fleet, std::string_view name = "events.csv", size_t threads = 0);
// Reads dir/devices.csv and dir/events.csv. kNotFound naming a missing file.
Result<Fleet> LoadFleet(const std::filesystem::path& dir);
// Writes dir/devices.csv and dir/events.csv (creating dir). Numbers are
// printed with fixed precision, so the same fleet gives the same bytes.
Status WriteFleet(const Fleet& fleet, const std::filesystem::path& dir);

}  // namespace verdant::sim
