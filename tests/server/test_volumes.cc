#include "tests/server/test_volumes.h"

#include <arpa/inet.h>
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "imageio/dcmtk_io.h"
#include "imageio/file_util.h"
#include "preprocessing/plan.h"
#include "tests/testing/temp_path.h"
#include "tests/testing/volumes.h"

namespace upp::testing {

imageio::Volume Phantom(std::array<int64_t, 3> size, std::array<double, 3> spacing) {
  return VolumeFrom(size, spacing, [&](int64_t x, int64_t y, int64_t z) {
    const double u = (x - size[0] / 2.0) / (0.4 * size[0]), w = (y - size[1] / 2.0) / (0.3 * size[1]);
    const double r = u * u + w * w;
    return r < 1 ? (r < 0.2 ? 300.0f : 40.0f + 20.0f * static_cast<float>(std::sin(0.3 * z))) : -1000.0f;
  });
}

std::string FloatNifti(const imageio::Volume& v) {
  const auto& g = v.geometry;
  std::string b(352 + v.voxels.size() * 4, '\0');
  auto put = [&](size_t off, auto value) { std::memcpy(&b[off], &value, sizeof(value)); };
  put(0, int32_t{348});
  const int16_t dim[8] = {static_cast<int16_t>(v.channels > 1 ? 4 : 3),
                          static_cast<int16_t>(g.size[0]),
                          static_cast<int16_t>(g.size[1]),
                          static_cast<int16_t>(g.size[2]),
                          static_cast<int16_t>(v.channels),
                          1,
                          1,
                          1};
  std::memcpy(&b[40], dim, sizeof(dim));
  put(70, int16_t{16});  // float32
  put(72, int16_t{32});
  const float pixdim[8] = {
      1, static_cast<float>(g.spacing[0]), static_cast<float>(g.spacing[1]), static_cast<float>(g.spacing[2]), 1, 1, 1,
      1};
  std::memcpy(&b[76], pixdim, sizeof(pixdim));
  put(108, 352.0f);
  std::memcpy(&b[344], "n+1\0", 4);
  std::memcpy(&b[352], v.voxels.data(), v.voxels.size() * 4);
  return b;
}

std::vector<std::string> CtSeries(int slices, const SeriesIds& ids) {
  const auto read = imageio::ReadWholeFile("/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm");
  if (!read.ok()) return {};
  const std::string& bytes = *read;
  char series_uid[100], study_uid[100];
  dcmGenerateUniqueIdentifier(series_uid, SITE_SERIES_UID_ROOT);
  dcmGenerateUniqueIdentifier(study_uid, SITE_STUDY_UID_ROOT);
  if (!ids.series_uid.empty()) std::snprintf(series_uid, sizeof(series_uid), "%s", ids.series_uid.c_str());
  if (!ids.study_uid.empty()) std::snprintf(study_uid, sizeof(study_uid), "%s", ids.study_uid.c_str());
  std::vector<std::string> out;
  for (int s = 0; s < slices; ++s) {
    DcmFileFormat file;
    DcmInputBufferStream is;
    is.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
    is.setEos();
    file.transferInit();
    if (file.read(is).bad()) return {};
    file.transferEnd();
    DcmDataset* d = file.getDataset();
    char sop_uid[100];
    dcmGenerateUniqueIdentifier(sop_uid, SITE_INSTANCE_UID_ROOT);
    d->putAndInsertString(DCM_SOPInstanceUID, sop_uid);
    file.getMetaInfo()->putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop_uid);
    d->putAndInsertString(DCM_SeriesInstanceUID, series_uid);
    d->putAndInsertString(DCM_StudyInstanceUID, study_uid);
    if (!ids.patient_id.empty()) d->putAndInsertString(DCM_PatientID, ids.patient_id.c_str());
    if (!ids.modality.empty()) d->putAndInsertString(DCM_Modality, ids.modality.c_str());
    d->putAndInsertString(DCM_InstanceNumber, std::to_string(slices - s).c_str());  // not the order
    OFString position;
    d->findAndGetOFStringArray(DCM_ImagePositionPatient, position);
    double x = 0, y = 0, z = 0;
    std::sscanf(position.c_str(), "%lf\\%lf\\%lf", &x, &y, &z);
    char buf[128];
    std::snprintf(buf, sizeof(buf), "%.3f\\%.3f\\%.3f", x, y, z + 2.5 * s);
    d->putAndInsertString(DCM_ImagePositionPatient, buf);
    d->putAndInsertString(DCM_SliceThickness, "2.5");
    auto encoded = imageio::SerializeDicom(file);
    if (!encoded.ok()) return {};
    out.push_back(std::move(*encoded));
  }
  return out;
}

std::string SmallPlanFile(const std::string& name) {
  preprocessing::Plan plan = preprocessing::DefaultCtPlan(14, {32, 64, 64});
  plan.target_spacing = {2.0, 2.0, 2.0};
  const std::string path = upp::testing::UniqueTempPath(name);
  std::ofstream(path) << plan.ToJson();
  return path;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.compare(0, series.size(), series) == 0 && line.size() > series.size() && line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

grpc::Status SegmentRaw(unetrpp::v1::Segmentation::Stub& stub, grpc::ClientContext& context,
                        const std::vector<unetrpp::v1::SegmentRequest>& messages, bool writes_done,
                        unetrpp::v1::SegmentResponse* summary) {
  auto stream = stub.Segment(&context);
  for (const auto& m : messages)
    if (!stream->Write(m)) break;
  if (writes_done) stream->WritesDone();
  unetrpp::v1::SegmentResponse r;
  while (stream->Read(&r))
    if (summary && r.has_summary()) *summary = r;
  return stream->Finish();
}

}  // namespace upp::testing
