#include "server/auth.h"

#include <openssl/evp.h>

#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "imageio/file_util.h"

namespace upp::server {
namespace {

std::map<std::string, std::set<std::string>> DefaultRoles() {
  return {{"user", {kPermSegment, kPermModelsRead}},
          {"priority", {kPermSegment, kPermSegmentPriority, kPermModelsRead}},
          {"admin", {kPermAdmin}}};
}

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// The token of "authorization: Bearer <token>"; empty when absent.
absl::StatusOr<std::string> BearerToken(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::string();
  const std::string value(it->second.data(), it->second.size());
  constexpr char kPrefix[] = "Bearer ";
  if (!absl::StartsWith(value, kPrefix) || value.size() == sizeof(kPrefix) - 1)
    return absl::UnauthenticatedError("the authorization metadata must be \"Bearer <key>\"");
  return value.substr(sizeof(kPrefix) - 1);
}

}  // namespace

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
  auto roles = DefaultRoles();
  for (int i = 0; i < config.roles_size(); ++i) {
    const auto& r = config.roles(i);
    if (r.name().empty()) return absl::InvalidArgumentError(absl::StrCat("config: auth.roles[", i, "].name is empty"));
    for (const auto& p : r.permissions())
      if (p != kPermSegment && p != kPermSegmentPriority && p != kPermModelsRead && p != kPermAdmin)
        return absl::InvalidArgumentError(absl::StrCat("config: auth.roles[", i, "].permissions: \"", p,
                                                       "\" is not segment, segment.priority, models.read or admin"));
    roles[r.name()] = std::set<std::string>(r.permissions().begin(), r.permissions().end());
  }
  if (config.api_keys_file().empty()) {
    if (a->required_) return absl::InvalidArgumentError("config: auth.required needs auth.api_keys_file");
    return a;
  }
  auto text = imageio::ReadWholeFile(config.api_keys_file(), int64_t{16} << 20);
  if (!text.ok()) return absl::NotFoundError("config: auth.api_keys_file cannot be read");
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const std::string where = absl::StrCat("config: auth.api_keys_file line ", line_number, ": ");
    if (fields.size() != 3) return absl::InvalidArgumentError(where + "expected \"<name> <sha256 hex> <roles>\"");
    const std::string hash = absl::AsciiStrToLower(fields[1]);
    if (!IsHex64(hash)) return absl::InvalidArgumentError(where + "the key hash must be 64 hex digits (SHA-256)");
    Key key;
    key.name = fields[0];
    for (const std::string& role : std::vector<std::string>(absl::StrSplit(fields[2], ',', absl::SkipEmpty()))) {
      const auto it = roles.find(role);
      if (it == roles.end()) return absl::InvalidArgumentError(where + "unknown role \"" + role + "\"");
      key.permissions.insert(it->second.begin(), it->second.end());
    }
    if (!a->keys_by_hash_.emplace(hash, std::move(key)).second)
      return absl::InvalidArgumentError(where + "the same key is listed twice");
  }
  return a;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::ServerContextBase& context) const {
  Principal anonymous;
  anonymous.name = "anonymous";
  if (keys_by_hash_.empty()) {
    anonymous.permissions = {kPermSegment, kPermModelsRead};  // auth is off
    return anonymous;
  }
  auto token = BearerToken(context);
  if (!token.ok()) return token.status();
  if (token->empty()) {
    if (required_)
      return absl::UnauthenticatedError(
          "this server needs a credential: send \"authorization: Bearer <key>\" (upp-client --token)");
    anonymous.permissions = {kPermSegment, kPermModelsRead};
    return anonymous;
  }
  const auto it = keys_by_hash_.find(HashKey(*token));
  // The message does not say whether such a key ever existed.
  if (it == keys_by_hash_.end()) return absl::UnauthenticatedError("the credential is not valid");
  Principal p;
  p.name = it->second.name;
  p.authenticated = true;
  p.permissions = it->second.permissions;
  return p;
}

absl::Status Authenticator::Authorize(const Principal& principal, const std::string& permission) {
  if (principal.Has(permission)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("the caller \"", principal.name, "\" lacks the permission \"", permission, "\""));
}

}  // namespace upp::server
