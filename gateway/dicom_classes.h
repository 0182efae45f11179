// What the gateway accepts, by either transport (C-STORE presentation
// contexts, STOW-RS instance checks): CT and MR image storage, in the
// transfer syntaxes the series reader (imageio/dicom.h) can decode —
// accepting more would only defer the failure.
// Thread-safe (constants).
#ifndef UPP_GATEWAY_DICOM_CLASSES_H_
#define UPP_GATEWAY_DICOM_CLASSES_H_

#include <string>
#include <vector>

namespace upp::gateway {

const std::vector<const char*>& AcceptedStorageClasses();
const std::vector<const char*>& AcceptedTransferSyntaxes();
bool IsAcceptedStorageClass(const std::string& sop_class_uid);
bool IsAcceptedTransferSyntax(const std::string& transfer_syntax_uid);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_DICOM_CLASSES_H_
