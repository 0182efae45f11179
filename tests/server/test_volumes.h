// Test inputs for the server tests: synthetic volumes as NIfTI bytes, a DICOM
// CT series made from pydicom's CT_small.dcm, and a tiny HTTP GET for /metrics.
#ifndef UPP_TESTS_SERVER_TEST_VOLUMES_H_
#define UPP_TESTS_SERVER_TEST_VOLUMES_H_

#include <grpcpp/grpcpp.h>

#include <array>
#include <string>
#include <vector>

#include "imageio/volume.h"
#include "unetrpp/v1/segmentation.grpc.pb.h"

namespace upp::testing {

// A CT-like ellipse of soft tissue with a bright core in air; size (x, y, z).
imageio::Volume Phantom(std::array<int64_t, 3> size, std::array<double, 3> spacing);
// NIfTI-1 float32, pixdim-only geometry (spacing), uncompressed; 4-D
// (x, y, z, channel) when the volume has several channels.
std::string FloatNifti(const imageio::Volume& volume);
// Who a test series belongs to: empty fields get fresh UIDs (study,
// series) or keep CT_small's PatientID.
struct SeriesIds {
  std::string study_uid, series_uid, patient_id;
  std::string modality;  // empty: CT_small's (CT)
};
// `slices` instances of one series (CT_small's pixels, positions 2.5 mm
// apart); empty when pydicom's test data is not installed.
std::vector<std::string> CtSeries(int slices, const SeriesIds& ids = {});
// The plan the server tests serve the synapse-small fixture with (14
// classes, 32 x 64 x 64 windows at 2 mm), as a JSON file named `name` in the
// test's temporary directory; its path.
std::string SmallPlanFile(const std::string& name);
// A TCP port free at the time of the call (civetweb, behind prometheus-cpp,
// cannot listen on port 0).
int FreePort();
// GET http://127.0.0.1:port/path; the body ("" on failure).
std::string HttpGet(int port, const std::string& path);
// Sends `messages` on a raw Segment stream (what the client library never
// would), half-closes when `writes_done`, reads every response (the summary
// into `summary`) and returns the final status.
grpc::Status SegmentRaw(unetrpp::v1::Segmentation::Stub& stub, grpc::ClientContext& context,
                        const std::vector<unetrpp::v1::SegmentRequest>& messages, bool writes_done = true,
                        unetrpp::v1::SegmentResponse* summary = nullptr);
// The value of the Prometheus series `name{labels}` in `text`; -1 if absent.
double MetricValue(const std::string& text, const std::string& series);

}  // namespace upp::testing

#endif  // UPP_TESTS_SERVER_TEST_VOLUMES_H_
