// The C-STORE SCP's TCP settings on an association's socket: DCMTK writes
// each PDV in two writes and leaves Nagle's algorithm on, so without them
// every C-STORE waited for a delayed ACK (300 instances: 14 s instead of
// 0.4 s on loopback; BENCHMARKS.md, issue 31). The timing itself is in
// BENCHMARKS.md; this checks the settings are applied to the socket the
// SCP serves the association on (found in this process's descriptors by
// both ends' ports) and that TCP_QUICKACK is re-armed after each response
// (seen by association_socket.h's test hook).
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
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/association_socket.h"
#include "gateway/config.h"
#include "tests/testing/tcp_socket.h"

namespace upp::gateway {
namespace {

namespace fs = std::filesystem;

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

// This process's sockets (their descriptors).
std::vector<int> Sockets() {
  std::vector<int> fds;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    struct stat st {};
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) fds.push_back(fd);
  }
  return fds;
}

// Whether `scp_fd` is the SCP's side of a connection whose client side is
// in this process too: local port `port`, and a socket here connected to
// `port` from the peer port `scp_fd` sees. A leftover socket (of a failed
// connection attempt, or another association) does not match.
bool IsAssociationSocket(int scp_fd, int port) {
  const uint16_t client_port = testing::SocketPort(scp_fd, /*peer=*/true);
  if (testing::SocketPort(scp_fd, /*peer=*/false) != port || client_port == 0) return false;
  for (int fd : Sockets())
    if (fd != scp_fd && testing::SocketPort(fd, /*peer=*/false) == client_port &&
        testing::SocketPort(fd, /*peer=*/true) == port)
      return true;
  return false;
}

// What SendPromptly and AckPromptly did, in order (association_socket.h).
class SocketOptionLog {
 public:
  struct Set {
    int socket, option;
    bool ok;
  };
  SocketOptionLog() {
    SetSocketOptionHookForTest([this](int socket, int option, bool ok) {
      absl::MutexLock lock(&mu_);
      sets_.push_back({socket, option, ok});
    });
  }
  ~SocketOptionLog() { SetSocketOptionHookForTest(nullptr); }
  std::vector<Set> sets() {
    absl::MutexLock lock(&mu_);
    return sets_;
  }
  // Waits (at most `timeout`) until `done` holds of what was set so far.
  bool Await(const std::function<bool(const std::vector<Set>&)>& done, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      if (done(sets())) return true;
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

 private:
  absl::Mutex mu_;
  std::vector<Set> sets_ ABSL_GUARDED_BY(mu_);
};

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
    listener_.set_port(testing::FreeLoopbackPort());
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
// once), read on the association's own socket (matched by both ends'
// ports: a leftover socket of a failed connection attempt is never read);
// TCP_QUICKACK re-armed after each C-STORE response (sending it had put the
// connection back into delayed-ACK mode), checked by the hook seeing the
// re-arm on that socket once per response: what the kernel reads back is
// transient (association_socket.h), so reading it raced (1 run in 13
// read 0 after 5 s).
TEST_F(StoreScpTest, AnAssociationsSocketSendsAndAcknowledgesWithoutDelay) {
  SocketOptionLog log;
  DcmSCU scu;
  ASSERT_NO_FATAL_FAILURE(Connect(scu));
  // The association's socket: the one the SCP set TCP_NODELAY on whose
  // other end is this client's connection.
  int fd = -1;
  ASSERT_TRUE(log.Await(
      [&](const std::vector<SocketOptionLog::Set>& sets) {
        for (const auto& s : sets)
          if (s.option == TCP_NODELAY && IsAssociationSocket(s.socket, listener_.port())) fd = s.socket;
        return fd >= 0;
      },
      absl::Seconds(10)));
  EXPECT_EQ(testing::TcpOption(fd, TCP_NODELAY), 1);  // set once, never cleared
  // Re-arms on it since the association began (its TCP_NODELAY; a socket
  // number closed and reused starts again): one as it starts, then one per
  // response; each took.
  auto rearms = [fd](const std::vector<SocketOptionLog::Set>& sets) {
    int n = 0;
    for (const auto& s : sets) {
      if (s.socket != fd) continue;
      if (s.option == TCP_NODELAY) n = 0;
      if (s.option == TCP_QUICKACK) ++n;
    }
    return n;
  };
  const int at_start = rearms(log.sets());
  EXPECT_EQ(at_start, 1);
  const T_ASC_PresentationContextID id = scu.findPresentationContextID(UID_CTImageStorage, "");
  for (int i = 1; i <= 2; ++i) {
    Uint16 status = 0xFFFF;
    ASSERT_TRUE(scu.sendSTORERequest(id, kCtSmall, nullptr, status).good());
    EXPECT_EQ(status, 0x0000);
    // The re-arm follows the response the client has just read: wait for
    // the event (it comes; the deadline only bounds a failure).
    EXPECT_TRUE(log.Await([&](const auto& sets) { return rearms(sets) >= at_start + i; }, absl::Seconds(10)));
    EXPECT_EQ(rearms(log.sets()), at_start + i) << "C-STORE " << i;
  }
  EXPECT_EQ(testing::TcpOption(fd, TCP_NODELAY), 1);
  for (const auto& s : log.sets()) EXPECT_TRUE(s.ok) << "setsockopt failed: option " << s.option;
  scu.releaseAssociation();
}

}  // namespace
}  // namespace upp::gateway
