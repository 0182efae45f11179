// model/cpu_threads.h: the project's own parallel loops really use the
// intra-op threads (a library built without OpenMP ran them on one).
#include "model/cpu_threads.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>

namespace upp::model {
namespace {

TEST(CpuThreadsTest, ParallelLoopsUseTheIntraOpThreads) {
  if (!ParallelLoopsCompiledWithOpenMP()) {
    GTEST_SKIP() << "built without OpenMP (UPP_OPENMP=OFF or no compiler support): the loops run on one thread";
  }
  const int before = torch::get_num_threads();
  EXPECT_EQ(ConfigureCpuThreads(2), 2);
  // Exactly 2 where LibTorch and this project share libgomp (Debian); a pip
  // LibTorch brings its own copy, whose thread setting ours may not see.
  EXPECT_GE(ParallelLoopThreads(), 2);
  torch::set_num_threads(1);
  EXPECT_EQ(ParallelLoopThreads(), 1);
  torch::set_num_threads(before);
}

// intra_op_threads 0 means every core this process may use, set explicitly
// (LibTorch's own default gave one thread on a 2-core machine).
TEST(CpuThreadsTest, ZeroMeansTheCoresThisProcessMayUse) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) GTEST_SKIP() << "OMP_NUM_THREADS is the operator's choice";
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int before = torch::get_num_threads();
  torch::set_num_threads(1);
  const int threads = ConfigureCpuThreads(0);
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, CPU_COUNT(&set));  // a cgroup CPU quota may lower it
  if (!std::ifstream("/sys/fs/cgroup/cpu.max")) EXPECT_EQ(threads, CPU_COUNT(&set));
  EXPECT_EQ(torch::get_num_threads(), threads);
  torch::set_num_threads(before);
}

}  // namespace
}  // namespace upp::model
