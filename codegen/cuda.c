/* cuda.c: CUDA C emission from a plan (codegen/cuda_plan.c) for one dtype
 * signature of a run.
 *
 * The kernel's body reads top to bottom as the recurrence does: decode the
 * block's batch element and tiles, point at its slices, load params that every
 * step reads into registers, load or zero the states, evaluate the
 * time-invariant lets once, then for t = 0 .. T-1 issue the loads of step t+1's
 * inputs and run every statement in program order, then write the states back.
 * Each statement is a C block opened by a comment naming its DSL line. A
 * statement that follows the layout loops over the thread's own slots (fully
 * unrolled, so register arrays stay in registers); one that runs flat spreads
 * its domain over the block. Every per-step value is an f32 register or a
 * shared/workspace array: nothing per step goes to global memory except the
 * outputs. Barriers are placed from a running record of which memory-held
 * tensors were written and read since the last one.
 *
 * Guarantees: the source compiles with NVRTC (C++17, no include path) for
 * sm_50 and later; out-of-range slots (tiles that overhang a dim) compute on
 * clamped indices and are masked out of reductions and stores, so control flow
 * is uniform across a warp wherever shuffles run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cuda.h"
#include "support/dtype.h"

typedef struct vbind {
    bool on;
    const char *glob; /* global value, clamped into range */
    const char *loc;  /* value inside the block's tile, clamped */
    const char *ok;   /* in range; NULL when always */
    const char *slot; /* the slot loop variable (layout bindings) */
    /* a slot loop's declarations of the three, written once the body shows
     * which are used (an unused one would draw a compiler warning) */
    const char *def_glob, *def_loc, *def_ok;
    bool used_glob, used_loc, used_ok;
    strbuf *outer; /* the output the loop's body was diverted from */
} vbind;

typedef struct em {
    strbuf *out;
    arena a; /* strings of this emission */
    const pass_plan *p;
    const ir_model *m;
    const cuda_sig *sig;
    int ind;
    int tmp;
    vbind *v;      /* [nvars] */
    bool *written; /* [ntensors + 1]: memory-held tensors (and the scratch area, last) */
    bool *read;    /*   written or read since the last barrier */
    int group;     /* a flat statement with a group of lanes per element (plan.h): its size, */
    const char *group_in; /* and whether the lane's element exists (NULL: always) */
    const char *state_at; /* non-NULL: a state's final values go to this f32 pointer, not p_ (scalar stores) */
    bool oom;
} em;

#define SCRATCH(e) ((e)->m->ntensors)

/* The direction of "k steps earlier in execution order" in a per-step
 * tensor: back in time, or forward in a reverse model (ir.h), whose steps
 * run at t = T-1 .. 0 (its pointers start at step T-1 and walk back). The
 * kernel's `t` counts the steps executed either way, so a guard "at least k
 * steps done" reads the same in both. */
static const char *back(const em *e) { return e->m->reverse ? "+" : "-"; }

static const char *S(em *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    strbuf b = {0};
    sb_vprintf(&b, fmt, ap);
    va_end(ap);
    char *s = arena_strdup(&e->a, sb_cstr(&b));
    if (!s || b.failed) e->oom = true;
    sb_free(&b);
    return s ? s : "";
}

static void line(em *e, const char *fmt, ...)
{
    for (int i = 0; i < e->ind; i++) sb_puts(e->out, "    ");
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(e->out, fmt, ap);
    va_end(ap);
    sb_putc(e->out, '\n');
}

static bool in_memory(const pass_plan *p, int t) { return p->place[t] == PLAN_PLACE_LOCAL || p->place[t] == PLAN_PLACE_GLOBAL; }

/* A state whose initial value the kernel reads from its tensor. */
static bool reads_initial(const em *e, int ti) { return e->sig->present[ti] && !(e->sig->fresh && e->sig->fresh[ti]); }

static const char *dtype_c(ssmc_dtype dt)
{
    switch (dt) {
    case SSMC_F32: return "float";
    case SSMC_F16: return "ssmc_f16";
    case SSMC_BF16: return "ssmc_bf16";
    case SSMC_F64: return "double";
    }
    return "float";
}

static int dtype_bytes(ssmc_dtype dt) { return dt == SSMC_F64 ? 8 : dt == SSMC_F32 ? 4 : 2; }

static const char *const dtype_names[] = {"f32", "f16", "bf16", "f64"};

/* ---- the prelude: everything the kernel uses beyond CUDA's builtins ---- */

/* One string per line: a single literal this long is beyond what C11 promises. */
static const char *const prelude[] = {
    "// ---- prelude: storage types, conversions, loads, reductions (no headers needed)\n",
    "struct ssmc_bf16 { unsigned short bits; };\n",
    "struct ssmc_f16 { unsigned short bits; };\n",
    "#define SSMC_NEG_INF __int_as_float(0xff800000)\n",
    "/* the block's dynamic shared memory, declared in a kernel (the emulator, tests/gpu/emu, defines its own) */\n",
    "#ifndef SSMC_DYN_SMEM\n",
    "#define SSMC_DYN_SMEM extern __shared__ float ssmc_smem[]\n",
    "#endif\n",
    "__device__ __forceinline__ int ssmc_imin(int a, int b) { return a < b ? a : b; }\n",
    "__device__ __forceinline__ float ssmc_bf16_f32(unsigned short b) { return __uint_as_float((unsigned)b << 16); }\n",
    "__device__ __forceinline__ unsigned short ssmc_f32_bf16(float f)\n",
    "{\n",
    "    unsigned u = __float_as_uint(f);\n",
    "    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);\n",
    "    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */\n",
    "    return (unsigned short)(u >> 16);\n",
    "}\n",
    "__device__ __forceinline__ float ssmc_f16_f32(unsigned short h)\n",
    "{\n",
    "#ifdef __CUDA_ARCH__\n",
    "    float f;\n",
    "    asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h));\n",
    "    return f;\n",
    "#else\n",
    "    unsigned s = (unsigned)(h & 0x8000u) << 16, x = (h >> 10) & 0x1fu, mnt = h & 0x3ffu;\n",
    "    if (x == 0) return __uint_as_float(s) + (s ? -1.f : 1.f) * (float)mnt * 5.9604644775390625e-8f;\n",
    "    if (x == 31) return __uint_as_float(s | 0x7f800000u | (mnt << 13));\n",
    "    return __uint_as_float(s | ((x + 112u) << 23) | (mnt << 13));\n",
    "#endif\n",
    "}\n",
    "__device__ __forceinline__ unsigned short ssmc_f32_f16(float f)\n",
    "{\n",
    "#ifdef __CUDA_ARCH__\n",
    "    unsigned short h;\n",
    "    asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n",
    "    return h;\n",
    "#else\n",
    "    unsigned u = __float_as_uint(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;\n",
    "    if (a > 0x7f800000u) return (unsigned short)(s | 0x7e00u);\n",
    "    if (a >= 0x47800000u) return (unsigned short)(s | 0x7c00u);\n",
    "    if (a < 0x38800000u) return (unsigned short)(s | (unsigned)rintf(__uint_as_float(a) * 16777216.f));\n",
    "    a -= 0x38000000u;\n",
    "    a += 0xfffu + ((a >> 13) & 1u);\n",
    "    return (unsigned short)(s | (a >> 13));\n",
    "#endif\n",
    "}\n",
    "/* ssmc_ld: read-only data (inputs, params) through the non-coherent cache;\n",
    "   ssmc_get / ssmc_st: states, read once and written once */\n",
    "__device__ __forceinline__ float ssmc_ld(const float *p) { return __ldg(p); }\n",
    "__device__ __forceinline__ float ssmc_ld(const double *p) { return (float)__ldg(p); }\n",
    "__device__ __forceinline__ float ssmc_ld(const ssmc_bf16 *p) { return ssmc_bf16_f32(__ldg(&p->bits)); }\n",
    "__device__ __forceinline__ float ssmc_ld(const ssmc_f16 *p) { return ssmc_f16_f32(__ldg(&p->bits)); }\n",
    "__device__ __forceinline__ float ssmc_get(const float *p) { return *p; }\n",
    "__device__ __forceinline__ float ssmc_get(const double *p) { return (float)*p; }\n",
    "__device__ __forceinline__ float ssmc_get(const ssmc_bf16 *p) { return ssmc_bf16_f32(p->bits); }\n",
    "__device__ __forceinline__ float ssmc_get(const ssmc_f16 *p) { return ssmc_f16_f32(p->bits); }\n",
    "__device__ __forceinline__ void ssmc_st(float *p, float v) { *p = v; }\n",
    "__device__ __forceinline__ void ssmc_st(double *p, float v) { *p = (double)v; }\n",
    "__device__ __forceinline__ void ssmc_st(ssmc_bf16 *p, float v) { p->bits = ssmc_f32_bf16(v); }\n",
    "__device__ __forceinline__ void ssmc_st(ssmc_f16 *p, float v) { p->bits = ssmc_f32_f16(v); }\n",
    "/* vector loads of 2, 4 or 8 elements (the address is aligned to their size) */\n",
    "__device__ __forceinline__ void ssmc_ld2(const float *p, float *o) { float2 v = __ldg((const float2 *)p); o[0] = v.x; o[1] = v.y; }\n",
    "__device__ __forceinline__ void ssmc_ld4(const float *p, float *o)\n",
    "{\n",
    "    float4 v = __ldg((const float4 *)p);\n",
    "    o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;\n",
    "}\n",
    "__device__ __forceinline__ void ssmc_ld2(const double *p, float *o) { double2 v = __ldg((const double2 *)p); o[0] = (float)v.x; o[1] = (float)v.y; }\n",
    "__device__ __forceinline__ void ssmc_unpack(unsigned w, const ssmc_bf16 *, float *o) { o[0] = __uint_as_float(w << 16); o[1] = __uint_as_float(w & 0xffff0000u); }\n",
    "__device__ __forceinline__ void ssmc_unpack(unsigned w, const ssmc_f16 *, float *o) { o[0] = ssmc_f16_f32((unsigned short)(w & 0xffffu)); o[1] = ssmc_f16_f32((unsigned short)(w >> 16)); }\n",
    "template <class H> __device__ __forceinline__ void ssmc_ld2(const H *p, float *o) { ssmc_unpack(__ldg((const unsigned *)p), p, o); }\n",
    "template <class H> __device__ __forceinline__ void ssmc_ld4(const H *p, float *o)\n",
    "{\n",
    "    uint2 v = __ldg((const uint2 *)p);\n",
    "    ssmc_unpack(v.x, p, o); ssmc_unpack(v.y, p, o + 2);\n",
    "}\n",
    "template <class H> __device__ __forceinline__ void ssmc_ld8(const H *p, float *o)\n",
    "{\n",
    "    uint4 v = __ldg((const uint4 *)p);\n",
    "    ssmc_unpack(v.x, p, o); ssmc_unpack(v.y, p, o + 2); ssmc_unpack(v.z, p, o + 4); ssmc_unpack(v.w, p, o + 6);\n",
    "}\n",
    "/* states: plain vector loads and stores of 2, 4 or 8 elements */\n",
    "__device__ __forceinline__ void ssmc_get2(const float *p, float *o) { float2 v = *(const float2 *)p; o[0] = v.x; o[1] = v.y; }\n",
    "__device__ __forceinline__ void ssmc_get4(const float *p, float *o) { float4 v = *(const float4 *)p; o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w; }\n",
    "__device__ __forceinline__ void ssmc_get2(const double *p, float *o) { double2 v = *(const double2 *)p; o[0] = (float)v.x; o[1] = (float)v.y; }\n",
    "template <class H> __device__ __forceinline__ void ssmc_get2(const H *p, float *o) { ssmc_unpack(*(const unsigned *)p, p, o); }\n",
    "template <class H> __device__ __forceinline__ void ssmc_get4(const H *p, float *o) { uint2 v = *(const uint2 *)p; ssmc_unpack(v.x, p, o); ssmc_unpack(v.y, p, o + 2); }\n",
    "template <class H> __device__ __forceinline__ void ssmc_get8(const H *p, float *o)\n",
    "{\n",
    "    uint4 v = *(const uint4 *)p;\n",
    "    ssmc_unpack(v.x, p, o); ssmc_unpack(v.y, p, o + 2); ssmc_unpack(v.z, p, o + 4); ssmc_unpack(v.w, p, o + 6);\n",
    "}\n",
    "__device__ __forceinline__ unsigned ssmc_pack(const float *o, ssmc_bf16 *) { return (unsigned)ssmc_f32_bf16(o[0]) | (unsigned)ssmc_f32_bf16(o[1]) << 16; }\n",
    "__device__ __forceinline__ unsigned ssmc_pack(const float *o, ssmc_f16 *) { return (unsigned)ssmc_f32_f16(o[0]) | (unsigned)ssmc_f32_f16(o[1]) << 16; }\n",
    "__device__ __forceinline__ void ssmc_st2(float *p, const float *o) { float2 v; v.x = o[0]; v.y = o[1]; *(float2 *)p = v; }\n",
    "__device__ __forceinline__ void ssmc_st4(float *p, const float *o) { float4 v; v.x = o[0]; v.y = o[1]; v.z = o[2]; v.w = o[3]; *(float4 *)p = v; }\n",
    "__device__ __forceinline__ void ssmc_st2(double *p, const float *o) { double2 v; v.x = o[0]; v.y = o[1]; *(double2 *)p = v; }\n",
    "template <class H> __device__ __forceinline__ void ssmc_st2(H *p, const float *o) { *(unsigned *)p = ssmc_pack(o, p); }\n",
    "template <class H> __device__ __forceinline__ void ssmc_st4(H *p, const float *o) { uint2 v; v.x = ssmc_pack(o, p); v.y = ssmc_pack(o + 2, p); *(uint2 *)p = v; }\n",
    "template <class H> __device__ __forceinline__ void ssmc_st8(H *p, const float *o)\n",
    "{\n",
    "    uint4 v;\n",
    "    v.x = ssmc_pack(o, p); v.y = ssmc_pack(o + 2, p); v.z = ssmc_pack(o + 4, p); v.w = ssmc_pack(o + 6, p);\n",
    "    *(uint4 *)p = v;\n",
    "}\n",
    "/* the language's functions, in f32 */\n",
    "__device__ __forceinline__ float ssmc_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }\n",
    "/* softplus as the interpreter takes it (x + log1p(exp(-x)) above 0, log1p(exp(x)) below), without a branch */\n",
    "__device__ __forceinline__ float ssmc_softplus(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }\n",
    "__device__ __forceinline__ float ssmc_silu(float x) { return x * ssmc_sigmoid(x); }\n",
    "__device__ __forceinline__ float ssmc_relu(float x) { return x > 0.f ? x : 0.f; }\n",
    "__device__ __forceinline__ float ssmc_rsqrt(float x) { return 1.f / sqrtf(x); }\n",
    "/* max as the interpreter takes it: a NaN wins */\n",
    "__device__ __forceinline__ float ssmc_maxn(float a, float b) { return (a > b || a != a) ? a : b; }\n",
    "/* butterfly reductions over the lanes LO, 2 LO, .. < HI apart: every lane gets the result */\n",
    "template <int LO, int HI> __device__ __forceinline__ float ssmc_wsum(float v)\n",
    "{\n",
    "#pragma unroll\n",
    "    for (int o = LO; o < HI; o <<= 1) v += __shfl_xor_sync(SSMC_MASK, v, o);\n",
    "    return v;\n",
    "}\n",
    "template <int LO, int HI> __device__ __forceinline__ float ssmc_wmax(float v)\n",
    "{\n",
    "#pragma unroll\n",
    "    for (int o = LO; o < HI; o <<= 1) v = ssmc_maxn(v, __shfl_xor_sync(SSMC_MASK, v, o));\n",
    "    return v;\n",
    "}\n",
    "// ---- end of prelude\n",
};

void cuda_prelude(strbuf *out)
{
    for (size_t i = 0; i < sizeof prelude / sizeof *prelude; i++) sb_puts(out, prelude[i]);
}

/* ---- index values ---- */

static const char *coord(em *e, int c)
{
    const plan_class *k = &e->p->cls[c];
    return k->threads == 1 ? "0" : S(e, "crd%d", c);
}

/* k * slots + j for the thread's coordinate k along dom's class. */
static const char *dom_raw(em *e, plan_dom d, const char *slot)
{
    const plan_class *k = &e->p->cls[d.cls];
    if (k->threads == 1) return slot;
    if (d.slots == 1) return coord(e, d.cls);
    return S(e, "%s * %d + %s", coord(e, d.cls), d.slots, slot);
}

/* The highest raw value can pass the end of the domain. */
static bool dom_overhangs(em *e, plan_dom d) { return (int64_t)e->p->cls[d.cls].threads * d.slots > d.n; }

/* The global value at a slot, clamped to at most (extent - w); w = 1 for one
 * element, the width of a vector load otherwise. */
static const char *dom_value(em *e, plan_dom d, const char *slot, int w)
{
    const plan_class *k = &e->p->cls[d.cls];
    const char *raw = dom_raw(e, d, slot);
    /* without overhang a chunk's start is at most extent - w already */
    if (d.spread || !k->split) {
        if (!dom_overhangs(e, d)) return raw;
        return S(e, "ssmc_imin(%s, %lld)", raw, (long long)(d.n - w));
    }
    const char *g = S(e, "base%d + %s", d.cls, raw);
    if (!dom_overhangs(e, d) && k->n % k->tile == 0) return g;
    return S(e, "ssmc_imin(%s, %lld)", g, (long long)(k->n - w));
}

static const char *dom_local(em *e, plan_dom d, const char *slot)
{
    const char *raw = dom_raw(e, d, slot);
    return dom_overhangs(e, d) ? S(e, "ssmc_imin(%s, %lld)", raw, (long long)(d.n - 1)) : raw;
}

/* NULL when every slot is in range. */
static const char *dom_ok(em *e, plan_dom d, const char *slot)
{
    const plan_class *k = &e->p->cls[d.cls];
    const char *raw = dom_raw(e, d, slot);
    const char *a = dom_overhangs(e, d) ? S(e, "%s < %lld", raw, (long long)d.n) : NULL;
    const char *b = !d.spread && k->split && k->n % k->tile ? S(e, "base%d + %s < %lld", d.cls, raw, (long long)k->n) : NULL;
    return a && b ? S(e, "%s && %s", a, b) : a ? a : b;
}


/* Opens an unrolled loop over a domain's slots and binds var to it. The
 * body goes to a buffer of its own until close_dom, which declares the
 * variable's values that the body used. */
static void open_dom(em *e, int var, plan_dom d)
{
    const char *name = e->m->vars[var].name;
    const char *slot = S(e, "j_%s", name);
    line(e, "#pragma unroll");
    line(e, "for (int %s = 0; %s < %d; %s++) {", slot, slot, d.slots, slot);
    e->ind++;
    vbind *b = &e->v[var];
    const char *ok = dom_ok(e, d, slot);
    *b = (vbind){.on = true,
                 .slot = slot,
                 .glob = S(e, "v_%s", name),
                 .loc = d.spread ? S(e, "v_%s", name) : S(e, "w_%s", name),
                 .ok = ok ? S(e, "k_%s", name) : NULL,
                 .def_glob = S(e, "const int v_%s = %s;", name, dom_value(e, d, slot, 1)),
                 .def_loc = d.spread ? NULL : S(e, "const int w_%s = %s;", name, dom_local(e, d, slot)),
                 .def_ok = ok ? S(e, "const bool k_%s = %s;", name, ok) : NULL,
                 .outer = e->out};
    e->out = calloc(1, sizeof *e->out);
    if (!e->out) {
        e->oom = true;
        e->out = b->outer;
        b->outer = NULL;
    }
}

static void close_block(em *e)
{
    e->ind--;
    line(e, "}");
}

/* The declarations of a bound variable's values that its scope used. */
static void write_defs(em *e, int var)
{
    const vbind *b = &e->v[var];
    if (b->def_loc && b->used_loc) line(e, "%s", b->def_loc);
    if (b->def_glob && (b->used_glob || (b->used_loc && !b->def_loc))) line(e, "%s", b->def_glob);
    if (b->def_ok && b->used_ok) line(e, "%s", b->def_ok);
}

static void close_dom(em *e, int var)
{
    vbind *b = &e->v[var];
    strbuf *body = e->out;
    if (b->outer) {
        e->out = b->outer;
        write_defs(e, var);
        sb_putn(e->out, body->data ? body->data : "", body->len);
        if (body->failed) e->oom = true;
        sb_free(body);
        free(body);
    }
    b->on = false;
    b->outer = NULL;
    close_block(e);
}

static const char *and_ok(em *e, const char *a, const char *b)
{
    return a && b ? S(e, "%s && %s", a, b) : a ? a : b;
}

/* ---- expressions ---- */

static const char *num(em *e, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.9g", v);
    bool plain = strpbrk(buf, ".eEn") == NULL;
    return S(e, "%s%sf", buf, plain ? ".0" : "");
}

static const char *var_glob(em *e, int var)
{
    e->v[var].used_glob = true;
    return e->v[var].glob;
}

static const char *var_loc(em *e, int var)
{
    e->v[var].used_loc = true;
    return e->v[var].loc;
}

static const char *var_ok(em *e, int var)
{
    e->v[var].used_ok = true;
    return e->v[var].ok;
}

static const char *index_glob(em *e, const ir_index *ix)
{
    switch (ix->kind) {
    case IR_IX_VAR: return var_glob(e, ix->var);
    case IR_IX_DIV: return S(e, "(%s / %lld)", var_glob(e, ix->var), (long long)ix->k);
    case IR_IX_CONST: return S(e, "%lld", (long long)ix->k);
    case IR_IX_AFFINE:
        return S(e, "(%s * %lld + %s)", var_glob(e, ix->var), (long long)ix->k, var_glob(e, ix->var2));
    }
    return "0";
}

/* A var's local value; grouped and constant indices only reach classes that
 * stay in the block, where the local value is the global one, but a group of
 * one (passes/schedule.c) is the var's own value, local too. */
static const char *index_loc(em *e, const ir_index *ix)
{
    if (ix->kind == IR_IX_VAR || (ix->kind == IR_IX_DIV && ix->k == 1)) return var_loc(e, ix->var);
    if (ix->kind == IR_IX_AFFINE && ix->k == 1) return S(e, "(%s + %s)", var_loc(e, ix->var), var_glob(e, ix->var2));
    return index_glob(e, ix);
}

/* sum of idx[i] * stride[i], row-major over `ext` */
static const char *offset(em *e, int rank, const char *const *idx, const int64_t *ext)
{
    if (rank == 0) return "0";
    const char *s = NULL;
    int64_t stride = 1;
    for (int i = rank - 1; i >= 0; i--) {
        bool simple = strspn(idx[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == strlen(idx[i]);
        const char *term = stride == 1 ? idx[i] : S(e, simple ? "%s * %lld" : "(%s) * %lld", idx[i], (long long)stride);
        s = s ? S(e, "%s + %s", term, s) : term;
        stride *= ext[i];
    }
    return s;
}

static void dims_of(const ir_model *m, const ir_tensor *t, int64_t *ext)
{
    for (int i = 0; i < t->rank; i++) ext[i] = m->dims[t->dims[i]].value;
}

static void tiles_of(const pass_plan *p, int tensor, int64_t *ext)
{
    for (int i = 0; i < p->m->tensors[tensor].rank; i++) ext[i] = p->cls[plan_axis_class(p, tensor, i)].tile;
}

static const char *ex(em *e, ir_ref r);

/* The register (or memory) of a pattern at the slots bound in this context. */
static const char *pattern_use(em *e, const ir_inst *in, int id)
{
    const plan_pat *pt = &e->p->pats[id];
    const ir_tensor *t = &e->m->tensors[pt->tensor];
    const char *s = S(e, "pat%d", id);
    for (int d = 0; d < pt->ndoms; d++)
        for (int i = 0; i < t->rank; i++)
            if (pt->dom_of[i] == d) {
                s = S(e, "%s[%s]", s, e->v[e->m->ix[in->load.ix + (uint32_t)i].var].slot);
                break;
            }
    return s;
}

static const char *load(em *e, ir_ref r)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_inst *in = &m->insts[r];
    int ti = in->load.tensor;
    const ir_tensor *t = &m->tensors[ti];
    const char *idx[IR_MAX_RANK];
    int64_t ext[IR_MAX_RANK];
    if (t->kind == IR_INPUT || t->kind == IR_PARAM) {
        if (p->ld_kind[r] == PLAN_LD_PAT) return pattern_use(e, in, p->ld_pat[r]);
        for (int i = 0; i < t->rank; i++) idx[i] = index_glob(e, &m->ix[in->load.ix + (uint32_t)i]);
        dims_of(m, t, ext);
        const char *off = offset(e, t->rank, idx, ext);
        if (t->kind == IR_PARAM) return S(e, "ssmc_ld(g_%s + %s)", t->name, off);
        int64_t step = ir_tensor_elems(m, t);
        if (in->load.lag_var >= 0) { /* t - lag - var (passes/lag.c combines the two) */
            const char *lv = var_glob(e, in->load.lag_var);
            if (in->load.lag) lv = S(e, "(%s + %lld)", lv, (long long)in->load.lag);
            return S(e, "(t >= %s ? ssmc_ld(p_%s %s (long long)%s * %lld + %s) : 0.f)", lv, t->name, back(e), lv,
                     (long long)step, off);
        }
        if (in->load.lag)
            return S(e, "(t >= %lld ? ssmc_ld(p_%s %s %lldLL + %s) : 0.f)", (long long)in->load.lag, t->name, back(e),
                     (long long)(in->load.lag * step), off);
        return S(e, "ssmc_ld(p_%s + %s)", t->name, off);
    }
    if (p->place[ti] == PLAN_PLACE_REG) {
        if (t->rank == 0) return S(e, "r_%s", t->name);
        const char *s = S(e, "r_%s", t->name);
        for (int i = 0; i < t->rank; i++) s = S(e, "%s[%s]", s, e->v[m->ix[in->load.ix + (uint32_t)i].var].slot);
        return s;
    }
    for (int i = 0; i < t->rank; i++) idx[i] = index_loc(e, &m->ix[in->load.ix + (uint32_t)i]);
    tiles_of(p, ti, ext);
    return S(e, "s_%s[%s]", t->name, offset(e, t->rank, idx, ext));
}

/* A reduction over the lanes of the element's group (PLAN_RED_GROUP): lane gl
 * of the group takes the values gl, gl + G, .. of the domain flattened
 * row-major (the first variable slowest; a split class's variable over the
 * item's tile, the overhang past the dim masked out), then a butterfly over the
 * group's lanes, which all get the result. The lanes' loops differ in length,
 * but no shuffle runs inside them. */
static const char *group_reduction(em *e, ir_ref r, const char *acc)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_inst *in = &m->insts[r];
    bool sum = in->op == IR_SUM;
    int64_t ext[IR_MAX_RANK], total = 1;
    for (uint32_t i = 0; i < in->red.nvars; i++) {
        int var = (int)m->red_vars[in->red.vars + i];
        int c = p->sched.var_class[var];
        ext[i] = c >= 0 && p->cls[c].split ? p->cls[c].tile : m->dims[m->vars[var].dim].value;
        total *= ext[i];
    }
    const char *kk = S(e, "k%s", acc + 3);
    /* a lane of an element past the last one only joins the shuffles */
    line(e, "for (int %s = gl; %s%s%s < %lld; %s += %d) {", kk, e->group_in ? e->group_in : "", e->group_in ? " && " : "",
         kk, (long long)total, kk, e->group);
    e->ind++;
    strbuf *outer = e->out, body = {0};
    e->out = &body;
    const char *ok = NULL;
    int64_t stride = 1;
    for (int i = (int)in->red.nvars - 1; i >= 0; i--) {
        int var = (int)m->red_vars[in->red.vars + (uint32_t)i];
        const char *name = m->vars[var].name;
        int c = p->sched.var_class[var];
        const plan_class *k = c >= 0 && p->cls[c].split ? &p->cls[c] : NULL;
        const char *w = stride == 1 ? kk : S(e, "%s / %lld", kk, (long long)stride);
        if (i > 0) w = S(e, "%s %% %lld", w, (long long)ext[i]);
        stride *= ext[i];
        vbind *b = &e->v[var];
        if (!k) {
            *b = (vbind){.on = true, .glob = S(e, "v_%s", name), .loc = S(e, "v_%s", name),
                         .def_glob = S(e, "const int v_%s = %s;", name, w)};
            continue;
        }
        *b = (vbind){.on = true, .glob = S(e, "v_%s", name), .loc = S(e, "w_%s", name),
                     .def_loc = S(e, "const int w_%s = %s;", name, w)};
        if (k->n % k->tile == 0) {
            b->def_glob = S(e, "const int v_%s = base%d + w_%s;", name, c, name);
        } else {
            b->def_glob = S(e, "const int v_%s = ssmc_imin(base%d + w_%s, %lld);", name, c, name, (long long)(k->n - 1));
            ok = and_ok(e, ok, S(e, "base%d + %s < %lld", c, var_loc(e, var), (long long)k->n));
        }
    }
    const char *x = ex(e, in->a);
    if (ok)
        line(e, sum ? "if (%s) %s += %s;" : "if (%s) %s = ssmc_maxn(%s, %s);", ok, acc, sum ? x : acc, x);
    else
        line(e, sum ? "%s += %s;" : "%s = ssmc_maxn(%s, %s);", acc, sum ? x : acc, x);
    e->out = outer;
    for (uint32_t i = 0; i < in->red.nvars; i++) {
        int var = (int)m->red_vars[in->red.vars + i];
        vbind *b = &e->v[var];
        if (b->def_loc) b->used_loc |= b->used_glob; /* v_ is computed from w_ */
        write_defs(e, var);
        b->on = false;
    }
    sb_putn(e->out, body.data ? body.data : "", body.len);
    if (body.failed) e->oom = true;
    sb_free(&body);
    close_block(e);
    line(e, "%s = ssmc_%s<1, %d>(%s);", acc, sum ? "wsum" : "wmax", e->group, acc);
    return acc;
}

/* Emits a reduction's loops and returns the name of its result. */
static const char *reduction(em *e, ir_ref r)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_inst *in = &m->insts[r];
    bool sum = in->op == IR_SUM;
    int id = e->tmp++;
    const char *acc = S(e, "acc%d", id);
    line(e, "float %s = %s;", acc, sum ? "0.f" : "SSMC_NEG_INF");
    if (p->red_mode[r] == PLAN_RED_DIST) {
        plan_dom d = p->red_dom[r];
        int var = (int)m->red_vars[in->red.vars];
        open_dom(e, var, d);
        const char *x = ex(e, in->a);
        const char *ok = e->v[var].ok ? var_ok(e, var) : NULL;
        const char *upd = sum ? S(e, "%s + (%s)", acc, x) : S(e, "ssmc_maxn(%s, %s)", acc, x);
        if (ok)
            line(e, "%s = %s ? %s : %s;", acc, ok, upd, acc);
        else
            line(e, "%s = %s;", acc, upd);
        close_dom(e, var);
        const plan_class *k = &p->cls[d.cls];
        if (k->threads > 1)
            line(e, "%s = ssmc_%s<%d, %d>(%s);", acc, sum ? "wsum" : "wmax", k->stride, k->stride * k->threads, acc);
        return acc;
    }
    if (p->red_mode[r] == PLAN_RED_GROUP) return group_reduction(e, r, acc);
    /* a variable of a split class (a partial sum, plan.h) runs over the item's
     * tile, at its base, the tile's overhang past the dim masked out */
    const char *ok = NULL;
    for (uint32_t i = 0; i < in->red.nvars; i++) {
        int var = (int)m->red_vars[in->red.vars + i];
        const char *name = m->vars[var].name;
        int c = p->sched.var_class[var];
        const plan_class *k = c >= 0 && p->cls[c].split ? &p->cls[c] : NULL;
        const char *lv = S(e, k ? "w_%s" : "v_%s", name);
        line(e, "for (int %s = 0; %s < %lld; %s++) {", lv, lv, (long long)(k ? k->tile : m->dims[m->vars[var].dim].value), lv);
        e->ind++;
        vbind *b = &e->v[var];
        *b = (vbind){.on = true, .glob = lv, .loc = lv};
        if (!k) continue;
        if (k->n % k->tile == 0) {
            line(e, "const int v_%s = base%d + w_%s;", name, c, name);
        } else {
            line(e, "const int v_%s = ssmc_imin(base%d + w_%s, %lld);", name, c, name, (long long)(k->n - 1));
            ok = and_ok(e, ok, S(e, "base%d + w_%s < %lld", c, name, (long long)k->n));
        }
        b->glob = S(e, "v_%s", name);
    }
    const char *x = ex(e, in->a);
    if (ok)
        line(e, sum ? "if (%s) %s += %s;" : "if (%s) %s = ssmc_maxn(%s, %s);", ok, acc, sum ? x : acc, x);
    else
        line(e, sum ? "%s += %s;" : "%s = ssmc_maxn(%s, %s);", acc, sum ? x : acc, x);
    for (uint32_t i = 0; i < in->red.nvars; i++) {
        e->v[m->red_vars[in->red.vars + i]].on = false;
        close_block(e);
    }
    return acc;
}

static const char *ex(em *e, ir_ref r)
{
    const ir_inst *in = &e->m->insts[r];
    const char *a = NULL, *b = NULL;
    switch ((ir_op)in->op) {
    case IR_CONST: return num(e, in->num);
    case IR_LOAD: return load(e, r);
    case IR_IDX: return S(e, "((float)%s)", var_glob(e, in->var));
    case IR_SUM:
    case IR_RMAX: return reduction(e, r);
    default: break;
    }
    a = ex(e, in->a);
    if (in->b != IR_NONE) b = ex(e, in->b);
    const char *c = in->c != IR_NONE ? ex(e, in->c) : NULL;
    switch ((ir_op)in->op) {
    case IR_NEG: return S(e, "(-%s)", a);
    case IR_LT: return S(e, "(%s < %s ? 1.f : 0.f)", a, b);
    case IR_LE: return S(e, "(%s <= %s ? 1.f : 0.f)", a, b);
    case IR_GT: return S(e, "(%s > %s ? 1.f : 0.f)", a, b);
    case IR_GE: return S(e, "(%s >= %s ? 1.f : 0.f)", a, b);
    case IR_EQ: return S(e, "(%s == %s ? 1.f : 0.f)", a, b);
    case IR_NE: return S(e, "(%s != %s ? 1.f : 0.f)", a, b);
    case IR_SELECT: return S(e, "(%s != 0.f ? %s : %s)", a, b, c);
    case IR_SIN: return S(e, "sinf(%s)", a);
    case IR_COS: return S(e, "cosf(%s)", a);
    case IR_ERF: return S(e, "erff(%s)", a);
    case IR_ADD: return S(e, "(%s + %s)", a, b);
    case IR_SUB: return S(e, "(%s - %s)", a, b);
    case IR_MUL: return S(e, "(%s * %s)", a, b);
    case IR_DIV: return S(e, "(%s / %s)", a, b);
    case IR_EXP: return S(e, "expf(%s)", a);
    case IR_LOG: return S(e, "logf(%s)", a);
    case IR_LOG1P: return S(e, "log1pf(%s)", a);
    case IR_SQRT: return S(e, "sqrtf(%s)", a);
    case IR_RSQRT: return S(e, "ssmc_rsqrt(%s)", a);
    case IR_ABS: return S(e, "fabsf(%s)", a);
    case IR_TANH: return S(e, "tanhf(%s)", a);
    case IR_SIGMOID: return S(e, "ssmc_sigmoid(%s)", a);
    case IR_SOFTPLUS: return S(e, "ssmc_softplus(%s)", a);
    case IR_SILU: return S(e, "ssmc_silu(%s)", a);
    case IR_RELU: return S(e, "ssmc_relu(%s)", a);
    case IR_POW: return S(e, "powf(%s, %s)", a, b);
    case IR_MIN: return S(e, "fminf(%s, %s)", a, b);
    case IR_MAX: return S(e, "fmaxf(%s, %s)", a, b);
    default: return "0.f";
    }
}

/* ---- statements ---- */

/* Memory-held tensors the expression reads. */
static void mem_reads(em *e, ir_ref r, bool *set)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &e->m->insts[r];
    if (in->op == IR_LOAD) {
        if (in_memory(e->p, in->load.tensor)) set[in->load.tensor] = true;
        return;
    }
    if (in->op == IR_CONST) return;
    mem_reads(e, in->a, set);
    mem_reads(e, in->b, set);
    mem_reads(e, in->c, set);
}

static void barrier(em *e)
{
    line(e, "__syncthreads();");
    memset(e->written, 0, (e->m->ntensors + 1) * sizeof *e->written);
    memset(e->read, 0, (e->m->ntensors + 1) * sizeof *e->read);
}

static void barrier_if_pending(em *e)
{
    for (uint32_t i = 0; i <= e->m->ntensors; i++)
        if (e->written[i] || e->read[i]) {
            barrier(e);
            return;
        }
}

/* An empty set of classes. */
static bool *class_set(em *e)
{
    bool *s = arena_array(&e->a, (size_t)(e->p->ncls ? e->p->ncls : 1), sizeof(bool));
    if (!s) e->oom = true;
    return s;
}

/* The replica that writes memory for a tensor whose axes' classes are in `has`. */
static const char *primary(em *e, const bool *has)
{
    const pass_plan *p = e->p;
    const char *s = NULL;
    for (int c = 0; c < p->ncls; c++)
        if (!has[c] && p->cls[c].threads > 1) s = and_ok(e, s, S(e, "crd%d == 0", c));
    if (p->nthreads > p->layout_threads) s = and_ok(e, s, S(e, "tid < %d", p->layout_threads));
    return s;
}

static const char *guard(em *e, const char *cond, const char *stmt)
{
    return cond ? S(e, "if (%s) %s", cond, stmt) : stmt;
}

static void comment_stmt(em *e, const ir_stmt *s)
{
    const ir_tensor *t = &e->m->tensors[s->tensor];
    strbuf b = {0};
    sb_printf(&b, "// line %u: %s", s->loc.line, t->name);
    if (t->per_step || t->rank) {
        sb_putc(&b, '[');
        if (t->per_step) sb_printf(&b, "t%s", t->rank ? "," : "");
        for (int i = 0; i < t->rank; i++) sb_printf(&b, "%s%s", i ? "," : "", e->m->vars[s->vars[i]].name);
        sb_putc(&b, ']');
    }
    sb_puts(&b, " = ");
    ir_print_expr(&b, e->m, s->root);
    if (b.failed) e->oom = true;
    line(e, "%s", sb_cstr(&b));
    sb_free(&b);
}

/* Where statement s's element goes, for an element at the bound LHS vars. */
static const char *lhs_mem(em *e, const ir_stmt *s)
{
    const ir_tensor *t = &e->m->tensors[s->tensor];
    const char *idx[IR_MAX_RANK];
    int64_t ext[IR_MAX_RANK];
    if (t->kind == IR_OUTPUT) {
        for (int i = 0; i < t->rank; i++) idx[i] = var_glob(e, s->vars[i]);
        dims_of(e->m, t, ext);
        return S(e, "p_%s + %s", t->name, offset(e, t->rank, idx, ext));
    }
    for (int i = 0; i < t->rank; i++) idx[i] = var_loc(e, s->vars[i]);
    tiles_of(e->p, s->tensor, ext);
    return S(e, "s_%s[%s]", t->name, offset(e, t->rank, idx, ext));
}

static const char *reg_ref(em *e, const char *base, const ir_stmt *s)
{
    const ir_tensor *t = &e->m->tensors[s->tensor];
    for (int i = 0; i < t->rank; i++) base = S(e, "%s[%s]", base, e->v[s->vars[i]].slot);
    return base;
}

static const char *slot_dims(em *e, const pass_plan *p, int tensor)
{
    const char *s = "";
    for (int i = 0; i < p->m->tensors[tensor].rank; i++) s = S(e, "%s[%d]", s, p->cls[plan_axis_class(p, tensor, i)].slots);
    return s;
}

static void layout_stmt(em *e, const ir_stmt *s)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[s->tensor];
    bool reg = p->place[s->tensor] == PLAN_PLACE_REG;
    bool temp = t->kind == IR_STATE && !reg; /* every read before any write */
    bool *hcls = class_set(e);
    if (!hcls) {
        e->oom = true;
        return;
    }
    for (int i = 0; i < t->rank; i++) hcls[plan_axis_class(p, s->tensor, i)] = true;
    const char *prim = primary(e, hcls);
    const char *nv = temp ? S(e, "nv%d", e->tmp++) : NULL;
    if (temp) line(e, "float %s%s;", nv, slot_dims(e, p, s->tensor));
    for (int pass = 0; pass < (temp ? 2 : 1); pass++) {
        const char *ok = NULL;
        for (int i = 0; i < t->rank; i++) open_dom(e, s->vars[i], plan_class_dom(p, plan_axis_class(p, s->tensor, i)));
        bool stores = (t->kind == IR_OUTPUT && e->sig->present[s->tensor]) || (!reg && (pass == 1 || !temp));
        for (int i = 0; stores && i < t->rank; i++)
            if (e->v[s->vars[i]].ok) ok = and_ok(e, ok, var_ok(e, s->vars[i]));
        if (pass == 0) {
            const char *val = ex(e, s->root);
            if (reg)
                line(e, "%s = %s;", t->rank ? reg_ref(e, S(e, "r_%s", t->name), s) : S(e, "r_%s", t->name), val);
            else if (temp)
                line(e, "%s = %s;", t->rank ? reg_ref(e, nv, s) : nv, val);
            else if (t->kind == IR_OUTPUT && e->sig->present[s->tensor])
                line(e, "%s", guard(e, and_ok(e, ok, prim), S(e, "ssmc_st(%s, %s);", lhs_mem(e, s), val)));
            else if (t->kind == IR_LET)
                line(e, "%s", guard(e, and_ok(e, ok, prim), S(e, "%s = %s;", lhs_mem(e, s), val)));
        } else {
            line(e, "%s", guard(e, and_ok(e, ok, prim), S(e, "%s = %s;", lhs_mem(e, s), t->rank ? reg_ref(e, nv, s) : nv)));
        }
        for (int i = t->rank - 1; i >= 0; i--) close_dom(e, s->vars[i]);
        if (temp && pass == 0) barrier(e);
    }
}

/* The global value of the variable at position k of flat statement si's left
 * side for element `elem` (row-major over the tiles), clamped into range. */
static const char *flat_value(em *e, uint32_t si, int k, const char *elem)
{
    const pass_plan *p = e->p;
    const ir_stmt *s = &e->m->stmts[si];
    int64_t stride = 1;
    for (int i = e->m->tensors[s->tensor].rank - 1; i > k; i--) stride *= p->cls[plan_axis_class(p, s->tensor, i)].tile;
    int c = plan_axis_class(p, s->tensor, k);
    const plan_class *cl = &p->cls[c];
    const char *w = stride == 1 ? elem : S(e, "%s / %lld", elem, (long long)stride);
    if (k > 0) w = S(e, "(%s) %% %lld", w, (long long)cl->tile);
    if (!cl->split) return w;
    if (cl->n % cl->tile == 0) return S(e, "base%d + %s", c, w);
    return S(e, "ssmc_imin(base%d + %s, %lld)", c, w, (long long)(cl->n - 1));
}

/* Binds the LHS vars of a flat statement to element `e` of its local domain
 * (row-major over the tiles); their declarations wait for the body. Returns the
 * condition that the element lies inside the sequence's dims (NULL: always);
 * with clamp, the global values past the dims are clamped into range (a group's
 * lanes compute such an element too, to take part in its shuffles). */
static const char *flat_bind(em *e, const ir_stmt *s, bool clamp)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[s->tensor];
    const char *ok = NULL;
    int64_t stride = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        int c = plan_axis_class(p, s->tensor, i);
        const plan_class *k = &p->cls[c];
        const char *name = m->vars[s->vars[i]].name;
        const char *w = stride == 1 ? "e" : S(e, "e / %lld", (long long)stride);
        if (i > 0) w = S(e, "%s %% %lld", w, (long long)k->tile);
        stride *= k->tile;
        vbind *b = &e->v[s->vars[i]];
        *b = (vbind){.on = true,
                     .slot = "mm",
                     .loc = S(e, "w_%s", name),
                     .glob = k->split ? S(e, "v_%s", name) : S(e, "w_%s", name),
                     .def_loc = S(e, "const int w_%s = %s;", name, w),
                     .def_glob = k->split ? S(e, "const int v_%s = base%d + w_%s;", name, c, name) : NULL};
        if (!k->split || k->n % k->tile == 0) continue;
        if (clamp) {
            b->def_glob = S(e, "const int v_%s = ssmc_imin(base%d + w_%s, %lld);", name, c, name, (long long)(k->n - 1));
            ok = and_ok(e, ok, S(e, "base%d + %s < %lld", c, var_loc(e, s->vars[i]), (long long)k->n));
        } else {
            ok = and_ok(e, ok, S(e, "%s < %lld", var_glob(e, s->vars[i]), (long long)k->n));
        }
    }
    return ok;
}

static bool uses_patterns(em *e, ir_ref r)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &e->m->insts[r];
    if (in->op == IR_LOAD) return e->p->ld_kind[r] == PLAN_LD_PAT && e->m->tensors[in->load.tensor].kind != IR_STATE &&
                                  e->m->tensors[in->load.tensor].kind != IR_LET;
    if (in->op == IR_CONST) return false;
    return uses_patterns(e, in->a) || uses_patterns(e, in->b) || uses_patterns(e, in->c);
}

static void flat_stmt(em *e, uint32_t si)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_stmt *s = &m->stmts[si];
    const ir_tensor *t = &m->tensors[s->tensor];
    int64_t n = plan_local_elems(p, s->tensor);
    int nt = p->nthreads;
    bool indirect = t->kind == IR_STATE && !p->sched.inplace[si];
    bool temp = indirect && p->buf_stmt[si] < 0;
    int64_t per = (n + nt - 1) / nt;
    const char *nv = temp ? S(e, "nv%d", e->tmp++) : NULL;
    bool pats = uses_patterns(e, s->root);
    int G = p->group[si];
    int64_t gpass = nt / G;
    const char *in_range = NULL;
    if (temp) line(e, "float %s[%lld];", nv, (long long)per);
    if (G > 1) { /* every lane of a warp runs each pass: the shuffles need them all */
        line(e, "const int gl = tid & %d;", G - 1);
        line(e, "for (int eb = 0; eb < %lld; eb += %lld) {", (long long)n, (long long)gpass);
        e->ind++;
        if (n % gpass) {
            line(e, "const int e = ssmc_imin(eb + tid / %d, %lld);", G, (long long)(n - 1));
            in_range = S(e, "eb + tid / %d < %lld", G, (long long)n);
        } else {
            line(e, "const int e = eb + tid / %d;", G);
        }
    } else if (temp || pats) { /* unrolled: mm is a register slot */
        line(e, "#pragma unroll");
        line(e, "for (int mm = 0; mm < %lld; mm++) {", (long long)per);
        e->ind++;
        line(e, "const int e = tid + mm * %d;", nt);
        if (temp) line(e, "%s[mm] = 0.f;", nv);
        line(e, "if (e >= %lld) continue;", (long long)n);
    } else {
        line(e, "for (int e = tid; e < %lld; e += %d) {", (long long)n, nt);
        e->ind++;
    }
    strbuf *outer = e->out, body = {0};
    e->out = &body;
    const char *ok = flat_bind(e, s, G > 1);
    if (ok && G == 1) line(e, "if (!(%s)) continue;", ok);
    e->group = G;
    e->group_in = in_range;
    const char *val = ex(e, s->root);
    e->group = 1;
    e->group_in = NULL;
    if (G > 1) { /* one lane of the group stores */
        const char *st = and_ok(e, and_ok(e, "gl == 0", in_range), ok);
        if (t->kind == IR_OUTPUT) {
            if (e->sig->present[s->tensor]) line(e, "if (%s) ssmc_st(%s, %s);", st, lhs_mem(e, s), val);
        } else {
            line(e, "if (%s) s_%s[e] = %s;", st, t->name, val);
        }
    } else if (t->kind == IR_OUTPUT) {
        if (e->sig->present[s->tensor]) line(e, "ssmc_st(%s, %s);", lhs_mem(e, s), val);
    } else if (temp) {
        line(e, "%s[mm] = %s;", nv, val);
    } else if (indirect) {
        line(e, "s_scratch[%lld + e] = %s;", (long long)p->bufs[p->buf_stmt[si]].off, val);
    } else {
        line(e, "s_%s[e] = %s;", t->name, val);
    }
    e->out = outer;
    for (int i = 0; i < t->rank; i++) {
        vbind *b = &e->v[s->vars[i]];
        b->used_loc |= b->used_glob; /* v_ is computed from w_ */
        write_defs(e, s->vars[i]);
        b->on = false;
    }
    sb_putn(e->out, body.data ? body.data : "", body.len);
    if (body.failed) e->oom = true;
    sb_free(&body);
    close_block(e);
    if (!indirect) return;
    barrier(e);
    if (temp) {
        line(e, "#pragma unroll");
        line(e, "for (int mm = 0; mm < %lld; mm++)", (long long)per);
        line(e, "    if (tid + mm * %d < %lld) s_%s[tid + mm * %d] = %s[mm];", nt, (long long)n, t->name, nt, nv);
    } else {
        line(e, "for (int e = tid; e < %lld; e += %d) s_%s[e] = s_scratch[%lld + e];", (long long)n, nt, t->name,
             (long long)p->bufs[p->buf_stmt[si]].off);
        e->read[SCRATCH(e)] = true;
    }
}

static void stmt(em *e, uint32_t si)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_stmt *s = &m->stmts[si];
    const ir_tensor *t = &m->tensors[s->tensor];
    bool *rd = arena_array(&e->a, m->ntensors + 1, sizeof(bool));
    if (!rd) {
        e->oom = true;
        return;
    }
    mem_reads(e, s->root, rd);
    bool lhs_mem = in_memory(p, s->tensor);
    bool indirect = !p->layout[si] && t->kind == IR_STATE && !p->sched.inplace[si];
    bool sync = false;
    for (uint32_t i = 0; i < m->ntensors; i++) sync |= rd[i] && e->written[i];
    if (lhs_mem) sync |= e->read[s->tensor] || e->written[s->tensor];
    if (indirect && p->buf_stmt[si] >= 0) sync |= e->read[SCRATCH(e)] || e->written[SCRATCH(e)];
    line(e, "");
    comment_stmt(e, s);
    if (sync) barrier(e);
    line(e, "{");
    e->ind++;
    if (p->layout[si])
        layout_stmt(e, s);
    else
        flat_stmt(e, si);
    e->ind--;
    line(e, "}");
    for (uint32_t i = 0; i < m->ntensors; i++) e->read[i] |= rd[i];
    if (lhs_mem) e->written[s->tensor] = true;
}

/* ---- patterns: per-thread registers for loads that depend on slots only ---- */

/* Elements per vector access (1: none) of tensor ti whose innermost axis runs
 * over domain d: at most 16 bytes, dividing the axis, the domain and the
 * slots, so every chunk is aligned and wholly inside or wholly outside the
 * domain. */
static int vec_width(em *e, int ti, plan_dom d)
{
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[ti];
    if (!e->sig->vec || t->rank == 0) return 1;
    int64_t n_in = m->dims[t->dims[t->rank - 1]].value;
    int bytes = dtype_bytes(e->sig->dtype[ti]);
    for (int w = 8; w >= 2; w /= 2) {
        if (w * bytes > 16 || (w == 8 && bytes != 2)) continue;
        if (n_in % w == 0 && d.n % w == 0 && d.slots % w == 0) return w;
    }
    return 1;
}

/* Width of a pattern's vector loads (1: none) for this signature. */
static int pattern_width(em *e, const plan_pat *pt)
{
    const ir_tensor *t = &e->m->tensors[pt->tensor];
    if (t->rank == 0) return 1;
    int inner = t->rank - 1;
    if (pt->kind[inner] != IR_IX_VAR || pt->dom_of[inner] != pt->ndoms - 1 || pt->doms[pt->ndoms - 1].cls < 0) return 1;
    return vec_width(e, pt->tensor, pt->doms[pt->ndoms - 1]);
}

static const char *pat_dims(em *e, const plan_pat *pt)
{
    const char *s = "";
    for (int d = 0; d < pt->ndoms; d++) s = S(e, "%s[%d]", s, pt->doms[d].slots);
    return s;
}

/* Emits the loads of pattern id into array `dst`; `base` is the pointer to
 * index (with the step already applied); `lag_ok` the guard for a lagged read. */
static void pattern_load(em *e, int id, const char *dst, const char *base, const char *lag_ok)
{
    const ir_model *m = e->m;
    const plan_pat *pt = &e->p->pats[id];
    const ir_tensor *t = &m->tensors[pt->tensor];
    int w = pattern_width(e, pt);
    const char *slots[IR_MAX_RANK];
    for (int d = 0; d < pt->ndoms; d++) {
        slots[d] = S(e, "ja%d", d);
        bool last = d == pt->ndoms - 1;
        line(e, "#pragma unroll");
        line(e, "for (int %s = 0; %s < %d; %s += %d) {", slots[d], slots[d], pt->doms[d].slots, slots[d], last ? w : 1);
        e->ind++;
    }
    const char *idx[IR_MAX_RANK];
    int64_t ext[IR_MAX_RANK];
    for (int d = 0; d < pt->ndoms; d++)
        if (pt->doms[d].cls < 0) /* a flat statement's element, kept in range */
            line(e, "const int e%d = ssmc_imin(tid + %s * %d, %lld);", d, slots[d], e->p->nthreads,
                 (long long)(pt->doms[d].n - 1));
    for (int i = 0; i < t->rank; i++) {
        if (pt->kind[i] == IR_IX_CONST) {
            idx[i] = S(e, "%lld", (long long)pt->k[i]);
            continue;
        }
        int d = pt->dom_of[i];
        const char *v = pt->doms[d].cls < 0 ? flat_value(e, PLAN_FLAT_STMT(pt->doms[d].cls), pt->pos[i], S(e, "e%d", d))
                                            : dom_value(e, pt->doms[d], slots[d], i == t->rank - 1 ? w : 1);
        idx[i] = pt->kind[i] == IR_IX_DIV ? S(e, "(%s) / %lld", v, (long long)pt->k[i]) : v;
    }
    dims_of(m, t, ext);
    const char *addr = S(e, "%s + %s", base, offset(e, t->rank, idx, ext));
    const char *cell = dst;
    for (int d = 0; d < pt->ndoms; d++) cell = S(e, "%s[%s]", cell, slots[d]);
    if (w > 1) {
        if (lag_ok) {
            line(e, "if (%s) ssmc_ld%d(%s, &%s);", lag_ok, w, addr, cell);
            line(e, "else for (int z = 0; z < %d; z++) (&%s)[z] = 0.f;", w, cell);
        } else {
            line(e, "ssmc_ld%d(%s, &%s);", w, addr, cell);
        }
    } else {
        line(e, "%s = %s;", cell, lag_ok ? S(e, "%s ? ssmc_ld(%s) : 0.f", lag_ok, addr) : S(e, "ssmc_ld(%s)", addr));
    }
    for (int d = 0; d < pt->ndoms; d++) close_block(e);
}

/* ---- state initialisation and write-back ---- */

static const char *const place_names[] = {"", "registers", "shared memory", "the global workspace"};

/* Loops over a state's owned slots (registers) and loads or stores it. */
/* given: a load reads the tensor (else zeros); a store writes it when the
 * signature has it. */
static void state_regs(em *e, int ti, bool store, bool given)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[ti];
    if (store) given = e->sig->present[ti];
    if (store && !given) return;
    const char *slots[IR_MAX_RANK], *idx[IR_MAX_RANK], *ok = NULL;
    bool *hcls = class_set(e);
    if (!hcls) {
        e->oom = true;
        return;
    }
    int64_t ext[IR_MAX_RANK];
    int w = t->rank && given && !e->state_at ? vec_width(e, ti, plan_class_dom(p, plan_axis_class(p, ti, t->rank - 1))) : 1;
    for (int i = 0; i < t->rank; i++) {
        int c = plan_axis_class(p, ti, i);
        plan_dom d = plan_class_dom(p, c);
        int step = i == t->rank - 1 ? w : 1;
        hcls[c] = true;
        slots[i] = S(e, "ja%d", i);
        line(e, "#pragma unroll");
        line(e, "for (int %s = 0; %s < %d; %s += %d) {", slots[i], slots[i], d.slots, slots[i], step);
        e->ind++;
        idx[i] = dom_value(e, d, slots[i], step);
        ok = and_ok(e, ok, dom_ok(e, d, slots[i]));
    }
    dims_of(m, t, ext);
    const char *reg = S(e, "r_%s", t->name);
    for (int i = 0; i < t->rank; i++) reg = S(e, "%s[%s]", reg, slots[i]);
    const char *addr = S(e, "%s + %s", e->state_at ? e->state_at : S(e, "p_%s", t->name), offset(e, t->rank, idx, ext));
    if (store && w > 1)
        line(e, "%s", guard(e, and_ok(e, ok, primary(e, hcls)), S(e, "ssmc_st%d(%s, &%s);", w, addr, reg)));
    else if (store)
        line(e, "%s", guard(e, and_ok(e, ok, primary(e, hcls)), S(e, "ssmc_st(%s, %s);", addr, reg)));
    else if (w > 1)
        line(e, "ssmc_get%d(%s, &%s);", w, addr, reg);
    else
        line(e, "%s = %s;", reg, given ? S(e, "ssmc_get(%s)", addr) : "0.f");
    for (int i = 0; i < t->rank; i++) close_block(e);
}

/* A memory-held state: the block's threads walk its local elements. */
static void state_mem(em *e, int ti, bool store, bool given)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[ti];
    if (store) given = e->sig->present[ti];
    if (store && !given) return;
    int64_t n = plan_local_elems(p, ti);
    line(e, "for (int e = tid; e < %lld; e += %d) {", (long long)n, p->nthreads);
    e->ind++;
    const char *idx[IR_MAX_RANK], *ok = NULL;
    int64_t ext[IR_MAX_RANK];
    if (t->rank) line(e, "int q = e;");
    for (int i = t->rank - 1; i >= 0; i--) {
        int c = plan_axis_class(p, ti, i);
        const plan_class *k = &p->cls[c];
        line(e, "const int ia%d = %s;", i, i > 0 ? S(e, "q %% %lld", (long long)k->tile) : "q");
        if (i > 0) line(e, "q /= %lld;", (long long)k->tile);
        idx[i] = k->split ? S(e, "(base%d + ia%d)", c, i) : S(e, "ia%d", i);
        if (k->split && k->n % k->tile) ok = and_ok(e, ok, S(e, "base%d + ia%d < %lld", c, i, (long long)k->n));
    }
    dims_of(m, t, ext);
    const char *addr = S(e, "%s + %s", e->state_at ? e->state_at : S(e, "p_%s", t->name), offset(e, t->rank, idx, ext));
    if (store)
        line(e, "%s", guard(e, ok, S(e, "ssmc_st(%s, s_%s[e]);", addr, t->name)));
    else if (given)
        line(e, "s_%s[e] = %s;", t->name, ok ? S(e, "%s ? ssmc_get(%s) : 0.f", ok, addr) : S(e, "ssmc_get(%s)", addr));
    else
        line(e, "s_%s[e] = 0.f;", t->name);
    close_block(e);
}

/* A state given no initial value that has an init statement: the statement
 * over the state's elements, as the state is held (the owner's slots, or the
 * block's threads over its local elements; elements past the dims get 0). Its
 * loads of params are plain loads (no pattern), its reductions loops. */
static void state_init(em *e, const ir_stmt *s)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[s->tensor];
    if (p->place[s->tensor] == PLAN_PLACE_REG) {
        for (int i = 0; i < t->rank; i++) open_dom(e, s->vars[i], plan_class_dom(p, plan_axis_class(p, s->tensor, i)));
        const char *val = ex(e, s->root);
        line(e, "%s = %s;", t->rank ? reg_ref(e, S(e, "r_%s", t->name), s) : S(e, "r_%s", t->name), val);
        for (int i = t->rank - 1; i >= 0; i--) close_dom(e, s->vars[i]);
        return;
    }
    line(e, "for (int e = tid; e < %lld; e += %d) {", (long long)plan_local_elems(p, s->tensor), p->nthreads);
    e->ind++;
    strbuf *outer = e->out, body = {0};
    e->out = &body;
    const char *ok = flat_bind(e, s, false);
    if (ok) line(e, "if (!(%s)) { s_%s[e] = 0.f; continue; }", ok, t->name);
    line(e, "s_%s[e] = %s;", t->name, ex(e, s->root));
    e->out = outer;
    for (int i = 0; i < t->rank; i++) {
        vbind *b = &e->v[s->vars[i]];
        b->used_loc |= b->used_glob; /* v_ is computed from w_ */
        write_defs(e, s->vars[i]);
        b->on = false;
    }
    sb_putn(e->out, body.data ? body.data : "", body.len);
    if (body.failed) e->oom = true;
    sb_free(&body);
    close_block(e);
}

/* A state's value before the first step: read from its tensor when given,
 * else its init statement's value, else zeros. */
static void state_start(em *e, int ti, bool given)
{
    const ir_stmt *init = given ? NULL : ir_find_init(e->m, ti);
    if (init) state_init(e, init);
    else if (e->p->place[ti] == PLAN_PLACE_REG) state_regs(e, ti, false, given);
    else state_mem(e, ti, false, given);
}

/* ---- the kernel ---- */

static void header(em *e)
{
    const ir_model *m = e->m;
    strbuf name = {0};
    cuda_program_name(&name, m);
    sb_printf(e->out, "// %s: the recurrent kernel of model '%s' (%s), generated by ssmc %s; do not edit\n",
              sb_cstr(&name), m->name, m->file && m->file->name ? m->file->name : "<input>", SSMC_VERSION);
    sb_free(&name);
    sb_puts(e->out, "// dims:");
    for (uint32_t i = 0; i < m->ndims; i++) sb_printf(e->out, " %s = %lld", m->dims[i].name, (long long)m->dims[i].value);
    sb_puts(e->out, "\n// tensors:");
    bool first = true;
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        sb_printf(e->out, "%s %s %s%s", first ? "" : ",", t->name, e->sig->present[i] ? dtype_names[e->sig->dtype[i]] : "(absent)",
                  e->sig->present[i] && !reads_initial(e, (int)i) ? " (final state only)" : "");
        first = false;
    }
    sb_printf(e->out, "\n// vector loads: %s\n", e->sig->vec ? "allowed" : "off");
    if (e->sig->rows) sb_puts(e->out, "// states: by pool row (ssmc_rows), sequences without a state (ssmc_has)\n");
    if (e->sig->one_step) sb_puts(e->out, "// one step (T = 1)\n");
    if (e->m->reverse) sb_puts(e->out, "// a reverse model: its steps run at t = T-1 .. 0\n");
    plan_print_comment(e->out, e->p, "// ");
}

static void params(em *e)
{
    const ir_model *m = e->m;
    strbuf kn = {0};
    cuda_kernel_name(&kn, m);
    line(e, "extern \"C\" __global__ void __launch_bounds__(%d) %s(", e->p->nthreads, sb_cstr(&kn));
    sb_free(&kn);
    e->ind += 2;
    strbuf b = {0};
    sb_printf(&b, "long long B, long long %s, float *__restrict__ ws", e->sig->one_step ? "T_arg" : "T");
    if (e->sig->rows) sb_puts(&b, ",\n        const int *__restrict__ ssmc_rows, const unsigned char *__restrict__ ssmc_has");
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        bool ro = t->kind == IR_INPUT || t->kind == IR_PARAM;
        if (!e->sig->present[i])
            sb_printf(&b, ",\n        void *g_%s", t->name);
        else
            sb_printf(&b, ",\n        %s%s *__restrict__ g_%s", ro ? "const " : "", dtype_c(e->sig->dtype[i]), t->name);
    }
    sb_puts(&b, ")");
    if (b.failed) e->oom = true;
    line(e, "%s", sb_cstr(&b));
    sb_free(&b);
    e->ind -= 2;
}

/* The index of this item's tile over the classes tensor ti's statement is
 * partial over (plan.h: the first class slowest). */
static const char *tile_index(em *e, int ti)
{
    const pass_plan *p = e->p;
    const ir_tensor *t = &e->m->tensors[ti];
    const size_t nc = (size_t)p->ncls;
    const char *tile = NULL;
    for (int c = 0; c < p->ncls; c++) {
        if (!p->partial[(size_t)t->def * nc + (size_t)c]) continue;
        const char *q = p->cls[c].ntiles == 1 ? "0" : S(e, "base%d / %lld", c, (long long)p->cls[c].tile);
        tile = tile ? S(e, "(%s) * %lld + %s", tile, (long long)p->cls[c].ntiles, q) : q;
    }
    return tile ? tile : "0";
}

/* The pointer of a partial output: its scratch slice for this item's tile of
 * the classes it is partial over (plan.h: [tiles][batch][T][elems] in f32,
 * past every item's workspace). */
static void partial_ptr(em *e, int ti)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[ti];
    const char *row = S(e, "((long long)(%s) * B + bat) * T", tile_index(e, ti));
    line(e, "// partial sums over this item's tile, summed into %s after the kernel", t->name);
    line(e, "float *p_%s = ws + B * %lldLL + B * T * %lldLL + (%s%s) * %lld;", t->name,
         (long long)(p->items_per_seq * p->global_floats), (long long)p->part_off[ti], row,
         m->reverse ? " + T - 1" : "", (long long)ir_tensor_elems(m, t));
}

/* A partial accumulator (plan.h): tile_S, and q_S, where the items of tiles
 * past the first leave their final values (f32). */
static void partial_state_ptr(em *e, int ti)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    const ir_tensor *t = &m->tensors[ti];
    line(e, "// an accumulator partial over this item's tile: tile 0 keeps it in place, the others start from");
    line(e, "// zero and leave their final values here, added to %s after the kernel", t->name);
    line(e, "const int tile_%s = %s;", t->name, tile_index(e, ti));
    line(e, "float *q_%s = ws + B * %lldLL + B * T * %lldLL + B * %lldLL + ((long long)(tile_%s - 1) * B + bat) * %lld;",
         t->name, (long long)(p->items_per_seq * p->global_floats), (long long)p->part_floats,
         (long long)p->part_off[ti], t->name, (long long)ir_tensor_elems(m, t));
}

static bool partial_state(const em *e, int ti)
{
    return e->p->part_tiles[ti] && e->m->tensors[ti].kind == IR_STATE && e->sig->present[ti];
}

static void prologue(em *e)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    if (e->sig->one_step) line(e, "const long long T = 1; // one step: a decode kernel");
    line(e, "const int tid = threadIdx.x;");
    for (int c = 0; c < p->ncls; c++) {
        const plan_class *k = &p->cls[c];
        if (k->threads == 1) continue;
        const char *q = k->stride == 1 ? "tid" : S(e, "tid / %d", k->stride);
        line(e, "const int crd%d = %s %% %d; // %s", c, q, k->threads, m->dims[p->sched.class_dim[c]].name);
    }
    line(e, "long long blk = blockIdx.x;");
    for (int c = 0; c < p->ncls; c++) {
        const plan_class *k = &p->cls[c];
        if (!k->split) continue;
        if (k->ntiles == 1) {
            line(e, "const int base%d = 0; // %s", c, m->dims[p->sched.class_dim[c]].name);
            continue;
        }
        line(e, "const int base%d = (int)(blk %% %lld) * %lld; // %s", c, (long long)k->ntiles, (long long)k->tile,
             m->dims[p->sched.class_dim[c]].name);
        line(e, "blk /= %lld;", (long long)k->ntiles);
    }
    line(e, "const long long bat = blk;");
    line(e, "if (bat >= B) return;");
    if (e->sig->rows) {
        line(e, "// the states of sequence bat: row ssmc_rows[bat] of each state's pool (a negative row: a padding");
        line(e, "// slot, nothing read or written); ssmc_has[bat] == 0: it starts from the model's initial state");
        line(e, "const long long row = ssmc_rows ? (long long)ssmc_rows[bat] : bat;");
        line(e, "if (row < 0) return;");
        bool any = false;
        for (uint32_t i = 0; i < m->ntensors; i++) any |= m->tensors[i].kind == IR_STATE && e->sig->present[i];
        if (any) line(e, "const bool fresh = ssmc_has && !ssmc_has[bat];");
    }
    bool any_smem = p->local_floats > 0;
    if (any_smem) line(e, "SSMC_DYN_SMEM;");
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET || t->kind == IR_PARAM || !e->sig->present[i]) continue;
        int64_t n = ir_tensor_elems(m, t);
        bool ro = t->kind == IR_INPUT;
        if (p->part_tiles[i] && t->kind != IR_STATE) {
            partial_ptr(e, (int)i);
            continue;
        }
        if (t->per_step)
            line(e, "%s%s *p_%s = g_%s + %s * %lld;", ro ? "const " : "", dtype_c(e->sig->dtype[i]), t->name, t->name,
                 m->reverse ? "(bat * T + T - 1)" : "bat * T", (long long)n);
        else
            line(e, "%s *p_%s = g_%s + %s * %lld;", dtype_c(e->sig->dtype[i]), t->name, t->name,
                 e->sig->rows && t->kind == IR_STATE ? "row" : "bat", (long long)n);
        if (partial_state(e, (int)i)) partial_state_ptr(e, (int)i);
    }
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (!plan_tracked(t)) continue;
        if (p->place[i] == PLAN_PLACE_REG) {
            line(e, "float r_%s%s; // %s %s: %s", t->name, slot_dims(e, p, (int)i), ir_kind_names[t->kind], t->name,
                 place_names[p->place[i]]);
        } else if (p->place[i] == PLAN_PLACE_LOCAL || p->place[i] == PLAN_PLACE_GLOBAL) {
            const char *base = p->place[i] == PLAN_PLACE_LOCAL ? "ssmc_smem" : S(e, "ws + (long long)blockIdx.x * %lld", (long long)p->global_floats);
            line(e, "float *s_%s = %s + %lld; // %s %s: %s%s", t->name, base, (long long)p->bufs[p->buf_tensor[i]].off, ir_kind_names[t->kind],
                 t->name, place_names[p->place[i]], p->dbuf[i] ? " (two buffers, by the parity of t)" : "");
        }
    }
    int scratch = -1;
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (p->buf_stmt[si] >= 0) scratch = p->buf_stmt[si];
    if (scratch >= 0)
        line(e, "float *s_scratch = %s;",
             p->bufs[scratch].mem == PLAN_PLACE_LOCAL ? "ssmc_smem" : S(e, "ws + (long long)blockIdx.x * %lld", (long long)p->global_floats));
}

static bool pat_is_param(const em *e, int id) { return e->m->tensors[e->p->pats[id].tensor].kind == IR_PARAM; }

static const char *lag_guard(em *e, const plan_pat *pt, const char *step)
{
    if (!pt->lag) return NULL;
    return S(e, "%s >= %lld", step, (long long)pt->lag);
}

static const char *pat_base(em *e, const plan_pat *pt, const char *ahead)
{
    const ir_tensor *t = &e->m->tensors[pt->tensor];
    int64_t n = ir_tensor_elems(e->m, t);
    const char *s = S(e, "p_%s", t->name);
    if (ahead) s = S(e, "%s %s %s * %lld", s, e->m->reverse ? "-" : "+", ahead, (long long)n);
    if (pt->lag) s = S(e, "%s %s %lldLL", s, back(e), (long long)(pt->lag * n));
    return s;
}

static void kernel(em *e)
{
    const pass_plan *p = e->p;
    const ir_model *m = e->m;
    int mask_threads = p->nthreads;
    sb_printf(e->out, "#define SSMC_MASK 0x%08xu\n", mask_threads >= 32 ? 0xffffffffu : (1u << mask_threads) - 1u);
    for (size_t i = 0; i < sizeof prelude / sizeof *prelude; i++) sb_puts(e->out, prelude[i]);
    sb_puts(e->out, "\n");
    params(e);
    line(e, "{");
    e->ind++;
    prologue(e);

    if (p->npats) line(e, "// loads that depend only on the thread's slots: params once, inputs a step ahead");
    for (int id = 0; id < p->npats; id++) {
        const plan_pat *pt = &p->pats[id];
        line(e, "float pat%d%s; // %s", id, pat_dims(e, pt), m->tensors[pt->tensor].name);
        if (pat_is_param(e, id)) pattern_load(e, id, S(e, "pat%d", id), S(e, "g_%s", m->tensors[pt->tensor].name), NULL);
    }
    line(e, "// states: the initial state, or the init's value, or zero");
    for (uint32_t i = 0; i < m->ntensors; i++) {
        if (m->tensors[i].kind != IR_STATE) continue;
        bool given = reads_initial(e, (int)i);
        /* by pool row, a sequence without a state starts from the model's
         * (fresh is uniform over the block: the branch holds no divergence) */
        if (given && e->sig->rows) {
            line(e, "if (fresh) {");
            e->ind++;
            state_start(e, (int)i, false);
            e->ind--;
            line(e, "} else {");
            e->ind++;
        }
        if (partial_state(e, (int)i)) { /* tiles past the first start from zero */
            line(e, "if (tile_%s == 0) {", m->tensors[i].name);
            e->ind++;
        }
        state_start(e, (int)i, given);
        if (partial_state(e, (int)i)) {
            e->ind--;
            line(e, "} else {");
            e->ind++;
            state_start(e, (int)i, false);
            e->ind--;
            line(e, "}");
        }
        if (given && e->sig->rows) {
            e->ind--;
            line(e, "}");
        }
        if (p->place[i] != PLAN_PLACE_REG) e->written[i] = true;
    }
    bool invariant = false;
    for (uint32_t si = 0; si < m->nstmts; si++) invariant |= !m->stmts[si].per_step;
    if (invariant) line(e, "// time-invariant lets, once per block");
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (!m->stmts[si].per_step) stmt(e, si);
    barrier_if_pending(e);
    for (int id = 0; id < p->npats; id++)
        if (!pat_is_param(e, id)) pattern_load(e, id, S(e, "pat%d", id), pat_base(e, &p->pats[id], NULL), lag_guard(e, &p->pats[id], "0"));

    if (m->reverse) line(e, "// t counts the steps run; the step at t is at time T-1-t, where the p_ pointers are");
    line(e, "for (long long t = 0; t < T; t++) {");
    e->ind++;
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (p->dbuf[i])
            line(e, "s_%s = %s + %lld + (int)(t & 1) * %lld;", m->tensors[i].name,
                 p->place[i] == PLAN_PLACE_LOCAL ? "ssmc_smem" : S(e, "ws + (long long)blockIdx.x * %lld", (long long)p->global_floats),
                 (long long)p->bufs[p->buf_tensor[i]].off, (long long)plan_local_elems(p, (int)i));
    bool prefetch = false;
    for (int id = 0; id < p->npats; id++) prefetch |= !pat_is_param(e, id);
    if (prefetch) {
        line(e, "// step t+1's inputs (step t's again at the last step: no branch, no read past the end)");
        line(e, "const long long tn = t + 1 < T ? 1 : 0;");
        for (int id = 0; id < p->npats; id++) {
            if (pat_is_param(e, id)) continue;
            line(e, "float nxt%d%s;", id, pat_dims(e, &p->pats[id]));
            pattern_load(e, id, S(e, "nxt%d", id), pat_base(e, &p->pats[id], "tn"), lag_guard(e, &p->pats[id], "t + tn"));
        }
    }
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (m->stmts[si].per_step) stmt(e, si);
    line(e, "");
    /* the next step writes the other buffer of a double-buffered let: the
     * barrier before its first reader there orders this step's reads first */
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (p->dbuf[i]) e->read[i] = false;
    barrier_if_pending(e);
    for (int id = 0; id < p->npats; id++) {
        if (pat_is_param(e, id)) continue;
        const plan_pat *pt = &p->pats[id];
        const char *cell = "";
        for (int d = 0; d < pt->ndoms; d++) {
            line(e, "#pragma unroll");
            line(e, "for (int ja%d = 0; ja%d < %d; ja%d++)", d, d, pt->doms[d].slots, d);
            cell = S(e, "%s[ja%d]", cell, d);
        }
        line(e, "%spat%d%s = nxt%d%s;", pt->ndoms ? "    " : "", id, cell, id, cell);
    }
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->per_step && e->sig->present[i] && (t->kind == IR_INPUT || t->kind == IR_OUTPUT))
            line(e, "p_%s %s= %lld;", t->name, m->reverse ? "-" : "+", (long long)ir_tensor_elems(m, t));
    }
    e->ind--;
    line(e, "}");
    line(e, "// final states");
    /* A state held by several threads is written back by one of them, in
     * place: every copy must have read the initial state first. */
    bool replicated = false;
    for (uint32_t i = 0; i < m->ntensors; i++) {
        if (m->tensors[i].kind != IR_STATE || p->place[i] != PLAN_PLACE_REG || !e->sig->present[i]) continue;
        bool *hcls = class_set(e);
        if (!hcls) break;
        for (int a = 0; a < m->tensors[i].rank; a++) hcls[plan_axis_class(p, (int)i, a)] = true;
        replicated |= primary(e, hcls) != NULL;
    }
    if (replicated) barrier(e);
    else barrier_if_pending(e);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        if (m->tensors[i].kind != IR_STATE) continue;
        bool part = partial_state(e, (int)i);
        if (part) {
            line(e, "if (tile_%s == 0) {", m->tensors[i].name);
            e->ind++;
        }
        if (p->place[i] == PLAN_PLACE_REG) state_regs(e, (int)i, true, true);
        else state_mem(e, (int)i, true, true);
        if (!part) continue;
        e->ind--;
        line(e, "} else {");
        e->ind++;
        e->state_at = S(e, "q_%s", m->tensors[i].name);
        if (p->place[i] == PLAN_PLACE_REG) state_regs(e, (int)i, true, true);
        else state_mem(e, (int)i, true, true);
        e->state_at = NULL;
        e->ind--;
        line(e, "}");
    }
    e->ind--;
    line(e, "}");
}

ssmc_status cuda_emit(strbuf *out, const pass_plan *p, const cuda_sig *sig, diag *d)
{
    const ir_model *m = p->m;
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if ((t->kind == IR_INPUT || t->kind == IR_PARAM) && !sig->present[i]) {
            diag_error(d, "cuda: %s '%s' is missing", ir_kind_names[t->kind], t->name);
            return SSMC_ERR_ARG;
        }
    }
    em e = {.out = out, .p = p, .m = m, .sig = sig};
    arena_init(&e.a);
    e.v = arena_array(&e.a, m->nvars ? m->nvars : 1, sizeof *e.v);
    e.written = arena_array(&e.a, m->ntensors + 1, sizeof(bool));
    e.read = arena_array(&e.a, m->ntensors + 1, sizeof(bool));
    if (!e.v || !e.written || !e.read) e.oom = true;
    if (!e.oom) {
        header(&e);
        kernel(&e);
    }
    bool failed = e.oom || e.a.failed || out->failed;
    arena_free(&e.a);
    if (failed) {
        diag_error(d, "out of memory while emitting CUDA C");
        return SSMC_ERR_NOMEM;
    }
    return SSMC_OK;
}

cuda_launch cuda_launch_of(const pass_plan *p, int64_t batch)
{
    cuda_launch l = {.blocks = batch * p->items_per_seq,
                     .threads = (unsigned)p->nthreads,
                     .ws_floats = p->global_floats,
                     .part_floats = p->part_floats,
                     .part_state_floats = p->part_state_floats};
    l.shared_bytes = (unsigned)(p->local_floats * 4);
    return l;
}

int64_t cuda_ws_floats(const cuda_launch *l, int64_t batch, int64_t T)
{
    return l->blocks * l->ws_floats + batch * T * l->part_floats + batch * l->part_state_floats;
}

/* ---- helper kernels: the gradient driver's conversions and batch sums ---- */

void cuda_helper_name(strbuf *out, bool sum_rows, ssmc_dtype dst, ssmc_dtype src)
{
    if (sum_rows)
        sb_printf(out, "ssmc_sum_rows_%s", dtype_names[dst]);
    else
        sb_printf(out, "ssmc_convert_%s_%s", dtype_names[dst], dtype_names[src]);
}

static int ilog2(int x)
{
    int k = 0;
    while ((1 << (k + 1)) <= x) k++;
    return k;
}

int cuda_sum_rows_per_block(int64_t rows, int64_t n)
{
    return rows >= 64 && n <= 8192 ? 32 : CUDA_HELPERS_THREADS;
}

void cuda_helper_add_name(strbuf *out, ssmc_dtype dst) { sb_printf(out, "ssmc_add_rows_%s", dtype_names[dst]); }

void cuda_emit_helpers(strbuf *out)
{
    sb_printf(out, "// %s: conversions and batch sums for the gradients' device buffers, generated by ssmc %s\n",
              CUDA_HELPERS_PROGRAM, SSMC_VERSION);
    sb_puts(out, "#define SSMC_MASK 0xffffffffu\n");
    cuda_prelude(out);
    for (int d = 0; d < SSMC_NDTYPES; d++) {
        const char *dc = dtype_c((ssmc_dtype)d);
        for (int s = 0; s < SSMC_NDTYPES; s++) {
            sb_printf(out, "extern \"C\" __global__ void __launch_bounds__(%d) ", CUDA_HELPERS_THREADS);
            cuda_helper_name(out, false, (ssmc_dtype)d, (ssmc_dtype)s);
            sb_printf(out, "(long long n, %s *__restrict__ dst, const %s *__restrict__ src)\n{\n", dc, dtype_c((ssmc_dtype)s));
            sb_printf(out, "    const long long i = (long long)blockIdx.x * %d + threadIdx.x;\n", CUDA_HELPERS_THREADS);
            sb_puts(out, "    if (i < n) ssmc_st(dst + i, ssmc_get(src + i));\n}\n");
        }
        sb_printf(out, "extern \"C\" __global__ void __launch_bounds__(%d) ", CUDA_HELPERS_THREADS);
        cuda_helper_name(out, true, (ssmc_dtype)d, SSMC_F32);
        sb_printf(out, "(long long rows, long long n, %s *__restrict__ dst, const float *__restrict__ src,\n"
                       "    const int *__restrict__ pool_rows, long long per_seq)\n{\n", dc);
        sb_puts(out, "    SSMC_DYN_SMEM;\n");
        /* elements a block: 32 or CUDA_HELPERS_THREADS (cuda_sum_rows_per_block), told apart by the grid,
         * whose blocks cover n either way; shifts and masks, no division */
        sb_printf(out, "    const int sh = n > 32LL * gridDim.x ? %d : 5, per = 1 << sh;\n", ilog2(CUDA_HELPERS_THREADS));
        sb_printf(out, "    const int groups = %d >> sh, g = (int)threadIdx.x >> sh;\n", CUDA_HELPERS_THREADS);
        sb_puts(out, "    const long long i = (long long)blockIdx.x * per + ((int)threadIdx.x & (per - 1));\n");
        sb_puts(out, "    float acc = 0.f;\n");
        sb_puts(out, "    if (i < n && g < groups)\n");
        sb_puts(out, "        for (long long r = g; r < rows; r += groups) acc += src[r * n + i];\n");
        sb_puts(out, "    if (groups > 1) {\n");
        sb_puts(out, "        ssmc_smem[threadIdx.x] = acc;\n");
        sb_puts(out, "        __syncthreads();\n");
        sb_puts(out, "    }\n");
        sb_puts(out, "    if (g != 0 || i >= n || (pool_rows && pool_rows[i / per_seq] < 0)) return;\n");
        sb_puts(out, "    for (int k = 1; k < groups; k++) acc += ssmc_smem[k * per + threadIdx.x];\n");
        sb_puts(out, "    ssmc_st(dst + i, acc);\n}\n");
        /* a partial accumulator's finish (plan.h): dst[row of i] += the slices, in order */
        sb_printf(out, "extern \"C\" __global__ void __launch_bounds__(%d) ", CUDA_HELPERS_THREADS);
        cuda_helper_add_name(out, (ssmc_dtype)d);
        sb_printf(out, "(long long rows, long long n, %s *__restrict__ dst, const float *__restrict__ src,\n"
                       "    const int *__restrict__ pool_rows, long long per_seq)\n{\n", dc);
        sb_printf(out, "    const long long i = (long long)blockIdx.x * %d + threadIdx.x;\n", CUDA_HELPERS_THREADS);
        sb_puts(out, "    if (i >= n) return;\n");
        sb_puts(out, "    long long o = i;\n");
        sb_puts(out, "    if (pool_rows) {\n");
        sb_puts(out, "        const int r = pool_rows[i / per_seq];\n");
        sb_puts(out, "        if (r < 0) return;\n");
        sb_puts(out, "        o = (long long)r * per_seq + i % per_seq;\n");
        sb_puts(out, "    }\n");
        sb_puts(out, "    float acc = ssmc_get(dst + o);\n");
        sb_puts(out, "    for (long long r = 0; r < rows; r++) acc += src[r * n + i];\n");
        sb_puts(out, "    ssmc_st(dst + o, acc);\n}\n");
    }
}

const char *const cuda_nvrtc_options[CUDA_NVRTC_NOPTIONS] = {"--extra-device-vectorization"};

void cuda_program_name(strbuf *out, const ir_model *m) { sb_printf(out, "ssmc_%s.cu", m->name); }
void cuda_kernel_name(strbuf *out, const ir_model *m) { sb_printf(out, "ssmc_%s", m->name); }
