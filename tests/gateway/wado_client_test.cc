// Pull mode's WADO-RS fetch against a fake DICOMweb source on loopback
// (cpp-httplib): the request it sends (path, Accept, credential), the parts
// handed to the sink as they arrive, and each way a source can fail, above
// all a body over the limit cut off while it arrives.
#include "gateway/wado_client.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tests/gateway/collect_parts.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kStudy[] = "1.2.826.0.1.3680043.2.1125.1";
constexpr char kSeries[] = "1.2.826.0.1.3680043.2.1125.1.2";
constexpr char kMultipart[] = "multipart/related; type=\"application/dicom\"; boundary=SRC";

// The fake source's answer is set by the test thread and read by the
// source's thread for each request: under mu_. What the source saw of the
// request is written by its thread and read by the test: under mu_ too.
class WadoClientTest : public ::testing::Test {
 protected:
  // What one request gets, copied under mu_ when it arrives.
  struct Answer {
    int status = 200;
    bool endless = false;
    absl::Duration stall;  // before the headers
    std::string body =
        "--SRC\r\nContent-Type: application/dicom\r\n\r\nfirst instance\r\n"
        "--SRC\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--SRC--\r\n";
    std::string type = kMultipart;
  };

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("upp-wado-client-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "token") << "source-token\n";
    source_.Get(R"(/wado/studies/([0-9.]+)(/series/([0-9.]+))?)",
                [this](const httplib::Request& req, httplib::Response& res) { Serve(req, res); });
    port_ = source_.bind_to_any_port("127.0.0.1");
    serving_ = std::thread([this] { source_.listen_after_bind(); });
    // Bound and listening already (a request would wait in the backlog), but
    // stop() before the accept loop has started would not end it: TearDown
    // needs it running. cpp-httplib 0.11 has no wait_until_ready to block on.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!source_.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_TRUE(source_.is_running());
    service_.set_url("http://127.0.0.1:" + std::to_string(port_) + "/wado/");
    service_.set_token_file((dir_ / "token").string());
    service_.set_timeout_seconds(10);
    limits_.max_bytes = 256 * 1024;
    limits_.max_time = absl::Seconds(30);
  }
  void TearDown() override {
    source_.stop();
    if (serving_.joinable()) serving_.join();
    fs::remove_all(dir_);
  }

  // The source's thread.
  void Serve(const httplib::Request& req, httplib::Response& res) {
    Answer answer;
    {
      absl::MutexLock lock(&mu_);
      path_ = req.path;
      accept_ = req.get_header_value("Accept");
      authorization_ = req.get_header_value("Authorization");
      answer = answer_;
    }
    if (answer.stall > absl::ZeroDuration()) absl::SleepFor(answer.stall);
    if (answer.status != 200) {
      res.status = answer.status;
      res.set_content("{\"detail\":\"patient data the gateway must not log\"}", "application/json");
      return;
    }
    if (answer.endless) {
      // A body that does not end: chunks until the client stops reading.
      res.set_chunked_content_provider(
          kMultipart,
          [this](size_t, httplib::DataSink& sink) {
            static const std::string kHead = "--SRC\r\nContent-Type: application/dicom\r\n\r\n";
            const std::string piece(64 * 1024, 'x');
            if (sent_ == 0 && !sink.write(kHead.data(), kHead.size())) return false;
            if (!sink.write(piece.data(), piece.size())) return false;
            sent_ += piece.size();
            return sent_ < (uint64_t{256} << 20);  // 256 MiB at most, should it never be stopped
          },
          // Called once the response has ended, whichever way.
          [this](bool) {
            absl::MutexLock lock(&mu_);
            provider_done_ = true;
          });
      return;
    }
    res.set_content(answer.body, answer.type);
  }

  // How the source answers the next requests.
  void SetAnswer(const std::function<void(Answer&)>& change) {
    absl::MutexLock lock(&mu_);
    change(answer_);
  }

  absl::Status Fetch(const std::string& series = kSeries) {
    return FetchWadoRs(service_, "dicomweb.sources[0].service", kStudy, series, limits_, &received_);
  }

  fs::path dir_;
  httplib::Server source_;
  std::thread serving_;
  int port_ = 0;
  unetrpp::v1::DicomWebDestination service_;
  WadoLimits limits_;
  CollectParts received_;
  std::atomic<uint64_t> sent_{0};  // by the endless body's provider, on the source's thread
  absl::Mutex mu_;
  Answer answer_ ABSL_GUARDED_BY(mu_);
  bool provider_done_ ABSL_GUARDED_BY(mu_) = false;  // the endless body's provider has stopped
  std::string path_ ABSL_GUARDED_BY(mu_), accept_ ABSL_GUARDED_BY(mu_), authorization_ ABSL_GUARDED_BY(mu_);
};

TEST_F(WadoClientTest, FetchesTheSeriesPartByPartWithTheToken) {
  ASSERT_TRUE(Fetch().ok());
  EXPECT_EQ(received_.parts, (std::vector<std::string>{"first instance", "second"}));
  EXPECT_EQ(received_.types, (std::vector<std::string>{"application/dicom", "application/dicom"}));
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(path_, absl::StrCat("/wado/studies/", kStudy, "/series/", kSeries));
  EXPECT_EQ(accept_, "multipart/related; type=\"application/dicom\"; transfer-syntax=*");
  EXPECT_EQ(authorization_, "Bearer source-token");
}

TEST_F(WadoClientTest, AWholeStudyWithoutASeries) {
  ASSERT_TRUE(Fetch("").ok());
  EXPECT_EQ(received_.parts.size(), 2u);
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(path_, absl::StrCat("/wado/studies/", kStudy));
}

TEST_F(WadoClientTest, EachAnswerOfTheSourceHasItsStatus) {
  SetAnswer([](Answer& a) { a.status = 404; });
  EXPECT_EQ(Fetch().code(), absl::StatusCode::kNotFound);
  SetAnswer([](Answer& a) { a.status = 503; });
  EXPECT_EQ(Fetch().code(), absl::StatusCode::kUnavailable);
  SetAnswer([](Answer& a) { a.status = 403; });
  const absl::Status refused = Fetch();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message().find("patient"), absl::string_view::npos) << refused;  // the body is not quoted
  EXPECT_TRUE(received_.parts.empty());
  SetAnswer([](Answer& a) {
    a.status = 200;
    a.type = "application/dicom+json";
  });
  EXPECT_EQ(Fetch().code(), absl::StatusCode::kFailedPrecondition);
  SetAnswer([](Answer& a) {
    a.type = kMultipart;
    a.body = "--SRC\r\nContent-Type: application/dicom\r\n\r\ncut short";  // no closing delimiter
  });
  EXPECT_EQ(Fetch().code(), absl::StatusCode::kInvalidArgument);
  service_.set_url("http://127.0.0.1:1/wado");  // nothing listens there
  EXPECT_EQ(Fetch().code(), absl::StatusCode::kUnavailable);
}

// The source's body is counted as it arrives: the transfer stops once it
// is over max_bytes, long before the source would have finished.
TEST_F(WadoClientTest, ABodyOverTheLimitIsCutOffWhileItArrives) {
  SetAnswer([](Answer& a) { a.endless = true; });
  const absl::Status s = Fetch();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  ASSERT_EQ(received_.parts.size(), 1u);
  EXPECT_LE(received_.parts[0].size(), limits_.max_bytes);
  // What the source could write before the client stopped reading: the
  // limit plus the sockets' buffers, far from the 256 MiB it would send.
  // Counted once the source has noticed and stopped (its write failed).
  {
    absl::MutexLock lock(&mu_);
    ASSERT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&provider_done_), absl::Seconds(60)));
  }
  EXPECT_LT(sent_.load(), uint64_t{32} << 20);
}

// A source silent before its headers: DEADLINE_EXCEEDED at max_time, not
// UNAVAILABLE (HTTP code 0) and not after the source's stall.
TEST_F(WadoClientTest, ASourceStalledBeforeItsHeadersIsDeadlineExceeded) {
  SetAnswer([](Answer& a) { a.stall = absl::Milliseconds(1500); });
  limits_.max_time = absl::Milliseconds(300);
  absl::Time start = absl::Now();
  absl::Status s = Fetch();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1200));
  // A time already spent is 1 ms, not libcurl's 0 = no limit.
  limits_.max_time = -absl::Seconds(1);
  start = absl::Now();
  s = Fetch();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1200));
}

TEST_F(WadoClientTest, AnUnreadableTokenFileIsUnavailableNotSentWithout) {
  service_.set_token_file((dir_ / "missing").string());
  const absl::Status s = Fetch();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("dicomweb.sources[0].service.token_file"), absl::string_view::npos) << s;
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(path_.empty());  // never asked
}

}  // namespace
}  // namespace upp::gateway
