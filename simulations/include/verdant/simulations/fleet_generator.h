// verdant/simulations/fleet_generator.h
//
// Generates a synthetic phone fleet (devices + events) from a documented
// behaviour model calibrated on published statistics (docs/simulator.md,
// "Fleet generator"): diurnal charging mostly at night in the zone's local
// time, idle periods, Wi-Fi at home vs cellular outside, battery drain,
// compute speed spread from the AI-Benchmark list and bandwidth from the
// FLASH speed distribution (data/devices/).
//   FleetGeneratorOptions o;  o.devices = 1000;  o.days = 2;  o.zones = {"US-CISO", "ES"};
//   auto fleet = GenerateFleet(o, "data/devices");     // Result<Fleet>
//   Status st = WriteFleet(*fleet, "fleet/");
//   auto files = GenerateFleetFiles(o, "data/devices", "fleet/");  // the same bytes, for huge fleets
// Deterministic: the same options (seed included) and data give the same
// fleet, and WriteFleet the same bytes.
// Thread-safety: reentrant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/simulations/fleet.h"

namespace verdant::sim {

struct FleetGeneratorOptions {
  uint64_t devices = 100;          // > 0
  uint32_t days = 1;               // > 0
  // Grid zones; devices are spread uniformly over them. A zone is a trace
  // name with a known UTC offset (docs/simulator.md lists them) or
  // "NAME@+H" / "NAME@-H" giving the offset in hours.
  std::vector<std::string> zones = {"US-CISO"};
  uint64_t seed = 1;
  TimePoint start = TimePoint(std::chrono::seconds(1654041600));  // 2022-06-01T00:00:00Z
};

// The UTC offset, hours, of a zone spec ("US-CISO" -> -8, "X@+5.5" -> 5.5).
// kInvalidArgument for an unknown zone without an offset.
Result<double> ZoneUtcOffsetHours(const std::string& zone_spec);
// The zone id of a spec ("X@+5.5" -> "X").
std::string ZoneName(const std::string& zone_spec);

// `device_data_dir` holds flash_ai_benchmark_list.json and
// flash_speed_distri.json. kNotFound / kDataLoss naming the file when they
// are missing or malformed; kInvalidArgument for bad options.
Result<Fleet> GenerateFleet(const FleetGeneratorOptions& options, const std::filesystem::path& device_data_dir);

// What GenerateFleetFiles wrote.
struct GeneratedFleetFiles {
  uint64_t devices = 0;
  uint64_t events = 0;
  uint64_t devices_bytes = 0;  // size of devices.csv
  uint64_t events_bytes = 0;   // size of events.csv
};

// Writes the fleet GenerateFleet would give straight into out_dir/devices.csv
// and out_dir/events.csv (creating out_dir): the same bytes as
// WriteFleet(*GenerateFleet(options, ...), out_dir), but holding 8 bytes per
// event instead of the Fleet (10^6 devices over 7 days are ~3 x 10^8
// events). Errors as GenerateFleet's, and kUnavailable naming a file it
// cannot write.
Result<GeneratedFleetFiles> GenerateFleetFiles(const FleetGeneratorOptions& options,
                                               const std::filesystem::path& device_data_dir,
                                               const std::filesystem::path& out_dir);

// The shipped data/devices folder: $VERDANT_DEVICES_DIR, then
// <exe>/../data/devices, <exe>/../share/verdant/data/devices,
// ./data/devices. kNotFound listing them.
Result<std::filesystem::path> FindDeviceDataDir();

}  // namespace verdant::sim
