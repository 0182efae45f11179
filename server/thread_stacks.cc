// Raises every explicitly requested thread stack to at least 1 MiB.
//
// Why: glibc carves a thread's static TLS out of its stack. Our process holds
// ~100 KiB of static TLS (OpenBLAS 60 KiB, glog 30 KiB, LibTorch 10 KiB),
// and Debian's civetweb (behind prometheus-cpp's Exposer) starts its threads
// with a fixed ~100 KiB stack, so pthread_create fails ("Cannot create
// threads") and /metrics could not be served next to LibTorch. Civetweb has
// no option for its stack size, so this definition interposes the libc one
// (the executable's symbol wins); it only ever enlarges a request.
//
// Compiled into each executable that links upp_server (an INTERFACE source),
// exported with --export-dynamic-symbol so that shared libraries bind to it.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr size_t kMinimum = size_t{1} << 20;
  return real(attr, std::max(size, kMinimum));
}
