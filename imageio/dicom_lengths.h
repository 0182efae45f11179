// A pre-parse check of a DICOM Part 10 file's element lengths, before DCMTK
// sees it: every defined length must fit inside its container (the file, an
// item, a sequence). DCMTK 3.6.7 allocates the length an element claims for
// some elements even when it reads lazily (the fuzzer made a few hundred
// bytes claim 4 GB), so a claim larger than the bytes that remain is refused
// here, with no allocation.
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

// OK, or INVALID_ARGUMENT naming the element whose length does not fit.
absl::Status CheckDicomLengths(std::string_view file);

// The bytes DCMTK will hold in memory at once for this file beyond what it
// reads lazily: the inflated data set of a Deflated Explicit VR Little Endian
// file (DCMTK reads a compressed stream whole, every value included), else 0.
// Counted by inflating through a small buffer, nothing kept; INVALID_ARGUMENT
// beyond 1 GiB. Readers reserve this before CheckDicomLengths (which inflates
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
