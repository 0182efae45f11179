// What a finished request leaves in the logs: ids only when they look like
// ids, the stages in their fixed order, the status as the client got it,
// and an audit record that is one JSON object.
#include "server/request_record.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace upp::server {
namespace {

FinishedRequest Finished(absl::Status status) {
  // ids, model, peer, principal; input bytes, voxels, windows; seconds.
  return FinishedRequest{"r-1",
                         "study-42",
                         "phantom-ct",
                         "10.0.0.7",
                         "pacs",
                         1234,
                         100,
                         8,
                         2.5,
                         {{"send", 0.25}, {"decode", 0.5}, {"inference", 1.5}},
                         std::move(status)};
}

TEST(RequestRecordTest, ClientIdsReachTheLogsOnlyWhenTheyLookLikeIds) {
  EXPECT_EQ(LoggableId("study-42.a_b"), "study-42.a_b");
  EXPECT_EQ(LoggableId(""), "-");
  EXPECT_EQ(LoggableId(std::string(65, 'a')), "<long>");
  EXPECT_EQ(LoggableId("Doe^John"), "<redacted>");
  FinishedRequest r = Finished(absl::OkStatus());
  r.client_request_id = "Doe^John";
  EXPECT_EQ(RequestLogFields(r)["client_request_id"], "<redacted>");
  EXPECT_EQ(RequestLogText(r).find("Doe"), std::string::npos);
}

TEST(RequestRecordTest, StagesAppearInPipelineOrder) {
  const std::string text = RequestLogText(Finished(absl::OkStatus()));
  EXPECT_NE(text.find("[decode=0.500 inference=1.500 send=0.250]"), std::string::npos) << text;
  const auto fields = RequestLogFields(Finished(absl::OkStatus()));
  std::vector<std::string> order;
  for (const auto& [stage, seconds] : fields["stage_seconds"].items()) order.push_back(stage);
  EXPECT_EQ(order, (std::vector<std::string>{"decode", "inference", "send"}));
  EXPECT_FALSE(fields.contains("status_message"));
  EXPECT_EQ(fields["windows_skipped"], 0);
}

TEST(RequestRecordTest, AFailureCarriesItsStatusAsTheClientGotIt) {
  const FinishedRequest r = Finished(absl::InvalidArgumentError("input 2 is not NIfTI"));
  EXPECT_EQ(RequestLogFields(r)["status"], "INVALID_ARGUMENT");
  EXPECT_EQ(RequestLogFields(r)["status_message"], "input 2 is not NIfTI");
  EXPECT_NE(RequestLogText(r).find("status=INVALID_ARGUMENT: input 2 is not NIfTI"), std::string::npos);
}

TEST(RequestRecordTest, TheAuditRecordIsOneJsonObjectOfWhoWhatAndOutcome) {
  const nlohmann::json audit = AuditRecord(Finished(absl::OkStatus()), absl::FromUnixSeconds(0));
  const nlohmann::json parsed = nlohmann::json::parse(audit.dump());
  EXPECT_EQ(parsed["time"], "1970-01-01T00:00:00+00:00");
  EXPECT_EQ(parsed["principal"], "pacs");
  EXPECT_EQ(parsed["method"], "Segment");
  EXPECT_EQ(parsed["input_bytes"], 1234);
  EXPECT_EQ(parsed["windows"], 8);
  EXPECT_EQ(parsed["status"], "OK");
}

TEST(RequestRecordTest, ATracedRequestCarriesItsTraceIdInTheLogAndTheAudit) {
  FinishedRequest r = Finished(absl::OkStatus());
  EXPECT_EQ(RequestLogText(r).find("trace_id"), std::string::npos);
  EXPECT_FALSE(RequestLogFields(r).contains("trace_id"));
  EXPECT_FALSE(AuditRecord(r, absl::FromUnixSeconds(0)).contains("trace_id"));
  r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  EXPECT_TRUE(absl::EndsWith(RequestLogText(r), " status=OK trace_id=4bf92f3577b34da6a3ce929d0e0e4736"))
      << RequestLogText(r);
  EXPECT_EQ(RequestLogFields(r)["trace_id"], r.trace_id);
  EXPECT_EQ(AuditRecord(r, absl::FromUnixSeconds(0))["trace_id"], r.trace_id);
}

}  // namespace
}  // namespace upp::server
