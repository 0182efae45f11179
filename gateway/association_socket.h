// TCP settings for a DICOM association's socket, on both of the gateway's
// sides (the C-STORE SCP that receives series, the SCU that sends results).
//
// DCMTK sends each PDV in two writes (its 12-byte PDU and PDV headers, then
// the value), and Debian's DCMTK leaves Nagle's algorithm on (it turns it
// off only when built with DISABLE_NAGLE_ALGORITHM). Every C-STORE then
// stalls on a delayed ACK (40 ms on Linux), measured with strace against
// storescu (BENCHMARKS.md, issue 31): the tail of one side's message waits
// for the other side to acknowledge its header, and once an exchange has
// looked like request-response the kernel delays ACKs to ride on the
// answer, which comes only after the tail. 300 instances took 14 s instead
// of about 1. Includes DCMTK headers: only for gateway/ sources.
#ifndef UPP_GATEWAY_ASSOCIATION_SOCKET_H_
#define UPP_GATEWAY_ASSOCIATION_SOCKET_H_

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/assoc.h>

#include <functional>

namespace upp::gateway {

// The association's TCP socket (plain or TLS), or -1.
int SocketOf(T_ASC_Association* assoc);

// Our writes go out at once (TCP_NODELAY; our side of the stall). Best
// effort: a socket that refuses it still works, only slower. -1: nothing.
void SendPromptly(int socket);

// What the peer writes next is acknowledged at once (TCP_QUICKACK; the
// peer's side, which a peer with Nagle on - storescu, most PACS built on
// DCMTK - does not fix itself). Linux's TCP_QUICKACK is not sticky: sending
// a message puts the connection back into delayed-ACK mode, so call this
// after each message sent whose answer is awaited. -1: nothing.
void AckPromptly(int socket);

// Tests only: `hook` is called after each setsockopt that SendPromptly and
// AckPromptly make (the socket, TCP_NODELAY or TCP_QUICKACK, whether it
// took), on the thread that made it; nullptr removes it. Tests assert that
// the re-arm ran, not what TCP_QUICKACK reads back: Linux leaves quick-ack
// mode by itself (after its quick ACKs are spent, or when it sees
// request-response traffic again), so a read after the fact races with the
// kernel and once in a while reads 0 however long it waits.
using SocketOptionHook = std::function<void(int socket, int option, bool set)>;
void SetSocketOptionHookForTest(SocketOptionHook hook);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_ASSOCIATION_SOCKET_H_
