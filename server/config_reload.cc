#include "server/config_reload.h"

#include <google/protobuf/util/message_differencer.h>

#include <iterator>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace upp::server {
namespace {

using google::protobuf::Message;
using google::protobuf::util::MessageDifferencer;

// Collects the path of every difference between `a` and `b`, models named
// by their name. (The differencer passes the messages being compared at
// each level, sub-messages included, so the top-level ones are kept here.)
class PathReporter final : public MessageDifferencer::Reporter {
  using Field = MessageDifferencer::SpecificField;

 public:
  PathReporter(const unetrpp::v1::ServerConfig& a, const unetrpp::v1::ServerConfig& b, std::set<std::string>* paths)
      : a_(a), b_(b), paths_(paths) {}
  // An element added is in `b` (at new_index); one deleted or modified is
  // named from `a` (at index).
  void ReportAdded(const Message&, const Message&, const std::vector<Field>& path) override { Add(path, true); }
  void ReportDeleted(const Message&, const Message&, const std::vector<Field>& path) override { Add(path, false); }
  void ReportModified(const Message&, const Message&, const std::vector<Field>& path) override { Add(path, false); }

 private:
  void Add(const std::vector<Field>& path, bool added) {
    const unetrpp::v1::ServerConfig& config = added ? b_ : a_;
    std::string text;
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i].field == nullptr) continue;  // unknown fields: the parser refuses them
      if (!text.empty()) text += '.';
      text += path[i].field->name();
      if (i == 0 && path[i].field->number() == unetrpp::v1::ServerConfig::kModelsFieldNumber) {
        const int at = added ? path[i].new_index : path[i].index;
        absl::StrAppend(&text, "[\"", at >= 0 && at < config.models_size() ? config.models(at).name() : "?", "\"]");
      }
    }
    paths_->insert(text);
  }
  const unetrpp::v1::ServerConfig& a_;
  const unetrpp::v1::ServerConfig& b_;
  std::set<std::string>* paths_;
};

}  // namespace

unetrpp::v1::ServerConfig LiveConfig(const unetrpp::v1::ServerConfig& running, const unetrpp::v1::ServerConfig& next) {
  unetrpp::v1::ServerConfig live = running;
  // Requests' and admission's limits: read per request. The decode pool's
  // size, the GPU budget and the health service's limit are fixed at start.
  unetrpp::v1::Limits* limits = live.mutable_limits();
  *limits = next.limits();
  limits->set_decode_threads(running.limits().decode_threads());
  limits->set_max_device_bytes_in_flight(running.limits().max_device_bytes_in_flight());
  limits->set_max_health_watches_per_peer(running.limits().max_health_watches_per_peer());
  *live.mutable_timeouts() = next.timeouts();
  live.set_allow_client_priority(next.allow_client_priority());
  live.set_nonfinite_voxels(next.nonfinite_voxels());
  live.mutable_logging()->set_level(next.logging().level());
  // A default model must be served: one added by the file waits for a restart.
  for (const auto& m : live.models())
    if (m.name() == next.default_model()) live.set_default_model(next.default_model());
  // Each model's versions: what the registry loads and unloads (LoadModel's
  // path); the rest of the entry describes its instances.
  for (auto& m : *live.mutable_models()) {
    for (const auto& n : next.models()) {
      if (n.name() == m.name()) CopyVersionSource(n, &m);
    }
  }
  return live;
}

void CopyVersionSource(const unetrpp::v1::ModelEntry& from, unetrpp::v1::ModelEntry* to) {
  to->set_version(from.version());
  to->set_weights(from.weights());
  to->set_plan_file(from.plan_file());
  to->set_repository(from.repository());
  *to->mutable_versions() = from.versions();
  if (from.has_version_policy())
    *to->mutable_version_policy() = from.version_policy();
  else
    to->clear_version_policy();  // unset is not an empty policy to the differencer
}

std::vector<std::string> ConfigDifferences(const unetrpp::v1::ServerConfig& a, const unetrpp::v1::ServerConfig& b) {
  std::set<std::string> paths;
  PathReporter reporter(a, b, &paths);
  MessageDifferencer differ;
  differ.TreatAsMap(
      unetrpp::v1::ServerConfig::descriptor()->FindFieldByNumber(unetrpp::v1::ServerConfig::kModelsFieldNumber),
      unetrpp::v1::ModelEntry::descriptor()->FindFieldByNumber(unetrpp::v1::ModelEntry::kNameFieldNumber));
  differ.ReportDifferencesTo(&reporter);
  differ.Compare(a, b);
  // The differencer names a message whose fields differ as well as the
  // fields: keep the fields ("limits.max_voxels", not "limits" too).
  std::vector<std::string> leaves;
  for (auto it = paths.begin(); it != paths.end(); ++it) {
    const auto next = std::next(it);
    if (next != paths.end() && absl::StartsWith(*next, *it + ".")) continue;
    leaves.push_back(*it);
  }
  return leaves;
}

ReloadPlan PlanReload(const unetrpp::v1::ServerConfig& configured, const unetrpp::v1::ServerConfig& next) {
  ReloadPlan plan;
  plan.configured = LiveConfig(configured, next);
  plan.live = ConfigDifferences(configured, plan.configured);
  plan.restart_only = ConfigDifferences(plan.configured, next);
  return plan;
}

}  // namespace upp::server
