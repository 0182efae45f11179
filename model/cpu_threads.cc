#include "model/cpu_threads.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

namespace upp::model {
namespace {
std::atomic<bool> blas_single{false};
}

int ConfigureCpuThreads(int threads) {
  // 0 is "all cores" set explicitly: LibTorch's own default came out as one
  // thread on a 2-core machine (issue 32). The cores are those this process
  // may run on; OMP_NUM_THREADS, when set, is the operator's choice.
  if (threads <= 0 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    cpu_set_t set;
    CPU_ZERO(&set);
    threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
  }
  if (threads > 0) torch::set_num_threads(threads);
  // Serve every allocation from the heap and never trim it (see the header).
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  mallopt(M_TOP_PAD, 64 << 20);
  // Looked up at run time: LibTorch links the BLAS chosen by Debian's
  // alternatives (libblas.so.3), which may or may not be OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(1);
    blas_single = true;
  }
  return torch::get_num_threads();
}

bool BlasIsSingleThreaded() { return blas_single; }

int ParallelLoopThreads() {
  std::mutex mu;
  std::set<std::thread::id> seen;
  at::parallel_for(0, 64 * at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int>(seen.size());
}

bool ParallelLoopsCompiledWithOpenMP() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace upp::model
