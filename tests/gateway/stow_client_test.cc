// The STOW-RS sender against a fake archive on loopback (cpp-httplib): the
// request it writes (media type, credential, the files as parts, read back
// with the receiver's multipart reader), and how each answer maps onto the
// processor's retry policy (Retryable).
#include "gateway/stow_client.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "gateway/multipart.h"
#include "gateway/processor.h"
#include "tests/gateway/collect_parts.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

class StowClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("upp-stow-client-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    for (const char* name : {"seg.dcm", "report.dcm"}) {
      files_.push_back((dir_ / name).string());
      std::ofstream(files_.back(), std::ios::binary) << "contents of " << name << std::string(100000, 'z');
    }
    std::ofstream(dir_ / "token") << "  the-token\n";
    std::ofstream(dir_ / "basic") << "user:secret\n";
    server_.Post("/dicom-web/studies", [this](const httplib::Request& req, httplib::Response& res) {
      authorization_ = req.get_header_value("Authorization");
      auto type = ParseMultipartRelated(req.get_header_value("Content-Type"));
      if (type.ok() && type->type == "application/dicom") {
        MultipartReader reader(type->boundary, &received_);
        if (reader.Feed(req.body).ok() && reader.Finish().ok()) well_formed_ = true;
      }
      res.status = answer_;
      res.set_content("{}", "application/dicom+json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    serving_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the loop has begun would be lost.
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    destination_.set_url("http://127.0.0.1:" + std::to_string(port_) + "/dicom-web/");
    destination_.set_timeout_seconds(10);
  }
  void TearDown() override {
    server_.stop();
    serving_.join();
    fs::remove_all(dir_);
  }

  fs::path dir_;
  std::vector<std::string> files_;
  httplib::Server server_;
  std::thread serving_;
  int port_ = 0;
  unetrpp::v1::DicomWebDestination destination_;
  int answer_ = 200;
  std::string authorization_;
  CollectParts received_;
  bool well_formed_ = false;
};

TEST_F(StowClientTest, SendsEachFileAsAnApplicationDicomPartWithTheToken) {
  destination_.set_token_file((dir_ / "token").string());
  ASSERT_TRUE(SendFilesStowRs(destination_, files_).ok());
  EXPECT_TRUE(well_formed_);
  EXPECT_EQ(authorization_, "Bearer the-token");
  ASSERT_EQ(received_.parts.size(), 2u);
  EXPECT_EQ(received_.types[0], "application/dicom");
  EXPECT_EQ(received_.parts[0].substr(0, 19), "contents of seg.dcm");
  EXPECT_EQ(received_.parts[1].size(), std::string("contents of report.dcm").size() + 100000);
}

TEST_F(StowClientTest, BasicAuthFromItsFile) {
  destination_.set_basic_auth_file((dir_ / "basic").string());
  ASSERT_TRUE(SendFilesStowRs(destination_, files_).ok());
  EXPECT_EQ(authorization_, "Basic dXNlcjpzZWNyZXQ=");  // user:secret
}

TEST_F(StowClientTest, AnswersMapOntoTheCStoreRetryPolicy) {
  for (int code : {500, 503, 408, 429, 401}) {
    answer_ = code;
    const absl::Status s = SendFilesStowRs(destination_, files_);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << code;
    EXPECT_TRUE(Retryable(s)) << code;
  }
  for (int code : {202, 409, 400, 403, 404}) {
    answer_ = code;
    const absl::Status s = SendFilesStowRs(destination_, files_);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << code;
    EXPECT_FALSE(Retryable(s)) << code;
  }
}

TEST_F(StowClientTest, AnArchiveThatCannotBeReachedIsRetried) {
  destination_.set_url("http://127.0.0.1:1/dicom-web");
  const absl::Status s = SendFilesStowRs(destination_, files_);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(Retryable(s));
}

TEST_F(StowClientTest, HttpsVerifiesThePeer) {
  // A plain HTTP server answering on an https:// URL: the TLS handshake
  // fails, nothing is sent in clear text.
  destination_.set_url("https://127.0.0.1:" + std::to_string(port_) + "/dicom-web");
  const absl::Status s = SendFilesStowRs(destination_, files_);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(authorization_.empty());
}

TEST_F(StowClientTest, AMissingTokenFileIsRetriedNotSentWithout) {
  destination_.set_token_file((dir_ / "absent").string());
  EXPECT_EQ(SendFilesStowRs(destination_, files_).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(well_formed_);
}

}  // namespace
}  // namespace upp::gateway
