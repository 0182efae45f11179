#include "server/logging.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/details/os.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace upp::server {
namespace {

// The fields of the record being logged on this thread (LogWithFields).
thread_local const nlohmann::ordered_json* t_fields = nullptr;

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json record;
    record["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3S%z", absl::FromChrono(msg.time), absl::LocalTimeZone());
    const auto level = spdlog::level::to_string_view(msg.level);
    record["level"] = std::string(level.data(), level.size());
    if (t_fields && t_fields->is_object()) {
      for (const auto& [key, value] : t_fields->items())
        if (key != "time" && key != "level") record[key] = value;
    } else {
      record["message"] = std::string(msg.payload.data(), msg.payload.size());
    }
    // replace: a client's string with invalid UTF-8 must not throw here
    // (spdlog would print its own error instead of the record).
    const std::string line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    dest.append(line.data(), line.data() + line.size());
    const std::string_view eol = spdlog::details::os::default_eol;
    dest.append(eol.data(), eol.data() + eol.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

std::unique_ptr<spdlog::formatter> JsonLogFormatter() { return std::make_unique<JsonFormatter>(); }

void LogWithFields(spdlog::level::level_enum level, const nlohmann::ordered_json& fields, const std::string& text) {
  struct Reset {
    ~Reset() { t_fields = nullptr; }
  } reset;
  t_fields = &fields;
  spdlog::log(level, "{}", text);
}

std::string LoggableMessage(const std::string& message, size_t max_bytes) {
  std::string out = message;
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    // Not inside a UTF-8 sequence.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...";
  }
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return out;
}

}  // namespace upp::server
