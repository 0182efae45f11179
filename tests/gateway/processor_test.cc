// Which failures the gateway sends again later.
#include "gateway/processor.h"

#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "proto/api.h"

namespace upp::gateway {
namespace {

TEST(RetryableTest, BusyServicesAreRetriedRequestsOverItsLimitsAreNot) {
  EXPECT_TRUE(Retryable(absl::UnavailableError("draining")));
  EXPECT_TRUE(Retryable(absl::DeadlineExceededError("slow")));
  // Refused for the load of the moment: the service says when to come back.
  EXPECT_TRUE(Retryable(proto::WithRetryAfter(absl::ResourceExhaustedError("at its memory limit"), absl::Seconds(30))));
  // Refused for what the series is (more instances than the service takes).
  EXPECT_FALSE(Retryable(absl::ResourceExhaustedError("more than 4096 input files")));
  EXPECT_FALSE(Retryable(absl::InvalidArgumentError("slices missing")));
}

TEST(RetryableTest, TheHintSurvivesOnlyAsSet) {
  const absl::Status hinted = proto::WithRetryAfter(absl::ResourceExhaustedError("busy"), absl::Milliseconds(1500));
  ASSERT_TRUE(proto::RetryAfter(hinted).has_value());
  EXPECT_EQ(*proto::RetryAfter(hinted), absl::Milliseconds(1500));
  EXPECT_FALSE(proto::RetryAfter(absl::ResourceExhaustedError("busy")).has_value());
}

// A sender's Modality reaches the log escaped: it cannot start a forged
// line or drive an operator's terminal.
TEST(ProcessorTest, ASendersModalityIsEscapedBeforeItIsLogged) {
  constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";
  DcmFileFormat file;
  if (file.loadFile(kCtSmall).bad()) GTEST_SKIP() << "python3-pydicom test data not installed";
  DcmDataset* ds = file.getDataset();
  ASSERT_TRUE(ds->putAndInsertString(DCM_Modality, "OT\n2026-01-01 [error] forged\x1b[2J").good());
  OFString series, sop;
  ds->findAndGetOFString(DCM_SeriesInstanceUID, series);
  ds->findAndGetOFString(DCM_SOPInstanceUID, sop);
  const std::filesystem::path root =
      std::filesystem::temp_directory_path() / ("upp-processor-test-" + std::to_string(getpid()));
  std::filesystem::remove_all(root);
  auto spool = Spool::Create(root.string());
  ASSERT_TRUE(spool.ok()) << spool.status();
  const std::string incoming = (*spool)->IncomingPath();
  ASSERT_TRUE(file.saveFile(incoming.c_str(), EXS_LittleEndianExplicit).good());
  ASSERT_TRUE((*spool)->Commit(incoming, series.c_str(), sop.c_str()).ok());
  const auto due = (*spool)->ClaimDue(absl::ZeroDuration(), absl::Now() + absl::Hours(1));
  ASSERT_EQ(due.size(), 1u);

  std::ostringstream log;
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  unetrpp::v1::GatewayConfig config;  // no rules: the series matches none
  config.set_unmatched("keep");
  config.set_max_series_instances(10);
  config.set_max_series_bytes(1 << 30);
  config.mutable_listener()->set_max_instance_bytes(1 << 30);
  GatewayMetrics metrics;
  Processor processor(config, spool->get(), &metrics);
  const auto outcome = processor.ProcessSeries(due[0]);
  spdlog::set_default_logger(previous);
  std::filesystem::remove_all(root);

  EXPECT_EQ(outcome, Processor::Outcome::kUnmatched);
  const std::string text = log.str();
  EXPECT_NE(text.find("modality OT\\x0a2026-01-01 [error] forged\\x1b[2J"), std::string::npos) << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;  // one line, its own
}

}  // namespace
}  // namespace upp::gateway
