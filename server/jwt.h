// Bearer JWTs verified against a JWKS file (an OIDC issuer's public keys,
// mounted from a secret): signature (RS256, ES256; HS256 only when allowed)
// through libjwt, then issuer, audience, expiry and not-before with a clock
// skew. The file is re-read every reload_seconds and replaced when its
// content changed, so a rotated key set takes effect without a restart.
//
// libjwt 1.10 (Debian 12) verifies signatures but reads no JWKS, so the
// JWK -> PEM conversion is done here with OpenSSL 3's key-from-parameters
// API; the header is read here too, to pick the key by "kid" and to refuse
// an algorithm that does not match the key's type (an HS256 token "signed"
// with an RSA public key used as the HMAC secret is the classic forgery).
//
// Threading: Verify() is called from gRPC's threads concurrently; the key
// set is an immutable snapshot (ReloadingFile).
#ifndef UPP_SERVER_JWT_H_
#define UPP_SERVER_JWT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/reloading_file.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

struct JwtIdentity {
  std::string subject;             // "sub"
  std::vector<std::string> roles;  // from the configured roles claim
};

// One verification key of a JWKS.
struct Jwk {
  std::string alg;       // "RS256", "ES256" or "HS256"
  std::string material;  // PEM public key, or the HS256 secret
};
using JwkSet = std::map<std::string, Jwk>;  // by "kid" ("" for a key without one)

// Parses a JWKS document; keys of other types or curves are skipped, a set
// with no usable key is INVALID_ARGUMENT.
absl::StatusOr<JwkSet> ParseJwks(absl::string_view json, bool allow_hs256);

class JwtVerifier {
 public:
  // Reads and parses the JWKS file; errors name the field or the file.
  static absl::StatusOr<std::unique_ptr<JwtVerifier>> Create(const unetrpp::v1::Jwt& config);

  // Three dot-separated parts: what a JWT looks like (an API key does not).
  static bool LooksLikeJwt(absl::string_view token);

  // UNAUTHENTICATED with a reason that helps the caller (expired, wrong
  // audience, unsigned, ...); the message never describes the keys.
  absl::StatusOr<JwtIdentity> Verify(const std::string& token, absl::Time now) const;

 private:
  JwtVerifier(unetrpp::v1::Jwt config, std::unique_ptr<ReloadingFile<JwkSet>> keys)
      : config_(std::move(config)), keys_(std::move(keys)) {}
  absl::StatusOr<JwtIdentity> CheckClaims(const std::string& payload_json, absl::Time now) const;

  const unetrpp::v1::Jwt config_;
  const std::unique_ptr<ReloadingFile<JwkSet>> keys_;  // the JWKS file
};

}  // namespace upp::server

#endif  // UPP_SERVER_JWT_H_
