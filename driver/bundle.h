/* bundle.h: what driver/bundle.c (ssmc_build, the AOT bundle) needs from the
 * rest of the driver. */
#ifndef SSMC_DRIVER_BUNDLE_H
#define SSMC_DRIVER_BUNDLE_H

#include "ir/ir.h"
#include "ssmc.h"

/* The verified IR of a compiled model (driver/api.c); it lives as long as m. */
const ir_model *api_model_ir(const ssmc_model *m);
/* The context's diagnostics sink (driver/api.c). */
diag *api_ctx_diag(ssmc_ctx *ctx);
/* The checks of a call's source and options every entry point makes
 * (driver/api.c): SSMC_ERR_ARG with a message, or SSMC_OK. */
ssmc_status api_check_call(diag *d, const char *source, size_t len, const ssmc_options *o);

#endif
