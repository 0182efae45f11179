#include "gateway/qido_poll.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/dicomweb_curl.h"
#include "gateway/spool.h"

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

}  // namespace

absl::StatusOr<std::vector<FoundSeries>> SearchSeries(const unetrpp::v1::DicomWebDestination& service,
                                                      const std::string& field, const std::string& query,
                                                      uint32_t limit, uint64_t max_bytes, absl::Duration max_time) {
  // NumberOfSeriesRelatedInstances is optional in a series search's answer
  // (PS3.18 Table 10.6.3-5): asked for by name.
  const std::string path =
      absl::StrCat("/series?", query, query.empty() ? "" : "&", "includefield=00201209&limit=", limit);
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
  if (ec || chmod(state_dir.c_str(), 0700) != 0)
    return absl::UnavailableError(absl::StrCat("the poll's state directory cannot be made: ", ec.message()));
  std::unique_ptr<QidoPoller> p(new QidoPoller());
  p->config_ = config;
  p->pull_ = std::move(pull);
  for (const auto& source : config.sources()) {
    Source s;
    s.file = (std::filesystem::path(state_dir) / source.name()).string();  // names are [A-Za-z0-9._-]
    std::ifstream in(s.file);
    for (std::string line; std::getline(in, line);)
      if (IsValidUid(line) && s.pulled.insert(line).second) s.order.push_back(line);
    p->sources_.push_back(std::move(s));
  }
  return p;
}

absl::StatusOr<int> QidoPoller::PollOnce(int index) {
  const auto& source = config_.sources(index);
  auto found =
      SearchSeries(source.service(), absl::StrCat("dicomweb.sources[", index, "].service"), source.poll().query(),
                   source.poll().max_series(), kMaxSearchBytes, absl::Seconds(config_.max_request_seconds()));
  if (!found.ok()) return found.status();
  Source& s = sources_[index];
  std::map<std::string, int64_t> seen;
  std::set<std::string> returned;
  int pulled = 0;
  for (const FoundSeries& f : *found) {
    returned.insert(f.series_uid);
    if (s.pulled.count(f.series_uid) > 0) continue;
    seen[f.series_uid] = f.instances;
    auto before = s.seen.find(f.series_uid);
    if (before == s.seen.end() || before->second != f.instances) continue;  // new, or still growing
    if (!pull_(index, f.study_uid, f.series_uid).ok()) continue;            // tried again after the next search
    s.pulled.insert(f.series_uid);
    s.order.push_back(f.series_uid);
    std::ofstream(s.file, std::ios::app) << f.series_uid << "\n";
    seen.erase(f.series_uid);
    ++pulled;
  }
  s.seen = std::move(seen);  // a series gone from the answer starts again
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
    out.flush();
    written = out.good();
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
