#include "verdant/core/logging.h"

#include <spdlog/details/log_msg.h>

#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>

namespace verdant {

namespace {

bool IsKeyChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; }

// Reads a quoted value starting at text[i] == '"'; returns the position after
// the closing quote (or the end when it is missing) and fills `out`.
size_t ReadQuoted(std::string_view text, size_t i, std::string& out) {
  ++i;
  while (i < text.size()) {
    char c = text[i];
    if (c == '"') return i + 1;
    if (c == '\\' && i + 1 < text.size()) {
      char n = text[i + 1];
      switch (n) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        default: out += n;  // \" \\ and anything else: the character itself
      }
      i += 2;
      continue;
    }
    out += c;
    ++i;
  }
  return i;
}

std::string Iso8601Utc(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

nlohmann::json FieldValue(const LogFields::Field& f) {
  if (f.quoted) return f.value;
  if (f.value == "true") return true;
  if (f.value == "false") return false;
  if (!f.value.empty()) {
    const char* b = f.value.data();
    const char* e = b + f.value.size();
    int64_t i = 0;
    auto [pi, ei] = std::from_chars(b, e, i);
    if (ei == std::errc() && pi == e) return i;
    double d = 0;
    auto [pd, ed] = std::from_chars(b, e, d);
    if (ed == std::errc() && pd == e && std::isfinite(d)) return d;
  }
  return f.value;
}

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const LogFields parsed = ParseLogFields(std::string_view(msg.payload.data(), msg.payload.size()));
    nlohmann::ordered_json j;
    j["time"] = Iso8601Utc(msg.time);
    const auto level = spdlog::level::to_string_view(msg.level);
    j["level"] = std::string(level.data(), level.size());
    j["msg"] = parsed.message;
    for (const auto& f : parsed.fields) {
      if (f.key == "time" || f.key == "level" || f.key == "msg") {
        j["field_" + f.key] = FieldValue(f);  // never overwrite the envelope
      } else {
        j[f.key] = FieldValue(f);
      }
    }
    const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(line.data(), line.data() + line.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonLogFormatter>(); }
};

}  // namespace

LogFields ParseLogFields(std::string_view text) {
  LogFields out;
  std::string extra;  // non-field words after the first field
  size_t i = 0;
  size_t message_end = text.size();
  bool in_fields = false;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    if (i >= text.size()) break;
    const size_t start = i;
    size_t k = i;
    while (k < text.size() && IsKeyChar(text[k])) ++k;
    if (k > start && k < text.size() && text[k] == '=') {
      if (!in_fields) {
        message_end = start;
        in_fields = true;
      }
      LogFields::Field f;
      f.key = std::string(text.substr(start, k - start));
      size_t v = k + 1;
      if (v < text.size() && text[v] == '"') {
        f.quoted = true;
        i = ReadQuoted(text, v, f.value);
      } else {
        size_t e = v;
        while (e < text.size() && text[e] != ' ') ++e;
        f.value = std::string(text.substr(v, e - v));
        i = e;
      }
      out.fields.push_back(std::move(f));
      continue;
    }
    size_t e = i;
    while (e < text.size() && text[e] != ' ') ++e;
    if (in_fields) {
      if (!extra.empty()) extra += ' ';
      extra += std::string(text.substr(i, e - i));
    }
    i = e;
  }
  std::string_view head = text.substr(0, message_end);
  while (!head.empty() && (head.back() == ' ' || head.back() == ':')) head.remove_suffix(1);
  out.message = std::string(head);
  if (!extra.empty()) out.message += (out.message.empty() ? "" : " ") + extra;
  return out;
}

std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter() { return std::make_unique<JsonLogFormatter>(); }

}  // namespace verdant
