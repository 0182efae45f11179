// A pre-parse check of a DICOM Part 10 file's structure, before DCMTK sees
// it: every defined length must fit inside its container (the file, an
// item, a sequence); tags must ascend within each data set; and the elements
// are counted and bounded. DCMTK 3.6.7 allocates the length an element
// claims for some elements even when it reads lazily (the fuzzer made a few
// hundred bytes claim 4 GB), so a claim larger than the bytes that remain is
// refused here, with no allocation. Its parse also costs far more than the
// file's bytes: about 180 bytes of heap per element (8 million empty
// elements in 64 MB held 1.4 GiB), and elements in descending tag order make
// its sorted insertion quadratic (80 k of them, 640 KB, took 42 s). DCMTK
// has no limit on either (dcobject.h's parser flags bound neither count nor
// order), so the walk refuses unordered tags and counts the elements, and
// readers reserve DcmtkParseBytes(count) before DCMTK parses the file.
// The values DCMTK loads while it parses (those no longer than the reader's
// lazy-load length) are a second cost the file's own bytes do not show in a
// reader that maps them, and many small values before the pixel data add up
// to the element cap times that length: they are summed, bounded
// (kMaxDicomLoadedValueBytes) and reserved with the elements.
//
// The walk follows the encoding: file meta (explicit little endian), then
// the transfer syntax's VR rule and byte order; sequences and items of
// defined or undefined length, nested; encapsulated pixel data as fragment
// items; UN elements of undefined length as implicit-VR sequences (PS3.5
// 6.2.2). Deflated data sets are inflated (at most 1 GiB) and walked as
// explicit VR little endian. Torch- and DCMTK-free.
#ifndef UPP_IMAGEIO_DICOM_LENGTHS_H_
#define UPP_IMAGEIO_DICOM_LENGTHS_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace upp::imageio {

// Elements, items and fragments (each an object DCMTK allocates) of one
// instance, and of one data set (an item, the file meta group, the top-level
// data set), at most. A CT slice has a few hundred elements; an enhanced
// multi-frame image a few dozen per frame.
inline constexpr int64_t kMaxDicomElements = int64_t{1} << 19;
inline constexpr int64_t kMaxDicomElementsPerDataSet = int64_t{1} << 16;

// DCMTK's heap per element, item or fragment while the file is parsed,
// beyond the values it loads (which the file's bytes bound). Measured with
// DCMTK 3.6.7 on glibc (RSS growth over a million of each, loadFile):
// 178 bytes per empty element, 210 with a 2-byte value, 258 per empty item,
// 194 per fragment; this covers each with a margin.
inline constexpr int64_t kDcmtkBytesPerElement = 288;

// The bytes of the values DCMTK loads while it parses one instance, the
// top-level pixel data apart, at most. A CT slice's header holds a few KB of
// them and an enhanced multi-frame header a few MB; without this bound the
// element cap alone let an instance of many small values make the gateway's
// DCMTK hold 524,288 x 256 bytes of them, and the server's 64 KiB each.
inline constexpr int64_t kMaxDicomLoadedValueBytes = int64_t{64} << 20;

// What DCMTK will allocate for a file: objects for its elements, items and
// fragments, and the values it loads.
struct DicomParseCost {
  int64_t elements = 0;
  // Values of defined length up to the reader's lazy-load length (DCMTK's
  // maxReadLength; longer ones stay in the file), wherever they are except
  // the top-level pixel data, whose size the readers bound on their own.
  int64_t loaded_value_bytes = 0;
};

// Every value loaded: what DCMTK does for a file read from a memory buffer
// (ParseDicom), which it cannot read lazily.
inline constexpr uint32_t kDcmtkLoadsEveryValue = 0xFFFFFFFEu;

// The cost of parsing the file with DCMTK, whose reader loads the values of
// at most `lazy_value_bytes` bytes, or INVALID_ARGUMENT naming the element
// whose length does not fit, the tag out of order, or the limit passed.
absl::StatusOr<DicomParseCost> CheckDicomStructure(std::string_view file,
                                                   uint32_t lazy_value_bytes = kDcmtkLoadsEveryValue);

// What DCMTK's parse of a file of this cost holds beyond the file's bytes:
// the objects and the loaded values; checked arithmetic, INT64_MAX if
// unformable.
int64_t DcmtkParseBytes(const DicomParseCost& cost);

// The bytes DCMTK will hold in memory at once for this file beyond what it
// reads lazily: the inflated data set of a Deflated Explicit VR Little Endian
// file (DCMTK reads a compressed stream whole, every value included), else 0.
// Counted by inflating through a small buffer, nothing kept; INVALID_ARGUMENT
// beyond 1 GiB. Readers reserve this before CheckDicomStructure (which inflates
// the data set once more to walk it) and DCMTK see the file.
absl::StatusOr<int64_t> DicomBytesHeldWhole(std::string_view file);

// Whether an explicit-VR element with these two VR bytes has a 4-byte length
// (after 2 reserved bytes) rather than a 2-byte one, as DCMTK reads it: the
// long-form VRs, and also any two upper-case letters that are not a known
// short VR (DCMTK assumes an unknown VR is a future one, which has a 4-byte
// length), plus DCMTK's internal names "lt", "ox", "px". The walk must read
// the structure exactly as DCMTK will, else DCMTK allocates a length that
// the walk never saw (a fuzzed 9 KB file made it allocate 2.7 GB).
bool UsesLongLengthField(char first, char second);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DICOM_LENGTHS_H_
