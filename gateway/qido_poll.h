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
// What is remembered is bounded (kRememberedPerSearchedSeries x max_series
// series per source): only a series a search returns can be pulled, so the
// series the last search returned are always kept, and of the others the
// most recently pulled, the oldest forgotten first; the state file is then
// rewritten (a new file renamed over it). A series forgotten that a search
// returns again is pulled again: a query that lets old series back into its
// answer (more matches than max_series, in an order that changes) should
// be narrowed (by date, for example).
//
// Logs give the source's name and counts, never a UID.
//
// Threading: Run() blocks until Stop() (from any thread). PollOnce() is
// for tests and must not run beside Run().
#ifndef UPP_GATEWAY_QIDO_POLL_H_
#define UPP_GATEWAY_QIDO_POLL_H_

#include <cstdint>
#include <deque>
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

// How many series a source's poll remembers, per series a search may
// return (max_series): 1000 at the default of 100.
inline constexpr uint32_t kRememberedPerSearchedSeries = 10;

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
    std::string file;                     // the series pulled, one a line, oldest first
    std::set<std::string> pulled;         // series UIDs
    std::deque<std::string> order;        // the same, oldest pull first
    std::map<std::string, int64_t> seen;  // series UID -> instances at the last search
  };
  QidoPoller() = default;

  // Forgets the oldest pulled series but those `returned` by the last
  // search, down to the bound, and rewrites the state file.
  void Prune(int index, const std::set<std::string>& returned);

  unetrpp::v1::DicomWebListener config_;
  PullFn pull_;
  std::vector<Source> sources_;  // by index in config_.sources()
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_QIDO_POLL_H_
