# The CUDA backend and its host emulation: the same kernel sources built twice.
#  - stopcal_cuda_emu (always): every .cu compiled as C++ by the host compiler against
#    cuda_emu.h, GEMMs on the CPU BLAS; CI runs all kernels and the whole backend through it.
#  - stopcal_cuda (when nvcc is found): the real thing for sm_80/90/90a, linked into
#    stopcal_kernels, which then defines STOPCAL_HAVE_CUDA for its users.
enable_language(CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O2 -g")
set(CMAKE_CXX_FLAGS_RELEASE "-O3")

set(STOPCAL_CUDA_SOURCES cuda/layernorm.cu cuda/activations.cu cuda/patch_embed.cu cuda/attention.cu cuda/attention_probs.cu cuda/rope.cu cuda/linear.cu
  cuda/backend_cuda.cu)

set(_stopcal_emu_sources ${CMAKE_CURRENT_SOURCE_DIR}/emu/cuda_emu.cpp)
foreach(src ${STOPCAL_CUDA_SOURCES})
  get_filename_component(stem ${src} NAME_WE)
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/cuda_emu/${stem}_emu.cpp)
  file(CONFIGURE OUTPUT ${wrapper}
       CONTENT "// Generated: ${src} compiled as C++ against the CUDA emulation.\n#include \"${CMAKE_CURRENT_SOURCE_DIR}/${src}\"\n")
  list(APPEND _stopcal_emu_sources ${wrapper})
endforeach()
add_library(stopcal_cuda_emu STATIC ${_stopcal_emu_sources})
target_compile_definitions(stopcal_cuda_emu PUBLIC STOPCAL_CUDA_EMULATION)
target_include_directories(stopcal_cuda_emu PUBLIC ${STOPCAL_KERNEL_DIRS})
target_link_libraries(stopcal_cuda_emu PUBLIC stopcal_error PkgConfig::OPENBLAS Threads::Threads m)

if(STOPCAL_HAVE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  add_library(stopcal_cuda STATIC ${STOPCAL_CUDA_SOURCES})
  # The directory's add_compile_options (-Wall … -fsanitize=…) are host-compiler flags nvcc does
  # not take: replace them for this target with their nvcc spelling.
  set_property(TARGET stopcal_cuda PROPERTY COMPILE_OPTIONS "")
  target_compile_options(stopcal_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra -Werror=all-warnings -lineinfo --expt-relaxed-constexpr>)
  target_include_directories(stopcal_cuda PUBLIC ${STOPCAL_KERNEL_DIRS})
  # The static runtime, as CMake links into every executable whose link language becomes CUDA
  # (all users of stopcal_kernels): one runtime per process, and no libcudart.so to ship.
  set_target_properties(stopcal_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(stopcal_cuda PUBLIC stopcal_error CUDA::cudart_static CUDA::cublas CUDA::cublasLt)
  target_link_libraries(stopcal_kernels PUBLIC stopcal_cuda)
  target_compile_definitions(stopcal_kernels PUBLIC STOPCAL_HAVE_CUDA)
endif()
