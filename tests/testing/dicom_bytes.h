// A DICOM file read from the bytes a response carries (a SEG), for tests
// that look inside it with DCMTK; header-only, so only the tests that read
// DICOM link DCMTK.
#ifndef UPP_TESTS_TESTING_DICOM_BYTES_H_
#define UPP_TESTS_TESTING_DICOM_BYTES_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dctk.h>

#include <memory>
#include <string>

namespace upp::testing {

// The file in `bytes` (preamble and meta header included); nullptr when
// DCMTK cannot read it.
inline std::unique_ptr<DcmFileFormat> ReadDicomBytes(const std::string& bytes) {
  DcmInputBufferStream in;
  in.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  in.setEos();
  auto file = std::make_unique<DcmFileFormat>();
  file->transferInit();
  const bool good = file->read(in).good();
  file->transferEnd();
  return good ? std::move(file) : nullptr;
}

// The SegmentSequence of a SEG read by ReadDicomBytes; nullptr when absent.
inline DcmSequenceOfItems* SegmentSequence(DcmFileFormat& seg) {
  DcmSequenceOfItems* segments = nullptr;
  return seg.getDataset()->findAndGetSequence(DCM_SegmentSequence, segments).good() ? segments : nullptr;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_DICOM_BYTES_H_
