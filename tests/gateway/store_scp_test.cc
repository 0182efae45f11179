// The C-STORE SCP's TCP settings on an association's socket: DCMTK writes
// each PDV in two writes and leaves Nagle's algorithm on, so without them
// every C-STORE waited for a delayed ACK (300 instances: 14 s instead of
// 0.4 s on loopback; BENCHMARKS.md, issue 31). The timing itself is in
// BENCHMARKS.md; this checks the settings are applied to the socket the
// SCP serves the association on (found in this process's descriptors).
#include "gateway/store_scp.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/scu.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/config.h"

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

uint16_t Port(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

// This process's socket on the SCP's side of an association: local port
// `port`, connected to a peer (the listening socket has none).
std::optional<int> ScpSideSocket(int port) {
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    if (Port(fd, /*peer=*/false) == port && Port(fd, /*peer=*/true) != 0) return fd;
  }
  return std::nullopt;
}

int TcpOption(int fd, int option) {
  int value = -1;
  socklen_t len = sizeof value;
  if (getsockopt(fd, IPPROTO_TCP, option, &value, &len) != 0) return -1;
  return value;
}

class StoreScpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kCtSmall)) GTEST_SKIP() << "python3-pydicom test data not installed";
    dir_ = fs::temp_directory_path() / ("upp-store-scp-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    auto spool = Spool::Create((dir_ / "spool").string());
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_ = *std::move(spool);
    unetrpp::v1::GatewayConfig config;
    config.set_spool_dir(spool_->root());
    ApplyDefaults(config);
    listener_ = config.listener();
    listener_.set_port(FreePort());
    listener_.set_max_instance_bytes(1 << 20);
    listener_.set_min_free_spool_bytes(1 << 20);
    scp_ = std::make_unique<StoreScp>(listener_, spool_.get(), [](const std::string&) {});
    thread_ = std::thread([this] { run_status_ = scp_->Run(); });
  }

  void TearDown() override {
    if (scp_ != nullptr) {
      scp_->Stop();
      thread_.join();
      EXPECT_TRUE(run_status_.ok()) << run_status_;
    }
    fs::remove_all(dir_);
  }

  // An association to the SCP, retried until its listener is up (at most 10 s).
  void Connect(DcmSCU& scu) {
    OFList<OFString> syntaxes;
    syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
    scu.setAETitle("TESTSCU");
    scu.setPeerHostName("127.0.0.1");
    scu.setPeerPort(static_cast<Uint16>(listener_.port()));
    scu.setPeerAETitle(listener_.ae_title().c_str());
    scu.addPresentationContext(UID_CTImageStorage, syntaxes);
    ASSERT_TRUE(scu.initNetwork().good());
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    OFCondition cond;
    while ((cond = scu.negotiateAssociation()).bad() && absl::Now() < deadline) {
      scu.closeAssociation(DCMSCU_ABORT_ASSOCIATION);
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_TRUE(cond.good()) << cond.text();
  }

  fs::path dir_;
  std::unique_ptr<Spool> spool_;
  unetrpp::v1::DicomListener listener_;
  std::unique_ptr<StoreScp> scp_;
  std::thread thread_;
  absl::Status run_status_;
};

// TCP_NODELAY from the start (our responses' second write goes out at
// once); after each C-STORE response the socket acknowledges at once
// again (TCP_QUICKACK reads 1 once the kernel is out of delayed-ACK mode,
// which sending the response had put it in).
TEST_F(StoreScpTest, AnAssociationsSocketSendsAndAcknowledgesWithoutDelay) {
  DcmSCU scu;
  ASSERT_NO_FATAL_FAILURE(Connect(scu));
  Uint16 status = 0xFFFF;
  ASSERT_TRUE(
      scu.sendSTORERequest(scu.findPresentationContextID(UID_CTImageStorage, ""), kCtSmall, nullptr, status).good());
  EXPECT_EQ(status, 0x0000);

  const std::optional<int> fd = ScpSideSocket(listener_.port());
  ASSERT_TRUE(fd.has_value());
  EXPECT_EQ(TcpOption(*fd, TCP_NODELAY), 1);
  // The option is set just after the response is sent, so it may be read
  // an instant before: wait for it (it is never unset until the next
  // response, which this client does not ask for).
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (TcpOption(*fd, TCP_QUICKACK) != 1 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(TcpOption(*fd, TCP_QUICKACK), 1);
  scu.releaseAssociation();
}

}  // namespace
}  // namespace upp::gateway
