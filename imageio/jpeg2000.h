// JPEG 2000 decoding of grayscale DICOM frames through OpenJPEG (DCMTK's
// free edition has no JPEG 2000 codec). Internal to imageio/: dicom.cc calls
// it for the transfer syntaxes 1.2.840.10008.1.2.4.90 / .91.
//
// Threading: pure function; OpenJPEG keeps no global state.
#ifndef UPP_IMAGEIO_JPEG2000_H_
#define UPP_IMAGEIO_JPEG2000_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace upp::imageio {

struct Jpeg2000Frame {
  std::vector<int32_t> values;  // rows x cols, row by row
  bool is_signed = false;       // the codestream's own signedness
  int precision = 0;            // bits per sample in the codestream
};

// One frame: a J2K codestream (or a JP2 file, which some writers store
// instead). The codestream's header is checked before anything is decoded:
// one component of exactly `rows` x `cols`, at most 16 bits, else
// INVALID_ARGUMENT; corrupt data -> INVALID_ARGUMENT with OpenJPEG's reason.
absl::StatusOr<Jpeg2000Frame> DecodeJpeg2000Frame(const uint8_t* data, size_t size, int rows, int cols);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_JPEG2000_H_
