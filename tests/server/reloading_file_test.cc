// Key and JWKS files re-read while serving (server/reloading_file.h): a file
// that cannot be read any more is warned about at every check and, as
// configured, keeps what it held or holds nothing until it is back.
#include "server/reloading_file.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/testing/temp_path.h"

namespace upp::server {
namespace {

class ReloadingFileTest : public ::testing::TestWithParam<Unreadable> {
 protected:
  void SetUp() override {
    path_ = upp::testing::UniqueTempPath("reloading_file.txt");
    std::ofstream(path_) << "first";
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_)));
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_);
    std::remove(path_.c_str());
  }
  std::unique_ptr<ReloadingFile<std::string>> Open() {
    auto f = ReloadingFile<std::string>::Create(
        path_, 1 << 20, absl::Seconds(1), [](const std::string& text) -> absl::StatusOr<std::string> { return text; },
        "auth.api_keys_file", GetParam());
    EXPECT_TRUE(f.ok()) << f.status();
    return *std::move(f);
  }
  size_t Warnings() const {
    const std::string text = log_.str();
    size_t n = 0;
    for (size_t at = text.find("cannot be read any more"); at != std::string::npos;
         at = text.find("cannot be read any more", at + 1))
      ++n;
    return n;
  }

  std::string path_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_P(ReloadingFileTest, AnUnreadableFileIsWarnedAboutAtEveryCheckAndRefusesOrKeepsAsAsked) {
  auto f = Open();
  const absl::Time start = absl::Now();
  ASSERT_NE(f->Get(start), nullptr);
  std::remove(path_.c_str());  // a revoked secret, an unmounted volume
  EXPECT_EQ(Warnings(), 0u);
  for (int check = 1; check <= 3; ++check) {
    const auto value = f->Get(start + absl::Seconds(2 * check));
    if (GetParam() == Unreadable::kRefuse) {
      EXPECT_EQ(value, nullptr) << "check " << check;
    } else {
      ASSERT_NE(value, nullptr);
      EXPECT_EQ(*value, "first");
    }
    EXPECT_EQ(Warnings(), static_cast<size_t>(check)) << log_.str();
  }
  EXPECT_NE(log_.str().find(GetParam() == Unreadable::kRefuse ? "refusing every credential" : "keeping what it held"),
            std::string::npos)
      << log_.str();
  // Back (the same bytes too): taken again.
  std::ofstream(path_) << "first";
  const auto back = f->Get(start + absl::Seconds(10));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(*back, "first");
}

INSTANTIATE_TEST_SUITE_P(Policies, ReloadingFileTest, ::testing::Values(Unreadable::kRefuse, Unreadable::kKeep),
                         [](const auto& info) { return info.param == Unreadable::kRefuse ? "Refuse" : "Keep"; });

}  // namespace
}  // namespace upp::server
