#include "server/call_stats.h"

#include "proto/api.h"

namespace upp::server {

void CallStats::SetStageSeconds(const std::string& stage, double seconds) {
  absl::MutexLock lock(&mu_);
  stage_seconds_[stage] = seconds;
}

void CallStats::SetSkipped(int64_t windows, std::string reason) {
  absl::MutexLock lock(&mu_);
  windows_skipped_ = windows;
  skipped_reason_ = std::move(reason);
}

void CallStats::FillSummary(unetrpp::v1::Summary* summary) const {
  {
    absl::MutexLock lock(&mu_);
    for (int s = unetrpp::v1::STAGE_RECEIVING; s <= unetrpp::v1::STAGE_SENDING; ++s) {
      const auto stage = static_cast<unetrpp::v1::Stage>(s);
      const auto it = stage_seconds_.find(proto::StageName(stage));
      if (it == stage_seconds_.end()) continue;
      auto* timing = summary->add_timings();
      timing->set_stage(stage);
      timing->set_seconds(it->second);
    }
    if (const auto it = stage_seconds_.find("queue_wait"); it != stage_seconds_.end())
      summary->set_queue_wait_seconds(it->second);
    summary->set_windows_skipped(windows_skipped_);
    summary->set_windows_skipped_reason(skipped_reason_);
  }
  summary->set_windows(windows_done.load());
  summary->set_locator_windows(locator_windows.load());
  summary->set_mode(mode.load());
  summary->set_voxels(voxels.load());
  summary->set_nonfinite_voxels_replaced(nonfinite_replaced.load());
}

void CallStats::FillRecord(FinishedRequest* record) const {
  {
    absl::MutexLock lock(&mu_);
    record->stage_seconds = stage_seconds_;
    record->windows_skipped = windows_skipped_;
  }
  record->voxels = voxels.load();
  record->windows = windows_done.load();
  record->mode = proto::SpeedModeName(mode.load());
}

}  // namespace upp::server
