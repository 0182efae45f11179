// A hostile-input helper for the DICOM tests: a small deflated file that
// inflates to as much as the test wants. Includes DCMTK headers (tests only).
#ifndef UPP_TESTS_TESTING_DEFLATED_DICOM_H_
#define UPP_TESTS_TESTING_DEFLATED_DICOM_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <string>
#include <vector>

#include "imageio/dcmtk_io.h"

namespace upp::testing {

// `dicom` (a Part 10 file) with a private OB element of `zeros` zero bytes,
// encoded as Deflated Explicit VR Little Endian: about a thousandth of
// `zeros` on the wire, more than `zeros` once inflated. Empty on failure.
inline std::string DeflatedWithZeros(const std::string& dicom, size_t zeros) {
  DcmFileFormat file;
  if (!imageio::ParseDicom(dicom, file).ok()) return {};
  DcmDataset* ds = file.getDataset();
  const std::vector<Uint8> filler(zeros, 0);
  ds->putAndInsertString(DcmTag(0x0009, 0x0010, EVR_LO), "UPP TEST");  // the private creator
  if (ds->putAndInsertUint8Array(DcmTag(0x0009, 0x1000, EVR_OB), filler.data(), filler.size()).bad()) return {};
  auto bytes = imageio::SerializeDicom(file, EXS_DeflatedLittleEndianExplicit);
  return bytes.ok() ? std::move(*bytes) : std::string();
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_DEFLATED_DICOM_H_
