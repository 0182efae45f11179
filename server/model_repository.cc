#include "server/model_repository.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "imageio/file_util.h"

namespace upp::server {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxCardBytes = int64_t{1} << 20;

bool AllDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// The model card at `path`: a JSON object whose "modality", when present,
// is CT or MR. The text is kept as it is (the registry reports it).
absl::StatusOr<std::string> ReadModelCard(const std::string& path) {
  auto text = imageio::ReadWholeFile(path, kMaxCardBytes);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": cannot be read (at most 1 MiB)"));
  const auto card = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (card.is_discarded() || !card.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  if (card.contains("modality") && card["modality"] != "CT" && card["modality"] != "MR")
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"modality\" must be \"CT\" or \"MR\""));
  return *text;
}

// One published version folder (its marker is there): its files, checked.
absl::StatusOr<VersionSpec> ReadVersionFolder(const fs::path& folder) {
  VersionSpec v;
  v.version = folder.filename().string();
  v.source = folder.string();
  const fs::path weights = folder / kWeightsFileName;
  std::error_code ec;
  if (!fs::is_regular_file(weights, ec))
    return absl::NotFoundError(absl::StrCat(weights.string(), ": missing (the folder has its ", kReadyMarker,
                                            " marker, so it was published without its weights)"));
  v.weights = weights.string();
  if (fs::exists(folder / kPlanFileName, ec)) v.plan_file = (folder / kPlanFileName).string();
  if (fs::exists(folder / kModelCardFileName, ec)) {
    auto card = ReadModelCard((folder / kModelCardFileName).string());
    if (!card.ok()) return card.status();
    v.card_json = *std::move(card);
  }
  return v;
}

// Every version folder of `entry` under its repository.
absl::Status ScanRepository(const unetrpp::v1::ModelEntry& entry, std::vector<VersionSpec>* all,
                            std::vector<std::string>* skipped) {
  const fs::path root = fs::path(entry.repository()) / entry.name();
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    return absl::NotFoundError(absl::StrCat("model repository: ", root.string(), " is not a folder"));
  for (const auto& item : fs::directory_iterator(root, ec)) {
    const std::string name = item.path().filename().string();
    if (!item.is_directory() || name[0] == '.') continue;  // files beside versions; hidden copies in progress
    if (!ValidVersionName(name)) {
      skipped->push_back(absl::StrCat(item.path().string(), ": not a version name (", kVersionNameRule, ")"));
      continue;
    }
    if (!fs::exists(item.path() / kReadyMarker, ec)) {
      skipped->push_back(absl::StrCat(item.path().string(), ": incomplete (no ", kReadyMarker, " marker yet)"));
      continue;
    }
    auto v = ReadVersionFolder(item.path());
    if (!v.ok()) return v.status();
    all->push_back(*std::move(v));
  }
  if (ec) return absl::UnavailableError(absl::StrCat("model repository: ", root.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// The versions listed in the configuration, or the entry's one version.
std::vector<VersionSpec> ListedVersions(const unetrpp::v1::ModelEntry& entry) {
  std::vector<VersionSpec> all;
  if (entry.versions().empty()) {
    all.push_back({entry.version(), entry.weights(), entry.plan_file(), "", "models \"" + entry.name() + "\""});
    return all;
  }
  for (int i = 0; i < entry.versions_size(); ++i) {
    const auto& lv = entry.versions(i);
    all.push_back({lv.version(), lv.weights(), lv.plan_file(), "",
                   absl::StrCat("models \"", entry.name(), "\".versions[", i, "]")});
  }
  return all;
}

// The card files of listed versions (a repository's are read with the folder).
absl::Status ReadListedCards(const unetrpp::v1::ModelEntry& entry, std::vector<VersionSpec>* all) {
  for (int i = 0; i < entry.versions_size() && i < static_cast<int>(all->size()); ++i) {
    if (entry.versions(i).card_file().empty()) continue;
    auto card = ReadModelCard(entry.versions(i).card_file());
    if (!card.ok()) return card.status();
    (*all)[i].card_json = *std::move(card);
  }
  return absl::OkStatus();
}

// `all` (sorted, oldest first) narrowed to what `entry`'s policy serves.
absl::StatusOr<std::vector<VersionSpec>> ApplyPolicy(const unetrpp::v1::ModelEntry& entry,
                                                     std::vector<VersionSpec> all) {
  const auto& policy = entry.version_policy();
  if (policy.specific().empty()) {
    const size_t latest = policy.latest() == 0 ? 1 : policy.latest();
    if (all.size() > latest) all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(latest));
    return all;
  }
  std::vector<VersionSpec> chosen;
  for (int i = 0; i < policy.specific_size(); ++i) {
    auto it =
        std::find_if(all.begin(), all.end(), [&](const VersionSpec& v) { return v.version == policy.specific(i); });
    if (it == all.end())
      return absl::NotFoundError(absl::StrCat("models \"", entry.name(), "\".version_policy.specific[", i,
                                              "]: version \"", policy.specific(i),
                                              "\" is not offered (no complete folder or listing)"));
    chosen.push_back(*it);
  }
  std::sort(chosen.begin(), chosen.end(),
            [](const VersionSpec& a, const VersionSpec& b) { return VersionBefore(a.version, b.version); });
  return chosen;
}

}  // namespace

bool ValidVersionName(const std::string& v) {
  if (v.empty() || v.size() > kMaxVersionLength || v[0] == '.') return false;
  return std::all_of(v.begin(), v.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool VersionBefore(const std::string& a, const std::string& b) {
  if (AllDigits(a) && AllDigits(b)) {
    const auto trim = [](const std::string& s) { return s.substr(std::min(s.find_first_not_of('0'), s.size() - 1)); };
    const std::string x = trim(a), y = trim(b);
    return x.size() != y.size() ? x.size() < y.size() : x < y;
  }
  return a < b;
}

absl::StatusOr<VersionScan> ScanVersions(const unetrpp::v1::ModelEntry& entry) {
  VersionScan scan;
  std::vector<VersionSpec> all;
  if (!entry.repository().empty()) {
    if (auto s = ScanRepository(entry, &all, &scan.skipped); !s.ok()) return s;
  } else {
    all = ListedVersions(entry);
    if (auto s = ReadListedCards(entry, &all); !s.ok()) return s;
  }
  std::sort(all.begin(), all.end(),
            [](const VersionSpec& a, const VersionSpec& b) { return VersionBefore(a.version, b.version); });
  if (all.empty())
    return absl::NotFoundError(absl::StrCat("model repository: ", entry.repository(), "/", entry.name(),
                                            ": no complete version folder (one with a ", kReadyMarker, " marker)"));
  auto chosen = ApplyPolicy(entry, std::move(all));
  if (!chosen.ok()) return chosen.status();
  scan.versions = *std::move(chosen);
  return scan;
}

unetrpp::v1::ModelEntry EntryForVersion(const unetrpp::v1::ModelEntry& entry, const VersionSpec& version) {
  unetrpp::v1::ModelEntry e = entry;
  e.set_version(version.version);
  e.set_weights(version.weights);
  e.set_plan_file(version.plan_file);
  e.clear_versions();
  e.clear_repository();
  return e;
}

absl::Status ValidateVersionSource(const unetrpp::v1::ModelEntry& m, const std::string& f) {
  const auto bad = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", f, field, ": ", why));
  };
  const int sources = !m.repository().empty() + !m.versions().empty() + !m.weights().empty();
  if (sources == 0) return bad(".weights", "a safetensors file is needed (or repository, or versions)");
  if (sources > 1) return bad("", "weights, repository and versions: give one of them");
  // The one version of `weights` (ApplyDefaults makes an unset one "1").
  if (!m.weights().empty() && !m.version().empty() && !ValidVersionName(m.version()))
    return bad(".version", kVersionNameRule);
  std::set<std::string> seen;
  for (int i = 0; i < m.versions_size(); ++i) {
    const auto& v = m.versions(i);
    const std::string at = absl::StrCat(".versions[", i, "]");
    if (!ValidVersionName(v.version())) return bad(at + ".version", kVersionNameRule);
    if (!seen.insert(v.version()).second) return bad(at + ".version", "\"" + v.version() + "\" is used twice");
    if (v.weights().empty()) return bad(at + ".weights", "a safetensors file is needed");
  }
  if (m.version_policy().latest() > 0 && !m.version_policy().specific().empty())
    return bad(".version_policy", "latest or specific, not both");
  for (int i = 0; i < m.version_policy().specific_size(); ++i)
    if (!ValidVersionName(m.version_policy().specific(i)))
      return bad(absl::StrCat(".version_policy.specific[", i, "]"), kVersionNameRule);
  if (m.version_policy().latest() > 16) return bad(".version_policy.latest", "at most 16");
  return absl::OkStatus();
}

}  // namespace upp::server
