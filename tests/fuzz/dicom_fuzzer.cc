// libFuzzer target: the DICOM series assembler on arbitrary bytes. The input
// is split into up to 8 "files" at a 4-byte marker, so that grouping, sorting
// and spacing checks see several instances. Run by deploy/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "imageio/dicom.h"
#include "tests/fuzz/fuzz_admission.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  constexpr std::string_view kMarker("\xF0\x0D\xFE\xED", 4);
  std::vector<std::string_view> files;
  while (files.size() < 7) {
    const size_t at = all.find(kMarker);
    if (at == std::string_view::npos) break;
    files.push_back(all.substr(0, at));
    all.remove_prefix(at + kMarker.size());
  }
  files.push_back(all);
  upp::imageio::DicomSeriesOptions options;
  options.admit = upp::fuzz::AdmitSeries;  // production limits (fuzz_admission.h)
  upp::fuzz::Reservation reservation;      // deflated files, DCMTK's heap per element
  options.reserve = [&reservation](int64_t bytes) { return reservation.Add(bytes); };
  options.modalities.clear();  // any modality: reach the pixel decoding
  auto image = upp::imageio::ReadDicomSeries(files, options);
  if (image.ok()) {
    const auto& v = image->volume;
    if (!v.geometry.Validate().ok()) std::abort();
    if (static_cast<int64_t>(v.voxels.size()) != v.geometry.NumVoxels()) std::abort();
    if (static_cast<int64_t>(image->info.sop_instance_uids.size()) != v.geometry.size[2]) std::abort();
  } else if (image.status().message().empty()) {
    std::abort();
  }
  return 0;
}
