# Shared build helpers for anode's own tests, examples and benchmarks (not installed).

# LibTorch's C++ flags (notably _GLIBCXX_USE_CXX11_ABI) must match everything linked with it.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

# One precompiled header with <torch/torch.h>: the dominant compile cost of every target here.
if(NOT TARGET anode_pch)
  add_library(anode_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch_stub.cpp)
  target_link_libraries(anode_pch PUBLIC anode::anode)
  target_precompile_headers(anode_pch PUBLIC <torch/torch.h>)
endif()

# anode_add_program(<name> <sources...>): an executable that links anode and reuses the PCH.
function(anode_add_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE anode::anode)
  target_precompile_headers(${name} REUSE_FROM anode_pch)
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
