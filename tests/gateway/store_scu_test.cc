// The C-STORE sender's TCP settings on its association's socket (issue 31):
// DCMTK writes each PDV in two writes and leaves Nagle's algorithm on, so
// without them each result's C-STORE could wait for a delayed ACK on either
// side (association_socket.h). The timing is in BENCHMARKS.md; this reads
// TCP_NODELAY on the sender's association socket while a test SCP holds
// each C-STORE, and counts the sender's TCP_QUICKACK re-arms by
// association_socket.h's test hook.
#include "gateway/store_scu.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/dstorscp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/association_socket.h"
#include "tests/testing/tcp_socket.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

// What SendPromptly and AckPromptly did (association_socket.h): the
// sender's association socket (where it set TCP_NODELAY), how many
// TCP_QUICKACK re-arms it has had, and whether every setsockopt took.
class SocketOptionLog {
 public:
  SocketOptionLog() {
    SetSocketOptionHookForTest([this](int socket, int option, bool ok) {
      absl::MutexLock lock(&mu_);
      all_ok_ = all_ok_ && ok;
      if (option == TCP_NODELAY) {
        socket_ = socket;  // a new association's
        rearms_ = 0;
      } else if (option == TCP_QUICKACK && socket == socket_) {
        ++rearms_;
      }
    });
  }
  ~SocketOptionLog() { SetSocketOptionHookForTest(nullptr); }
  int socket() {
    absl::MutexLock lock(&mu_);
    return socket_;
  }
  int rearms() {
    absl::MutexLock lock(&mu_);
    return rearms_;
  }
  bool all_ok() {
    absl::MutexLock lock(&mu_);
    return all_ok_;
  }

 private:
  absl::Mutex mu_;
  int socket_ ABSL_GUARDED_BY(mu_) = -1;
  int rearms_ ABSL_GUARDED_BY(mu_) = 0;
  bool all_ok_ ABSL_GUARDED_BY(mu_) = true;
};

// A storage SCP for one association that stores nothing and, at each
// C-STORE, before answering, reads the sender's settings: TCP_NODELAY on
// its association socket (stable: set once as the association starts) and
// how many TCP_QUICKACK re-arms the sender has made so far. What
// TCP_QUICKACK itself reads is not asserted: the kernel leaves quick-ack
// mode by itself, so a read races with it (association_socket.h).
class ProbingScp : public DcmStorageSCP {
 public:
  explicit ProbingScp(SocketOptionLog* log) : log_(log) {}
  struct Seen {
    bool association_socket = false;  // the sender's hooked socket is connected to this SCP
    int nodelay = -1, rearms = -1;
  };
  std::vector<Seen> seen;

 protected:
  Uint16 checkAndProcessSTORERequest(const T_DIMSE_C_StoreRQ& /*request*/, DcmFileFormat& /*file*/) override {
    Seen s;
    const int fd = log_->socket();
    s.association_socket =
        fd >= 0 && testing::SocketPort(fd, /*peer=*/true) == getPort() && testing::SocketPort(fd, /*peer=*/false) != 0;
    if (s.association_socket) s.nodelay = testing::TcpOption(fd, TCP_NODELAY);
    s.rearms = log_->rearms();
    seen.push_back(s);
    return 0x0000;
  }
  OFBool stopAfterCurrentAssociation() override { return OFTrue; }
  OFBool stopAfterConnectionTimeout() override { return OFTrue; }

 private:
  SocketOptionLog* const log_;
};

// TCP_NODELAY from the association's start (our second write of each PDV
// goes out at once), on the association's own socket (the one the sender
// set it on, connected to the SCP's port), read at each of two C-STOREs;
// TCP_QUICKACK re-armed as each C-STORE's data set is written (the
// response's tail need not wait for our delayed ACK): re-arms made by the
// first C-STORE, more by the second (its data set's earlier PDVs), at
// least one per C-STORE in all, each of which took.
TEST(StoreScuTest, TheSendersSocketSendsAndAcknowledgesWithoutDelay) {
  if (!fs::exists(kCtSmall)) GTEST_SKIP() << "python3-pydicom test data not installed";
  SocketOptionLog log;
  ProbingScp scp(&log);
  const int port = testing::FreeLoopbackPort();
  scp.setPort(static_cast<Uint16>(port));
  scp.setAETitle("PROBE");
  // CT_small's data set (about 39 KB) then goes in several PDVs: the
  // sender re-arms after each, so some re-arms precede each data set's end.
  scp.setMaxReceivePDULength(16384);
  scp.setConnectionBlockingMode(DUL_NOBLOCK);
  scp.setConnectionTimeout(10);  // listen() returns if no sender came
  OFList<OFString> syntaxes;
  syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
  ASSERT_TRUE(scp.addPresentationContext(UID_CTImageStorage, syntaxes).good());
  std::thread listener([&scp] { scp.listen(); });

  unetrpp::v1::DicomDestination d;
  d.set_host("127.0.0.1");
  d.set_port(port);
  d.set_ae_title("PROBE");
  d.set_calling_ae_title("UPPTEST");
  d.set_timeout_seconds(10);
  absl::Status sent;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  do {  // until the listener is up
    sent = SendFiles(d, {kCtSmall, kCtSmall});
    if (sent.ok()) break;
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  listener.join();
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_EQ(scp.seen.size(), 2u);
  for (const ProbingScp::Seen& s : scp.seen) {
    EXPECT_TRUE(s.association_socket);
    EXPECT_EQ(s.nodelay, 1);
  }
  EXPECT_GE(scp.seen[0].rearms, 1);
  EXPECT_GT(scp.seen[1].rearms, scp.seen[0].rearms);
  // Each PDV's re-arm is made before the sender awaits the response, so
  // all are in once SendFiles returns.
  EXPECT_GE(log.rearms(), 2);
  EXPECT_TRUE(log.all_ok());
}

}  // namespace
}  // namespace upp::gateway
