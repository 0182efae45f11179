#include "server/model_lifecycle.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/model_repository.h"

namespace upp::server {
namespace {

bool Live(VersionState s) { return s != VersionState::kUnloaded && s != VersionState::kFailed; }

}  // namespace

const char* VersionStateName(VersionState state) {
  switch (state) {
    case VersionState::kLoading: return "loading";
    case VersionState::kWarming: return "warming";
    case VersionState::kReady: return "ready";
    case VersionState::kUnloading: return "unloading";
    case VersionState::kUnloaded: return "unloaded";
    case VersionState::kFailed: return "failed";
  }
  return "unknown";
}

absl::Status ModelLifecycle::Move(const std::string& version, std::initializer_list<VersionState> from, VersionState to,
                                  absl::Time now) {
  auto it = versions_.find(version);
  if (it == versions_.end())
    return absl::FailedPreconditionError(absl::StrCat("version \"", version, "\" is not known"));
  VersionRecord& r = it->second;
  if (std::find(from.begin(), from.end(), r.state) == from.end())
    return absl::FailedPreconditionError(absl::StrCat("version \"", version, "\" is ", VersionStateName(r.state),
                                                      ", not a state it can become ", VersionStateName(to), " from"));
  r.state = to;
  r.since = now;
  return absl::OkStatus();
}

absl::Status ModelLifecycle::BeginLoad(const std::string& version, absl::Time now) {
  auto it = versions_.find(version);
  if (it != versions_.end() && Live(it->second.state))
    return absl::FailedPreconditionError(
        absl::StrCat("version \"", version, "\" is ", VersionStateName(it->second.state), " already"));
  VersionRecord& r = versions_[version];
  r = VersionRecord{};
  r.version = version;
  r.state = VersionState::kLoading;
  r.since = now;
  ForgetOldest();
  return absl::OkStatus();
}

absl::Status ModelLifecycle::Warming(const std::string& version, absl::Time now) {
  return Move(version, {VersionState::kLoading}, VersionState::kWarming, now);
}

absl::Status ModelLifecycle::Ready(const std::string& version, double load_seconds, VersionDetails details,
                                   bool make_default, absl::Time now) {
  if (auto s = Move(version, {VersionState::kWarming}, VersionState::kReady, now); !s.ok()) return s;
  VersionRecord& r = versions_[version];
  r.load_seconds = load_seconds;
  r.details = std::move(details);
  if (make_default || default_.empty()) default_ = version;
  return absl::OkStatus();
}

absl::Status ModelLifecycle::Failed(const std::string& version, const absl::Status& why, absl::Time now) {
  if (auto s = Move(version, {VersionState::kLoading, VersionState::kWarming}, VersionState::kFailed, now); !s.ok())
    return s;
  versions_[version].error = std::string(why.message());
  return absl::OkStatus();
}

absl::Status ModelLifecycle::BeginUnload(const std::string& version, absl::Time now) {
  if (auto s = Move(version, {VersionState::kReady}, VersionState::kUnloading, now); !s.ok()) return s;
  if (default_ != version) return absl::OkStatus();
  // The newest other ready version takes over (map order is text order).
  default_.clear();
  for (const auto& [v, r] : versions_)
    if (r.state == VersionState::kReady && (default_.empty() || VersionBefore(default_, v))) default_ = v;
  return absl::OkStatus();
}

absl::Status ModelLifecycle::Unloaded(const std::string& version, absl::Time now) {
  if (auto s = Move(version, {VersionState::kUnloading}, VersionState::kUnloaded, now); !s.ok()) return s;
  ForgetOldest();
  return absl::OkStatus();
}

absl::Status ModelLifecycle::MakeDefault(const std::string& version) {
  const VersionRecord* r = Find(version);
  if (!r || r->state != VersionState::kReady)
    return absl::FailedPreconditionError(absl::StrCat("version \"", version, "\" is not ready"));
  default_ = version;
  return absl::OkStatus();
}

std::vector<VersionRecord> ModelLifecycle::versions() const {
  std::vector<VersionRecord> out;
  for (const auto& [v, r] : versions_) out.push_back(r);
  std::sort(out.begin(), out.end(),
            [](const VersionRecord& a, const VersionRecord& b) { return VersionBefore(a.version, b.version); });
  return out;
}

const VersionRecord* ModelLifecycle::Find(const std::string& version) const {
  auto it = versions_.find(version);
  return it == versions_.end() ? nullptr : &it->second;
}

void ModelLifecycle::ForgetOldest() {
  for (;;) {
    auto oldest = versions_.end();
    int past = 0;
    for (auto it = versions_.begin(); it != versions_.end(); ++it) {
      if (Live(it->second.state)) continue;
      ++past;
      if (oldest == versions_.end() || it->second.since < oldest->second.since) oldest = it;
    }
    if (past <= kMaxPastVersions) return;
    versions_.erase(oldest);
  }
}

}  // namespace upp::server
