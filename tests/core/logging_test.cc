#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "verdant/core/logging.h"

using namespace verdant;

TEST_CASE("log messages split into text and key=value fields, quoted values unescaped") {
  auto f = ParseLogFields("client failed: round=3 client=c7 reason=\"DEADLINE: no \\\"result\\\" in 5 s\"");
  CHECK(f.message == "client failed");
  REQUIRE(f.fields.size() == 3);
  CHECK(f.fields[0].key == "round");
  CHECK(f.fields[0].value == "3");
  CHECK_FALSE(f.fields[0].quoted);
  CHECK(f.fields[2].key == "reason");
  CHECK(f.fields[2].value == "DEADLINE: no \"result\" in 5 s");
  CHECK(f.fields[2].quoted);
  auto plain = ParseLogFields("coordinator listening on 127.0.0.1:7070");
  CHECK(plain.message == "coordinator listening on 127.0.0.1:7070");
  CHECK(plain.fields.empty());
  auto odd = ParseLogFields("x a=1 stray b=\"unterminated");
  CHECK(odd.message == "x stray");
  REQUIRE(odd.fields.size() == 2);
  CHECK(odd.fields[1].value == "unterminated");
  CHECK(ParseLogFields("").message.empty());
  CHECK(ParseLogFields("=x").message == "=x");
}

TEST_CASE("the JSON log formatter writes one parseable object per line with typed fields") {
  std::ostringstream os;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(os);
  sink->set_formatter(MakeJsonLogFormatter());
  spdlog::logger log("t", sink);
  log.warn("round finished: round={} seconds={} ok={} client={:?} msg={:?}", 4, 1.5, true, "c \"1\"\n", "x");
  log.info("no fields here");
  std::istringstream in(os.str());
  std::string line;
  REQUIRE(std::getline(in, line));
  auto j = nlohmann::json::parse(line);
  CHECK(j["level"] == "warning");
  CHECK(j["msg"] == "round finished");
  CHECK(j["round"] == 4);
  CHECK(j["seconds"] == doctest::Approx(1.5));
  CHECK(j["ok"] == true);
  CHECK(j["client"] == "c \"1\"\n");
  CHECK(j["field_msg"] == "x");
  CHECK(j["time"].get<std::string>().size() == 24);  // 2026-12-03T10:38:07.368Z
  REQUIRE(std::getline(in, line));
  auto k = nlohmann::json::parse(line);
  CHECK(k["msg"] == "no fields here");
  CHECK(k["level"] == "info");
}
