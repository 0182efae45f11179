#include "gateway/store_scu.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/scu.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/association_socket.h"
#include "gateway/dicom_tls.h"

namespace upp::gateway {
namespace {

// DCMTK 3.6.7 keeps DcmSCU::useSecureConnection protected (public later).
class Scu : public DcmSCU {
 public:
  using DcmSCU::useSecureConnection;
  int socket = -1;  // the association's, once negotiated

 protected:
  // Called after each PDV of a C-STORE's data set is written, the last one
  // included: the destination's response is then acknowledged at once (its
  // second write need not wait on our delayed ACK). Re-armed per PDV, as
  // each write puts the connection back into delayed-ACK mode.
  void notifySENDProgress(const unsigned long /*bytes*/) override { AckPromptly(socket); }
};

// The SCU's association, for its socket's TCP settings (association_socket.h:
// without them each C-STORE of ours stalled on a delayed ACK). DcmSCU keeps
// it private (m_assoc) with no accessor in 3.6.7; an explicit instantiation
// may name a private member ([temp.explicit]: access is not checked there),
// and the friend it defines hands the member pointer out.
struct AssocMember {
  using type = T_ASC_Association* DcmSCU::*;
  friend type MemberOf(AssocMember);
};
template <typename Tag, typename Tag::type kMember>
struct Expose {
  friend typename Tag::type MemberOf(Tag) { return kMember; }
};
template struct Expose<AssocMember, &DcmSCU::m_assoc>;

int AssociationSocket(DcmSCU& scu) { return SocketOf(scu.*MemberOf(AssocMember())); }

absl::Status Unavailable(const char* what, const OFCondition& cond) {
  return absl::UnavailableError(absl::StrCat("destination AE: ", what, ": ", cond.text()));
}

}  // namespace

absl::Status SendFiles(const unetrpp::v1::DicomDestination& d, const std::vector<std::string>& files) {
  std::vector<std::pair<std::string, std::string>> objects;  // SOP class, path
  std::set<std::string> classes;
  for (const auto& f : files) {
    DcmFileFormat file;
    OFString sop_class;
    if (file.loadFile(f.c_str()).bad() ||
        file.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class).bad())
      return absl::InternalError("a result to send cannot be read back");
    objects.emplace_back(sop_class.c_str(), f);
    classes.insert(sop_class.c_str());
  }
  std::unique_ptr<DcmTLSTransportLayer> tls;  // outlives the SCU, which uses it until destroyed
  Scu scu;
  scu.setAETitle(d.calling_ae_title().c_str());
  scu.setPeerAETitle(d.ae_title().c_str());
  scu.setPeerHostName(d.host().c_str());
  scu.setPeerPort(static_cast<Uint16>(d.port()));
  const auto timeout = static_cast<Uint32>(d.timeout_seconds());
  scu.setConnectionTimeout(static_cast<Sint32>(timeout));
  scu.setACSETimeout(timeout);
  scu.setDIMSETimeout(timeout);
  scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  OFList<OFString> syntaxes;
  syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
  for (const auto& c : classes) scu.addPresentationContext(c.c_str(), syntaxes);
  if (OFCondition c = scu.initNetwork(); c.bad()) return Unavailable("network", c);
  if (!d.tls().cert_file().empty()) {  // after initNetwork: the layer is set on its network
    auto layer = MakeTlsLayer(d.tls(), /*acceptor=*/false);
    if (!layer.ok()) return layer.status();
    tls = *std::move(layer);
    if (OFCondition c = scu.useSecureConnection(tls.get()); c.bad()) return Unavailable("TLS", c);
  }
  if (OFCondition c = scu.negotiateAssociation(); c.bad()) return Unavailable("association", c);
  scu.socket = AssociationSocket(scu);
  SendPromptly(scu.socket);
  absl::Status status;
  for (const auto& [sop_class, path] : objects) {
    const T_ASC_PresentationContextID id =
        scu.findPresentationContextID(sop_class.c_str(), UID_LittleEndianExplicitTransferSyntax);
    Uint16 response = 0;
    OFCondition c = id == 0 ? OFCondition(EC_IllegalCall) : scu.sendSTORERequest(id, path.c_str(), nullptr, response);
    if (c.bad()) {
      status = Unavailable("C-STORE", c);
      break;
    }
    if (response != 0x0000 && (response & 0xF000) != 0xB000) {  // success or warning
      status = absl::FailedPreconditionError(absl::StrFormat("destination AE: C-STORE answered 0x%04X", response));
      break;
    }
  }
  if (status.ok())
    scu.releaseAssociation();
  else
    scu.abortAssociation();
  return status;
}

}  // namespace upp::gateway
