#include "imageio/jpeg2000.h"

#include <openjpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "imageio/jpeg2000_header.h"

namespace upp::imageio {
namespace {

// OpenJPEG reads through callbacks; this one serves a memory buffer.
struct Buffer {
  const uint8_t* data;
  size_t size, pos;
};

OPJ_SIZE_T Read(void* dst, OPJ_SIZE_T n, void* user) {
  auto* b = static_cast<Buffer*>(user);
  if (b->pos >= b->size) return static_cast<OPJ_SIZE_T>(-1);
  const size_t k = std::min<size_t>(n, b->size - b->pos);
  std::memcpy(dst, b->data + b->pos, k);
  b->pos += k;
  return k;
}

OPJ_OFF_T Skip(OPJ_OFF_T n, void* user) {
  auto* b = static_cast<Buffer*>(user);
  if (n < 0) {
    const size_t back = std::min<size_t>(static_cast<size_t>(-n), b->pos);
    b->pos -= back;
    return -static_cast<OPJ_OFF_T>(back);
  }
  const size_t k = std::min<size_t>(static_cast<size_t>(n), b->size - std::min(b->pos, b->size));
  b->pos += k;
  return static_cast<OPJ_OFF_T>(k);
}

OPJ_BOOL Seek(OPJ_OFF_T n, void* user) {
  auto* b = static_cast<Buffer*>(user);
  if (n < 0 || static_cast<size_t>(n) > b->size) return OPJ_FALSE;
  b->pos = static_cast<size_t>(n);
  return OPJ_TRUE;
}

void KeepError(const char* message, void* user) {
  std::string& s = *static_cast<std::string*>(user);
  s = message;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
}
void Ignore(const char*, void*) {}

// What the frame must be, from the codestream's header, as read before
// OpenJPEG sees it and as OpenJPEG read it (one component of the DICOM
// header's size, at most 16 bits, not subsampled).
struct FrameShape {
  int64_t width, height;
  int64_t components;
  int64_t precision, subsampling_x, subsampling_y;
};

absl::Status CheckShape(const FrameShape& f, int rows, int cols) {
  if (f.components != 1)
    return absl::UnimplementedError(
        absl::StrCat("JPEG 2000 frame with ", f.components, " components (grayscale only)"));
  if (f.width != cols || f.height != rows)
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG 2000 frame is ", f.width, " x ", f.height, ", the DICOM header says ", cols, " x ", rows));
  if (f.precision < 1 || f.precision > 16 || f.subsampling_x != 1 || f.subsampling_y != 1)
    return absl::UnimplementedError(absl::StrCat("JPEG 2000 frame with ", f.precision, "-bit or subsampled samples"));
  return absl::OkStatus();
}

// The header's shape and OpenJPEG's bounds, before OpenJPEG allocates.
absl::Status CheckHeader(const uint8_t* data, size_t size, int rows, int cols) {
  auto h = ReadJpeg2000Header(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!h.ok()) return h.status();
  if (auto s = CheckShape({h->width, h->height, h->components, h->precision, h->subsampling_x, h->subsampling_y}, rows,
                          cols);
      !s.ok())
    return s;
  if (h->tiles > kMaxJpeg2000Tiles)
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 frame in ", h->tiles, " tiles, over the limit of ",
                                                   kMaxJpeg2000Tiles, " (OpenJPEG allocates per tile)"));
  if (h->decomposition_levels > kMaxJpeg2000DecompositionLevels)
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 frame with ", h->decomposition_levels,
                                                   " decomposition levels, over the limit of ",
                                                   kMaxJpeg2000DecompositionLevels));
  return absl::OkStatus();
}

bool IsJp2File(const uint8_t* d, size_t n) {
  static constexpr uint8_t kSignature[] = {0, 0, 0, 0x0c, 'j', 'P', ' ', ' '};
  return n >= sizeof(kSignature) && std::memcmp(d, kSignature, sizeof(kSignature)) == 0;
}

}  // namespace

absl::StatusOr<Jpeg2000Frame> DecodeJpeg2000Frame(const uint8_t* data, size_t size, int rows, int cols) {
  if (auto s = CheckHeader(data, size, rows, cols); !s.ok()) return s;
  Buffer buffer{data, size, 0};
  std::unique_ptr<opj_stream_t, decltype(&opj_stream_destroy)> stream(opj_stream_create(1 << 16, OPJ_TRUE),
                                                                      &opj_stream_destroy);
  std::unique_ptr<opj_codec_t, decltype(&opj_destroy_codec)> codec(
      opj_create_decompress(IsJp2File(data, size) ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K), &opj_destroy_codec);
  if (!stream || !codec) return absl::ResourceExhaustedError("cannot create a JPEG 2000 decoder");
  opj_stream_set_user_data(stream.get(), &buffer, nullptr);
  opj_stream_set_user_data_length(stream.get(), size);
  opj_stream_set_read_function(stream.get(), &Read);
  opj_stream_set_skip_function(stream.get(), &Skip);
  opj_stream_set_seek_function(stream.get(), &Seek);
  std::string error = "unknown error";
  opj_set_error_handler(codec.get(), &KeepError, &error);
  opj_set_warning_handler(codec.get(), &Ignore, nullptr);
  opj_set_info_handler(codec.get(), &Ignore, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  if (!opj_setup_decoder(codec.get(), &parameters)) return absl::InternalError("JPEG 2000 decoder setup failed");

  opj_image_t* raw_image = nullptr;
  const bool header = opj_read_header(stream.get(), codec.get(), &raw_image);
  std::unique_ptr<opj_image_t, decltype(&opj_image_destroy)> image(raw_image, &opj_image_destroy);
  if (!header || !image) return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 header: ", error));
  // OpenJPEG's own reading, checked again before decoding: the header alone
  // decides what it allocates, and a JP2 file could describe its image
  // otherwise than the codestream read above.
  const opj_image_comp_t& header_comp = image->comps[0];
  if (auto s = CheckShape({static_cast<int64_t>(image->x1) - image->x0, static_cast<int64_t>(image->y1) - image->y0,
                           image->numcomps, header_comp.prec, header_comp.dx, header_comp.dy},
                          rows, cols);
      !s.ok())
    return s;
  if (!opj_decode(codec.get(), stream.get(), image.get()) || !opj_end_decompress(codec.get(), stream.get()))
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 data: ", error));
  // A JP2 palette turns one component into three while decoding.
  if (image->numcomps != 1)
    return absl::UnimplementedError("JPEG 2000 frame decodes to several components (palette; grayscale only)");
  const opj_image_comp_t& comp = image->comps[0];
  if (comp.data == nullptr || static_cast<int64_t>(comp.w) != cols || static_cast<int64_t>(comp.h) != rows)
    return absl::InvalidArgumentError("JPEG 2000 frame decoded to an unexpected size");
  Jpeg2000Frame frame;
  frame.values.assign(comp.data, comp.data + static_cast<size_t>(rows) * cols);
  frame.is_signed = comp.sgnd != 0;
  frame.precision = static_cast<int>(comp.prec);
  return frame;
}

}  // namespace upp::imageio
