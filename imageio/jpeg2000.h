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

// Bounds on what OpenJPEG allocates while it reads a codestream's main
// header and sets up decoding (per tile, per resolution level), checked
// before it sees the codestream. A CT or MR frame is one tile (encoders'
// default) with 5 or 6 levels; 16 levels bring a 65,535-sample side to one.
inline constexpr int64_t kMaxJpeg2000Tiles = 1024;
inline constexpr int kMaxJpeg2000DecompositionLevels = 16;

// One frame: a J2K codestream (or a JP2 file, which some writers store
// instead). The codestream's main header is read first (jpeg2000_header.h)
// and checked before OpenJPEG sees it: one component (else UNIMPLEMENTED)
// of exactly `rows` x `cols`, at most 16 bits, at most kMaxJpeg2000Tiles
// tiles and kMaxJpeg2000DecompositionLevels levels, code-blocks within
// T.800's bounds, else INVALID_ARGUMENT naming what is out of bounds;
// corrupt data -> INVALID_ARGUMENT with OpenJPEG's reason.
absl::StatusOr<Jpeg2000Frame> DecodeJpeg2000Frame(const uint8_t* data, size_t size, int rows, int cols);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_JPEG2000_H_
