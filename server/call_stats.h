// What one Segment call measured: stage seconds, voxels, windows, NaN/inf
// voxels replaced. Written by whichever thread finishes a stage (reactions,
// the CPU pool, the model's workers), read for progress, the summary and the
// request's record. Thread-safe: counters are atomic, stage seconds take a
// small lock of their own.
#ifndef UPP_SERVER_CALL_STATS_H_
#define UPP_SERVER_CALL_STATS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/request_record.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

struct CallStats {
  std::atomic<int64_t> voxels{0};
  std::atomic<int64_t> nonfinite_replaced{0};
  // The job's window items, set before they are queued.
  std::atomic<int64_t> windows_total{0};
  std::atomic<int64_t> windows_done{0};
  // Of windows_total: a label subset's locating pass (speed_mode.h).
  std::atomic<int64_t> locator_windows{0};
  std::atomic<unetrpp::v1::SpeedMode> mode{unetrpp::v1::SPEED_MODE_FULL};

  // Set once, before the windows are queued: what the crop saved.
  void SetSkipped(int64_t windows, std::string reason);

  // `stage`: a Metrics::StageNames() name ("decode", "queue_wait", ...).
  void SetStageSeconds(const std::string& stage, double seconds);
  // The counts, the proto Stages measured so far and the queue wait.
  void FillSummary(unetrpp::v1::Summary* summary) const;
  // The counts and every stage measured.
  void FillRecord(FinishedRequest* record) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, double> stage_seconds_ ABSL_GUARDED_BY(mu_);
  int64_t windows_skipped_ ABSL_GUARDED_BY(mu_) = 0;
  std::string skipped_reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_CALL_STATS_H_
