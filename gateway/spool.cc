#include "gateway/spool.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "imageio/checked_math.h"

namespace upp::gateway {
namespace fs = std::filesystem;
namespace {

absl::Status FsError(const std::string& what, const std::error_code& ec) {
  return absl::InternalError(absl::StrCat("spool: ", what, ": ", ec.message()));
}

absl::Time ModifiedAt(const fs::path& p, std::error_code& ec) {
  const auto t = fs::last_write_time(p, ec);
  // file_clock and system_clock share their epoch offset on Linux (C++20
  // makes it official); the difference is what matters here.
  const auto since = t.time_since_epoch() - fs::file_time_type::clock::now().time_since_epoch();
  return absl::Now() + absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(since));
}

constexpr char kInFlight[] = "in_flight";
constexpr char kInterrupted[] = "interrupted";
const char* const kKept[] = {"failed", "unmatched", "quarantine"};

int ReadCount(const fs::path& file) {
  std::ifstream in(file);
  int n = 0;
  return in >> n ? n : 0;
}

// A kept series: when it was kept and what it holds.
struct KeptSeries {
  fs::path dir;
  absl::Time kept_at;
  int64_t bytes = 0;
};

KeptSeries Measure(const fs::path& dir) {
  KeptSeries k{dir, absl::InfinitePast(), 0};
  std::error_code ec;
  k.kept_at = ModifiedAt(dir / "reason", ec);
  if (ec) k.kept_at = ModifiedAt(dir, ec);
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2)) k.bytes += static_cast<int64_t>(it->file_size(ec2));
  }
  return k;
}

}  // namespace

bool IsValidUid(const std::string& uid) {
  if (uid.empty() || uid.size() > 64 || uid.front() == '.' || uid.back() == '.') return false;
  return std::all_of(uid.begin(), uid.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; }) &&
         uid.find("..") == std::string::npos;
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Create(const std::string& root) {
  std::error_code ec;
  for (const char* sub : {"incoming", "series", "active", "failed", "unmatched", "quarantine"}) {
    fs::create_directories(fs::path(root) / sub, ec);
    if (ec) return FsError(absl::StrCat("cannot create ", root, "/", sub), ec);
  }
  fs::permissions(root, fs::perms::owner_all, ec);
  // Parts of instances whose association broke before a previous exit.
  for (const auto& e : fs::directory_iterator(fs::path(root) / "incoming", ec)) fs::remove(e.path(), ec);
  return std::unique_ptr<Spool>(new Spool(root));
}

std::string Spool::Unique() {
  return absl::StrCat(getpid(), "-", counter_.fetch_add(1), "-", absl::ToUnixNanos(absl::Now()));
}

bool Spool::InstanceArriving(uint64_t max_instance_bytes, uint64_t min_free_bytes) {
  // Counted before the check, so that instances arriving at once each see
  // the others as taken.
  const int64_t arriving = std::max<int64_t>(1, arriving_.fetch_add(1) + 1);
  std::error_code ec;
  const auto space = std::filesystem::space(root_, ec);
  if (ec) return false;
  const auto per_instance = static_cast<int64_t>(std::min<uint64_t>(max_instance_bytes, INT64_MAX));
  const auto margin = static_cast<int64_t>(std::min<uint64_t>(min_free_bytes, INT64_MAX));
  const auto needed = imageio::CheckedAdd(imageio::OrMax(imageio::CheckedMul(arriving, per_instance)), margin);
  return needed && space.available >= static_cast<uint64_t>(*needed);
}

std::string Spool::IncomingPath() { return absl::StrCat(root_, "/incoming/", Unique(), ".part"); }

absl::Status Spool::Commit(const std::string& incoming_path, const std::string& series_uid,
                           const std::string& sop_uid) {
  if (!IsValidUid(series_uid) || !IsValidUid(sop_uid))
    return absl::InvalidArgumentError("the series or SOP instance UID is not a valid UID");
  const fs::path dir = fs::path(root_) / "series" / series_uid / "instances";
  std::error_code ec;
  // The processor may claim (rename) the series directory between creating
  // it and renaming into it: then the instance starts a new one.
  for (int attempt = 0; attempt < 3; ++attempt) {
    fs::create_directories(dir, ec);
    if (ec) continue;
    fs::rename(incoming_path, dir / (sop_uid + ".dcm"), ec);
    if (!ec) return absl::OkStatus();
  }
  return FsError("cannot commit an instance", ec);
}

std::vector<std::string> Spool::ClaimDue(absl::Duration quiet, absl::Time now) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(root_) / "series", ec)) {
    std::error_code ec2;
    const absl::Time last = ModifiedAt(e.path() / "instances", ec2);
    if (ec2 || now - last < quiet) continue;
    fs::rename(e.path(), fs::path(root_) / "active" / Unique(), ec2);
  }
  std::vector<std::string> due;
  for (const auto& e : fs::directory_iterator(fs::path(root_) / "active", ec))
    if (ReadState(e.path().string()).next_attempt_unix <= absl::ToUnixSeconds(now)) due.push_back(e.path().string());
  std::sort(due.begin(), due.end());
  return due;
}

int64_t Spool::QueuedSeries() const {
  int64_t n = 0;
  std::error_code ec;
  for (const char* sub : {"series", "active"})
    for (auto it = fs::directory_iterator(fs::path(root_) / sub, ec); !ec && it != fs::directory_iterator(); ++it) ++n;
  return n;
}

Spool::State Spool::ReadState(const std::string& active_dir) {
  State state;
  std::ifstream in(active_dir + "/state");
  std::string line;
  if (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &state.attempts) &&
        absl::SimpleAtoi(parts[1], &state.next_attempt_unix))
      return state;
  }
  return {};
}

absl::Status Spool::WriteState(const std::string& active_dir, const State& state) {
  const std::string tmp = active_dir + "/state.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << state.attempts << " " << state.next_attempt_unix << "\n";
    if (!out) return absl::InternalError("spool: cannot write a series' state");
  }
  std::error_code ec;
  fs::rename(tmp, active_dir + "/state", ec);
  return ec ? FsError("cannot write a series' state", ec) : absl::OkStatus();
}

absl::Status Spool::BeginAttempt(const std::string& active_dir, int attempts, absl::Time now) {
  if (auto s = WriteState(active_dir, {attempts, absl::ToUnixSeconds(now)}); !s.ok()) return s;
  std::ofstream out(fs::path(active_dir) / kInFlight, std::ios::trunc);
  return out ? absl::OkStatus() : absl::InternalError("spool: cannot mark a series in flight");
}

void Spool::EndAttempt(const std::string& active_dir) {
  std::error_code ec;
  fs::remove(fs::path(active_dir) / kInFlight, ec);
}

int Spool::RecoverInterrupted(int max_interrupted) {
  int quarantined = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(root_) / "active", ec)) {
    std::error_code ec2;
    if (!fs::exists(e.path() / kInFlight, ec2)) continue;
    const int interrupted = ReadCount(e.path() / kInterrupted) + 1;
    if (interrupted >= max_interrupted) {
      const std::string reason = absl::StrCat("the gateway stopped ", interrupted,
                                              " times while processing this series (killed, e.g. out of memory); "
                                              "quarantined, not processed again");
      if (Keep(e.path().string(), "quarantine", reason).ok()) ++quarantined;
      continue;
    }
    std::ofstream(e.path() / kInterrupted, std::ios::trunc) << interrupted << "\n";
    EndAttempt(e.path().string());
  }
  return quarantined;
}

Spool::Pruned Spool::Prune(absl::Duration max_age, uint64_t max_bytes, absl::Time now) {
  std::vector<KeptSeries> kept;
  uint64_t total = 0;
  std::error_code ec;
  for (const char* sub : kKept)
    for (const auto& e : fs::directory_iterator(fs::path(root_) / sub, ec)) {
      kept.push_back(Measure(e.path()));
      total += static_cast<uint64_t>(kept.back().bytes);
    }
  std::sort(kept.begin(), kept.end(), [](const KeptSeries& a, const KeptSeries& b) { return a.kept_at < b.kept_at; });
  Pruned pruned;
  for (const auto& k : kept) {
    if (now - k.kept_at <= max_age && total <= max_bytes) break;  // the rest are younger still
    std::error_code ec2;
    fs::remove_all(k.dir, ec2);
    if (ec2) continue;
    total -= static_cast<uint64_t>(k.bytes);
    ++pruned.series;
    pruned.bytes += k.bytes;
  }
  return pruned;
}

absl::Status Spool::Remove(const std::string& active_dir) {
  std::error_code ec;
  fs::remove_all(active_dir, ec);
  return ec ? FsError("cannot remove a series", ec) : absl::OkStatus();
}

absl::Status Spool::Keep(const std::string& active_dir, const std::string& where, const std::string& reason) {
  EndAttempt(active_dir);
  {
    std::ofstream out(active_dir + "/reason", std::ios::trunc);
    out << reason << "\n";
  }
  std::error_code ec;
  fs::rename(active_dir, fs::path(root_) / where / fs::path(active_dir).filename(), ec);
  return ec ? FsError(absl::StrCat("cannot move a series to ", where), ec) : absl::OkStatus();
}

}  // namespace upp::gateway
