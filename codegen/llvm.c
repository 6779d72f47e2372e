/* llvm.c: the CPU backend's code generator, through the LLVM 19 C API (the only
 * file that includes llvm-c). See llvm.h for the kernel's contract.
 *
 * It renders a kernel plan (passes/plan.h, made for plan_target_cpu): the
 * grid, the loops, the interchanged reductions, fusion, hoisting, scratch
 * buffers and prefetch were all decided there. What is decided here is
 * instruction-level: the vector math, the loop shapes LLVM vectorises best
 * (the loop just outside the innermost one of a fused update+readout or of a
 * reduction computed for every value of the innermost variable is unrolled
 * and jammed JAM rows at a time; short row sums are unrolled after
 * vectorisation on AVX-512 hosts so their accumulators stay in registers).
 *  1. build_module: an item function (every tensor and scratch buffer its own
 *     noalias pointer) with loops item -> t -> statement nests, innermost = the
 *     last axis, and an entry function with the public signature that unpacks
 *     the arguments and calls it (inlined by the optimiser).
 *  2. optimise: the module carries the triple and data layout of a
 *     TargetMachine for this CPU (its name and features) before "default<O3>",
 *     so the vectoriser sees the real vector width.
 *  3. out: the JIT emits an object (or takes it from the kernel cache,
 *     runtime/cache.h) and links it with ORC LLJIT; --emit=llvm prints the
 *     module; a bundle writes the object to a file.
 * Math functions are inline IR with no calls (exp, log, log1p and tanh from
 * Cephes' single-precision polynomials, within 2.1 ulp), so loops that use them
 * vectorise; pow is the one libm call. Only reduction accumulations carry
 * `reassoc`; every other FP operation just `contract`, and the helpers' error-
 * compensating steps (log1p) not even that.
 *
 * Guarantees: results within ~1e-6 relative of the f64 interpreter for f32
 * data on well-conditioned models; no global mutable state (one LLVM context,
 * target machine and LLJIT per compile; LLVM's target registration runs once
 * under pthread_once). */
#include "codegen/llvm.h"

#ifdef SSMC_HAVE_LLVM

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "passes/plan.h"
#include "runtime/cache.h"

/* ---------------------------------------------------------------- the plan's shape */

#define VEC_FLOATS 16 /* floats in an AVX-512 vector */

/* Every thread writes its scratch at every step and reads it back. Two threads'
 * scratch side by side in one page let the hardware prefetcher of one core pull
 * in the lines the other is writing, which then move between the cores at
 * every step: RWKV-6, batch 1, 2 threads (device CPU, bench/RESULTS.md fifth
 * round), the worker ran its heads at 1.6-2.0 ms each against 0.6-0.7 alone. */
static void set_shape(const pass_plan *p, llvm_kernel_shape *shape)
{
    shape->items_per_seq = p->items_per_seq;
    shape->scratch_floats = p->local_floats;
    int64_t f = p->local_floats > 0 ? p->local_floats : 1;
    shape->scratch_stride = (f + SCRATCH_PAGE_FLOATS - 1) / SCRATCH_PAGE_FLOATS * SCRATCH_PAGE_FLOATS;
}

/* ---------------------------------------------------------------- LLVM setup */

static pthread_once_t llvm_once = PTHREAD_ONCE_INIT;
static int llvm_init_failed; /* written once under llvm_once */

static void llvm_init(void)
{
    if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter()) llvm_init_failed = 1;
}

static ssmc_status fail_llvm(diag *d, const char *what, char *msg)
{
    diag_error(d, "llvm: %s: %s", what, msg ? msg : "(no message)");
    if (msg) LLVMDisposeMessage(msg);
    return SSMC_ERR_BACKEND;
}

static ssmc_status fail_error(diag *d, const char *what, LLVMErrorRef e)
{
    char *msg = LLVMGetErrorMessage(e);
    diag_error(d, "llvm: %s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return SSMC_ERR_BACKEND;
}

/* A TargetMachine for this machine's CPU, or for the named one; PIC (fit for
 * the JIT and for shared objects). */
static ssmc_status host_target(const char *cpu_name, diag *d, LLVMTargetMachineRef *tm)
{
    pthread_once(&llvm_once, llvm_init);
    if (llvm_init_failed) {
        diag_error(d, "llvm: the native target could not be initialised");
        return SSMC_ERR_BACKEND;
    }
    char *triple = LLVMGetDefaultTargetTriple();
    char *err = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        LLVMDisposeMessage(triple);
        return fail_llvm(d, "no target for the host triple", err);
    }
    char *cpu = cpu_name ? NULL : LLVMGetHostCPUName(), *features = cpu_name ? NULL : LLVMGetHostCPUFeatures();
    *tm = LLVMCreateTargetMachine(target, triple, cpu_name ? cpu_name : cpu, cpu_name ? "" : features,
                                  LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
    LLVMDisposeMessage(triple);
    if (cpu) LLVMDisposeMessage(cpu);
    if (features) LLVMDisposeMessage(features);
    if (!*tm) {
        diag_error(d, "llvm: cannot create a target machine for the host");
        return SSMC_ERR_BACKEND;
    }
    return SSMC_OK;
}

/* ---------------------------------------------------------------- code generation */

typedef struct loop {
    LLVMBasicBlockRef header, exit;
    LLVMValueRef iv, hi;
    int64_t step;
    bool unroll_vectorized; /* fully unroll the loop the vectoriser makes of this one */
} loop;

typedef struct cg {
    const pass_plan *p;
    const ir_model *m;
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMBuilderRef eb; /* before the entry block's terminator: allocas */
    LLVMTypeRef f32, i32, i64, ptr, void_ty, helper_ty;
    LLVMValueRef fn;   /* the item function being built */
    LLVMValueRef T, bidx, t;
    LLVMValueRef *tptr;   /* [ntensors] tensor pointers (not lets: see buf_ptr) */
    int *tparam;          /* [ntensors] the item function's parameter of each tensor, or -1 */
    LLVMValueRef *bptr;   /* [nbufs] scratch buffers (see buf_ptr) */
    LLVMValueRef scratch; /* the scratch pointer, where the buffers are not parameters */
    LLVMValueRef *base;   /* [nclasses] first value of the class in this item */
    LLVMValueRef *ext;    /* [nclasses] values of the class in this item */
    LLVMValueRef *var;    /* [nvars] current value of each index variable */
    LLVMValueRef h_exp, h_log, h_log1p, h_tanh, h_softplus, h_sin, h_cos, h_erf;
    LLVMValueRef fresh;   /* per tensor, a byte: nonzero for a state given no initial value
                             (models with init statements only) */
    ir_ref fused_sum;     /* a fused readout's reduction, already accumulated in fused_acc */
    LLVMValueRef fused_acc;
    ir_ref hoisting;      /* the hoisted subtree being computed (not read back) */
    bool avx512;          /* the target has AVX-512F: 16-float vectors */
} cg;

#define CONTRACT LLVMFastMathAllowContract
#define REASSOC (LLVMFastMathAllowContract | LLVMFastMathAllowReassoc)

static LLVMValueRef fmf(LLVMValueRef v, LLVMFastMathFlags f)
{
    if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, f);
    return v;
}
static LLVMValueRef K(cg *c, double v) { return LLVMConstReal(c->f32, v); }
static LLVMValueRef I64(cg *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
static LLVMValueRef I32(cg *c, int32_t v) { return LLVMConstInt(c->i32, (unsigned long long)(int64_t)v, 1); }
static LLVMValueRef f_add(cg *c, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFAdd(c->b, a, b, ""), CONTRACT); }
static LLVMValueRef f_sub(cg *c, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFSub(c->b, a, b, ""), CONTRACT); }
static LLVMValueRef f_mul(cg *c, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFMul(c->b, a, b, ""), CONTRACT); }
static LLVMValueRef f_div(cg *c, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFDiv(c->b, a, b, ""), CONTRACT); }
static LLVMValueRef fcmp(cg *c, LLVMRealPredicate pr, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(c->b, pr, a, b, "");
}
static LLVMValueRef sel(cg *c, LLVMValueRef cond, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(c->b, cond, a, b, "");
}
static LLVMValueRef iadd(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(c->b, a, b, ""); }
static LLVMValueRef isub(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWSub(c->b, a, b, ""); }
static LLVMValueRef imul(cg *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(c->b, a, b, ""); }

/* A call of an intrinsic overloaded on f32 (llvm.fabs, llvm.sqrt, ...). */
static LLVMValueRef intrinsic(cg *c, const char *name, LLVMValueRef x, LLVMValueRef y)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef ty = c->f32;
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, &ty, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, &ty, 1);
    LLVMValueRef args[2] = {x, y};
    return LLVMBuildCall2(c->b, fty, f, args, y ? 2 : 1, "");
}

static LLVMValueRef call_helper(cg *c, LLVMValueRef h, LLVMValueRef x)
{
    return LLVMBuildCall2(c->b, c->helper_ty, h, &x, 1, "");
}

static void add_attr(cg *c, LLVMValueRef fn, unsigned idx, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* Starts `float name(float)`, internal and always inlined; returns its argument. */
static LLVMValueRef helper_begin(cg *c, const char *name, LLVMValueRef *fn)
{
    *fn = LLVMAddFunction(c->mod, name, c->helper_ty);
    LLVMSetLinkage(*fn, LLVMInternalLinkage);
    add_attr(c, *fn, LLVMAttributeFunctionIndex, "alwaysinline");
    add_attr(c, *fn, LLVMAttributeFunctionIndex, "nounwind");
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, *fn, "entry"));
    return LLVMGetParam(*fn, 0);
}

static LLVMValueRef poly(cg *c, LLVMValueRef x, const double *k, int n)
{
    LLVMValueRef p = K(c, k[0]);
    for (int i = 1; i < n; i++) p = f_add(c, f_mul(c, p, x), K(c, k[i]));
    return p;
}

static LLVMValueRef as_f32(cg *c, LLVMValueRef i) { return LLVMBuildBitCast(c->b, i, c->f32, ""); }
static LLVMValueRef as_i32(cg *c, LLVMValueRef f) { return LLVMBuildBitCast(c->b, f, c->i32, ""); }

/* exp: n = rint(x / ln 2), r = x - n ln 2 in two parts, a degree-6 polynomial,
 * scaled by 2^n in two halves so that results down to the subnormals and up to
 * overflow come out right. NaN passes through. */
static void gen_exp_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.exp", &c->h_exp);
    LLVMValueRef xc = intrinsic(c, "llvm.maxnum", intrinsic(c, "llvm.minnum", x, K(c, 88.8)), K(c, -104.0));
    LLVMValueRef n = intrinsic(c, "llvm.rint", f_mul(c, xc, K(c, 1.44269504088896341)), NULL);
    LLVMValueRef r = f_sub(c, xc, f_mul(c, n, K(c, 0.693359375)));
    r = f_add(c, r, f_mul(c, n, K(c, 2.12194440e-4)));
    static const double k[] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                               4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
    LLVMValueRef p = poly(c, r, k, 6);
    p = f_add(c, f_add(c, f_mul(c, p, f_mul(c, r, r)), r), K(c, 1.0));
    LLVMValueRef ni = LLVMBuildFPToSI(c->b, n, c->i32, "");
    LLVMValueRef h = LLVMBuildAShr(c->b, ni, I32(c, 1), "");
    LLVMValueRef s1 = as_f32(c, LLVMBuildShl(c->b, LLVMBuildAdd(c->b, h, I32(c, 127), ""), I32(c, 23), ""));
    LLVMValueRef s2 = as_f32(c, LLVMBuildShl(c->b, LLVMBuildAdd(c->b, LLVMBuildSub(c->b, ni, h, ""), I32(c, 127), ""),
                                             I32(c, 23), ""));
    LLVMValueRef res = f_mul(c, f_mul(c, p, s1), s2);
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealUNO, x, x), x, res));
}

/* The core of log: log(m 2^e) for xm = m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1]
 * and fe = e (f32), a degree-9 polynomial in xm, e ln 2 added in two parts. */
static LLVMValueRef log_core(cg *c, LLVMValueRef xm, LLVMValueRef fe)
{
    LLVMValueRef z = f_mul(c, xm, xm);
    static const double k[] = {7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
                               -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1};
    LLVMValueRef y = f_mul(c, f_mul(c, poly(c, xm, k, 9), xm), z);
    y = f_add(c, y, f_mul(c, fe, K(c, -2.12194440e-4)));
    y = f_sub(c, y, f_mul(c, z, K(c, 0.5)));
    return f_add(c, f_add(c, xm, y), f_mul(c, fe, K(c, 0.693359375)));
}

/* log: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then log_core. Subnormals are
 * scaled first; 0, negatives, +inf and NaN give -inf, NaN, +inf, NaN. */
static void gen_log_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.log", &c->h_log);
    LLVMValueRef small = fcmp(c, LLVMRealOLT, x, K(c, 1.17549435e-38));
    LLVMValueRef xs = sel(c, small, f_mul(c, x, K(c, 8388608.0)), x);
    LLVMValueRef bits = as_i32(c, xs);
    LLVMValueRef e = LLVMBuildSub(c->b, LLVMBuildAnd(c->b, LLVMBuildLShr(c->b, bits, I32(c, 23), ""), I32(c, 255), ""),
                                  I32(c, 126), "");
    e = LLVMBuildSub(c->b, e, sel(c, small, I32(c, 23), I32(c, 0)), "");
    LLVMValueRef mant = as_f32(c, LLVMBuildOr(c->b, LLVMBuildAnd(c->b, bits, I32(c, 0x007fffff), ""),
                                              I32(c, 0x3f000000), ""));
    LLVMValueRef lt = fcmp(c, LLVMRealOLT, mant, K(c, 0.707106781186547524));
    e = LLVMBuildSub(c->b, e, LLVMBuildZExt(c->b, lt, c->i32, ""), "");
    LLVMValueRef xm = sel(c, lt, f_sub(c, f_add(c, mant, mant), K(c, 1.0)), f_sub(c, mant, K(c, 1.0)));
    LLVMValueRef r = log_core(c, xm, LLVMBuildSIToFP(c->b, e, c->f32, ""));
    double inf = INFINITY, nan = NAN;
    r = sel(c, fcmp(c, LLVMRealOEQ, x, K(c, inf)), K(c, inf), r);
    r = sel(c, fcmp(c, LLVMRealOEQ, x, K(c, 0.0)), K(c, -inf), r);
    r = sel(c, fcmp(c, LLVMRealOLT, x, K(c, 0.0)), K(c, nan), r);
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealUNO, x, x), x, r));
}

/* log1p: log(u) * x / (u - 1) with u = 1 + x, which cancels the rounding of u
 * (Goldberg); x itself where u rounds to 1. */
static void gen_log1p_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.log1p", &c->h_log1p);
    LLVMValueRef u = LLVMBuildFAdd(c->b, K(c, 1.0), x, "");
    LLVMValueRef dd = LLVMBuildFSub(c->b, u, K(c, 1.0), "");
    LLVMValueRef r = LLVMBuildFMul(c->b, call_helper(c, c->h_log, u), LLVMBuildFDiv(c->b, x, dd, ""), "");
    r = sel(c, fcmp(c, LLVMRealOEQ, dd, K(c, 0.0)), x, r);
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealOEQ, u, K(c, INFINITY)), u, r));
}

/* tanh: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above. */
static void gen_tanh_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.tanh", &c->h_tanh);
    LLVMValueRef ax = intrinsic(c, "llvm.fabs", x, NULL);
    LLVMValueRef s = f_mul(c, x, x);
    static const double k[] = {-5.70498872745E-3, 2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1,
                               -3.33332819422E-1};
    LLVMValueRef small = f_add(c, f_mul(c, f_mul(c, poly(c, s, k, 5), s), x), x);
    LLVMValueRef e = call_helper(c, c->h_exp, f_add(c, ax, ax));
    LLVMValueRef big = f_sub(c, K(c, 1.0), f_div(c, K(c, 2.0), f_add(c, e, K(c, 1.0))));
    big = intrinsic(c, "llvm.copysign", big, x);
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealOGE, ax, K(c, 0.625)), big, small));
}

/* softplus as the interpreter writes it: x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)).
 * log1p(e) for e = exp(-|x|) in [0, 1] needs neither log's special cases nor
 * log1p's division: 1 + e = m 2^k with m - 1 known exactly, e itself (k = 0)
 * below sqrt(2) - 1 and (e - 1) / 2 (k = 1) above, straight into log_core. A
 * NaN passes through; +-inf give inf and 0. */
static void gen_softplus_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.softplus", &c->h_softplus);
    LLVMValueRef ax = intrinsic(c, "llvm.fabs", x, NULL);
    LLVMValueRef e = call_helper(c, c->h_exp, LLVMBuildFNeg(c->b, ax, ""));
    LLVMValueRef big = fcmp(c, LLVMRealOGE, e, K(c, 0.41421356237309503));
    LLVMValueRef xm = sel(c, big, f_mul(c, f_sub(c, e, K(c, 1.0)), K(c, 0.5)), e);
    LLVMValueRef l = log_core(c, xm, sel(c, big, K(c, 1.0), K(c, 0.0)));
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealOGT, x, K(c, 0.0)), f_add(c, x, l), l));
}

/* sin and cos as Cephes' sinf and cosf: |x| less the nearest even multiple j
 * of pi/4, in three parts (within 1e-7 of the true value for |x| up to 8192),
 * then sin's degree-7 odd or cos's degree-8 even polynomial, as j picks, and
 * the sign j and x give. Beyond 8192 the reduction loses digits as x's own
 * spacing grows (x is clamped at 2^30 so that j fits an i32, and the result to
 * [-1, 1]): a value in range, not the true one. NaN and infinities give NaN. */
static void gen_sincos_helper(cg *c, bool want_cos)
{
    LLVMValueRef x = helper_begin(c, want_cos ? "ssmc.cos" : "ssmc.sin", want_cos ? &c->h_cos : &c->h_sin);
    LLVMValueRef ax = intrinsic(c, "llvm.fabs", x, NULL);
    LLVMValueRef axc = intrinsic(c, "llvm.minnum", ax, K(c, 1073741824.0));
    LLVMValueRef j = LLVMBuildFPToSI(c->b, f_mul(c, axc, K(c, 1.27323954473516)), c->i32, "");
    j = LLVMBuildAnd(c->b, LLVMBuildAdd(c->b, j, I32(c, 1), ""), I32(c, ~1), "");
    LLVMValueRef y = LLVMBuildSIToFP(c->b, j, c->f32, "");
    LLVMValueRef z = f_sub(c, axc, f_mul(c, y, K(c, 0.78515625)));
    z = f_sub(c, z, f_mul(c, y, K(c, 2.4187564849853515625e-4)));
    z = f_sub(c, z, f_mul(c, y, K(c, 3.77489497744594108e-8)));
    LLVMValueRef zz = f_mul(c, z, z);
    static const double ks[] = {-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1};
    static const double kc[] = {2.443315711809948E-5, -1.388731625493765E-3, 4.166664568298827E-2};
    LLVMValueRef sp = f_add(c, f_mul(c, f_mul(c, poly(c, zz, ks, 3), zz), z), z);
    LLVMValueRef cp = f_add(c, f_sub(c, f_mul(c, f_mul(c, poly(c, zz, kc, 3), zz), zz), f_mul(c, zz, K(c, 0.5))), K(c, 1.0));
    LLVMValueRef bit2 = LLVMBuildICmp(c->b, LLVMIntNE, LLVMBuildAnd(c->b, j, I32(c, 2), ""), I32(c, 0), "");
    LLVMValueRef bit4 = LLVMBuildICmp(c->b, LLVMIntNE, LLVMBuildAnd(c->b, j, I32(c, 4), ""), I32(c, 0), "");
    LLVMValueRef r, neg;
    if (want_cos) {
        r = sel(c, bit2, sp, cp);
        neg = LLVMBuildXor(c->b, bit4, bit2, "");
    } else {
        r = sel(c, bit2, cp, sp);
        neg = LLVMBuildXor(c->b, bit4, fcmp(c, LLVMRealOLT, x, K(c, 0.0)), "");
    }
    r = sel(c, neg, LLVMBuildFNeg(c->b, r, ""), r);
    r = intrinsic(c, "llvm.maxnum", intrinsic(c, "llvm.minnum", r, K(c, 1.0)), K(c, -1.0));
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealUEQ, ax, K(c, INFINITY)), K(c, NAN), r));
}

/* erf: a rational approximation x P(x^2) / Q(x^2), P of degree 6 and Q of
 * degree 4 in x^2 (the coefficients of Eigen's and XLA's erf for f32), for x
 * clamped to [-4, 4] where erf is +-1 in f32 beyond; within 3.5e-7 relative of
 * the true value everywhere (measured against libm on a 1e-5 grid over
 * [-6, 6]). NaN passes through. */
static void gen_erf_helper(cg *c)
{
    LLVMValueRef x = helper_begin(c, "ssmc.erf", &c->h_erf);
    LLVMValueRef xc = intrinsic(c, "llvm.maxnum", intrinsic(c, "llvm.minnum", x, K(c, 4.0)), K(c, -4.0));
    LLVMValueRef x2 = f_mul(c, xc, xc);
    static const double kp[] = {-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                                -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                                -1.60960333262415e-02};
    static const double kq[] = {-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                                -7.37332916720468e-03, -1.42647390514189e-02};
    LLVMValueRef r = f_div(c, f_mul(c, xc, poly(c, x2, kp, 7)), poly(c, x2, kq, 5));
    LLVMBuildRet(c->b, sel(c, fcmp(c, LLVMRealUNO, x, x), x, r));
}

/* sigmoid: with e = exp(-|x|) <= 1, 1 / (1 + e) for x >= 0 and e / (1 + e)
 * below, so that neither side overflows (1 / (1 + exp(-x)) would give 0 for
 * x < -88.7, where the result is still a subnormal). */
static LLVMValueRef sigmoid(cg *c, LLVMValueRef x)
{
    LLVMValueRef e = call_helper(c, c->h_exp, LLVMBuildFNeg(c->b, intrinsic(c, "llvm.fabs", x, NULL), ""));
    LLVMValueRef r = f_div(c, K(c, 1.0), f_add(c, K(c, 1.0), e));
    return sel(c, fcmp(c, LLVMRealOGE, x, K(c, 0.0)), r, f_mul(c, e, r));
}

/* ---- loops: do-while over [lo, hi), hi > lo unless `guard` (then the loop may be empty) */

static LLVMBasicBlockRef new_block(cg *c, const char *name) { return LLVMAppendBasicBlockInContext(c->ctx, c->fn, name); }

static LLVMValueRef loop_begin(cg *c, loop *L, LLVMValueRef lo, LLVMValueRef hi, bool guard, const char *name)
{
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
    L->header = new_block(c, name);
    L->exit = new_block(c, "exit");
    L->hi = hi;
    if (guard)
        LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, lo, hi, ""), L->header, L->exit);
    else
        LLVMBuildBr(c->b, L->header);
    LLVMPositionBuilderAtEnd(c->b, L->header);
    L->iv = LLVMBuildPhi(c->b, c->i64, name);
    LLVMAddIncoming(L->iv, &lo, &pre, 1);
    L->step = 1;
    L->unroll_vectorized = false;
    return L->iv;
}

/* Loop metadata on latch branch br: the loop the vectoriser makes of this one
 * is unrolled fully. !{self, !{"llvm.loop.vectorize.followup_vectorized",
 * !{"llvm.loop.unroll.full"}}} */
static void mark_unroll_vectorized(cg *c, LLVMValueRef br)
{
    LLVMMetadataRef full = LLVMMDStringInContext2(c->ctx, "llvm.loop.unroll.full", 21);
    LLVMMetadataRef attr = LLVMMDNodeInContext2(c->ctx, &full, 1);
    LLVMMetadataRef fops[2] = {LLVMMDStringInContext2(c->ctx, "llvm.loop.vectorize.followup_vectorized", 39), attr};
    LLVMMetadataRef follow = LLVMMDNodeInContext2(c->ctx, fops, 2);
    LLVMMetadataRef tmp = LLVMTemporaryMDNode(c->ctx, NULL, 0);
    LLVMMetadataRef ops[2] = {tmp, follow};
    LLVMMetadataRef id = LLVMMDNodeInContext2(c->ctx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(tmp, id);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(c->ctx, "llvm.loop", 9), LLVMMetadataAsValue(c->ctx, id));
}

static void loop_end(cg *c, loop *L)
{
    LLVMValueRef next = iadd(c, L->iv, I64(c, L->step));
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
    LLVMAddIncoming(L->iv, &next, &latch, 1);
    LLVMValueRef br = LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, next, L->hi, ""), L->header, L->exit);
    if (L->unroll_vectorized) mark_unroll_vectorized(c, br);
    LLVMMoveBasicBlockAfter(L->exit, latch);
    LLVMPositionBuilderAtEnd(c->b, L->exit);
}

/* The loop bounds of variable v in this item. */
static void var_range(cg *c, int v, LLVMValueRef *lo, LLVMValueRef *hi)
{
    int k = c->p->sched.var_class[v];
    if (k < 0 || c->p->cls[k].ntiles == 1) {
        *lo = I64(c, 0);
        *hi = I64(c, c->m->dims[c->m->vars[v].dim].value);
    } else {
        *lo = c->base[k];
        *hi = iadd(c, c->base[k], c->ext[k]);
    }
}

static LLVMValueRef open_var(cg *c, loop *L, int v)
{
    LLVMValueRef lo, hi;
    var_range(c, v, &lo, &hi);
    return c->var[v] = loop_begin(c, L, lo, hi, false, c->m->vars[v].name);
}

/* ---- unroll-and-jam: the loop just outside the innermost one runs JAM rows
 * per iteration, each row's body repeated inside one innermost loop. The
 * rows share that loop's loads (B[t,n] and C[t,n] for all of Mamba-2's p)
 * and its accumulator traffic (y[j] += over GLA's i), and a row-wise
 * reduction gets JAM independent accumulator chains. A second pass, one row
 * at a time, takes the rows left over. Use:
 *     for (u = jam_begin(c, &J, v, JAM); u; u = jam_next(c, &J))
 *         ... for k < u: c->var[v] = jam_row(c, &J, k) ... */

#define JAM 4

typedef struct jam {
    loop L;
    int v;
    LLVMValueRef mid, hi;
    int pass;  /* 0: JAM rows at a time, 1: the rest one at a time */
    bool even; /* no rest */
} jam;

static int64_t jam_begin(cg *c, jam *J, int v, int64_t rows)
{
    LLVMValueRef lo, hi;
    var_range(c, v, &lo, &hi);
    J->v = v;
    J->hi = hi;
    J->pass = 0;
    J->mid = rows == 1 ? hi : iadd(c, lo, LLVMBuildAnd(c->b, isub(c, hi, lo), I64(c, ~(rows - 1)), ""));
    /* no second pass when the rows are known to come out even */
    int k = c->p->sched.var_class[v];
    int64_t dim = c->m->dims[c->m->vars[v].dim].value;
    int64_t trip = k < 0 || c->p->cls[k].ntiles == 1 ? dim : dim % c->p->cls[k].tile == 0 ? c->p->cls[k].tile : 0;
    J->even = rows == 1 || (trip > 0 && trip % rows == 0);
    loop_begin(c, &J->L, lo, J->mid, true, c->m->vars[v].name);
    J->L.step = rows;
    return rows;
}

static int64_t jam_next(cg *c, jam *J)
{
    loop_end(c, &J->L);
    if (J->pass++ == 1 || J->even) return 0;
    LLVMValueRef mid = J->mid;
    loop_begin(c, &J->L, mid, J->hi, true, c->m->vars[J->v].name);
    return 1;
}

static LLVMValueRef jam_row(cg *c, jam *J, int64_t k) { return k ? iadd(c, J->L.iv, I64(c, k)) : J->L.iv; }

/* ---- addressing */

static LLVMValueRef index_value(cg *c, const ir_index *ix)
{
    switch (ix->kind) {
    case IR_IX_VAR: return c->var[ix->var];
    case IR_IX_DIV: return LLVMBuildUDiv(c->b, c->var[ix->var], I64(c, ix->k), "");
    case IR_IX_CONST: return I64(c, ix->k);
    case IR_IX_AFFINE: return iadd(c, imul(c, c->var[ix->var], I64(c, ix->k)), c->var[ix->var2]);
    }
    return I64(c, 0);
}

static LLVMValueRef gep(cg *c, LLVMValueRef base, LLVMValueRef off)
{
    return LLVMBuildInBoundsGEP2(c->b, c->f32, base, &off, 1, "");
}

/* Scratch buffer j: a parameter of its own, or, when the function has one
 * scratch pointer (c->scratch), its constant offset from it, computed in the
 * entry block at the first use (a function then holds only the buffers it uses). */
static LLVMValueRef buf_ptr(cg *c, int j)
{
    if (!c->bptr[j]) {
        LLVMValueRef off = I64(c, c->p->bufs[j].off);
        c->bptr[j] = LLVMBuildInBoundsGEP2(c->eb, c->f32, c->scratch, &off, 1, "");
    }
    return c->bptr[j];
}

/* Element `idx` of tensor ti: the caller's tensor (time step tt for per-step
 * tensors), or, with `local`, its scratch buffer over the item's slice. */
static LLVMValueRef elem_ptr(cg *c, int ti, LLVMValueRef *idx, LLVMValueRef tt, bool local)
{
    const pass_plan *p = c->p;
    const ir_tensor *t = &c->m->tensors[ti];
    LLVMValueRef off = I64(c, 0);
    for (int i = 0; i < t->rank; i++) {
        int64_t st = local ? p->lstride[ti * IR_MAX_RANK + i] : p->fstride[ti * IR_MAX_RANK + i];
        if (local && st == 0) continue;
        if (!local && c->m->dims[t->dims[i]].value == 1) continue;
        LLVMValueRef v = idx[i];
        if (local) {
            int k = plan_axis_class(p, ti, i);
            if (k >= 0 && p->cls[k].ntiles > 1) v = isub(c, v, c->base[k]);
        }
        off = iadd(c, off, st == 1 ? v : imul(c, v, I64(c, st)));
    }
    LLVMValueRef base;
    if (local) {
        base = buf_ptr(c, p->buf_tensor[ti]);
    } else {
        base = c->tptr[ti];
        LLVMValueRef n = I64(c, p->elems[ti]);
        if (t->per_step)
            off = iadd(c, off, imul(c, iadd(c, imul(c, c->bidx, c->T), tt), n));
        else if (t->kind != IR_PARAM)
            off = iadd(c, off, imul(c, c->bidx, n));
    }
    return gep(c, base, off);
}

static LLVMValueRef gen(cg *c, ir_ref r);

static LLVMValueRef gen_load(cg *c, const ir_inst *in)
{
    const ir_model *m = c->m;
    int ti = in->load.tensor;
    const ir_tensor *t = &m->tensors[ti];
    LLVMValueRef idx[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) idx[i] = index_value(c, &m->ix[in->load.ix + (uint32_t)i]);
    if (t->kind == IR_LET) return LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, ti, idx, NULL, true), "");
    if (!t->per_step) return LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, ti, idx, NULL, false), "");
    if (in->load.lag_var < 0 && in->load.lag == 0)
        return LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, ti, idx, c->t, false), "");
    /* t - k before the start of the sequence reads 0: clamp the address, select the value
     * (a reverse model's lags look forward, t + k, and past the end read 0) */
    LLVMValueRef lag = in->load.lag_var >= 0 ? c->var[in->load.lag_var] : I64(c, in->load.lag);
    if (in->load.lag_var >= 0 && in->load.lag) lag = iadd(c, lag, I64(c, in->load.lag));
    LLVMValueRef tt = m->reverse ? iadd(c, c->t, lag) : isub(c, c->t, lag);
    LLVMValueRef ok = m->reverse ? LLVMBuildICmp(c->b, LLVMIntSLT, tt, c->T, "")
                                 : LLVMBuildICmp(c->b, LLVMIntSGE, tt, I64(c, 0), "");
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, ti, idx, sel(c, ok, tt, I64(c, 0)), false), "");
    return sel(c, ok, v, K(c, 0.0));
}

/* A reduction as a loop nest inside the current element; the accumulator is
 * an alloca that mem2reg turns into a phi. */
static LLVMValueRef gen_reduce(cg *c, const ir_inst *in)
{
    const ir_model *m = c->m;
    LLVMValueRef acc = LLVMBuildAlloca(c->eb, c->f32, "acc");
    LLVMBuildStore(c->b, K(c, in->op == IR_SUM ? 0.0 : -INFINITY), acc);
    loop L[IR_MAX_RANK];
    uint32_t n = in->red.nvars;
    for (uint32_t i = 0; i < n; i++) open_var(c, &L[i], (int)m->red_vars[in->red.vars + i]);
    LLVMValueRef x = gen(c, in->a);
    LLVMValueRef old = LLVMBuildLoad2(c->b, c->f32, acc, "");
    LLVMValueRef upd;
    if (in->op == IR_SUM) {
        upd = fmf(LLVMBuildFAdd(c->b, old, x, ""), REASSOC);
    } else { /* the interpreter's max: NaN wins */
        LLVMValueRef take = LLVMBuildOr(c->b, fcmp(c, LLVMRealOGT, x, old), fcmp(c, LLVMRealUNO, x, x), "");
        upd = sel(c, take, x, old);
    }
    LLVMBuildStore(c->b, upd, acc);
    for (uint32_t i = n; i > 0; i--) loop_end(c, &L[i - 1]);
    return LLVMBuildLoad2(c->b, c->f32, acc, "");
}

/* The accumulator element of an interchanged SUM at the current value of its variable. */
static LLVMValueRef xchg_ptr(cg *c, ir_ref r)
{
    int v = c->p->xchg_var[r];
    LLVMValueRef lo, hi;
    var_range(c, v, &lo, &hi);
    return gep(c, buf_ptr(c, c->p->buf_inst[r]), isub(c, c->var[v], lo));
}

/* The scratch element of a hoisted subtree at the current value of its variable. */
static LLVMValueRef hoist_ptr(cg *c, ir_ref r)
{
    int v = c->p->hoist_var[r];
    LLVMValueRef lo, hi;
    var_range(c, v, &lo, &hi);
    return gep(c, buf_ptr(c, c->p->buf_inst[r]), isub(c, c->var[v], lo));
}

static LLVMValueRef gen(cg *c, ir_ref r)
{
    const ir_inst *in = &c->m->insts[r];
    if (c->p->hoist_var[r] >= 0 && r != c->hoisting) return LLVMBuildLoad2(c->b, c->f32, hoist_ptr(c, r), "");
    switch ((ir_op)in->op) {
    case IR_CONST: return K(c, in->num);
    case IR_LOAD: return gen_load(c, in);
    case IR_SUM:
    case IR_RMAX:
        if (c->p->xchg_var[r] >= 0) return LLVMBuildLoad2(c->b, c->f32, xchg_ptr(c, r), "");
        if (r == c->fused_sum) return LLVMBuildLoad2(c->b, c->f32, c->fused_acc, "");
        return gen_reduce(c, in);
    default: break;
    }
    if (in->op == IR_IDX) return LLVMBuildSIToFP(c->b, c->var[in->var], c->f32, "");
    LLVMValueRef a = gen(c, in->a), b = in->b != IR_NONE ? gen(c, in->b) : NULL;
    LLVMValueRef cc = in->c != IR_NONE ? gen(c, in->c) : NULL;
    switch ((ir_op)in->op) {
    case IR_NEG: return LLVMBuildFNeg(c->b, a, "");
    /* comparisons as C makes them (the interpreter's): false with a NaN, but != */
    case IR_LT: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealOLT, a, b), c->f32, "");
    case IR_LE: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealOLE, a, b), c->f32, "");
    case IR_GT: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealOGT, a, b), c->f32, "");
    case IR_GE: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealOGE, a, b), c->f32, "");
    case IR_EQ: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealOEQ, a, b), c->f32, "");
    case IR_NE: return LLVMBuildUIToFP(c->b, fcmp(c, LLVMRealUNE, a, b), c->f32, "");
    /* both operands are computed; the select keeps one (a NaN in the other is dropped) */
    case IR_SELECT: return sel(c, fcmp(c, LLVMRealUNE, a, K(c, 0.0)), b, cc);
    case IR_SIN: return call_helper(c, c->h_sin, a);
    case IR_COS: return call_helper(c, c->h_cos, a);
    case IR_ERF: return call_helper(c, c->h_erf, a);
    case IR_ADD: return f_add(c, a, b);
    case IR_SUB: return f_sub(c, a, b);
    case IR_MUL: return f_mul(c, a, b);
    case IR_DIV: return f_div(c, a, b);
    case IR_EXP: return call_helper(c, c->h_exp, a);
    case IR_LOG: return call_helper(c, c->h_log, a);
    case IR_LOG1P: return call_helper(c, c->h_log1p, a);
    case IR_SQRT: return intrinsic(c, "llvm.sqrt", a, NULL);
    case IR_RSQRT: return f_div(c, K(c, 1.0), intrinsic(c, "llvm.sqrt", a, NULL));
    case IR_ABS: return intrinsic(c, "llvm.fabs", a, NULL);
    case IR_TANH: return call_helper(c, c->h_tanh, a);
    case IR_SIGMOID: return sigmoid(c, a);
    case IR_SOFTPLUS: return call_helper(c, c->h_softplus, a);
    case IR_SILU: return f_mul(c, a, sigmoid(c, a));
    case IR_RELU: return sel(c, fcmp(c, LLVMRealOGT, a, K(c, 0.0)), a, K(c, 0.0));
    case IR_POW: return intrinsic(c, "llvm.pow", a, b);
    case IR_MIN: return intrinsic(c, "llvm.minnum", a, b);
    case IR_MAX: return intrinsic(c, "llvm.maxnum", a, b);
    default: break;
    }
    return K(c, NAN);
}

/* *ptr += x */
static void accumulate(cg *c, LLVMValueRef ptr, LLVMValueRef x, LLVMFastMathFlags f)
{
    LLVMBuildStore(c->b, fmf(LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f32, ptr, ""), x, ""), f), ptr);
}

/* The rows of a jam summed: x + xk, or xk for the first row (x NULL). */
static LLVMValueRef add_row(cg *c, LLVMValueRef x, LLVMValueRef xk)
{
    return x ? fmf(LLVMBuildFAdd(c->b, x, xk, ""), REASSOC) : xk;
}

/* A jammed row sum (GLA's y[j] += over i) adds each block of rows into an
 * accumulator per value of v, the innermost loop. When that loop, once
 * vectorised, is a few vectors long, it is unrolled fully, so that LICM keeps
 * the accumulators in registers across the rows instead of loading and storing
 * them once per block: v's extent a constant of at most 4 AVX-512 vectors (4
 * accumulators and v's 4 hoisted operands beside a jam's 12 broadcasts, 20 of
 * 32 registers). Measured at 1 thread (bench/RESULTS.md, fifth round): GLA
 * 1.07x-1.19x, gated DeltaNet 1.10x-1.16x, RWKV-6 1.02x-1.10x faster. Other
 * targets keep the loop (not measured). */
static bool unroll_accumulators(const cg *c, int v)
{
    int k = c->p->sched.var_class[v];
    int64_t dim = c->m->dims[c->m->vars[v].dim].value;
    return c->avx512 && (k < 0 || c->p->cls[k].ntiles == 1) && dim % VEC_FLOATS == 0 && dim <= 4 * VEC_FLOATS;
}

/* Opens the innermost loop, over v, of a jammed row sum. */
static LLVMValueRef open_row_sum_var(cg *c, loop *L, int v)
{
    LLVMValueRef iv = open_var(c, L, v);
    L->unroll_vectorized = unroll_accumulators(c, v);
    return iv;
}

/* Zeroes the accumulator of interchanged SUM r over its variable's values. */
static void zero_xchg(cg *c, ir_ref r)
{
    loop z;
    open_var(c, &z, c->p->xchg_var[r]);
    LLVMBuildStore(c->b, K(c, 0.0), xchg_ptr(c, r));
    loop_end(c, &z);
}

/* acc[v] = sum over the reduction's variables of its body, for every value of
 * v (the statement's last variable) in this item, v innermost. */
static void gen_xchg(cg *c, ir_ref r)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    int v = c->p->xchg_var[r];
    zero_xchg(c, r);
    loop L[IR_MAX_RANK];
    uint32_t n = in->red.nvars;
    for (uint32_t i = 0; i + 1 < n; i++) open_var(c, &L[i], (int)m->red_vars[in->red.vars + i]);
    int w = (int)m->red_vars[in->red.vars + n - 1]; /* jammed: JAM rows per pass over v */
    jam J;
    for (int64_t u = jam_begin(c, &J, w, JAM); u; u = jam_next(c, &J)) {
        loop z;
        open_row_sum_var(c, &z, v);
        LLVMValueRef x = NULL;
        for (int64_t k = 0; k < u; k++) {
            c->var[w] = jam_row(c, &J, k);
            x = add_row(c, x, gen(c, in->a));
        }
        accumulate(c, xchg_ptr(c, r), x, CONTRACT);
        loop_end(c, &z);
    }
    for (uint32_t i = n - 1; i > 0; i--) loop_end(c, &L[i - 1]);
}

static void gen_xchg_all(cg *c, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &c->m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        if (c->p->xchg_var[r] >= 0) gen_xchg(c, r);
        return;
    }
    if (in->op == IR_LOAD || in->op == IR_CONST) return;
    gen_xchg_all(c, in->a);
    gen_xchg_all(c, in->b);
    gen_xchg_all(c, in->c);
}

/* Computes the hoisted subtrees of r, each over its variable's values. */
static void gen_hoists(cg *c, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &c->m->insts[r];
    if (c->p->hoist_var[r] >= 0) {
        loop L;
        open_var(c, &L, c->p->hoist_var[r]);
        c->hoisting = r;
        LLVMValueRef v = gen(c, r);
        c->hoisting = IR_NONE;
        LLVMBuildStore(c->b, v, hoist_ptr(c, r));
        loop_end(c, &L);
        return;
    }
    if (in->op == IR_LOAD || in->op == IR_CONST || in->op == IR_SUM || in->op == IR_RMAX) return;
    gen_hoists(c, in->a);
    gen_hoists(c, in->b);
    gen_hoists(c, in->c);
}

/* Sets the variables of statement s that the item fixes. */
static void fix_vars(cg *c, const ir_stmt *s)
{
    const pass_plan *p = c->p;
    const ir_tensor *t = &c->m->tensors[s->tensor];
    for (int i = 0; i < t->rank; i++) {
        int v = s->vars[i], k = p->sched.var_class[v];
        if (plan_var_fixed(p, v)) c->var[v] = p->cls[k].ntiles > 1 ? c->base[k] : I64(c, 0);
    }
}

/* Branches around what follows when output `ti` was not asked for; returns the
 * block to close with end_skip, or NULL for a tensor that is always there. */
static LLVMBasicBlockRef begin_skip(cg *c, int ti)
{
    if (c->m->tensors[ti].kind != IR_OUTPUT) return NULL;
    LLVMBasicBlockRef body = new_block(c, "out"), skip = new_block(c, "out.done");
    LLVMBuildCondBr(c->b, LLVMBuildIsNotNull(c->b, c->tptr[ti], ""), body, skip);
    LLVMPositionBuilderAtEnd(c->b, body);
    return skip;
}

static void end_skip(cg *c, LLVMBasicBlockRef skip)
{
    if (!skip) return;
    LLVMBuildBr(c->b, skip);
    LLVMPositionBuilderAtEnd(c->b, skip);
}

static void store_result(cg *c, const ir_stmt *s, LLVMValueRef val)
{
    const ir_tensor *t = &c->m->tensors[s->tensor];
    LLVMValueRef idx[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) idx[i] = c->var[s->vars[i]];
    bool local = t->kind == IR_LET || (t->kind == IR_STATE && c->p->buf_tensor[s->tensor] >= 0);
    LLVMBuildStore(c->b, val, elem_ptr(c, s->tensor, idx, c->t, local));
}

/* The init of a state given no initial value: its statement over the item's
 * slice of the state, stored into the state itself (before the first step,
 * where the state is read). */
static void gen_init(cg *c, const ir_stmt *s)
{
    const pass_plan *p = c->p;
    const ir_tensor *t = &c->m->tensors[s->tensor];
    LLVMValueRef ix = I64(c, s->tensor);
    LLVMValueRef flag = LLVMBuildLoad2(c->b, LLVMInt8TypeInContext(c->ctx), LLVMBuildGEP2(c->b, LLVMInt8TypeInContext(c->ctx), c->fresh, &ix, 1, ""), "");
    LLVMBasicBlockRef body = new_block(c, "init"), done = new_block(c, "init.done");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntNE, flag, LLVMConstInt(LLVMInt8TypeInContext(c->ctx), 0, 0), ""), body, done);
    LLVMPositionBuilderAtEnd(c->b, body);
    loop L[IR_MAX_RANK];
    int nl = 0;
    fix_vars(c, s);
    for (int i = 0; i < t->rank; i++)
        if (!plan_var_fixed(p, s->vars[i])) open_var(c, &L[nl++], s->vars[i]);
    LLVMValueRef idx[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) idx[i] = c->var[s->vars[i]];
    LLVMBuildStore(c->b, gen(c, s->root), elem_ptr(c, s->tensor, idx, NULL, false));
    while (nl > 0) loop_end(c, &L[--nl]);
    LLVMBuildBr(c->b, done);
    LLVMPositionBuilderAtEnd(c->b, done);
}

/* One statement over the item's slice of its domain. */
static void gen_stmt(cg *c, uint32_t si)
{
    const pass_plan *p = c->p;
    const ir_stmt *s = &c->m->stmts[si];
    const ir_tensor *t = &c->m->tensors[s->tensor];
    LLVMBasicBlockRef skip = begin_skip(c, s->tensor); /* an output not asked for is not computed */
    bool xchg = p->stmt_xchg[si];
    loop L[IR_MAX_RANK];
    int nl = 0;
    fix_vars(c, s);
    gen_hoists(c, s->root);
    for (int i = 0; i < t->rank; i++)
        if (!plan_var_fixed(p, s->vars[i]) && !(xchg && i == t->rank - 1)) open_var(c, &L[nl++], s->vars[i]);
    if (xchg) {
        gen_xchg_all(c, s->root);
        open_var(c, &L[nl++], s->vars[t->rank - 1]);
    }
    store_result(c, s, gen(c, s->root));
    while (nl > 0) loop_end(c, &L[--nl]);
    if (t->kind == IR_STATE && p->buf_tensor[s->tensor] >= 0) {
        /* the update was simultaneous: only now does the new value replace S(t-1) */
        LLVMValueRef idx[IR_MAX_RANK];
        for (int i = 0; i < t->rank; i++)
            if (!plan_var_fixed(p, s->vars[i])) open_var(c, &L[nl++], s->vars[i]);
        for (int i = 0; i < t->rank; i++) idx[i] = c->var[s->vars[i]];
        LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, elem_ptr(c, s->tensor, idx, NULL, true), "");
        LLVMBuildStore(c->b, v, elem_ptr(c, s->tensor, idx, NULL, false));
        while (nl > 0) loop_end(c, &L[--nl]);
    }
    end_skip(c, skip);
}

/* One element of a fused update: the state's new value stored, and the
 * readout's summand, read before the update (S(t-1)) or after it (S(t)). */
static LLVMValueRef fused_element(cg *c, const ir_stmt *u, ir_ref sum, bool before)
{
    LLVMValueRef x = before ? gen(c, c->m->insts[sum].a) : NULL;
    store_result(c, u, gen(c, u->root));
    return before ? x : gen(c, c->m->insts[sum].a);
}

static void set_row(cg *c, int rv, int uv, LLVMValueRef val) { c->var[rv] = c->var[uv] = val; }

/* State update ui and readout ri in one loop nest (see plan_fusion). The loop
 * just outside the innermost one is jammed (JAM rows per iteration) when it is
 * the readout's last free variable (Mamba-2's p: a sum along the row per row)
 * or the sum's last variable (GLA's i: rows summed into y[j]). */
static void gen_fused(cg *c, uint32_t ui, uint32_t ri)
{
    const pass_plan *p = c->p;
    const ir_model *m = c->m;
    const ir_stmt *u = &m->stmts[ui], *r = &m->stmts[ri];
    const ir_tensor *ut = &m->tensors[u->tensor], *rt = &m->tensors[r->tensor];
    ir_ref sum = p->fuse_sum[ui];
    bool xchg = p->xchg_var[sum] >= 0, before = ri < ui;
    int rl[2 * IR_MAX_RANK], ul[IR_MAX_RANK], nu = 0, nfree = 0;
    int n = plan_readout_loops(p, r, sum, xchg, rl);
    for (int i = 0; i < ut->rank; i++)
        if (!plan_var_fixed(p, u->vars[i])) ul[nu++] = u->vars[i];
    for (int i = 0; i < rt->rank; i++) nfree += !plan_var_fixed(p, r->vars[i]);
    int db = xchg ? nfree - 1 : nfree; /* depth at which the reduction's loops start */
    bool row_sums = !xchg && n - db == 1 && db >= 1; /* jam loop db-1: one accumulator per row */
    bool row_adds = xchg && n - db >= 2;             /* jam loop n-2: rows added into acc[v] */
    fix_vars(c, u);
    fix_vars(c, r);
    gen_hoists(c, u->root);
    loop L[IR_MAX_RANK];
    jam J;
    int outer = row_sums ? db - 1 : db;
    for (int i = 0; i < outer; i++) c->var[rl[i]] = open_var(c, &L[i], ul[i]);
    if (row_sums) {
        LLVMValueRef acc[JAM];
        for (int k = 0; k < JAM; k++) acc[k] = LLVMBuildAlloca(c->eb, c->f32, "acc");
        int j = db - 1;
        for (int64_t rows = jam_begin(c, &J, ul[j], JAM); rows; rows = jam_next(c, &J)) {
            for (int k = 0; k < rows; k++) LLVMBuildStore(c->b, K(c, 0.0), acc[k]);
            c->var[rl[db]] = open_var(c, &L[db], ul[db]);
            for (int k = 0; k < rows; k++) {
                set_row(c, rl[j], ul[j], jam_row(c, &J, k));
                accumulate(c, acc[k], fused_element(c, u, sum, before), REASSOC);
            }
            loop_end(c, &L[db]);
            LLVMBasicBlockRef skip = begin_skip(c, r->tensor);
            c->fused_sum = sum;
            for (int k = 0; k < rows; k++) {
                set_row(c, rl[j], ul[j], jam_row(c, &J, k));
                c->fused_acc = acc[k];
                store_result(c, r, gen(c, r->root));
            }
            c->fused_sum = IR_NONE;
            end_skip(c, skip);
        }
    } else {
        LLVMValueRef acc = NULL;
        if (xchg) {
            zero_xchg(c, sum);
        } else {
            acc = LLVMBuildAlloca(c->eb, c->f32, "acc");
            LLVMBuildStore(c->b, K(c, 0.0), acc);
        }
        if (row_adds) {
            int j = n - 2;
            for (int i = db; i < j; i++) c->var[rl[i]] = open_var(c, &L[i], ul[i]);
            for (int64_t rows = jam_begin(c, &J, ul[j], JAM); rows; rows = jam_next(c, &J)) {
                c->var[rl[n - 1]] = open_row_sum_var(c, &L[n - 1], ul[n - 1]);
                LLVMValueRef x = NULL;
                for (int k = 0; k < rows; k++) {
                    set_row(c, rl[j], ul[j], jam_row(c, &J, k));
                    x = add_row(c, x, fused_element(c, u, sum, before));
                }
                accumulate(c, xchg_ptr(c, sum), x, CONTRACT);
                loop_end(c, &L[n - 1]);
            }
            for (int i = j; i > db; i--) loop_end(c, &L[i - 1]);
        } else {
            for (int i = db; i < n; i++) c->var[rl[i]] = open_var(c, &L[i], ul[i]);
            LLVMValueRef x = fused_element(c, u, sum, before);
            if (xchg)
                accumulate(c, xchg_ptr(c, sum), x, CONTRACT);
            else
                accumulate(c, acc, x, REASSOC);
            for (int i = n; i > db; i--) loop_end(c, &L[i - 1]);
        }
        LLVMBasicBlockRef skip = begin_skip(c, r->tensor);
        loop f;
        if (xchg) open_var(c, &f, p->xchg_var[sum]);
        c->fused_sum = sum;
        c->fused_acc = acc;
        store_result(c, r, gen(c, r->root));
        c->fused_sum = IR_NONE;
        if (xchg) loop_end(c, &f);
        end_skip(c, skip);
    }
    for (int i = outer; i > 0; i--) loop_end(c, &L[i - 1]);
}

/* ---- prefetch hints at the top of every step (the plan's prefetch list) */

static void gen_prefetch(cg *c)
{
    const ir_model *m = c->m;
    LLVMValueRef next;
    if (c->m->reverse) { /* the next step is t - 1 */
        next = isub(c, c->t, I64(c, 1));
        next = sel(c, LLVMBuildICmp(c->b, LLVMIntSGE, next, I64(c, 0), ""), next, c->t);
    } else {
        next = iadd(c, c->t, I64(c, 1));
        next = sel(c, LLVMBuildICmp(c->b, LLVMIntSLT, next, c->T, ""), next, c->t);
    }
    LLVMTypeRef pty[1] = {c->ptr};
    unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, pty, 1);
    LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, pty, 1);
    for (int i = 0; i < c->p->nprefetch; i++) {
        const plan_prefetch *pf = &c->p->prefetch[i];
        uint32_t ti = (uint32_t)pf->tensor;
        const int *cls = pf->cls;
        int64_t span = pf->span;
        /* one hint per line from the slice's first element to its last: every
         * 16 floats from the first, and the last itself */
        LLVMValueRef first[IR_MAX_RANK];
        for (int i = 0; i < m->tensors[ti].rank; i++) first[i] = cls[i] >= 0 ? c->base[cls[i]] : I64(c, 0);
        bool write = m->tensors[ti].kind == IR_OUTPUT;
        LLVMBasicBlockRef skip = begin_skip(c, (int)ti); /* an output not asked for */
        LLVMValueRef lo = elem_ptr(c, (int)ti, first, next, false);
        for (int64_t j = 0; j <= span / PLAN_LINE_FLOATS + 1; j++) {
            LLVMValueRef off = I64(c, j <= span / PLAN_LINE_FLOATS ? j * PLAN_LINE_FLOATS : span);
            LLVMValueRef args[4] = {LLVMBuildGEP2(c->b, c->f32, lo, &off, 1, ""), I32(c, write), I32(c, 3), I32(c, 1)};
            LLVMBuildCall2(c->b, fty, f, args, 4, "");
        }
        end_skip(c, skip);
    }
}

/* ---- the statements of one phase (time-invariant, or one step) in order.
 * LLVM's loop passes do work per loop that grows with the loops and blocks of
 * the whole function (the vectoriser's loop-access cache and dominator
 * updates, ScalarEvolution's guards walking the dominator tree), so a
 * function of n loop nests in sequence takes time quadratic in n (4,000 lets:
 * 21 s). A phase of more than STMT_GROUP statements is therefore cut into
 * groups of STMT_GROUP, each its own function (not inlined), called in order:
 * (T, t, b, the item's base and extent of every class, the pointer of every
 * tensor but the lets, the scratch). Values pass between statements through
 * memory (tensors and scratch), so the cut changes no result; a phase of at
 * most STMT_GROUP statements (every model of examples/) is emitted inline. */

#define STMT_GROUP 16

static bool stmt_in_phase(const pass_plan *p, uint32_t si, bool per_step)
{
    return p->m->stmts[si].per_step == per_step && p->fuse[si] != -2;
}

static void gen_one(cg *c, uint32_t si)
{
    if (c->p->fuse[si] >= 0)
        gen_fused(c, si, (uint32_t)c->p->fuse[si]);
    else
        gen_stmt(c, si);
}

/* The function of the statements of the phase from *si on, at most STMT_GROUP
 * of them (*si moves past them), called from where the builder stands. */
static bool gen_group(cg *c, uint32_t *si, bool per_step)
{
    const pass_plan *p = c->p;
    const ir_model *m = c->m;
    int nc = p->sched.nclasses, n = 3 + 2 * nc + 1;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) n += m->tensors[ti].kind != IR_LET;
    LLVMTypeRef *pt = calloc((size_t)n, sizeof *pt);
    LLVMValueRef *args = calloc((size_t)n, sizeof *args);
    LLVMValueRef *saved = calloc((size_t)m->ntensors + (size_t)p->nbufs + 2 * (size_t)nc + 1, sizeof *saved);
    if (!pt || !args || !saved) {
        free(pt);
        free(args);
        free(saved);
        return false;
    }
    /* the arguments, as the caller has them */
    int k = 0;
    args[k++] = c->T;
    args[k++] = c->t;
    args[k++] = c->bidx;
    for (int j = 0; j < nc; j++) args[k++] = c->base[j];
    for (int j = 0; j < nc; j++) args[k++] = c->ext[j];
    int first_ptr = k;
    for (uint32_t ti = 0; ti < m->ntensors; ti++)
        if (m->tensors[ti].kind != IR_LET) args[k++] = c->tptr[ti];
    args[k++] = p->nbufs ? (c->scratch ? c->scratch : c->bptr[0]) : LLVMConstNull(c->ptr); /* buffer 0: offset 0 */
    for (int i = 0; i < n; i++) pt[i] = i < first_ptr ? c->i64 : c->ptr;

    LLVMValueRef fn = c->fn, ebr = LLVMGetBasicBlockTerminator(LLVMGetEntryBasicBlock(c->fn));
    LLVMBasicBlockRef at = LLVMGetInsertBlock(c->b);
    LLVMValueRef T = c->T, t = c->t, bidx = c->bidx, scratch = c->scratch;
    memcpy(saved, c->tptr, m->ntensors * sizeof *saved);
    memcpy(saved + m->ntensors, c->bptr, (size_t)p->nbufs * sizeof *saved);
    memcpy(saved + m->ntensors + p->nbufs, c->base, (size_t)nc * sizeof *saved);
    memcpy(saved + m->ntensors + p->nbufs + nc, c->ext, (size_t)nc * sizeof *saved);

    char name[320]; /* a model name is at most 255 bytes */
    snprintf(name, sizeof name, "%s.group%u", LLVMGetValueName(fn), *si);
    LLVMTypeRef fty = LLVMFunctionType(c->void_ty, pt, (unsigned)n, 0);
    c->fn = LLVMAddFunction(c->mod, name, fty);
    LLVMSetLinkage(c->fn, LLVMInternalLinkage);
    add_attr(c, c->fn, LLVMAttributeFunctionIndex, "noinline");
    add_attr(c, c->fn, LLVMAttributeFunctionIndex, "nounwind");
    k = 0;
    c->T = LLVMGetParam(c->fn, (unsigned)k++);
    c->t = LLVMGetParam(c->fn, (unsigned)k++);
    c->bidx = LLVMGetParam(c->fn, (unsigned)k++);
    for (int j = 0; j < nc; j++) c->base[j] = LLVMGetParam(c->fn, (unsigned)k++);
    for (int j = 0; j < nc; j++) c->ext[j] = LLVMGetParam(c->fn, (unsigned)k++);
    for (int i = first_ptr; i < n; i++) {
        add_attr(c, c->fn, (unsigned)i + 1, "noalias");
        add_attr(c, c->fn, (unsigned)i + 1, "nocapture");
    }
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        if (m->tensors[ti].kind == IR_LET) continue;
        if (m->tensors[ti].kind == IR_INPUT || m->tensors[ti].kind == IR_PARAM)
            add_attr(c, c->fn, (unsigned)k + 1, "readonly");
        c->tptr[ti] = LLVMGetParam(c->fn, (unsigned)k++);
    }
    LLVMBasicBlockRef entry = new_block(c, "entry"), start = new_block(c, "start");
    LLVMPositionBuilderAtEnd(c->b, entry);
    c->scratch = LLVMGetParam(c->fn, (unsigned)k);
    memset(c->bptr, 0, (size_t)p->nbufs * sizeof *c->bptr);
    LLVMPositionBuilderBefore(c->eb, LLVMBuildBr(c->b, start));
    LLVMPositionBuilderAtEnd(c->b, start);
    for (uint32_t left = STMT_GROUP; left > 0 && *si < m->nstmts; (*si)++)
        if (stmt_in_phase(p, *si, per_step)) {
            gen_one(c, *si);
            left--;
        }
    LLVMBuildRetVoid(c->b);

    LLVMValueRef group = c->fn;
    c->fn = fn;
    LLVMPositionBuilderBefore(c->eb, ebr);
    LLVMPositionBuilderAtEnd(c->b, at);
    c->T = T;
    c->t = t;
    c->bidx = bidx;
    c->scratch = scratch;
    memcpy(c->tptr, saved, m->ntensors * sizeof *saved);
    memcpy(c->bptr, saved + m->ntensors, (size_t)p->nbufs * sizeof *saved);
    memcpy(c->base, saved + m->ntensors + p->nbufs, (size_t)nc * sizeof *saved);
    memcpy(c->ext, saved + m->ntensors + p->nbufs + nc, (size_t)nc * sizeof *saved);
    LLVMBuildCall2(c->b, fty, group, args, (unsigned)n, "");
    free(pt);
    free(args);
    free(saved);
    return true;
}

static bool gen_stmts(cg *c, bool per_step)
{
    const pass_plan *p = c->p;
    uint32_t n = 0;
    for (uint32_t si = 0; si < c->m->nstmts; si++) n += stmt_in_phase(p, si, per_step);
    if (n <= STMT_GROUP) {
        for (uint32_t si = 0; si < c->m->nstmts; si++)
            if (stmt_in_phase(p, si, per_step)) gen_one(c, si);
        return true;
    }
    for (uint32_t si = 0; si < c->m->nstmts;)
        if (!gen_group(c, &si, per_step)) return false;
    return true;
}

/* The item function: (T, item_begin, item_end, tensor pointers..., scratch
 * buffers..., and with init statements the fresh flags), every pointer noalias. Inlined into the entry, each noalias
 * pointer becomes a scope that every memory access lists, which is metadata
 * of size accesses x pointers: quadratic in the number of lets (10,000 lets:
 * 4.4 GB). Past MAX_POINTER_PARAMS pointers the lets' slots are left out and
 * the scratch buffers are passed as one pointer, each buffer at its constant
 * offset from it (models of examples/ stay far below). */
#define MAX_POINTER_PARAMS 64

static bool packed_params(const pass_plan *p) { return p->m->ntensors + (uint32_t)p->nbufs > MAX_POINTER_PARAMS; }

/* Fills c->tparam (the parameter index of each tensor's pointer, or -1 for a
 * let when packed) and returns the first scratch parameter; *n: the count. */
static int layout_params(cg *c, int *n)
{
    const pass_plan *p = c->p;
    bool packed = packed_params(p);
    int k = 3;
    for (uint32_t ti = 0; ti < p->m->ntensors; ti++)
        c->tparam[ti] = packed && p->m->tensors[ti].kind == IR_LET ? -1 : k++;
    *n = k + (packed ? (p->nbufs > 0) : p->nbufs) + (p->m->ninits > 0); /* the fresh flags last */
    return k;
}

static LLVMValueRef gen_items(cg *c, const char *name)
{
    const pass_plan *p = c->p;
    const ir_model *m = c->m;
    bool packed = packed_params(p);
    int np, nbuf = layout_params(c, &np); /* nbuf: the first scratch parameter */
    LLVMTypeRef *pt = calloc((size_t)np, sizeof *pt);
    if (!pt) return NULL;
    pt[0] = pt[1] = pt[2] = c->i64;
    for (int i = 3; i < np; i++) pt[i] = c->ptr;
    LLVMTypeRef fty = LLVMFunctionType(c->void_ty, pt, (unsigned)np, 0);
    free(pt);
    c->fn = LLVMAddFunction(c->mod, name, fty);
    LLVMSetLinkage(c->fn, LLVMInternalLinkage);
    add_attr(c, c->fn, LLVMAttributeFunctionIndex, "alwaysinline");
    add_attr(c, c->fn, LLVMAttributeFunctionIndex, "nounwind");
    for (int i = 3; i < np; i++) {
        add_attr(c, c->fn, (unsigned)i + 1, "noalias");
        add_attr(c, c->fn, (unsigned)i + 1, "nocapture");
    }
    c->T = LLVMGetParam(c->fn, 0);
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        int k = c->tparam[ti];
        c->tptr[ti] = k >= 0 ? LLVMGetParam(c->fn, (unsigned)k) : NULL;
        if (k >= 0 && (m->tensors[ti].kind == IR_INPUT || m->tensors[ti].kind == IR_PARAM))
            add_attr(c, c->fn, (unsigned)k + 1, "readonly");
    }
    if (m->ninits) c->fresh = LLVMGetParam(c->fn, (unsigned)np - 1);

    LLVMBasicBlockRef entry = new_block(c, "entry"), start = new_block(c, "start");
    LLVMPositionBuilderAtEnd(c->b, entry);
    if (packed && p->nbufs > 0) c->scratch = LLVMGetParam(c->fn, (unsigned)nbuf);
    for (int j = 0; !packed && j < p->nbufs; j++) c->bptr[j] = LLVMGetParam(c->fn, (unsigned)(nbuf + j));
    LLVMValueRef br = LLVMBuildBr(c->b, start);
    LLVMPositionBuilderBefore(c->eb, br);
    LLVMPositionBuilderAtEnd(c->b, start);

    loop item;
    LLVMValueRef it = loop_begin(c, &item, LLVMGetParam(c->fn, 1), LLVMGetParam(c->fn, 2), true, "item");
    LLVMValueRef G = I64(c, p->items_per_seq);
    c->bidx = LLVMBuildUDiv(c->b, it, G, "b");
    LLVMValueRef g = LLVMBuildURem(c->b, it, G, "");
    for (int k = 0; k < p->sched.nclasses; k++) {
        c->base[k] = I64(c, 0);
        c->ext[k] = I64(c, p->cls[k].tile);
    }
    for (int i = p->ngrid - 1; i >= 0; i--) { /* mixed radix, the last grid class fastest */
        int k = p->grid[i];
        LLVMValueRef nt = I64(c, p->cls[k].ntiles);
        LLVMValueRef tile = I64(c, p->cls[k].tile);
        c->base[k] = imul(c, LLVMBuildURem(c->b, g, nt, ""), tile);
        g = LLVMBuildUDiv(c->b, g, nt, "");
        int64_t dim = p->cls[k].n;
        if (dim % p->cls[k].tile) {
            LLVMValueRef left = isub(c, I64(c, dim), c->base[k]);
            c->ext[k] = sel(c, LLVMBuildICmp(c->b, LLVMIntSLT, left, tile, ""), left, tile);
        }
    }
    c->t = I64(c, 0);
    for (uint32_t ii = 0; ii < m->ninits; ii++) gen_init(c, &m->inits[ii]);
    if (!gen_stmts(c, false)) return NULL;
    loop step;
    c->t = loop_begin(c, &step, I64(c, 0), c->T, true, "t");
    if (m->reverse) c->t = isub(c, isub(c, c->T, I64(c, 1)), c->t); /* steps at t = T-1 .. 0 (ir.h) */
    gen_prefetch(c);
    if (!gen_stmts(c, true)) return NULL;
    loop_end(c, &step);
    loop_end(c, &item);
    LLVMBuildRetVoid(c->b);
    return c->fn;
}

/* The public entry: (const llvm_kargs *, item_begin, item_end, scratch). */
static void gen_entry(cg *c, const char *symbol, LLVMValueRef items)
{
    const pass_plan *p = c->p;
    const ir_model *m = c->m;
    LLVMTypeRef pt[4] = {c->ptr, c->i64, c->i64, c->ptr};
    LLVMTypeRef fty = LLVMFunctionType(c->void_ty, pt, 4, 0);
    LLVMValueRef fn = LLVMAddFunction(c->mod, symbol, fty);
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    if (c->avx512) { /* LLVM's x86 tuning keeps 256-bit vectors unless asked */
        LLVMAttributeRef w = LLVMCreateStringAttribute(c->ctx, "prefer-vector-width", 19, "512", 3);
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, w);
    }
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    LLVMTypeRef fields[3] = {c->i64, c->ptr, c->ptr};
    LLVMTypeRef kargs = LLVMStructTypeInContext(c->ctx, fields, m->ninits ? 3 : 2, 0);
    LLVMValueRef a = LLVMGetParam(fn, 0), scratch = LLVMGetParam(fn, 3);
    int np, nbuf = layout_params(c, &np);
    LLVMValueRef *args = calloc((size_t)np, sizeof *args);
    if (!args) return;
    args[0] = LLVMBuildLoad2(c->b, c->i64, LLVMBuildStructGEP2(c->b, kargs, a, 0, ""), "T");
    args[1] = LLVMGetParam(fn, 1);
    args[2] = LLVMGetParam(fn, 2);
    LLVMValueRef tensors = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, kargs, a, 1, ""), "tensors");
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        LLVMValueRef ix = I64(c, ti);
        int k = c->tparam[ti];
        if (k < 0) continue;
        args[k] = m->tensors[ti].kind == IR_LET
                      ? LLVMConstNull(c->ptr)
                      : LLVMBuildLoad2(c->b, c->ptr, LLVMBuildInBoundsGEP2(c->b, c->ptr, tensors, &ix, 1, ""),
                                       m->tensors[ti].name);
    }
    if (packed_params(p) && p->nbufs > 0)
        args[nbuf] = scratch;
    else
        for (int j = 0; j < p->nbufs; j++) args[nbuf + j] = gep(c, scratch, I64(c, p->bufs[j].off));
    if (m->ninits) args[np - 1] = LLVMBuildLoad2(c->b, c->ptr, LLVMBuildStructGEP2(c->b, kargs, a, 2, ""), "fresh");
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(items), items, args, (unsigned)np, "");
    LLVMBuildRetVoid(c->b);
    free(args);
}

const char *llvm_symbol(arena *a, const char *name) { return arena_printf(a, "ssmc_%s", name); }

/* Builds the (verified, not yet optimised) module of m in ctx for tm. */
static ssmc_status build_module(const ir_model *m, const pass_plan *p, LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                const char *symbol, diag *d, LLVMModuleRef *out)
{
    *out = NULL;
    /* split reductions are planned for targets with lanes only (plan.c) */
    if (p->part_floats || p->part_state_floats) {
        diag_error(d, "internal error: llvm: the plan of model %s has partial sums, which a CPU plan never has", m->name);
        return SSMC_ERR_BACKEND;
    }
    cg c = {.p = p, .m = m, .ctx = ctx, .fused_sum = IR_NONE, .hoisting = IR_NONE};
    c.mod = LLVMModuleCreateWithNameInContext(m->name, ctx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(c.mod, triple);
    LLVMDisposeMessage(triple);
    char *features = LLVMGetTargetMachineFeatureString(tm);
    c.avx512 = features && strstr(features, "+avx512f") != NULL;
    LLVMDisposeMessage(features);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    char *layout = LLVMCopyStringRepOfTargetData(td);
    LLVMSetDataLayout(c.mod, layout);
    LLVMDisposeMessage(layout);
    LLVMDisposeTargetData(td);

    c.b = LLVMCreateBuilderInContext(ctx);
    c.eb = LLVMCreateBuilderInContext(ctx);
    c.f32 = LLVMFloatTypeInContext(ctx);
    c.i32 = LLVMInt32TypeInContext(ctx);
    c.i64 = LLVMInt64TypeInContext(ctx);
    c.ptr = LLVMPointerTypeInContext(ctx, 0);
    c.void_ty = LLVMVoidTypeInContext(ctx);
    c.helper_ty = LLVMFunctionType(c.f32, &c.f32, 1, 0);
    size_t nt = m->ntensors + 1;
    c.tptr = calloc(nt, sizeof *c.tptr);
    c.tparam = calloc(nt, sizeof *c.tparam);
    c.bptr = calloc((size_t)p->nbufs + 1, sizeof *c.bptr);
    c.base = calloc((size_t)p->sched.nclasses + 1, sizeof *c.base);
    c.ext = calloc((size_t)p->sched.nclasses + 1, sizeof *c.ext);
    c.var = calloc(m->nvars + 1, sizeof *c.var);
    ssmc_status s = SSMC_OK;
    LLVMValueRef items = NULL;
    if (!c.tptr || !c.tparam || !c.bptr || !c.base || !c.ext || !c.var) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    } else {
        gen_exp_helper(&c);
        gen_log_helper(&c);
        gen_log1p_helper(&c);
        gen_tanh_helper(&c);
        gen_softplus_helper(&c);
        gen_sincos_helper(&c, false);
        gen_sincos_helper(&c, true);
        gen_erf_helper(&c);
        char *iname = malloc(strlen(symbol) + 8);
        if (iname) {
            sprintf(iname, "%s.items", symbol);
            items = gen_items(&c, iname);
            free(iname);
        }
        if (!items) {
            diag_error(d, "out of memory");
            s = SSMC_ERR_NOMEM;
        } else {
            gen_entry(&c, symbol, items);
        }
    }
    free(c.tptr);
    free(c.tparam);
    free(c.bptr);
    free(c.base);
    free(c.ext);
    free(c.var);
    LLVMDisposeBuilder(c.b);
    LLVMDisposeBuilder(c.eb);
    char *msg = NULL;
    if (s == SSMC_OK && LLVMVerifyModule(c.mod, LLVMReturnStatusAction, &msg)) {
        diag_error(d, "internal error: llvm: the generated module for model %s does not verify: %s", m->name, msg);
        s = SSMC_ERR_BACKEND;
    }
    if (msg) LLVMDisposeMessage(msg);
    if (s != SSMC_OK) {
        LLVMDisposeModule(c.mod);
        return s;
    }
    *out = c.mod;
    return SSMC_OK;
}

#define PIPELINE "default<O3>"

static ssmc_status optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, diag *d)
{
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
    /* Unrolling and interleaving off: they doubled compile time (60-150 ms a
     * model instead of 30-60) for no run-time gain we could measure. */
    LLVMPassBuilderOptionsSetLoopInterleaving(po, 0);
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
    LLVMErrorRef e = LLVMRunPasses(mod, PIPELINE, tm, po);
    LLVMDisposePassBuilderOptions(po);
    return e ? fail_error(d, "optimisation failed", e) : SSMC_OK;
}

/* ---------------------------------------------------------------- JIT */

struct llvm_jit {
    LLVMOrcLLJITRef jit;
    llvm_kernel_fn *fn;
    strbuf log; /* what the JIT session reported (jit_report) */
};

/* The cache key of a kernel: everything its object code depends on. The
 * unoptimised module holds the model, the plan, the triple and data layout. */
static rt_cache_key cache_key(LLVMModuleRef mod, LLVMTargetMachineRef tm)
{
    unsigned major, minor, patch;
    LLVMGetVersion(&major, &minor, &patch);
    char llvm_version[64];
    snprintf(llvm_version, sizeof llvm_version, "LLVM %u.%u.%u", major, minor, patch);
    char *text = LLVMPrintModuleToString(mod);
    char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
    const char *parts[] = {"ssmc cpu kernel 1", SSMC_VERSION, llvm_version, cpu, features,
                           PIPELINE " without unrolling or interleaving", text};
    rt_cache_key key = rt_cache_key_make(parts, (int)(sizeof parts / sizeof *parts));
    LLVMDisposeMessage(text);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);
    return key;
}

/* The object code of m for tm: from the kernel cache when `lookup` and it
 * holds it (*cached), else optimised and compiled now (and stored). The cache
 * is an optimisation: when its directory cannot be used the kernel is
 * compiled as if it missed. */
static ssmc_status kernel_object(LLVMModuleRef mod, LLVMTargetMachineRef tm, rt_cache_key key, bool lookup, diag *d,
                                 LLVMMemoryBufferRef *obj, bool *cached)
{
    *obj = NULL;
    *cached = false;
    void *data = NULL;
    size_t len = 0;
    bool hit = false;
    strbuf err = {0};
    if (lookup && rt_cache_get(NULL, key, &data, &len, &hit, &err) == SSMC_OK && hit) {
        *obj = LLVMCreateMemoryBufferWithMemoryRangeCopy(data, len, "ssmc kernel (cached)");
        free(data);
        sb_free(&err);
        *cached = true;
        return SSMC_OK;
    }
    sb_free(&err);
    ssmc_status s = optimise(mod, tm, d);
    char *msg = NULL;
    if (s == SSMC_OK && LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, obj))
        return fail_llvm(d, "code generation failed", msg);
    if (s == SSMC_OK) {
        strbuf perr = {0};
        rt_cache_put(NULL, key, LLVMGetBufferStart(*obj), LLVMGetBufferSize(*obj), &perr);
        sb_free(&perr);
    }
    return s;
}

/* The JIT session's own error reports (a symbol that does not resolve while
 * the object is linked) are kept with the JIT: LLVM's default prints them to
 * stderr, and the library never prints. */
static void jit_report(void *ctx, LLVMErrorRef e)
{
    strbuf *log = ctx;
    char *msg = LLVMGetErrorMessage(e);
    sb_printf(log, "%s%s", log->len ? "; " : "", msg);
    LLVMDisposeErrorMessage(msg);
}

static bool jit_error(strbuf *why, const char *what, LLVMErrorRef e)
{
    char *msg = LLVMGetErrorMessage(e);
    sb_printf(why, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return false;
}

/* Links obj into a new JIT for tm (both consumed, also on failure) and looks
 * the kernel up; false with the reason in *why when LLVM cannot. */
static bool jit_load(llvm_jit *j, LLVMTargetMachineRef tm, LLVMMemoryBufferRef obj, const char *symbol, strbuf *why)
{
    /* the object is compiled already: the JIT only links it, for this CPU */
    LLVMOrcJITTargetMachineBuilderRef jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm);
    LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, jb);
    if (e) {
        j->jit = NULL;
        LLVMDisposeMemoryBuffer(obj);
        return jit_error(why, "cannot create the JIT", e);
    }
    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j->jit), jit_report, &j->log);
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
    if (e) {
        LLVMDisposeMemoryBuffer(obj);
        return jit_error(why, "cannot resolve symbols of this process (libm)", e);
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
    e = LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), obj); /* the JIT owns obj now */
    if (e) return jit_error(why, "cannot add the kernel to the JIT", e);
    LLVMOrcExecutorAddress addr = 0;
    e = LLVMOrcLLJITLookup(j->jit, &addr, symbol);
    if (e) {
        jit_error(why, "cannot link the kernel", e);
        if (j->log.len) sb_printf(why, " (%s)", sb_cstr(&j->log));
        return false;
    }
    j->fn = (llvm_kernel_fn *)(uintptr_t)addr;
    return true;
}

static void jit_unload(llvm_jit *j)
{
    if (j->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
        if (e) LLVMConsumeError(e);
        j->jit = NULL;
    }
    j->fn = NULL;
    sb_free(&j->log);
}

ssmc_status llvm_jit_compile(const pass_plan *p, diag *d, llvm_jit **out, llvm_kernel_shape *shape)
{
    *out = NULL;
    const ir_model *m = p->m;
    arena a;
    arena_init(&a);
    LLVMTargetMachineRef tm = NULL;
    ssmc_status s = host_target(NULL, d, &tm);
    const char *symbol = llvm_symbol(&a, m->name);
    llvm_jit *j = calloc(1, sizeof *j);
    if (s == SSMC_OK && (!j || !symbol)) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    }
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    LLVMMemoryBufferRef obj = NULL;
    rt_cache_key key = {0, 0};
    bool cached = false;
    if (s == SSMC_OK) s = build_module(m, p, ctx, tm, symbol, d, &mod);
    if (s == SSMC_OK) {
        key = cache_key(mod, tm); /* of the unoptimised module */
        s = kernel_object(mod, tm, key, true, d, &obj, &cached);
    }
    if (s == SSMC_OK) {
        strbuf why = {0};
        bool loaded = jit_load(j, tm, obj, symbol, &why);
        tm = NULL;
        obj = NULL;
        if (!loaded && cached) {
            /* an entry that passed the cache's checks but that LLVM cannot
             * load is a miss: dropped, and the kernel built afresh */
            strbuf err = {0};
            rt_cache_remove(NULL, key, &err);
            sb_free(&err);
            jit_unload(j);
            sb_free(&why);
            s = host_target(NULL, d, &tm);
            if (s == SSMC_OK) s = kernel_object(mod, tm, key, false, d, &obj, &cached);
            if (s == SSMC_OK) {
                loaded = jit_load(j, tm, obj, symbol, &why);
                tm = NULL;
                obj = NULL;
            }
        }
        if (s == SSMC_OK && !loaded) {
            strbuf err = {0}; /* a kernel that does not load is not kept */
            rt_cache_remove(NULL, key, &err);
            sb_free(&err);
            diag_error(d, "llvm: %s", why.failed ? "out of memory" : sb_cstr(&why));
            s = SSMC_ERR_BACKEND;
        }
        sb_free(&why);
    }
    if (obj) LLVMDisposeMemoryBuffer(obj);
    if (mod) LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    if (tm) LLVMDisposeTargetMachine(tm);
    if (s == SSMC_OK) {
        set_shape(p, shape);
        *out = j;
    } else {
        llvm_jit_free(j);
    }
    arena_free(&a);
    return s;
}

llvm_kernel_fn *llvm_jit_kernel(const llvm_jit *j) { return j->fn; }

void llvm_jit_free(llvm_jit *j)
{
    if (!j) return;
    jit_unload(j);
    free(j);
}

/* ---------------------------------------------------------------- text and objects */

/* An optimised module for m, for --emit=llvm and AOT objects: the caller
 * frees a, tm (when set), mod (when set) and ctx. */
static ssmc_status optimised_module(const pass_plan *p, const char *cpu, arena *a, LLVMTargetMachineRef *tm,
                                    LLVMContextRef ctx, LLVMModuleRef *mod, diag *d)
{
    ssmc_status s = host_target(cpu, d, tm);
    if (s == SSMC_OK) s = build_module(p->m, p, ctx, *tm, llvm_symbol(a, p->m->name), d, mod);
    if (s == SSMC_OK) s = optimise(*mod, *tm, d);
    return s;
}

ssmc_status llvm_emit_text(const pass_plan *p, strbuf *out, diag *d)
{
    arena a;
    arena_init(&a);
    LLVMTargetMachineRef tm = NULL;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    ssmc_status s = optimised_module(p, NULL, &a, &tm, ctx, &mod, d);
    if (s == SSMC_OK) {
        sb_printf(out, "; ssmc: model %s, CPU kernel %s\n", p->m->name, "(LLVM, recurrent)");
        plan_print_comment(out, p, "; ");
        char *text = LLVMPrintModuleToString(mod);
        sb_puts(out, text);
        LLVMDisposeMessage(text);
    }
    if (mod) LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    if (tm) LLVMDisposeTargetMachine(tm);
    arena_free(&a);
    return s;
}

ssmc_status llvm_emit_object(const pass_plan *p, const char *cpu, const char *path, llvm_kernel_shape *shape, diag *d)
{
    const ir_model *m = p->m;
    arena a;
    arena_init(&a);
    LLVMTargetMachineRef tm = NULL;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    char *file = arena_strdup(&a, path);
    ssmc_status s = optimised_module(p, cpu, &a, &tm, ctx, &mod, d);
    if (s == SSMC_OK) {
        char *err = NULL;
        LLVMSetVisibility(LLVMGetNamedFunction(mod, llvm_symbol(&a, m->name)), LLVMHiddenVisibility);
        if (LLVMTargetMachineEmitToFile(tm, mod, file, LLVMObjectFile, &err))
            s = fail_llvm(d, "cannot write the object file", err);
    }
    if (mod) LLVMDisposeModule(mod);
    if (s == SSMC_OK) set_shape(p, shape);
    LLVMContextDispose(ctx);
    if (tm) LLVMDisposeTargetMachine(tm);
    arena_free(&a);
    return s;
}

#else /* !SSMC_HAVE_LLVM */

const char *llvm_symbol(arena *a, const char *name) { return arena_printf(a, "ssmc_%s", name); }

static ssmc_status no_llvm(diag *d)
{
    diag_error(d, "this build of ssmc has no LLVM: the cpu backend is not available");
    return SSMC_ERR_UNSUPPORTED;
}

ssmc_status llvm_jit_compile(const pass_plan *p, diag *d, llvm_jit **out, llvm_kernel_shape *shape)
{
    *out = NULL;
    return no_llvm(d);
}
llvm_kernel_fn *llvm_jit_kernel(const llvm_jit *j) { return NULL; }
void llvm_jit_free(llvm_jit *j) {}
ssmc_status llvm_emit_text(const pass_plan *p, strbuf *out, diag *d) { return no_llvm(d); }
ssmc_status llvm_emit_object(const pass_plan *p, const char *cpu, const char *path, llvm_kernel_shape *shape, diag *d)
{
    return no_llvm(d);
}

#endif
