// Reading safetensors and loading weights: round trips, dtype conversion,
// and every kind of broken file giving a clear error and no crash.
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <fstream>

#include "model/network.h"
#include "model/weights.h"
#include "tests/testing/temp_path.h"

namespace upp::model {
namespace {

const std::string kWeights = std::string(UPP_FIXTURES_DIR) + "/synapse_small_weights.safetensors";

std::string TempPath(const std::string& name) { return upp::testing::UniqueTempPath(name); }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i) & 0xff);
  return out + json;
}

// All tensors of the fixture, as stored, plus its metadata.
std::pair<std::vector<std::pair<std::string, torch::Tensor>>, std::map<std::string, std::string>> FixtureTensors() {
  auto r = SafetensorsReader::Open(kWeights);
  EXPECT_TRUE(r.ok());
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& info : (*r)->tensors()) out.emplace_back(info.name, *ReadTensor(**r, info));
  return {out, (*r)->metadata()};
}

Status LoadInto(const std::string& path, LoadOptions options = {}, LoadReport* report = nullptr) {
  auto config = Preset("synapse");
  config->feature_size = 4;
  config->depths = {1, 1, 1, 1};
  config->patch = {32, 64, 64};
  auto net = Network::Create(*config);
  EXPECT_TRUE(net.ok());
  return (*net)->LoadWeights(path, options, report);
}

TEST(SafetensorsTest, WriteReadRoundTripKeepsDtypesShapesAndMetadata) {
  auto a = torch::arange(12, torch::kFloat32).reshape({3, 4});
  auto b = torch::tensor({1, 2, 3}, torch::kUInt8);
  auto c = torch::randn({5}).to(torch::kBFloat16);
  const auto path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}, {"b", b}, {"c", c}}, {{"k", "v"}}).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->metadata().at("k"), "v");
  ASSERT_EQ((*r)->tensors().size(), 3u);
  EXPECT_TRUE(torch::equal(*ReadTensor(**r, *(*r)->Find("a")), a));
  EXPECT_TRUE(torch::equal(*ReadTensor(**r, *(*r)->Find("b")), b));
  auto c2 = *ReadTensor(**r, *(*r)->Find("c"));
  EXPECT_EQ(c2.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(c2, c));
  // The writer pads the header so that data starts 8-byte aligned.
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*r)->Data(*(*r)->Find("a"))) % 8, 0u);
}

TEST(SafetensorsTest, F16AndBF16AndF32FilesLoadToTheSameFloat32Weights) {
  auto [tensors, meta] = FixtureTensors();
  auto as = [&](torch::ScalarType t) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& [n, x] : tensors) out.emplace_back(n, x.is_floating_point() ? x.to(t) : x);
    return out;
  };
  // F16 values are exactly representable in F32; BF16 rounds them.
  ASSERT_TRUE(WriteSafetensors(TempPath("w32.safetensors"), as(torch::kFloat32), meta).ok());
  ASSERT_TRUE(WriteSafetensors(TempPath("wbf16.safetensors"), as(torch::kBFloat16), meta).ok());
  auto n16 = Network::FromWeightsFile(kWeights);
  auto n32 = Network::FromWeightsFile(TempPath("w32.safetensors"));
  auto nbf = Network::FromWeightsFile(TempPath("wbf16.safetensors"));
  ASSERT_TRUE(n16.ok() && n32.ok() && nbf.ok());
  auto s16 = StateDict(*(*n16)->module());
  auto s32 = StateDict(*(*n32)->module());
  auto sbf = StateDict(*(*nbf)->module());
  for (size_t i = 0; i < s16.size(); ++i) {
    EXPECT_EQ(s16[i].second.scalar_type(), s32[i].second.scalar_type());
    EXPECT_TRUE(torch::equal(s16[i].second, s32[i].second)) << s16[i].first;
    if (s16[i].second.is_floating_point()) {
      EXPECT_TRUE(torch::allclose(s16[i].second, sbf[i].second, 1e-2, 1e-2)) << s16[i].first;
    }
  }
}

TEST(SafetensorsTest, MissingKeyIsListed) {
  auto [tensors, meta] = FixtureTensors();
  tensors.erase(tensors.begin() + 5);
  const auto removed = "unetr_pp_encoder.downsample_layers.1.1.bias";
  const auto path = TempPath("missing.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, meta).ok());
  LoadReport report;
  Status s = LoadInto(path, {}, &report);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(std::string("missing key: ") + removed), std::string::npos) << s.message();
  ASSERT_EQ(report.missing.size(), 1u);
  // Non-strict loading succeeds and still reports the key.
  LoadOptions lax;
  lax.strict = false;
  EXPECT_TRUE(LoadInto(path, lax, &report).ok());
  EXPECT_EQ(report.missing, std::vector<std::string>{removed});
}

// The fixture's tensors changed by `change`, written to a temporary file
// `name`; the status of loading it into the network.
template <typename Change>
Status LoadChangedFixture(const std::string& name, Change change) {
  auto [tensors, meta] = FixtureTensors();
  change(tensors);
  const auto path = TempPath(name);
  EXPECT_TRUE(WriteSafetensors(path, tensors, meta).ok());
  return LoadInto(path);
}

TEST(SafetensorsTest, ExtraKeyIsListed) {
  Status s = LoadChangedFixture("extra.safetensors",
                                [](auto& tensors) { tensors.emplace_back("decoder9.surprise", torch::zeros({2})); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unexpected key: decoder9.surprise"), std::string::npos) << s.message();
}

TEST(SafetensorsTest, WrongShapeIsListedWithBothShapes) {
  Status s = LoadChangedFixture("shape.safetensors", [](auto& tensors) {
    for (auto& [n, t] : tensors)
      if (n == "out1.conv.conv.bias") t = torch::zeros({13}, torch::kFloat16);
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("out1.conv.conv.bias: file [13] F16 vs model [14]"), std::string::npos) << s.message();
}

TEST(SafetensorsTest, DeepSupervisionHeadsCanBeIgnored) {
  auto [tensors, meta] = FixtureTensors();
  std::vector<std::pair<std::string, torch::Tensor>> kept;
  for (auto& [n, t] : tensors) {
    if (n.rfind("out2.", 0) != 0 && n.rfind("out3.", 0) != 0) kept.emplace_back(n, t);
  }
  const auto path = TempPath("nods.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, kept, meta).ok());
  EXPECT_EQ(LoadInto(path).code(), StatusCode::kInvalidArgument);
  LoadOptions o;
  o.ignore_deep_supervision = true;
  EXPECT_TRUE(LoadInto(path, o).ok());
  auto net = Network::FromWeightsFile(path, o);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  // Without the heads' weights, asking for them is refused, not answered with noise.
  auto out = (*net)->Forward(torch::zeros({1, 1, 32, 64, 64}), /*deep_supervision=*/true);
  EXPECT_EQ(out.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*net)->Forward(torch::zeros({1, 1, 32, 64, 64})).ok());
}

TEST(SafetensorsTest, TruncatedDataIsDataLoss) {
  std::string bytes = ReadBytes(kWeights);
  const auto path = TempPath("truncated.safetensors");
  WriteBytes(path, bytes.substr(0, bytes.size() - 1000));
  auto r = SafetensorsReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
  EXPECT_FALSE(LoadInto(path).ok());
}

TEST(SafetensorsTest, HeaderLengthPastTheEndIsDataLoss) {
  std::string bytes = Header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})") + "abcd";
  bytes[0] = static_cast<char>(0xff);  // claims a longer header than the file holds
  bytes[1] = static_cast<char>(0x7f);
  auto r = SafetensorsReader::FromBytes(bytes.data(), bytes.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("past the end"), std::string::npos) << r.status().message();
  // A header length near 2^64 must not overflow any check or allocate.
  std::string huge(8, static_cast<char>(0xff));
  r = SafetensorsReader::FromBytes(huge.data(), huge.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds"), std::string::npos) << r.status().message();
  // Shorter than the length field itself.
  r = SafetensorsReader::FromBytes("abc", 3);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
}

TEST(SafetensorsTest, HeaderThatIsNotJsonIsRejected) {
  std::string bytes = Header("{\"a\": [1, 2,, }") + "0000";
  auto r = SafetensorsReader::FromBytes(bytes.data(), bytes.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
  bytes = Header("[1,2,3]");
  r = SafetensorsReader::FromBytes(bytes.data(), bytes.size());
  EXPECT_NE(r.status().message().find("not a JSON object"), std::string::npos);
}

TEST(SafetensorsTest, UnknownDtypeIsNamed) {
  std::string bytes = Header(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})") + "abcd";
  auto r = SafetensorsReader::FromBytes(bytes.data(), bytes.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("unsupported dtype \"F8_E4M3\""), std::string::npos) << r.status().message();
}

TEST(SafetensorsTest, InconsistentOffsetsAndShapesAreRejected) {
  const char* bad[] = {
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",                      // size mismatch
      R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",                     // negative dim
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})",                      // reversed
      R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})",  // overflow
      R"({"w":{"dtype":"F32","shape":[1]}})",                                           // no offsets
      R"({"__metadata__":{"a":1}})",                                                    // non-string metadata
  };
  for (const char* json : bad) {
    std::string bytes = Header(json) + "abcd";
    auto r = SafetensorsReader::FromBytes(bytes.data(), bytes.size());
    EXPECT_FALSE(r.ok()) << json;
  }
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto r = SafetensorsReader::Open("/nonexistent/weights.safetensors");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace upp::model
