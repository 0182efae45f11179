// The main header of a JPEG 2000 codestream (ITU-T T.800 Annex A: SIZ, COD
// and COC), read without decoding anything, from a bare codestream or from
// the contiguous codestream box of a JP2 file (T.800 Annex I).
//
// Why this exists: OpenJPEG 2.5 allocates a tile-coding structure (several
// KB) per tile and per component while it reads the main header, inside
// opj_read_header, before its caller sees any size; its decoder parameters
// (opj_dparameters_t) bound neither tiles nor components (jpwl_max_tiles
// applies to JPWL builds only). An 82-byte codestream declaring 256 x 255
// pixels in 1 x 1 tiles (65,280 tiles) took 633 MB and 1.5 s there.
// jpeg2000.cc reads the header with this and refuses the frame, naming the
// bound, before OpenJPEG sees it.
//
// Threading: pure function.
#ifndef UPP_IMAGEIO_JPEG2000_HEADER_H_
#define UPP_IMAGEIO_JPEG2000_HEADER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace upp::imageio {

struct Jpeg2000Header {
  int64_t width = 0, height = 0;  // of the image area: Xsiz - XOsiz, Ysiz - YOsiz
  int64_t tiles = 0;              // tiles across x tiles down (what OpenJPEG allocates per)
  int components = 0;             // Csiz
  // Component 0: bits per sample, signedness, subsampling.
  int precision = 0;
  bool is_signed = false;
  int subsampling_x = 0, subsampling_y = 0;
  // The largest over COD and any COC of the main header.
  int decomposition_levels = 0;
  int code_block_width = 0, code_block_height = 0;  // samples
};

// Walks the main header from SOC to the first tile part (SOT). Errors
// (INVALID_ARGUMENT): no SOC and SIZ, a marker segment that runs past the
// data or is shorter than its content, a SIZ that T.800 forbids (empty image
// or tile, tile grid not covering the image, Csiz not 1..16384, zero
// subsampling), no COD before the first tile part, and a COD or COC outside
// T.800's ranges (more than 32 decomposition levels; code-blocks not 4..1024
// samples a side or above 4096 samples). A JP2 file without a codestream
// box, or whose boxes run past the data, likewise.
absl::StatusOr<Jpeg2000Header> ReadJpeg2000Header(std::string_view data);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_JPEG2000_HEADER_H_
