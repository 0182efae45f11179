// The STOW-RS receiver over loopback HTTP: instances stored into the spool
// with PS3.18's store response, and each refusal with its HTTP status,
// nothing of a refused request left in the spool, the receiver still
// serving after it.
#include "gateway/stow_rs.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/config.h"
#include "gateway/series.h"
#include "imageio/file_util.h"
#include "server/auth.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";
constexpr char kStoreKey[] = "stow-writer-key";
constexpr char kUserKey[] = "segment-only-key";
constexpr char kPullKey[] = "puller-key";
constexpr char kOtherSeries[] = "1.2.3.4";    // the fake source answers it with CT_small (of another series)
constexpr char kStalledSeries[] = "1.2.3.6";  // the fake source sends no headers for 3 s
constexpr char kFailingSeries[] = "1.2.3.7";  // the fake source answers 503
constexpr uint64_t kMaxRequestBytes = 256 * 1024;

std::string Part(const std::string& content_type, const std::string& bytes) {
  return absl::StrCat("--BOUND\r\n", content_type.empty() ? "" : "Content-Type: " + content_type + "\r\n", "\r\n",
                      bytes, "\r\n");
}
std::string Close() { return "--BOUND--\r\n"; }
constexpr char kType[] = "multipart/related; type=\"application/dicom\"; boundary=BOUND";

// Files under `dir`, recursively.
int CountFiles(const fs::path& dir) {
  int n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file()) ++n;
  return n;
}

class StowRsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ct = imageio::ReadWholeFile(kCtSmall);
    if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
    ct_ = *ct;
    auto header = ReadInstanceHeader(kCtSmall, 1 << 20);
    ASSERT_TRUE(header.ok()) << header.status();
    header_ = *header;
    dir_ = fs::temp_directory_path() / ("upp-stow-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string keys = (dir_ / "keys").string();
    std::ofstream(keys) << "writer " << server::Authenticator::HashKey(kStoreKey) << " store\n"
                        << "user " << server::Authenticator::HashKey(kUserKey) << " user\n"
                        << "puller " << server::Authenticator::HashKey(kPullKey) << " pull\n";
    auto spool = Spool::Create((dir_ / "spool").string());
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_ = *std::move(spool);
    unetrpp::v1::GatewayConfig config;
    config.set_spool_dir(spool_->root());
    config.mutable_listener()->set_max_instance_bytes(64 * 1024);
    config.mutable_listener()->set_min_free_spool_bytes(1 << 20);
    auto* web = config.mutable_dicomweb();
    web->set_address("127.0.0.1");
    web->mutable_auth()->set_api_keys_file(keys);
    web->set_max_request_bytes(kMaxRequestBytes);
    web->set_max_request_seconds(1);
    StartSource();
    auto* source = web->add_sources();
    source->set_name("archive");
    source->mutable_service()->set_url("http://127.0.0.1:" + std::to_string(source_port_) + "/dicom-web");
    ApplyDefaults(config);
    web->set_port(0);  // picked by Bind
    config_ = config;
    auto server = StowServer::Create(
        config, spool_.get(),
        [this](const std::string& transport, const std::string& outcome) {
          outcomes_.push_back(outcome);
          transports_.push_back(transport);
        },
        nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_TRUE(server_->Bind().ok());
    serving_ = std::thread([this] { server_->Run().IgnoreError(); });
  }

  void TearDown() override {
    if (server_) {
      server_->Stop();
      serving_.join();
    }
    if (source_serving_.joinable()) {
      source_.stop();
      source_serving_.join();
    }
    fs::remove_all(dir_);
  }

  // A DICOMweb source for POST /pull: WADO-RS of CT_small's series (and of
  // kOtherSeries, wrongly), 404 for any other.
  void StartSource() {
    source_.Get(R"(/dicom-web/studies/([0-9.]+)/series/([0-9.]+))",
                [this](const httplib::Request& req, httplib::Response& res) {
                  if (req.matches[2].str() == kStalledSeries) {
                    std::this_thread::sleep_for(std::chrono::seconds(3));
                    res.status = 404;
                    return;
                  }
                  if (req.matches[2].str() == kFailingSeries) {
                    res.status = 503;
                    return;
                  }
                  if (req.matches[1].str() != header_.study_instance_uid ||
                      (req.matches[2].str() != header_.series_instance_uid && req.matches[2].str() != kOtherSeries)) {
                    res.status = 404;
                    return;
                  }
                  res.set_content(Part("application/dicom", ct_) + Close(), kType);
                });
    source_port_ = source_.bind_to_any_port("127.0.0.1");
    source_serving_ = std::thread([this] { source_.listen_after_bind(); });
    while (!source_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  // POST /pull with `form` (source=...&study=...) as its body.
  httplib::Result Pull(const std::string& form, const std::string& token = kPullKey, int port = 0) {
    httplib::Client client("127.0.0.1", port ? port : server_->port());
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    return client.Post("/pull", headers, form, "application/x-www-form-urlencoded");
  }

  httplib::Result Post(const std::string& path, const std::string& body, const std::string& token = kStoreKey,
                       const std::string& type = kType) {
    httplib::Client client("127.0.0.1", server_->port());
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    return client.Post(path, headers, body, type);
  }

  int StoredInstances() const { return CountFiles(fs::path(spool_->root()) / "series"); }
  int Incoming() const { return CountFiles(fs::path(spool_->root()) / "incoming"); }

  // The receiver still stores a good instance.
  void ExpectStillServing() {
    auto r = Post("/studies", Part("application/dicom", ct_) + Close());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }

  std::string ct_;
  unetrpp::v1::GatewayConfig config_;  // the server's
  InstanceHeader header_;
  fs::path dir_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<StowServer> server_;
  std::thread serving_;
  std::vector<std::string> outcomes_, transports_;
  httplib::Server source_;
  std::thread source_serving_;
  int source_port_ = 0;
};

TEST_F(StowRsTest, InstancesAreSpooledAndReferencedInTheStoreResponse) {
  auto r = Post("/studies/" + header_.study_instance_uid, Part("application/dicom", ct_) + Close());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/dicom+json");
  EXPECT_NE(r->body.find("\"00081199\":{\"vr\":\"SQ\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find(header_.sop_instance_uid), std::string::npos);
  EXPECT_EQ(r->body.find("00081198"), std::string::npos);
  EXPECT_TRUE(fs::exists(fs::path(spool_->root()) / "series" / header_.series_instance_uid / "instances"));
  EXPECT_EQ(StoredInstances(), 1);
  EXPECT_EQ(Incoming(), 0);
  EXPECT_EQ(outcomes_, std::vector<std::string>{"stored"});
}

TEST_F(StowRsTest, APartThatIsNotDicomFailsWithCannotUnderstand) {
  auto r = Post("/studies", Part("application/dicom", "this is not DICOM") + Part("text/plain", "hello") + Close());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;  // no instance stored
  // 0xC000 twice, in FailedSOPSequence.
  EXPECT_NE(r->body.find("\"00081198\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"00081197\":{\"vr\":\"US\",\"Value\":[49152]}"), std::string::npos) << r->body;
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
  // With a good one beside it: 202, one referenced, one failed.
  r = Post("/studies", Part("application/dicom", ct_) + Part("application/octet-stream", "x") + Close());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  EXPECT_NE(r->body.find("00081199"), std::string::npos);
  EXPECT_NE(r->body.find("00081198"), std::string::npos);
  EXPECT_EQ(StoredInstances(), 1);
}

TEST_F(StowRsTest, AnInstanceOfAnotherStudyThanTheUrlsIsRefused) {
  auto r = Post("/studies/1.2.3.4", Part("application/dicom", ct_) + Close());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_NE(r->body.find("[43264]"), std::string::npos) << r->body;  // 0xA900
  EXPECT_NE(r->body.find(header_.sop_instance_uid), std::string::npos);
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
}

TEST_F(StowRsTest, AnInstanceOverMaxInstanceBytesFailsAndIsNotKept) {
  auto r = Post("/studies", Part("application/dicom", ct_ + std::string(70 * 1024, '\0')) + Close());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_NE(r->body.find("[42752]"), std::string::npos) << r->body;  // 0xA700
  EXPECT_EQ(Incoming(), 0);
  EXPECT_EQ(outcomes_, std::vector<std::string>{"too_large"});
}

TEST_F(StowRsTest, NoOrAnUnknownTokenIs401AWrongRoleIs403) {
  const std::string body = Part("application/dicom", ct_) + Close();
  auto r = Post("/studies", body, "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(r->get_header_value("WWW-Authenticate").find("Bearer"), std::string::npos);
  r = Post("/studies", body, "not-a-key");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = Post("/studies", body, kUserKey);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
  ExpectStillServing();
}

TEST_F(StowRsTest, MalformedMultipartIs400WrongMediaTypeIs415) {
  const std::string body = Part("application/dicom", ct_) + Close();
  auto r = Post("/studies", body, kStoreKey, "multipart/related; type=\"application/dicom\"");  // no boundary
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Post("/studies", body, kStoreKey, "multipart/related; type=\"application/dicom\"; boundary=OTHER");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Post("/studies", Part("application/dicom", ct_), kStoreKey);  // no closing delimiter
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Post("/studies", body, kStoreKey, "application/dicom");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  r = Post("/studies", body, kStoreKey, "multipart/related; type=\"application/dicom+xml\"; boundary=BOUND");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
  ExpectStillServing();
}

TEST_F(StowRsTest, ADeclaredLengthOverTheLimitIs413BeforeTheBodyIsRead) {
  auto r = Post("/studies", std::string(kMaxRequestBytes + 1, 'x'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  ExpectStillServing();
}

// A chunked body (no length announced) is counted as it arrives: the
// receiver answers 413 once it is over the limit, while the client has
// sent only a part of the chunk it announced, and keeps nothing of it.
TEST_F(StowRsTest, AChunkedBodyOverTheLimitIsCutOffWhileItArrives) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  // A part that begins well (a DICOM instance's first bytes), then goes on:
  // the chunk announces 64 MiB, 320 KiB of it are sent.
  std::string head = absl::StrCat("POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ", kStoreKey,
                                  "\r\nContent-Type: ", kType, "\r\nTransfer-Encoding: chunked\r\n\r\n4000000\r\n");
  std::string data = "--BOUND\r\nContent-Type: application/dicom\r\n\r\n" + ct_.substr(0, 1000);
  data.resize(320 * 1024, '\0');
  const std::string out = head + data;
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string answer;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) answer.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 413") << answer.substr(0, 200);
  EXPECT_EQ(Incoming(), 0);
  EXPECT_EQ(StoredInstances(), 0);
  ExpectStillServing();
}

TEST_F(StowRsTest, PullFetchesTheSeriesByWadoRsIntoTheSpool) {
  auto r =
      Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", header_.series_instance_uid));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/dicom+json");
  EXPECT_NE(r->body.find(header_.sop_instance_uid), std::string::npos) << r->body;
  EXPECT_TRUE(fs::exists(fs::path(spool_->root()) / "series" / header_.series_instance_uid / "instances"));
  EXPECT_EQ(StoredInstances(), 1);
  EXPECT_EQ(Incoming(), 0);
  EXPECT_EQ(outcomes_, std::vector<std::string>{"stored"});
  EXPECT_EQ(transports_, std::vector<std::string>{"wado-rs"});
}

TEST_F(StowRsTest, PullNeedsThePullPermissionAKnownSourceAndUids) {
  const std::string query = absl::StrCat("source=archive&study=", header_.study_instance_uid);
  auto r = Pull(query, "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = Pull(query, kStoreKey);  // may store, not pull
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  r = Pull(absl::StrCat("source=elsewhere&study=", header_.study_instance_uid));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Pull("source=archive&study=1.2.x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Pull(absl::StrCat(query, "&series=../../etc"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = Pull(absl::StrCat(query, "&series=1.2.3.5"));  // the source has no such series
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
}

// anonymous may store where allowed, never pull: a pull spends the
// gateway's own archive credential on whatever study the caller names.
TEST_F(StowRsTest, PullNeedsACredentialEvenWhereAnonymousIsAllowed) {
  unetrpp::v1::GatewayConfig config = config_;
  config.mutable_dicomweb()->mutable_auth()->set_allow_anonymous(true);
  auto server = StowServer::Create(config, spool_.get(), nullptr, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Bind().ok());
  std::thread run([&server] { (*server)->Run().IgnoreError(); });
  httplib::Client client("127.0.0.1", (*server)->port());
  auto stored = client.Post("/studies", Part("application/dicom", ct_) + Close(), kType);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->status, 200) << stored->body;  // anonymous is allowed here
  auto r = Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid), "", (*server)->port());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401) << r->body;
  EXPECT_EQ(StoredInstances(), 1);  // the stored one only: nothing pulled
  r = Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", header_.series_instance_uid),
           kPullKey, (*server)->port());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;  // a credential still pulls
  (*server)->Stop();
  run.join();
}

// UIDs in a URL end up in proxies' and ingresses' access logs: refused,
// whether the body has them too or not; the body is read as a form only.
TEST_F(StowRsTest, PullTakesItsUidsFromTheBodyNeverFromTheUrl) {
  const std::string form = absl::StrCat("source=archive&study=", header_.study_instance_uid);
  httplib::Client client("127.0.0.1", server_->port());
  const httplib::Headers headers{{"Authorization", std::string("Bearer ") + kPullKey}};
  auto r = client.Post(("/pull?" + form).c_str(), headers, "", "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("not in the URL"), std::string::npos) << r->body;
  r = client.Post(("/pull?series=" + header_.series_instance_uid).c_str(), headers, form,
                  "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  r = client.Post("/pull", headers, form, "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415) << r->body;
  r = client.Post("/pull", headers, form + "&study=1.2.3", "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;  // given twice (cpp-httplib drops an identical repeat)
  r = client.Post("/pull", headers, form + "&x=" + std::string(8192, 'x'), "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  EXPECT_EQ(StoredInstances(), 0);
  r = client.Post("/pull", headers, form + "&series=" + header_.series_instance_uid,
                  "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(StoredInstances(), 1);
}

// A source silent before its headers past max_request_seconds (1 s here)
// is a gateway timeout, answered within the bound, not 502 after the
// source's 3 s.
TEST_F(StowRsTest, ASourceStalledBeforeItsHeadersIs504WithinTheBound) {
  const absl::Time start = absl::Now();
  auto r = Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", kStalledSeries));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_LT(took, absl::Milliseconds(2500));
  EXPECT_EQ(Incoming(), 0);
}

// The pull's log line says why the source failed in a fixed word, never
// the answer's text.
TEST_F(StowRsTest, APullLogLineHasAReasonCodeNotTheAnswer) {
  std::ostringstream log;
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  auto r = Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", kFailingSeries));
  spdlog::set_default_logger(previous);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502) << r->body;
  const std::string answer(absl::StripTrailingAsciiWhitespace(r->body));
  ASSERT_FALSE(answer.empty());
  EXPECT_NE(log.str().find("dicomweb: pull from source archive"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("HTTP 502 (source_unavailable)"), std::string::npos) << log.str();
  EXPECT_EQ(log.str().find(answer), std::string::npos) << log.str();
  EXPECT_EQ(log.str().find(header_.study_instance_uid), std::string::npos) << log.str();
}

// The QIDO-RS poll's pull (no caller, no HTTP answer): the same fetch into
// the spool, the instances counted; a failing source leaves nothing.
TEST_F(StowRsTest, PullWithoutACallerStoresAndCountsOrFailsLeavingNothing) {
  std::ostringstream log;
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  auto stored = server_->Pull(0, header_.study_instance_uid, header_.series_instance_uid);
  spdlog::set_default_logger(previous);
  // Its log line names the source and counts, never a UID.
  EXPECT_NE(log.str().find("dicomweb: pull from source archive for poll: ok, 1 instances stored"), std::string::npos)
      << log.str();
  EXPECT_EQ(log.str().find(header_.study_instance_uid), std::string::npos) << log.str();
  EXPECT_EQ(log.str().find(header_.series_instance_uid), std::string::npos) << log.str();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored, 1);
  EXPECT_EQ(StoredInstances(), 1);
  EXPECT_EQ(transports_, std::vector<std::string>{"wado-rs"});
  EXPECT_EQ(server_->Pull(0, header_.study_instance_uid, kFailingSeries).status().code(),
            absl::StatusCode::kUnavailable);
  // Refused for good (A900, not of the series): the pull is done, with no
  // instance stored; pulling it again would not store it either.
  EXPECT_EQ(server_->Pull(0, header_.study_instance_uid, kOtherSeries).value_or(-1), 0);
  EXPECT_EQ(server_->Pull(1, header_.study_instance_uid, kOtherSeries).status().code(),
            absl::StatusCode::kInvalidArgument);  // no such source
  EXPECT_EQ(StoredInstances(), 1);
  EXPECT_EQ(Incoming(), 0);
}

// The gateway's own spool is full (min_free_spool_bytes over what the disk
// has): the instances are refused for now (A700 spool_full), so the pull
// fails UNAVAILABLE and keeps nothing (the poll tries it again rather than
// recording a series never stored), and POST /pull answers 503 with
// Retry-After rather than a store response; the refusals are counted.
TEST_F(StowRsTest, APullTheSpoolRefusesForNowFailsAndKeepsNothing) {
  unetrpp::v1::GatewayConfig config = config_;
  config.mutable_listener()->set_min_free_spool_bytes(uint64_t{1} << 62);
  std::vector<std::string> outcomes;
  auto full = StowServer::Create(
      config, spool_.get(),
      [&outcomes](const std::string& /*transport*/, const std::string& outcome) { outcomes.push_back(outcome); },
      nullptr);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE((*full)->Bind().ok());
  std::thread run([&full] { (*full)->Run().IgnoreError(); });
  std::ostringstream log;
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  const auto pulled = (*full)->Pull(0, header_.study_instance_uid, header_.series_instance_uid);
  auto r =
      Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", header_.series_instance_uid),
           kPullKey, (*full)->port());
  spdlog::set_default_logger(previous);
  (*full)->Stop();
  run.join();
  EXPECT_EQ(pulled.status().code(), absl::StatusCode::kUnavailable) << pulled.status();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_TRUE(r->has_header("Retry-After"));
  EXPECT_EQ(outcomes, (std::vector<std::string>{"spool_full", "spool_full"}));
  EXPECT_NE(log.str().find("for poll: spool_refused, 0 instances stored"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("HTTP 503 (spool_refused)"), std::string::npos) << log.str();
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
}

// The source answers a series with an instance of another: refused (A900)
// and not kept, as a STOW-RS instance of another study than its URL's.
TEST_F(StowRsTest, APulledInstanceOfAnotherSeriesIsRefused) {
  auto r = Pull(absl::StrCat("source=archive&study=", header_.study_instance_uid, "&series=", kOtherSeries));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_NE(r->body.find("[43264]"), std::string::npos) << r->body;  // 0xA900
  EXPECT_EQ(StoredInstances(), 0);
  EXPECT_EQ(Incoming(), 0);
}

// One thread, one queued connection: two silent connections hold both, so
// a third client's request waits (not served while they are held), and is
// served once idle_seconds has closed them: the wait is bounded.
TEST_F(StowRsTest, ExcessConnectionsWaitBoundedByTheIdleTimeout) {
  unetrpp::v1::GatewayConfig config;
  config.set_spool_dir(spool_->root());
  config.mutable_dicomweb()->set_address("127.0.0.1");
  config.mutable_dicomweb()->mutable_auth()->set_allow_anonymous(true);
  config.mutable_dicomweb()->set_max_connections(1);
  config.mutable_dicomweb()->set_max_queued_connections(1);
  config.mutable_dicomweb()->set_idle_seconds(1);
  ApplyDefaults(config);
  auto server = StowServer::Create(config, spool_.get(), nullptr, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Bind().ok());
  std::thread run([&server] { (*server)->Run().IgnoreError(); });
  auto connect_silent = [&] {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  };
  const int holding = connect_silent();  // the one thread
  absl::SleepFor(absl::Milliseconds(100));
  const int waiting = connect_silent();  // the one queued place
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_read_timeout(30, 0);
  auto r = client.Post("/studies", Part("application/dicom", ct_) + Close(), kType);
  const absl::Duration waited = absl::Now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_GE(waited, absl::Milliseconds(700)) << "served while both slots were held";
  // Each silent connection is closed after idle_seconds (1 s), its first
  // bytes included (cpp-httplib's keep-alive wait would be 5 s each).
  EXPECT_LT(waited, absl::Seconds(6));
  close(holding);
  close(waiting);
  (*server)->Stop();
  run.join();
}

// cpp-httplib's stop() is lost before its loop has begun; a gateway
// stopped (SIGTERM) right after starting must not hang in its drain.
TEST_F(StowRsTest, StopRightAfterRunBeginsReturns) {
  unetrpp::v1::GatewayConfig config;
  config.set_spool_dir(spool_->root());
  config.mutable_dicomweb()->set_address("127.0.0.1");
  config.mutable_dicomweb()->mutable_auth()->set_allow_anonymous(true);
  ApplyDefaults(config);
  for (int i = 0; i < 50; ++i) {
    auto server = StowServer::Create(config, spool_.get(), nullptr, nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE((*server)->Bind().ok());
    std::thread run([&server] { (*server)->Run().IgnoreError(); });
    (*server)->Stop();
    run.join();
  }
}

TEST(StowResponseTest, StatusFollowsWhatWasStored) {
  StowPart ok{"1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0, "stored", "", ""};
  StowPart bad{"", "", kStowCannotUnderstand, "invalid", "", ""};
  StowPart hostile{"1.2\"}", "x\\y", kStowCannotUnderstand, "invalid", "", ""};
  EXPECT_EQ(MakeStowResponse({ok}).http_status, 200);
  EXPECT_EQ(MakeStowResponse({ok, bad}).http_status, 202);
  EXPECT_EQ(MakeStowResponse({bad}).http_status, 409);
  // RetrieveURL (0008,1190) is Type 2 for the study and in each referenced
  // item (PS3.18 Table I.1-1): present, empty (the gateway serves no
  // retrieve).
  EXPECT_EQ(MakeStowResponse({ok}).json,
            "{\"00081190\":{\"vr\":\"UR\"},\"00081199\":{\"vr\":\"SQ\",\"Value\":[{\"00081150\":{\"vr\":\"UI\","
            "\"Value\":[\"1.2.840.10008.5.1.4.1.1.2\"]},\"00081155\":{\"vr\":\"UI\",\"Value\":[\"1.2.3\"]},"
            "\"00081190\":{\"vr\":\"UR\"}}]}}");
  // What a sender wrote that is not a UID never reaches the JSON.
  EXPECT_EQ(MakeStowResponse({hostile}).json,
            "{\"00081190\":{\"vr\":\"UR\"},\"00081198\":{\"vr\":\"SQ\",\"Value\":[{\"00081197\":{\"vr\":"
            "\"US\",\"Value\":[49152]}}]}}");
}

}  // namespace
}  // namespace upp::gateway
