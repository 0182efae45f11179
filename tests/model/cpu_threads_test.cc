// model/cpu_threads.h: the project's own parallel loops really use the
// intra-op threads (a library built without OpenMP ran them on one).
#include "model/cpu_threads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

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

}  // namespace
}  // namespace upp::model
