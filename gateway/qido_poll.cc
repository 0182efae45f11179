#include "gateway/qido_poll.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/dicomweb_curl.h"
#include "gateway/spool.h"
#include "gateway/stow_rs.h"

namespace upp::gateway {
namespace {

// A search's answer: UIDs and counts of up to 10000 series, far below this.
constexpr uint64_t kMaxSearchBytes = uint64_t{16} << 20;

struct Body {
  std::string text;
  uint64_t max_bytes = 0;
  bool over = false;
};

size_t OnData(char* data, size_t size, size_t count, void* user) {
  auto& b = *static_cast<Body*>(user);
  const size_t n = size * count;
  if (b.text.size() + n > b.max_bytes) {
    b.over = true;
    return 0;  // libcurl stops the transfer
  }
  b.text.append(data, n);
  return n;
}

// The first value of a DICOM JSON attribute (PS3.18 F.2), as a string for
// UIDs and as a number for counts; nullptr when absent or of another kind.
const nlohmann::json* FirstValue(const nlohmann::json& item, const char* tag) {
  auto attribute = item.find(tag);
  if (attribute == item.end() || !attribute->is_object()) return nullptr;
  auto value = attribute->find("Value");
  if (value == attribute->end() || !value->is_array() || value->empty()) return nullptr;
  return &(*value)[0];
}

std::string UidOf(const nlohmann::json& item, const char* tag) {
  const nlohmann::json* v = FirstValue(item, tag);
  return v != nullptr && v->is_string() && IsValidUid(v->get<std::string>()) ? v->get<std::string>() : "";
}

// After a series' `failures`-th failed pull: tried at the next search
// after the first, then after 1, 3, 7, ... searches skipped (2^(n-1) - 1),
// at most an hour's worth at `interval` seconds, so that a series the
// archive lists and cannot deliver does not cost a download every search.
uint32_t SearchesToSkip(uint32_t failures, double interval) {
  const double doubling = failures >= 32 ? 1e12 : std::ldexp(1.0, static_cast<int>(failures) - 1) - 1;
  const double cap = std::max(1.0, std::floor(kMaxPullBackoffSeconds / std::max(1.0, interval)));
  return static_cast<uint32_t>(std::min(doubling, cap));
}

}  // namespace

absl::StatusOr<std::vector<FoundSeries>> SearchSeries(const unetrpp::v1::DicomWebDestination& service,
                                                      const std::string& field, const std::string& query,
                                                      uint32_t limit, uint64_t offset, uint64_t max_bytes,
                                                      absl::Duration max_time, size_t* items) {
  if (items != nullptr) *items = 0;
  // NumberOfSeriesRelatedInstances is optional in a series search's answer
  // (PS3.18 Table 10.6.3-5): asked for by name.
  const std::string path =
      absl::StrCat("/series?", query, query.empty() ? "" : "&", "includefield=00201209&limit=", limit,
                   offset > 0 ? absl::StrCat("&offset=", offset) : "");
  auto call = DicomWebCall::Create(service, field, path, {"Accept: application/dicom+json"});
  if (!call.ok()) return call.status();
  CURL* c = (*call)->handle();
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  Body body;
  body.max_bytes = max_bytes;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnData);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(max_time))));
  long code = 0;
  const CURLcode rc = (*call)->Perform(code);
  if (body.over) return absl::ResourceExhaustedError(absl::StrCat("the search's answer is over ", max_bytes, " bytes"));
  if (rc == CURLE_OPERATION_TIMEDOUT) return absl::DeadlineExceededError("the search's answer took too long");
  if (rc != CURLE_OK) return absl::UnavailableError(absl::StrCat("the source: ", curl_easy_strerror(rc)));
  // 204: nothing matched (PS3.18 8.3.4).
  if (code == 204) return std::vector<FoundSeries>();
  if (code != 200) return absl::UnavailableError(absl::StrCat("the source answered the search with HTTP ", code));
  const nlohmann::json answer = nlohmann::json::parse(body.text, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_array()) return absl::InvalidArgumentError("the search's answer is not a DICOM JSON array");
  if (items != nullptr) *items = answer.size();
  std::vector<FoundSeries> found;
  for (const auto& item : answer) {
    if (!item.is_object()) continue;
    FoundSeries s;
    s.study_uid = UidOf(item, "0020000D");
    s.series_uid = UidOf(item, "0020000E");
    if (s.study_uid.empty() || s.series_uid.empty()) continue;
    const nlohmann::json* n = FirstValue(item, "00201209");
    if (n != nullptr && n->is_number_integer()) s.instances = n->get<int64_t>();
    found.push_back(std::move(s));
  }
  return found;
}

bool QidoPoller::AnyPolled(const unetrpp::v1::DicomWebListener& config) {
  for (const auto& source : config.sources())
    if (source.poll().interval_seconds() > 0) return true;
  return false;
}

absl::StatusOr<std::unique_ptr<QidoPoller>> QidoPoller::Create(const unetrpp::v1::DicomWebListener& config,
                                                               const std::string& state_dir, PullFn pull) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("the poll's state directory cannot be made: ", ec.message()));
  if (chmod(state_dir.c_str(), 0700) != 0)
    return absl::UnavailableError(
        absl::StrCat("the poll's state directory cannot be made private (chmod 0700): ", std::strerror(errno)));
  std::unique_ptr<QidoPoller> p(new QidoPoller());
  p->config_ = config;
  p->pull_ = std::move(pull);
  for (const auto& source : config.sources()) {
    Source s;
    // Names are [A-Za-z0-9._-], not dots only (gateway/config.cc).
    s.file = (std::filesystem::path(state_dir) / source.name()).string();
    std::ifstream in(s.file);
    for (std::string line; std::getline(in, line);)
      if (IsValidUid(line) && s.pulled.insert(line).second) s.order.push_back(line);
    p->sources_.push_back(std::move(s));
  }
  return p;
}

bool QidoPoller::Stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void QidoPoller::Remember(int index, const std::string& series_uid) {
  Source& s = sources_[index];
  s.pulled.insert(series_uid);
  s.order.push_back(series_uid);
  std::ofstream out(s.file, std::ios::app);
  out << series_uid << "\n";
  out.close();
  if (out.fail())
    spdlog::warn("dicomweb: poll of source {}: the state file cannot be written: a restart may pull a series again",
                 config_.sources(index).name());
}

absl::StatusOr<int> QidoPoller::PollOnce(int index) {
  const auto& source = config_.sources(index);
  const auto& poll = source.poll();
  const absl::Time now = clock_();
  const std::string field = absl::StrCat("dicomweb.sources[", index, "].service");
  // Page after page while pages come back full: the first max_series
  // matches may all be pulled already (an archive's answer order is its
  // own), and a new series must still be reached. A source that ignores
  // offset repeats its page: no new series, the search ends.
  std::vector<FoundSeries> found;
  std::set<std::string> returned;
  const uint32_t limit = std::max<uint32_t>(1, poll.max_series());
  for (uint32_t page = 0; page < kMaxPagesPerSearch && !Stopping(); ++page) {
    size_t items = 0;
    auto got = SearchSeries(source.service(), field, poll.query(), limit, uint64_t{page} * limit, kMaxSearchBytes,
                            absl::Seconds(config_.max_request_seconds()), &items);
    if (!got.ok()) return got.status();
    size_t fresh = 0;
    for (FoundSeries& f : *got)
      if (returned.insert(f.series_uid).second) {
        found.push_back(std::move(f));
        ++fresh;
      }
    if (items < limit || fresh == 0) break;
    if (page + 1 == kMaxPagesPerSearch)
      spdlog::warn(
          "dicomweb: poll of source {}: the search has more than {} matches ({} pages of max_series); the rest are "
          "not reached: narrow poll.query",
          source.name(), uint64_t{kMaxPagesPerSearch} * limit, kMaxPagesPerSearch);
  }
  Source& s = sources_[index];
  // Pending only for the series this search returned: a series gone from
  // the answer starts again.
  std::map<std::string, Pending> pending;
  std::vector<const FoundSeries*> due;
  const absl::Duration settle = absl::Seconds(poll.settle_seconds());
  for (const FoundSeries& f : found) {
    if (s.pulled.count(f.series_uid) > 0) continue;
    auto before = s.pending.find(f.series_uid);
    Pending p = before == s.pending.end() ? Pending() : before->second;
    if (before == s.pending.end() || p.instances != f.instances) {
      // New, or still growing: settles from now. An absent count (-1)
      // stays -1, so such a series is pulled after settle_seconds in the
      // answers, with nothing to tell whether it still grows.
      p.instances = f.instances;
      p.since = now;
    } else if (p.skip > 0) {
      --p.skip;  // backing off after a failed pull
    } else if (now - p.since >= settle) {
      due.push_back(&f);
    }
    pending[f.series_uid] = p;
  }
  int pulled = 0, given_up = 0;
  for (const FoundSeries* f : due) {
    if (Stopping()) break;  // the rest stay pending: tried after a restart's searches
    const absl::Status status = pull_(index, f->study_uid, f->series_uid);
    Pending& p = pending[f->series_uid];
    if (IsSpoolRefusal(status)) {
      // Our spool is full (or failing), not the series at fault: not
      // counted against it, and the rest wait for the next search rather
      // than each being downloaded to be refused.
      spdlog::warn("dicomweb: poll of source {}: the spool cannot take series now; pulls wait for the next search",
                   source.name());
      break;
    }
    if (status.ok()) {
      Remember(index, f->series_uid);
      pending.erase(f->series_uid);
      ++pulled;
      continue;
    }
    if (++p.failures >= poll.max_attempts()) {
      Remember(index, f->series_uid);  // given up: not pulled again
      pending.erase(f->series_uid);
      ++given_up;
      continue;
    }
    p.skip = SearchesToSkip(p.failures, poll.interval_seconds());
  }
  if (given_up > 0)
    spdlog::warn(
        "dicomweb: poll of source {}: {} series given up after {} failed pulls each; not pulled again (POST /pull "
        "can still fetch them)",
        source.name(), given_up, poll.max_attempts());
  s.pending = std::move(pending);
  Prune(index, returned);
  return pulled;
}

void QidoPoller::Prune(int index, const std::set<std::string>& returned) {
  Source& s = sources_[index];
  const size_t bound = size_t{kRememberedPerSearchedSeries} * config_.sources(index).poll().max_series();
  if (s.order.size() <= bound) return;
  // Newest first: every series the search returned, and the others while
  // there is room.
  size_t others = bound > returned.size() ? bound - returned.size() : 0;
  std::deque<std::string> kept;
  for (auto it = s.order.rbegin(); it != s.order.rend(); ++it) {
    if (returned.count(*it) > 0) {
      kept.push_front(*it);
    } else if (others > 0) {
      kept.push_front(*it);
      --others;
    } else {
      s.pulled.erase(*it);
    }
  }
  s.order = std::move(kept);
  // A new file renamed over the old: the gateway dying midway leaves one or
  // the other whole. Should that fail, the old file (a superset) stays and
  // is pruned next time; memory is bounded either way.
  const std::string next = s.file + ".new";
  bool written = false;
  {
    std::ofstream out(next, std::ios::trunc);
    for (const std::string& uid : s.order) out << uid << "\n";
    out.close();
    written = !out.fail();
  }
  std::error_code ec;
  if (written) std::filesystem::rename(next, s.file, ec);
  if (!written || ec) {
    std::filesystem::remove(next, ec);
    spdlog::warn("dicomweb: poll of source {}: the state file cannot be rewritten; kept as it was",
                 config_.sources(index).name());
  }
}

void QidoPoller::Run() {
  std::vector<absl::Time> next(sources_.size(), absl::Now());
  for (;;) {
    absl::Time wake = absl::InfiniteFuture();
    for (size_t i = 0; i < sources_.size(); ++i) {
      const double interval = config_.sources(static_cast<int>(i)).poll().interval_seconds();
      if (interval <= 0) continue;
      if (absl::Now() >= next[i]) {
        const absl::Time start = absl::Now();
        auto pulled = PollOnce(static_cast<int>(i));
        const std::string& name = config_.sources(static_cast<int>(i)).name();
        if (pulled.ok()) {
          if (*pulled > 0) spdlog::info("dicomweb: poll of source {}: {} series pulled", name, *pulled);
        } else {
          // The status's message names the field and an HTTP status or
          // libcurl's error, never the source's answer text.
          spdlog::warn("dicomweb: poll of source {} failed: {}", name, std::string(pulled.status().message()));
        }
        next[i] = start + absl::Seconds(interval);
      }
      wake = std::min(wake, next[i]);
    }
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithDeadline(absl::Condition(&stopping_), wake)) return;
  }
}

void QidoPoller::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

}  // namespace upp::gateway
