/* backends.c: the device table. One row per ssmc_device: its CLI name, the
 * name errors use, and its backend when this build has one (the CPU backend
 * needs LLVM at build time; CUDA never does: it finds the driver and NVRTC
 * at run time). */
#include <string.h>

#include "codegen/backend.h"

extern const backend interp_backend; /* codegen/interp_backend.c */
extern const backend cuda_backend;   /* codegen/cuda_backend.c */
#ifdef SSMC_HAVE_LLVM
extern const backend cpu_backend; /* codegen/cpu_backend.c */
#define CPU_BACKEND (&cpu_backend)
#else
#define CPU_BACKEND NULL
#endif

static const struct {
    ssmc_device device;
    const char *name;  /* as the CLI's --device spells it */
    const char *title; /* in messages */
    const backend *be;
} devices[] = {
    {SSMC_DEVICE_INTERP, "interp", "interp (f64 interpreter)", &interp_backend},
    {SSMC_DEVICE_CPU, "cpu", "cpu (LLVM)", CPU_BACKEND},
    {SSMC_DEVICE_CUDA, "cuda", "cuda", &cuda_backend},
};
#define NDEVICES (int)(sizeof devices / sizeof devices[0])

const backend *backend_for(ssmc_device device)
{
    for (int i = 0; i < NDEVICES; i++)
        if (devices[i].device == device) return devices[i].be;
    return NULL;
}

const char *device_name(ssmc_device device)
{
    for (int i = 0; i < NDEVICES; i++)
        if (devices[i].device == device) return devices[i].name;
    return NULL;
}

const char *device_title(ssmc_device device)
{
    for (int i = 0; i < NDEVICES; i++)
        if (devices[i].device == device) return devices[i].title;
    return NULL;
}

bool device_from_name(const char *name, ssmc_device *out)
{
    for (int i = 0; name && i < NDEVICES; i++)
        if (strcmp(devices[i].name, name) == 0) {
            *out = devices[i].device;
            return true;
        }
    return false;
}
