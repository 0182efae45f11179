// libFuzzer target: the NIfTI reader on arbitrary bytes (plain or gzip).
// Any crash, sanitizer report, or a result that breaks the reader's promises
// is a bug. Run by deploy/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "imageio/nifti.h"
#include "tests/fuzz/fuzz_admission.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  upp::imageio::NiftiReadOptions options;
  // Production limits (fuzz_admission.h).
  options.admit = [](const upp::imageio::Geometry&, int64_t, int64_t read_bytes) {
    return upp::fuzz::Admit(read_bytes);
  };
  auto image = upp::imageio::ReadNifti(std::string_view(reinterpret_cast<const char*>(data), size), options);
  if (image.ok()) {
    const auto& v = image->volume;
    if (!v.geometry.Validate().ok()) std::abort();
    if (static_cast<int64_t>(v.voxels.size()) != v.channels * v.geometry.NumVoxels()) std::abort();
    if (v.channels < 1 || static_cast<int64_t>(v.voxels.size()) > options.max_voxels) std::abort();
  } else if (image.status().message().empty()) {
    std::abort();  // every refusal says why
  }
  return 0;
}
