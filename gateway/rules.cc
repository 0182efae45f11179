#include "gateway/rules.h"

#include <fnmatch.h>

#include <algorithm>

namespace upp::gateway {
namespace {

// fnmatch (POSIX, with glibc's FNM_CASEFOLD) rather than a hand-written
// glob: the operators who write the rules know its syntax from the shell.
bool AnyMatches(const google::protobuf::RepeatedPtrField<std::string>& patterns, const std::string& value) {
  if (patterns.empty()) return true;
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return fnmatch(p.c_str(), value.c_str(), FNM_CASEFOLD) == 0; });
}

bool Matches(const unetrpp::v1::RoutingRule& rule, const SeriesSummary& s) {
  if (static_cast<int64_t>(s.files.size()) < rule.min_instances()) return false;
  if (!rule.orientations().empty() &&
      std::find(rule.orientations().begin(), rule.orientations().end(), s.orientation) == rule.orientations().end())
    return false;
  return AnyMatches(rule.modalities(), s.modality) && AnyMatches(rule.body_parts(), s.body_part) &&
         AnyMatches(rule.series_descriptions(), s.series_description) &&
         AnyMatches(rule.protocol_names(), s.protocol_name);
}

}  // namespace

const unetrpp::v1::RoutingRule* MatchRule(const unetrpp::v1::GatewayConfig& config, const SeriesSummary& series) {
  for (const auto& rule : config.rules())
    if (Matches(rule, series)) return &rule;
  return nullptr;
}

}  // namespace upp::gateway
