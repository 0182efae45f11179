// The C-STORE sender's TCP settings on its association's socket (issue 31):
// DCMTK writes each PDV in two writes and leaves Nagle's algorithm on, so
// without them each result's C-STORE could wait for a delayed ACK on either
// side (association_socket.h). The timing is in BENCHMARKS.md; this reads
// the settings on the sender's socket while a test SCP holds each C-STORE,
// that is, just before the response the sender must acknowledge at once.
#include "gateway/store_scu.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/dstorscp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

int FreePort() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  close(s);
  return ntohs(addr.sin_port);
}

uint16_t PeerPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

// This process's socket on the sender's side of an association to `port`.
std::optional<int> SenderSideSocket(int port) {
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    if (PeerPort(fd) == port) return fd;
  }
  return std::nullopt;
}

int TcpOption(int fd, int option) {
  int value = -1;
  socklen_t len = sizeof value;
  if (getsockopt(fd, IPPROTO_TCP, option, &value, &len) != 0) return -1;
  return value;
}

// A storage SCP for one association that stores nothing and, at each
// C-STORE, before answering, reads the sender's TCP settings.
class ProbingScp : public DcmStorageSCP {
 public:
  struct Seen {
    int nodelay = -1, quickack = -1;
  };
  std::vector<Seen> seen;

 protected:
  Uint16 checkAndProcessSTORERequest(const T_DIMSE_C_StoreRQ& /*request*/, DcmFileFormat& /*file*/) override {
    Seen s;
    if (std::optional<int> fd = SenderSideSocket(getPort())) {
      s.nodelay = TcpOption(*fd, TCP_NODELAY);
      // The sender re-arms it just after its last write, which may be read
      // here an instant before: wait for it (nothing unsets it until our
      // response, which waits for this).
      const absl::Time deadline = absl::Now() + absl::Seconds(2);
      while ((s.quickack = TcpOption(*fd, TCP_QUICKACK)) != 1 && absl::Now() < deadline)
        absl::SleepFor(absl::Milliseconds(5));
    }
    seen.push_back(s);
    return 0x0000;
  }
  OFBool stopAfterCurrentAssociation() override { return OFTrue; }
  OFBool stopAfterConnectionTimeout() override { return OFTrue; }
};

// TCP_NODELAY from the association's start (our second write of each PDV
// goes out at once), and TCP_QUICKACK re-armed after each C-STORE's data
// set is written (the response's tail need not wait for our delayed ACK):
// both read at the first and at the second C-STORE of an association.
TEST(StoreScuTest, TheSendersSocketSendsAndAcknowledgesWithoutDelay) {
  if (!fs::exists(kCtSmall)) GTEST_SKIP() << "python3-pydicom test data not installed";
  ProbingScp scp;
  const int port = FreePort();
  scp.setPort(static_cast<Uint16>(port));
  scp.setAETitle("PROBE");
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
    EXPECT_EQ(s.nodelay, 1);
    EXPECT_EQ(s.quickack, 1);
  }
}

}  // namespace
}  // namespace upp::gateway
