#include "proto/text_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace upp::proto {
namespace {

// Collects the first parse error with its position.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat("line ", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

constexpr std::streamsize kMaxConfigBytes = 16 << 20;

}  // namespace

absl::Status ParseTextConfig(const std::string& text, google::protobuf::Message& message) {
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &message))
    return absl::InvalidArgumentError(absl::StrCat("config: ", errors.error()));
  return absl::OkStatus();
}

absl::Status LoadTextConfigFile(const std::string& path, google::protobuf::Message& message) {
  // proto/ does not depend on imageio/ (its file helper): a config file is
  // small and read once, so a bounded stream read is enough here.
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be read"));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || size > kMaxConfigBytes)
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a file of at most 16 MiB"));
  in.seekg(0);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), size)) return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be read"));
  if (auto s = ParseTextConfig(text, message); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  return absl::OkStatus();
}

}  // namespace upp::proto
