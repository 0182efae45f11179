#include "imageio/nifti.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "imageio/file_util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the NIfTI writer assumes a little-endian host"
#endif

namespace upp::imageio {
namespace {

constexpr size_t kNifti1HeaderSize = 348;
constexpr size_t kNifti2HeaderSize = 540;

// Deflate's largest expansion (a run of one byte): 258 bytes per 2 bits,
// 1032:1.
constexpr uint64_t kMaxDeflateRatio = 1032;

bool IsGzip(std::string_view b) {
  return b.size() >= 2 && static_cast<uint8_t>(b[0]) == 0x1f && static_cast<uint8_t>(b[1]) == 0x8b;
}

absl::Status CheckCancelled(const std::function<bool()>& cancelled) {
  if (cancelled && cancelled())
    return absl::CancelledError("the request ended while its NIfTI input was being decoded");
  return absl::OkStatus();
}

// Inflates at most `limit` bytes of a gzip file (fewer if it ends first),
// with zlib's streaming inflater: any gzip file, read only as far as needed,
// at most kNiftiChunkBytes per step, `cancelled` asked before each.
absl::StatusOr<std::string> InflateStreaming(std::string_view in, size_t limit, bool verify,
                                             const std::function<bool()>& cancelled) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) return absl::InternalError("zlib init failed");
  const auto stop_if_cancelled = [&]() -> absl::Status {
    absl::Status s = CheckCancelled(cancelled);
    if (!s.ok()) inflateEnd(&zs);
    return s;
  };
  std::string out;
  out.resize(std::min<size_t>(limit, 1 << 20));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), std::numeric_limits<uInt>::max()));
  size_t produced = 0;
  int rc = Z_OK;
  while (produced < limit) {
    if (produced == out.size()) out.resize(std::min(limit, out.size() * 2));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - produced, kNiftiChunkBytes));
    if (auto s = stop_if_cancelled(); !s.ok()) return s;
    const uInt before = zs.avail_out;
    rc = inflate(&zs, Z_NO_FLUSH);
    produced += before - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // A gzip file may hold several members, one after another (RFC 1952
      // 2.2; gzip and nibabel read them all).
      if (zs.avail_in == 0 || inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // a cut file: the caller says "truncated"
    if (rc != Z_OK) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError("corrupt gzip data in the NIfTI file");
    }
    if (zs.avail_in == 0 && before == zs.avail_out) break;  // input exhausted
  }
  if (verify && produced == limit && rc != Z_STREAM_END) {
    // Past the image, inflate on to the member's end (into a scratch buffer,
    // at most 64 MiB more) so that zlib checks the CRC-32: damaged data can
    // still decode to a whole image.
    if (auto s = stop_if_cancelled(); !s.ok()) return s;  // one chunk more
    std::string scratch(1 << 20, '\0');
    for (size_t extra = 0; extra < (size_t{64} << 20);) {
      zs.next_out = reinterpret_cast<Bytef*>(scratch.data());
      zs.avail_out = static_cast<uInt>(scratch.size());
      rc = inflate(&zs, Z_NO_FLUSH);
      extra += scratch.size() - zs.avail_out;
      if (rc == Z_STREAM_END || (rc == Z_BUF_ERROR && zs.avail_in == 0)) break;
      if (rc != Z_OK) {
        inflateEnd(&zs);
        return absl::InvalidArgumentError("corrupt gzip data in the NIfTI file (checksum or code)");
      }
    }
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

// The same, for a whole image whose size the header gave: libdeflate's
// whole-buffer inflater is about twice as fast as zlib's (0.22 s instead of
// 0.49 s for a 512 x 512 x 120 int16 CT here). It needs the output size up
// front and decodes one gzip member completely, so anything unusual (several
// members, data beyond the image, a truncated or corrupt stream) goes to the
// streaming path, which gives the usual answers. Both check the CRC-32 of
// the member holding the image's end, except when more than 64 MiB of that
// member follow the image or the file is cut after the image (the image is
// then taken as it is).
// A read that can be cancelled and holds more than one chunk goes the
// streaming way too (libdeflate cannot stop half-way).
absl::StatusOr<std::string> Inflate(std::string_view in, size_t limit, const std::function<bool()>& cancelled) {
  // The whole-buffer path allocates `limit` up front; a header may promise
  // more than the compressed bytes can hold (deflate expands at most
  // kMaxDeflateRatio:1), which the streaming path only finds out gradually.
  if (limit < (size_t{1} << 20) || limit / kMaxDeflateRatio > in.size() + 1024 ||
      (cancelled && limit > static_cast<size_t>(kNiftiChunkBytes)))
    return InflateStreaming(in, limit, /*verify=*/false, cancelled);
  if (auto s = CheckCancelled(cancelled); !s.ok()) return s;
  std::unique_ptr<libdeflate_decompressor, decltype(&libdeflate_free_decompressor)> d(libdeflate_alloc_decompressor(),
                                                                                      &libdeflate_free_decompressor);
  if (!d) return absl::ResourceExhaustedError("cannot allocate a gzip decompressor");
  std::string out(limit, '\0');
  size_t in_used = 0, produced = 0;
  const libdeflate_result rc =
      libdeflate_gzip_decompress_ex(d.get(), in.data(), in.size(), out.data(), out.size(), &in_used, &produced);
  if (rc == LIBDEFLATE_SUCCESS && (produced == limit || in_used == in.size())) {
    out.resize(produced);
    return out;
  }
  std::string().swap(out);
  return InflateStreaming(in, limit, /*verify=*/true, cancelled);
}

class HeaderReader {
 public:
  HeaderReader(std::string_view b, bool swap) : b_(b), swap_(swap) {}
  template <typename T>
  T Get(size_t offset) const {
    T v;
    std::memcpy(&v, b_.data() + offset, sizeof(T));
    if (swap_) Swap(&v);
    return v;
  }
  template <typename T>
  static void Swap(T* v) {
    auto* p = reinterpret_cast<unsigned char*>(v);
    for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(p[i], p[sizeof(T) - 1 - i]);
  }

 private:
  std::string_view b_;
  bool swap_;
};

struct Header {
  int version = 1;
  bool swap = false;
  int datatype = 0, bitpix = 0;
  int64_t dim[8] = {};
  double pixdim[8] = {};
  int64_t vox_offset = 0;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0, xyzt_units = 0;
  double quatern[3] = {}, qoffset[3] = {};
  double srow[3][4] = {};
};

// Where the fields lie in each version. NIfTI-2 holds the same fields as
// NIfTI-1, moved and widened (int16 -> int64 dimensions, float -> double
// reals, int16 -> int32 codes), so one reader serves both with these offsets
// and the widths as template arguments.
struct FieldOffsets {
  size_t dim, datatype, bitpix, pixdim, vox_offset, scl_slope, scl_inter, qform_code, sform_code, quatern, qoffset,
      srow, xyzt_units;
};
constexpr FieldOffsets kNifti1Fields{40, 70, 72, 76, 108, 112, 116, 252, 254, 256, 268, 280, 123};
constexpr FieldOffsets kNifti2Fields{16, 12, 14, 104, 168, 176, 184, 344, 348, 352, 376, 400, 500};

template <typename Dim, typename Real, typename Offset, typename Code, typename Units>
absl::Status ReadFields(const HeaderReader& r, const FieldOffsets& at, Header& h) {
  for (int i = 0; i < 8; ++i) h.dim[i] = r.Get<Dim>(at.dim + sizeof(Dim) * i);
  h.datatype = r.Get<int16_t>(at.datatype);
  h.bitpix = r.Get<int16_t>(at.bitpix);
  for (int i = 0; i < 8; ++i) h.pixdim[i] = r.Get<Real>(at.pixdim + sizeof(Real) * i);
  // NIfTI-1 stores the offset as a float: bounded before the conversion,
  // which is undefined for values out of range.
  const double vox = static_cast<double>(r.Get<Offset>(at.vox_offset));
  if (!std::isfinite(vox) || vox < 0 || vox > 1e9) return absl::InvalidArgumentError("NIfTI vox_offset is invalid");
  h.vox_offset = static_cast<int64_t>(vox);
  h.scl_slope = r.Get<Real>(at.scl_slope);
  h.scl_inter = r.Get<Real>(at.scl_inter);
  h.qform_code = r.Get<Code>(at.qform_code);
  h.sform_code = r.Get<Code>(at.sform_code);
  for (int i = 0; i < 3; ++i) h.quatern[i] = r.Get<Real>(at.quatern + sizeof(Real) * i);
  for (int i = 0; i < 3; ++i) h.qoffset[i] = r.Get<Real>(at.qoffset + sizeof(Real) * i);
  for (int row = 0; row < 3; ++row) {
    for (int c = 0; c < 4; ++c) h.srow[row][c] = r.Get<Real>(at.srow + sizeof(Real) * (4 * row + c));
  }
  h.xyzt_units = r.Get<Units>(at.xyzt_units);
  return absl::OkStatus();
}

absl::StatusOr<Header> ParseHeader(std::string_view b) {
  if (b.size() < kNifti1HeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a NIfTI file: ", b.size(), " bytes, shorter than a NIfTI-1 header"));
  }
  Header h;
  int32_t sizeof_hdr;
  std::memcpy(&sizeof_hdr, b.data(), 4);
  if (sizeof_hdr == 348 || sizeof_hdr == 540) {
    h.swap = false;
  } else {
    HeaderReader::Swap(&sizeof_hdr);
    if (sizeof_hdr != 348 && sizeof_hdr != 540) {
      return absl::InvalidArgumentError("not a NIfTI file (header size is neither 348 nor 540)");
    }
    h.swap = true;
  }
  h.version = sizeof_hdr == 348 ? 1 : 2;
  HeaderReader r(b, h.swap);
  if (h.version == 1) {
    if (std::memcmp(b.data() + 344, "n+1", 4) != 0) {
      return absl::InvalidArgumentError(
          std::memcmp(b.data() + 344, "ni1", 4) == 0
              ? "NIfTI header/image pairs (.hdr/.img) are not supported; send a single .nii"
              : "not a NIfTI-1 file (bad magic)");
    }
    if (auto s = ReadFields<int16_t, float, float, int16_t, uint8_t>(r, kNifti1Fields, h); !s.ok()) return s;
    return h;
  }
  if (b.size() < kNifti2HeaderSize) return absl::InvalidArgumentError("truncated NIfTI-2 header");
  if (std::memcmp(b.data() + 4, "n+2", 4) != 0) {
    return absl::InvalidArgumentError("not a single-file NIfTI-2 image (bad magic)");
  }
  if (auto s = ReadFields<int64_t, double, int64_t, int32_t, int32_t>(r, kNifti2Fields, h); !s.ok()) return s;
  return h;
}

int BytesPerVoxel(int datatype) {
  switch (datatype) {
    case 2:
    case 256: return 1;  // uint8, int8
    case 4:
    case 512: return 2;  // int16, uint16
    case 8:
    case 768:
    case 16: return 4;  // int32, uint32, float32
    case 64:
    case 1024:
    case 1280: return 8;  // float64, int64, uint64
    default: return 0;
  }
}

template <typename T>
void Convert(const char* src, int64_t n, bool swap, double slope, double inter, float* dst) {
  const bool scale = slope != 0 && std::isfinite(slope) && std::isfinite(inter) && !(slope == 1 && inter == 0);
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    if (swap) HeaderReader::Swap(&v);
    const double d = static_cast<double>(v);
    dst[i] = static_cast<float>(scale ? d * slope + inter : d);
  }
}

// NIfTI affine (RAS, index -> mm) to LPS geometry.
absl::Status SetGeometry(const Header& h, Geometry* g) {
  double a[3][4];
  if (h.sform_code > 0) {
    std::memcpy(a, h.srow, sizeof(a));
  } else if (h.qform_code > 0) {
    const double b = h.quatern[0], c = h.quatern[1], d = h.quatern[2];
    const double aa = std::sqrt(std::max(0.0, 1.0 - (b * b + c * c + d * d)));
    const double r[3][3] = {{aa * aa + b * b - c * c - d * d, 2 * (b * c - aa * d), 2 * (b * d + aa * c)},
                            {2 * (b * c + aa * d), aa * aa + c * c - b * b - d * d, 2 * (c * d - aa * b)},
                            {2 * (b * d - aa * c), 2 * (c * d + aa * b), aa * aa + d * d - c * c - b * b}};
    const double qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
    const double s[3] = {h.pixdim[1], h.pixdim[2], h.pixdim[3] * qfac};
    for (int row = 0; row < 3; ++row) {
      for (int col = 0; col < 3; ++col) a[row][col] = r[row][col] * s[col];
      a[row][3] = h.qoffset[row];
    }
  } else {
    // Method 1 of the standard: pixdim scaling only, no orientation.
    for (int row = 0; row < 3; ++row) {
      for (int col = 0; col < 4; ++col) a[row][col] = row == col ? h.pixdim[row + 1] : 0.0;
    }
  }
  for (int col = 0; col < 3; ++col) {
    double norm = 0;
    for (int row = 0; row < 3; ++row) norm += a[row][col] * a[row][col];
    norm = std::sqrt(norm);
    g->spacing[col] = norm;
    for (int row = 0; row < 3; ++row) {
      // RAS -> LPS: negate the x and y rows.
      const double sign = row < 2 ? -1.0 : 1.0;
      g->direction[row * 3 + col] = norm > 0 ? sign * a[row][col] / norm : 0.0;
    }
  }
  for (int row = 0; row < 3; ++row) g->origin[row] = (row < 2 ? -1.0 : 1.0) * a[row][3];
  return g->Validate();
}

}  // namespace

// Admission before inflating: the image's geometry and what reading it will
// allocate (the inflated bytes and the float volume).
absl::Status AdmitBeforeInflating(const Header& h, int64_t n, int bpv, const NiftiReadOptions& options) {
  Geometry g;
  for (int i = 0; i < 3; ++i) g.size[i] = std::max<int64_t>(h.dim[0] > i ? h.dim[i + 1] : 1, 1);
  if (auto s = SetGeometry(h, &g); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("NIfTI orientation: ", s.message()));
  const int64_t channels = h.dim[0] > 3 ? std::max<int64_t>(h.dim[4], 1) : 1;
  const int64_t read_bytes = std::max<int64_t>(h.vox_offset, 544) + n * bpv + n * 4;
  return options.admit(g, channels, read_bytes);
}

// A .nii.gz: the header inflated first; then, after admission, only what the
// header says the image needs (never more than the compressed bytes can
// hold). A header that fails its checks comes back alone, for ReadNifti's
// checks to report.
absl::StatusOr<std::string> InflateNifti(std::string_view bytes, const NiftiReadOptions& options, bool* admitted) {
  auto head = Inflate(bytes, kNifti2HeaderSize, options.cancelled);
  if (!head.ok()) return head.status();
  auto h = ParseHeader(*head);
  if (!h.ok()) return h.status();
  // Only inflate what the header says the image needs (bounded below),
  // and never more than the compressed bytes can hold.
  int64_t n = 1;
  for (int i = 1; i <= std::clamp<int64_t>(h->dim[0], 1, 7); ++i) {
    const int64_t d = std::max<int64_t>(h->dim[i], 1);
    if (d > options.max_voxels || n > options.max_voxels / d) {
      n = options.max_voxels + 1;  // refused below, without overflow
      break;
    }
    n *= d;
  }
  const int bpv = BytesPerVoxel(h->datatype);
  const int64_t max_inflated = static_cast<int64_t>(
      std::min<uint64_t>(static_cast<uint64_t>(bytes.size()) * kMaxDeflateRatio + 1024, uint64_t{1} << 62));
  if (n > options.max_voxels || bpv == 0 || h->vox_offset < 0 || h->vox_offset > max_inflated)
    return std::move(*head);  // the header alone: ReadNifti's checks report the problem
  if (options.admit) {
    if (auto s = AdmitBeforeInflating(*h, n, bpv, options); !s.ok()) return s;
    *admitted = true;
  }
  return Inflate(bytes, static_cast<size_t>(std::max<int64_t>(h->vox_offset, 544) + n * bpv), options.cancelled);
}

// dim[] checked (1..7 dimensions, >= 1 each, at most 4 used) and the voxel
// count bounded before any allocation, without overflow.
absl::Status CheckDimensions(const Header& h, const NiftiReadOptions& options, std::array<int64_t, 4>& size,
                             int64_t* voxels_out) {
  const int64_t ndim = h.dim[0];
  if (ndim < 1 || ndim > 7) {
    return absl::InvalidArgumentError(absl::StrCat("NIfTI dim[0] must be 1..7, got ", ndim));
  }
  for (int i = 1; i <= ndim; ++i) {
    if (h.dim[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("NIfTI dim[", i, "] = ", h.dim[i], " (must be >= 1)"));
    }
  }
  for (int i = 5; i <= ndim; ++i) {
    if (h.dim[i] > 1) {
      return absl::UnimplementedError("NIfTI images with more than 4 dimensions are not supported");
    }
  }
  for (int i = 0; i < 4 && i < ndim; ++i) size[i] = h.dim[i + 1];
  // Bound the voxel count before any allocation, without overflow.
  int64_t voxels = 1;
  for (int64_t s : size) {
    if (s > options.max_voxels || voxels > options.max_voxels / s) {
      return absl::ResourceExhaustedError(
          absl::StrCat("NIfTI image has more than the configured limit of ", options.max_voxels, " voxels"));
    }
    voxels *= s;
  }
  *voxels_out = voxels;
  return absl::OkStatus();
}

void ConvertChunk(const Header& h, const char* src, int64_t voxels, float* dst) {
  const bool sw = h.swap;
  switch (h.datatype) {
    case 2: Convert<uint8_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 256: Convert<int8_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 4: Convert<int16_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 512: Convert<uint16_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 8: Convert<int32_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 768: Convert<uint32_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 16: Convert<float>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 64: Convert<double>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 1024: Convert<int64_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
    case 1280: Convert<uint64_t>(src, voxels, sw, h.scl_slope, h.scl_inter, dst); break;
  }
}

// In chunks of kNiftiChunkBytes of floats, `cancelled` asked before each.
absl::Status ConvertVoxels(const Header& h, const char* src, int64_t voxels, float* dst,
                           const std::function<bool()>& cancelled) {
  constexpr int64_t kChunkVoxels = kNiftiChunkBytes / static_cast<int64_t>(sizeof(float));
  const int64_t bpv = BytesPerVoxel(h.datatype);
  for (int64_t first = 0; first < voxels; first += kChunkVoxels) {
    if (auto s = CheckCancelled(cancelled); !s.ok()) return s;
    ConvertChunk(h, src + first * bpv, std::min(kChunkVoxels, voxels - first), dst + first);
  }
  return absl::OkStatus();
}

absl::StatusOr<NiftiImage> ReadNifti(std::string_view bytes, const NiftiReadOptions& options) {
  bool admitted = false;  // options.admit called (before inflating)
  std::string inflated;
  std::string_view b = bytes;
  if (IsGzip(bytes)) {
    auto all = InflateNifti(bytes, options, &admitted);
    if (!all.ok()) return all.status();
    inflated = std::move(*all);
    b = inflated;
  }
  auto parsed = ParseHeader(b);
  if (!parsed.ok()) return parsed.status();
  const Header& h = *parsed;
  const int bpv = BytesPerVoxel(h.datatype);
  std::array<int64_t, 4> size{1, 1, 1, 1};
  int64_t voxels = 0;
  if (auto s = CheckDimensions(h, options, size, &voxels); !s.ok()) return s;
  if (bpv == 0) {
    return absl::UnimplementedError(
        absl::StrCat("NIfTI datatype ", h.datatype, " is not supported (integer and real scalar types are)"));
  }
  const int64_t data_bytes = voxels * bpv;
  const int64_t min_offset = h.version == 1 ? 352 : 544;
  const int64_t offset = std::max(h.vox_offset, min_offset);
  if (offset > static_cast<int64_t>(b.size()) || data_bytes > static_cast<int64_t>(b.size()) - offset) {
    return absl::InvalidArgumentError(absl::StrCat("NIfTI file is truncated: the header promises ", data_bytes,
                                                   " bytes of voxels at offset ", offset, ", the file has ", b.size(),
                                                   " bytes"));
  }

  NiftiImage out;
  Geometry& g = out.volume.geometry;
  g.size = {size[0], size[1], size[2]};
  if (auto s = SetGeometry(h, &g); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("NIfTI orientation: ", s.message()));
  }
  out.volume.channels = size[3];
  if (options.admit && !admitted)
    if (auto s = options.admit(g, size[3], voxels * 4); !s.ok()) return s;
  out.volume.voxels.resize(static_cast<size_t>(voxels));
  if (auto s = ConvertVoxels(h, b.data() + offset, voxels, out.volume.voxels.data(), options.cancelled); !s.ok())
    return s;
  out.header = {h.version, h.datatype, h.qform_code, h.sform_code, h.xyzt_units, h.swap};
  return out;
}

namespace {

// gzip at level 6 (zlib's default) with libdeflate's whole-buffer
// compressor: smaller and about 3x faster than zlib's on label maps.
absl::StatusOr<std::string> Deflate(const std::string& in) {
  std::unique_ptr<libdeflate_compressor, decltype(&libdeflate_free_compressor)> c(libdeflate_alloc_compressor(6),
                                                                                  &libdeflate_free_compressor);
  if (!c) return absl::ResourceExhaustedError("cannot allocate a gzip compressor");
  std::string out(libdeflate_gzip_compress_bound(c.get(), in.size()), '\0');
  const size_t n = libdeflate_gzip_compress(c.get(), in.data(), in.size(), out.data(), out.size());
  if (n == 0) return absl::InternalError("gzip output larger than libdeflate's bound");
  out.resize(n);
  return out;
}

// Quaternion (b, c, d) and qfac of a 3x3 rotation-or-reflection R (the
// standard's nifti_mat44_to_quatern for an orthonormal matrix).
void RotationToQuaternion(double r[3][3], double q[3], double* qfac) {
  const double det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) -
                     r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
                     r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
  *qfac = det < 0 ? -1.0 : 1.0;
  if (det < 0) {
    for (int i = 0; i < 3; ++i) r[i][2] = -r[i][2];
  }
  double a = r[0][0] + r[1][1] + r[2][2] + 1.0, b, c, d;
  if (a > 0.5) {
    a = 0.5 * std::sqrt(a);
    b = 0.25 * (r[2][1] - r[1][2]) / a;
    c = 0.25 * (r[0][2] - r[2][0]) / a;
    d = 0.25 * (r[1][0] - r[0][1]) / a;
  } else {
    const double xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
    const double yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
    const double zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
    if (xd > 1.0) {
      b = 0.5 * std::sqrt(xd);
      c = 0.25 * (r[0][1] + r[1][0]) / b;
      d = 0.25 * (r[0][2] + r[2][0]) / b;
      a = 0.25 * (r[2][1] - r[1][2]) / b;
    } else if (yd > 1.0) {
      c = 0.5 * std::sqrt(yd);
      b = 0.25 * (r[0][1] + r[1][0]) / c;
      d = 0.25 * (r[1][2] + r[2][1]) / c;
      a = 0.25 * (r[0][2] - r[2][0]) / c;
    } else {
      d = 0.5 * std::sqrt(zd);
      b = 0.25 * (r[0][2] + r[2][0]) / d;
      c = 0.25 * (r[1][2] + r[2][1]) / d;
      a = 0.25 * (r[1][0] - r[0][1]) / d;
    }
    if (a < 0.0) {
      b = -b;
      c = -c;
      d = -d;
    }
  }
  q[0] = b;
  q[1] = c;
  q[2] = d;
}

template <typename T>
void PutField(std::string& h, size_t offset, T v) {
  std::memcpy(&h[offset], &v, sizeof(T));
}

}  // namespace

namespace {

// The header of a 3-D NIfTI file with exactly `geometry` (sform and qform
// both written, LPS converted back to RAS, codes of `like`); NIfTI-2 only when
// a dimension exceeds NIfTI-1's 32767.
std::string NiftiHeader(const Geometry& geometry, const NiftiHeaderInfo& like, int16_t datatype, int16_t bitpix,
                        int16_t intent, double cal_max, const char* description) {
  const bool v2 = *std::max_element(geometry.size.begin(), geometry.size.end()) > 32767;
  // RAS affine: diag(-1, -1, 1) * [direction * diag(spacing) | origin].
  double affine[3][4], rot[3][3];
  for (int row = 0; row < 3; ++row) {
    const double flip = row < 2 ? -1.0 : 1.0;
    for (int col = 0; col < 3; ++col) {
      rot[row][col] = flip * geometry.Direction(row, col);
      affine[row][col] = rot[row][col] * geometry.spacing[col];
    }
    affine[row][3] = flip * geometry.origin[row];
  }
  double quat[3], qfac;
  RotationToQuaternion(rot, quat, &qfac);
  const int qform_code = like.qform_code, sform_code = like.sform_code;
  const size_t description_length = std::min<size_t>(std::strlen(description), 79);

  std::string h;
  if (!v2) {
    h.assign(352, '\0');
    PutField<int32_t>(h, 0, 348);
    PutField<int16_t>(h, 40, 3);
    for (int i = 0; i < 3; ++i) PutField<int16_t>(h, 42 + 2 * i, static_cast<int16_t>(geometry.size[i]));
    for (int i = 3; i < 7; ++i) PutField<int16_t>(h, 42 + 2 * i, 1);
    PutField<int16_t>(h, 68, intent);
    PutField<int16_t>(h, 70, datatype);
    PutField<int16_t>(h, 72, bitpix);
    PutField<float>(h, 76, static_cast<float>(qfac));
    for (int i = 0; i < 3; ++i) PutField<float>(h, 80 + 4 * i, static_cast<float>(geometry.spacing[i]));
    PutField<float>(h, 108, 352.0f);
    PutField<float>(h, 124, static_cast<float>(cal_max));
    PutField<uint8_t>(h, 123, static_cast<uint8_t>(like.xyzt_units ? like.xyzt_units : 2));
    std::memcpy(&h[148], description, description_length);
    PutField<int16_t>(h, 252, static_cast<int16_t>(qform_code));
    PutField<int16_t>(h, 254, static_cast<int16_t>(sform_code));
    for (int i = 0; i < 3; ++i) PutField<float>(h, 256 + 4 * i, static_cast<float>(quat[i]));
    for (int i = 0; i < 3; ++i) PutField<float>(h, 268 + 4 * i, static_cast<float>(affine[i][3]));
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) PutField<float>(h, 280 + 16 * r + 4 * c, static_cast<float>(affine[r][c]));
    }
    std::memcpy(&h[344], "n+1", 4);
  } else {
    h.assign(544, '\0');
    PutField<int32_t>(h, 0, 540);
    std::memcpy(&h[4], "n+2\0\r\n\032\n", 8);
    PutField<int16_t>(h, 12, datatype);
    PutField<int16_t>(h, 14, bitpix);
    PutField<int64_t>(h, 16, 3);
    for (int i = 0; i < 3; ++i) PutField<int64_t>(h, 24 + 8 * i, geometry.size[i]);
    for (int i = 3; i < 7; ++i) PutField<int64_t>(h, 24 + 8 * i, 1);
    PutField<double>(h, 104, qfac);
    for (int i = 0; i < 3; ++i) PutField<double>(h, 112 + 8 * i, geometry.spacing[i]);
    PutField<int64_t>(h, 168, 544);
    PutField<double>(h, 192, cal_max);
    std::memcpy(&h[240], description, description_length);
    PutField<int32_t>(h, 344, qform_code);
    PutField<int32_t>(h, 348, sform_code);
    for (int i = 0; i < 3; ++i) PutField<double>(h, 352 + 8 * i, quat[i]);
    for (int i = 0; i < 3; ++i) PutField<double>(h, 376 + 8 * i, affine[i][3]);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) PutField<double>(h, 400 + 32 * r + 8 * c, affine[r][c]);
    }
    PutField<int32_t>(h, 500, like.xyzt_units ? like.xyzt_units : 2);
    PutField<int32_t>(h, 504, intent);
  }
  return h;
}

}  // namespace

absl::StatusOr<std::string> WriteNiftiLabels(const Geometry& geometry, const std::vector<uint16_t>& labels,
                                             const NiftiHeaderInfo& like) {
  if (auto s = geometry.Validate(); !s.ok()) return s;
  if (static_cast<int64_t>(labels.size()) != geometry.NumVoxels()) {
    return absl::InvalidArgumentError(
        absl::StrCat("label map has ", labels.size(), " voxels, the geometry ", geometry.NumVoxels()));
  }
  uint16_t max_label = 0;
  for (uint16_t l : labels) max_label = std::max(max_label, l);
  const bool wide = max_label > 255;
  std::string body = NiftiHeader(geometry, like, wide ? 512 : 2, wide ? 16 : 8, /*NIFTI_INTENT_LABEL*/ 1002, max_label,
                                 "unetrpp-serve label map");
  const size_t header_size = body.size();
  body.resize(header_size + labels.size() * (wide ? 2 : 1));
  char* dst = body.data() + header_size;
  if (wide) {
    std::memcpy(dst, labels.data(), labels.size() * 2);  // little endian host
  } else {
    for (size_t i = 0; i < labels.size(); ++i) dst[i] = static_cast<char>(labels[i]);
  }
  return Deflate(body);
}

absl::StatusOr<std::string> WriteNiftiInt16(const Geometry& geometry, const std::vector<int16_t>& voxels,
                                            const NiftiHeaderInfo& like, const std::string& description) {
  if (auto s = geometry.Validate(); !s.ok()) return s;
  if (static_cast<int64_t>(voxels.size()) != geometry.NumVoxels())
    return absl::InvalidArgumentError(
        absl::StrCat("image has ", voxels.size(), " voxels, the geometry ", geometry.NumVoxels()));
  std::string body = NiftiHeader(geometry, like, /*DT_INT16*/ 4, 16, 0, 0, description.c_str());
  const size_t header_size = body.size();
  body.resize(header_size + voxels.size() * 2);
  std::memcpy(body.data() + header_size, voxels.data(), voxels.size() * 2);  // little endian host
  return Deflate(body);
}

absl::StatusOr<NiftiImage> ReadNiftiFile(const std::string& path, const NiftiReadOptions& options) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return bytes.status();
  return ReadNifti(*bytes, options);
}

}  // namespace upp::imageio
