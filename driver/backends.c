/* backends.c: the table of device backends compiled into this build. */
#include "backend.h"

extern const backend cuda_backend; /* driver/cuda.c */

#ifdef SSMC_HAVE_LLVM
extern const backend cpu_backend; /* driver/cpu.c */
#endif

const backend *backend_for(ssmc_device device)
{
    switch (device) {
    case SSMC_DEVICE_INTERP: return NULL;
    case SSMC_DEVICE_CPU:
#ifdef SSMC_HAVE_LLVM
        return &cpu_backend;
#else
        return NULL;
#endif
    case SSMC_DEVICE_CUDA: return &cuda_backend;
    }
    return NULL;
}
