// The frame header (SOFn) of a JPEG (ISO 10918-1) or JPEG-LS (ISO 14495-1)
// codestream, read without decoding anything.
//
// Why this exists: DCMTK's JPEG and JPEG-LS decoders size their working
// buffers from the codestream's own frame header, not from the DICOM Rows and
// Columns, and offer no way to look at that header before decoding. A 7 KB
// progressive JPEG whose header claims 65000 x 65000 made the reader allocate
// 8 GiB and spend 34 s before failing. dicom.cc reads each frame's header
// with this and refuses a frame whose size or components differ from the
// DICOM header's, before DCMTK sees it.
//
// Threading: pure function.
#ifndef UPP_IMAGEIO_JPEG_HEADER_H_
#define UPP_IMAGEIO_JPEG_HEADER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace upp::imageio {

struct JpegFrameHeader {
  int marker = 0;     // 0xC0..0xCF (JPEG SOFn) or 0xF7 (JPEG-LS SOF55)
  int precision = 0;  // bits per sample
  int64_t rows = 0;   // Y; 0 means "defined later by a DNL marker"
  int64_t columns = 0;
  int components = 0;
};

// Walks the marker segments from SOI to the first frame header. Errors
// (INVALID_ARGUMENT): no SOI, a segment that runs past the data, no frame
// header before the first scan or the end.
absl::StatusOr<JpegFrameHeader> ReadJpegFrameHeader(std::string_view codestream);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_JPEG_HEADER_H_
