// Small DCMTK helpers shared by the project's DICOM writers (tools, tests).
// Includes DCMTK headers: not for the server's headers.
#ifndef UPP_IMAGEIO_DCMTK_IO_H_
#define UPP_IMAGEIO_DCMTK_IO_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <string>

#include "absl/status/statusor.h"

namespace upp::imageio {

// A DICOM Part 10 file (preamble, meta header, data set) in memory, in
// `transfer_syntax` (explicit VR little endian by default).
absl::StatusOr<std::string> SerializeDicom(DcmFileFormat& file,
                                           E_TransferSyntax transfer_syntax = EXS_LittleEndianExplicit);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DCMTK_IO_H_
