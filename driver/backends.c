/* backends.c: the table of device backends compiled into this build. */
#include "backend.h"

const backend *backend_for(ssmc_device device)
{
    switch (device) {
    case SSMC_DEVICE_INTERP: return NULL;
    case SSMC_DEVICE_CPU: return NULL;
    case SSMC_DEVICE_CUDA: return NULL;
    }
    return NULL;
}
