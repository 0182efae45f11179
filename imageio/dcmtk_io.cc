#include "imageio/dcmtk_io.h"

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>

#include <vector>

#include "imageio/dicom_lengths.h"

namespace upp::imageio {

absl::Status ParseDicom(std::string_view bytes, DcmFileFormat& file) {
  if (auto cost = CheckDicomStructure(bytes, kDcmtkLoadsEveryValue); !cost.ok()) return cost.status();
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  file.transferInit();
  const OFCondition read = file.read(stream);
  file.transferEnd();
  if (read.bad()) return absl::InvalidArgumentError(std::string("DICOM parsing failed: ") + read.text());
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeDicom(DcmFileFormat& file, E_TransferSyntax transfer_syntax) {
  // The encoded size plus room for the meta header that write() completes.
  const size_t size = file.calcElementLength(transfer_syntax, EET_ExplicitLength) + 65536;
  std::vector<char> buffer(size);
  DcmOutputBufferStream out(buffer.data(), buffer.size());
  file.transferInit();
  const OFCondition written = file.write(out, transfer_syntax, EET_ExplicitLength, nullptr);
  file.transferEnd();
  if (written.bad()) return absl::InternalError(std::string("DICOM encoding failed: ") + written.text());
  // A deflated syntax leaves the compressor's tail in its filter until the
  // stream is flushed (without this the deflate stream had no end).
  out.flush();
  void* data = nullptr;
  offile_off_t length = 0;
  out.flushBuffer(data, length);
  return std::string(static_cast<char*>(data), static_cast<size_t>(length));
}

}  // namespace upp::imageio
