// CPU feature detection and the bfloat16 precision check (model/cpu_features.h).
// ctest also runs this binary's CpuFeatures tests under ONEDNN_MAX_CPU_ISA=AVX2,
// which makes oneDNN behave as on an AVX2-only CPU.
#include "model/cpu_features.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "model/config.h"
#include "model/network.h"

namespace upp::model {
namespace {

bool EmulatingAvx2() {
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  return isa && std::string(isa) == "AVX2";
}

TEST(CpuFeaturesTest, Bf16IsTheDefaultOnAmxCpusAndZen5Only) {
  CpuFeatures amx;
  amx.avx512 = amx.avx512_bf16 = amx.amx = amx.bf16_convolutions = true;
  amx.vendor = "GenuineIntel";
  amx.family = 6;
  CpuFeatures avx512_bf16 = amx;  // Intel without AMX: bf16 1.5x slower
  avx512_bf16.amx = false;
  CpuFeatures zen5 = avx512_bf16;
  zen5.vendor = "AuthenticAMD";
  zen5.family = kAmdZen5Family;
  CpuFeatures zen4 = zen5;
  zen4.family = 0x19;
  CpuFeatures avx2;
  EXPECT_EQ(DefaultPrecision({"cpu"}, amx), "bf16");
  EXPECT_EQ(DefaultPrecision({"cpu", "cpu"}, amx), "bf16");
  EXPECT_EQ(DefaultPrecision({"cpu"}, avx512_bf16), "fp32");
  EXPECT_EQ(DefaultPrecision({"cpu"}, zen5), "bf16");
  EXPECT_EQ(DefaultPrecision({"cuda:0"}, zen5), "fp32");
  EXPECT_EQ(DefaultPrecision({"cpu"}, zen4), "fp32");  // not measured there
  zen5.bf16_convolutions = false;
  EXPECT_EQ(DefaultPrecision({"cpu"}, zen5), "fp32");
  zen5.bf16_convolutions = true;
  zen5.avx512_bf16 = false;  // bf16 emulated on plain AVX-512
  EXPECT_EQ(DefaultPrecision({"cpu"}, zen5), "fp32");
  EXPECT_EQ(DefaultPrecision({"cpu"}, avx2), "fp32");
  EXPECT_EQ(DefaultPrecision({"cuda:0"}, amx), "fp32");
  EXPECT_EQ(DefaultPrecision({"cpu", "cuda:0"}, amx), "fp32");
  // An AMX CPU whose probe failed falls back to fp32.
  amx.bf16_convolutions = false;
  EXPECT_EQ(DefaultPrecision({"cpu"}, amx), "fp32");
  // This machine's default is one it can run.
  const CpuFeatures& here = DetectCpuFeatures();
  EXPECT_TRUE(CheckPrecisionSupported("cpu", DefaultPrecision({"cpu"}, here)).ok());
}

TEST(CpuFeaturesTest, LevelsAreConsistent) {
  const CpuFeatures& f = DetectCpuFeatures();
  std::printf("%s\n", DescribeCpuFeatures(f).c_str());
  EXPECT_FALSE(f.isa.empty());
#if defined(__x86_64__)
  // Every machine this runs on is an Intel or AMD x86-64, whose CPUID
  // leaf 1 gives a family.
  EXPECT_TRUE(f.vendor == "GenuineIntel" || f.vendor == "AuthenticAMD") << f.vendor;
  EXPECT_GT(f.family, 0);
#endif
  if (f.amx) {
    EXPECT_TRUE(f.avx512_bf16);
  }
  if (f.avx512_bf16) {
    EXPECT_TRUE(f.avx512);
  }
  EXPECT_EQ(f.bf16_error.empty(), f.bf16_convolutions);
  EXPECT_EQ(&f, &DetectCpuFeatures());  // detected once
}

TEST(CpuFeaturesTest, Fp32AndGpuBf16AreAlwaysAccepted) {
  EXPECT_TRUE(CheckPrecisionSupported("cpu", "fp32").ok());
  EXPECT_TRUE(CheckPrecisionSupported("cuda:0", "bf16").ok());
}

TEST(CpuFeaturesTest, CpuBf16FollowsTheProbe) {
  const CpuFeatures& f = DetectCpuFeatures();
  const Status s = CheckPrecisionSupported("cpu", "bf16");
  EXPECT_EQ(s.ok(), f.bf16_convolutions);
  if (!s.ok()) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(s.message().find(f.isa), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("use precision \"fp32\""), std::string::npos) << s.message();
  }
}

TEST(CpuFeaturesTest, NetworkRefusesBf16WhereTheCpuCannot) {
  auto config = Preset("synapse");
  ASSERT_TRUE(config.ok());
  NetworkOptions o;
  o.precision = Precision::kBFloat16;
  auto net = Network::Create(*config, o);
  EXPECT_EQ(net.ok(), DetectCpuFeatures().bf16_convolutions);
  if (!net.ok()) {
    EXPECT_EQ(net.status().code(), StatusCode::kFailedPrecondition);
  }
}

// The situation of an AVX2-only EPYC, reproduced through oneDNN's ISA cap:
// no AVX-512, so no bfloat16 convolutions, and bf16 is refused with the reason.
TEST(CpuFeaturesTest, Avx2CapMeansNoBf16) {
  if (!EmulatingAvx2()) GTEST_SKIP() << "runs under ONEDNN_MAX_CPU_ISA=AVX2 (ctest sets it)";
  const CpuFeatures& f = DetectCpuFeatures();
  EXPECT_TRUE(f.isa == "avx2" || f.isa == "avx" || f.isa == "sse41 or older") << f.isa;
  EXPECT_FALSE(f.avx512);
  EXPECT_FALSE(f.bf16_convolutions);
  const auto refusal = CheckPrecisionSupported("cpu", "bf16");
  EXPECT_FALSE(refusal.ok());
  // The instruction sets, not oneDNN's internal reason, say why.
  const std::string message = refusal.message();
  EXPECT_NE(message.find("this CPU's best instruction set is " + f.isa), std::string::npos) << message;
  EXPECT_NE(message.find("bfloat16 needs AVX-512"), std::string::npos) << message;
  EXPECT_EQ(message.find("primitive"), std::string::npos) << message;
}

}  // namespace
}  // namespace upp::model
