// libFuzzer target: a JPEG 2000 frame (codestream or JP2 file) through the
// header read that precedes OpenJPEG and, when the header passes, through
// OpenJPEG at the frame size the header declares, as a DICOM header of that
// size would ask, within the admission the server applies to such a frame.
// Run by deploy/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>

#include "imageio/checked_math.h"
#include "imageio/jpeg2000.h"
#include "imageio/jpeg2000_header.h"
#include "tests/fuzz/fuzz_admission.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = upp::imageio::ReadJpeg2000Header(bytes);
  if (!header.ok()) {
    if (header.status().message().empty()) std::abort();
    return 0;
  }
  if (header->width <= 0 || header->height <= 0 || header->tiles < 1 || header->components < 1) std::abort();
  // The DICOM header's Rows and Columns are 16-bit; the server admits the
  // frame (and the volume) before decoding.
  if (header->width > 65535 || header->height > 65535) return 0;
  if (!upp::fuzz::Admit(upp::imageio::OrMax(upp::imageio::CheckedProduct({header->width, header->height, 8}))).ok())
    return 0;
  const int rows = static_cast<int>(header->height), cols = static_cast<int>(header->width);
  auto frame = upp::imageio::DecodeJpeg2000Frame(data, size, rows, cols);
  if (frame.ok()) {
    if (frame->values.size() != static_cast<size_t>(rows) * static_cast<size_t>(cols)) std::abort();
    if (frame->precision < 1 || frame->precision > 16) std::abort();
  } else if (frame.status().message().empty()) {
    std::abort();
  }
  return 0;
}
