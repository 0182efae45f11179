// The server's log records. Text mode is spdlog's pattern, one line per
// record. JSON mode (logging.json, --log-json) writes one JSON object per
// line: time, level and message, and for records logged with LogWithFields
// their fields as members of that object, so that a log pipeline filters on
// them (status, model, seconds) without parsing the message.
//
// Threading: the formatter has no state; LogWithFields may be called from
// any thread.
#ifndef UPP_SERVER_LOGGING_H_
#define UPP_SERVER_LOGGING_H_

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace upp::server {

// The formatter of JSON mode: {"time":"2024-05-01T12:00:00.123+0000",
// "level":"info","message":"..."} per line, strings escaped (a message that
// quotes a client's model name stays valid JSON), invalid UTF-8 replaced.
std::unique_ptr<spdlog::formatter> JsonLogFormatter();

// Logs a record with fields through the default logger at `level`: in JSON
// mode (JsonLogFormatter) the members of `fields` (an object; "message"
// first, by convention) are the record's members after time and level; with
// any other formatter the record is `text`. The fields reach the formatter
// on this thread: the server's loggers are synchronous (with an asynchronous
// one the record would fall back to {"message": text}).
void LogWithFields(spdlog::level::level_enum level, const nlohmann::ordered_json& fields, const std::string& text);

// A server-written message (a status message) as a log may hold it: control
// characters (a client's newline in a model name would forge a log line) as
// spaces, at most `max_bytes` bytes (a trailing "...").
std::string LoggableMessage(const std::string& message, size_t max_bytes = 500);

}  // namespace upp::server

#endif  // UPP_SERVER_LOGGING_H_
