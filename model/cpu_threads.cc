#include "model/cpu_threads.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace upp::model {
namespace {
std::atomic<bool> blas_single{false};

// The cores this process may use: its CPU affinity, capped by a cgroup v2
// CPU quota (a Kubernetes CPU limit of 2 on a 64-core node is 2 cores; more
// threads than that only wait for their share). 0 when unknown.
int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
  std::ifstream max("/sys/fs/cgroup/cpu.max");
  std::string quota;
  long long period = 0;
  if (max >> quota >> period && quota != "max" && period > 0) {
    const long long q = std::atoll(quota.c_str());
    const int limit = static_cast<int>(std::max<long long>(1, (q + period - 1) / period));
    cores = cores > 0 ? std::min(cores, limit) : limit;
  }
  return cores;
}
}  // namespace

int ConfigureCpuThreads(int threads) {
  // 0 is "all cores" set explicitly: LibTorch's own default came out as one
  // thread on a 2-core machine (issue 32). OMP_NUM_THREADS, when set, is the
  // operator's choice.
  if (threads <= 0 && std::getenv("OMP_NUM_THREADS") == nullptr) threads = UsableCores();
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
