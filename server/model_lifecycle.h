// One model's versions as a state machine, and which version new requests
// get (its default). Knows nothing of files, networks or gRPC, like Triton
// core's model lifecycle, so that every transition is unit-tested alone
// (tests/server/model_lifecycle_test.cc); the registry (model_registry.h)
// drives it while it loads, warms up and retires versions.
//
//   (none|unloaded|failed) -> loading -> warming -> ready -> unloading -> unloaded
//                              loading, warming -> failed
//
// A version becomes the default only once ready; a failed load leaves the
// default as it was (the old version keeps serving). Unloading the default
// hands it to the newest other ready version, or to none.
//
// Threading: none; the registry calls it under its lock.
#ifndef UPP_SERVER_MODEL_LIFECYCLE_H_
#define UPP_SERVER_MODEL_LIFECYCLE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace upp::server {

enum class VersionState { kLoading, kWarming, kReady, kUnloading, kUnloaded, kFailed };
// "loading", "warming", ... (ModelVersionInfo.state).
const char* VersionStateName(VersionState state);

// What ListModels reports of a loaded version.
struct VersionDetails {
  std::string weights_sha256;
  std::string card_json;
};

struct VersionRecord {
  std::string version;
  VersionState state = VersionState::kLoading;
  absl::Time since;         // of the state
  double load_seconds = 0;  // loading and warm-up, once ready
  std::string error;        // why it failed
  VersionDetails details;
};

class ModelLifecycle {
 public:
  // Versions no longer loaded (unloaded, failed) kept for reporting; the
  // oldest go first.
  static constexpr int kMaxPastVersions = 8;

  // A new load: FAILED_PRECONDITION while the version is loading, warming,
  // ready or unloading.
  absl::Status BeginLoad(const std::string& version, absl::Time now);
  absl::Status Warming(const std::string& version, absl::Time now);
  // Warming -> ready. `make_default`: new requests get it from now on (so
  // does a model that had no default).
  absl::Status Ready(const std::string& version, double load_seconds, VersionDetails details, bool make_default,
                     absl::Time now);
  // Loading or warming -> failed, with `why`; the default is untouched.
  absl::Status Failed(const std::string& version, const absl::Status& why, absl::Time now);
  // Ready -> unloading: new requests no longer get it.
  absl::Status BeginUnload(const std::string& version, absl::Time now);
  absl::Status Unloaded(const std::string& version, absl::Time now);
  // A ready version made the default.
  absl::Status MakeDefault(const std::string& version);

  // "" when no version serves (every one unloading, or none loaded yet).
  const std::string& default_version() const { return default_; }
  // Every version known, oldest version first.
  std::vector<VersionRecord> versions() const;
  // nullptr when the version is unknown.
  const VersionRecord* Find(const std::string& version) const;

 private:
  // `version` from one of `from` to `to`: FAILED_PRECONDITION naming both.
  absl::Status Move(const std::string& version, std::initializer_list<VersionState> from, VersionState to,
                    absl::Time now);
  void ForgetOldest();

  std::map<std::string, VersionRecord> versions_;
  std::string default_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_MODEL_LIFECYCLE_H_
