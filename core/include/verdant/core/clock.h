// verdant/core/clock.h
//
// Clock: the one source of "now" for round deadlines, heartbeats and the
// ledger, injected so the simulator can swap in a ManualClock.
//   SystemClock clock;
//   auto deadline = clock.Now() + std::chrono::seconds(30);
//   ManualClock sim(TimePoint{});  sim.Advance(std::chrono::minutes(10));
// Thread-safety: both implementations are safe to call from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

namespace verdant {

// Wall-clock time since the Unix epoch, in microseconds.
using Duration = std::chrono::microseconds;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

class Clock {
 public:
  virtual ~Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual std::string_view Name() const = 0;
  virtual TimePoint Now() const = 0;

 protected:
  Clock() = default;
};

class SystemClock final : public Clock {
 public:
  SystemClock() = default;
  std::string_view Name() const override { return "system"; }
  TimePoint Now() const override;
  // A process-wide instance.
  static SystemClock& Default();
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{}) : now_us_(start.time_since_epoch().count()) {}
  std::string_view Name() const override { return "manual"; }
  TimePoint Now() const override { return TimePoint(Duration(now_us_.load())); }
  void Advance(Duration d) { now_us_ += d.count(); }
  void Set(TimePoint t) { now_us_ = t.time_since_epoch().count(); }

 private:
  std::atomic<int64_t> now_us_;
};

// ISO-8601 UTC, e.g. "2022-06-01T12:00:00Z" (seconds resolution).
std::string FormatUtc(TimePoint t);

// Seconds as a double, for reports.
inline double ToSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace verdant
