// The CIFAR example's data side: binary parsing of both releases and its errors, the batch dataset
// and sampler, batched augmentation, the command line, the learning-rate schedule and the CSV log.
// Every file is generated here, in a temporary directory.

#include "examples/cifar/augment.hpp"
#include "examples/cifar/cifar_data.hpp"
#include "examples/cifar/config.hpp"
#include "examples/cifar/csv_log.hpp"
#include "examples/cifar/dataset.hpp"
#include "examples/cifar/progress.hpp"
#include "examples/cifar/schedules.hpp"
#include "examples/cifar/synthetic.hpp"
#include "support/remove_tree.hpp"
#include "support/testing.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace test_cifar_data {

namespace fs = std::filesystem;
using cifar::Kind;

/// A fresh temporary directory per test, removed afterwards.
class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() / ("anode_cifar_" + std::string(info->test_suite_name()) + "_" +
                                       info->name() + "_" + std::to_string(::getpid()));
    anode_test::remove_tree(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { anode_test::remove_tree(dir); }
  fs::path dir;
};

using CifarFiles = TempDir;
using CifarDatasetTest = TempDir;
using CifarCsv = TempDir;

void append_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::app);
  out << text;
}

// ---------------------------------------------------------------------------------------------
// Parsing

TEST_F(CifarFiles, Cifar10RecordsAreParsedByteExactly) {
  cifar::write_synthetic(dir, Kind::Cifar10, 25, 7);
  auto train = cifar::load_split(dir.string(), Kind::Cifar10, true);
  auto test = cifar::load_split(dir.string(), Kind::Cifar10, false);
  ASSERT_EQ(train.size(), 25);
  ASSERT_EQ(test.size(), 7);
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{25, 3, 32, 32}));
  EXPECT_EQ(train.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(train.labels.scalar_type(), torch::kLong);

  // The five training files are read back to back in order: record 7 is the 3rd of file 2.
  auto expect = cifar::synthetic_records(Kind::Cifar10, 25, 0);
  for (int64_t i : {0, 7, 24}) {
    EXPECT_EQ(train.labels[i].item<int64_t>(), expect[i][0].item<uint8_t>()) << "record " << i;
    // Pixel (c, y, x) is byte 1 + 1024 c + 32 y + x of the record.
    EXPECT_TRUE(torch::equal(train.images[i].reshape({-1}), expect[i].narrow(0, 1, 3072)))
        << "record " << i;
  }
  EXPECT_EQ(train.images[3][2][31][5].item<uint8_t>(),
            expect[3][1 + 2 * 1024 + 31 * 32 + 5].item<uint8_t>());
  // The images are a view into the file buffer, not a copy.
  EXPECT_EQ(train.images.storage().data(), train.records.storage().data());
}

TEST_F(CifarFiles, Cifar100UsesTheFineLabel) {
  cifar::write_synthetic(dir, Kind::Cifar100, 230, 10);
  auto train = cifar::load_split(dir.string(), Kind::Cifar100, true);
  ASSERT_EQ(train.size(), 230);
  EXPECT_EQ(train.num_classes, 100);
  auto expect = cifar::synthetic_records(Kind::Cifar100, 230, 0);
  EXPECT_TRUE(torch::equal(train.labels, expect.select(1, 1).to(torch::kLong)));
  EXPECT_EQ(train.labels.max().item<int64_t>(), 99);  // fine labels, not the coarse 0..19
  EXPECT_TRUE(torch::equal(train.images[150].reshape({-1}), expect[150].narrow(0, 2, 3072)));
}

TEST_F(CifarFiles, ParentOfTheOfficialFolderIsAccepted) {
  cifar::write_synthetic(dir / "cifar-10-batches-bin", Kind::Cifar10, 10, 5);
  EXPECT_EQ(cifar::load_split(dir.string(), Kind::Cifar10, false).size(), 5);
}

TEST_F(CifarFiles, FirstNIsAView) {
  cifar::write_synthetic(dir, Kind::Cifar10, 20, 5);
  auto train = cifar::load_split(dir.string(), Kind::Cifar10, true);
  auto head = train.first(6);
  EXPECT_EQ(head.size(), 6);
  EXPECT_TRUE(torch::equal(head.images, train.images.narrow(0, 0, 6)));
  EXPECT_EQ(train.first(0).size(), 20);
  EXPECT_EQ(train.first(100).size(), 20);
}

TEST_F(CifarFiles, MissingDirectoryIsNamed) {
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split((dir / "nope").string(), Kind::Cifar10, true)); },
      {"nope' does not exist"}));
}

TEST_F(CifarFiles, MissingFileIsNamed) {
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  fs::remove(dir / "data_batch_3.bin");
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split(dir.string(), Kind::Cifar10, true)); },
      {"data_batch_3.bin' not found"}));
}

TEST_F(CifarFiles, WrongReleaseGetsAHint) {
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  const auto msg =
      anode_test::error_message([&] { cifar::load_split(dir.string(), Kind::Cifar100, true); });
  EXPECT_NE(msg.find("train.bin' not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("looks like cifar10"), std::string::npos) << msg;
}

TEST_F(CifarFiles, TruncatedFileIsNamed) {
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  fs::resize_file(dir / "test_batch.bin", 5 * 3073 - 100);
  const auto msg =
      anode_test::error_message([&] { cifar::load_split(dir.string(), Kind::Cifar10, false); });
  EXPECT_NE(msg.find("test_batch.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a multiple of the 3073-byte record"), std::string::npos) << msg;
}

TEST_F(CifarFiles, EmptyFileIsNamed) {
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  fs::resize_file(dir / "data_batch_5.bin", 0);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split(dir.string(), Kind::Cifar10, true)); },
      {"data_batch_5.bin' is empty"}));
}

TEST_F(CifarFiles, Cifar100SizedFileReadAsCifar10GetsAHint) {
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  // 3074 * 3 bytes is not a multiple of 3073 but is of 3074.
  fs::resize_file(dir / "test_batch.bin", 3074 * 3);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split(dir.string(), Kind::Cifar10, false)); }, {"--dataset"}));
}

TEST_F(CifarFiles, OutOfRangeLabelIsNamedWithItsRecord) {
  auto recs = cifar::synthetic_records(Kind::Cifar10, 8);
  recs[5][0] = 10;
  cifar::write_synthetic(dir, Kind::Cifar10, 10, 5);
  cifar::write_records(dir / "test_batch.bin", recs);
  const auto msg =
      anode_test::error_message([&] { cifar::load_split(dir.string(), Kind::Cifar10, false); });
  EXPECT_NE(msg.find("test_batch.bin' record 5 has label 10, outside [0, 10)"), std::string::npos)
      << msg;
}

TEST_F(CifarFiles, Cifar100BadFineAndCoarseLabels) {
  cifar::write_synthetic(dir, Kind::Cifar100, 10, 5);
  auto recs = cifar::synthetic_records(Kind::Cifar100, 6);
  recs[2][1] = 100;
  cifar::write_records(dir / "test.bin", recs);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split(dir.string(), Kind::Cifar100, false)); },
      {"record 2 has label 100, outside [0, 100)"}));
  recs = cifar::synthetic_records(Kind::Cifar100, 6);
  recs[4][0] = 20;
  cifar::write_records(dir / "train.bin", recs);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(cifar::load_split(dir.string(), Kind::Cifar100, true)); },
      {"train.bin' record 4 has coarse label 20"}));
}

TEST(CifarSplit, FromTensorsChecksLabels) {
  auto images = torch::zeros({4, 3, 32, 32}, torch::kUInt8);
  EXPECT_EQ(cifar::split_from_tensors(images, torch::tensor({0, 1, 2, 9}), 10).size(), 4);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(cifar::split_from_tensors(images, torch::tensor({0, 1, 2, 10}), 10));
      },
      {"labels must lie in [0, 10)"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(cifar::split_from_tensors(images, torch::tensor({0, 1}), 10));
      },
      {"labels must be [N] with N = 4"}));
}

// ---------------------------------------------------------------------------------------------
// Augmentation

TEST(CifarAugment, NormalisationOnlyIsExact) {
  auto images = torch::randint(0, 256, {5, 3, 32, 32}, torch::kLong).to(torch::kUInt8);
  const auto stats = cifar::channel_stats(Kind::Cifar10);
  auto x = cifar::augment_batch(images, cifar::AugmentOptions(stats).random(false),
                                cifar::make_generator(0));
  ASSERT_EQ(x.sizes(), images.sizes());
  ASSERT_EQ(x.scalar_type(), torch::kFloat);
  for (int c = 0; c < 3; ++c) {
    auto expect = (images.select(1, c).to(torch::kDouble) / 255.0 - stats.mean[c]) / stats.std[c];
    EXPECT_LT((x.select(1, c).to(torch::kDouble) - expect).abs().max().item<double>(), 1e-5);
  }
}

TEST(CifarAugment, CropAndFlipAreWindowsOfThePaddedImage) {
  const int64_t B = 64, P = 4;
  auto images = torch::rand({B, 3, 32, 32});
  auto out = cifar::random_crop_flip(images, P, true, cifar::make_generator(3));
  ASSERT_EQ(out.sizes(), images.sizes());
  auto padded = torch::constant_pad_nd(images, {P, P, P, P});
  std::set<int64_t> offsets;
  int flips = 0;
  for (int64_t b = 0; b < B; ++b) {
    bool found = false;
    for (int64_t oy = 0; oy <= 2 * P && !found; ++oy) {
      for (int64_t ox = 0; ox <= 2 * P && !found; ++ox) {
        auto win = padded[b].narrow(1, oy, 32).narrow(2, ox, 32);
        if (torch::equal(out[b], win)) {
          found = true;
        } else if (torch::equal(out[b], win.flip({2}))) {
          found = true;
          ++flips;
        }
        if (found) offsets.insert(oy * 100 + ox);
      }
    }
    EXPECT_TRUE(found) << "image " << b << " is not a (flipped) window of its padded input";
  }
  EXPECT_GT(flips, 16);  // P(flip) = 1/2: 64 images give 32 +- 4
  EXPECT_LT(flips, 48);
  EXPECT_GT(offsets.size(), 20u);  // 81 possible offsets, 64 draws: many distinct
}

TEST(CifarAugment, ValuesStayInTheNormalisedRangeAndPaddingIsBlack) {
  auto images = torch::full({256, 3, 32, 32}, 255, torch::kUInt8);  // white images
  const auto stats = cifar::channel_stats(Kind::Cifar100);
  auto x = cifar::augment_batch(images, cifar::AugmentOptions(stats), cifar::make_generator(1));
  for (int c = 0; c < 3; ++c) {
    const double lo = (0 - stats.mean[c]) / stats.std[c], hi = (1 - stats.mean[c]) / stats.std[c];
    auto xc = x.select(1, c);
    EXPECT_GE(xc.min().item<double>(), lo - 1e-5);
    EXPECT_LE(xc.max().item<double>(), hi + 1e-5);
    // Some crops reach into the zero padding (black), most pixels stay white.
    EXPECT_NEAR(xc.min().item<double>(), lo, 1e-5);
    EXPECT_GT((xc - hi).abs().lt(1e-5).to(torch::kDouble).mean().item<double>(), 0.8);
  }
}

TEST(CifarAugment, SameGeneratorSeedSameBatch) {
  auto images = torch::randint(0, 256, {8, 3, 32, 32}, torch::kLong).to(torch::kUInt8);
  const cifar::AugmentOptions opts(cifar::channel_stats(Kind::Cifar10));
  auto a = cifar::augment_batch(images, opts, cifar::make_generator(7, 1, 2));
  auto b = cifar::augment_batch(images, opts, cifar::make_generator(7, 1, 2));
  auto c = cifar::augment_batch(images, opts, cifar::make_generator(7, 1, 3));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
}

// ---------------------------------------------------------------------------------------------
// Dataset and sampler

TEST(CifarSampler, EachIndexOncePerEpochAndDeterministic) {
  cifar::EpochSampler s(50, true, 1, 3);
  std::vector<int64_t> seen;
  std::vector<size_t> sizes;
  int64_t expected_batch = 0;
  while (auto r = s.next(16)) {
    EXPECT_EQ(r->epoch, 3);
    EXPECT_EQ(r->batch, expected_batch++);
    sizes.push_back(r->size());
    seen.insert(seen.end(), r->indices.begin(), r->indices.end());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{16, 16, 16, 2}));
  auto sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(seen, sorted);  // shuffled

  cifar::EpochSampler again(50, true, 1, 3), other_epoch(50, true, 1, 4);
  std::vector<int64_t> a, b;
  while (auto r = again.next(16)) a.insert(a.end(), r->indices.begin(), r->indices.end());
  while (auto r = other_epoch.next(16)) b.insert(b.end(), r->indices.begin(), r->indices.end());
  EXPECT_EQ(a, seen);
  EXPECT_NE(b, seen);
}

TEST(CifarSampler, StartBatchContinuesTheSameOrder) {
  cifar::EpochSampler full(40, true, 5, 2), tail(40, true, 5, 2, /*start_batch=*/2);
  std::vector<cifar::BatchRequest> all;
  while (auto r = full.next(8)) all.push_back(*r);
  std::vector<cifar::BatchRequest> rest;
  while (auto r = tail.next(8)) rest.push_back(*r);
  ASSERT_EQ(all.size(), 5u);
  ASSERT_EQ(rest.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(rest[i].batch, all[i + 2].batch);
    EXPECT_EQ(rest[i].indices, all[i + 2].indices);
  }
  tail.reset();  // a reset goes back to the start batch, not to 0
  EXPECT_EQ(tail.next(8)->batch, 2);
}

// Data parallel: W ranks x batch b see, step for step, one process's batches of W b images, rank
// r every W-th of them from position r (torch's DistributedSampler's share of a full batch).
TEST(CifarSampler, RanksShareEachGlobalBatch) {
  const int64_t n = 45, b = 4;
  for (int64_t world : {2, 3}) {
    cifar::EpochSampler one(n, true, 9, 2);
    std::vector<cifar::BatchRequest> global;
    while (auto r = one.next(static_cast<std::size_t>(b * world))) global.push_back(*r);
    std::vector<std::vector<cifar::BatchRequest>> ranks(static_cast<std::size_t>(world));
    for (int64_t r = 0; r < world; ++r) {
      cifar::EpochSampler s(n, true, 9, 2, 0, r, world);
      while (auto q = s.next(static_cast<std::size_t>(b)))
        ranks[static_cast<std::size_t>(r)].push_back(*q);
    }
    for (std::size_t k = 0; k < global.size(); ++k) {
      const auto& g = global[k].indices;
      for (int64_t r = 0; r < world; ++r) {
        std::vector<int64_t> expect;
        for (std::size_t i = static_cast<std::size_t>(r); i < g.size();
             i += static_cast<std::size_t>(world))
          expect.push_back(g[i]);
        const auto& mine = ranks[static_cast<std::size_t>(r)];
        if (expect.empty()) {
          EXPECT_LE(mine.size(), k) << "rank " << r << " got a batch with no images";
          continue;
        }
        ASSERT_LT(k, mine.size()) << "world " << world << " rank " << r;
        EXPECT_EQ(mine[k].indices, expect) << "world " << world << " rank " << r << " batch " << k;
        EXPECT_EQ(mine[k].batch, static_cast<int64_t>(k));
      }
    }
  }
  // Resuming at a global batch: the same shares.
  cifar::EpochSampler from0(n, true, 9, 2, 0, 1, 2), from2(n, true, 9, 2, 2, 1, 2);
  from0.next(4);
  from0.next(4);
  EXPECT_EQ(from0.next(4)->indices, from2.next(4)->indices);
}

// Augmentation depends on (seed, epoch, image) only: an image is cropped and flipped alike in any
// batch, so the number of ranks does not change what a run sees.
TEST_F(CifarDatasetTest, AugmentationIsPerImage) {
  cifar::write_synthetic(dir, Kind::Cifar10, 20, 5);
  auto split = cifar::load_split(dir.string(), Kind::Cifar10, true);
  cifar::CifarDataset ds(split, cifar::AugmentOptions(cifar::channel_stats(Kind::Cifar10)), 5);
  auto all = ds.get_batch({3, 0, {1, 2, 3, 4, 5, 6}});
  auto some = ds.get_batch({3, 7, {4, 2}});
  EXPECT_TRUE(torch::equal(some.data[0], all.data[3]));
  EXPECT_TRUE(torch::equal(some.data[1], all.data[1]));
  // Another epoch or seed: other crops (for at least one of six images).
  auto next_epoch = ds.get_batch({4, 0, {1, 2, 3, 4, 5, 6}});
  EXPECT_FALSE(torch::equal(next_epoch.data, all.data));
  // Random at all: not the plain normalised images.
  cifar::CifarDataset plain(
      split, cifar::AugmentOptions(cifar::channel_stats(Kind::Cifar10)).random(false));
  EXPECT_FALSE(torch::equal(plain.get_batch({3, 0, {1, 2, 3, 4, 5, 6}}).data, all.data));
}

TEST_F(CifarDatasetTest, LoaderBatchesDoNotDependOnTheNumberOfWorkers) {
  cifar::write_synthetic(dir, Kind::Cifar10, 45, 5);
  auto split = cifar::load_split(dir.string(), Kind::Cifar10, true);
  const cifar::AugmentOptions opts(cifar::channel_stats(Kind::Cifar10));
  auto collect = [&](size_t workers) {
    auto loader = torch::data::make_data_loader(
        cifar::CifarDataset(split, opts, 11), cifar::EpochSampler(split.size(), true, 11, 1),
        torch::data::DataLoaderOptions().batch_size(10).workers(workers));
    std::vector<torch::data::Example<>> out;
    for (auto& b : *loader) out.push_back(b);
    return out;
  };
  auto serial = collect(0), parallel = collect(3);
  ASSERT_EQ(serial.size(), 5u);
  ASSERT_EQ(parallel.size(), 5u);
  int64_t total = 0;
  for (size_t i = 0; i < serial.size(); ++i) {
    EXPECT_EQ(serial[i].data.sizes()[1], 3);
    EXPECT_TRUE(torch::equal(serial[i].data, parallel[i].data)) << "batch " << i;
    EXPECT_TRUE(torch::equal(serial[i].target, parallel[i].target)) << "batch " << i;
    total += serial[i].target.size(0);
  }
  EXPECT_EQ(total, 45);
  EXPECT_EQ(serial.back().data.size(0), 5);
}

TEST_F(CifarDatasetTest, BatchHoldsTheRequestedImagesAndLabels) {
  cifar::write_synthetic(dir, Kind::Cifar10, 20, 5);
  auto split = cifar::load_split(dir.string(), Kind::Cifar10, true);
  const auto stats = cifar::channel_stats(Kind::Cifar10);
  cifar::CifarDataset ds(split, cifar::AugmentOptions(stats).random(false));
  cifar::BatchRequest r{0, 0, {4, 17, 2}};
  auto ex = ds.get_batch(r);
  ASSERT_EQ(ex.data.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(ex.target, torch::tensor({4, 7, 2}, torch::kLong)));
  auto expect =
      cifar::augment_batch(split.images.index_select(0, torch::tensor({4, 17, 2})),
                           cifar::AugmentOptions(stats).random(false), cifar::make_generator(0));
  EXPECT_TRUE(torch::allclose(ex.data, expect));
  EXPECT_EQ(ds.size().value(), 20u);
}

// ---------------------------------------------------------------------------------------------
// Command line and schedule

cifar::Config parse(std::vector<std::string> a) {
  return cifar::parse_args(a);
}

TEST(CifarCli, DefaultsAreTheOfficialOnes) {
  auto c = parse({"--data", "d"});
  EXPECT_EQ(c.data, "d");
  EXPECT_EQ(c.dataset, Kind::Cifar10);
  EXPECT_EQ(c.network, "resnet");
  EXPECT_EQ(c.method, anode::Method::Euler);
  EXPECT_EQ(c.nt, 2);
  EXPECT_EQ(c.gradient, anode::Gradient::Anode);
  EXPECT_EQ(c.epochs, 350);
  EXPECT_EQ(c.batch_size, 256);
  EXPECT_DOUBLE_EQ(c.lr, 0.1);
  EXPECT_EQ(c.schedule, "step");
  EXPECT_DOUBLE_EQ(c.momentum, 0.9);
  EXPECT_DOUBLE_EQ(c.weight_decay, 5e-4);
  EXPECT_DOUBLE_EQ(c.width, 1.0);
  EXPECT_EQ(c.device, "cpu");
  EXPECT_FALSE(c.resume);
}

TEST(CifarCli, EveryOptionIsParsed) {
  auto c = parse({"--data=/x",
                  "--dataset",
                  "cifar100",
                  "--network",
                  "sqnxt",
                  "--width",
                  "0.5",
                  "--blocks",
                  "2,2,2,2",
                  "--method",
                  "RK4",
                  "--nt",
                  "3",
                  "--gradient",
                  "anode",
                  "--checkpoints",
                  "1",
                  "--keep-forward-checkpoints",
                  "--epochs",
                  "7",
                  "--batch-size",
                  "32",
                  "--lr",
                  "0.05",
                  "--schedule",
                  "onecycle",
                  "--momentum",
                  "0.8",
                  "--wd",
                  "0",
                  "--device",
                  "cpu",
                  "--threads",
                  "2",
                  "--workers",
                  "0",
                  "--limit",
                  "100",
                  "--test-limit",
                  "50",
                  "--seed",
                  "9",
                  "--out",
                  "o",
                  "--resume",
                  "--no-progress"});
  EXPECT_EQ(c.data, "/x");
  EXPECT_EQ(c.dataset, Kind::Cifar100);
  EXPECT_EQ(c.network, "sqnxt");
  EXPECT_DOUBLE_EQ(c.width, 0.5);
  EXPECT_EQ(c.blocks, (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(c.method, anode::Method::RK4);
  EXPECT_EQ(c.nt, 3);
  EXPECT_EQ(c.checkpoints, 1);
  EXPECT_EQ(c.epochs, 7);
  EXPECT_EQ(c.batch_size, 32);
  EXPECT_DOUBLE_EQ(c.lr, 0.05);
  EXPECT_EQ(c.schedule, "onecycle");
  EXPECT_DOUBLE_EQ(c.momentum, 0.8);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.0);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.workers, 0);
  EXPECT_EQ(c.limit, 100);
  EXPECT_EQ(c.test_limit, 50);
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.out, "o");
  EXPECT_TRUE(c.resume);
  EXPECT_FALSE(c.progress);
  const auto spec = c.model_spec();
  EXPECT_EQ(spec.num_classes, 100);
  EXPECT_EQ(spec.ode.steps(), 3);
  EXPECT_EQ(spec.ode.method(), anode::Method::RK4);
  EXPECT_EQ(spec.ode.checkpoints(), 1);
  EXPECT_TRUE(spec.ode.keep_forward_checkpoints());
  EXPECT_FALSE(parse({"--data", "d"}).model_spec().ode.keep_forward_checkpoints());
}

TEST(CifarCli, BadOptionsNameTheOptionAndTheValue) {
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--schedule", "cosine"}));
      },
      {"--schedule", "needs step or onecycle, got 'cosine'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--epochs", "ten"}));
      },
      {"option --epochs: needs an integer >= 1, got 'ten'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--epochs", "0"}));
      },
      {"got '0'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--nt", "2x"}));
      },
      {"option --nt"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--lr", "-1"}));
      },
      {"option --lr: needs a number > 0, got '-1'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--width", "nan"}));
      },
      {"option --width"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--method", "rk3"}));
      },
      {"option --method: anode: unknown method 'rk3'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--gradient", "magic"}));
      },
      {"option --gradient: anode: unknown gradient 'magic'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--network", "vgg"}));
      },
      {"option --network: needs resnet, sqnxt, alexnet, resnet4 or resnet10, "
       "got 'vgg'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--dataset", "mnist"}));
      },
      {"option --dataset: unknown dataset 'mnist'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--blocks", "2,2,2"}));
      },
      {"option --blocks: needs 4 comma-separated integers >= 1, got '2,2,2'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--device", "tpu"}));
      },
      {"option --device: needs cpu, cuda or cuda:I, got 'tpu'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--batch-size"}));
      },
      {"option --batch-size: 1 required INT missing"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--frobnicate"}));
      },
      {"not expected: --frobnicate"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--resume=yes"}));
      },
      {"option --resume: takes no value, got 'yes'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--epochs", "3"}));
      },
      {"option --data is required"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--gradient", "backprop", "--checkpoints", "2"}));
      },
      {"option --checkpoints 2 needs --gradient anode"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--keep-forward-checkpoints"}));
      },
      {"option --keep-forward-checkpoints needs --checkpoints K >= 1"}));
  EXPECT_TRUE(parse({"--help"}).help);
  EXPECT_NE(cifar::usage().find("--evaluate"), std::string::npos);
}

TEST(CifarCli, HelpListsEveryOptionWithItsDefault) {
  EXPECT_TRUE(parse({"-h"}).help);
  EXPECT_TRUE(parse({"--data", "d", "--help"}).help);
  const std::string help = cifar::usage();
  for (const char* option : {"--data",        "--dataset",
                             "--limit",       "--test-limit",
                             "--workers",     "--network",
                             "--schedule",    "--width",
                             "--blocks",      "--method",
                             "--nt",          "--gradient",
                             "--checkpoints", "--keep-forward-checkpoints",
                             "--epochs",      "--batch-size",
                             "--lr",          "--momentum",
                             "--wd",          "--seed",
                             "--device",      "--threads",
                             "--amp",         "--channels-last",
                             "--out",         "--resume",
                             "--evaluate",    "--gradient-gap",
                             "--gap-batches", "--no-progress",
                             "--help"})
    EXPECT_NE(help.find(option), std::string::npos) << option << " missing from\n" << help;
  for (const auto& name : cifar::network_names())
    EXPECT_NE(help.find(name), std::string::npos) << name << " missing from\n" << help;
  // Defaults read "INT=350" (CLI11 2.1, Debian 12) or "INT [350]" (CLI11 2.4, Debian 13).
  auto shows_default = [&help](const std::string& v) {
    return help.find("=" + v) != std::string::npos || help.find("[" + v + "]") != std::string::npos;
  };
  EXPECT_TRUE(shows_default("350")) << help;                    // --epochs' default
  EXPECT_TRUE(shows_default("runs/cifar")) << help;             // --out's default
  EXPECT_NE(help.find("REQUIRED"), std::string::npos) << help;  // --data
}

// --method's help line names every method the parser takes.
TEST(CifarCli, MethodHelpListsEveryMethod) {
  const std::string help = cifar::usage();
  const auto begin = help.find("--method"), end = help.find("\n  --nt", begin);
  ASSERT_NE(begin, std::string::npos) << help;
  ASSERT_NE(end, std::string::npos) << help;
  const std::string method_help = help.substr(begin, end - begin);
  for (const char* name : {"euler", "rk2", "rk4", "bosh3", "dopri5", "tsit5"}) {
    EXPECT_EQ(anode::method_from_string(name), parse({"--data", "d", "--method", name}).method);
    EXPECT_NE(method_help.find(name), std::string::npos) << name << " missing from\n"
                                                         << method_help;
  }
}

// --amp: off by default, bf16 on either device, fp16 on CUDA only; --channels-last needs
// LibTorch >= 2.0. Each refusal names the option and the reason.
TEST(CifarCli, AmpAndChannelsLast) {
  EXPECT_EQ(parse({"--data", "d"}).amp, cifar::Amp::Off);
  EXPECT_FALSE(parse({"--data", "d"}).channels_last);
  EXPECT_EQ(parse({"--data", "d", "--amp", "bf16"}).amp, cifar::Amp::BF16);
  EXPECT_EQ(parse({"--data", "d", "--amp", "bf16", "--device", "cuda"}).amp, cifar::Amp::BF16);
  EXPECT_EQ(parse({"--data", "d", "--amp", "fp16", "--device", "cuda:1"}).amp, cifar::Amp::FP16);
  EXPECT_EQ(parse({"--data", "d", "--amp", "fp16", "--amp", "off"}).amp, cifar::Amp::Off);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--amp", "fp8"}));
      },
      {"option --amp: needs off, bf16 or fp16, got 'fp8'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--amp", "fp16"}));  // --device cpu is the default
      },
      {"option --amp fp16 needs --device cuda (got --device cpu)", "CPU autocast supports bf16"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--amp", "fp16", "--device", "cpu"}));
      },
      {"option --amp fp16 needs --device cuda"}));
  const std::string help = cifar::usage();
  EXPECT_NE(help.find("--amp"), std::string::npos) << help;
  EXPECT_NE(help.find("--channels-last"), std::string::npos) << help;
  if (cifar::channels_last_supported()) {
    EXPECT_TRUE(parse({"--data", "d", "--channels-last"}).channels_last);
  } else {
    EXPECT_TRUE(anode_test::throws_mentioning(
        [&] {
          (void)(parse({"--data", "d", "--channels-last"}));
        },
        {"option --channels-last needs LibTorch >= 2.0",
         "channels-last backward of a strided 1x1 convolution corrupts the heap"}));
  }
}

TEST(CifarCli, NetworksComeFromTheModelList) {
  for (const auto& name : cifar::network_names()) {
    EXPECT_TRUE(cifar::is_network(name)) << name;
    EXPECT_EQ(parse({"--data", "d", "--network", name}).network, name);
  }
  for (const std::string name : {"alexnet", "resnet4", "resnet10"}) {
    ASSERT_FALSE(cifar::takes_blocks(name)) << name;
    EXPECT_TRUE(anode_test::throws_mentioning(
        [&] {
          (void)(parse({"--data", "d", "--network", name, "--blocks", "1,1,1,1"}));
        },
        {"option --blocks: network " + name + " has a fixed layout"}));
  }
  EXPECT_EQ(parse({"--data", "d", "--network", "sqnxt", "--blocks", "1,2,3,4"}).blocks,
            (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(CifarCli, ValuesAreDecimalAndTheLastOneWins) {
  EXPECT_EQ(parse({"--data", "d", "--epochs", "010"}).epochs, 10);  // not octal
  EXPECT_EQ(parse({"--data", "d", "--epochs", "3", "--epochs=4"}).epochs, 4);
  EXPECT_EQ(parse({"--data", "a", "--data", "b"}).data, "b");
  EXPECT_TRUE(parse({"--data", "d", "--resume=true"}).resume);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", ""}));
      },
      {"option --data: needs a directory, got ''"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--seed", "-1"}));
      },
      {"option --seed: needs an integer >= 0, got '-1'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--momentum", "-0.5"}));
      },
      {"option --momentum: needs a number >= 0, got '-0.5'"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "--resume", "--evaluate", "f"}));
      },
      {"options --resume and --evaluate exclude each other"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        (void)(parse({"--data", "d", "extra"}));
      },
      {"not expected: extra"}));
}

/// The rate the optimizer holds during each step of a `c.epochs`-epoch run of `batches` batches an
/// epoch, from step `first_step` on, with `--schedule c.schedule`.
std::vector<double> scheduled_rates(const cifar::Config& c, int64_t batches,
                                    int64_t first_step = 0) {
  auto w = torch::zeros({1}, torch::requires_grad());
  torch::optim::SGD optimizer({w}, torch::optim::SGDOptions(123.0));  // overwritten by step()
  auto schedule = cifar::make_lr_schedule(c, optimizer, batches, first_step);
  std::vector<double> rates;
  for (int64_t i = first_step; i < c.epochs * batches; ++i) {
    EXPECT_EQ(schedule->next_step(), i);
    schedule->step();
    rates.push_back(optimizer.param_groups()[0].options().get_lr());
  }
  return rates;
}

cifar::Config schedule_config(const std::string& schedule, double lr, int64_t epochs) {
  cifar::Config c;
  c.schedule = schedule;
  c.lr = lr;
  c.epochs = epochs;
  return c;
}

// --schedule step: the official rate (--lr, /10 after epoch 150 of 350, /10 again after 250),
// the milestones scaled to --epochs and rounded up; every batch of an epoch has the epoch's rate.
TEST(CifarSchedule, StepFollowsTheOfficialMilestonesScaledToTheEpochs) {
  const auto by_hand = [](double lr, int64_t epoch, int64_t epochs) {
    const int64_t first = (150 * epochs + 349) / 350, second = (250 * epochs + 349) / 350;
    return epoch > second ? lr / 100 : epoch > first ? lr / 10 : lr;
  };
  for (const int64_t epochs : {1, 2, 5, 35, 350}) {
    const int64_t batches = 3;
    const auto rates = scheduled_rates(schedule_config("step", 0.1, epochs), batches);
    ASSERT_EQ(rates.size(), static_cast<std::size_t>(epochs * batches));
    for (int64_t i = 0; i < epochs * batches; ++i)  // bitwise: the rates the log has always had
      EXPECT_EQ(rates[i], by_hand(0.1, i / batches + 1, epochs)) << epochs << " epochs, step " << i;
  }
  // The values themselves: 350 epochs change after 150 and 250, 35 after 15 and 25, 5 after 3 and
  // 4, and one epoch runs at the full rate.
  const auto r350 = scheduled_rates(schedule_config("step", 0.1, 350), 1);
  EXPECT_EQ(r350[149], 0.1);
  EXPECT_EQ(r350[150], 0.01);
  EXPECT_EQ(r350[249], 0.01);
  EXPECT_EQ(r350[250], 0.001);
  EXPECT_EQ(r350[349], 0.001);
  const auto r35 = scheduled_rates(schedule_config("step", 0.1, 35), 1);
  EXPECT_EQ(r35[14], 0.1);
  EXPECT_EQ(r35[15], 0.01);
  EXPECT_EQ(r35[25], 0.001);
  EXPECT_EQ(scheduled_rates(schedule_config("step", 0.1, 5), 1),
            (std::vector<double>{0.1, 0.1, 0.1, 0.01, 0.001}));
  EXPECT_EQ(scheduled_rates(schedule_config("step", 0.1, 1), 4), std::vector<double>(4, 0.1));
}

// --schedule onecycle: per batch, linear from --lr / 10 up to --lr over the first 15 % of the
// run's batches, then linear down to 0.
TEST(CifarSchedule, OneCycleWarmsUpThenDecaysToZero) {
  const auto by_hand = [](double lr, double progress) {
    if (progress < 0.15) return lr * (0.1 + 0.9 * progress / 0.15);
    return lr * std::max(0.0, (1.0 - progress) / (1.0 - 0.15));
  };
  const int64_t epochs = 4, batches = 25;  // 100 steps: step i is at progress i / 100
  const auto rates = scheduled_rates(schedule_config("onecycle", 0.2, epochs), batches);
  ASSERT_EQ(rates.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(rates[i], by_hand(0.2, i / 100.0)) << i;  // bitwise
    EXPECT_GT(rates[i], 0.0) << i;
    if (i > 0 && i <= 15) {
      EXPECT_GT(rates[i], rates[i - 1]) << i;  // up...
    } else if (i > 15) {
      EXPECT_LT(rates[i], rates[i - 1]) << i;  // ...then down
    }
  }
  EXPECT_DOUBLE_EQ(rates[0], 0.02);  // starts at lr / 10
  EXPECT_DOUBLE_EQ(rates[15], 0.2);  // peak after 15 % of the run
  EXPECT_NEAR(rates[57], 0.2 * 43 / 85, 1e-15);
  EXPECT_NEAR(rates[99], 0.2 / 85, 1e-15);  // one step before 0
}

// A resumed run builds its scheduler at the step it stopped at: the rates from there on are those
// of the uninterrupted run.
TEST(CifarSchedule, StartingAtAStepContinuesTheSameRates) {
  for (const char* schedule : {"step", "onecycle"}) {
    const auto c = schedule_config(schedule, 0.1, 7);
    const auto all = scheduled_rates(c, 5);
    for (const int64_t start : {1, 5, 17, 34}) {
      EXPECT_EQ(scheduled_rates(c, 5, start), std::vector<double>(all.begin() + start, all.end()))
          << schedule << " from step " << start;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Log and progress

TEST_F(CifarCsv, ResumeDropsTheRowsOfTheResumedEpoch) {
  const auto path = (dir / "log.csv").string();
  {
    cifar::CsvLog log(path, 1);
    for (int e = 1; e <= 3; ++e) {
      cifar::EpochRecord r;
      r.epoch = e;
      r.test_acc = 0.1 * e;
      log.write(r);
    }
  }
  append_text(path, "4,0.1,torn");  // a crash mid-write leaves a partial last line
  { cifar::CsvLog log(path, 3); }   // resuming epoch 3: rows 1 and 2 stay
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], cifar::CsvLog::kHeader);
  EXPECT_EQ(lines[1].substr(0, 2), "1,");
  EXPECT_EQ(lines[2].substr(0, 2), "2,");
  { cifar::CsvLog log(path, 1); }  // a fresh run starts over
  std::ifstream in2(path);
  std::string l;
  int n = 0;
  while (std::getline(in2, l)) ++n;
  EXPECT_EQ(n, 1);
}

TEST(CifarProgress, LineShowsLossAccuracyRateAndEta) {
  std::ostringstream os;
  cifar::ProgressBar bar(os, "epoch 1/3", 10, 0, true, /*tty=*/false);
  bar.update(5, 640, 1.23456, 0.5);
  const auto text = os.str();
  EXPECT_NE(text.find("epoch 1/3 ["), std::string::npos) << text;
  EXPECT_NE(text.find(" 50% 5/10"), std::string::npos) << text;
  EXPECT_NE(text.find("loss 1.2346"), std::string::npos) << text;
  EXPECT_NE(text.find("acc 50.00%"), std::string::npos) << text;
  EXPECT_NE(text.find("img/s"), std::string::npos) << text;
  EXPECT_NE(text.find("ETA "), std::string::npos) << text;
  EXPECT_EQ(cifar::format_duration(3723), "1h02m03s");
  EXPECT_EQ(cifar::format_duration(65), "1m05s");
  EXPECT_EQ(cifar::format_duration(7), "7s");
}

}  // namespace test_cifar_data
