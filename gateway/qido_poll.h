// Pull mode without a caller (dicomweb.sources[].poll): every
// interval_seconds the gateway searches a DICOMweb source for series by
// QIDO-RS (GET <url>/series?<query>&includefield=00201209&limit=<n>,
// application/dicom+json) and pulls each series it finds, as POST /pull
// would, once two searches in a row found it with the same number of
// instances (NumberOfSeriesRelatedInstances; a series still arriving at the
// archive waits). The series pulled are remembered, one UID a line, in
// <state_dir>/<source name>, read at start: a restart pulls none of them
// again. A pull that failed is tried again after the next search.
//
// Logs give the source's name and counts, never a UID.
//
// Threading: Run() blocks until Stop() (from any thread). PollOnce() is
// for tests and must not run beside Run().
#ifndef UPP_GATEWAY_QIDO_POLL_H_
#define UPP_GATEWAY_QIDO_POLL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// A series a search found. instances: -1 when the source did not say.
struct FoundSeries {
  std::string study_uid, series_uid;
  int64_t instances = -1;
};

// One QIDO-RS series search of `service` (errors name `field`). Items
// without a study and a series UID that are UIDs are left out. The answer
// is held to `max_bytes` and `max_time`.
absl::StatusOr<std::vector<FoundSeries>> SearchSeries(const unetrpp::v1::DicomWebDestination& service,
                                                      const std::string& field, const std::string& query,
                                                      uint32_t limit, uint64_t max_bytes, absl::Duration max_time);

class QidoPoller {
 public:
  // Pulls one series of source `index` (StowServer::Pull).
  using PullFn = std::function<absl::Status(int index, const std::string& study, const std::string& series)>;

  // Reads what was pulled before from `state_dir` (created, mode 0700).
  static absl::StatusOr<std::unique_ptr<QidoPoller>> Create(const unetrpp::v1::DicomWebListener& config,
                                                            const std::string& state_dir, PullFn pull);

  // Whether any source is polled.
  static bool AnyPolled(const unetrpp::v1::DicomWebListener& config);

  // One search of source `index` and the pulls it leads to; the number of
  // series pulled.
  absl::StatusOr<int> PollOnce(int index);

  // Polls each polled source every its interval until Stop().
  void Run();
  void Stop();

 private:
  struct Source {
    std::string file;                     // the series pulled, one a line
    std::set<std::string> pulled;         // series UIDs
    std::map<std::string, int64_t> seen;  // series UID -> instances at the last search
  };
  QidoPoller() = default;

  unetrpp::v1::DicomWebListener config_;
  PullFn pull_;
  std::vector<Source> sources_;  // by index in config_.sources()
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_QIDO_POLL_H_
