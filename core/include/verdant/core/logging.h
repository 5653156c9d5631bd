// verdant/core/logging.h
//
// Log line conventions and the JSON log format. Key events log a short
// message followed by key=value fields, string values quoted with fmt's
// {:?} (e.g. `client failed: round=3 client=c7 reason="DEADLINE_EXCEEDED: ..."`);
// with --log-format json each line becomes one JSON object with the message,
// the level, the time and every field as its own member.
//   spdlog::info("round finished: round={} completed={}", r, n);
//   logger->set_formatter(MakeJsonLogFormatter());
//   // {"time":"2026-12-03T10:38:07.368Z","level":"info","msg":"round finished","round":3,"completed":5}
// Thread-safety: ParseLogFields is pure; a formatter is used by one sink at a time (spdlog clones it).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/formatter.h>

namespace verdant {

struct LogFields {
  std::string message;  // the text before the first key=value field (trailing ':' dropped)
  // Fields in order: key, value (quoted values unescaped), and whether the
  // value was quoted (a quoted value stays a string in JSON).
  struct Field {
    std::string key, value;
    bool quoted = false;
  };
  std::vector<Field> fields;
};

// Splits a log message into its text and key=value fields. Keys are
// [A-Za-z0-9_.]+; a value is a run of non-spaces or a double-quoted string
// with \" \\ \n \t \r escapes. Words after the first field that are not
// fields are appended to the message. Never fails.
LogFields ParseLogFields(std::string_view text);

// An spdlog formatter writing one JSON object per line: time (UTC, ms),
// level, logger, msg and the fields (numbers as numbers when the whole
// unquoted value is one; true/false as booleans).
std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter();

}  // namespace verdant
