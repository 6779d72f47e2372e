/* cli.c: the ssmc command line (SPEC §5). The only place that prints.
 *   ssmc check FILE
 *   ssmc emit  FILE --emit=ast|ir|analysis|grad|plan|llvm|cuda|ptx [-D H=16 ...]
 *   ssmc run   FILE [-D NAME=VAL ...] [--batch B] [--seqlen T] [--device interp|cpu|cuda]
 *                   [--dtype f32|bf16|f16] [--seed S] [--in NAME=FILE.npy ...] [--out DIR]
 *                   [--init-state NAME=FILE.npy] [--verify] [--grad] [--dout NAME=FILE.npy ...]
 *                   [--algo A] [--chunk C] [--cu-seqlens FILE.npy]
 *   ssmc build FILE -o DIR [--target cpu,cuda:sm_90] [--dtype f32,bf16/f32]
 *   ssmc bench FILE [same options as run]
 *   ssmc --help | --version;  ssmc CMD --help   (to stdout, exit 0)
 * Exit status: 0 success, 1 an error in the input or a failed verification,
 * 2 a usage error (the message and the usage on stderr). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ssmc.h"
#include "runtime/cuda_driver.h"
#include "runtime/npy.h"
#include "support/dtype.h"
#include "support/support.h"

#define MAX_PAIRS 64

typedef struct pair {
    const char *name, *value;
} pair;

typedef struct cli {
    const char *cmd, *file, *emit, *out, *target, *model, *arch;
    const char *dtypes; /* build: the CUDA kernels' dtype signatures, as given */
    const char *cu_seqlens; /* run, bench: --cu-seqlens FILE.npy */
    ssmc_dim dims[MAX_PAIRS];
    int ndims;
    pair ins[MAX_PAIRS], inits[MAX_PAIRS], douts[MAX_PAIRS];
    int nins, ninits, ndouts;
    int64_t batch, T, iters;
    uint64_t seed;
    ssmc_device device;
    ssmc_dtype dtype;
    ssmc_algo algo;
    int threads;
    int chunk; /* --chunk */
    bool verify, check_finite, grad;
} cli;

/* The commands: the synopsis (`ssmc --help` and usage errors show them all),
 * then what `ssmc CMD --help` adds. */
static const struct command_help {
    const char *name, *synopsis, *about;
} commands[] = {
    {"check",
     "  ssmc check FILE [-D NAME=VAL ...] [--model NAME]\n",
     "Parses FILE and checks every model in it (only NAME with --model) through\n"
     "lowering and the recurrence analysis. Prints nothing when all is well;\n"
     "diagnostics (file:line:col: error: ...) go to stderr and the exit status is 1.\n"},
    {"emit",
     "  ssmc emit  FILE --emit=ast|ir|analysis|grad|plan|llvm|cuda|ptx [-D NAME=VAL ...] [--model NAME]\n"
     "                  [--arch sm_90] [--threads N] [--device D] [--algo A] [--chunk C] [--grad]\n",
     "Prints one stage of the compiler for a model of FILE (all models for ast):\n"
     "the syntax tree, the IR, the recurrence analysis (with each state's chunk form),\n"
     "the adjoint IR of the gradients, the kernel plan for --device (cpu when not\n"
     "given), the CPU kernel's LLVM IR, the CUDA C or its PTX (--arch sets the GPU\n"
     "architecture). With --grad, the plan, llvm, cuda or ptx stage of the models\n"
     "the gradients run: the training forward's and the adjoint's.\n"},
    {"run",
     "  ssmc run   FILE [-D NAME=VAL ...] [--batch B] [--seqlen T] [--device interp|cpu|cuda]\n"
     "                  [--dtype f32|bf16|f16] [--seed S] [--in NAME=FILE.npy ...] [--out DIR]\n"
     "                  [--init-state NAME=FILE.npy] [--verify] [--threads N] [--model NAME]\n"
     "                  [--algo auto|recurrent|chunked|scan] [--chunk C] [--cu-seqlens FILE.npy]\n"
     "                  [--check-finite] [--grad] [--dout NAME=FILE.npy ...]\n",
     "Runs a model of FILE on a device (--device; interp, the f64 reference\n"
     "interpreter, when not given). Inputs and params not given with --in are\n"
     "drawn uniformly from [-1, 1) with the seed (default 0); B and T come from\n"
     "the --in files, else --batch and --seqlen (default 1 and 16). --out DIR\n"
     "writes every output and final state as DIR/<name>.npy (<f4). --verify runs\n"
     "the interpreter (f64) on the same values and prints each result's relative\n"
     "error against a tolerance fitted to the model (docs/numerics.md); exit\n"
     "status 1 when one is over. --check-finite reports NaN or Inf in any tensor.\n"
     "--algo chunked runs the chunked algorithm (chunks of --chunk C steps, 64 by\n"
     "default) where every state has a chunk form (ssmc emit --emit=analysis says\n"
     "why not); scan is not implemented yet (an error on every device). --grad runs\n"
     "the backward too (docs/gradients.md) and writes DIR/grad_<name>.npy.\n"
     "--cu-seqlens FILE.npy (N + 1 offsets, <i4 or <i8, from 0 up to T) runs N\n"
     "sequences packed along T of a batch of one: inputs and outputs [1, T, ...],\n"
     "initial and final states [N, ...]; each sequence starts from its own state.\n"},
    {"build",
     "  ssmc build FILE -o DIR [--target cpu|cpu:x86-64[-v2|-v3|-v4][,cuda:sm_XX ...]]\n"
     "                  [--dtype SIG[,SIG ...]] [-D NAME=VAL ...] [--model NAME] [--threads N] [--algo A]\n",
     "Builds a model of FILE ahead of time into DIR: <model>.h, lib<model>.so and\n"
     "lib<model>.a, which need neither LLVM nor ssmc, nor NVRTC with cuda targets.\n"
     "--target lists a CPU and GPU archs (cpu,cuda:sm_80,cuda:sm_90; default cpu):\n"
     "each cuda:sm_XX gets cubins, the highest also PTX, compiled here by NVRTC (no\n"
     "GPU needed). --dtype lists the CUDA kernels' dtype signatures, each\n"
     "DTYPE[/PARAMS[/STATES]] of f32, f16, bf16, f64 (default f32; bf16/f32: bf16\n"
     "inputs, outputs and states, f32 params); the CPU code takes f32. The header\n"
     "documents the entry points (run, decode against state pools, CUDA on device\n"
     "pointers with a stream) and gives the link line. Needs a C compiler, ar and\n"
     "objcopy (or $CC, $AR and $OBJCOPY).\n"},
    {"bench",
     "  ssmc bench FILE [the options of run] [--iters N]\n",
     "Times the model: a warm-up run, then N runs (default 20) on tensors already\n"
     "on the device (--device cuda: the kernels between CUDA events, the copies in\n"
     "and out timed once, apart); prints the median, the bandwidth it implies and a\n"
     "line saying what was timed. --verify and --out apply to the last run.\n"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static void usage(FILE *f)
{
    fputs("usage:\n", f);
    for (size_t i = 0; i < NCOMMANDS; i++) fputs(commands[i].synopsis, f);
    fputs("  ssmc --help | --version;  ssmc CMD --help\n", f);
}

/* `ssmc --help`, `ssmc CMD --help`: to stdout, exit 0. */
static int help(const char *cmd)
{
    for (size_t i = 0; cmd && i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, cmd) == 0) {
            printf("usage:\n%s\n%s", commands[i].synopsis, commands[i].about);
            return 0;
        }
    printf("ssmc %s: a compiler for recurrent sequence models (docs/language.md, docs/api.md)\n\n", SSMC_VERSION);
    usage(stdout);
    printf("\n-D NAME=VAL overrides a dim of the model; --model NAME picks a model of the file\n"
           "(default: the first). `ssmc CMD --help` says more about a command.\n");
    return 0;
}

static int version(void)
{
    const char *parts[] = {"ssmc " SSMC_VERSION,
#ifdef SSMC_HAVE_LLVM
                           "cpu backend: LLVM " SSMC_LLVM_VERSION,
#else
                           "cpu backend: not built (no LLVM)",
#endif
                           "cuda backend: NVRTC and libcuda loaded at run time"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) printf("%s%s", i ? "; " : "", parts[i]);
    putchar('\n');
    return 0;
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "ssmc: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool split_pair(char *s, pair *p)
{
    char *eq = strchr(s, '=');
    if (!eq || eq == s || !eq[1]) return false;
    *eq = 0;
    p->name = s;
    p->value = eq + 1;
    return true;
}

/* Which commands take each option (SPEC §5): an option given to a command
 * that has no use for it is a usage error, never silently ignored. */
static const struct option_use {
    const char *flag, *cmds;
} option_uses[] = {
    {"-D", "check emit run bench build"},     {"--model", "check emit run bench build"},
    {"--emit", "emit"},                       {"--arch", "emit run bench"},
    {"--threads", "emit run bench build"},    {"--device", "emit run bench"},
    {"--algo", "emit run bench build"},       {"--chunk", "emit run bench"},
    {"--batch", "run bench"},                 {"--seqlen", "run bench"},
    {"--seed", "run bench"},                  {"--in", "run bench"},
    {"--init-state", "run bench"},            {"--out", "run bench build"},
    {"-o", "run bench build"},                {"--verify", "run bench"},
    {"--check-finite", "run bench"},          {"--cu-seqlens", "run bench"},
    {"--dtype", "run bench build"},           {"--grad", "emit run bench"}, /* bench: a usage error of its own */
    {"--dout", "run bench"},                  {"--iters", "bench"},
    {"--target", "build"},
};

/* 0 when command `cmd` takes option `a` (or either is unknown: reported
 * elsewhere), else the usage error's exit status. */
static int check_option_use(const char *cmd, const char *a)
{
    size_t n = strncmp(a, "-D", 2) == 0 ? 2 : strcspn(a, "=");
    bool known_cmd = false;
    for (size_t i = 0; i < NCOMMANDS; i++) known_cmd |= strcmp(commands[i].name, cmd) == 0;
    for (size_t i = 0; known_cmd && i < sizeof option_uses / sizeof *option_uses; i++) {
        const struct option_use *u = &option_uses[i];
        if (strlen(u->flag) != n || strncmp(u->flag, a, n) != 0) continue;
        size_t lc = strlen(cmd);
        for (const char *p = u->cmds; (p = strstr(p, cmd)) != NULL; p += lc)
            if ((p == u->cmds || p[-1] == ' ') && (p[lc] == ' ' || p[lc] == 0)) return 0;
        char msg[256];
        snprintf(msg, sizeof msg, "%s is not an option of '%s' (it is for: %s)", u->flag, cmd, u->cmds);
        return usage_error("%s", msg);
    }
    return 0;
}

/* Returns 0 on success, else the exit status. */
static int parse_args(int argc, char **argv, cli *c)
{
    if (argc < 2) return usage_error("missing command%s", "");
    c->cmd = argv[1];
    c->iters = 20;
    for (int i = 2; i < argc; i++) {
        char *a = argv[i];
        char *val = NULL;
        if (a[0] == '-' && a[1]) {
            int rc = check_option_use(c->cmd, a);
            if (rc) return rc;
        }
#define ARG(flag)                                                                          \
    (strcmp(a, flag) == 0 ? (i + 1 < argc ? (val = argv[++i], true) : (val = NULL, true))  \
                          : (strncmp(a, flag "=", sizeof flag) == 0 ? (val = a + sizeof flag, true) : false))
        if (strncmp(a, "-D", 2) == 0) {
            char *s = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            pair p;
            int64_t v;
            if (!s || !split_pair(s, &p)) return usage_error("-D takes NAME=VALUE, as in -D H=16%s", "");
            /* the range is the library's to check: it reports it like any error in the model */
            if (!parse_int(p.value, INT64_MIN, INT64_MAX, &v))
                return usage_error("-D %s: the value must be an integer", p.name);
            if (c->ndims == MAX_PAIRS) return usage_error("too many -D options%s", "");
            c->dims[c->ndims++] = (ssmc_dim){p.name, v};
            continue;
        }
        if (ARG("--emit")) {
            c->emit = val;
        } else if (ARG("--batch")) {
            if (!val || !parse_int(val, 1, (int64_t)1 << 31, &c->batch)) return usage_error("--batch takes a positive integer%s", "");
        } else if (ARG("--seqlen")) {
            if (!val || !parse_int(val, 1, (int64_t)1 << 40, &c->T)) return usage_error("--seqlen takes a positive integer%s", "");
        } else if (ARG("--iters")) {
            if (!val || !parse_int(val, 1, 1000000, &c->iters)) return usage_error("--iters takes a positive integer%s", "");
        } else if (ARG("--threads")) {
            int64_t v;
            if (!val || !parse_int(val, 0, 4096, &v)) return usage_error("--threads takes an integer from 0 to 4096%s", "");
            c->threads = (int)v;
        } else if (ARG("--chunk")) {
            int64_t v;
            if (!val || !parse_int(val, 1, 1024, &v)) return usage_error("--chunk takes an integer from 1 to 1024%s", "");
            c->chunk = (int)v;
        } else if (ARG("--seed")) {
            int64_t v;
            if (!val || !parse_int(val, 0, INT64_MAX, &v)) return usage_error("--seed takes a non-negative integer%s", "");
            c->seed = (uint64_t)v;
        } else if (ARG("--device")) {
            if (val && strcmp(val, "interp") == 0) c->device = SSMC_DEVICE_INTERP;
            else if (val && strcmp(val, "cpu") == 0) c->device = SSMC_DEVICE_CPU;
            else if (val && strcmp(val, "cuda") == 0) c->device = SSMC_DEVICE_CUDA;
            else return usage_error("--device takes interp, cpu or cuda%s", "");
        } else if (ARG("--dtype")) {
            if (strcmp(c->cmd, "build") == 0) { /* a list of signatures, checked by ssmc_build */
                if (!val) return usage_error("--dtype takes a list of dtype signatures such as f32,bf16/f32%s", "");
                c->dtypes = val;
            } else if (!dtype_from_name(val, &c->dtype) || c->dtype == SSMC_F64) {
                return usage_error("--dtype takes f32, bf16 or f16%s", "");
            }
        } else if (ARG("--algo")) {
            /* the names only: whether the model may run an algorithm is the library's (one rule everywhere) */
            if (val && strcmp(val, "auto") == 0) c->algo = SSMC_ALGO_AUTO;
            else if (val && strcmp(val, "recurrent") == 0) c->algo = SSMC_ALGO_RECURRENT;
            else if (val && strcmp(val, "chunked") == 0) c->algo = SSMC_ALGO_CHUNKED;
            else if (val && strcmp(val, "scan") == 0) c->algo = SSMC_ALGO_SCAN;
            else return usage_error("--algo takes auto, recurrent, chunked or scan%s", "");
        } else if (ARG("--cu-seqlens")) {
            if (!val) return usage_error("--cu-seqlens takes FILE.npy (int32 or int64 offsets)%s", "");
            c->cu_seqlens = val;
        } else if (ARG("--dout")) {
            pair p;
            if (!val || !split_pair(val, &p)) return usage_error("--dout takes NAME=FILE.npy%s", "");
            if (c->ndouts == MAX_PAIRS) return usage_error("too many %s options", "--dout");
            c->douts[c->ndouts++] = p;
        } else if (ARG("--in") || ARG("--init-state")) {
            bool init = strncmp(a, "--init-state", 12) == 0;
            pair p;
            if (!val || !split_pair(val, &p)) return usage_error("%s takes NAME=FILE.npy", init ? "--init-state" : "--in");
            if ((init ? c->ninits : c->nins) == MAX_PAIRS) return usage_error("too many %s options", a);
            if (init) c->inits[c->ninits++] = p;
            else c->ins[c->nins++] = p;
        } else if (ARG("--out") || ARG("-o")) {
            if (!val) return usage_error("%s takes a directory", a);
            c->out = val;
        } else if (ARG("--target")) {
            if (!val) return usage_error("--target takes a list such as cpu,cuda:sm_90%s", "");
            c->target = val;
        } else if (ARG("--model")) {
            if (!val) return usage_error("--model takes a model name%s", "");
            c->model = val;
        } else if (ARG("--arch")) {
            if (!val) return usage_error("--arch takes a GPU architecture such as sm_90%s", "");
            c->arch = val;
        } else if (strcmp(a, "--verify") == 0) {
            c->verify = true;
        } else if (strcmp(a, "--grad") == 0) {
            c->grad = true;
        } else if (strcmp(a, "--check-finite") == 0) {
            c->check_finite = true;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s'", a);
        } else if (!c->file) {
            c->file = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
#undef ARG
    }
    if (!c->file) return usage_error("missing FILE%s", "");
    return 0;
}



typedef struct tensor {
    ssmc_tensor_info info;
    int64_t shape[SSMC_MAX_RANK + 2]; /* as on disk: with B and T */
    int rank;
    size_t count;
    void *data;      /* in the run dtype */
    double *initial; /* states: the initial value, f64 (for --verify) */
    bool given;      /* inputs/params from --in, states from --init-state */
} tensor;

/* A state without --init-state starts from the model's initial value (its
 * init, or zero); its final state is still written out. */
static unsigned final_only(const tensor *t) { return t->info.role == SSMC_STATE && !t->given ? SSMC_ARG_FINAL_ONLY : 0; }

static int fail(ssmc_ctx *ctx, const char *what)
{
    fputs(ssmc_ctx_error(ctx), stderr);
    if (!*ssmc_ctx_error(ctx)) fprintf(stderr, "error: %s\n", what);
    return 1;
}

static char *read_source(const char *path, size_t *len)
{
    const char *why;
    char *text = read_file_max(path, SSMC_MAX_SOURCE_BYTES, len, &why);
    if (!text)
        fprintf(stderr, "error: cannot read '%s': %s%s\n", path, why,
                strcmp(why, "larger than the size limit") == 0 ? " (a source file holds at most 64 MiB)"
                : strcmp(why, "is a directory") == 0          ? " (expected a source file)"
                                                              : "");
    return text;
}

static ssmc_options options_of(const cli *c)
{
    ssmc_options o = {0};
    o.model = c->model;
    o.dims = c->dims;
    o.ndims = c->ndims;
    o.device = c->device;
    o.algo = c->algo;
    o.threads = c->threads;
    o.cuda_arch = c->arch;
    o.check_finite = c->check_finite;
    o.chunk = c->chunk;
    return o;
}

static int cmd_check_emit(const cli *c, bool emit)
{
    size_t len;
    char *src = read_source(c->file, &len);
    if (!src) return 1;
    ssmc_ctx *ctx = ssmc_ctx_new();
    if (!ctx) return 1;
    ssmc_options o = options_of(c);
    int rc = 0;
    if (!emit) {
        if (ssmc_check(ctx, c->file, src, len, &o) != SSMC_OK) rc = fail(ctx, "check failed");
    } else {
        static const struct {
            const char *name;
            ssmc_emit_kind kind;
        } kinds[] = {{"ast", SSMC_EMIT_AST},   {"ir", SSMC_EMIT_IR},     {"analysis", SSMC_EMIT_ANALYSIS},
                     {"grad", SSMC_EMIT_GRAD}, {"plan", SSMC_EMIT_PLAN}, {"llvm", SSMC_EMIT_LLVM},
                     {"cuda", SSMC_EMIT_CUDA},
                     {"ptx", SSMC_EMIT_PTX}};
        int k = -1;
        for (size_t i = 0; c->emit && i < sizeof kinds / sizeof *kinds; i++)
            if (strcmp(kinds[i].name, c->emit) == 0) k = (int)i;
        if (k < 0) {
            ssmc_ctx_free(ctx);
            free(src);
            return usage_error("--emit takes ast, ir, analysis, grad, plan, llvm, cuda or ptx%s", "");
        }
        ssmc_emit_kind kind = kinds[k].kind;
        if (c->grad && kind != SSMC_EMIT_PLAN && kind != SSMC_EMIT_LLVM && kind != SSMC_EMIT_CUDA && kind != SSMC_EMIT_PTX) {
            ssmc_ctx_free(ctx);
            free(src);
            return usage_error("emit --grad prints the gradients' models: it takes --emit=plan, llvm, cuda or ptx%s", "");
        }
        if (c->grad) kind = (ssmc_emit_kind)(kind | SSMC_EMIT_FOR_GRAD);
        char *text;
        if (ssmc_emit(ctx, c->file, src, len, &o, kind, &text) != SSMC_OK) {
            rc = fail(ctx, "emit failed");
        } else {
            fputs(text, stdout);
            free(text);
        }
    }
    ssmc_ctx_free(ctx);
    free(src);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool mkdir_p(const char *dir)
{
    char buf[4096];
    if (strlen(dir) >= sizeof buf) return false;
    strcpy(buf, dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return false;
        *p = '/';
    }
    return mkdir(buf, 0777) == 0 || errno == EEXIST;
}

/* The sequences of a run: B of length T, or (cu != NULL) the nseq sequences
 * of --cu-seqlens packed along T of a batch of one. */
typedef struct packing {
    int64_t *cu; /* nseq + 1 offsets */
    int64_t nseq;
} packing;

static ssmc_status run_packed(ssmc_model *m, int64_t B, int64_t T, const packing *pk, const ssmc_arg *args, int n)
{
    return pk->cu ? ssmc_run_varlen(m, T, pk->cu, pk->nseq, args, n) : ssmc_run(m, B, T, args, n);
}

/* --cu-seqlens FILE.npy: N + 1 offsets (<i4 or <i8) into *pk, B = 1 and T =
 * the last offset. Whether they rise from 0 is the library's to check (one
 * rule for every caller): the run reports it. */
static bool load_offsets(const cli *c, packing *pk, int64_t *B, int64_t *T)
{
    if (c->batch > 1) {
        fprintf(stderr, "error: --cu-seqlens packs the sequences along T of a batch of one, but --batch is %lld\n",
                (long long)c->batch);
        return false;
    }
    rt_npy f;
    strbuf err = {0};
    if (rt_npy_read(c->cu_seqlens, RT_NPY_ALLOW_INDEX, &f, &err) != SSMC_OK) {
        fprintf(stderr, "error: --cu-seqlens %s\n", sb_cstr(&err));
        sb_free(&err);
        return false;
    }
    sb_free(&err);
    const int64_t *off = f.data;
    const char *why = !f.index                ? "holds floating-point values"
                      : f.rank != 1           ? "is not 1-D"
                      : f.count < 2           ? "has fewer than two offsets (one sequence)"
                      : off[f.count - 1] < 1  ? "ends below 1 (its last offset is T)"
                      : c->T && off[f.count - 1] != c->T ? "does not end at --seqlen"
                                                         : NULL;
    if (why) {
        fprintf(stderr, "error: --cu-seqlens %s: the array %s; expected N + 1 int32 or int64 offsets from 0 to T\n",
                c->cu_seqlens, why);
        rt_npy_free(&f);
        return false;
    }
    pk->cu = f.data; /* taken over from f */
    pk->nseq = (int64_t)f.count - 1;
    *B = 1;
    *T = pk->cu[pk->nseq];
    return true;
}

/* The longest sequence: the --verify tolerance grows with the steps a value runs through. */
static int64_t longest(const packing *pk, int64_t T)
{
    if (!pk->cu) return T;
    int64_t L = 1;
    for (int64_t i = 0; i < pk->nseq; i++)
        if (pk->cu[i + 1] - pk->cu[i] > L) L = pk->cu[i + 1] - pk->cu[i];
    return L;
}

/* Loads the --in / --init-state files, fixing B and T from them where the
 * command line did not. Returns false with a message on any mismatch. */
static bool load_given(const cli *c, ssmc_model *m, rt_npy *files, rt_npy *dfiles, int64_t *B, int64_t *T,
                       int64_t nseq)
{
    int n = ssmc_model_num_tensors(m);
    static const char *const flags[] = {"--in", "--init-state", "--dout"};
    static const char *const not_role[] = {"not an input or a param (initial states go with --init-state)",
                                           "not a state",
                                           "not an output or a state (cotangents are of outputs and final states)"};
    for (int pass = 0; pass < 3; pass++) {
        const pair *ps = pass == 0 ? c->ins : pass == 1 ? c->inits : c->douts;
        int np = pass == 0 ? c->nins : pass == 1 ? c->ninits : c->ndouts;
        rt_npy *fs = pass == 2 ? dfiles : files;
        for (int i = 0; i < np; i++) {
            int k = ssmc_model_find(m, ps[i].name);
            ssmc_tensor_info info;
            if (k < 0) {
                fprintf(stderr, "error: %s %s: model '%s' has no tensor named '%s'\n", flags[pass], ps[i].name,
                        ssmc_model_name(m), ps[i].name);
                return false;
            }
            ssmc_model_tensor(m, k, &info);
            bool ok_role = pass == 0   ? (info.role == SSMC_INPUT || info.role == SSMC_PARAM)
                           : pass == 1 ? info.role == SSMC_STATE
                                       : (info.role == SSMC_OUTPUT || info.role == SSMC_STATE);
            if (!ok_role) {
                fprintf(stderr, "error: %s %s: '%s' is %s\n", flags[pass], ps[i].name, ps[i].name, not_role[pass]);
                return false;
            }
            rt_npy *file = &fs[k];
            if (file->data) {
                fprintf(stderr, "error: '%s' is given twice\n", ps[i].name);
                return false;
            }
            strbuf err = {0};
            if (rt_npy_read(ps[i].value, c->dtype == SSMC_BF16 ? RT_NPY_ALLOW_BF16 : 0, file, &err) != SSMC_OK) {
                fprintf(stderr, "error: %s\n", sb_cstr(&err));
                sb_free(&err);
                return false;
            }
            sb_free(&err);
            /* expected: [B?, T?, shape...] */
            int lead = info.role == SSMC_PARAM ? 0 : info.per_step ? 2 : 1;
            /* an empty B or T would be taken for "not given" below and the run would read past the file's data */
            for (int j = 0; j < lead && j < file->rank; j++) {
                if (file->shape[j] != 0) continue;
                fprintf(stderr, "error: %s: '%s' has an empty %s axis (axis %d is 0); B and T must be at least 1\n",
                        ps[i].value, ps[i].name, j == 0 ? "batch" : "sequence", j);
                return false;
            }
            bool ok = file->rank == lead + info.rank;
            for (int j = 0; ok && j < info.rank; j++) ok = file->shape[lead + j] == info.shape[j];
            bool rows = nseq && lead == 1; /* a state of packed sequences: [N, ...] */
            if (ok && rows) {
                ok = file->shape[0] == nseq;
            } else if (ok && lead >= 1) {
                if (!*B) *B = file->shape[0];
                ok = file->shape[0] == *B;
            }
            if (ok && lead == 2) {
                if (!*T) *T = file->shape[1];
                ok = file->shape[1] == *T;
            }
            if (!ok) {
                strbuf want = {0}, got = {0};
                if (rows) sb_printf(&want, "%lld", (long long)nseq);
                else if (lead >= 1 && !*B) sb_puts(&want, "B");
                else if (lead >= 1) sb_printf(&want, "%lld", (long long)*B);
                if (lead == 2) {
                    if (*T) sb_printf(&want, ", %lld", (long long)*T);
                    else sb_puts(&want, ", T");
                }
                for (int j = 0; j < info.rank; j++) sb_printf(&want, "%s%lld", (j || lead) ? ", " : "", (long long)info.shape[j]);
                for (int j = 0; j < file->rank; j++) sb_printf(&got, "%s%lld", j ? ", " : "", (long long)file->shape[j]);
                fprintf(stderr, "error: %s: '%s' must have shape [%s]%s, the file has [%s]\n", ps[i].value, ps[i].name,
                        sb_cstr(&want), rows ? " (a row per sequence of --cu-seqlens)" : "", sb_cstr(&got));
                sb_free(&want);
                sb_free(&got);
                return false;
            }
        }
    }
    (void)n;
    return true;
}

static void free_tensors(tensor *ts, int n)
{
    for (int i = 0; ts && i < n; i++) {
        free(ts[i].data);
        free(ts[i].initial);
    }
    free(ts);
}

/* Runs the same inputs through the interpreter and prints the relative error
 * of every output and final state. Returns false when one is over tolerance. */
static bool verify(const cli *c, const ssmc_model *m, const char *src, size_t len, tensor *ts, int n, int64_t B,
                   int64_t T, const packing *pk, bool *ok)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = options_of(c);
    o.device = SSMC_DEVICE_INTERP;
    o.algo = SSMC_ALGO_AUTO; /* the oracle runs the recurrence as written, whatever the run under test used */
    o.check_finite = 0;
    ssmc_model *ref = NULL;
    if (!ctx || ssmc_compile(ctx, c->file, src, len, &o, &ref) != SSMC_OK) {
        if (ctx) fail(ctx, "verify: compile failed");
        ssmc_ctx_free(ctx);
        return false;
    }
    ssmc_arg *args = calloc((size_t)n, sizeof *args);
    double **bufs = calloc((size_t)n, sizeof *bufs);
    bool good = args && bufs;
    for (int i = 0; good && i < n; i++) {
        bufs[i] = malloc((ts[i].count ? ts[i].count : 1) * sizeof(double));
        if (!bufs[i]) {
            good = false;
            break;
        }
        for (size_t k = 0; k < ts[i].count; k++)
            bufs[i][k] = ts[i].info.role == SSMC_STATE ? ts[i].initial[k]
                         : ts[i].info.role == SSMC_OUTPUT ? NAN : dtype_get(ts[i].data, c->dtype, k);
        args[i] = (ssmc_arg){ts[i].info.name, SSMC_F64, bufs[i], final_only(&ts[i])};
    }
    if (good && run_packed(ref, B, T, pk, args, n) != SSMC_OK) {
        fail(ctx, "verify: interpreter failed");
        good = false;
    }
    for (int i = 0; good && i < n; i++) {
        if (ts[i].info.role != SSMC_OUTPUT && ts[i].info.role != SSMC_STATE) continue;
        /* the model's reductions and chains (numerics.md) */
        double tol = ssmc_model_tolerance(m, i, c->dtype, longest(pk, T)); /* the model under test's plan */
        double maxref = 0, maxdiff = 0;
        bool finite = true;
        for (size_t k = 0; k < ts[i].count; k++) {
            double r = bufs[i][k], g = dtype_get(ts[i].data, c->dtype, k);
            if (!isfinite(g) || !isfinite(r)) finite = false;
            if (fabs(r) > maxref) maxref = fabs(r);
            if (fabs(g - r) > maxdiff) maxdiff = fabs(g - r);
        }
        double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
        bool pass = finite && rel <= tol;
        if (!pass) *ok = false;
        printf("verify %-6s %-12s rel_err %.3e  (max |ref| %.3e, tol %.1e)  %s\n",
               ts[i].info.role == SSMC_OUTPUT ? "output" : "state", ts[i].info.name, rel, maxref, tol,
               pass ? "ok" : finite ? "FAIL" : "FAIL (non-finite)");
    }
    for (int i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(args);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    return good;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ssmc build FILE -o DIR [--target LIST]: an AOT bundle (ssmc_build). */
static int cmd_build(const cli *c)
{
    if (!c->out) return usage_error("build needs -o DIR%s", "");
    size_t len;
    char *src = read_source(c->file, &len);
    if (!src) return 1;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = options_of(c);
    int rc = 0;
    if (!ctx || ssmc_build(ctx, c->file, src, len, &o, c->target, c->dtypes, c->out) != SSMC_OK)
        rc = ctx ? fail(ctx, "build failed") : 1;
    ssmc_ctx_free(ctx);
    free(src);
    return rc;
}

/* Writes data (count f64 values, shape[rank]) as DIR/<prefix><name>.npy in <f4. */
static bool write_npy(const char *dir, const char *prefix, const char *name, const double *data, size_t count,
                      int rank, const int64_t *shape)
{
    float *f = malloc((count ? count : 1) * sizeof(float));
    char *path = malloc(strlen(dir) + strlen(prefix) + strlen(name) + 8);
    strbuf err = {0};
    ssmc_status s = SSMC_ERR_NOMEM;
    if (f && path) {
        for (size_t k = 0; k < count; k++) f[k] = (float)data[k];
        sprintf(path, "%s/%s%s.npy", dir, prefix, name);
        s = rt_npy_write_f32(path, f, rank, shape, &err);
    }
    if (s != SSMC_OK) fprintf(stderr, "error: %s\n", err.len ? sb_cstr(&err) : "out of memory");
    sb_free(&err);
    free(f);
    free(path);
    return s == SSMC_OK;
}

/* The gradients of one model and tape: bufs[i] f64 for every input, param and
 * state; vals: the inputs and params; cot[i]: the cotangents of outputs and
 * states (f64). */
static bool backward_into(ssmc_model *m, ssmc_ctx *ctx, const ssmc_tape *tape, const tensor *ts, int n,
                          const ssmc_arg *vals, int nv, double *const *cot, double **bufs)
{
    ssmc_arg *douts = calloc((size_t)n, sizeof *douts), *grads = calloc((size_t)n, sizeof *grads);
    int nd = 0, ng = 0;
    bool ok = douts && grads;
    for (int i = 0; ok && i < n; i++) {
        ssmc_role r = ts[i].info.role;
        if (r == SSMC_OUTPUT || r == SSMC_STATE) douts[nd++] = (ssmc_arg){ts[i].info.name, SSMC_F64, cot[i], 0};
        if (r != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){ts[i].info.name, SSMC_F64, bufs[i], 0};
    }
    if (ok && ssmc_backward(m, tape, vals, nv, douts, nd, grads, ng) != SSMC_OK) ok = false, fail(ctx, "backward failed");
    free(douts);
    free(grads);
    return ok;
}

/* run --grad after the training forward: the cotangents (--dout files; else
 * drawn from the seeded generator for outputs, zero for final states), the
 * backward, a line per gradient, --verify against the interpreter's
 * gradients, --out DIR/grad_<name>.npy. */
static bool grad_step(const cli *c, ssmc_model *m, ssmc_ctx *ctx, const ssmc_tape *tape, tensor *ts, int n,
                      const rt_npy *dfiles, const char *src, size_t len, int64_t B, int64_t T, const packing *pk,
                      bool *pass)
{
    double **cot = calloc((size_t)n, sizeof *cot), **grads = calloc((size_t)n, sizeof *grads);
    double **refg = calloc((size_t)n, sizeof *refg);
    ssmc_arg *vals = calloc((size_t)n, sizeof *vals), *rvals = calloc((size_t)n, sizeof *rvals);
    double **rbufs = calloc((size_t)n, sizeof *rbufs);
    bool ok = cot && grads && refg && vals && rvals && rbufs;
    int nv = 0;
    uint64_t rng = c->seed * 0x2545f4914f6cdd1dull + 0x9e3779b97f4a7c15ull; /* a stream apart from the inputs' */
    for (int i = 0; ok && i < n; i++) {
        const tensor *t = &ts[i];
        size_t cnt = t->count ? t->count : 1;
        if (!(cot[i] = calloc(cnt, sizeof(double))) || !(grads[i] = calloc(cnt, sizeof(double)))) ok = false;
        if (!ok) break;
        if (dfiles[i].data)
            rt_npy_convert(&dfiles[i], SSMC_F64, cot[i]);
        else if (t->info.role == SSMC_OUTPUT)
            for (size_t k = 0; k < t->count; k++) cot[i][k] = uniform_pm1(&rng);
        for (size_t k = 0; k < t->count; k++) grads[i][k] = NAN; /* poison */
        if (t->info.role == SSMC_INPUT || t->info.role == SSMC_PARAM)
            vals[nv++] = (ssmc_arg){t->info.name, c->dtype, t->data, 0};
    }
    double s0 = now_s();
    ok = ok && backward_into(m, ctx, tape, ts, n, vals, nv, cot, grads);
    double dt = now_s() - s0;
    if (ok) printf("backward %.3f ms\n", dt * 1e3);
    for (int i = 0; ok && i < n; i++) {
        if (ts[i].info.role == SSMC_OUTPUT) continue;
        double sum = 0, amax = 0;
        for (size_t k = 0; k < ts[i].count; k++) {
            sum += grads[i][k];
            if (fabs(grads[i][k]) > amax || isnan(grads[i][k])) amax = fabs(grads[i][k]);
        }
        printf("  grad   %-12s [", ts[i].info.name);
        for (int j = 0; j < ts[i].rank; j++) printf("%s%lld", j ? ", " : "", (long long)ts[i].shape[j]);
        printf("]  sum %.6g  max|x| %.6g\n", sum, amax);
    }
    if (ok && c->verify) {
        /* the interpreter's gradients from the same inputs, initial states and cotangents */
        ssmc_ctx *rctx = ssmc_ctx_new();
        ssmc_options o = options_of(c);
        o.device = SSMC_DEVICE_INTERP;
        o.check_finite = 0;
        ssmc_model *ref = NULL;
        ssmc_tape *rtape = NULL;
        ok = rctx && ssmc_compile(rctx, c->file, src, len, &o, &ref) == SSMC_OK;
        if (!ok && rctx) fail(rctx, "verify: compile failed");
        ssmc_arg *rargs = calloc((size_t)n, sizeof *rargs);
        int nrv = 0;
        ok = ok && rargs;
        for (int i = 0; ok && i < n; i++) {
            const tensor *t = &ts[i];
            size_t cnt = t->count ? t->count : 1;
            if (!(rbufs[i] = malloc(cnt * sizeof(double))) || !(refg[i] = malloc(cnt * sizeof(double)))) ok = false;
            for (size_t k = 0; ok && k < t->count; k++)
                rbufs[i][k] = t->info.role == SSMC_STATE ? t->initial[k]
                              : t->info.role == SSMC_OUTPUT ? NAN : dtype_get(t->data, c->dtype, k);
            if (!ok) break;
            rargs[i] = (ssmc_arg){t->info.name, SSMC_F64, rbufs[i], final_only(t)}; /* as the run had them */
            if (t->info.role == SSMC_INPUT || t->info.role == SSMC_PARAM) rvals[nrv++] = rargs[i];
        }
        if (ok && (pk->cu ? ssmc_forward_train_varlen(ref, T, pk->cu, pk->nseq, rargs, n, &rtape)
                          : ssmc_forward_train(ref, B, T, rargs, n, &rtape)) != SSMC_OK) {
            fail(rctx, "verify: interpreter failed");
            ok = false;
        }
        ok = ok && backward_into(ref, rctx, rtape, ts, n, rvals, nrv, cot, refg);
        ssmc_dtype ad = ssmc_model_arith_dtype(m, c->dtype); /* a chunked CUDA run: its cores' bf16 */
        double tol = c->device == SSMC_DEVICE_INTERP ? 1e-12 : ad == SSMC_F32 ? 1e-4 : ad == SSMC_F16 ? 3e-2 : 6e-2;
        for (int i = 0; ok && i < n; i++) {
            if (ts[i].info.role == SSMC_OUTPUT) continue;
            double maxref = 0, maxdiff = 0;
            bool finite = true;
            for (size_t k = 0; k < ts[i].count; k++) {
                double r = refg[i][k], g = grads[i][k];
                if (!isfinite(g) || !isfinite(r)) finite = false;
                if (fabs(r) > maxref) maxref = fabs(r);
                if (fabs(g - r) > maxdiff) maxdiff = fabs(g - r);
            }
            double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
            bool good = finite && rel <= tol;
            if (!good) *pass = false;
            printf("verify grad   %-12s rel_err %.3e  (max |ref| %.3e, tol %.0e)  %s\n", ts[i].info.name, rel, maxref,
                   tol, good ? "ok" : finite ? "FAIL" : "FAIL (non-finite)");
        }
        free(rargs);
        ssmc_tape_free(rtape);
        ssmc_model_free(ref);
        ssmc_ctx_free(rctx);
    }
    for (int i = 0; ok && c->out && i < n; i++)
        if (ts[i].info.role != SSMC_OUTPUT)
            ok = write_npy(c->out, "grad_", ts[i].info.name, grads[i], ts[i].count, ts[i].rank, ts[i].shape);
    for (int i = 0; i < n; i++) {
        if (cot) free(cot[i]);
        if (grads) free(grads[i]);
        if (refg) free(refg[i]);
        if (rbufs) free(rbufs[i]);
    }
    free(cot);
    free(grads);
    free(refg);
    free(rbufs);
    free(vals);
    free(rvals);
    return ok;
}

/* bench on the GPU: the kernels timed on tensors already on the device
 * (ssmc_run_device between two events; SPEC §5, `bench`), the copies in and
 * out timed once, apart. Every state given starts each run from its initial
 * value (a device-to-device copy outside the timed span). The outputs come
 * back to ts[] for --verify and --out. */
static bool bench_device(ssmc_ctx *ctx, ssmc_model *m, tensor *ts, const ssmc_arg *args, int n, int64_t B, int64_t T,
                         const packing *pk, int64_t iters, ssmc_dtype dt, double *times, double *in_ms, double *out_ms)
{
    strbuf err = {0};
    rt_cuda *gpu = NULL;
    CUevent e0 = NULL, e1 = NULL;
    CUdeviceptr *dp = calloc((size_t)n + 1, sizeof *dp), *init = calloc((size_t)n + 1, sizeof *init);
    ssmc_arg *dargs = calloc((size_t)n + 1, sizeof *dargs);
    bool ok = dp && init && dargs && rt_cuda_open(&gpu, &err) == SSMC_OK && rt_cuda_event_new(gpu, &e0, &err) == SSMC_OK &&
              rt_cuda_event_new(gpu, &e1, &err) == SSMC_OK;
    size_t *bytes = ok ? calloc((size_t)n + 1, sizeof *bytes) : NULL;
    ok = ok && bytes;
    for (int i = 0; ok && i < n; i++) {
        bytes[i] = (ts[i].count ? ts[i].count : 1) * dtype_size(dt);
        ok = rt_cuda_alloc(gpu, bytes[i], &dp[i], &err) == SSMC_OK;
        if (ok && ts[i].info.role == SSMC_STATE && !(args[i].flags & SSMC_ARG_FINAL_ONLY))
            ok = rt_cuda_alloc(gpu, bytes[i], &init[i], &err) == SSMC_OK;
        if (ok && ts[i].info.role == SSMC_OUTPUT) ok = rt_cuda_memset(gpu, dp[i], 0xff, bytes[i], &err) == SSMC_OK; /* NaN */
        dargs[i] = (ssmc_arg){args[i].name, args[i].dtype, (void *)(uintptr_t)dp[i], args[i].flags};
    }
    double t0 = now_s();
    for (int i = 0; ok && i < n; i++)
        if (ts[i].info.role != SSMC_OUTPUT) ok = rt_cuda_htod(gpu, init[i] ? init[i] : dp[i], ts[i].data, bytes[i], &err) == SSMC_OK;
    ok = ok && rt_cuda_sync(gpu, &err) == SSMC_OK;
    *in_ms = (now_s() - t0) * 1e3;
    for (int64_t it = 0; ok && it <= iters; it++) { /* the first run is a warm-up */
        for (int i = 0; ok && i < n; i++)
            if (init[i]) ok = rt_cuda_dtod(gpu, dp[i], init[i], bytes[i], &err) == SSMC_OK;
        float ms = 0;
        ok = ok && rt_cuda_event_record(gpu, e0, NULL, &err) == SSMC_OK;
        if (ok && (pk->cu ? ssmc_run_varlen_device(m, T, pk->cu, pk->nseq, dargs, n, NULL)
                          : ssmc_run_device(m, B, T, dargs, n, NULL)) != SSMC_OK) {
            sb_puts(&err, ssmc_ctx_error(ctx));
            ok = false;
        }
        ok = ok && rt_cuda_event_record(gpu, e1, NULL, &err) == SSMC_OK && rt_cuda_event_sync(gpu, e1, &err) == SSMC_OK &&
             rt_cuda_event_elapsed(gpu, e0, e1, &ms, &err) == SSMC_OK;
        if (ok && it > 0) times[it - 1] = ms * 1e-3;
    }
    t0 = now_s();
    for (int i = 0; ok && i < n; i++)
        if (ts[i].info.role == SSMC_OUTPUT || ts[i].info.role == SSMC_STATE)
            ok = rt_cuda_dtoh(gpu, ts[i].data, dp[i], bytes[i], &err) == SSMC_OK;
    *out_ms = (now_s() - t0) * 1e3;
    if (!ok) fprintf(stderr, "error: bench on the GPU: %s\n", err.len ? sb_cstr(&err) : "out of memory");
    strbuf ignore = {0};
    for (int i = 0; gpu && i < n; i++) {
        if (dp[i]) rt_cuda_free(gpu, dp[i], &ignore);
        if (init[i]) rt_cuda_free(gpu, init[i], &ignore);
    }
    if (e0) rt_cuda_event_free(gpu, e0, &ignore);
    if (e1) rt_cuda_event_free(gpu, e1, &ignore);
    rt_cuda_close(gpu);
    sb_free(&ignore);
    sb_free(&err);
    free(bytes);
    free(dp);
    free(init);
    free(dargs);
    return ok;
}

static int cmd_run(const cli *c, bool bench)
{
    size_t len;
    char *src = read_source(c->file, &len);
    if (!src) return 1;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = options_of(c);
    ssmc_model *m = NULL;
    double t0 = now_s();
    if (!ctx || ssmc_compile(ctx, c->file, src, len, &o, &m) != SSMC_OK) {
        int rc = ctx ? fail(ctx, "compile failed") : 1;
        ssmc_ctx_free(ctx);
        free(src);
        return rc;
    }
    double compile_s = now_s() - t0;
    int n = ssmc_model_num_tensors(m);
    int rc = 1;
    tensor *ts = calloc((size_t)n, sizeof *ts);
    rt_npy *files = calloc((size_t)n, sizeof *files), *dfiles = calloc((size_t)n, sizeof *dfiles);
    ssmc_arg *args = calloc((size_t)n, sizeof *args);
    ssmc_tape *tape = NULL;
    int64_t B = c->batch, T = c->T;
    packing pk = {0};
    if (bench && c->grad) {
        rc = usage_error("--grad is for run, not bench%s", "");
        goto done;
    }
    if (c->ndouts && !c->grad) {
        rc = usage_error("--dout gives cotangents for --grad%s", "");
        goto done;
    }
    if (c->cu_seqlens && !load_offsets(c, &pk, &B, &T)) goto done;
    if (!ts || !files || !dfiles || !args || !load_given(c, m, files, dfiles, &B, &T, pk.nseq)) goto done;
    if (!B) B = 1;
    if (!T) T = 16;
    uint64_t rng = c->seed * 0x2545f4914f6cdd1dull + 1;
    for (int i = 0; i < n; i++) {
        tensor *t = &ts[i];
        ssmc_model_tensor(m, i, &t->info);
        if (t->info.role != SSMC_PARAM) t->shape[t->rank++] = t->info.role == SSMC_STATE && pk.cu ? pk.nseq : B;
        if (t->info.per_step) t->shape[t->rank++] = T;
        size_t count = 1;
        bool over = false;
        for (int j = 0; j < t->rank; j++) over |= mul_overflows(count, (size_t)t->shape[j], &count);
        for (int j = 0; j < t->info.rank; j++) {
            t->shape[t->rank++] = t->info.shape[j];
            over |= mul_overflows(count, (size_t)t->info.shape[j], &count);
        }
        if (over || count > ((size_t)1 << 34)) {
            fprintf(stderr, "error: tensor '%s' is too large for batch %lld and seqlen %lld\n", t->info.name,
                    (long long)B, (long long)T);
            goto done;
        }
        t->count = count;
        /* 64-byte aligned: the CPU backend would otherwise run on aligned copies
         * of states and outputs when several threads share them */
        t->data = aligned_alloc(64, ((count ? count : 1) * dtype_size(c->dtype) + 63) / 64 * 64);
        if (!t->data) {
            fprintf(stderr, "error: out of memory for tensor '%s'\n", t->info.name);
            goto done;
        }
        bool from_file = files[i].data != NULL;
        if (t->info.role == SSMC_OUTPUT) {
            for (size_t k = 0; k < count; k++) dtype_set(t->data, c->dtype, k, NAN); /* poison */
        } else if (from_file) {
            rt_npy_convert(&files[i], c->dtype, t->data);
        } else if (t->info.role == SSMC_STATE) {
            for (size_t k = 0; k < count; k++) dtype_set(t->data, c->dtype, k, 0.0);
        } else {
            for (size_t k = 0; k < count; k++) dtype_set(t->data, c->dtype, k, uniform_pm1(&rng));
        }
        if (t->info.role == SSMC_STATE) {
            t->initial = malloc((count ? count : 1) * sizeof(double));
            if (!t->initial) goto done;
            for (size_t k = 0; k < count; k++) t->initial[k] = dtype_get(t->data, c->dtype, k);
        }
        t->given = from_file;
        args[i] = (ssmc_arg){t->info.name, c->dtype, t->data, final_only(t)};
    }

    int64_t iters = bench ? c->iters : 1;
    double *times = calloc((size_t)iters, sizeof *times);
    if (!times) goto done;
    bool on_device = bench && c->device == SSMC_DEVICE_CUDA;
    double in_ms = 0, out_ms = 0;
    if (on_device && !bench_device(ctx, m, ts, args, n, B, T, &pk, iters, c->dtype, times, &in_ms, &out_ms)) {
        free(times);
        goto done;
    }
    for (int64_t it = 0; !on_device && it < iters + (bench ? 1 : 0); it++) {
        for (int i = 0; i < n; i++) /* every run starts from the initial state */
            if (ts[i].info.role == SSMC_STATE)
                for (size_t k = 0; k < ts[i].count; k++) dtype_set(ts[i].data, c->dtype, k, ts[i].initial[k]);
        double s0 = now_s();
        ssmc_tape_free(tape); /* run's one iteration: none yet */
        tape = NULL;
        ssmc_status st = !c->grad ? run_packed(m, B, T, &pk, args, n)
                         : pk.cu  ? ssmc_forward_train_varlen(m, T, pk.cu, pk.nseq, args, n, &tape)
                                  : ssmc_forward_train(m, B, T, args, n, &tape);
        if (st != SSMC_OK) {
            free(times);
            fail(ctx, "run failed");
            goto done;
        }
        double dt = now_s() - s0;
        if (!bench) times[0] = dt;
        else if (it > 0) times[it - 1] = dt; /* the first run is a warm-up */
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    double median = times[iters / 2];
    free(times);
    static const char *devs[] = {"interp", "cpu", "cuda"};
    static const char *dts[] = {"f32", "f16", "bf16", "f64"};
    printf("model %s  device %s  dtype %s  batch %lld  seqlen %lld", ssmc_model_name(m), devs[c->device],
           dts[c->dtype], (long long)B, (long long)T);
    if (pk.cu) printf("  sequences %lld", (long long)pk.nseq);
    printf("  compile %.2f ms  run %.3f ms%s\n", compile_s * 1e3, median * 1e3, bench ? " (median)" : "");
    if (bench) {
        double bytes = 0;
        for (int i = 0; i < n; i++)
            bytes += (double)ts[i].count * (double)dtype_size(c->dtype) * (ts[i].info.role == SSMC_STATE ? 2 : 1);
        printf("%-10s %-10s %-10s %12s %12s %12s", "model", "device", "dtype", "compile_ms", "median_ms", "GB/s");
        printf(on_device ? " %12s %12s\n" : "\n", "copy_in_ms", "copy_out_ms");
        printf("%-10s %-10s %-10s %12.2f %12.4f %12.2f", ssmc_model_name(m), devs[c->device], dts[c->dtype],
               compile_s * 1e3, median * 1e3, bytes / median * 1e-9);
        if (on_device) printf(" %12.3f %12.3f", in_ms, out_ms);
        /* what the median holds, honestly: on the CPU and the interpreter the
         * device's memory is the host's, and ssmc_run converts what is not in
         * its working dtype inside the timed span */
        printf("\n%s\n", on_device                        ? "timed: the kernels on tensors already on the GPU (events around "
                                                            "ssmc_run_device); the copies in and out once, apart"
                         : c->device == SSMC_DEVICE_INTERP ? "timed: ssmc_run on host tensors (the device's own memory), "
                                                            "their conversion to and from f64 included"
                         : c->dtype != SSMC_F32            ? "timed: ssmc_run on host tensors (the device's own memory), "
                                                            "their conversion to and from f32 included"
                                                          : "timed: ssmc_run on host tensors (the device's own memory; "
                                                            "f32, used in place)");
    }
    for (int i = 0; !bench && i < n; i++) {
        if (ts[i].info.role != SSMC_OUTPUT && ts[i].info.role != SSMC_STATE) continue;
        double sum = 0, amax = 0;
        for (size_t k = 0; k < ts[i].count; k++) {
            double v = dtype_get(ts[i].data, c->dtype, k);
            sum += v;
            if (fabs(v) > amax || isnan(v)) amax = fabs(v);
        }
        printf("  %-6s %-12s [", ts[i].info.role == SSMC_OUTPUT ? "output" : "state", ts[i].info.name);
        for (int j = 0; j < ts[i].rank; j++) printf("%s%lld", j ? ", " : "", (long long)ts[i].shape[j]);
        printf("]  sum %.6g  max|x| %.6g\n", sum, amax);
    }
    bool ok = true;
    if (c->verify && !verify(c, m, src, len, ts, n, B, T, &pk, &ok)) goto done;
    if (c->out) {
        if (!mkdir_p(c->out)) {
            fprintf(stderr, "error: cannot create directory '%s': %s\n", c->out, strerror(errno));
            goto done;
        }
        for (int i = 0; i < n; i++) {
            if (ts[i].info.role != SSMC_OUTPUT && ts[i].info.role != SSMC_STATE) continue;
            float *f = malloc((ts[i].count ? ts[i].count : 1) * sizeof(float));
            if (!f) goto done;
            for (size_t k = 0; k < ts[i].count; k++) f[k] = (float)dtype_get(ts[i].data, c->dtype, k);
            char *path = malloc(strlen(c->out) + strlen(ts[i].info.name) + 8);
            strbuf err = {0};
            ssmc_status s = path ? (sprintf(path, "%s/%s.npy", c->out, ts[i].info.name),
                                    rt_npy_write_f32(path, f, ts[i].rank, ts[i].shape, &err))
                                 : SSMC_ERR_NOMEM;
            free(f);
            free(path);
            if (s != SSMC_OK) {
                fprintf(stderr, "error: %s\n", err.len ? sb_cstr(&err) : "out of memory");
                sb_free(&err);
                goto done;
            }
            sb_free(&err);
        }
    }
    if (c->grad && !grad_step(c, m, ctx, tape, ts, n, dfiles, src, len, B, T, &pk, &ok)) goto done;
    rc = ok ? 0 : 1;
done:
    free(pk.cu);
    for (int i = 0; files && i < n; i++) rt_npy_free(&files[i]);
    for (int i = 0; dfiles && i < n; i++) rt_npy_free(&dfiles[i]);
    free(files);
    free(dfiles);
    ssmc_tape_free(tape);
    free(args);
    free_tensors(ts, n);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(src);
    return rc;
}

int main(int argc, char **argv)
{
    /* help and version before anything else is parsed: they always work */
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0))
        return help(argc >= 3 ? argv[2] : NULL);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) return version();
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            for (size_t k = 0; k < NCOMMANDS; k++)
                if (strcmp(commands[k].name, argv[1]) == 0) return help(argv[1]);
            return usage_error("unknown command '%s'", argv[1]);
        }
    cli c = {0};
    int rc = parse_args(argc, argv, &c);
    if (rc) return rc;
    if (strcmp(c.cmd, "check") == 0) return cmd_check_emit(&c, false);
    if (strcmp(c.cmd, "emit") == 0) {
        if (!c.emit) return usage_error("emit needs --emit=ast|ir|analysis|grad|plan|llvm|cuda|ptx%s", "");
        return cmd_check_emit(&c, true);
    }
    if (strcmp(c.cmd, "run") == 0) return cmd_run(&c, false);
    if (strcmp(c.cmd, "bench") == 0) return cmd_run(&c, true);
    if (strcmp(c.cmd, "build") == 0) return cmd_build(&c);
    return usage_error("unknown command '%s'", c.cmd);
}
