#include "server/jwt.h"

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "imageio/file_util.h"

namespace upp::server {
namespace {

constexpr int64_t kMaxJwksBytes = 1 << 20;

// A string member, or "" when absent or of another type. (json::value()
// throws on a type mismatch, and these objects come from callers.)
std::string StringField(const nlohmann::json& object, const char* name) {
  const auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("the bearer token is not valid: ", why));
}

std::string Base64Url(const nlohmann::json& key, const char* field) {
  std::string out;
  if (!key.contains(field) || !key[field].is_string() ||
      !absl::WebSafeBase64Unescape(key[field].get<std::string>(), &out))
    return "";
  return out;
}

// OpenSSL owns what these point to; freed on scope exit.
struct OsslFree {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Ossl = std::unique_ptr<T, OsslFree>;

// A public key from its parameters, as PEM (what libjwt verifies with).
absl::StatusOr<std::string> PemFromParams(const char* type, OSSL_PARAM_BLD* builder) {
  Ossl<OSSL_PARAM> params(OSSL_PARAM_BLD_to_param(builder));
  Ossl<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    return absl::InvalidArgumentError("not a valid public key");
  }
  Ossl<EVP_PKEY> key(raw);
  Ossl<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) return absl::InternalError("PEM encoding failed");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<std::string> RsaPem(const nlohmann::json& key) {
  const std::string n = Base64Url(key, "n"), e = Base64Url(key, "e");
  if (n.size() < 256 || e.empty())
    return absl::InvalidArgumentError("an RSA key needs \"n\" (2048 bits or more) and \"e\"");
  Ossl<BIGNUM> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
  Ossl<BIGNUM> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
  Ossl<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
  if (!builder || !OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
      !OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get())) {
    return absl::InternalError("OpenSSL parameter building failed");
  }
  return PemFromParams("RSA", builder.get());
}

absl::StatusOr<std::string> P256Pem(const nlohmann::json& key) {
  const std::string x = Base64Url(key, "x"), y = Base64Url(key, "y");
  if (x.size() != 32 || y.size() != 32) return absl::InvalidArgumentError("a P-256 key needs 32-byte \"x\" and \"y\"");
  const std::string point = "\x04" + x + y;  // uncompressed SEC1 point
  Ossl<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
  if (!builder || !OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size())) {
    return absl::InternalError("OpenSSL parameter building failed");
  }
  return PemFromParams("EC", builder.get());
}

// One JWK; nullopt-like NOT_FOUND for a key of a type this server skips.
absl::StatusOr<Jwk> ParseJwk(const nlohmann::json& key, bool allow_hs256) {
  const std::string kty = StringField(key, "kty");
  if (key.contains("use") && key["use"] != "sig") return absl::NotFoundError("not a signing key");
  Jwk jwk;
  if (kty == "RSA") {
    jwk.alg = "RS256";
    auto pem = RsaPem(key);
    if (!pem.ok()) return pem.status();
    jwk.material = *std::move(pem);
  } else if (kty == "EC" && StringField(key, "crv") == "P-256") {
    jwk.alg = "ES256";
    auto pem = P256Pem(key);
    if (!pem.ok()) return pem.status();
    jwk.material = *std::move(pem);
  } else if (kty == "oct" && allow_hs256) {
    jwk.alg = "HS256";
    jwk.material = Base64Url(key, "k");
    if (jwk.material.size() < 32) return absl::InvalidArgumentError("an HS256 secret needs 32 bytes or more");
  } else {
    return absl::NotFoundError("a key type this server does not use");
  }
  if (key.contains("alg") && key["alg"] != jwk.alg)
    return absl::NotFoundError("an algorithm this server does not use with this key");
  return jwk;
}

// "exp" / "nbf" / "iat" as seconds since the epoch.
bool NumericDate(const nlohmann::json& claims, const char* name, double* out) {
  if (!claims.contains(name) || !claims[name].is_number()) return false;
  *out = claims[name].get<double>();
  return std::isfinite(*out);
}

std::vector<std::string> Roles(const nlohmann::json& claims, const std::string& claim) {
  std::vector<std::string> roles;
  if (!claims.contains(claim)) return roles;
  const auto& value = claims[claim];
  if (value.is_string()) return absl::StrSplit(value.get<std::string>(), ' ', absl::SkipEmpty());
  if (value.is_array())
    for (const auto& r : value)
      if (r.is_string()) roles.push_back(r.get<std::string>());
  return roles;
}

}  // namespace

absl::StatusOr<JwkSet> ParseJwks(absl::string_view text, bool allow_hs256) {
  const auto json = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("keys") || !json["keys"].is_array())
    return absl::InvalidArgumentError("not a JWKS document ({\"keys\": [...]})");
  JwkSet set;
  for (size_t i = 0; i < json["keys"].size(); ++i) {
    const auto& key = json["keys"][i];
    if (!key.is_object()) return absl::InvalidArgumentError(absl::StrCat("keys[", i, "] is not an object"));
    auto jwk = ParseJwk(key, allow_hs256);
    if (absl::IsNotFound(jwk.status())) continue;
    if (!jwk.ok()) return absl::InvalidArgumentError(absl::StrCat("keys[", i, "]: ", jwk.status().message()));
    const std::string kid = StringField(key, "kid");
    if (!set.emplace(kid, *std::move(jwk)).second)
      return absl::InvalidArgumentError(absl::StrCat("keys[", i, "]: the kid \"", kid, "\" is listed twice"));
  }
  if (set.empty()) return absl::InvalidArgumentError("no usable key (RSA, P-256 EC, or oct with allow_hs256)");
  return set;
}

absl::StatusOr<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(const unetrpp::v1::Jwt& config) {
  if (config.issuer().empty() || config.audience().empty())
    return absl::InvalidArgumentError("config: auth.jwt needs issuer and audience");
  const bool allow_hs256 = config.allow_hs256();
  auto keys = ReloadingFile<JwkSet>::Create(
      config.jwks_file(), kMaxJwksBytes, absl::Seconds(config.reload_seconds() ? config.reload_seconds() : 60),
      [allow_hs256](const std::string& text) -> absl::StatusOr<JwkSet> {
        auto set = ParseJwks(text, allow_hs256);
        if (!set.ok())
          return absl::InvalidArgumentError(absl::StrCat("config: auth.jwt.jwks_file: ", set.status().message()));
        return set;
      },
      "auth.jwt.jwks_file");
  if (!keys.ok()) return keys.status();
  return std::unique_ptr<JwtVerifier>(new JwtVerifier(config, *std::move(keys)));
}

bool JwtVerifier::LooksLikeJwt(absl::string_view token) { return std::count(token.begin(), token.end(), '.') == 2; }

absl::StatusOr<JwtIdentity> JwtVerifier::Verify(const std::string& token, absl::Time now) const {
  const std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return Unauthenticated("not a JWT");
  std::string header_text;
  if (!absl::WebSafeBase64Unescape(parts[0], &header_text)) return Unauthenticated("the header is not base64url");
  const auto header = nlohmann::json::parse(header_text, nullptr, false);
  if (!header.is_object() || !header.contains("alg") || !header["alg"].is_string())
    return Unauthenticated("the header has no algorithm");
  const std::string alg = header["alg"];
  if (alg == "none" || parts[2].empty()) return Unauthenticated("unsigned tokens (alg \"none\") are not accepted");
  if (alg != "RS256" && alg != "ES256" && !(alg == "HS256" && config_.allow_hs256()))
    return Unauthenticated(absl::StrCat("the algorithm \"", alg, "\" is not accepted"));
  const auto keys = keys_->Get(now);
  const std::string kid = StringField(header, "kid");
  const Jwk* key = nullptr;
  if (const auto it = keys->find(kid); it != keys->end()) {
    key = &it->second;
  } else if (kid.empty()) {  // no kid: the one key of this algorithm, if there is exactly one
    for (const auto& [id, k] : *keys)
      if (k.alg == alg) key = key ? nullptr : &k;
  }
  // The key's type decides the algorithm, never the token.
  if (key == nullptr || key->alg != alg) return Unauthenticated("no key of this issuer verifies it");
  jwt_t* raw = nullptr;
  if (jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(key->material.data()),
                 static_cast<int>(key->material.size())) != 0 ||
      raw == nullptr) {
    return Unauthenticated("the signature does not verify");
  }
  std::unique_ptr<jwt_t, decltype(&jwt_free)> jwt(raw, &jwt_free);
  std::unique_ptr<char, decltype(&free)> grants(jwt_get_grants_json(jwt.get(), nullptr), &free);
  if (!grants) return Unauthenticated("no claims");
  return CheckClaims(grants.get(), now);
}

absl::StatusOr<JwtIdentity> JwtVerifier::CheckClaims(const std::string& payload_json, absl::Time now) const {
  const auto claims = nlohmann::json::parse(payload_json, nullptr, false);
  if (!claims.is_object()) return Unauthenticated("the claims are not a JSON object");
  const double skew = config_.clock_skew_seconds() > 0 ? config_.clock_skew_seconds() : 60;
  const double t = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  double exp = 0, nbf = 0;
  if (!NumericDate(claims, "exp", &exp)) return Unauthenticated("it has no expiry (\"exp\")");
  if (t > exp + skew) return Unauthenticated("it has expired");
  if (NumericDate(claims, "nbf", &nbf) && t < nbf - skew) return Unauthenticated("it is not valid yet (\"nbf\")");
  if (StringField(claims, "iss") != config_.issuer()) return Unauthenticated("it is from another issuer");
  const auto& aud = claims.contains("aud") ? claims["aud"] : nlohmann::json();
  const bool for_us = (aud.is_string() && aud == config_.audience()) ||
                      (aud.is_array() && std::find(aud.begin(), aud.end(), config_.audience()) != aud.end());
  if (!for_us) return Unauthenticated("it is for another audience");
  if (!claims.contains("sub") || !claims["sub"].is_string() || claims["sub"].get<std::string>().empty())
    return Unauthenticated("it has no subject (\"sub\")");
  JwtIdentity identity;
  identity.subject = claims["sub"];
  identity.roles = Roles(claims, config_.roles_claim().empty() ? "roles" : config_.roles_claim());
  return identity;
}

}  // namespace upp::server
