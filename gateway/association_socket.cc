#include "gateway/association_socket.h"

#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dul.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace upp::gateway {
namespace {

// DCMTK keeps a connection's socket protected and offers no option for
// these settings; a class derived from the connection may name the member,
// and the pointer to it applies to any connection (plain or TLS).
struct SocketAccess : DcmTransportConnection {
  static int Of(DcmTransportConnection* connection) {
    return static_cast<int>((connection->*(&SocketAccess::getSocket))());
  }
};

}  // namespace

int SocketOf(T_ASC_Association* assoc) {
  if (assoc == nullptr || assoc->DULassociation == nullptr) return -1;
  DcmTransportConnection* connection = DUL_getTransportConnection(assoc->DULassociation);
  return connection == nullptr ? -1 : SocketAccess::Of(connection);
}

void SendPromptly(int socket) {
  if (socket < 0) return;
  const int on = 1;
  setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

void AckPromptly(int socket) {
#ifdef TCP_QUICKACK
  if (socket < 0) return;
  const int on = 1;
  setsockopt(socket, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
#endif
}

}  // namespace upp::gateway
