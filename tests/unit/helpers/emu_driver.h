/* emu_driver.h: the real CUDA backend on an emulated GPU, for tests without
 * one. emu_driver_setup builds tests/gpu/emu/fake_cuda.cpp (an emulated
 * CUDA driver and NVRTC: device memory is host memory, kernels compile as C++
 * against cuda_emu.h and run on CPU threads) into `workdir`, with a
 * precompiled cuda_emu.h, and points SSMC_CUDA_DRIVER, SSMC_NVRTC and
 * SSMC_CACHE_DIR there, so that ssmc_compile(SSMC_DEVICE_CUDA) and every run
 * after it (host tensors, or host memory passed as device pointers) go
 * through codegen/cuda_backend.c and runtime/cuda_driver.c as on a GPU.
 * False (with the reason on stdout) without a C++ compiler ($CXX, else c++). */
#ifndef SSMC_TEST_EMU_DRIVER_H
#define SSMC_TEST_EMU_DRIVER_H

#include <stdbool.h>

bool emu_driver_setup(const char *workdir);

#endif
