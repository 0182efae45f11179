#include "gateway/sender_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace upp::gateway {

std::string SenderText(absl::string_view raw, size_t max_bytes) {
  std::string out;
  const absl::string_view kept = raw.substr(0, max_bytes);
  for (const char c : kept) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && c != '\\')
      out.push_back(c);
    else
      out += absl::StrFormat("\\x%02x", byte);
  }
  if (raw.size() > kept.size()) absl::StrAppend(&out, "... (", raw.size(), " bytes)");
  return out;
}

}  // namespace upp::gateway
