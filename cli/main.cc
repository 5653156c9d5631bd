#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "verdant/cli/cli.h"

namespace {

// Every round allocates and frees model-sized buffers (records sealed and
// opened, reassembled payloads, the aggregator's sum, chunk messages): 4 MB
// each for a 1M-parameter model, one or two per client. With glibc's
// defaults, blocks that large are mmap'd and unmapped on free, or trimmed
// off the heap top, so each round faults the same memory in again page by
// page (perf: ~10% of the coordinator's and the clients' CPU in S1 of
// bench/round_overhead.sh). Serving them from the heap and keeping freed
// memory for the next round removes that; peak RSS is unchanged or lower
// (docs/performance.md). Buffers above 64 MiB still get their own mapping,
// and a heap top above 128 MiB is still returned. A user's own
// GLIBC_TUNABLES malloc settings win.
void TuneMalloc() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  TuneMalloc();
  return verdant::RunCli(argc, argv);
}
