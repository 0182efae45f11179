// Pull mode without a caller (dicomweb.sources[].poll): every
// interval_seconds the gateway searches a DICOMweb source for series by
// QIDO-RS (GET <url>/series?<query>&includefield=00201209&limit=<n>
// [&offset=<k>], application/dicom+json; page after page while a page comes
// back full, at most kMaxPagesPerSearch pages, so that series beyond the
// first max_series matches are reached) and pulls each series it finds, as
// POST /pull would, once its number of instances
// (NumberOfSeriesRelatedInstances) has stayed the same for settle_seconds
// across at least two searches: a series still arriving at the archive
// waits. An archive that leaves the count out gives nothing to compare: such
// a series is pulled once it has been in the answers for settle_seconds
// (documented: choose settle_seconds above the time a series takes to
// arrive there). The series pulled are remembered, one UID a line, in
// <state_dir>/<source name>, read at start: a restart pulls none of them
// again.
//
// A failed pull (StowServer::Pull keeps nothing of it) is tried at the
// next search, then after 1, 3, 7, ... searches skipped (doubling, capped
// at an hour's worth of searches), and after max_attempts failed pulls the
// series is given up: logged, and remembered as if pulled (POST /pull can
// still fetch it). A pull the gateway's own spool refused for now (full or
// failing) is not the series' failure: it is not counted, and the search's
// other pulls wait for the next search. What is pending (seen, not pulled)
// is kept only for the series the last search returned.
//
// What is remembered is bounded (kRememberedPerSearchedSeries x max_series
// series per source): only a series a search returns can be pulled, so the
// series the last search returned are always kept, and of the others the
// most recently pulled, the oldest forgotten first; the state file is then
// rewritten (a new file renamed over it). A series forgotten that a search
// returns again is pulled again: a query that lets old series back into its
// answer (more matches than the pages hold, in an order that changes)
// should be narrowed (by date, for example).
//
// Logs give the source's name and counts, never a UID.
//
// Threading: Run() blocks until Stop() (from any thread); Stop() is seen
// between pulls and pages, so it waits for one pull at most. PollOnce() is
// for tests and must not run beside Run().
#ifndef UPP_GATEWAY_QIDO_POLL_H_
#define UPP_GATEWAY_QIDO_POLL_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// A series a search found. instances: -1 when the source did not say.
struct FoundSeries {
  std::string study_uid, series_uid;
  int64_t instances = -1;
};

// One page of a QIDO-RS series search of `service` (errors name `field`):
// at most `limit` matches from the `offset`-th. Items without a study and a
// series UID that are UIDs are left out; `items`, if given, is set to how
// many the answer held (a full page means there may be more). The answer
// is held to `max_bytes` and `max_time`.
absl::StatusOr<std::vector<FoundSeries>> SearchSeries(const unetrpp::v1::DicomWebDestination& service,
                                                      const std::string& field, const std::string& query,
                                                      uint32_t limit, uint64_t offset, uint64_t max_bytes,
                                                      absl::Duration max_time, size_t* items = nullptr);

// Pages one search reads at most (max_series each); a query with more
// matches is warned about, as the rest are never reached.
inline constexpr uint32_t kMaxPagesPerSearch = 10;

// How many series a source's poll remembers, per series a page may
// return (max_series): 1000 at the default of 100. As many as a search's
// pages hold, so that all of a search's series can be kept.
inline constexpr uint32_t kRememberedPerSearchedSeries = kMaxPagesPerSearch;

// The longest wait between a failing series' tries, in seconds (counted
// in searches of interval_seconds).
inline constexpr double kMaxPullBackoffSeconds = 3600;

class QidoPoller {
 public:
  // Pulls one series of source `index` (StowServer::Pull): OK when pulled
  // or refused for good, SpoolRefusedError() (gateway/stow_rs.h) when the
  // gateway cannot take it now (not counted against the series; the
  // search's other pulls wait), another error when the pull failed.
  using PullFn = std::function<absl::Status(int index, const std::string& study, const std::string& series)>;

  // Reads what was pulled before from `state_dir` (created, mode 0700).
  static absl::StatusOr<std::unique_ptr<QidoPoller>> Create(const unetrpp::v1::DicomWebListener& config,
                                                            const std::string& state_dir, PullFn pull);

  // Whether any source is polled.
  static bool AnyPolled(const unetrpp::v1::DicomWebListener& config);

  // One search of source `index` and the pulls it leads to; the number of
  // series pulled (a search or pull cut short by Stop() counts those done).
  absl::StatusOr<int> PollOnce(int index);

  // Polls each polled source every its interval until Stop().
  void Run();
  void Stop();

  // Tests: the clock PollOnce reads, once per search, for settle_seconds
  // (absl::Now by default). Run() schedules by absl::Now.
  void SetClockForTest(std::function<absl::Time()> clock) { clock_ = std::move(clock); }

 private:
  // A series a search returned that is not pulled yet.
  struct Pending {
    int64_t instances = -1;  // at the last search (-1: the source did not say)
    absl::Time since;        // the search that first saw this count
    uint32_t failures = 0;   // failed pulls
    uint32_t skip = 0;       // searches to let pass before the next try
  };
  struct Source {
    std::string file;                        // the series pulled, one a line, oldest first
    std::set<std::string> pulled;            // series UIDs
    std::deque<std::string> order;           // the same, oldest pull first
    std::map<std::string, Pending> pending;  // series UID -> what the searches saw
  };
  QidoPoller() = default;

  bool Stopping();
  // The series of source `index` is done: remembered, in memory and in its
  // file (a warning if the file cannot be written).
  void Remember(int index, const std::string& series_uid);
  // Forgets the oldest pulled series but those `returned` by the last
  // search, down to the bound, and rewrites the state file.
  void Prune(int index, const std::set<std::string>& returned);

  unetrpp::v1::DicomWebListener config_;
  PullFn pull_;
  std::function<absl::Time()> clock_ = [] { return absl::Now(); };
  std::vector<Source> sources_;  // by index in config_.sources()
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_QIDO_POLL_H_
