// JwtVerifier against tokens this test signs with keys it generates
// (OpenSSL), published as a JWKS file: what verifies, every way a token is
// refused, and a key rotation picked up from the file without a restart.
#include "server/jwt.h"

#include <gtest/gtest.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "clients/cpp/client.h"
#include "model/cpu_threads.h"
#include "server/config.h"
#include "server/server.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/temp_path.h"

namespace upp::server {
namespace {

constexpr char kIssuer[] = "https://idp.hospital.example";
constexpr char kAudience[] = "unetrpp-serve";

// A generated key pair: the private key as PEM (for signing), the public
// half as a JWK.
struct TestKey {
  std::string private_pem;
  nlohmann::json jwk;
};

std::string PrivatePem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

std::string Bn(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string bytes(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
  BN_free(bn);
  return absl::WebSafeBase64Escape(bytes);
}

TestKey RsaKey(const std::string& kid) {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  TestKey k{PrivatePem(key),
            {{"kty", "RSA"},
             {"kid", kid},
             {"use", "sig"},
             {"n", Bn(key, OSSL_PKEY_PARAM_RSA_N)},
             {"e", Bn(key, OSSL_PKEY_PARAM_RSA_E)}}};
  EVP_PKEY_free(key);
  return k;
}

TestKey EcKey(const std::string& kid) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  unsigned char point[65];
  size_t length = 0;
  EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &length);
  const std::string p(reinterpret_cast<char*>(point), length);  // 0x04 || x || y
  TestKey k{PrivatePem(key),
            {{"kty", "EC"},
             {"crv", "P-256"},
             {"kid", kid},
             {"x", absl::WebSafeBase64Escape(p.substr(1, 32))},
             {"y", absl::WebSafeBase64Escape(p.substr(33, 32))}}};
  EVP_PKEY_free(key);
  return k;
}

std::string WriteJwks(const std::string& name, const std::vector<nlohmann::json>& keys) {
  const std::string path = upp::testing::UniqueTempPath(name);
  std::ofstream(path + ".tmp") << nlohmann::json{{"keys", keys}}.dump();
  std::rename((path + ".tmp").c_str(), path.c_str());
  return path;
}

struct Claims {
  std::string iss = kIssuer, sub = "dr.house";
  nlohmann::json aud = kAudience;
  int64_t exp_in = 300, nbf_in = -10;
  nlohmann::json roles = {"user"};
};

std::string Sign(jwt_alg_t alg, const std::string& key, const std::string& kid, const Claims& c) {
  jwt_t* jwt = nullptr;
  jwt_new(&jwt);
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  nlohmann::json grants = {{"iss", c.iss},          {"sub", c.sub},          {"aud", c.aud},
                           {"exp", now + c.exp_in}, {"nbf", now + c.nbf_in}, {"roles", c.roles}};
  jwt_add_grants_json(jwt, grants.dump().c_str());
  if (!kid.empty()) jwt_add_header(jwt, "kid", kid.c_str());
  jwt_set_alg(jwt, alg, reinterpret_cast<const unsigned char*>(key.data()), static_cast<int>(key.size()));
  char* token = jwt_encode_str(jwt);
  std::string out = token ? token : "";
  free(token);
  jwt_free(jwt);
  return out;
}

std::unique_ptr<JwtVerifier> Verifier(const std::string& jwks, bool allow_hs256 = false) {
  unetrpp::v1::Jwt config;
  config.set_jwks_file(jwks);
  config.set_issuer(kIssuer);
  config.set_audience(kAudience);
  config.set_clock_skew_seconds(30);
  config.set_allow_hs256(allow_hs256);
  config.set_reload_seconds(1);
  auto v = JwtVerifier::Create(config);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *std::move(v) : nullptr;
}

std::string Refusal(const JwtVerifier& v, const std::string& token) {
  auto r = v.Verify(token, absl::Now());
  EXPECT_FALSE(r.ok()) << "accepted";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  return std::string(r.status().message());
}

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new TestKey(RsaKey("rsa-1"));
    ec_ = new TestKey(EcKey("ec-1"));
  }
  static TestKey* rsa_;
  static TestKey* ec_;
};
TestKey* JwtTest::rsa_ = nullptr;
TestKey* JwtTest::ec_ = nullptr;

TEST_F(JwtTest, ValidRs256AndEs256TokensVerify) {
  auto v = Verifier(WriteJwks("jwks_valid.json", {rsa_->jwk, ec_->jwk}));
  Claims c;
  c.roles = "user priority";  // a space-separated string works too
  auto rs = v->Verify(Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-1", c), absl::Now());
  ASSERT_TRUE(rs.ok()) << rs.status();
  EXPECT_EQ(rs->subject, "dr.house");
  EXPECT_EQ(rs->roles, (std::vector<std::string>{"user", "priority"}));
  c.aud = {"another-service", kAudience};  // an audience array holding ours
  auto es = v->Verify(Sign(JWT_ALG_ES256, ec_->private_pem, "ec-1", c), absl::Now());
  ASSERT_TRUE(es.ok()) << es.status();
}

TEST_F(JwtTest, ClaimsAreChecked) {
  auto v = Verifier(WriteJwks("jwks_claims.json", {rsa_->jwk}));
  auto token = [&](auto change) {
    Claims c;
    change(c);
    return Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-1", c);
  };
  EXPECT_NE(Refusal(*v, token([](Claims& c) { c.exp_in = -60; })).find("expired"), std::string::npos);
  EXPECT_NE(Refusal(*v, token([](Claims& c) { c.nbf_in = 120; })).find("not valid yet"), std::string::npos);
  EXPECT_NE(Refusal(*v, token([](Claims& c) { c.aud = "another-service"; })).find("audience"), std::string::npos);
  EXPECT_NE(Refusal(*v, token([](Claims& c) { c.iss = "https://evil.example"; })).find("issuer"), std::string::npos);
  // Within the clock skew (30 s) both ways: accepted.
  EXPECT_TRUE(v->Verify(token([](Claims& c) { c.exp_in = -20; }), absl::Now()).ok());
  EXPECT_TRUE(v->Verify(token([](Claims& c) { c.nbf_in = 20; }), absl::Now()).ok());
}

TEST_F(JwtTest, ForgedTokensAreRefused) {
  auto v = Verifier(WriteJwks("jwks_forged.json", {rsa_->jwk}));
  const std::string good = Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-1", Claims{});
  // Signed by another key under the same kid.
  const TestKey other = RsaKey("rsa-1");
  EXPECT_NE(Refusal(*v, Sign(JWT_ALG_RS256, other.private_pem, "rsa-1", Claims{})).find("signature"),
            std::string::npos);
  // A changed payload under the original signature.
  const size_t dot1 = good.find('.'), dot2 = good.rfind('.');
  Claims admin;
  admin.roles = {"admin"};
  const std::string forged_payload = Sign(JWT_ALG_RS256, other.private_pem, "rsa-1", admin);
  const std::string spliced =
      good.substr(0, dot1) +
      forged_payload.substr(forged_payload.find('.'), forged_payload.rfind('.') - forged_payload.find('.')) +
      good.substr(dot2);
  EXPECT_NE(Refusal(*v, spliced).find("signature"), std::string::npos);
  // alg "none": unsigned.
  const std::string none_header = absl::WebSafeBase64Escape(R"({"alg":"none","typ":"JWT"})");
  EXPECT_NE(Refusal(*v, none_header + good.substr(dot1, dot2 - dot1) + ".").find("none"), std::string::npos);
  // HS256 "signed" with the RSA public key as the HMAC secret (key confusion),
  // even where HS256 is allowed: the key's type decides the algorithm.
  auto lenient = Verifier(WriteJwks("jwks_forged2.json", {rsa_->jwk}), /*allow_hs256=*/true);
  BIO* bio = BIO_new_mem_buf(rsa_->private_pem.data(), static_cast<int>(rsa_->private_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(out, key);
  char* data = nullptr;
  const std::string public_pem(data, static_cast<size_t>(BIO_get_mem_data(out, &data)));
  BIO_free(out);
  BIO_free(bio);
  EVP_PKEY_free(key);
  EXPECT_NE(Refusal(*lenient, Sign(JWT_ALG_HS256, public_pem, "rsa-1", Claims{})).find("no key"), std::string::npos);
  // Not accepted at all: HS256 unless allowed; an unknown kid.
  EXPECT_NE(Refusal(*v, Sign(JWT_ALG_HS256, std::string(32, 's'), "", Claims{})).find("HS256"), std::string::npos);
  EXPECT_NE(Refusal(*v, Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-9", Claims{})).find("no key"), std::string::npos);
  EXPECT_FALSE(v->Verify("not.a.jwt", absl::Now()).ok());
  // Members of unexpected types are refused, not thrown on.
  const std::string odd_header = absl::WebSafeBase64Escape(R"({"alg":"RS256","kid":7})");
  EXPECT_FALSE(v->Verify(odd_header + good.substr(dot1), absl::Now()).ok());
  const std::string odd_claims = absl::WebSafeBase64Escape(R"({"iss":1,"sub":[],"aud":{},"exp":"soon"})");
  EXPECT_FALSE(v->Verify(good.substr(0, dot1 + 1) + odd_claims + good.substr(dot2), absl::Now()).ok());
}

TEST_F(JwtTest, Hs256WhenAllowed) {
  const std::string secret(40, 'k');
  nlohmann::json oct = {{"kty", "oct"}, {"kid", "shared"}, {"k", absl::WebSafeBase64Escape(secret)}};
  auto v = Verifier(WriteJwks("jwks_hs.json", {oct}), /*allow_hs256=*/true);
  EXPECT_TRUE(v->Verify(Sign(JWT_ALG_HS256, secret, "shared", Claims{}), absl::Now()).ok());
  EXPECT_FALSE(v->Verify(Sign(JWT_ALG_HS256, std::string(40, 'x'), "shared", Claims{}), absl::Now()).ok());
  unetrpp::v1::Jwt config;  // without allow_hs256 the oct key is not usable: no key at all
  config.set_jwks_file(upp::testing::UniqueTempPath("jwks_hs.json"));
  config.set_issuer(kIssuer);
  config.set_audience(kAudience);
  EXPECT_EQ(JwtVerifier::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
}

// The issuer publishes a new key beside the old one, then drops the old one:
// each step is picked up from the file, without a restart.
TEST_F(JwtTest, KeyRotationFromTheFile) {
  const std::string path = WriteJwks("jwks_rotation.json", {rsa_->jwk});
  auto v = Verifier(path);
  const TestKey next = RsaKey("rsa-2");
  const std::string old_token = Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-1", Claims{});
  const std::string new_token = Sign(JWT_ALG_RS256, next.private_pem, "rsa-2", Claims{});
  EXPECT_TRUE(v->Verify(old_token, absl::Now()).ok());
  EXPECT_FALSE(v->Verify(new_token, absl::Now()).ok());
  WriteJwks("jwks_rotation.json", {rsa_->jwk, next.jwk});
  absl::Time later = absl::Now() + absl::Seconds(2);  // past reload_seconds
  EXPECT_TRUE(v->Verify(new_token, later).ok());
  EXPECT_TRUE(v->Verify(old_token, later).ok());
  WriteJwks("jwks_rotation.json", {next.jwk});
  later += absl::Seconds(2);
  EXPECT_FALSE(v->Verify(old_token, later).ok());
  EXPECT_TRUE(v->Verify(new_token, later).ok());
  // A broken file keeps the keys that work.
  std::ofstream(path) << "{\"keys\": [";
  later += absl::Seconds(2);
  EXPECT_TRUE(v->Verify(new_token, later).ok());
}

// Through the server: the token's subject is the principal, its roles claim
// grants permissions, and each refusal reaches the client with its code.
TEST_F(JwtTest, TheServerAuthenticatesAndAuthorizesTokens) {
  model::ConfigureCpuThreads(0);
  const std::string jwks = WriteJwks("jwks_server.json", {rsa_->jwk});
  auto config = ParseConfig(
      "listen_address: '127.0.0.1:0'\nmetrics_address: 'off'\n"
      "auth { required: true jwt { jwks_file: '" +
      jwks + "' issuer: '" + kIssuer + "' audience: '" + kAudience +
      "' } }\n"
      "models { name: 'small' weights: '" UPP_FIXTURES_DIR "/synapse_small_weights.safetensors' plan_file: '" +
      testing::SmallPlanFile("jwt_test_plan.json") + "' }\n");
  ASSERT_TRUE(config.ok()) << config.status();
  auto server = Server::Create(*config);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());
  auto as = [&](const Claims& c) {
    client::ConnectOptions o;
    o.token = Sign(JWT_ALG_RS256, rsa_->private_pem, "rsa-1", c);
    return client::Client::Connect(target, o).value();
  };
  const std::string volume = testing::FloatNifti(testing::Phantom({30, 30, 10}, {2.0, 2.0, 2.0}));
  EXPECT_TRUE(as(Claims{})->Segment({volume}, {}).ok());
  client::SegmentOptions urgent;
  urgent.priority = 2;
  EXPECT_EQ(as(Claims{})->Segment({volume}, urgent).status().code(), absl::StatusCode::kPermissionDenied);
  Claims priority;
  priority.roles = {"priority"};
  EXPECT_TRUE(as(priority)->Segment({volume}, urgent).ok());
  Claims nobody;
  nobody.roles = {"unknown-role"};  // grants nothing
  auto denied = as(nobody)->ListModels();
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("jwt:dr.house"), std::string::npos) << denied.status();
  Claims expired;
  expired.exp_in = -3600;
  auto refused = as(expired)->ListModels();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("expired"), std::string::npos) << refused.status();
  EXPECT_TRUE(client::Client::Connect(target)->Healthy().value());  // health needs no token
}

TEST(JwksTest, ParseRefusesWhatCannotVerify) {
  EXPECT_FALSE(ParseJwks("[]", false).ok());
  EXPECT_FALSE(ParseJwks(R"({"keys": []})", false).ok());
  EXPECT_FALSE(ParseJwks(R"({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]})", false).ok()) << "short modulus";
  EXPECT_FALSE(ParseJwks(R"({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]})", false).ok());
  // Keys of other types are skipped, not refused, beside a usable one.
  const TestKey k = EcKey("e");
  auto set =
      ParseJwks(nlohmann::json{{"keys", {k.jwk, {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "AA"}}}}}.dump(), false);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 1u);
  EXPECT_EQ(set->at("e").alg, "ES256");
}

}  // namespace
}  // namespace upp::server
