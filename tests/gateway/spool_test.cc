#include "gateway/spool.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace upp::gateway {
namespace fs = std::filesystem;
namespace {

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("upp-spool-test-" + std::to_string(getpid()));
    fs::remove_all(root_);
    auto s = Spool::Create(root_.string());
    ASSERT_TRUE(s.ok()) << s.status();
    spool_ = *std::move(s);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string Received(const std::string& content) {
    const std::string path = spool_->IncomingPath();
    std::ofstream(path) << content;
    return path;
  }
  fs::path root_;
  std::unique_ptr<Spool> spool_;
};

TEST(SpoolUidTest, OnlyDicomUidsNameDirectories) {
  EXPECT_TRUE(IsValidUid("1.2.840.10008.5.1.4.1.1.2"));
  EXPECT_FALSE(IsValidUid(""));
  EXPECT_FALSE(IsValidUid("../../etc"));
  EXPECT_FALSE(IsValidUid("1..2"));
  EXPECT_FALSE(IsValidUid("1.2."));
  EXPECT_FALSE(IsValidUid(std::string(65, '1')));
  EXPECT_FALSE(IsValidUid("1.2/3"));
}

TEST_F(SpoolTest, ASeriesIsClaimedOnlyAfterItsQuietPeriod) {
  ASSERT_TRUE(spool_->Commit(Received("a"), "1.2.3", "1.2.3.1").ok());
  ASSERT_TRUE(spool_->Commit(Received("b"), "1.2.3", "1.2.3.2").ok());
  EXPECT_TRUE(spool_->ClaimDue(absl::Seconds(60), absl::Now()).empty());
  EXPECT_EQ(spool_->QueuedSeries(), 1);
  auto due = spool_->ClaimDue(absl::Seconds(60), absl::Now() + absl::Seconds(61));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_TRUE(fs::exists(Spool::InstancesDir(due[0]) + "/1.2.3.1.dcm"));
  EXPECT_TRUE(fs::exists(Spool::InstancesDir(due[0]) + "/1.2.3.2.dcm"));
  // A late instance starts a new series rather than joining the claimed one.
  ASSERT_TRUE(spool_->Commit(Received("c"), "1.2.3", "1.2.3.3").ok());
  EXPECT_EQ(spool_->QueuedSeries(), 2);
  EXPECT_FALSE(fs::exists(Spool::InstancesDir(due[0]) + "/1.2.3.3.dcm"));
}

TEST_F(SpoolTest, RefusesUidsThatAreNotUids) {
  EXPECT_EQ(spool_->Commit(Received("a"), "../x", "1.2").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spool_->Commit(Received("a"), "1.2", "").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SpoolTest, RetryStateDelaysASeriesAndSurvivesARestart) {
  ASSERT_TRUE(spool_->Commit(Received("a"), "1.2.3", "1.2.3.1").ok());
  const absl::Time later = absl::Now() + absl::Seconds(100);
  auto due = spool_->ClaimDue(absl::Seconds(1), later);
  ASSERT_EQ(due.size(), 1u);
  ASSERT_TRUE(Spool::WriteState(due[0], {2, absl::ToUnixSeconds(later) + 30}).ok());
  EXPECT_TRUE(spool_->ClaimDue(absl::Seconds(1), later).empty());
  // A new process (Create again) finds the series and its state.
  auto again = Spool::Create(root_.string());
  ASSERT_TRUE(again.ok());
  auto resumed = (*again)->ClaimDue(absl::Seconds(1), later + absl::Seconds(31));
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(Spool::ReadState(resumed[0]).attempts, 2);
}

TEST_F(SpoolTest, KeptSeriesCarryTheirReasonAndRemovedOnesAreGone) {
  ASSERT_TRUE(spool_->Commit(Received("a"), "1.2.3", "1.2.3.1").ok());
  ASSERT_TRUE(spool_->Commit(Received("b"), "1.2.4", "1.2.4.1").ok());
  auto due = spool_->ClaimDue(absl::Seconds(1), absl::Now() + absl::Seconds(5));
  ASSERT_EQ(due.size(), 2u);
  ASSERT_TRUE(spool_->Keep(due[0], "failed", "the server refused the series").ok());
  ASSERT_TRUE(spool_->Remove(due[1]).ok());
  EXPECT_EQ(spool_->QueuedSeries(), 0);
  const auto kept = root_ / "failed" / fs::path(due[0]).filename();
  std::ifstream reason(kept / "reason");
  std::string line;
  std::getline(reason, line);
  EXPECT_EQ(line, "the server refused the series");
  EXPECT_FALSE(fs::exists(due[1]));
}

// A kept series of `bytes` that was kept `age` before now.
fs::path KeptSeries(const fs::path& root, const std::string& where, const std::string& name, size_t bytes,
                    absl::Duration age) {
  const fs::path dir = root / where / name;
  fs::create_directories(dir / "instances");
  std::ofstream(dir / "instances" / "1.dcm", std::ios::binary) << std::string(bytes, 'x');
  std::ofstream(dir / "reason") << "failed\n";
  fs::last_write_time(dir / "reason", fs::file_time_type::clock::now() - absl::ToChronoSeconds(age));
  return dir;
}

TEST_F(SpoolTest, KeptSeriesArePrunedOldestFirstByAgeThenBySize) {
  const auto ancient = KeptSeries(root_, "failed", "1", 1000, absl::Hours(24 * 30));
  const auto old = KeptSeries(root_, "unmatched", "2", 4000, absl::Hours(48));
  const auto older = KeptSeries(root_, "quarantine", "3", 4000, absl::Hours(72));
  const auto newest = KeptSeries(root_, "failed", "4", 4000, absl::Minutes(1));
  // 7 days, 9000 bytes: the 30-day one goes for its age, then the oldest
  // of the rest until the others fit.
  const auto pruned = spool_->Prune(absl::Hours(24 * 7), 9000, absl::Now());
  EXPECT_EQ(pruned.series, 2);
  EXPECT_EQ(pruned.bytes, 1000 + 4000 + static_cast<int64_t>(std::string("failed\n").size()) * 2);
  EXPECT_FALSE(fs::exists(ancient));
  EXPECT_FALSE(fs::exists(older));
  EXPECT_TRUE(fs::exists(old));
  EXPECT_TRUE(fs::exists(newest));
  // Within both limits: nothing more.
  EXPECT_EQ(spool_->Prune(absl::Hours(24 * 7), 9000, absl::Now()).series, 0);
}

// A process killed while a series is in flight leaves its mark: the first
// such death is counted, the second quarantines the series at start.
TEST_F(SpoolTest, ASeriesInFlightWhenTheProcessDiedTwiceIsQuarantined) {
  ASSERT_TRUE(spool_->Commit(Received("a"), "1.2.3", "1.2.3.1").ok());
  auto due = spool_->ClaimDue(absl::Seconds(1), absl::Now() + absl::Seconds(5));
  ASSERT_EQ(due.size(), 1u);
  ASSERT_TRUE(Spool::BeginAttempt(due[0], 1, absl::Now()).ok());  // then killed
  EXPECT_EQ(Spool::ReadState(due[0]).attempts, 1);
  EXPECT_EQ((*Spool::Create(root_.string()))->RecoverInterrupted(2), 0);
  ASSERT_EQ(spool_->ClaimDue(absl::Seconds(1), absl::Now() + absl::Seconds(5)).size(), 1u);
  ASSERT_TRUE(Spool::BeginAttempt(due[0], 2, absl::Now()).ok());  // killed again
  EXPECT_EQ((*Spool::Create(root_.string()))->RecoverInterrupted(2), 1);
  EXPECT_TRUE(spool_->ClaimDue(absl::Seconds(1), absl::Now() + absl::Seconds(5)).empty());
  EXPECT_TRUE(fs::exists(root_ / "quarantine" / fs::path(due[0]).filename() / "reason"));
  // A series whose attempt ended (settled for a retry) is no casualty.
  ASSERT_TRUE(spool_->Commit(Received("b"), "1.2.4", "1.2.4.1").ok());
  due = spool_->ClaimDue(absl::Seconds(1), absl::Now() + absl::Seconds(5));
  ASSERT_EQ(due.size(), 1u);
  for (int run = 0; run < 3; ++run) {
    ASSERT_TRUE(Spool::BeginAttempt(due[0], run + 1, absl::Now()).ok());
    Spool::EndAttempt(due[0]);
    EXPECT_EQ(spool_->RecoverInterrupted(2), 0);
  }
}

TEST_F(SpoolTest, PartialInstancesOfAPreviousRunAreCleanedAtStart) {
  const std::string part = Received("half");
  ASSERT_TRUE(fs::exists(part));
  ASSERT_TRUE(Spool::Create(root_.string()).ok());
  EXPECT_FALSE(fs::exists(part));
}

}  // namespace
}  // namespace upp::gateway
