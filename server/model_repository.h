// Where a model's versions come from, read without loading anything: a
// repository folder (<repository>/<model>/<version>/ with weights, plan and
// model card, published by writing the READY marker last), the versions
// listed in the configuration, or the single `weights` of a ModelEntry; then
// the model's version policy (the newest N, or specific versions).
//
// The reader only looks at files: the registry (model_registry.h) loads what
// it returns, the repository poll re-reads it. A folder without its marker
// is being copied and is skipped, never half-read; a folder with its marker
// but a missing or unreadable file is an error that names the path.
#ifndef UPP_SERVER_MODEL_REPOSITORY_H_
#define UPP_SERVER_MODEL_REPOSITORY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// The files of a version folder.
inline constexpr char kReadyMarker[] = "READY";
inline constexpr char kWeightsFileName[] = "weights.safetensors";
inline constexpr char kPlanFileName[] = "plan.json";
inline constexpr char kModelCardFileName[] = "model_card.json";

struct VersionSpec {
  std::string version;
  std::string weights;
  std::string plan_file;  // empty: the weights' own plan
  std::string card_json;  // the model card (a JSON object); empty: none
  std::string source;     // the folder, or the configuration field, for messages
};

struct VersionScan {
  std::vector<VersionSpec> versions;  // those the policy serves, oldest first
  std::vector<std::string> skipped;   // "<path>: <why>" (incomplete folders)
};

// The longest version name: a version is the DICOM SEG's Algorithm Version
// and the TID 1500 report's (LO, at most 64 characters), a folder name and
// a metrics label; a longer one would make every SEG of it fail, so it is
// refused where versions enter (configuration, repository folders,
// LoadModel) rather than clipped: two versions clipped to one name could not
// be told apart.
inline constexpr size_t kMaxVersionLength = 64;
// What a valid version name is, for messages.
inline constexpr char kVersionNameRule[] = "1 to 64 letters, digits, '-', '_', '.' (not starting with '.')";

// Whether `v` is a version name: kVersionNameRule.
bool ValidVersionName(const std::string& v);

// Whether version `a` comes before `b`: as numbers when both are numbers
// ("9" < "10"), else as text.
bool VersionBefore(const std::string& a, const std::string& b);

// The versions `entry` offers now, its version policy applied.
absl::StatusOr<VersionScan> ScanVersions(const unetrpp::v1::ModelEntry& entry);

// `entry` made into the entry of one of its versions (weights, plan,
// version), as ServedModel::Load takes it.
unetrpp::v1::ModelEntry EntryForVersion(const unetrpp::v1::ModelEntry& entry, const VersionSpec& version);

// The configuration checks of a model's version source and policy (no file
// is read); `field` is "models[i]".
absl::Status ValidateVersionSource(const unetrpp::v1::ModelEntry& entry, const std::string& field);

}  // namespace upp::server

#endif  // UPP_SERVER_MODEL_REPOSITORY_H_
