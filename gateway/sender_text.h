// Text a DICOM sender wrote (attribute values such as Modality, anything
// from an instance), made safe for a log line or a spool's reason file:
// printable ASCII stays, a backslash and every other byte (line breaks,
// terminal escape sequences, non-ASCII) become \xNN, and the text is cut
// after `max_bytes` (a value: kMaxSenderTextBytes). A sender can then neither forge a log line nor
// drive an operator's terminal, nor flood the log with one value.
//
// Threading: a pure function.
#ifndef UPP_GATEWAY_SENDER_TEXT_H_
#define UPP_GATEWAY_SENDER_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace upp::gateway {

inline constexpr size_t kMaxSenderTextBytes = 64;

std::string SenderText(absl::string_view raw, size_t max_bytes = kMaxSenderTextBytes);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_SENDER_TEXT_H_
