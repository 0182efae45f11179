// ThreadSanitizer build only (deploy/tsan.sh): tells TSan about absl::Mutex.
//
// Why: Debian's Abseil is not built with TSan, and absl::Mutex synchronises
// with its own atomics and futex calls, which TSan does not see; every access
// guarded by an absl::Mutex would then be reported as a race. The linker
// (--wrap) routes our code's calls of the Mutex and CondVar entry points
// through these functions, which add the happens-before edges TSan needs
// (release before giving the mutex up, acquire after getting it) around the
// real ones. Names are the Itanium-mangled ones of Debian 12's Abseil
// (inline namespace "debian3"); deploy/tsan.sh passes the linker options.
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Time;

#define UPP_REAL(name) __real_##name
#define UPP_WRAP(name) __wrap_##name

extern "C" {

// Lock / Unlock and the reader variants.
void UPP_REAL(_ZN4absl7debian35Mutex4LockEv)(Mutex*);
void UPP_WRAP(_ZN4absl7debian35Mutex4LockEv)(Mutex* m) {
  UPP_REAL(_ZN4absl7debian35Mutex4LockEv)(m);
  __tsan_acquire(m);
}
void UPP_REAL(_ZN4absl7debian35Mutex6UnlockEv)(Mutex*);
void UPP_WRAP(_ZN4absl7debian35Mutex6UnlockEv)(Mutex* m) {
  __tsan_release(m);
  UPP_REAL(_ZN4absl7debian35Mutex6UnlockEv)(m);
}
bool UPP_REAL(_ZN4absl7debian35Mutex7TryLockEv)(Mutex*);
bool UPP_WRAP(_ZN4absl7debian35Mutex7TryLockEv)(Mutex* m) {
  const bool locked = UPP_REAL(_ZN4absl7debian35Mutex7TryLockEv)(m);
  if (locked) __tsan_acquire(m);
  return locked;
}
void UPP_REAL(_ZN4absl7debian35Mutex10ReaderLockEv)(Mutex*);
void UPP_WRAP(_ZN4absl7debian35Mutex10ReaderLockEv)(Mutex* m) {
  UPP_REAL(_ZN4absl7debian35Mutex10ReaderLockEv)(m);
  __tsan_acquire(m);
}
void UPP_REAL(_ZN4absl7debian35Mutex12ReaderUnlockEv)(Mutex*);
void UPP_WRAP(_ZN4absl7debian35Mutex12ReaderUnlockEv)(Mutex* m) {
  __tsan_release(m);
  UPP_REAL(_ZN4absl7debian35Mutex12ReaderUnlockEv)(m);
}

// Await gives the mutex up while waiting and holds it again on return.
void UPP_REAL(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(Mutex*, const Condition&);
void UPP_WRAP(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(Mutex* m, const Condition& c) {
  __tsan_release(m);
  UPP_REAL(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(m, c);
  __tsan_acquire(m);
}
bool UPP_REAL(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(Mutex*, const Condition&,
                                                                                        Duration);
bool UPP_WRAP(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(Mutex* m, const Condition& c,
                                                                                        Duration d) {
  __tsan_release(m);
  const bool r = UPP_REAL(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(m, c, d);
  __tsan_acquire(m);
  return r;
}
bool UPP_REAL(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(Mutex*, const Condition&, Time);
bool UPP_WRAP(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(Mutex* m, const Condition& c,
                                                                                     Time t) {
  __tsan_release(m);
  const bool r = UPP_REAL(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(m, c, t);
  __tsan_acquire(m);
  return r;
}
void UPP_REAL(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(Mutex*, const Condition&);
void UPP_WRAP(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(Mutex* m, const Condition& c) {
  UPP_REAL(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(m, c);
  __tsan_acquire(m);
}

// CondVar waits give the mutex up and take it back.
void UPP_REAL(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(CondVar*, Mutex*);
void UPP_WRAP(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(CondVar* cv, Mutex* m) {
  __tsan_release(m);
  UPP_REAL(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(cv, m);
  __tsan_acquire(m);
}
bool UPP_REAL(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(CondVar*, Mutex*, Duration);
bool UPP_WRAP(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(CondVar* cv, Mutex* m, Duration d) {
  __tsan_release(m);
  const bool r = UPP_REAL(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(cv, m, d);
  __tsan_acquire(m);
  return r;
}
bool UPP_REAL(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(CondVar*, Mutex*, Time);
bool UPP_WRAP(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(CondVar* cv, Mutex* m, Time t) {
  __tsan_release(m);
  const bool r = UPP_REAL(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(cv, m, t);
  __tsan_acquire(m);
  return r;
}

}  // extern "C"
