#include "gateway/association_socket.h"

#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dul.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace upp::gateway {
namespace {

// The tests' hook; `hooked` spares the lock on every PDV when there is none.
ABSL_CONST_INIT absl::Mutex hook_mu(absl::kConstInit);
SocketOptionHook* hook ABSL_GUARDED_BY(hook_mu) = nullptr;
std::atomic<bool> hooked{false};

void Report(int socket, int option, bool set) {
  if (!hooked.load(std::memory_order_acquire)) return;
  absl::MutexLock lock(&hook_mu);
  if (hook != nullptr) (*hook)(socket, option, set);
}

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
  Report(socket, TCP_NODELAY, setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0);
}

void AckPromptly(int socket) {
#ifdef TCP_QUICKACK
  if (socket < 0) return;
  const int on = 1;
  Report(socket, TCP_QUICKACK, setsockopt(socket, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on) == 0);
#endif
}

void SetSocketOptionHookForTest(SocketOptionHook next) {
  SocketOptionHook* replaced = nullptr;
  {
    absl::MutexLock lock(&hook_mu);
    replaced = hook;
    hook = next ? new SocketOptionHook(std::move(next)) : nullptr;
    hooked.store(hook != nullptr, std::memory_order_release);
  }
  delete replaced;
}

}  // namespace upp::gateway
