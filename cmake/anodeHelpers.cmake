# Shared build helpers for anode's own tests, examples and benchmarks (not installed).

# CLI11 (header-only; Debian's libcli11-dev) parses the command lines of the examples and the
# benchmark programs, and the tests that check those parsers. The library itself does not use it.
# Without an installed CLI11 package, a copy of its headers in ANODE_CLI11_INCLUDE_DIR serves (the
# GPU machine, which has no network, gets one in .gpu-deps/, see docs/gpu.md).
set(ANODE_CLI11_INCLUDE_DIR "${PROJECT_SOURCE_DIR}/.gpu-deps/CLI11/include" CACHE PATH
    "CLI11 headers (containing CLI/CLI.hpp), used when find_package(CLI11) finds no package")
if(NOT TARGET CLI11::CLI11)
  find_package(CLI11 CONFIG QUIET)
  if(NOT CLI11_FOUND AND EXISTS "${ANODE_CLI11_INCLUDE_DIR}/CLI/CLI.hpp")
    add_library(CLI11::CLI11 INTERFACE IMPORTED GLOBAL)
    set_target_properties(CLI11::CLI11 PROPERTIES
                          INTERFACE_INCLUDE_DIRECTORIES "${ANODE_CLI11_INCLUDE_DIR}")
  elseif(NOT CLI11_FOUND)
    message(FATAL_ERROR
      "anode: CLI11 was not found. The examples, benchmarks and tests parse their command lines "
      "with it: install it (Debian/Ubuntu: `apt-get install libcli11-dev`, which scripts/setup.sh "
      "does), point CMake at its CLI11Config.cmake (-DCLI11_DIR=...) or at its headers "
      "(-DANODE_CLI11_INCLUDE_DIR=...); to build and install only the library, configure with "
      "-DANODE_BUILD_TESTS=OFF -DANODE_BUILD_EXAMPLES=OFF -DANODE_BUILD_BENCHMARKS=OFF.")
  endif()
endif()

# LibTorch's C++ flags (notably _GLIBCXX_USE_CXX11_ABI) must match everything linked with it.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# anode_target_flags(<target>): warnings, -Werror (ANODE_WERROR) and sanitizers (ANODE_SANITIZE)
# for a target built from anode's own sources. LibTorch's headers come in as system headers (the
# include directories of its imported targets), so the warnings are about anode's code only.
function(anode_target_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(ANODE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(ANODE_SANITIZE)
    # The library is header-only: instrumenting the programs that include it instruments it.
    # Any undefined behaviour aborts the program (a failed test) instead of printing a line.
    # GCC 12's -Wmaybe-uninitialized misfires under -fsanitize=address (on LibTorch's
    # c10::optional inside torch::data's loader, instantiated by examples/cifar): off here only.
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                             -fno-sanitize-recover=undefined -fno-omit-frame-pointer
                                             -Wno-maybe-uninitialized)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# One precompiled header with <torch/torch.h>: the dominant compile cost of every target here. Its
# flags must match those of the programs that reuse it (anode_target_flags on both).
if(NOT TARGET anode_pch)
  add_library(anode_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch_stub.cpp)
  target_link_libraries(anode_pch PUBLIC anode::anode)
  target_precompile_headers(anode_pch PUBLIC <torch/torch.h>)
  anode_target_flags(anode_pch)
endif()

# anode_add_program(<name> <sources...>): an executable that links anode and reuses the PCH.
function(anode_add_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE anode::anode)
  target_precompile_headers(${name} REUSE_FROM anode_pch)
  anode_target_flags(${name})
endfunction()
