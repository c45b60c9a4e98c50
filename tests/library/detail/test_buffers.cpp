// detail/buffers.hpp on its own: snapshots of module buffers (BatchNorm statistics) and their
// restoration, which keeps a recomputation from updating the running statistics a second time.

#include <anode/detail/buffers.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <vector>

namespace test_buffers {

using anode::detail::BufferRestore;
using anode::detail::restore_buffers;
using anode::detail::snapshot_buffers;

TEST(Buffers, SnapshotIsADeepCopy) {
  std::vector<torch::Tensor> bufs{torch::zeros({3}), torch::ones({2, 2})};
  const auto snap = snapshot_buffers(bufs);
  bufs[0].add_(5);
  EXPECT_TRUE(torch::equal(snap[0], torch::zeros({3})));
  EXPECT_NE(snap[1].data_ptr(), bufs[1].data_ptr());
}

TEST(Buffers, RestoreWritesInPlaceAndSkipsUndefined) {
  std::vector<torch::Tensor> bufs{torch::arange(4.0), torch::Tensor()};
  const auto snap = snapshot_buffers(bufs);
  EXPECT_FALSE(snap[1].defined());
  const void* storage = bufs[0].data_ptr();
  bufs[0].mul_(10);
  restore_buffers(bufs, snap);
  EXPECT_EQ(bufs[0].data_ptr(), storage);  // the module's own tensor, not a new one
  EXPECT_TRUE(torch::equal(bufs[0], torch::arange(4.0)));
}

TEST(Buffers, BufferRestoreUndoesABatchNormUpdate) {
  torch::nn::BatchNorm1d bn(4);
  bn->train();
  const auto mean0 = bn->running_mean.clone();
  const auto count0 = bn->num_batches_tracked.clone();
  {
    BufferRestore restore(bn->buffers());
    (void)bn(torch::randn({8, 4}) + 3.0);
    EXPECT_FALSE(torch::equal(bn->running_mean, mean0));  // the recomputation updated them
  }
  EXPECT_TRUE(torch::equal(bn->running_mean, mean0));
  EXPECT_TRUE(torch::equal(bn->num_batches_tracked, count0));
}

TEST(Buffers, BufferRestoreRestoresWhenUnwinding) {
  auto b = torch::zeros({2});
  try {
    BufferRestore restore({b});
    b.fill_(1);
    throw std::runtime_error("a failed recomputation");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(torch::equal(b, torch::zeros({2})));
}

TEST(Buffers, RestoringBeforeABackwardThatReadsThemTripsTheVersionCheck) {
  // Why BufferRestore must outlive the recomputation's backward: a graph that saved a buffer
  // (here an eval-mode BatchNorm, which normalises with the running statistics) refuses to run
  // after the buffer was written in place.
  torch::nn::BatchNorm1d bn(3);
  bn->eval();
  auto x = torch::randn({5, 3}, torch::requires_grad());
  const auto snap = snapshot_buffers(bn->buffers());
  auto y = bn(x).pow(2).sum();
  restore_buffers(bn->buffers(), snap);
  EXPECT_THROW(y.backward(), c10::Error);
}

}  // namespace test_buffers
