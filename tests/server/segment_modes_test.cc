// Speed modes and label subsets through the server (segment_call.cc,
// speed_mode.h): the default phantom model with its coarse companion as the
// `fastest` model, a synthetic abdomen (tools/phantom.h) as NIfTI and as a
// DICOM series. What each mode runs, what a subset returns (its labels only,
// in the label map, the volumes and the SEG), and the refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "clients/cpp/client.h"
#include "imageio/labels.h"
#include "server/config.h"
#include "server/server.h"
#include "tests/server/test_volumes.h"
#include "tests/testing/dicom_bytes.h"
#include "tools/phantom.h"

namespace upp::server {
namespace {

using client::SegmentOptions;

constexpr char kWeights[] = UPP_SOURCE_DIR "/model/weights/";

std::string ConfigText() {
  return "listen_address: '127.0.0.1:0'\nmetrics_address: '127.0.0.1:" + std::to_string(testing::FreePort()) +
         "'\ncpu_threads: 2\n" +
         "batching { max_batch_size: 4 max_queue_delay_us: 5000 }\n"
         "models { name: 'phantom-ct' weights: '" +
         kWeights +
         "phantom_ct_v1.safetensors' precision: 'fp32' speed { fastest_model: 'phantom-ct-coarse' } }\n"
         "models { name: 'phantom-ct-coarse' weights: '" +
         kWeights +
         "phantom_ct_coarse_v1.safetensors' precision: 'fp32' }\n"
         "models { name: 'alone' weights: '" +
         kWeights + "phantom_ct_v1.safetensors' precision: 'fp32' }\n";
}

struct Abdomen {
  imageio::Volume volume;
  std::vector<uint16_t> truth;
};

// An abdomen on a 2 x 2 x 4 mm grid (200 x 200 x 55 voxels), not one the
// models were trained on (training seeds are far from this one).
const Abdomen& TestAbdomen() {
  static const Abdomen* abdomen = [] {
    const auto geometry = tools::GridFor({2.0, 2.0, 4.0}, {400, 400, 220});
    const auto phantom = tools::Rasterize(tools::RandomAnatomy(424242), geometry, 424242);
    auto* a = new Abdomen;
    a->volume.geometry = geometry;
    const auto hu = tools::ToInt16(phantom.hu);
    a->volume.voxels.assign(hu.begin(), hu.end());
    a->truth = phantom.labels;
    return a;
  }();
  return *abdomen;
}

class SegmentModesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = ParseConfig(ConfigText());
    ASSERT_TRUE(config.ok()) << config.status();
    auto server = Server::Create(*config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    client_ = client::Client::Connect("127.0.0.1:" + std::to_string(server_->port())).release();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
  }
  // A suite whose server did not start fails each test (gtest would skip them).
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the server did not start"; }
  // The abdomen as NIfTI in `mode` (and `labels`), raw labels back.
  static absl::StatusOr<client::SegmentResult> Run(unetrpp::v1::SpeedMode mode,
                                                   const std::vector<std::string>& labels = {},
                                                   const std::string& model = "") {
    SegmentOptions o;
    o.model = model;
    o.mode = mode;
    o.labels = labels;
    o.outputs = {unetrpp::v1::OUTPUT_KIND_RAW_LABELS};
    return client_->Segment({testing::FloatNifti(TestAbdomen().volume)}, o);
  }
  static std::vector<uint16_t> Raw(const client::SegmentResult& r) {
    return imageio::DecodeRawLabels(r.outputs.at(unetrpp::v1::OUTPUT_KIND_RAW_LABELS));
  }
  static double MeanOrganDice(const std::vector<uint16_t>& truth, const std::vector<uint16_t>& labels) {
    const auto dice = tools::DicePerLabel(truth, labels, tools::kNumPhantomClasses);
    double mean = 0;
    for (double d : dice) mean += d / static_cast<double>(dice.size());
    return mean;
  }
  static Server* server_;
  static client::Client* client_;
};
Server* SegmentModesTest::server_ = nullptr;
client::Client* SegmentModesTest::client_ = nullptr;

TEST_F(SegmentModesTest, EachModeRunsWhatItSaysAndSaysWhichItRan) {
  auto full = Run(unetrpp::v1::SPEED_MODE_UNSPECIFIED);  // the model's default: full
  ASSERT_TRUE(full.ok()) << full.status();
  auto fast = Run(unetrpp::v1::SPEED_MODE_FAST);
  ASSERT_TRUE(fast.ok()) << fast.status();
  auto fastest = Run(unetrpp::v1::SPEED_MODE_FASTEST);
  ASSERT_TRUE(fastest.ok()) << fastest.status();
  EXPECT_EQ(full->summary.mode(), unetrpp::v1::SPEED_MODE_FULL);
  EXPECT_EQ(fast->summary.mode(), unetrpp::v1::SPEED_MODE_FAST);
  EXPECT_EQ(fastest->summary.mode(), unetrpp::v1::SPEED_MODE_FASTEST);
  // fast: fewer windows of the same model, nearly the same labels.
  EXPECT_LT(fast->summary.windows() * 3, full->summary.windows() * 2) << fast->summary.ShortDebugString();
  const auto full_labels = Raw(*full), fast_labels = Raw(*fast), fastest_labels = Raw(*fastest);
  EXPECT_GT(tools::LabelAgreement(full_labels, fast_labels), 0.995);
  // fastest: the coarse model's answer, every label, on the input's grid.
  EXPECT_EQ(fastest_labels.size(), full_labels.size());
  EXPECT_EQ(fastest->header.labels_size(), tools::kNumPhantomClasses);
  const auto& truth = TestAbdomen().truth;
  EXPECT_GT(MeanOrganDice(truth, full_labels), 0.9);
  EXPECT_GT(MeanOrganDice(truth, fast_labels), 0.9);
  EXPECT_GT(MeanOrganDice(truth, fastest_labels), 0.85);
}

// The liver of a run: 1 where `labels` has `value`, else 0.
std::vector<uint16_t> Only(const std::vector<uint16_t>& labels, uint16_t value) {
  std::vector<uint16_t> out(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) out[i] = labels[i] == value;
  return out;
}

// In `full` mode a subset is located first, then only the whole run's
// windows around it run: its labels are the whole run's but where a window
// left out (inference::kSubsetWindowInset) tipped a voxel. In `fast` mode
// windows of its own tile the box: far fewer.
TEST_F(SegmentModesTest, ASubsetIsLocatedFirstAndReturnsOnlyItsLabels) {
  auto full = Run(unetrpp::v1::SPEED_MODE_FULL);
  ASSERT_TRUE(full.ok()) << full.status();
  auto liver = Run(unetrpp::v1::SPEED_MODE_FULL, {"liver"});
  ASSERT_TRUE(liver.ok()) << liver.status();
  const auto& s = liver->summary;
  EXPECT_GT(s.locator_windows(), 0u);
  EXPECT_LE(s.windows() - s.locator_windows(), full->summary.windows());
  // The response knows background and liver only.
  ASSERT_EQ(liver->header.labels_size(), 2);
  EXPECT_EQ(liver->header.labels(1).name(), "liver");
  std::set<uint32_t> volumes;
  for (const auto& v : liver->header.volumes()) volumes.insert(v.value());
  EXPECT_EQ(volumes, (std::set<uint32_t>{0, 1}));
  const auto subset = Raw(*liver), whole = Raw(*full);
  EXPECT_GE(tools::DicePerLabel(Only(whole, 1), Only(subset, 1), 2)[0], 0.995);  // issue 27's bound
  EXPECT_EQ(std::count_if(subset.begin(), subset.end(), [](uint16_t l) { return l > 1; }), 0);

  auto fast = Run(unetrpp::v1::SPEED_MODE_FAST);
  ASSERT_TRUE(fast.ok()) << fast.status();
  auto fast_liver = Run(unetrpp::v1::SPEED_MODE_FAST, {"liver"});
  ASSERT_TRUE(fast_liver.ok()) << fast_liver.status();
  const auto& f = fast_liver->summary;
  EXPECT_LT((f.windows() - f.locator_windows()) * 3, fast->summary.windows()) << f.ShortDebugString();
  EXPECT_EQ(f.windows_skipped_reason(), "outside the requested labels");
  EXPECT_GE(tools::DicePerLabel(Only(whole, 1), Raw(*fast_liver), 2)[0], 0.95);
}

TEST_F(SegmentModesTest, UnknownLabelsAndModesAModelCannotServeAreRefusedNamingThem) {
  auto r = Run(unetrpp::v1::SPEED_MODE_FULL, {"liver", "pancreas"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "\"pancreas\" is not a label")) << r.status();
  r = Run(unetrpp::v1::SPEED_MODE_FULL, {""});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = Run(unetrpp::v1::SPEED_MODE_FASTEST, {}, "alone");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "cannot serve mode fastest")) << r.status();
  // A subset on a model without a fastest one: the whole volume, its labels only.
  r = Run(unetrpp::v1::SPEED_MODE_FULL, {"spleen"}, "alone");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->summary.locator_windows(), 0u);
  EXPECT_EQ(r->header.labels_size(), 2);
}

// The SEG of a subset holds only its segments.
TEST_F(SegmentModesTest, ASubsetsSegHasOnlyItsSegments) {
  const Abdomen& a = TestAbdomen();
  std::vector<int16_t> hu(a.volume.voxels.begin(), a.volume.voxels.end());
  const auto series = tools::WriteCtSeries(a.volume.geometry, hu, 424242);
  SegmentOptions o;
  o.format = unetrpp::v1::INPUT_FORMAT_DICOM;
  o.outputs = {unetrpp::v1::OUTPUT_KIND_DICOM_SEG};
  o.labels = {"spleen", "liver"};
  auto r = client_->Segment(series, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto file = testing::ReadDicomBytes(r->outputs.at(unetrpp::v1::OUTPUT_KIND_DICOM_SEG));
  ASSERT_NE(file, nullptr);
  DcmSequenceOfItems* segments = testing::SegmentSequence(*file);
  ASSERT_NE(segments, nullptr);
  ASSERT_EQ(segments->card(), 2u);
  std::set<std::string> names;
  for (unsigned long i = 0; i < segments->card(); ++i) {
    OFString label;
    segments->getItem(i)->findAndGetOFString(DCM_SegmentLabel, label);
    names.insert(label.c_str());
  }
  EXPECT_EQ(names, (std::set<std::string>{"liver", "spleen"}));
}

}  // namespace
}  // namespace upp::server
