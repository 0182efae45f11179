#include "gateway/store_scp.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/dcmnet/scpthrd.h>

#include <filesystem>

#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/association_socket.h"
#include "gateway/dicom_classes.h"
#include "gateway/dicom_tls.h"
#include "gateway/peers.h"
#include "gateway/series.h"

namespace upp::gateway {
namespace {

// DIMSE status codes of a C-STORE response (PS3.4 B.2.3).
constexpr Uint16 kStoreSuccess = 0x0000;
constexpr Uint16 kStoreOutOfResources = 0xA700;
constexpr Uint16 kStoreCannotUnderstand = 0xC000;
constexpr Uint16 kStoreRefused = 0xA900;  // "data set does not match SOP class": used for a refused instance

// What each association's worker thread needs; owned by the pool.
struct Context {
  unetrpp::v1::DicomListener config;
  Spool* spool;
  StoreScp::InstanceCallback on_instance;
  StoreScp::RejectCallback on_rejected;
};

// One association: a DcmThreadSCP that stores to the spool.
class Worker : public DcmBaseSCPPool::DcmBaseSCPWorker, private DcmThreadSCP {
 public:
  Worker(DcmBaseSCPPool& pool, const Context& context) : DcmBaseSCPWorker(pool), context_(context) {}

  OFCondition setSharedConfig(const DcmSharedSCPConfig& config) override {
    return DcmThreadSCP::setSharedConfig(config);
  }
  OFBool busy() override { return DcmThreadSCP::isConnected(); }

 protected:
  OFCondition workerListen(T_ASC_Association* const assoc) override {
    socket_ = SocketOf(assoc);
    SendPromptly(socket_);
    AckPromptly(socket_);
    return DcmThreadSCP::run(assoc);
  }

  // DCMTK asks for the calling AE title and the calling host separately;
  // one decision answers both (DecidePeer), each rejecting for its own
  // reason, so that a refused association is counted once.
  OFBool checkCallingAETitleAccepted(const OFString& calling_ae) override {
    return Admit(calling_ae, PeerDecision::kUnknownCallingAe, "calling_ae");
  }

  OFBool checkCallingHostAccepted(const OFString& /*host_or_ip*/) override {
    return Admit(getPeerAETitle(), PeerDecision::kAddressNotAllowed, "peer_address");
  }

  OFBool Admit(const OFString& calling_ae, PeerDecision refused_here, const char* reason) {
    if (DecidePeer(context_.config, calling_ae.c_str(), getPeerIP().c_str()) != refused_here) return OFTrue;
    if (context_.on_rejected) context_.on_rejected(reason);
    return OFFalse;
  }

  OFBool checkCalledAETitleAccepted(const OFString& called_ae) override {
    return absl::StripAsciiWhitespace(called_ae.c_str()) == context_.config.ae_title();
  }

  void notifyAssociationRequest(const T_ASC_Parameters& params, DcmSCPActionType& action) override {
    association_start_ = absl::Now();
    DcmThreadSCP::notifyAssociationRequest(params, action);
  }

  OFCondition handleIncomingCommand(T_DIMSE_Message* message, const DcmPresentationContextInfo& info) override {
    if (OverTime()) {
      context_.on_instance("association_too_long");
      abortAssociation();
      return DUL_PEERABORTEDASSOCIATION;  // ends DcmSCP's command loop without a second abort
    }
    if (message->CommandField != DIMSE_C_STORE_RQ) return DcmThreadSCP::handleIncomingCommand(message, info);
    OFCondition cond = HandleStore(message->msg.CStoreRQ, info.presentationContextID);
    AckPromptly(socket_);
    return cond;
  }

  // One C-STORE: into the spool, or, without room there, nowhere (answered
  // "out of resources").
  OFCondition HandleStore(T_DIMSE_C_StoreRQ& request, T_ASC_PresentationContextID id) {
    const std::string path = context_.spool->IncomingPath();
    const bool room =
        context_.spool->InstanceArriving(context_.config.max_instance_bytes(), context_.config.min_free_spool_bytes());
    if (!room && !LinkToDevNull(path)) {
      context_.spool->InstanceDone();
      context_.on_instance("spool_error");
      abortAssociation();
      return DUL_PEERABORTEDASSOCIATION;
    }
    OFCondition cond = Receive(request, id, path);
    context_.spool->InstanceDone();
    if (cond.bad() || cut_off_ != nullptr) {
      // A cut-off on the data set's last packet still ends the receive well.
      std::error_code ec;
      std::filesystem::remove(path, ec);
      context_.on_instance(cut_off_ != nullptr ? cut_off_ : "invalid");
      return cond.bad() ? cond : DUL_PEERABORTEDASSOCIATION;  // DcmSCP ends the association
    }
    if (!room) {
      std::error_code ec;
      std::filesystem::remove(path, ec);  // the link
      context_.on_instance("spool_full");
      return sendSTOREResponse(id, request, kStoreOutOfResources);
    }
    const auto [status, outcome] = Commit(path, request);
    context_.on_instance(outcome);
    return sendSTOREResponse(id, request, status);
  }

  // The data set of a store that finds no room still arrives (DIMSE has no
  // way to refuse it before): it goes to /dev/null through a link of this
  // store's own, since DCMTK deletes the file it was given when a receive
  // fails.
  static bool LinkToDevNull(const std::string& path) {
    std::error_code ec;
    std::filesystem::create_symlink("/dev/null", path, ec);
    return !ec;
  }

  // One C-STORE data set to `path`, under the size and time limits below.
  OFCondition Receive(T_DIMSE_C_StoreRQ& request, T_ASC_PresentationContextID id, const std::string& path) {
    receiving_ = true;
    cut_off_ = nullptr;
    OFCondition cond = receiveSTORERequest(request, id, path.c_str());
    receiving_ = false;
    return cond;
  }

  // DCMTK reports the bytes of a data set received so far. An instance past
  // max_instance_bytes is cut off there (the association aborted): DIMSE
  // announces no size, and without this a sender could fill the spool's
  // disk with one endless instance before the size check after it.
  void notifyRECEIVEProgress(const unsigned long byte_count) override {
    if (!receiving_ || cut_off_ != nullptr) return;
    if (byte_count > context_.config.max_instance_bytes()) {
      cut_off_ = "too_large";
    } else if (OverTime()) {
      cut_off_ = "association_too_long";
    } else {
      return;
    }
    abortAssociation();
  }

  bool OverTime() const {
    return absl::Now() - association_start_ > absl::Seconds(context_.config.max_association_seconds());
  }

 private:
  std::pair<Uint16, const char*> Commit(const std::string& path, const T_DIMSE_C_StoreRQ& request) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    std::pair<Uint16, const char*> result{kStoreSuccess, "stored"};
    if (ec) {
      result = {kStoreOutOfResources, "spool_error"};
    } else if (size > context_.config.max_instance_bytes()) {
      result = {kStoreOutOfResources, "too_large"};
    } else {
      auto header = ReadInstanceHeader(path, static_cast<int64_t>(context_.config.max_instance_bytes()));
      if (!header.ok() || header->sop_instance_uid != request.AffectedSOPInstanceUID) {
        result = {kStoreCannotUnderstand, "invalid"};
      } else if (!context_.spool->Commit(path, header->series_instance_uid, header->sop_instance_uid).ok()) {
        result = {IsValidUid(header->series_instance_uid) ? kStoreOutOfResources : kStoreRefused,
                  IsValidUid(header->series_instance_uid) ? "spool_error" : "invalid"};
      }
    }
    if (result.first != kStoreSuccess) std::filesystem::remove(path, ec);
    return result;
  }

  const Context& context_;
  int socket_ = -1;  // the association's, for its TCP settings (association_socket.h)
  absl::Time association_start_ = absl::Now();
  bool receiving_ = false;         // a C-STORE data set is being written to the spool
  const char* cut_off_ = nullptr;  // ... and was cut off: the outcome's name
};

}  // namespace

class StoreScp::Pool : public DcmBaseSCPPool {
 public:
  Pool(const unetrpp::v1::DicomListener& config, Spool* spool, StoreScp::InstanceCallback on_instance,
       StoreScp::RejectCallback on_rejected)
      : context_{config, spool, std::move(on_instance), std::move(on_rejected)} {}

 protected:
  DcmBaseSCPWorker* createSCPWorker() override { return new Worker(*this, context_); }

 private:
  const Context context_;
};

StoreScp::StoreScp(const unetrpp::v1::DicomListener& config, Spool* spool, InstanceCallback on_instance,
                   RejectCallback on_rejected)
    : pool_(std::make_unique<Pool>(config, spool, std::move(on_instance), std::move(on_rejected))), tls_(config.tls()) {
  DcmSCPConfig& c = pool_->getConfig();
  c.setAETitle(config.ae_title().c_str());
  c.setPort(static_cast<Uint16>(config.port()));
  c.setMaxReceivePDULength(config.max_pdu_bytes());
  const auto idle = static_cast<Uint32>(config.association_idle_seconds());
  c.setACSETimeout(idle);
  c.setDIMSETimeout(idle);
  c.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  // The listening loop wakes every second to notice Stop().
  c.setConnectionBlockingMode(DUL_NOBLOCK);
  c.setConnectionTimeout(1);
  c.setHostLookupEnabled(OFFalse);
  OFList<OFString> syntaxes;
  for (const char* ts : AcceptedTransferSyntaxes()) syntaxes.push_back(ts);
  for (const char* sop : AcceptedStorageClasses()) c.addPresentationContext(sop, syntaxes);
  OFList<OFString> echo;
  echo.push_back(UID_LittleEndianExplicitTransferSyntax);
  echo.push_back(UID_LittleEndianImplicitTransferSyntax);
  c.addPresentationContext(UID_VerificationSOPClass, echo);
  pool_->setMaxThreads(static_cast<Uint16>(config.max_associations()));
}

StoreScp::~StoreScp() = default;

absl::Status StoreScp::Run() {
  if (!tls_.cert_file().empty()) {
    auto layer = MakeTlsLayer(tls_, /*acceptor=*/true);
    if (!layer.ok()) return layer.status();
    pool_->getConfig().setTransportLayer(layer->get());
    tls_layer_ = std::shared_ptr<DcmTLSTransportLayer>(std::move(*layer));
  }
  OFCondition cond = pool_->listen();
  if (cond.bad()) return absl::UnavailableError(std::string("DICOM listener: ") + cond.text());
  return absl::OkStatus();
}

void StoreScp::Stop() { pool_->stopAfterCurrentAssociations(); }

int StoreScp::port() const { return pool_->getConfig().getPort(); }

}  // namespace upp::gateway
