// Small DCMTK helpers shared by the project's DICOM writers (tools, tests).
// Includes DCMTK headers: not for the server's headers.
#ifndef UPP_IMAGEIO_DCMTK_IO_H_
#define UPP_IMAGEIO_DCMTK_IO_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace upp::imageio {

// The bytes of a whole DICOM file parsed in memory, all values loaded, after
// CheckDicomStructure (dicom_lengths.h): lengths that fit, ascending tags, at
// most kMaxDicomElements, values up to kMaxDicomLoadedValueBytes. Its heap is
// about the bytes plus DcmtkParseBytes(cost), which a caller that admits
// memory reserves before (ReadDicomSeries did, for a request's instances).
absl::Status ParseDicom(std::string_view bytes, DcmFileFormat& file);

// A DICOM Part 10 file (preamble, meta header, data set) in memory, in
// `transfer_syntax` (explicit VR little endian by default).
absl::StatusOr<std::string> SerializeDicom(DcmFileFormat& file,
                                           E_TransferSyntax transfer_syntax = EXS_LittleEndianExplicit);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DCMTK_IO_H_
