// Who is calling and what they may do. A call's credential (an API key in
// "authorization: Bearer <key>") names a principal; the principal's roles
// grant permissions; each RPC needs one. Keys are stored hashed (SHA-256):
// the file holds no secret worth stealing.
//
// Not yet here (see the authentication issue): JWTs against a JWKS, mTLS
// client identities, reloading the key file without a restart.
//
// Thread-safe after Create (read-only).
#ifndef UPP_SERVER_AUTH_H_
#define UPP_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

inline constexpr char kPermSegment[] = "segment";
inline constexpr char kPermSegmentPriority[] = "segment.priority";
inline constexpr char kPermModelsRead[] = "models.read";
inline constexpr char kPermAdmin[] = "admin";

struct Principal {
  std::string name;  // "anonymous" without a credential
  bool authenticated = false;
  std::set<std::string> permissions;
  bool Has(const std::string& permission) const {
    return permissions.count(permission) > 0 || permissions.count(kPermAdmin) > 0;
  }
};

class Authenticator {
 public:
  // Reads the key file and the roles; errors name the line or field.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const unetrpp::v1::Auth& config);

  // The caller's principal from the call's metadata: UNAUTHENTICATED for a
  // malformed or unknown credential, or for none when credentials are
  // required (anonymous otherwise, with every permission: auth is off).
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContextBase& context) const;
  // PERMISSION_DENIED naming the permission when the principal lacks it.
  static absl::Status Authorize(const Principal& principal, const std::string& permission);

  // SHA-256 of `key` as lower-case hex (what the key file stores).
  static std::string HashKey(const std::string& key);

 private:
  struct Key {
    std::string name;
    std::set<std::string> permissions;
  };
  Authenticator() = default;
  bool required_ = false;
  std::map<std::string, Key> keys_by_hash_;
};

}  // namespace upp::server

#endif  // UPP_SERVER_AUTH_H_
