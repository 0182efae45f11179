// Who is calling and what they may do. A call's credential names a
// principal: a bearer JWT ("jwt:<sub>", verified by JwtVerifier), an API key
// in "authorization: Bearer <key>" (its name), or, without a bearer token,
// the mTLS client certificate's CN or SAN ("cert:<name>"). The principal's
// roles grant permissions; each RPC needs one. Keys are stored hashed
// (SHA-256): the file holds no secret worth stealing.
//
// The API key file and the JWKS file are re-read periodically and replaced
// when they changed, without a restart.
//
// Thread-safe after Create: the key table is an immutable snapshot
// (ReloadingFile).
#ifndef UPP_SERVER_AUTH_H_
#define UPP_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/jwt.h"
#include "server/reloading_file.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

inline constexpr char kPermSegment[] = "segment";
inline constexpr char kPermSegmentPriority[] = "segment.priority";
inline constexpr char kPermModelsRead[] = "models.read";
inline constexpr char kPermAdmin[] = "admin";
// The DICOM gateway's DICOMweb receiver: store instances (STOW-RS), and
// have it pull a study or series from a configured source (POST /pull).
inline constexpr char kPermDicomStore[] = "dicom.store";
inline constexpr char kPermDicomPull[] = "dicom.pull";

struct Principal {
  std::string name;  // "anonymous" without a credential
  bool authenticated = false;
  std::set<std::string> permissions;
  bool Has(const std::string& permission) const {
    return permissions.count(permission) > 0 || permissions.count(kPermAdmin) > 0;
  }
};

// The caller's address as logs, the audit trail and the per-address limits
// name it: gRPC's peer string without its scheme and port ("ipv4:10.1.2.3:
// 48404" -> "10.1.2.3", "ipv6:[::1]:48404" or "ipv6:%5B::1%5D:48404" ->
// "[::1]"; other schemes, e.g. "unix:/run/upp.sock", unchanged). Without the
// port because the port is a fresh ephemeral one per connection: it would
// make one client machine look like many in the audit trail and in
// limits.per_caller.max_requests_per_peer, and names no one more precisely.
std::string ClientAddress(const std::string& grpc_peer);

class Authenticator {
 public:
  // Reads the key file and the roles; errors name the line or field.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const unetrpp::v1::Auth& config);

  // The caller's principal from the call's metadata: UNAUTHENTICATED for a
  // malformed or unknown credential, or for none unless auth.allow_anonymous
  // (then "anonymous", who may segment and read models).
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContextBase& context) const;
  // The same for another transport (HTTP): `authorization` is the
  // Authorization header's value, "" when the request has none. No client
  // certificate identities here.
  absl::StatusOr<Principal> AuthenticateBearer(absl::string_view authorization) const;
  // PERMISSION_DENIED naming the permission when the principal lacks it.
  static absl::Status Authorize(const Principal& principal, const std::string& permission);

  // SHA-256 of `key` as lower-case hex (what the key file stores).
  static std::string HashKey(const std::string& key);

 private:
  struct Key {
    std::string name;
    std::set<std::string> permissions;
  };
  using RoleTable = std::map<std::string, std::set<std::string>>;
  using KeyTable = std::map<std::string, Key>;  // by SHA-256 hex
  Authenticator() = default;
  absl::StatusOr<KeyTable> ParseKeyFile(const std::string& text) const;
  absl::StatusOr<Principal> FromToken(const std::string& token) const;
  // The principal of a client certificate listed in certificate_identities;
  // NOT_FOUND when the call has none that is listed.
  absl::StatusOr<Principal> FromCertificate(const grpc::ServerContextBase& context) const;
  std::set<std::string> Permissions(const std::vector<std::string>& roles) const;
  bool Enabled() const { return keys_ != nullptr || jwt_ != nullptr || !cert_identities_.empty(); }

  bool required_ = false;
  bool allow_anonymous_ = false;  // auth.allow_anonymous, never with required
  RoleTable roles_;
  std::unique_ptr<ReloadingFile<KeyTable>> keys_;  // the API key file
  std::unique_ptr<JwtVerifier> jwt_;
  std::map<std::string, std::set<std::string>> cert_identities_;  // name -> permissions
};

}  // namespace upp::server

#endif  // UPP_SERVER_AUTH_H_
