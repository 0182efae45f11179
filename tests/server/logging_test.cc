// The server's log format (server/logging.h): JSON lines that parse, with a
// record's fields as members; text lines unchanged.
#include "server/logging.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <memory>
#include <sstream>
#include <string>

namespace upp::server {
namespace {

// The default logger writes to a string for the test's lifetime, with the
// JSON formatter or spdlog's pattern.
class CapturedLog {
 public:
  explicit CapturedLog(bool json) : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    if (json) sink->set_formatter(JsonLogFormatter());
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

nlohmann::json OnlyLine(const std::string& text) {
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line: " << text;
  return nlohmann::json::parse(text);  // throws (fails the test) when it is not JSON
}

TEST(LoggingTest, JsonLinesEscapeTheMessage) {
  CapturedLog log(/*json=*/true);
  spdlog::warn("no model named \"{}\" (see ListModels)", "a\\b\nc");
  const auto record = OnlyLine(log.text());
  EXPECT_EQ(record["level"], "warning");
  EXPECT_EQ(record["message"], "no model named \"a\\b\nc\" (see ListModels)");
  // 2024-05-01T12:00:00.123+0000
  const std::string time = record["time"];
  EXPECT_EQ(time.size(), 28u) << time;
  EXPECT_EQ(time[10], 'T');
  EXPECT_EQ(time[19], '.');
}

TEST(LoggingTest, JsonLinesSurviveInvalidUtf8) {
  CapturedLog log(/*json=*/true);
  spdlog::info("model \xff\xfe");
  const auto record = OnlyLine(log.text());
  EXPECT_EQ(record["message"].get<std::string>().rfind("model ", 0), 0u);
}

TEST(LoggingTest, FieldsAreMembersOfTheJsonRecord) {
  CapturedLog log(/*json=*/true);
  nlohmann::ordered_json fields{{"message", "request finished"},
                                {"request_id", "7"},
                                {"windows", 12},
                                {"stage_seconds", {{"queue_wait", 0.25}}},
                                {"time", "not this one"}};
  LogWithFields(spdlog::level::info, fields, "request 7 windows=12");
  const std::string text = log.text();
  const auto record = OnlyLine(text);
  EXPECT_EQ(record["message"], "request finished");
  EXPECT_EQ(record["request_id"], "7");
  EXPECT_EQ(record["windows"], 12);
  EXPECT_EQ(record["stage_seconds"]["queue_wait"], 0.25);
  EXPECT_NE(record["time"], "not this one");  // the record's own time
  EXPECT_EQ(record["level"], "info");
  // time and level lead, as on every other line.
  EXPECT_EQ(text.rfind("{\"time\":", 0), 0u) << text;
  EXPECT_EQ(text.find("request 7 windows=12"), std::string::npos) << text;

  // The fields belong to that record only.
  CapturedLog next(/*json=*/true);
  spdlog::info("plain");
  EXPECT_EQ(OnlyLine(next.text()).count("request_id"), 0u) << next.text();
}

TEST(LoggingTest, TextLinesAreTheText) {
  CapturedLog log(/*json=*/false);
  LogWithFields(spdlog::level::info, {{"message", "request finished"}, {"request_id", "7"}}, "request 7 windows=12");
  const std::string text = log.text();
  EXPECT_NE(text.find("request 7 windows=12"), std::string::npos) << text;
  EXPECT_EQ(text.find("request finished"), std::string::npos) << text;
}

TEST(LoggingTest, LoggableMessageHasNoControlCharactersAndIsBounded) {
  EXPECT_EQ(LoggableMessage("no model named \"x\ny\r\tz\""), "no model named \"x y  z\"");
  EXPECT_EQ(LoggableMessage(std::string(600, 'a'), 500), std::string(500, 'a') + "...");
  // Cut before a UTF-8 sequence, not inside it ("é" is two bytes).
  EXPECT_EQ(LoggableMessage("ab\xc3\xa9", 3), "ab...");
}

}  // namespace
}  // namespace upp::server
