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
// 6.2.2). Deflated data sets are not walked (their lengths refer to inflated
// bytes; DCMTK inflates them as a stream). Torch- and DCMTK-free.
#ifndef UPP_IMAGEIO_DICOM_LENGTHS_H_
#define UPP_IMAGEIO_DICOM_LENGTHS_H_

#include <string_view>

#include "absl/status/status.h"

namespace upp::imageio {

// OK, or INVALID_ARGUMENT naming the element whose length does not fit.
absl::Status CheckDicomLengths(std::string_view file);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DICOM_LENGTHS_H_
