#pragma once
// Deleting a test's scratch folder without std::filesystem::remove_all.
//
// PyTorch's pip wheels (seen with torch 2.11.0+cu130) export their own copy of
// std::filesystem::remove_all from libtorch.so. A test linked against that LibTorch binds to it
// and segfaults inside it (a call through a null pointer; cuda-gdb's backtrace on the lent GPU
// machine). POSIX nftw has no such interposition, so the test fixtures use it instead.

#include <ftw.h>

#include <cstdio>
#include <filesystem>

namespace anode_test {

/// Removes `dir` and everything below it; a missing `dir` is not an error (like remove_all).
inline void remove_tree(const std::filesystem::path& dir) {
  const auto remove_entry = [](const char* path, const struct stat*, int, struct FTW*) -> int {
    return std::remove(path);
  };
  // FTW_DEPTH: children before their folder; FTW_PHYS: never follow symbolic links.
  (void)nftw(dir.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

}  // namespace anode_test
