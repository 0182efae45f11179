// A multipart sink for tests: each part's Content-Type and bytes, as the
// reader handed them on (the STOW-RS and WADO-RS client tests read what
// crossed the wire with the receiver's own reader).
#ifndef UPP_TESTS_GATEWAY_COLLECT_PARTS_H_
#define UPP_TESTS_GATEWAY_COLLECT_PARTS_H_

#include <string>
#include <vector>

#include "gateway/multipart.h"

namespace upp::gateway {

class CollectParts : public MultipartReader::Sink {
 public:
  absl::Status BeginPart(absl::string_view content_type) override {
    types.emplace_back(content_type);
    parts.emplace_back();
    return absl::OkStatus();
  }
  absl::Status PartData(absl::string_view data) override {
    parts.back().append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status EndPart() override { return absl::OkStatus(); }
  std::vector<std::string> types, parts;
};

}  // namespace upp::gateway

#endif  // UPP_TESTS_GATEWAY_COLLECT_PARTS_H_
