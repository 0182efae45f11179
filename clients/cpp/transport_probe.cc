#include "clients/cpp/transport_probe.h"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"

namespace upp::client {
namespace {

struct HostPort {
  std::string host, port;
};

std::optional<HostPort> ParseTarget(std::string target) {
  // "dns:///host:port" (no authority) and "dns:host:port" name one host;
  // "dns://server/host:port" asks another DNS server: not probed.
  for (const char* scheme : {"dns:///", "ipv4:", "ipv6:", "dns:"})
    if (absl::StartsWith(target, scheme)) {
      target = target.substr(std::string(scheme).size());
      break;
    }
  if (absl::StartsWith(target, "//") || absl::StrContains(target, ',')) return std::nullopt;
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon + 1 == target.size()) return std::nullopt;
  HostPort hp{target.substr(0, colon), target.substr(colon + 1)};
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']')
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  int port = 0;
  if (hp.host.empty() || !absl::SimpleAtoi(hp.port, &port) || port <= 0 || port > 65535) return std::nullopt;
  return hp;
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Writing to a socket the peer has closed raises SIGPIPE, which would end a
// client that does not ignore it (gRPC does not make it ignored); OpenSSL
// writes without MSG_NOSIGNAL. Blocked on this thread while the probe runs,
// and a SIGPIPE that came meanwhile is taken off before unblocking.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    if (!sigismember(&old_, SIGPIPE)) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_, old_;
};

// A connected socket before `deadline` (non-blocking connect, then blocking
// reads and writes bounded by what is left), or null.
std::unique_ptr<Socket> Connect(const HostPort& hp, absl::Time deadline) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &found) != 0) return nullptr;
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, &freeaddrinfo);
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const absl::Duration timeout = deadline - absl::Now();
    if (timeout <= absl::ZeroDuration()) return nullptr;
    auto s = std::make_unique<Socket>(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s->fd() < 0) continue;
    const int flags = fcntl(s->fd(), F_GETFL);
    fcntl(s->fd(), F_SETFL, flags | O_NONBLOCK);
    if (::connect(s->fd(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) continue;
      pollfd p{s->fd(), POLLOUT, 0};
      int error = 0;
      socklen_t len = sizeof(error);
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1 ||
          getsockopt(s->fd(), SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0) {
        continue;
      }
    }
    fcntl(s->fd(), F_SETFL, flags);
    const timeval tv = absl::ToTimeval(timeout);
    setsockopt(s->fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return s;
  }
  return nullptr;
}

}  // namespace

std::optional<Transport> ProbeTransport(const std::string& target, absl::Duration timeout) {
  const auto hp = ParseTarget(target);
  if (!hp) return std::nullopt;
  SigpipeBlocked no_sigpipe;
  auto socket = Connect(*hp, absl::Now() + timeout);
  if (!socket) return std::nullopt;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  if (!ctx) return std::nullopt;
  // Only the protocol is asked, not who the server is: nothing is sent
  // over this connection.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
  if (!ssl || SSL_set_fd(ssl.get(), socket->fd()) != 1) return std::nullopt;
  SSL_set_tlsext_host_name(ssl.get(), hp->host.c_str());
  ERR_clear_error();
  if (SSL_connect(ssl.get()) == 1) {
    SSL_shutdown(ssl.get());
    return Transport::kTls;
  }
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (ERR_GET_LIB(error) != ERR_LIB_SSL) return std::nullopt;  // closed or timed out: unknown
  // Bytes that are no TLS record (a plaintext HTTP/2 server's SETTINGS
  // frame) fail the record layer; an alert the peer sent proves TLS.
  const int reason = ERR_GET_REASON(error);
  if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
      reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_UNEXPECTED_RECORD) {
    return Transport::kNotTls;
  }
  if (reason >= SSL_AD_REASON_OFFSET) return Transport::kTls;
  return std::nullopt;
}

}  // namespace upp::client
