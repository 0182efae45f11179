#include "gateway/dicom_classes.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <algorithm>

namespace upp::gateway {

const std::vector<const char*>& AcceptedStorageClasses() {
  static const auto* const kClasses = new std::vector<const char*>{
      UID_CTImageStorage, UID_EnhancedCTImageStorage, UID_LegacyConvertedEnhancedCTImageStorage,
      UID_MRImageStorage, UID_EnhancedMRImageStorage, UID_LegacyConvertedEnhancedMRImageStorage};
  return *kClasses;
}

const std::vector<const char*>& AcceptedTransferSyntaxes() {
  static const auto* const kSyntaxes = new std::vector<const char*>{UID_LittleEndianExplicitTransferSyntax,
                                                                    UID_LittleEndianImplicitTransferSyntax,
                                                                    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
                                                                    UID_JPEGProcess1TransferSyntax,
                                                                    UID_JPEGProcess2_4TransferSyntax,
                                                                    UID_JPEGProcess14SV1TransferSyntax,
                                                                    UID_JPEGLSLosslessTransferSyntax,
                                                                    UID_JPEGLSLossyTransferSyntax,
                                                                    UID_JPEG2000LosslessOnlyTransferSyntax,
                                                                    UID_JPEG2000TransferSyntax,
                                                                    UID_RLELosslessTransferSyntax};
  return *kSyntaxes;
}

namespace {
bool Contains(const std::vector<const char*>& list, const std::string& uid) {
  return std::any_of(list.begin(), list.end(), [&uid](const char* u) { return uid == u; });
}
}  // namespace

bool IsAcceptedStorageClass(const std::string& uid) { return Contains(AcceptedStorageClasses(), uid); }
bool IsAcceptedTransferSyntax(const std::string& uid) { return Contains(AcceptedTransferSyntaxes(), uid); }

}  // namespace upp::gateway
