// Small socket helpers for tests that open listeners on loopback or read
// options back from a connection's socket: one copy for every test that
// needs them.
#ifndef UPP_TESTS_TESTING_TCP_SOCKET_H_
#define UPP_TESTS_TESTING_TCP_SOCKET_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace upp::testing {

// A loopback TCP port free a moment ago (the kernel's pick; another process
// may take it before the caller binds, which tests accept).
inline int FreeLoopbackPort() {
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

// The value of an IPPROTO_TCP option (TCP_NODELAY, ...) of `fd`; -1 when it
// cannot be read.
inline int TcpOption(int fd, int option) {
  int value = -1;
  socklen_t len = sizeof value;
  if (getsockopt(fd, IPPROTO_TCP, option, &value, &len) != 0) return -1;
  return value;
}

// The local (or, with `peer`, the remote) port of a connected socket; 0 when
// it cannot be read.
inline uint16_t SocketPort(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_TCP_SOCKET_H_
