/* emu_driver.c: see emu_driver.h. */
#include <stdio.h>
#include <stdlib.h>

#include "emu_driver.h"
#include "files.h"

bool emu_driver_setup(const char *workdir)
{
    const char *c = getenv("CXX");
    const char *cxx = c && *c ? c : "c++";
    char cmd[2048], lib[512], hdr[512], cache[512];
    snprintf(lib, sizeof lib, "%s/libfake_cuda.so", workdir);
    snprintf(hdr, sizeof hdr, "%s/tests/gpu/emu/cuda_emu.h", test_src_dir());
    snprintf(cache, sizeof cache, "%s/cache", workdir);
    snprintf(cmd, sizeof cmd,
             "%s -std=c++17 -O1 -shared -fPIC -w -o %s %s/tests/gpu/emu/fake_cuda.cpp -ldl && cp %s %s/cuda_emu.h && "
             "%s -std=c++17 -O1 -fPIC -w -x c++-header %s/cuda_emu.h -o %s/cuda_emu.h.gch",
             cxx, lib, test_src_dir(), hdr, workdir, cxx, workdir, workdir);
    if (system(cmd) != 0) {
        printf("# cannot build the emulated CUDA driver with %s\n", cxx);
        return false;
    }
    setenv("SSMC_CUDA_DRIVER", lib, 1);
    setenv("SSMC_NVRTC", lib, 1);
    setenv("SSMC_EMU_HEADER", hdr, 1);
    setenv("SSMC_EMU_WORK", workdir, 1);
    setenv("SSMC_CACHE_DIR", cache, 1); /* its "cubins" are shared objects: never beside real ones */
    return true;
}
