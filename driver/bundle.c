/* bundle.c: `ssmc build` (ssmc_build in ssmc.h): an ahead-of-time bundle of one
 * model for the CPU.
 *
 * The kernel is the CPU backend's (codegen/llvm.c), written as a PIC object
 * file; a generated C wrapper gives it a C ABI (DIR/<model>.h: a struct of
 * named f32 tensor pointers and <model>_run(batch, T, tensors, threads)) and
 * splits its work items over POSIX threads. The system C compiler (cc, or $CC)
 * compiles the wrapper and links DIR/lib<model>.so; `ar` (or $AR) makes
 * DIR/lib<model>.a. Nothing of LLVM or ssmc is linked: a bundle needs only
 * libc, libm and pthreads. Intermediate files live in a temporary directory
 * inside DIR, removed before returning; the tools' output is kept for the
 * diagnostic when one fails.
 *
 * Targets other than the CPU are refused with a message (the CUDA backend has
 * no AOT hook yet). */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bundle.h"
#include "pipeline.h"
#include "codegen/llvm.h"

extern char **environ;

/* x86-64 levels a bundle may be built for besides the build machine's own CPU;
 * LLVM names them so, and every x86-64 host knows them. */
static const char *const cpu_levels[] = {"x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"};

/* Parses the target list: at most one CPU target. *cpu: NULL for the host. */
static ssmc_status parse_targets(const char *targets, diag *d, bool *want_cpu, const char **cpu, char *buf,
                                 size_t cap)
{
    *want_cpu = false;
    *cpu = NULL;
    if (!targets) targets = "cpu";
    if (strlen(targets) >= cap) {
        diag_error(d, "ssmc build: the target list is too long");
        return SSMC_ERR_ARG;
    }
    strcpy(buf, targets);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "cpu") == 0 || strncmp(t, "cpu:", 4) == 0) {
            if (*want_cpu) {
                diag_error(d, "ssmc build: more than one cpu target in '%s'", targets);
                return SSMC_ERR_ARG;
            }
            *want_cpu = true;
            if (t[3] == ':') {
                size_t i = 0;
                while (i < sizeof cpu_levels / sizeof *cpu_levels && strcmp(cpu_levels[i], t + 4) != 0) i++;
                if (i == sizeof cpu_levels / sizeof *cpu_levels) {
                    diag_error(d, "ssmc build: unknown cpu target '%s' (use cpu, cpu:x86-64, cpu:x86-64-v2, "
                                  "cpu:x86-64-v3 or cpu:x86-64-v4)", t);
                    return SSMC_ERR_ARG;
                }
                *cpu = cpu_levels[i];
            }
        } else if (strncmp(t, "cuda", 4) == 0) {
            diag_error(d, "ssmc build: target '%s' is not supported yet: bundles hold CPU code only (the cuda "
                          "backend compiles at load time; use --device cuda with ssmc run)", t);
            return SSMC_ERR_UNSUPPORTED;
        } else {
            diag_error(d, "ssmc build: unknown target '%s' (targets: cpu, cpu:x86-64-v2|v3|v4)", t);
            return SSMC_ERR_ARG;
        }
    }
    if (!*want_cpu) {
        diag_error(d, "ssmc build: no target given");
        return SSMC_ERR_ARG;
    }
    return SSMC_OK;
}

static bool mkdir_parents(const char *dir)
{
    size_t n = strlen(dir);
    char *buf = malloc(n + 1);
    if (!buf) return false;
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            free(buf);
            return false;
        }
        *p = '/';
    }
    bool ok = mkdir(buf, 0777) == 0 || errno == EEXIST;
    free(buf);
    return ok;
}

/* ---- generated text ---- */

/* A tensor's field in the header: <model>_<tensor>. Bare tensor names met
 * macros (`linux` and `unix` are predefined in GNU C, `NULL`, `errno` and
 * `stdin` come with libc, POSIX headers define `st_mode`...) and keywords;
 * with the model's name in front, every name the header declares starts with
 * it, as <model>_tensors and <model>_run do. The comment beside each field
 * gives the tensor's name in the model. */
static void field(strbuf *out, const ir_model *m, const char *name) { sb_printf(out, "%s_%s", m->name, name); }

static void upper(strbuf *out, const char *s)
{
    for (; *s; s++) sb_putc(out, (char)(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s));
}

static void shape_text(strbuf *out, const ir_model *m, const ir_tensor *t)
{
    sb_putc(out, '[');
    bool first = true;
    if (t->kind != IR_PARAM) {
        sb_puts(out, "B");
        first = false;
    }
    if (t->per_step) sb_puts(out, ", T");
    for (int i = 0; i < t->rank; i++) {
        sb_printf(out, "%s%s = %lld", first ? "" : ", ", m->dims[t->dims[i]].name, (long long)m->dims[t->dims[i]].value);
        first = false;
    }
    sb_putc(out, ']');
}

static void gen_header(strbuf *h, const ir_model *m, const char *file, const char *cpu)
{
    const char *name = m->name;
    sb_printf(h, "/* %s.h: the model `%s` of %s, compiled ahead of time by ssmc %s for the CPU (%s).\n", name, name,
              file, SSMC_VERSION, cpu ? cpu : "the build machine's own CPU");
    sb_printf(h, " * Link with lib%s.so or lib%s.a, and -lm -lpthread.\n *\n", name, name);
    sb_puts(h, " * Dims, fixed when the bundle was built:");
    for (uint32_t i = 0; i < m->ndims; i++) sb_printf(h, "%s %s = %lld", i ? "," : "", m->dims[i].name,
                                                      (long long)m->dims[i].value);
    sb_puts(h, ".\n *\n"
               " * Every tensor is f32, row-major, and must not overlap any other: an input is\n"
               " * [B, T, ...], a param as declared, a state [B, ...], an output [B, T, ...],\n"
               " * with B the batch and T the sequence length of the call.\n");
    sb_printf(h, " * The tensor `x` of the model is the field %s_x of %s_tensors: every name\n"
                 " * declared here starts with the model's, so none meets a macro or a keyword.\n */\n",
              name, name);
    strbuf guard = {0};
    sb_puts(&guard, "SSMC_BUNDLE_");
    upper(&guard, name);
    sb_puts(&guard, "_H");
    sb_printf(h, "#ifndef %s\n#define %s\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
              sb_cstr(&guard), sb_cstr(&guard));
    sb_free(&guard);
    for (uint32_t i = 0; i < m->ndims; i++) {
        sb_puts(h, "#define ");
        upper(h, name);
        sb_printf(h, "_DIM_%s %lld\n", m->dims[i].name, (long long)m->dims[i].value);
    }
    sb_printf(h, "\n/* The tensors of one call, by name. */\ntypedef struct %s_tensors {\n", name);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET || t->hidden) continue;
        bool in = t->kind == IR_INPUT || t->kind == IR_PARAM;
        sb_printf(h, "    %sfloat *", in ? "const " : "");
        field(h, m, t->name);
        sb_printf(h, "; /* %s %s ", ir_kind_names[t->kind], t->name);
        shape_text(h, m, t);
        if (t->kind == IR_STATE && ir_find_init(m, (int)i))
            sb_puts(h, ": the initial state, overwritten with the final state; NULL: the model's init, final state "
                       "dropped");
        else if (t->kind == IR_STATE)
            sb_puts(h, ": the initial state, overwritten with the final state; NULL: zeros, final state dropped");
        else if (t->kind == IR_OUTPUT)
            sb_puts(h, "; NULL: not computed");
        else
            sb_puts(h, "; required");
        sb_puts(h, " */\n");
    }
    sb_printf(h, "} %s_tensors;\n\n", name);
    sb_puts(h, "#define ");
    upper(h, name);
    sb_puts(h, "_ERR_ARG 1    /* batch or T below 1, a missing input or param, sizes that overflow */\n#define ");
    upper(h, name);
    sb_puts(h, "_ERR_NOMEM 2  /* memory for scratch or a zero state could not be allocated */\n\n");
    sb_printf(h,
              "/* Runs the model over `batch` sequences of `T` steps on up to `threads`\n"
              " * threads (0: one per CPU this process may use; 1: the calling thread only).\n"
              " * When they use every CPU, threads other than the caller are pinned to CPUs\n"
              " * of their own, not the caller's (SSMC_PIN=0 in the environment: not\n"
              " * pinned). Returns 0 or an error above. Any number of calls may run at once. */\n"
              "int %s_run(int64_t batch, int64_t T, const %s_tensors *t, int threads);\n\n"
              "#ifdef __cplusplus\n}\n#endif\n#endif\n",
              name, name);
}

static void gen_wrapper(strbuf *c, const ir_model *m, const char *symbol, const llvm_kernel_shape *shape)
{
    const char *name = m->name;
    sb_printf(c, "/* generated by ssmc %s: the C ABI of %s.h around the kernel %s */\n", SSMC_VERSION, name, symbol);
    sb_printf(c, "#define _GNU_SOURCE 1\n#include <pthread.h>\n#include <sched.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n\n"
                 "#include \"%s.h\"\n\n",
              name);
    sb_puts(c, "typedef struct kargs { int64_t T; float *const *tensors; const unsigned char *fresh; } kargs;\n");
    sb_printf(c, "void %s(const kargs *a, int64_t item_begin, int64_t item_end, float *scratch);\n\n", symbol);
    /* each thread's scratch in pages of its own (llvm.h, scratch_stride) */
    sb_printf(c, "enum { NTENSORS = %u, SCRATCH = %lld, SCRATCH_ALIGN = %d };\n#define ITEMS_PER_SEQ ((int64_t)%lld)\n\n",
              m->ntensors ? m->ntensors : 1, (long long)shape->scratch_stride,
              (int)(SCRATCH_PAGE_FLOATS * sizeof(float)), (long long)shape->items_per_seq);
    sb_puts(c, "typedef struct job { const kargs *a; int64_t begin, end; float *scratch; } job;\n\n");
    sb_printf(c, "static void *work(void *p)\n{\n    job *j = p;\n    %s(j->a, j->begin, j->end, j->scratch);\n"
                 "    return NULL;\n}\n\n",
              symbol);
    sb_puts(c, "/* n times k elements, or -1 when that overflows */\n"
               "static int64_t elems(int64_t n, int64_t k)\n{\n"
               "    return n > 0 && k > 0 && n > INT64_MAX / 4 / k ? -1 : n * k;\n}\n\n");
    sb_printf(c, "int %s_run(int64_t batch, int64_t T, const %s_tensors *t, int threads)\n{\n", name, name);
    sb_puts(c, "    if (!t || batch < 1 || T < 1) return 1;\n"
               "    float *ptrs[NTENSORS] = {0}, *owned[NTENSORS] = {0};\n"
               "    unsigned char fresh[NTENSORS] = {0}; /* a state given no initial value */\n"
               "    int rc = 0;\n"
               "    int64_t items = batch * ITEMS_PER_SEQ;\n"
               "    cpu_set_t allowed;\n"
               "    int ncpu = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 0;\n"
               "    if (threads <= 0) {\n"
               "        long n = ncpu > 0 ? ncpu : sysconf(_SC_NPROCESSORS_ONLN);\n"
               "        threads = n > 0 ? (int)n : 1;\n"
               "    }\n"
               "    if (threads > items) threads = (int)items;\n"
               "    /* with every CPU used, threads 1.. each get a CPU of their own, never the\n"
               "     * caller's: left to the scheduler, a new thread may start on the caller's\n"
               "     * busy CPU and share it for milliseconds. Off with SSMC_PIN=0. */\n"
               "    const char *pin_env = getenv(\"SSMC_PIN\");\n"
               "    int pin = threads > 1 && threads == ncpu && !(pin_env && strcmp(pin_env, \"0\") == 0);\n"
               "    int here = sched_getcpu(), next_cpu = 0;\n");
    sb_puts(c, "    /* threads would share the cache lines at the item edges of a misaligned\n"
               "     * state at every step: for a long run an aligned copy costs far less */\n"
               "    int aligned_copies = threads > 1 && T >= 16;\n");
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        strbuf f = {0};
        field(&f, m, t->name);
        if (t->hidden) /* a state of passes/lag.c: not in the struct, always from zeros */
            sb_printf(c, "    ptrs[%u] = NULL;\n", i);
        else
            sb_printf(c, "    ptrs[%u] = (float *)(uintptr_t)t->%s;\n", i, sb_cstr(&f));
        if (t->kind == IR_STATE) sb_printf(c, "    fresh[%u] = !ptrs[%u];\n", i, i);
        sb_printf(c, "    if (elems(elems(batch, T), %lld) < 0) return 1;\n", (long long)ir_tensor_elems(m, t));
        if (t->kind == IR_INPUT || t->kind == IR_PARAM) sb_printf(c, "    if (!ptrs[%u]) return 1;\n", i);
        if (t->kind == IR_STATE)
            sb_printf(c,
                      "    if (!ptrs[%u] || (aligned_copies && ((uintptr_t)ptrs[%u] & 63))) {\n"
                      "        size_t n = (size_t)(batch * %lld);\n"
                      "        void *p = NULL;\n"
                      "        if (posix_memalign(&p, 64, n * sizeof(float)) == 0) {\n"
                      "            if (ptrs[%u]) memcpy(p, ptrs[%u], n * sizeof(float));\n"
                      "            else memset(p, 0, n * sizeof(float));\n"
                      "            ptrs[%u] = owned[%u] = p;\n"
                      "        } else {\n"
                      "            rc = 2;\n"
                      "        }\n"
                      "    }\n",
                      i, i, (long long)ir_tensor_elems(m, t), i, i, i, i);
        sb_free(&f);
    }
    sb_puts(c, "    kargs a = {T, ptrs, fresh};\n"
               "    void *scratch = NULL;\n"
               "    job *jobs = calloc((size_t)threads, sizeof *jobs);\n"
               "    pthread_t *tid = calloc((size_t)threads, sizeof *tid);\n"
               "    char *started = calloc((size_t)threads, 1);\n"
               "    if (rc == 0 && (!jobs || !tid || !started ||\n"
               "                    posix_memalign(&scratch, SCRATCH_ALIGN, (size_t)SCRATCH * sizeof(float) * (size_t)threads)))\n"
               "        rc = 2;\n"
               "    for (int i = 0; rc == 0 && i < threads; i++) {\n"
               "        /* contiguous, nearly equal ranges: the first items %% threads get one more */\n"
               "        int64_t base = items / threads, rem = items % threads;\n"
               "        jobs[i].a = &a;\n"
               "        jobs[i].begin = base * i + (i < rem ? i : rem);\n"
               "        jobs[i].end = jobs[i].begin + base + (i < rem);\n"
               "        jobs[i].scratch = (float *)scratch + (int64_t)SCRATCH * i;\n"
               "        if (i == 0) continue;\n"
               "        pthread_attr_t attr, *at = NULL;\n"
               "        while (pin && next_cpu < CPU_SETSIZE && (!CPU_ISSET(next_cpu, &allowed) || next_cpu == here)) next_cpu++;\n"
               "        if (pin && next_cpu < CPU_SETSIZE && pthread_attr_init(&attr) == 0) {\n"
               "            cpu_set_t one;\n"
               "            CPU_ZERO(&one);\n"
               "            CPU_SET(next_cpu++, &one);\n"
               "            if (pthread_attr_setaffinity_np(&attr, sizeof one, &one) == 0) at = &attr;\n"
               "            else pthread_attr_destroy(&attr);\n"
               "        }\n"
               "        started[i] = pthread_create(&tid[i], at, work, &jobs[i]) == 0;\n"
               "        if (at) {\n"
               "            pthread_attr_destroy(at);\n"
               "            if (!started[i]) started[i] = pthread_create(&tid[i], NULL, work, &jobs[i]) == 0;\n"
               "        }\n"
               "        /* a thread that cannot be started leaves its range to the caller */\n"
               "    }\n"
               "    if (rc == 0) {\n"
               "        work(&jobs[0]);\n"
               "        for (int i = 1; i < threads; i++) {\n"
               "            if (started[i]) pthread_join(tid[i], NULL);\n"
               "            else work(&jobs[i]);\n"
               "        }\n"
               "    }\n"
               "    free(scratch);\n"
               "    free(jobs);\n"
               "    free(tid);\n"
               "    free(started);\n");
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind != IR_STATE || t->hidden) continue;
        strbuf f = {0};
        field(&f, m, t->name);
        sb_printf(c, "    if (rc == 0 && owned[%u] && t->%s) memcpy(t->%s, owned[%u], (size_t)(batch * %lld) * sizeof(float));\n",
                  i, sb_cstr(&f), sb_cstr(&f), i, (long long)ir_tensor_elems(m, t));
        sb_free(&f);
    }
    sb_puts(c, "    for (int i = 0; i < NTENSORS; i++) free(owned[i]);\n"
               "    return rc;\n"
               "}\n");
}

/* ---- running the C compiler and ar ---- */

/* Runs argv (argv[0] looked up on PATH) with its output in `log`; false with a
 * diagnostic that quotes the command and its output when it fails. */
static bool run_tool(char *const *argv, const char *log, diag *d)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    strbuf cmd = {0};
    for (int i = 0; argv[i]; i++) sb_printf(&cmd, "%s%s", i ? " " : "", argv[i]);
    bool ok = false;
    if (rc != 0) {
        diag_error(d, "ssmc build: cannot run '%s': %s (ssmc build needs a C compiler and ar on PATH; set CC or AR "
                      "to use others)", argv[0], strerror(rc));
    } else {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) continue;
        ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok) {
            size_t len;
            const char *why;
            char *text = read_file(log, &len, &why);
            diag_error(d, "ssmc build: '%s' failed:\n%s", sb_cstr(&cmd), text ? text : "(no output)");
            free(text);
        }
    }
    sb_free(&cmd);
    return ok;
}

static bool write_text(const char *path, strbuf *text, diag *d)
{
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(sb_cstr(text), 1, text->len, f) == text->len;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) diag_error(d, "ssmc build: cannot write '%s': %s", path, strerror(errno));
    return ok;
}

static const char *tool(const char *env, const char *fallback)
{
    const char *v = getenv(env);
    return v && *v ? v : fallback;
}

ssmc_status ssmc_build(ssmc_ctx *ctx, const char *filename, const char *source, size_t len, const ssmc_options *opts,
                       const char *targets, const char *outdir)
{
    ssmc_options o = opts ? *opts : (ssmc_options){0};
    if (!ctx) return SSMC_ERR_ARG;
    diag_reset(api_ctx_diag(ctx));
    ssmc_status cs = api_check_call(api_ctx_diag(ctx), source, len, &o);
    if (cs != SSMC_OK) return cs;
    diag *d = api_ctx_diag(ctx);
    diag_reset(d);
    arena a;
    arena_init(&a);
    plan_target tg = plan_target_cpu(o.threads);
    pipeline pl = {.a = &a, .d = d, .o = &o, .target = &tg};
    ssmc_status s = pipeline_run(&pl, filename, source, len, PIPE_PLAN);
    if (s != SSMC_OK) {
        arena_free(&a);
        return s;
    }
    char tbuf[256];
    bool want_cpu;
    const char *cpu;
    s = parse_targets(targets, d, &want_cpu, &cpu, tbuf, sizeof tbuf);
    if (s == SSMC_OK && (!outdir || !*outdir)) {
        diag_error(d, "ssmc build: no output directory");
        s = SSMC_ERR_ARG;
    }
    if (s == SSMC_OK && !mkdir_parents(outdir)) {
        diag_error(d, "ssmc build: cannot create directory '%s': %s", outdir, strerror(errno));
        s = SSMC_ERR_IO;
    }
    const ir_model *m = pl.ir;
    char *tmp = s == SSMC_OK ? arena_printf(&a, "%s/.ssmc-build-XXXXXX", outdir) : NULL;
    if (s == SSMC_OK && (!tmp || !mkdtemp(tmp))) {
        diag_error(d, "ssmc build: cannot create a temporary directory in '%s': %s", outdir, strerror(errno));
        s = SSMC_ERR_IO;
        tmp = NULL;
    }
    const char *symbol = llvm_symbol(&a, m->name);
    char *obj = tmp ? arena_printf(&a, "%s/%s_kernel.o", tmp, m->name) : NULL;
    char *wrap_c = tmp ? arena_printf(&a, "%s/%s_bundle.c", tmp, m->name) : NULL;
    char *wrap_o = tmp ? arena_printf(&a, "%s/%s_bundle.o", tmp, m->name) : NULL;
    char *log = tmp ? arena_printf(&a, "%s/tool.log", tmp) : NULL;
    char *header = arena_printf(&a, "%s/%s.h", outdir, m->name);
    char *so = arena_printf(&a, "%s/lib%s.so", outdir, m->name);
    char *lib = arena_printf(&a, "%s/lib%s.a", outdir, m->name);
    char *inc = arena_printf(&a, "-I%s", outdir);
    if (s == SSMC_OK && a.failed) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    }
    llvm_kernel_shape shape;
    if (s == SSMC_OK) s = llvm_emit_object(pl.plan, cpu, obj, &shape, d);
    if (s == SSMC_OK) {
        strbuf h = {0}, c = {0};
        gen_header(&h, m, filename ? filename : "<input>", cpu);
        gen_wrapper(&c, m, symbol, &shape);
        if (h.failed || c.failed) {
            diag_error(d, "out of memory");
            s = SSMC_ERR_NOMEM;
        } else if (!write_text(header, &h, d) || !write_text(wrap_c, &c, d)) {
            s = SSMC_ERR_IO;
        }
        sb_free(&h);
        sb_free(&c);
    }
    if (s == SSMC_OK) {
        const char *cc = tool("CC", "cc"), *ar = tool("AR", "ar");
        char *compile[] = {(char *)cc, "-O2", "-fPIC", inc, "-c", wrap_c, "-o", wrap_o, NULL};
        char *link[] = {(char *)cc, "-shared", "-o", so, wrap_o, obj, "-lm", "-lpthread", NULL};
        char *archive[] = {(char *)ar, "rcs", lib, wrap_o, obj, NULL};
        if (!run_tool(compile, log, d) || !run_tool(link, log, d)) s = SSMC_ERR_BACKEND;
        if (s == SSMC_OK) {
            remove(lib); /* ar would add to an old archive */
            if (!run_tool(archive, log, d)) s = SSMC_ERR_BACKEND;
        }
    }
    if (tmp) {
        const char *files[] = {obj, wrap_c, wrap_o, log};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) remove(files[i]);
        rmdir(tmp);
    }
    arena_free(&a);
    return s;
}
