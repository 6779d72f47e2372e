/* mamba2_main.c: a program that uses an ssmc AOT bundle of examples/mamba2.ssm
 * through its header alone (no ssmc, no LLVM): built by test_cpu_aot.c against
 * DIR/mamba2.h and DIR/libmamba2.so (or .a).
 *
 *   mamba2_main DIR BATCH T THREADS state|nostate
 * reads every input and param from DIR/<name>.bin (raw f32, the shapes of
 * mamba2.h), and with `state` the initial state from DIR/S.bin; runs
 * mamba2_run; writes DIR/y.out (and DIR/S.out with `state`).
 *
 *   mamba2_main DIR BATCH T THREADS decode ROWS
 * decodes against a state pool: DIR/S.bin holds ROWS rows, DIR/idx.bin the
 * row of each sequence (int32), DIR/has.bin (if present) which sequences have
 * a state (uint8); runs mamba2_decode; writes DIR/y.out and the whole pool,
 * DIR/S.out. Exit status: 0, 1 on a file error, 2 when the call fails, 3 when
 * it accepts a bad call. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mamba2.h"

static void *load_bytes(const char *dir, const char *name, size_t n, int optional)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f && optional) return NULL;
    void *p = malloc(n ? n : 1);
    if (!f || !p || fread(p, 1, n, f) != n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    return p;
}

static float *load(const char *dir, const char *name, size_t n) { return load_bytes(dir, name, n * sizeof(float), 0); }

static void save(const char *dir, const char *name, const float *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, sizeof *p, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int decode = argc == 7 && strcmp(argv[5], "decode") == 0;
    if (argc != 6 && !decode) {
        fprintf(stderr, "usage: mamba2_main DIR BATCH T THREADS state|nostate|decode ROWS\n");
        return 1;
    }
    const char *dir = argv[1];
    int64_t B = atoll(argv[2]), T = atoll(argv[3]);
    int threads = atoi(argv[4]);
    int with_state = strcmp(argv[5], "state") == 0;
    const size_t H = MAMBA2_DIM_H, P = MAMBA2_DIM_P, N = MAMBA2_DIM_N, BT = (size_t)(B * T);
    if (decode) {
        int64_t R = atoll(argv[6]);
        mamba2_tensors t = {0};
        t.mamba2_x = load(dir, "x", BT * H * P);
        t.mamba2_dt = load(dir, "dt", BT * H);
        t.mamba2_B = load(dir, "B", BT * N);
        t.mamba2_C = load(dir, "C", BT * N);
        t.mamba2_A_log = load(dir, "A_log", H);
        t.mamba2_D = load(dir, "D", H);
        t.mamba2_dt_bias = load(dir, "dt_bias", H);
        t.mamba2_S = load(dir, "S", (size_t)R * H * P * N);
        t.mamba2_y = malloc(BT * H * P * sizeof *t.mamba2_y);
        int32_t *idx = load_bytes(dir, "idx", (size_t)B * sizeof(int32_t), 0);
        uint8_t *has = load_bytes(dir, "has", (size_t)B, 1);
        if (!t.mamba2_y) return 1;
        for (size_t i = 0; i < BT * H * P; i++) t.mamba2_y[i] = 0.f / 0.f; /* poisoned: padding slots keep it */
        /* bad calls are refused: a row past the pool, no pool */
        int32_t past[1] = {(int32_t)R};
        if (mamba2_decode(1, T, &t, past, NULL, R, threads) != MAMBA2_ERR_ARG) return 3;
        mamba2_tensors nopool = t;
        nopool.mamba2_S = NULL;
        if (mamba2_decode(B, T, &nopool, idx, has, R, threads) != MAMBA2_ERR_ARG) return 3;
        if (mamba2_decode(B, T, &t, idx, has, R, threads) != 0) return 2;
        save(dir, "y", t.mamba2_y, BT * H * P);
        save(dir, "S", t.mamba2_S, (size_t)R * H * P * N);
        return 0;
    }
    mamba2_tensors t = {0};
    t.mamba2_x = load(dir, "x", BT * H * P);
    t.mamba2_dt = load(dir, "dt", BT * H);
    t.mamba2_B = load(dir, "B", BT * N);
    t.mamba2_C = load(dir, "C", BT * N);
    t.mamba2_A_log = load(dir, "A_log", H);
    t.mamba2_D = load(dir, "D", H);
    t.mamba2_dt_bias = load(dir, "dt_bias", H);
    t.mamba2_S = with_state ? load(dir, "S", (size_t)B * H * P * N) : NULL;
    t.mamba2_y = malloc(BT * H * P * sizeof *t.mamba2_y);
    if (!t.mamba2_y) return 1;
    /* bad calls are refused */
    if (mamba2_run(0, T, &t, threads) != MAMBA2_ERR_ARG || mamba2_run(B, 0, &t, threads) != MAMBA2_ERR_ARG)
        return 3;
    mamba2_tensors missing = t;
    missing.mamba2_C = NULL;
    if (mamba2_run(B, T, &missing, threads) != MAMBA2_ERR_ARG) return 3;
    if (mamba2_run(B, T, &t, threads) != 0) return 2;
    save(dir, "y", t.mamba2_y, BT * H * P);
    if (with_state) save(dir, "S", t.mamba2_S, (size_t)B * H * P * N);
    return 0;
}
