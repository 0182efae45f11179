// The QIDO-RS poll against a fake source on loopback (cpp-httplib, paging
// by limit and offset as QIDO-RS does): the search it sends, the answer
// read, and which series it pulls when: a series once its number of
// instances held for settle_seconds over two searches or more (a fake
// clock), never twice (also across a restart), series beyond the first
// page, a failed pull again with a growing wait and then given up, and
// Stop() between pulls.
#include "gateway/qido_poll.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gateway/config.h"
#include "gateway/stow_rs.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kStudy[] = "1.2.826.0.1.3680043.2.1125.7";
constexpr char kSeriesA[] = "1.2.826.0.1.3680043.2.1125.7.1";
constexpr char kSeriesB[] = "1.2.826.0.1.3680043.2.1125.7.2";

// One item of a series search's answer (PS3.18 F.2).
std::string Item(const std::string& series, int instances) {
  return absl::StrCat(R"({"0020000D":{"vr":"UI","Value":[")", kStudy, R"("]},"0020000E":{"vr":"UI","Value":[")", series,
                      R"("]},"00201209":{"vr":"IS","Value":[)", instances, "]}}");
}

// One without NumberOfSeriesRelatedInstances (an archive that leaves it out).
std::string ItemWithoutCount(const std::string& series) {
  return absl::StrCat(R"({"0020000D":{"vr":"UI","Value":[")", kStudy, R"("]},"0020000E":{"vr":"UI","Value":[")", series,
                      R"("]}})");
}

std::string Series(int i) { return absl::StrCat(kStudy, ".9.", i); }

class QidoPollTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("upp-qido-poll-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    source_.Get("/qido/series", [this](const httplib::Request& req, httplib::Response& res) {
      absl::MutexLock lock(&mu_);
      queries_.push_back(req.params);
      accept_ = req.get_header_value("Accept");
      res.status = status_;
      if (status_ != 200) return;
      // The page asked for (limit, offset), as an archive answers it.
      nlohmann::json all = nlohmann::json::parse(answer_, nullptr, /*allow_exceptions=*/false);
      if (!all.is_array()) return res.set_content(answer_, "application/dicom+json");
      const size_t offset = ignore_offset_ || !req.has_param("offset") ? 0 : std::stoul(req.get_param_value("offset"));
      const size_t limit = req.has_param("limit") ? std::stoul(req.get_param_value("limit")) : all.size();
      nlohmann::json page = nlohmann::json::array();
      for (size_t i = offset; i < all.size() && i < offset + limit; ++i) page.push_back(all[i]);
      res.set_content(page.dump(), "application/dicom+json");
    });
    const int port = source_.bind_to_any_port("127.0.0.1");
    serving_ = std::thread([this] { source_.listen_after_bind(); });
    // cpp-httplib 0.11 has no wait_until_ready; stop() needs the loop running.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!source_.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_TRUE(source_.is_running());

    unetrpp::v1::GatewayConfig config;
    config.mutable_dicomweb()->set_port(1);
    config.mutable_dicomweb()->mutable_auth()->set_allow_anonymous(true);
    auto* source = config.mutable_dicomweb()->add_sources();
    source->set_name("pacs");
    source->mutable_service()->set_url(absl::StrCat("http://127.0.0.1:", port, "/qido"));
    source->mutable_poll()->set_interval_seconds(60);
    source->mutable_poll()->set_query("Modality=CT&StudyDescription=*ABDOMEN*");
    ApplyDefaults(config);
    config_ = config.dicomweb();
  }
  void TearDown() override {
    source_.stop();
    if (serving_.joinable()) serving_.join();
    fs::remove_all(dir_);
  }

  void Answer(std::string json, int status = 200) {
    absl::MutexLock lock(&mu_);
    answer_ = std::move(json);
    status_ = status;
  }

  // A poller whose pulls are recorded (and fail while fail_pulls_, take
  // pull_delay_ each), on a clock that moves tick_ (settle_seconds, 10 s,
  // unless a test says otherwise) at each search.
  std::unique_ptr<QidoPoller> Poller() {
    auto p = QidoPoller::Create(config_, (dir_ / "polled").string(),
                                [this](int index, const std::string& study, const std::string& series) {
                                  EXPECT_EQ(index, 0);
                                  EXPECT_EQ(study, kStudy);
                                  ++pulls_started_;
                                  absl::SleepFor(pull_delay_);
                                  pulls_.push_back(series);
                                  if (spool_full_) return SpoolRefusedError();
                                  return fail_pulls_ ? absl::UnavailableError("down") : absl::OkStatus();
                                });
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    (*p)->SetClockForTest([this] { return now_ += tick_; });
    return *std::move(p);
  }

  fs::path dir_;
  httplib::Server source_;
  std::thread serving_;
  unetrpp::v1::DicomWebListener config_;
  std::vector<std::string> pulls_;  // on the test's thread (PollOnce pulls there), or Run's until joined
  bool fail_pulls_ = false;
  bool spool_full_ = false;  // pulls answer StowServer::Pull's spool refusal
  absl::Duration pull_delay_;
  std::atomic<int> pulls_started_{0};
  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1000);  // the poller's clock
  absl::Duration tick_ = absl::Seconds(10);                 // per search
  absl::Mutex mu_;
  std::string answer_ ABSL_GUARDED_BY(mu_) = "[]";
  int status_ ABSL_GUARDED_BY(mu_) = 200;
  bool ignore_offset_ ABSL_GUARDED_BY(mu_) = false;  // the fake source answers every page from the first
  std::vector<httplib::Params> queries_ ABSL_GUARDED_BY(mu_);
  std::string accept_ ABSL_GUARDED_BY(mu_);
};

TEST_F(QidoPollTest, TheSearchCarriesTheFilterAndAsksForTheCountInDicomJson) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  ASSERT_TRUE(poller->PollOnce(0).ok());
  absl::MutexLock lock(&mu_);
  ASSERT_EQ(queries_.size(), 1u);
  const httplib::Params& q = queries_[0];
  auto value = [&q](const char* key) { return q.count(key) ? q.find(key)->second : std::string("(absent)"); };
  EXPECT_EQ(value("Modality"), "CT");
  EXPECT_EQ(value("StudyDescription"), "*ABDOMEN*");
  EXPECT_EQ(value("includefield"), "00201209");
  EXPECT_EQ(value("limit"), "100");
  EXPECT_EQ(value("offset"), "(absent)");  // the first page
  EXPECT_EQ(accept_, "application/dicom+json");
}

TEST_F(QidoPollTest, ASeriesIsPulledOnceItsCountHeldForTheSettleTimeAndNeverAgain) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  Answer(absl::StrCat("[", Item(kSeriesA, 10), ",", Item(kSeriesB, 3), "]"));
  EXPECT_EQ(*poller->PollOnce(0), 0);  // first seen
  EXPECT_TRUE(pulls_.empty());
  Answer(absl::StrCat("[", Item(kSeriesA, 10), ",", Item(kSeriesB, 5), "]"));  // B still arriving
  EXPECT_EQ(*poller->PollOnce(0), 1);
  EXPECT_EQ(pulls_, std::vector<std::string>{kSeriesA});
  EXPECT_EQ(*poller->PollOnce(0), 1);  // B held at 5
  EXPECT_EQ(pulls_, (std::vector<std::string>{kSeriesA, kSeriesB}));
  EXPECT_EQ(*poller->PollOnce(0), 0);
  // A restarted gateway remembers both.
  poller = Poller();
  ASSERT_NE(poller, nullptr);
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(pulls_.size(), 2u);
}

// The state is bounded at kRememberedPerSearchedSeries x max_series (here
// 10 x 2): a series the last search returned is never forgotten (it would
// be pulled again at once), the others oldest pull first; the file holds
// what memory does, and a restart reads it back.
TEST_F(QidoPollTest, TheRememberedSeriesAreBoundedKeepingThoseTheSearchReturns) {
  config_.mutable_sources(0)->mutable_poll()->set_max_series(2);
  const size_t bound = 2 * kRememberedPerSearchedSeries;
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  const std::string state = (dir_ / "polled" / "pacs").string();
  auto remembered = [&state] {
    std::ifstream in(state);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  auto series = Series;
  // kSeriesA in every answer, pulled first; then one new series a round.
  const int rounds = 30;
  for (int i = 0; i < rounds; ++i) {
    Answer(absl::StrCat("[", Item(kSeriesA, 4), ",", Item(series(i), 4), "]"));
    ASSERT_TRUE(poller->PollOnce(0).ok());
    ASSERT_TRUE(poller->PollOnce(0).ok());
    EXPECT_LE(remembered().size(), bound) << "round " << i;
  }
  ASSERT_EQ(pulls_.size(), rounds + 1u);
  std::vector<std::string> expected{kSeriesA};  // the oldest, kept: the search returns it
  for (int i = rounds - static_cast<int>(bound) + 1; i < rounds; ++i) expected.push_back(series(i));
  EXPECT_EQ(remembered(), expected);
  // Nothing returned is pulled again, also after a restart.
  EXPECT_EQ(*poller->PollOnce(0), 0);
  poller = Poller();
  ASSERT_NE(poller, nullptr);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(*poller->PollOnce(0), 0);
  Answer(absl::StrCat("[", Item(series(rounds - 1), 4), ",", Item(kSeriesA, 4), "]"));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(pulls_.size(), rounds + 1u);
  // A forgotten series that comes back into the answer is pulled again
  // (docs/gateway.md: narrow such a query).
  Answer(absl::StrCat("[", Item(series(0), 4), "]"));
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(*poller->PollOnce(0), 1);
  EXPECT_EQ(pulls_.back(), series(0));
  EXPECT_EQ(remembered().size(), bound);
  EXPECT_FALSE(fs::exists(state + ".new"));
}

// Two searches a second apart are no proof that a series is whole: its
// count must hold for settle_seconds (10 s here, searches every 1 s); a
// change starts the wait again; a series without a count is pulled after
// the settle time too (nothing else tells whether it still grows).
TEST_F(QidoPollTest, ACountMustHoldForTheSettleTime) {
  tick_ = absl::Seconds(1);
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  const std::string growing = Series(1), uncounted = Series(2);
  for (int search = 1; search <= 15; ++search) {
    // `growing` gains instances at the 5th search, then holds.
    Answer(absl::StrCat("[", Item(kSeriesA, 4), ",", Item(growing, search < 5 ? 4 : 6), ",",
                        ItemWithoutCount(uncounted), "]"));
    const int pulled = *poller->PollOnce(0);
    if (search < 11) {
      EXPECT_EQ(pulled, 0) << "search " << search;
    } else if (search == 11) {  // 10 s after the first sighting
      EXPECT_EQ(pulled, 2);
      EXPECT_EQ(pulls_, (std::vector<std::string>{kSeriesA, uncounted}));
    } else if (search < 15) {
      EXPECT_EQ(pulled, 0) << "search " << search;
    } else {  // 10 s after its count changed
      EXPECT_EQ(pulled, 1);
      EXPECT_EQ(pulls_.back(), growing);
    }
  }
  EXPECT_EQ(pulls_.size(), 3u);
}

// The first page may hold only series pulled already: the search pages on
// by offset (max_series each) so that newer series are reached. A source
// that ignores offset repeats its page: the search stops there.
TEST_F(QidoPollTest, SeriesBeyondTheFirstPageAreReached) {
  config_.mutable_sources(0)->mutable_poll()->set_max_series(2);
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  std::string all = "[";
  for (int i = 0; i < 5; ++i) absl::StrAppend(&all, i ? "," : "", Item(Series(i), 3));
  Answer(all + "]");
  EXPECT_EQ(*poller->PollOnce(0), 0);
  {
    absl::MutexLock lock(&mu_);
    ASSERT_EQ(queries_.size(), 3u);  // 2 + 2 + 1: the last page is short
    for (size_t i = 0; i < queries_.size(); ++i) {
      EXPECT_EQ(queries_[i].find("limit")->second, "2");
      EXPECT_EQ(queries_[i].count("offset") ? queries_[i].find("offset")->second : "", i ? std::to_string(2 * i) : "");
    }
  }
  EXPECT_EQ(*poller->PollOnce(0), 5);
  // New series behind the pulled ones are still reached.
  Answer(absl::StrCat(all, ",", Item(Series(5), 3), ",", Item(Series(6), 3), "]"));
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(*poller->PollOnce(0), 2);
  EXPECT_EQ(pulls_.size(), 7u);
  // A source that ignores offset: two queries, not ten.
  {
    absl::MutexLock lock(&mu_);
    ignore_offset_ = true;
    queries_.clear();
  }
  EXPECT_EQ(*poller->PollOnce(0), 0);
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(queries_.size(), 2u);
}

// A series that always fails is not downloaded at every search: tried at
// the next search, then after 1, 3 and 7 searches skipped, and given up
// after max_attempts (5) failed pulls: remembered, never tried again (also
// after a restart).
TEST_F(QidoPollTest, AFailingSeriesBacksOffAndIsGivenUp) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  Answer(absl::StrCat("[", Item(kSeriesA, 10), "]"));
  fail_pulls_ = true;
  std::vector<int> tried_at;
  for (int search = 1; search <= 40; ++search) {
    const size_t before = pulls_.size();
    EXPECT_EQ(*poller->PollOnce(0), 0);
    if (pulls_.size() > before) tried_at.push_back(search);
  }
  EXPECT_EQ(tried_at, (std::vector<int>{2, 3, 5, 9, 17}));
  std::ifstream in(dir_ / "polled" / "pacs");
  std::string line;
  EXPECT_TRUE(std::getline(in, line) && line == kSeriesA) << "given up, so remembered";
  poller = Poller();
  ASSERT_NE(poller, nullptr);
  fail_pulls_ = false;
  for (int search = 0; search < 3; ++search) EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(pulls_.size(), 5u);
}

// The gateway's spool refusing a pull for now is not the series' failure:
// never given up for it, and the search's other pulls wait (each would be
// downloaded to be refused); once the spool takes them, all are pulled.
TEST_F(QidoPollTest, ASpoolRefusalIsNotCountedAndHoldsTheSearchsOtherPulls) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  Answer(absl::StrCat("[", Item(kSeriesA, 10), ",", Item(kSeriesB, 10), "]"));
  spool_full_ = true;
  for (int search = 1; search <= 12; ++search) EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(pulls_, std::vector<std::string>(11, kSeriesA));  // one a search, more than max_attempts
  spool_full_ = false;
  EXPECT_EQ(*poller->PollOnce(0), 2);
  EXPECT_EQ(*poller->PollOnce(0), 0);
}

// Stop() is seen between pulls: a long list of slow pulls does not hold
// the gateway's shutdown (20 pulls of 300 ms would be 6 s).
TEST_F(QidoPollTest, StopReturnsPromptlyDuringALongListOfSlowPulls) {
  config_.mutable_sources(0)->mutable_poll()->set_interval_seconds(1);
  pull_delay_ = absl::Milliseconds(300);
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  std::string all = "[";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&all, i ? "," : "", Item(Series(i), 3));
  Answer(all + "]");
  std::thread running([&poller] { poller->Run(); });
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (pulls_started_ == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_GT(pulls_started_.load(), 0);  // (no ASSERT: the thread must be joined)
  const absl::Time stopping = absl::Now();
  poller->Stop();
  running.join();
  EXPECT_LT(absl::Now() - stopping, absl::Seconds(2));
  EXPECT_LT(pulls_.size(), 20u);
}

TEST_F(QidoPollTest, AFailedPullIsTriedAgainAfterTheNextSearch) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  Answer(absl::StrCat("[", Item(kSeriesA, 10), "]"));
  fail_pulls_ = true;
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(*poller->PollOnce(0), 0);  // pulled, failed
  EXPECT_EQ(pulls_.size(), 1u);
  fail_pulls_ = false;
  EXPECT_EQ(*poller->PollOnce(0), 1);
  EXPECT_EQ(pulls_.size(), 2u);
}

TEST_F(QidoPollTest, WhatIsNotASeriesItemIsLeftOutAndABadAnswerPullsNothing) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  // No study UID, a series "UID" that is not one, not an object.
  Answer(R"([{"0020000E":{"vr":"UI","Value":["1.2.3"]}},)"
         R"({"0020000D":{"vr":"UI","Value":["1.2"]},"0020000E":{"vr":"UI","Value":["Mr Smith"]}}, 7])");
  EXPECT_EQ(*poller->PollOnce(0), 0);
  EXPECT_EQ(*poller->PollOnce(0), 0);
  Answer("{not json");
  EXPECT_EQ(poller->PollOnce(0).status().code(), absl::StatusCode::kInvalidArgument);
  Answer("", 204);  // nothing matched
  EXPECT_EQ(*poller->PollOnce(0), 0);
  Answer("", 503);
  EXPECT_EQ(poller->PollOnce(0).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(pulls_.empty());
}

TEST_F(QidoPollTest, RunSearchesAtOnceAndStopEndsIt) {
  auto poller = Poller();
  ASSERT_NE(poller, nullptr);
  std::thread running([&poller] { poller->Run(); });
  {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(mu_.AwaitWithTimeout(absl::Condition(
                                         +[](std::vector<httplib::Params>* q) { return !q->empty(); }, &queries_),
                                     absl::Seconds(10)));
  }
  poller->Stop();  // the next search is 60 s away: Stop must not wait for it
  const absl::Time stopping = absl::Now();
  running.join();
  EXPECT_LT(absl::Now() - stopping, absl::Seconds(5));
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(queries_.size(), 1u);
}

TEST(QidoPollConfigTest, APollNeedsTheReceiverAndKeepsTheKeysTheGatewaySets) {
  auto check = [](const std::string& query, double interval, uint32_t port) {
    unetrpp::v1::GatewayConfig c;
    c.set_spool_dir("/tmp/x");
    c.mutable_service()->set_target("127.0.0.1:1");
    c.mutable_destination()->set_host("127.0.0.1");
    c.mutable_destination()->set_port(1);
    c.mutable_destination()->set_ae_title("X");
    c.add_rules()->set_name("r");
    c.mutable_dicomweb()->set_port(port);
    c.mutable_dicomweb()->mutable_auth()->set_allow_anonymous(true);
    auto* s = c.mutable_dicomweb()->add_sources();
    s->set_name("pacs");
    s->mutable_service()->set_url("https://pacs.example/dicom-web");
    s->mutable_poll()->set_interval_seconds(interval);
    s->mutable_poll()->set_query(query);
    ApplyDefaults(c);
    return Validate(c);
  };
  EXPECT_TRUE(check("Modality=CT", 60, 8443).ok());
  EXPECT_TRUE(check("", 0, 0).ok());  // no poll
  EXPECT_NE(check("Modality=CT", 60, 0).message().find("dicomweb.sources[0].poll"), absl::string_view::npos);
  EXPECT_NE(check("Modality=CT&limit=5", 60, 8443).message().find("poll.query"), absl::string_view::npos);
  EXPECT_NE(check("includefield=all", 60, 8443).message().find("poll.query"), absl::string_view::npos);
  EXPECT_NE(check("PatientName=Smith John", 60, 8443).message().find("poll.query"), absl::string_view::npos);
  EXPECT_NE(check("Modality=CT", 0.5, 8443).message().find("poll.interval_seconds"), absl::string_view::npos);
}

}  // namespace
}  // namespace upp::gateway
