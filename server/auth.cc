#include "server/auth.h"

#include <grpc/grpc_security_constants.h>
#include <openssl/evp.h>

#include <algorithm>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "imageio/file_util.h"

namespace upp::server {
namespace {

constexpr int64_t kMaxKeyFileBytes = int64_t{16} << 20;

std::map<std::string, std::set<std::string>> DefaultRoles() {
  return {{"user", {kPermSegment, kPermModelsRead}},
          {"priority", {kPermSegment, kPermSegmentPriority, kPermModelsRead}},
          {"store", {kPermDicomStore}},
          {"pull", {kPermDicomPull}},
          {"admin", {kPermAdmin}}};
}

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// The token of an authorization value "Bearer <token>"; empty when absent.
absl::StatusOr<std::string> BearerToken(absl::string_view value) {
  if (value.empty()) return std::string();
  constexpr char kPrefix[] = "Bearer ";
  if (!absl::StartsWith(value, kPrefix) || value.size() == sizeof(kPrefix) - 1)
    return absl::UnauthenticatedError("the authorization metadata must be \"Bearer <key>\"");
  return std::string(value.substr(sizeof(kPrefix) - 1));
}

// The token of "authorization: Bearer <token>"; empty when absent.
absl::StatusOr<std::string> BearerToken(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::string();
  return BearerToken(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace

std::string ClientAddress(const std::string& grpc_peer) {
  const bool ip = absl::StartsWith(grpc_peer, "ipv4:") || absl::StartsWith(grpc_peer, "ipv6:");
  if (!ip) return grpc_peer;
  std::string a = absl::StrReplaceAll(grpc_peer.substr(5), {{"%5B", "["}, {"%5D", "]"}, {"%25", "%"}});
  const size_t colon = a.rfind(':');
  const bool port = colon != std::string::npos && colon + 1 < a.size() &&
                    std::all_of(a.begin() + colon + 1, a.end(), [](char c) { return absl::ascii_isdigit(c); });
  // "[::1]:5555" ends in its port; a bare "::1" (no brackets) does not have one.
  if (port && (a.front() != '[' ? a.find(':') == colon : a[colon - 1] == ']')) a.resize(colon);
  return a;
}

std::string Authenticator::HashKey(const std::string& key) {
  // OpenSSL's EVP digest (a well-kept implementation of SHA-256).
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(key.data(), key.size(), digest, &length, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const unetrpp::v1::Auth& config) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  a->required_ = config.required();
  a->allow_anonymous_ = config.allow_anonymous() && !config.required();
  a->roles_ = DefaultRoles();
  for (int i = 0; i < config.roles_size(); ++i) {
    const auto& r = config.roles(i);
    if (r.name().empty()) return absl::InvalidArgumentError(absl::StrCat("config: auth.roles[", i, "].name is empty"));
    for (const auto& p : r.permissions())
      if (p != kPermSegment && p != kPermSegmentPriority && p != kPermModelsRead && p != kPermAdmin &&
          p != kPermDicomStore && p != kPermDicomPull)
        return absl::InvalidArgumentError(
            absl::StrCat("config: auth.roles[", i, "].permissions: \"", p,
                         "\" is not segment, segment.priority, models.read, dicom.store, dicom.pull or admin"));
    a->roles_[r.name()] = std::set<std::string>(r.permissions().begin(), r.permissions().end());
  }
  if (!config.api_keys_file().empty()) {
    const Authenticator* parser = a.get();  // the roles are known by now
    auto keys = ReloadingFile<KeyTable>::Create(
        config.api_keys_file(), kMaxKeyFileBytes,
        absl::Seconds(config.api_keys_reload_seconds() ? config.api_keys_reload_seconds() : 60),
        [parser](const std::string& text) { return parser->ParseKeyFile(text); }, "auth.api_keys_file",
        config.on_unreadable_key_file() == "keep" ? Unreadable::kKeep : Unreadable::kRefuse);
    if (!keys.ok()) return keys.status();
    a->keys_ = *std::move(keys);
  }
  if (!config.jwt().jwks_file().empty()) {
    auto jwt = JwtVerifier::Create(config.jwt());
    if (!jwt.ok()) return jwt.status();
    a->jwt_ = *std::move(jwt);
  }
  for (int i = 0; i < config.certificate_identities_size(); ++i) {
    const auto& c = config.certificate_identities(i);
    const std::string where = absl::StrCat("config: auth.certificate_identities[", i, "]");
    if (c.name().empty()) return absl::InvalidArgumentError(where + ".name is empty");
    for (const auto& role : c.roles())
      if (!a->roles_.count(role)) return absl::InvalidArgumentError(where + ": unknown role \"" + role + "\"");
    a->cert_identities_[c.name()] = a->Permissions({c.roles().begin(), c.roles().end()});
  }
  if (a->required_ && !a->Enabled())
    return absl::InvalidArgumentError(
        "config: auth.required needs a credential source: api_keys_file, jwt.jwks_file or certificate_identities");
  return a;
}

std::set<std::string> Authenticator::Permissions(const std::vector<std::string>& roles) const {
  std::set<std::string> permissions;
  for (const auto& role : roles)  // unknown roles (e.g. from a token) grant nothing
    if (const auto it = roles_.find(role); it != roles_.end()) permissions.insert(it->second.begin(), it->second.end());
  return permissions;
}

absl::StatusOr<Authenticator::KeyTable> Authenticator::ParseKeyFile(const std::string& text) const {
  KeyTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const std::string where = absl::StrCat("config: auth.api_keys_file line ", line_number, ": ");
    if (fields.size() != 3) return absl::InvalidArgumentError(where + "expected \"<name> <sha256 hex> <roles>\"");
    const std::string hash = absl::AsciiStrToLower(fields[1]);
    if (!IsHex64(hash)) return absl::InvalidArgumentError(where + "the key hash must be 64 hex digits (SHA-256)");
    std::vector<std::string> roles = absl::StrSplit(fields[2], ',', absl::SkipEmpty());
    for (const auto& role : roles)
      if (!roles_.count(role)) return absl::InvalidArgumentError(where + "unknown role \"" + role + "\"");
    if (!table.emplace(hash, Key{fields[0], Permissions(roles)}).second)
      return absl::InvalidArgumentError(where + "the same key is listed twice");
  }
  return table;
}

absl::StatusOr<Principal> Authenticator::FromToken(const std::string& token) const {
  Principal p;
  p.authenticated = true;
  if (jwt_ && JwtVerifier::LooksLikeJwt(token)) {
    auto identity = jwt_->Verify(token, absl::Now());
    if (!identity.ok()) return identity.status();
    p.name = "jwt:" + identity->subject;
    p.permissions = Permissions(identity->roles);
    return p;
  }
  const auto keys = keys_ ? keys_->Get(absl::Now()) : nullptr;
  const auto it = keys ? keys->find(HashKey(token)) : KeyTable::const_iterator();
  // The message does not say whether such a key ever existed.
  if (!keys || it == keys->end()) return absl::UnauthenticatedError("the credential is not valid");
  p.name = it->second.name;
  p.permissions = it->second.permissions;
  return p;
}

absl::StatusOr<Principal> Authenticator::FromCertificate(const grpc::ServerContextBase& context) const {
  const auto auth = context.auth_context();
  if (cert_identities_.empty() || !auth || !auth->IsPeerAuthenticated()) return absl::NotFoundError("no certificate");
  // The subject CN first, then the SANs, as gRPC's TLS layer reports them.
  for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME}) {
    for (const auto& value : auth->FindPropertyValues(property)) {
      const auto it = cert_identities_.find(std::string(value.data(), value.size()));
      if (it == cert_identities_.end()) continue;
      Principal p;
      p.name = "cert:" + it->first;
      p.authenticated = true;
      p.permissions = it->second;
      return p;
    }
  }
  return absl::NotFoundError("no listed certificate identity");
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::ServerContextBase& context) const {
  Principal anonymous;
  anonymous.name = "anonymous";
  anonymous.permissions = {kPermSegment, kPermModelsRead};
  // No credential source: every caller is anonymous, a token sent or not.
  if (!Enabled() && allow_anonymous_) return anonymous;
  auto token = BearerToken(context);
  if (!token.ok()) return token.status();
  if (!token->empty()) return FromToken(*token);
  if (auto p = FromCertificate(context); p.ok()) return p;
  if (!allow_anonymous_)
    return absl::UnauthenticatedError(
        "this server needs a credential: send \"authorization: Bearer <key or token>\" (upp-client --token) or a "
        "client certificate it knows");
  return anonymous;
}

absl::StatusOr<Principal> Authenticator::AuthenticateBearer(absl::string_view authorization) const {
  auto token = BearerToken(authorization);
  if (!token.ok()) return token.status();
  if (!token->empty()) return FromToken(*token);
  if (!allow_anonymous_)
    return absl::UnauthenticatedError("a credential is needed: \"Authorization: Bearer <key or token>\"");
  Principal anonymous;
  anonymous.name = "anonymous";
  return anonymous;
}

absl::Status Authenticator::Authorize(const Principal& principal, const std::string& permission) {
  if (principal.Has(permission)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("the caller \"", principal.name, "\" lacks the permission \"", permission, "\""));
}

}  // namespace upp::server
