// verdant/energy/http_carbon.h
//
// HttpIntensitySource: grid carbon intensity fetched over HTTP(S) from a
// service answering in the Carbon Aware SDK or Electricity Maps JSON shape
// (parsed by SeriesIntensitySource), cached and refreshed. A lookup that
// finds the cache stale fetches again; a failed fetch (unreachable, timeout,
// non-200, malformed JSON, oversized body) keeps the last good data, is
// logged, and is not retried before `retry` has passed, so an unreachable
// service costs at most one timeout per `retry` interval, never a crash.
// With no data at all, lookups fail with kUnavailable and the caller falls
// back (the coordinator's ledger: the client's own intensity, then the world
// average 475 g/kWh, tagged "fallback-constant").
//
//   HttpSourceOptions o;
//   o.url = "https://api.electricitymap.org/v3/carbon-intensity/history?zone={zone}";
//   o.headers = {{"auth-token", token}};
//   auto src = HttpIntensitySource::Create(o);          // validates, does not fetch
//   Result<IntensityReading> r = (*src)->IntensityAt("DE", clock.Now());
//
// "{zone}" in the URL is replaced by the zone id (URL-encoded) and each zone
// is fetched and cached on its own; without it, one response must hold every
// zone (Carbon Aware SDK /emissions/bylocations?location=a&location=b).
// Header values (tokens) never appear in logs, errors or the source tag; the
// tag is "http:<scheme>://<host><path>" without the query string.
//
// Thread-safety: all methods are safe to call concurrently (one mutex; a
// fetch happens under it, so concurrent lookups wait for it).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "verdant/core/clock.h"
#include "verdant/core/status.h"
#include "verdant/energy/carbon.h"

namespace verdant::energy {

struct HttpSourceOptions {
  // "http://host[:port]/path?query" or "https://..." (certificates verified
  // against the system store). Required.
  std::string url{};
  // Sent with every request, e.g. {"auth-token", "..."} for Electricity Maps.
  std::vector<std::pair<std::string, std::string>> headers{};
  Duration timeout = std::chrono::seconds(5);   // connect, and each read
  Duration refresh = std::chrono::minutes(15);  // data older than this is fetched again
  Duration retry = std::chrono::seconds(60);    // after a failed fetch, wait before the next
  // After the data's last interval ends, keep answering with the last point
  // for this long (a "latest" endpoint lags the hour); 0 = never.
  Duration hold_last = std::chrono::hours(2);
  size_t max_body_bytes = 8u << 20;  // larger responses are refused
  JsonSourceOptions json{};          // kind, scope, interval of points without one
  std::vector<std::string> zones{};  // what Zones() reports in {zone} mode
  const Clock* clock = nullptr;      // refresh timing; nullptr: SystemClock::Default()
};

class HttpIntensitySource final : public CarbonIntensitySource {
 public:
  // kInvalidArgument naming the field: a URL that is not http(s)://host...,
  // a header name that is empty or has characters outside a token, a
  // non-positive timeout/refresh, a negative retry/hold. Does not fetch.
  static Result<std::unique_ptr<HttpIntensitySource>> Create(HttpSourceOptions options);

  // Fetches `zone`'s data now ("" in all-zone mode), regardless of the
  // cache. kUnavailable: unreachable, timed out or a non-200 status (named);
  // kDataLoss: body larger than max_body_bytes; kInvalidArgument: malformed
  // JSON (naming the element and field). The last good data stays in use.
  Status Refresh(std::string_view zone = "") const;

  std::string_view Name() const override { return "http"; }
  // The cached reading (fetching first when stale). kUnavailable with the
  // last fetch error when nothing was ever fetched; otherwise the series'
  // errors (kNotFound unknown zone, kOutOfRange outside the data).
  Result<IntensityReading> IntensityAt(std::string_view zone, TimePoint t) const override;
  Result<std::vector<IntensityReading>> Forecast(std::string_view zone, TimePoint from,
                                                 Duration horizon) const override;
  // Zones in the cached data (all-zone mode) or HttpSourceOptions::zones.
  std::vector<std::string> Zones() const override;

  // Requests made so far (successful or not).
  uint64_t fetches() const;
  // The source tag of readings: "http:<scheme>://<host><path>".
  const std::string& tag() const { return tag_; }

 private:
  struct Entry {
    std::unique_ptr<SeriesIntensitySource> data;
    std::optional<TimePoint> fetched;       // last success
    std::optional<TimePoint> attempted;     // last attempt
    Status last_error;
  };
  HttpIntensitySource(HttpSourceOptions options, std::string base, std::string target,
                      std::string tag);
  std::string Key(std::string_view zone) const;
  // Fetches into `e` (mu_ held).
  Status FetchLocked(const std::string& key, Entry& e) const;
  // `e` after fetching if it is stale and a retry is allowed (mu_ held).
  Entry& FreshLocked(std::string_view zone) const;

  HttpSourceOptions options_;
  std::string base_;    // "http://host:port"
  std::string target_;  // "/path?query" with "{zone}" still in it
  std::string tag_;
  bool per_zone_ = false;
  const Clock* clock_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Entry, std::less<>> entries_;
  mutable uint64_t fetches_ = 0;
};

}  // namespace verdant::energy
