// The gateway's spool: every received instance is a file here from the
// moment it arrives until its series has been answered (or given up), so a
// restart or crash loses nothing and no series is ever held only in memory.
//
//   <root>/incoming/<n>.part               an instance being received
//   <root>/series/<series UID>/instances/  instances of a series still arriving
//   <root>/active/<n>/                      claimed: being processed or waiting to retry
//       instances/, state (attempts, next attempt), results/ (SEG, SR once made)
//       in_flight (an attempt under way), interrupted (attempts a dead process left)
//   <root>/failed/..., <root>/unmatched/... given up / matched no rule (kept for an operator)
//   <root>/quarantine/...                  in flight when the gateway died too often
// What is kept (failed/, unmatched/, quarantine/) is pruned by age and size.
//
// Directory names are UIDs (digits and dots, checked) or counters, never
// patient data; the counter names a series in logs.
// A series is complete when its instances/ directory has not changed for the
// quiet period (renaming a file into it updates its mtime, which survives
// restarts). Claiming renames the directory, so an instance that arrives
// later starts a new series directory rather than joining one in flight.
//
// Threading: thread-safe; the store SCP's association threads commit
// instances while the processor thread claims and settles series.
#ifndef UPP_GATEWAY_SPOOL_H_
#define UPP_GATEWAY_SPOOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace upp::gateway {

// DICOM UIDs (PS3.5 9.1): 1 to 64 characters, digits and dots.
bool IsValidUid(const std::string& uid);

class Spool {
 public:
  struct State {
    int attempts = 0;  // made so far
    int64_t next_attempt_unix = 0;
  };

  // Creates the directories under `root` (mode 0700: patient images).
  static absl::StatusOr<std::unique_ptr<Spool>> Create(const std::string& root);

  // A new path under incoming/ for one instance to be written to.
  std::string IncomingPath();
  // Moves a received file into its series. INVALID_ARGUMENT for UIDs that
  // are not UIDs. An instance received twice replaces the first copy.
  absl::Status Commit(const std::string& incoming_path, const std::string& series_uid, const std::string& sop_uid);

  // Claims every series whose last instance came at least `quiet` ago and
  // returns the active directories of all claimed series whose next attempt
  // is due (those claimed now, and those waiting to retry or left by a
  // previous run).
  std::vector<std::string> ClaimDue(absl::Duration quiet, absl::Time now);
  // Series arriving plus series claimed: the queue a dashboard shows.
  int64_t QueuedSeries() const;

  static std::string InstancesDir(const std::string& active_dir) { return active_dir + "/instances"; }
  static std::string ResultsDir(const std::string& active_dir) { return active_dir + "/results"; }
  static State ReadState(const std::string& active_dir);
  static absl::Status WriteState(const std::string& active_dir, const State& state);

  // An attempt begins: its count is persisted and the series marked in
  // flight BEFORE the work, so that a process killed during it (out of
  // memory) leaves the mark and the count. EndAttempt clears the mark.
  static absl::Status BeginAttempt(const std::string& active_dir, int attempts, absl::Time now);
  static void EndAttempt(const std::string& active_dir);

  // At start, before any series is processed: every series still marked in
  // flight was being processed when a previous run died. Its interruptions
  // are counted; one interrupted `max_interrupted` times is moved to
  // quarantine/ (not processed again). Returns how many were quarantined.
  int RecoverInterrupted(int max_interrupted);

  // Deletes kept series (failed/, unmatched/, quarantine/ together), oldest
  // first, while one is older than `max_age` or they hold more than
  // `max_bytes`. Age: since it was kept (its reason file).
  struct Pruned {
    int64_t series = 0;
    int64_t bytes = 0;
  };
  Pruned Prune(absl::Duration max_age, uint64_t max_bytes, absl::Time now);

  // Settling a claimed series: deleted (answered, or dropped), or moved to
  // failed/, unmatched/ or quarantine/ with a one-line reason (no patient
  // data).
  absl::Status Remove(const std::string& active_dir);
  absl::Status Keep(const std::string& active_dir, const std::string& where, const std::string& reason);

  // An instance begins to arrive (by C-STORE or STOW-RS): counted until
  // InstanceDone(), whatever this returns. Whether the spool's file system
  // has room for every instance arriving now (this one included) at
  // `max_instance_bytes` each, with `min_free_bytes` left over: the one
  // spool-space rule of both transports.
  bool InstanceArriving(uint64_t max_instance_bytes, uint64_t min_free_bytes);
  void InstanceDone() { arriving_.fetch_sub(1); }

  const std::string& root() const { return root_; }

 private:
  explicit Spool(std::string root) : root_(std::move(root)) {}
  std::string Unique();

  const std::string root_;
  std::atomic<uint64_t> counter_{0};
  std::atomic<int64_t> arriving_{0};
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_SPOOL_H_
