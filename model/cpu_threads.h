// Process-wide CPU threading for LibTorch inference.
//
// Debian's LibTorch parallelises its own kernels with OpenMP (libgomp) and
// calls OpenBLAS for matrix products; the pthread build of OpenBLAS keeps its
// own worker threads. With both pools active on the same cores, libgomp's
// threads spin-wait after every parallel region while OpenBLAS's threads need
// those cores: measured on a 2-core machine this costs 40-50 % of a UNETR++
// forward pass. ConfigureCpuThreads() keeps a single pool: OpenMP with n
// threads for ATen (and for our own parallel loops), OpenBLAS single-threaded
// inside them.
//
// It also keeps freed memory in the process for reuse: a forward pass
// allocates and frees many 64 MiB activations, which glibc would otherwise
// map and unmap each time, paying a page fault per 4 KiB on every touch of
// fresh pages (measured: 0.45 s of a 1.5 s synapse window on 2 cores). The
// cost is that the heap keeps its high-water mark, like a caching allocator.
// Those settings hold for glibc's main arena only; threads other than the
// main one (the server's model workers) get arenas of their own, built from
// 64 MiB mmapped heaps that are unmapped again. So all threads share the
// main arena (M_ARENA_MAX = 1): in the server, a synapse window on 2 cores
// went from 2.3 s to 1.6 s and the kernel's share of CPU time from 13 % to
// 3 % (tools/upp-bench-load, BENCHMARKS.md). The price is one malloc lock,
// which inference's few large allocations do not notice.
//
// Call once at start-up, before any other thread starts, from the main thread.
#ifndef UPP_MODEL_CPU_THREADS_H_
#define UPP_MODEL_CPU_THREADS_H_

namespace upp::model {

// threads <= 0: the cores this process may run on (its CPU affinity, capped
// by a cgroup v2 CPU quota), or LibTorch's default when OMP_NUM_THREADS is
// set. Returns the number of
// intra-op threads in effect.
int ConfigureCpuThreads(int threads);

// True when an OpenBLAS with openblas_set_num_threads was found and set to 1.
bool BlasIsSingleThreaded();

// How many threads at::parallel_for runs this project's own loops on (EPA
// heads, instance-norm statistics, resampling, stitching), measured by
// running one. Its OpenMP backend is a template expanded in the caller's
// source file, so a library built without OpenMP runs them on one thread
// whatever the intra-op setting says (the case until 2026-11-30; CMake's
// upp_use_openmp). Logged at start-up; any thread may call it.
int ParallelLoopThreads();

// Whether this library was compiled with OpenMP (CMake option UPP_OPENMP and
// a compiler that has it); without, ParallelLoopThreads() is 1.
bool ParallelLoopsCompiledWithOpenMP();

}  // namespace upp::model

#endif  // UPP_MODEL_CPU_THREADS_H_
