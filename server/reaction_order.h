// gRPC runs one call's reactions one after another, possibly on different
// threads; the ordering comes from gRPC's own (uninstrumented) locks. In a
// ThreadSanitizer build (deploy/tsan.sh) each reaction says so with
// UPP_REACTION(), so that a reactor's read-side state is not reported as
// racing between reactions; elsewhere the macros cost nothing.
#ifndef UPP_SERVER_REACTION_ORDER_H_
#define UPP_SERVER_REACTION_ORDER_H_

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define UPP_HAPPENS_AFTER(p) __tsan_acquire(p)
#define UPP_HAPPENS_BEFORE(p) __tsan_release(p)
#else
#define UPP_HAPPENS_AFTER(p) (void)0
#define UPP_HAPPENS_BEFORE(p) (void)0
#endif

// Acquire at the start of a reaction, release at its end (whatever path).
#define UPP_REACTION()                                           \
  UPP_HAPPENS_AFTER(this);                                       \
  struct ReactionEnd {                                           \
    const void* p;                                               \
    ~ReactionEnd() { UPP_HAPPENS_BEFORE(const_cast<void*>(p)); } \
  } reaction_end {                                               \
    this                                                         \
  }

#endif  // UPP_SERVER_REACTION_ORDER_H_
