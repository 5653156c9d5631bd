#include "verdant/energy/http_carbon.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

namespace verdant::energy {

namespace {

bool IsTokenChar(char c) {
  // RFC 9110 token characters.
  return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string UrlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

// At most `n` characters of a response body, printable, for an error message.
std::string Excerpt(const std::string& body, size_t n = 160) {
  std::string out;
  for (char c : body.substr(0, n)) out.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : ' ');
  if (body.size() > n) out += "...";
  return out;
}

std::string SecondsText(Duration d) { return std::to_string(std::chrono::duration<double>(d).count()) + " s"; }

}  // namespace

HttpIntensitySource::HttpIntensitySource(HttpSourceOptions options, std::string base, std::string target,
                                         std::string tag)
    : options_(std::move(options)),
      base_(std::move(base)),
      target_(std::move(target)),
      tag_(std::move(tag)),
      clock_(options_.clock != nullptr ? options_.clock : &SystemClock::Default()) {
  per_zone_ = target_.find("{zone}") != std::string::npos;
}

Result<std::unique_ptr<HttpIntensitySource>> HttpIntensitySource::Create(HttpSourceOptions o) {
  const std::string& url = o.url;
  std::string scheme;
  if (url.rfind("http://", 0) == 0) {
    scheme = "http";
  } else if (url.rfind("https://", 0) == 0) {
    scheme = "https";
  } else {
    return InvalidArgumentError("carbon url '" + url + "' must start with http:// or https://");
  }
  const size_t host_begin = scheme.size() + 3;
  size_t host_end = url.find_first_of("/?#", host_begin);
  if (host_end == std::string::npos) host_end = url.size();
  const std::string authority = url.substr(host_begin, host_end - host_begin);
  if (authority.empty() || authority.find('@') != std::string::npos ||
      authority.find_first_of(" \t\r\n") != std::string::npos) {
    return InvalidArgumentError("carbon url '" + url + "' has no valid host (user@host is not supported)");
  }
  if (auto colon = authority.rfind(':'); colon != std::string::npos && authority.back() != ']') {
    const std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) == 0 || std::stoi(port) > 65535) {
      return InvalidArgumentError("carbon url '" + url + "' has a bad port '" + port + "'");
    }
  }
  std::string target = url.substr(host_end);
  if (auto hash = target.find('#'); hash != std::string::npos) target.resize(hash);
  if (target.empty() || target[0] != '/') target = "/" + target;
  if (target.find_first_of(" \t\r\n") != std::string::npos) {
    return InvalidArgumentError("carbon url '" + url + "' has white space in its path");
  }
  for (const auto& [name, value] : o.headers) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar)) {
      return InvalidArgumentError("carbon HTTP header name '" + name + "' is not a valid header name");
    }
    if (value.find_first_of("\r\n") != std::string::npos) {
      return InvalidArgumentError("carbon HTTP header '" + name + "' has a line break in its value");
    }
  }
  if (o.timeout.count() <= 0) return InvalidArgumentError("carbon HTTP timeout must be > 0");
  if (o.refresh.count() <= 0) return InvalidArgumentError("carbon HTTP refresh interval must be > 0");
  if (o.retry.count() < 0 || o.hold_last.count() < 0) {
    return InvalidArgumentError("carbon HTTP retry and hold_last must be >= 0");
  }
  if (o.max_body_bytes == 0) return InvalidArgumentError("carbon HTTP max_body_bytes must be > 0");
  const std::string base = scheme + "://" + authority;
  std::string tag = "http:" + base + target.substr(0, target.find('?'));
  return std::unique_ptr<HttpIntensitySource>(
      new HttpIntensitySource(std::move(o), base, std::move(target), std::move(tag)));
}

std::string HttpIntensitySource::Key(std::string_view zone) const {
  return per_zone_ ? std::string(zone) : std::string();
}

Status HttpIntensitySource::FetchLocked(const std::string& key, Entry& e) const {
  e.attempted = clock_->Now();
  ++fetches_;
  std::string target = target_;
  for (size_t at; (at = target.find("{zone}")) != std::string::npos;) target.replace(at, 6, UrlEncode(key));
  const std::string what = "GET " + base_ + target.substr(0, target.find('?'));
  Status st = [&]() -> Status {
    httplib::Client client(base_);
    if (!client.is_valid()) return InvalidArgumentError(what + ": cannot build an HTTP client for " + base_);
    client.set_connection_timeout(options_.timeout);
    client.set_read_timeout(options_.timeout);
    client.set_write_timeout(options_.timeout);
    httplib::Headers headers;
    for (const auto& [name, value] : options_.headers) headers.emplace(name, value);
    headers.emplace("Accept", "application/json");
    std::string body;
    bool too_large = false;
    auto res = client.Get(target, headers, [&](const char* data, size_t n) {
      if (body.size() + n > options_.max_body_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    if (too_large) {
      return DataLossError(what + ": response larger than " + std::to_string(options_.max_body_bytes) + " bytes");
    }
    if (!res) {
      return UnavailableError(what + ": " + httplib::to_string(res.error()) + " (timeout " + SecondsText(options_.timeout) +
                              ")");
    }
    if (res->status != 200) {
      return UnavailableError(what + ": HTTP " + std::to_string(res->status) + (body.empty() ? "" : ": ") +
                              Excerpt(body));
    }
    auto parsed = SeriesIntensitySource::Parse(body, tag_, options_.json);
    if (!parsed.ok()) return parsed.status();  // names the source tag, element and field
    e.data = std::move(*parsed);
    e.fetched = e.attempted;
    return OkStatus();
  }();
  e.last_error = st;
  if (!st.ok()) {
    spdlog::warn("carbon intensity: {}; {} (next try in {})", st.ToString(),
                 e.data ? "keeping the data fetched before" : "no data yet: lookups fall back",
                 SecondsText(options_.retry));
  }
  return st;
}

Status HttpIntensitySource::Refresh(std::string_view zone) const {
  std::lock_guard<std::mutex> l(mu_);
  const std::string key = Key(zone);
  return FetchLocked(key, entries_[key]);
}

HttpIntensitySource::Entry& HttpIntensitySource::FreshLocked(std::string_view zone) const {
  const std::string key = Key(zone);
  Entry& e = entries_[key];
  const TimePoint now = clock_->Now();
  const bool stale = !e.fetched || now - *e.fetched >= options_.refresh;
  const bool may_try = !e.attempted || now - *e.attempted >= options_.retry;
  if (stale && may_try) (void)FetchLocked(key, e);
  return e;
}

Result<IntensityReading> HttpIntensitySource::IntensityAt(std::string_view zone, TimePoint t) const {
  std::lock_guard<std::mutex> l(mu_);
  Entry& e = FreshLocked(zone);
  if (!e.data) {
    return UnavailableError("no carbon intensity from " + tag_ + " yet: " + e.last_error.ToString());
  }
  auto r = e.data->IntensityAt(zone, t);
  if (r.ok() || r.status().code() != StatusCode::kOutOfRange || options_.hold_last.count() == 0) return r;
  auto last = e.data->LastPoint(zone);
  if (last && t >= last->time + last->duration && t < last->time + last->duration + options_.hold_last) {
    return e.data->IntensityAt(zone, last->time);  // trace_time says which point answered
  }
  return r;
}

Result<std::vector<IntensityReading>> HttpIntensitySource::Forecast(std::string_view zone, TimePoint from,
                                                                    Duration horizon) const {
  {
    std::lock_guard<std::mutex> l(mu_);
    Entry& e = FreshLocked(zone);
    if (!e.data) {
      return UnavailableError("no carbon intensity from " + tag_ + " yet: " + e.last_error.ToString());
    }
    auto f = e.data->Forecast(zone, from, horizon);
    if (f.ok() || f.status().code() != StatusCode::kOutOfRange) return f;
  }
  // Past the data (within hold_last): the last point is all there is.
  VERDANT_ASSIGN_OR_RETURN(IntensityReading r, IntensityAt(zone, from));
  return std::vector<IntensityReading>{r};
}

std::vector<std::string> HttpIntensitySource::Zones() const {
  if (per_zone_) return options_.zones;
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find("");
  return it != entries_.end() && it->second.data ? it->second.data->Zones() : options_.zones;
}

uint64_t HttpIntensitySource::fetches() const {
  std::lock_guard<std::mutex> l(mu_);
  return fetches_;
}

}  // namespace verdant::energy
