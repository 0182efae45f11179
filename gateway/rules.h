// Which routing rule (if any) a received series falls under: the first
// rule of the configuration whose every given criterion matches.
// Thread-safe (pure function).
#ifndef UPP_GATEWAY_RULES_H_
#define UPP_GATEWAY_RULES_H_

#include "gateway/series.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// nullptr when no rule matches. Patterns are shell globs, case-insensitive.
const unetrpp::v1::RoutingRule* MatchRule(const unetrpp::v1::GatewayConfig& config, const SeriesSummary& series);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_RULES_H_
