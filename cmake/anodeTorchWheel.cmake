# LibTorch from PyPI's torch wheel, with CUDA: its CUDA libraries (cuBLAS, cuDNN, NCCL, the CUDA
# runtime, ...) are the nvidia-* wheels beside it, site-packages/nvidia/*/lib, which
# libtorch_cuda.so finds through its own RPATH ($ORIGIN/../../nvidia/...). A CUDA toolkit elsewhere
# (/usr/local/cuda) brings nvcc and the headers, and older copies of the same libraries: the
# linker, which searches the executable's -rpath before a library's RPATH, then resolves
# libtorch_cuda.so's libnccl.so.2 to the toolkit's older NCCL (undefined ncclCommGrow, ...), and
# the executable's own libcudart.so.13 to the toolkit's. Linked here with these flags, every
# program uses the wheel's libraries, the ones that LibTorch was built against.
#
# Sets ANODE_TORCH_WHEEL_LINK_FLAGS (empty for any other LibTorch): the flags, for the build's
# executables and for the consumer projects that the test suite builds.
set(ANODE_TORCH_WHEEL_LINK_FLAGS "")
if(TARGET torch_cuda AND TORCH_INSTALL_PREFIX AND EXISTS "${TORCH_INSTALL_PREFIX}/../nvidia")
  file(GLOB _anode_wheel_dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
  if(_anode_wheel_dirs)
    list(TRANSFORM _anode_wheel_dirs REPLACE "/torch/\\.\\./nvidia/" "/nvidia/")
    string(REPLACE ";" ":" _anode_wheel_path "${_anode_wheel_dirs}")
    set(ANODE_TORCH_WHEEL_LINK_FLAGS
        "-Wl,-rpath-link,${_anode_wheel_path} -Wl,-rpath,${_anode_wheel_path}")
    message(STATUS "anode: LibTorch from a torch wheel: linking its CUDA libraries, "
                   "${_anode_wheel_path}")
  endif()
  unset(_anode_wheel_dirs)
  unset(_anode_wheel_path)
endif()
