/* cuda_chunk.c: CUDA C of a chunked core (passes/plan.h, plan_chunk_core) on
 * tensor cores (mma.sync m16n8k16, bf16 operands, f32 accumulators).
 *
 * Two passes (kernels of one source, launched in order), 8 warps a block:
 * - the state pass: one block per (sequence, head, tile of VT values, tile of
 *   KT keys: 64 where K splits into them and there is no delta rule, whose
 *   correction reads every key) walks the chunks of its sequence in order, its
 *   tile of the state in the warps' accumulator registers, the next chunk's k
 *   and v loaded into registers while the current chunk's products run; it
 *   stores each chunk's start state (bf16, value rows of KP keys) in the
 *   workspace and, with the delta rule, each step's U (bf16) after them;
 *   steps 0, 1 (k and v), 2 and 4 below;
 * - the readout pass: one block per (sequence, head, chunk, tile of VT values),
 *   every chunk at once, from the chunk's start state: steps 0, 1 (q, k, v or
 *   U) and 3.
 * Per chunk of C steps (n <= C of them in the last):
 *   0. b = the cumulative log-decay of the chunk (b_t = g_0 + .. + g_t; with
 *      a decay per key b_t[i], f32 in shared memory);
 *   1. the chunk's q (each readout), k and v into shared memory as bf16: Q[t][i],
 *      K[t][i] row-major, and transposed K~[i][s] = k_s[i] exp(b_last - b_s),
 *      V^T[j][s] (the layouts every mma operand reads with 32-bit loads);
 *   2. (delta rule) U = (I + L)^-1 (V - diag(beta exp(b)) K h), L[t][s] =
 *      beta_t (k_t . k_s) exp(b_t - b_s) for s < t, by forward substitution,
 *      one value column per thread (a column's steps depend only on itself);
 *   3. per readout: A = (Q K^T) masked by exp(b_t - b_s), s <= t (s < t and
 *      b_{t-1} for S(t-1)); R = A U + (Q exp(b_t)) h;
 *   4. h = exp(b_last) h + K~^T U, then h's bf16 copy (h^T, for step 3's
 *      operand in the next chunk).
 * With a decay per key, A[t][s] = sum_i q_t[i] k_s[i] exp(b_t[i] - b_s[i]) has
 * no factor outside the sum. It is built from 16 x 16 blocks (sub-chunks of 16,
 * as fla's chunk_gla builds it): a block below the diagonal (queries of
 * sub-chunk I, keys of an earlier one) runs on tensor cores relative to the
 * reference point n = 16 I (16 I - 1 for S(t-1)), its operands
 * q_t exp(b_t - b_n) and k_s exp(b_n - b_s) formed as the fragments are
 * loaded; t >= n >= s makes both exponents <= 0. A block on the diagonal is
 * summed elementwise over the keys in f32, only where s <= t: no exponent is
 * formed for s > t. Steps 3 and 4 scale by exp(b_t[i]), exp(b_last[i] - b_s[i])
 * and exp(b_last[i]) per key.
 * Every exponent is a difference b_t - b_s with s <= t (<= 0 when the decays
 * are <= 1): no product of raw decays, and no exp(b_t) exp(-b_s) split, which
 * overflows where decays are strong. Rows past the sequence end read zeros
 * and write nothing; K and V are padded to multiples of 16 and 8 with zeros.
 * The delta rule with a decay per key is not chunked (passes/chunk.c refuses
 * it, and so does cuda_chunk_supported).
 *
 * The source needs no header (NVRTC, no include path). Without __CUDA_ARCH__
 * (tests/gpu/emu/cuda_emu.h compiles it for the CPU) the warp-level mma is
 * the emulator's. */
#include <stdio.h>
#include <string.h>

#include "codegen/cuda_chunk.h"

#define WARPS 8
#define THREADS (32 * WARPS)

/* Keys of a diagonal block (16 x 16, decay per key) that one thread sums
 * against its row: a power of two from 1 to 8, so that the block's threads
 * cover the chunk's 16 C pairs. */
static int diag_span(const plan_chunk_core *c)
{
    int s = 16 * c->C / THREADS, p = 1;
    while (p * 2 <= s && p < 8) p *= 2;
    return p;
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

int cuda_chunk_vt(const plan_chunk_core *c) { return c->V >= 64 ? 64 : round_up(c->V, 8); }

bool cuda_chunk_supported(const plan_chunk_core *c, diag *d)
{
    const char *why = c->decay == PASS_DECAY_KEY && c->delta ? "the delta rule with a decay per key"
                      : c->C % 16 || c->C > 64                ? "a chunk length that is not a multiple of 16 up to 64"
                      : c->K > 256                            ? "a key dim above 256"
                                                              : NULL;
    if (why && d) diag_error(d, "cuda: the chunked kernels do not render %s yet (use --algo=recurrent, or the cpu device)", why);
    return !why;
}

static const char *state_type(ssmc_dtype dt)
{
    switch (dt) {
    case SSMC_F16: return "ssmc_f16";
    case SSMC_BF16: return "ssmc_bf16";
    case SSMC_F64: return "double";
    default: return "float";
    }
}

/* The key tile of a state-pass block: 64 keys where K splits into them and
 * the delta rule (whose correction reads every key of the state) is absent. */
static int key_tile(const plan_chunk_core *c)
{
    int KP = round_up(c->K, 16);
    return !c->delta && KP > 64 && KP % 64 == 0 ? 64 : KP;
}

/* Shared memory of pass `pass` (0: the states, 1: the readouts), in bytes. */
static size_t smem_bytes(const plan_chunk_core *c, int pass)
{
    size_t C = (size_t)c->C, KP = (size_t)round_up(c->K, 16), VT = (size_t)cuda_chunk_vt(c), NR = (size_t)c->nreadouts;
    size_t KT = (size_t)key_tile(c), h;
    if (pass == 0)
        h = 2 * (KT * (C + 8) + VT * (C + 8) + VT * (KT + 8) + (c->delta ? C * (KP + 8) : 0));
    else
        h = 2 * (NR * C * (KP + 8) + C * (KP + 8) + VT * (C + 8) + VT * (KP + 8) + C * (C + 8));
    /* the cumulative log-decay: [C], or [C][KP + 1] floats with a decay per key */
    h = (h + 15) / 16 * 16 + 4 * C * (c->decay == PASS_DECAY_KEY ? KP + 1 : 1);
    if (pass == 0 && c->delta) h += 4 * (C * VT + C * (C + 1) + C);
    return h;
}

static int64_t chunks_of(const plan_chunk_core *c, int64_t T) { return (T + c->C - 1) / c->C; }

cuda_launch cuda_chunk_launch(const plan_chunk_core *c, int64_t batch, int64_t T, int pass)
{
    int64_t nv = (c->V + cuda_chunk_vt(c) - 1) / cuda_chunk_vt(c), nk = round_up(c->K, 16) / key_tile(c);
    int64_t per_seq = pass == 0 ? c->nheads * nv * nk : c->nheads * nv * chunks_of(c, T);
    return (cuda_launch){.blocks = batch * per_seq, .threads = THREADS, .shared_bytes = (unsigned)smem_bytes(c, pass)};
}

size_t cuda_chunk_ws_bytes(const plan_chunk_core *c, int64_t batch, int64_t T)
{
    size_t VT = (size_t)cuda_chunk_vt(c), NV = ((size_t)c->V + VT - 1) / VT, KP = (size_t)round_up(c->K, 16);
    size_t starts = (size_t)batch * (size_t)c->nheads * (size_t)chunks_of(c, T) * NV * VT * KP;
    size_t u = c->delta ? (size_t)batch * (size_t)T * (size_t)c->nheads * (size_t)c->V : 0;
    return 2 * (starts + u) + 256;
}

void cuda_chunk_kernel_name(strbuf *out, const ir_model *m, const plan_chunk_core *c, int pass)
{
    sb_printf(out, "ssmc_%s_chunk_%s_%s", m->name, m->tensors[c->state].name, pass == 0 ? "states" : "readouts");
}

/* bf16 rounding and the m16n8k16 mma, which the core's backward (cuda_chunk_bwd.c) takes too. */
static const char *const preamble[] = {
    "typedef unsigned short ck_b16;\n",
    "__device__ __forceinline__ ck_b16 ck_bf16(float f)\n",
    "{\n",
    "    unsigned u = __float_as_uint(f);\n",
    "    if ((u & 0x7fffffffu) > 0x7f800000u) return (ck_b16)((u >> 16) | 0x40u);\n",
    "    u += 0x7fffu + ((u >> 16) & 1u);\n",
    "    return (ck_b16)(u >> 16);\n",
    "}\n",
    "#ifdef __CUDA_ARCH__\n",
    "__device__ __forceinline__ void ck_mma(float *d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1)\n",
    "{\n",
    "    asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\\n\"\n",
    "                 : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n",
    "                 : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"r\"(b0), \"r\"(b1));\n",
    "}\n",
    "#endif\n",
};

void cuda_chunk_preamble(strbuf *out)
{
    for (size_t i = 0; i < sizeof preamble / sizeof *preamble; i++) sb_puts(out, preamble[i]);
}

/* The kernel's body: one string per line (C11 promises literals of 4095 bytes only). */
static const char *const body[] = {
    "#define CK_U32(p) (*(const unsigned *)(p))\n",
    "/* d += A[r0 .. r0+16][k..] B^T where Bt[n][k] holds B's column n (k contiguous), KSTEPS steps of 16 */\n",
    "__device__ __forceinline__ void ck_tile(float *d, const ck_b16 *A, int as, int r0, const ck_b16 *Bt, int bs, int n0, int k0,\n",
    "                                        int ksteps, int gq, int tq)\n",
    "{\n",
    "    for (int kk = 0; kk < ksteps; kk++) {\n",
    "        int k = k0 + kk * 16 + 2 * tq;\n",
    "        ck_mma(d, CK_U32(A + (r0 + gq) * as + k), CK_U32(A + (r0 + gq + 8) * as + k), CK_U32(A + (r0 + gq) * as + k + 8),\n",
    "               CK_U32(A + (r0 + gq + 8) * as + k + 8), CK_U32(Bt + (n0 + gq) * bs + k), CK_U32(Bt + (n0 + gq) * bs + k + 8));\n",
    "    }\n",
    "}\n",
    "#define CK_THREADS (32 * CK_WARPS)\n",
    "/* o = x[row .. row + 3], the values at columns col .. col + 3 of rows lim long (zeros past lim, or all\n",
    " * zeros when !in): one 16-byte load when all four are in and the rows are a multiple of 4 long */\n",
    "__device__ __forceinline__ void ck_load4(float *o, const float *__restrict__ x, long long row, bool in, int col, int lim)\n",
    "{\n",
    "    if (in && col + 3 < lim && lim % 4 == 0) {\n",
    "        float4 w = *(const float4 *)(x + row);\n",
    "        o[0] = w.x, o[1] = w.y, o[2] = w.z, o[3] = w.w;\n",
    "    } else {\n",
    "        for (int u = 0; u < 4; u++) o[u] = in && col + u < lim ? x[row + u] : 0.f;\n",
    "    }\n",
    "}\n",
    "#define QS (CK_KP + 8)\n",
    "#define TS (CK_C + 8)\n",
    "#define HS (CK_KT + 8)\n",
    "#define MT_H (CK_KT / 16)\n",
    "#define NT_V (CK_VT / 8)\n",
    "#define H_TILES ((MT_H * NT_V + CK_WARPS - 1) / CK_WARPS)\n",
    "#define O_TILES (((CK_C / 16) * NT_V + CK_WARPS - 1) / CK_WARPS)\n",
    "#define A_TILES (((CK_C / 16) * (CK_C / 8) + CK_WARPS - 1) / CK_WARPS)\n",
    "/* the chunk-start states: per (sequence, head, chunk) CK_NV * CK_VT value rows of CK_KP keys, bf16 */\n",
    "#define CK_HROWS ((long long)CK_NV * CK_VT * CK_KP)\n",
    "#define CK_HWS(b, hh, ci) ((ck_b16 *)ws + (((b) * CK_NH + (hh)) * nchunks + (ci)) * CK_HROWS)\n",
    "/* the cumulative log-decay b[t] (b[t][i] with a decay per key, rows padded against bank conflicts) */\n",
    "#define BW (CK_DECAY == 2 ? CK_KP + 1 : 1)\n",
    "#define CK_B(t, i) bc[(t) * BW + (CK_DECAY == 2 ? (i) : 0)]\n",
    "/* bc = the cumulative log-decay of the chunk at c0 (n steps; keys klo .. klo + kn with a decay per key) */\n",
    "__device__ __forceinline__ void ck_decay(float *bc, const float *__restrict__ g, long long b, long long T, long long c0, int n,\n",
    "                                         int hh, int klo, int kn)\n",
    "{\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;\n",
    "#if CK_DECAY == 2\n",
    "#pragma unroll 4\n",
    "    for (int x = tid * 4; x < CK_C * kn; x += 4 * CK_THREADS) {\n",
    "        int t = x / kn, i0 = klo + x % kn;\n",
    "        long long row = ((b * T + c0 + t) * CK_NH + hh) * CK_K + i0;\n",
    "        float gg[4];\n",
    "        ck_load4(gg, g, row, t < n, i0, CK_K);\n",
    "        for (int u = 0; u < 4; u++) CK_B(t, i0 + u) = gg[u];\n",
    "    }\n",
    "    __syncthreads();\n",
    "    for (int i = klo + tid; i < klo + kn; i += CK_THREADS) {\n",
    "        float acc = 0.f;\n",
    "        for (int t = 0; t < CK_C; t++) {\n",
    "            acc += CK_B(t, i);\n",
    "            CK_B(t, i) = acc;\n",
    "        }\n",
    "    }\n",
    "#else\n",
    "    (void)klo, (void)kn;\n",
    "    for (int t = tid; t < CK_C; t += CK_THREADS) {\n",
    "#if CK_DECAY\n",
    "        bc[t] = t < n ? g[(b * T + c0 + t) * CK_NH + hh] : 0.f;\n",
    "#else\n",
    "        bc[t] = 0.f;\n",
    "#endif\n",
    "    }\n",
    "    __syncthreads();\n",
    "    if (warp == 0) {\n",
    "        float carry = 0.f;\n",
    "        for (int base = 0; base < CK_C; base += 32) {\n",
    "            float x = base + lane < CK_C ? bc[base + lane] : 0.f;\n",
    "            for (int o = 1; o < 32; o <<= 1) {\n",
    "                float y = __shfl_up_sync(0xffffffffu, x, o);\n",
    "                if (lane >= o) x += y;\n",
    "            }\n",
    "            x += carry;\n",
    "            if (base + lane < CK_C) bc[base + lane] = x;\n",
    "            carry = __shfl_sync(0xffffffffu, x, 31);\n",
    "        }\n",
    "    }\n",
    "#endif\n",
    "}\n",
    "#if CK_DECAY == 2\n",
    "/* the bf16 pair X[row][c], X[row][c + 1], each times exp(b[r1][.] - b[r2][.]) (an mma fragment's register) */\n",
    "__device__ __forceinline__ unsigned ck_scaled(const ck_b16 *X, int row, int c, const float *bc, int r1, int r2)\n",
    "{\n",
    "    float x0 = ck_f32(X[row * QS + c]) * expf(CK_B(r1, c) - CK_B(r2, c));\n",
    "    float x1 = ck_f32(X[row * QS + c + 1]) * expf(CK_B(r1, c + 1) - CK_B(r2, c + 1));\n",
    "    return (unsigned)ck_bf16(x0) | (unsigned)ck_bf16(x1) << 16;\n",
    "}\n",
    "#endif\n",
    "/* A block of the state pass's grid (the backward's reverse pass takes it too): its key tile, value tile, head and\n",
    " * sequence */\n",
    "#define CK_STATE_BLOCK \\\n",
    "    long long blk = blockIdx.x; \\\n",
    "    const int kt = (int)(blk % CK_NK); \\\n",
    "    blk /= CK_NK; \\\n",
    "    const int vt = (int)(blk % CK_NV); \\\n",
    "    blk /= CK_NV; \\\n",
    "    const int hh = (int)(blk % CK_NH); \\\n",
    "    const long long b = blk / CK_NH;\n",
    "/* The state pass's share of a chunk's k (keys k0 .. k0 + KT) and v (values v0 .. v0 + VT) into registers:\n",
    " * 4 consecutive elements a thread and slot, 16-byte loads when K (V) is a multiple of 4; zeros past the\n",
    " * chunk's n steps */\n",
    "#define KPRE ((CK_C * CK_KT + 4 * CK_THREADS - 1) / (4 * CK_THREADS))\n",
    "#define VPRE ((CK_C * CK_VT + 4 * CK_THREADS - 1) / (4 * CK_THREADS))\n",
    "__device__ __forceinline__ void ck_load_kv(float (*kp)[4], float (*vp)[4], const float *__restrict__ k,\n",
    "                                           const float *__restrict__ v, long long b, long long T, long long c0, int n,\n",
    "                                           int hh, int k0, int v0)\n",
    "{\n",
    "    const int tid = threadIdx.x;\n",
    "#pragma unroll\n",
    "    for (int p = 0; p < KPRE; p++) {\n",
    "        int x = (tid + p * CK_THREADS) * 4, t = x / CK_KT, ia = k0 + x % CK_KT;\n",
    "        long long row = ((b * T + c0 + t) * CK_NH + hh) * CK_K + ia;\n",
    "        ck_load4(kp[p], k, row, x < CK_C * CK_KT && t < n, ia, CK_K);\n",
    "    }\n",
    "#pragma unroll\n",
    "    for (int p = 0; p < VPRE; p++) {\n",
    "        int x = (tid + p * CK_THREADS) * 4, t = x / CK_VT, j0 = x % CK_VT;\n",
    "        long long row = ((b * T + c0 + t) * CK_NH + hh) * CK_V + v0 + j0;\n",
    "        ck_load4(vp[p], v, row, x < CK_C * CK_VT && t < n, v0 + j0, CK_V);\n",
    "    }\n",
    "}\n",
    "/* Pass 1, the state pass: one block per (sequence, head, value tile, key tile) walks the chunks in order, its\n",
    " * tile of the state in the warps' accumulators; it stores each chunk's start state (bf16) for pass 2 and, with\n",
    " * the delta rule, the chunk's U (bf16, the canonical v's layout, after the start states) */\n",
    "/* (the backward's first pass too, cuda_chunk_bwd.c: CK_FORWARD 0 keeps the given state as it is) */\n",
    "__device__ __forceinline__ void ck_states(long long B, long long T, float *ws, const float *__restrict__ k,\n",
    "                                          const float *__restrict__ v, const float *__restrict__ g,\n",
    "                                          const float *__restrict__ beta, CK_STATE_T *state)\n",
    "{\n",
    "    SSMC_DYN_SMEM;\n",
    "    ck_b16 *KsT = (ck_b16 *)ssmc_smem;            /* [KT][TS]: k_s[i] exp(b_last - b_s), the block's keys */\n",
    "    ck_b16 *VsT = KsT + CK_KT * TS;               /* [VT][TS] */\n",
    "    ck_b16 *HsT = VsT + CK_VT * TS;               /* [VT][HS]: the state's tile, transposed */\n",
    "#if CK_DELTA\n",
    "    ck_b16 *Ks = HsT + CK_VT * HS;                /* [C][QS] */\n",
    "    ck_b16 *end = Ks + CK_C * QS;\n",
    "#else\n",
    "    ck_b16 *end = HsT + CK_VT * HS;\n",
    "#endif\n",
    "    float *bc = (float *)((char *)ssmc_smem + ((size_t)(end - KsT) * 2 + 15) / 16 * 16);\n",
    "#if CK_DELTA\n",
    "    float *Us = bc + CK_C * BW;                    /* [C][VT] */\n",
    "    float *Ls = Us + CK_C * CK_VT;                 /* [C][C + 1] */\n",
    "    float *bs = Ls + CK_C * (CK_C + 1);            /* [C] */\n",
    "#endif\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;\n",
    "    CK_STATE_BLOCK\n",
    "    if (b >= B) return;\n",
    "    const int v0 = vt * CK_VT, k0 = kt * CK_KT;\n",
    "    const long long nchunks = (T + CK_C - 1) / CK_C;\n",
    "#if CK_DELTA\n",
    "    ck_b16 *uws = (ck_b16 *)ws + B * CK_NH * nchunks * CK_HROWS;\n",
    "#endif\n",
    "    float h[H_TILES][4];\n",
    "    /* the state: tile w + 4 i of the KT x VT grid of 16 x 8 tiles is warp w's */\n",
    "    for (int i = 0; i < H_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int r = k0 + mt * 16 + gq + (e >> 1) * 8, cl = nt * 8 + 2 * tq + (e & 1);\n",
    "            float x = 0.f;\n",
    "#if CK_HAS_STATE\n",
    "            if (tile < MT_H * NT_V && r < CK_K && v0 + cl < CK_V && state)\n",
    "                x = ssmc_get(state + b * CK_SE + ck_head_off[hh] + (long long)r * CK_KSTR + (long long)(v0 + cl) * CK_VSTR);\n",
    "#endif\n",
    "            h[i][e] = x;\n",
    "        }\n",
    "    }\n",
    "    for (int i = 0; i < H_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "        if (tile >= MT_H * NT_V) continue;\n",
    "        for (int e = 0; e < 4; e++) HsT[(nt * 8 + 2 * tq + (e & 1)) * HS + mt * 16 + gq + (e >> 1) * 8] = ck_bf16(h[i][e]);\n",
    "    }\n",
    "    float kpre[KPRE][4], vpre[VPRE][4];\n",
    "    ck_load_kv(kpre, vpre, k, v, b, T, 0, (int)(T < CK_C ? T : CK_C), hh, k0, v0);\n",
    "    for (long long ci = 0; ci < nchunks; ci++) {\n",
    "        const long long c0 = ci * CK_C;\n",
    "        const int n = (int)(T - c0 < CK_C ? T - c0 : CK_C);\n",
    "        __syncthreads(); /* HsT holds the chunk's start state; the last chunk's operands are read no more */\n",
    "        {\n",
    "            ck_b16 *hd = CK_HWS(b, hh, ci) + (long long)v0 * CK_KP + k0;\n",
    "            for (int x = tid * 8; x < CK_VT * CK_KT; x += 8 * CK_THREADS) {\n",
    "                int j = x / CK_KT, i = x % CK_KT;\n",
    "                *(uint4 *)(hd + (long long)j * CK_KP + i) = *(const uint4 *)(HsT + j * HS + i);\n",
    "            }\n",
    "        }\n",
    "        ck_decay(bc, g, b, T, c0, n, hh, k0, CK_KT);\n",
    "#if CK_DELTA\n",
    "        for (int t = tid; t < CK_C; t += CK_THREADS) bs[t] = t < n ? beta[(b * T + c0 + t) * CK_NH + hh] : 0.f;\n",
    "#endif\n",
    "        __syncthreads();\n",
    "#if CK_DECAY != 2\n",
    "        const float blast = bc[n - 1];\n",
    "#endif\n",
    "        /* K~ (and K for the delta rule) and V from the registers loaded a chunk ahead */\n",
    "#pragma unroll\n",
    "        for (int p = 0; p < KPRE; p++) {\n",
    "            int x = (tid + p * CK_THREADS) * 4, t = x / CK_KT, i0 = x % CK_KT, ia = k0 + i0;\n",
    "            if (x >= CK_C * CK_KT) break;\n",
    "#if CK_DECAY != 2\n",
    "            float e = t < n ? expf(blast - bc[t]) : 0.f;\n",
    "#endif\n",
    "            for (int u = 0; u < 4; u++) {\n",
    "#if CK_DECAY == 2\n",
    "                float e = t < n ? expf(CK_B(n - 1, ia + u) - CK_B(t, ia + u)) : 0.f;\n",
    "#endif\n",
    "                KsT[(i0 + u) * TS + t] = ck_bf16(kpre[p][u] * e);\n",
    "#if CK_DELTA\n",
    "                Ks[t * QS + i0 + u] = ck_bf16(kpre[p][u]);\n",
    "#endif\n",
    "            }\n",
    "        }\n",
    "#pragma unroll\n",
    "        for (int p = 0; p < VPRE; p++) {\n",
    "            int x = (tid + p * CK_THREADS) * 4, t = x / CK_VT, j0 = x % CK_VT;\n",
    "            if (x >= CK_C * CK_VT) break;\n",
    "            for (int u = 0; u < 4; u++) {\n",
    "#if CK_DELTA\n",
    "                Us[t * CK_VT + j0 + u] = vpre[p][u];\n",
    "#else\n",
    "                VsT[(j0 + u) * TS + t] = ck_bf16(vpre[p][u]);\n",
    "#endif\n",
    "            }\n",
    "        }\n",
    "        /* the next chunk's k and v in flight while this one's products run */\n",
    "        if (ci + 1 < nchunks) {\n",
    "            const long long c1 = c0 + CK_C;\n",
    "            ck_load_kv(kpre, vpre, k, v, b, T, c1, (int)(T - c1 < CK_C ? T - c1 : CK_C), hh, k0, v0);\n",
    "        }\n",
    "        __syncthreads();\n",
    "#if CK_DELTA\n",
    "        /* L = beta (K K^T) exp(b_t - b_s) below the diagonal; U -= beta exp(b) K h */\n",
    "        for (int i = 0; i < A_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_C / 8), nt = tile % (CK_C / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_C / 8)) continue;\n",
    "            float d[4] = {0.f, 0.f, 0.f, 0.f};\n",
    "            ck_tile(d, Ks, QS, mt * 16, Ks, QS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, s = nt * 8 + 2 * tq + (e & 1);\n",
    "                Ls[t * (CK_C + 1) + s] = s < t ? bs[t] * d[e] * expf(bc[t] - bc[s]) : 0.f;\n",
    "            }\n",
    "        }\n",
    "        for (int i = 0; i < O_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            if (tile >= (CK_C / 16) * NT_V) continue;\n",
    "            float d[4] = {0.f, 0.f, 0.f, 0.f};\n",
    "            ck_tile(d, Ks, QS, mt * 16, HsT, HS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, j = nt * 8 + 2 * tq + (e & 1);\n",
    "                Us[t * CK_VT + j] -= bs[t] * expf(bc[t]) * d[e];\n",
    "            }\n",
    "        }\n",
    "        __syncthreads();\n",
    "        /* forward substitution: column j's rows depend on its earlier rows only */\n",
    "        for (int j = tid; j < CK_VT; j += CK_THREADS)\n",
    "            for (int t = 1; t < n; t++) {\n",
    "                float acc = Us[t * CK_VT + j];\n",
    "                for (int s = 0; s < t; s++) acc -= Ls[t * (CK_C + 1) + s] * Us[s * CK_VT + j];\n",
    "                Us[t * CK_VT + j] = acc;\n",
    "            }\n",
    "        __syncthreads();\n",
    "        for (int x = tid; x < CK_C * CK_VT; x += CK_THREADS) {\n",
    "            int t = x / CK_VT, j = x % CK_VT;\n",
    "            ck_b16 u = ck_bf16(Us[t * CK_VT + j]);\n",
    "            VsT[j * TS + t] = u;\n",
    "            if (t < n && v0 + j < CK_V) uws[((b * T + c0 + t) * CK_NH + hh) * CK_V + v0 + j] = u;\n",
    "        }\n",
    "        __syncthreads();\n",
    "#endif\n",
    "        /* the state at the chunk's end: h = exp(b_last) h + K~^T U */\n",
    "#if CK_DECAY != 2\n",
    "        const float eb = expf(blast);\n",
    "#endif\n",
    "#pragma unroll\n",
    "        for (int i = 0; i < H_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            if (tile >= MT_H * NT_V) continue;\n",
    "#if CK_DECAY == 2\n",
    "            for (int e = 0; e < 4; e++) h[i][e] *= expf(CK_B(n - 1, k0 + mt * 16 + gq + (e >> 1) * 8));\n",
    "#else\n",
    "            for (int e = 0; e < 4; e++) h[i][e] *= eb;\n",
    "#endif\n",
    "            ck_tile(h[i], KsT, TS, mt * 16, VsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "        }\n",
    "        __syncthreads(); /* HsT is read no more this chunk */\n",
    "        for (int i = 0; i < H_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            if (tile >= MT_H * NT_V) continue;\n",
    "            for (int e = 0; e < 4; e++) HsT[(nt * 8 + 2 * tq + (e & 1)) * HS + mt * 16 + gq + (e >> 1) * 8] = ck_bf16(h[i][e]);\n",
    "        }\n",
    "    }\n",
    "#if CK_HAS_STATE && CK_FORWARD\n",
    "    if (state)\n",
    "        for (int i = 0; i < H_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int r = k0 + mt * 16 + gq + (e >> 1) * 8, cl = nt * 8 + 2 * tq + (e & 1);\n",
    "                if (tile < MT_H * NT_V && r < CK_K && v0 + cl < CK_V)\n",
    "                    ssmc_st(state + b * CK_SE + ck_head_off[hh] + (long long)r * CK_KSTR + (long long)(v0 + cl) * CK_VSTR, h[i][e]);\n",
    "            }\n",
    "        }\n",
    "#endif\n",
    "}\n",
    "#if CK_FORWARD\n",
    "/* two blocks an SM where the key split makes the grid more than the SMs (B H V/VT K/KT blocks) */\n",
    "extern \"C\" __global__ void __launch_bounds__(CK_THREADS, CK_DELTA ? 1 : 2) CK_NAME_STATES(long long B, long long T, float *ws CK_PARAMS)\n",
    "{\n",
    "    ck_states(B, T, ws, k, v, g, beta, state);\n",
    "}\n",
    "/* Pass 2, the readouts: one block per (sequence, head, chunk, value tile), every chunk at once, from the chunk's\n",
    " * start state that pass 1 stored */\n",
    "extern \"C\" __global__ void __launch_bounds__(CK_THREADS) CK_NAME_READOUTS(long long B, long long T, float *ws CK_PARAMS)\n",
    "{\n",
    "    SSMC_DYN_SMEM;\n",
    "    ck_b16 *Qs = (ck_b16 *)ssmc_smem;            /* [NR][C][QS] */\n",
    "    ck_b16 *Ks = Qs + CK_NR * CK_C * QS;          /* [C][QS] */\n",
    "    ck_b16 *VsT = Ks + CK_C * QS;                 /* [VT][TS] */\n",
    "    ck_b16 *HsT = VsT + CK_VT * TS;               /* [VT][QS] */\n",
    "    ck_b16 *As = HsT + CK_VT * QS;                /* [C][TS] */\n",
    "    float *bc = (float *)((char *)ssmc_smem + ((size_t)(As + CK_C * TS - Qs) * 2 + 15) / 16 * 16);\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;\n",
    "    const long long nchunks = (T + CK_C - 1) / CK_C;\n",
    "    long long blk = blockIdx.x;\n",
    "    const int vt = (int)(blk % CK_NV);\n",
    "    blk /= CK_NV;\n",
    "    const long long ci = blk % nchunks;\n",
    "    blk /= nchunks;\n",
    "    const int hh = (int)(blk % CK_NH);\n",
    "    const long long b = blk / CK_NH;\n",
    "    if (b >= B) return;\n",
    "    const int v0 = vt * CK_VT;\n",
    "    const long long c0 = ci * CK_C;\n",
    "    const int n = (int)(T - c0 < CK_C ? T - c0 : CK_C);\n",
    "#if CK_DELTA\n",
    "    const ck_b16 *uws = (const ck_b16 *)ws + B * CK_NH * nchunks * CK_HROWS;\n",
    "#endif\n",
    "    ck_decay(bc, g, b, T, c0, n, hh, 0, CK_KP);\n",
    "    /* the chunk's q and k: 4 consecutive keys a thread (16-byte loads when K is a multiple of 4) */\n",
    "#pragma unroll 4\n",
    "    for (int x = tid * 4; x < CK_C * CK_KP; x += 4 * CK_THREADS) {\n",
    "        int t = x / CK_KP, i0 = x % CK_KP;\n",
    "        long long row = ((b * T + c0 + t) * CK_NH + hh) * CK_K + i0;\n",
    "        float kq[4], qq[CK_NR][4];\n",
    "        ck_load4(kq, k, row, t < n, i0, CK_K);\n",
    "        CK_LOAD_Q\n",
    "        for (int u = 0; u < 4; u++) {\n",
    "            Ks[t * QS + i0 + u] = ck_bf16(kq[u]);\n",
    "            CK_STORE_Q\n",
    "        }\n",
    "    }\n",
    "    /* v (U with the delta rule, from pass 1), transposed */\n",
    "#pragma unroll 4\n",
    "    for (int x = tid * 4; x < CK_C * CK_VT; x += 4 * CK_THREADS) {\n",
    "        int t = x / CK_VT, j0 = x % CK_VT;\n",
    "        long long row = ((b * T + c0 + t) * CK_NH + hh) * CK_V + v0 + j0;\n",
    "        float vv[4];\n",
    "#if CK_DELTA\n",
    "        for (int u = 0; u < 4; u++) vv[u] = t < n && v0 + j0 + u < CK_V ? ck_f32(uws[row + u]) : 0.f;\n",
    "#else\n",
    "        ck_load4(vv, v, row, t < n, v0 + j0, CK_V);\n",
    "#endif\n",
    "        for (int u = 0; u < 4; u++) VsT[(j0 + u) * TS + t] = ck_bf16(vv[u]);\n",
    "    }\n",
    "    /* the chunk's start state, transposed: value rows v0 .. v0 + VT */\n",
    "    {\n",
    "        const ck_b16 *hd = CK_HWS(b, hh, ci) + (long long)v0 * CK_KP;\n",
    "        for (int x = tid * 8; x < CK_VT * CK_KP; x += 8 * CK_THREADS) {\n",
    "            int j = x / CK_KP, i = x % CK_KP;\n",
    "            *(uint4 *)(HsT + j * QS + i) = *(const uint4 *)(hd + (long long)j * CK_KP + i);\n",
    "        }\n",
    "    }\n",
    "    __syncthreads();\n",
    "    for (int r = 0; r < CK_NR; r++) {\n",
    "        ck_b16 *Q = Qs + r * CK_C * QS;\n",
    "        const int prev = (CK_PREV >> r) & 1;\n",
    "#if CK_DECAY == 2\n",
    "        /* A below the diagonal blocks: tensor cores, relative to the reference point n = 16 I - prev of the\n",
    "         * query sub-chunk I (t - prev >= n >= s: both exponents <= 0); above them: zeros */\n",
    "        for (int i = 0; i < A_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_C / 8), nt = tile % (CK_C / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_C / 8) || nt / 2 == mt) continue;\n",
    "            float d[4] = {0.f, 0.f, 0.f, 0.f};\n",
    "            if (nt / 2 < mt) {\n",
    "                const int ref = mt * 16 - prev, t0 = mt * 16 + gq, t1 = t0 + 8, s = nt * 8 + gq;\n",
    "                for (int kk = 0; kk < CK_KP / 16; kk++) {\n",
    "                    int kx = kk * 16 + 2 * tq;\n",
    "                    ck_mma(d, ck_scaled(Q, t0, kx, bc, t0 - prev, ref), ck_scaled(Q, t1, kx, bc, t1 - prev, ref),\n",
    "                           ck_scaled(Q, t0, kx + 8, bc, t0 - prev, ref), ck_scaled(Q, t1, kx + 8, bc, t1 - prev, ref),\n",
    "                           ck_scaled(Ks, s, kx, bc, ref, s), ck_scaled(Ks, s, kx + 8, bc, ref, s));\n",
    "                }\n",
    "            }\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, s = nt * 8 + 2 * tq + (e & 1);\n",
    "                As[t * TS + s] = ck_bf16(d[e]);\n",
    "            }\n",
    "        }\n",
    "        /* the diagonal blocks, elementwise in f32: a thread's row t against CK_DSPAN keys s of its sub-chunk,\n",
    "         * s <= t - prev */\n",
    "        for (int x = tid; x < (16 / CK_DSPAN) * CK_C; x += CK_THREADS) {\n",
    "            const int t = x / (16 / CK_DSPAN), s0 = (t & ~15) + x % (16 / CK_DSPAN) * CK_DSPAN, tb = t - prev;\n",
    "            float acc[CK_DSPAN];\n",
    "            for (int u = 0; u < CK_DSPAN; u++) acc[u] = 0.f;\n",
    "            for (int c = 0; c < CK_K; c++) {\n",
    "                float qc = ck_f32(Q[t * QS + c]), bt = tb >= 0 ? CK_B(tb, c) : 0.f;\n",
    "                for (int u = 0; u < CK_DSPAN; u++)\n",
    "                    if (s0 + u <= tb) acc[u] += qc * ck_f32(Ks[(s0 + u) * QS + c]) * expf(bt - CK_B(s0 + u, c));\n",
    "            }\n",
    "            for (int u = 0; u < CK_DSPAN; u++) As[t * TS + s0 + u] = ck_bf16(acc[u]);\n",
    "        }\n",
    "#else\n",
    "        for (int i = 0; i < A_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_C / 8), nt = tile % (CK_C / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_C / 8)) continue;\n",
    "            float d[4] = {0.f, 0.f, 0.f, 0.f};\n",
    "            ck_tile(d, Q, QS, mt * 16, Ks, QS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, s = nt * 8 + 2 * tq + (e & 1), tb = t - prev;\n",
    "                As[t * TS + s] = ck_bf16(s <= tb ? d[e] * expf(bc[tb] - bc[s]) : 0.f);\n",
    "            }\n",
    "        }\n",
    "#endif\n",
    "        __syncthreads();\n",
    "        /* Q's rows scaled by exp(b_t) (b_{t-1} for S(t-1); 1 before the chunk) */\n",
    "        for (int x = tid; x < CK_C * CK_KP; x += CK_THREADS) {\n",
    "            int t = x / CK_KP, i = x % CK_KP, tb = t - prev;\n",
    "            float e = tb >= 0 ? expf(CK_B(tb, i)) : 1.f;\n",
    "            Q[t * QS + i] = ck_bf16(ck_f32(Q[t * QS + i]) * e);\n",
    "        }\n",
    "        __syncthreads();\n",
    "        float *R = CK_R(r);\n",
    "        for (int i = 0; i < O_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            if (tile >= (CK_C / 16) * NT_V) continue;\n",
    "            float d[4] = {0.f, 0.f, 0.f, 0.f};\n",
    "            ck_tile(d, As, TS, mt * 16, VsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "            ck_tile(d, Q, QS, mt * 16, HsT, QS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, j = nt * 8 + 2 * tq + (e & 1);\n",
    "                if (t < n && v0 + j < CK_V) R[((b * T + c0 + t) * CK_NH + hh) * CK_V + v0 + j] = d[e];\n",
    "            }\n",
    "        }\n",
    "        __syncthreads();\n",
    "    }\n",
    "}\n",
    "#endif\n",
};

/* forward false: the state pass's device function only (ck_states), for the backward, which hands it an f32
 * state that it keeps as it is */
static ssmc_status emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, bool has_state, ssmc_dtype state_dtype,
                        bool forward, diag *d)
{
    if (!cuda_chunk_supported(c, d)) return SSMC_ERR_UNSUPPORTED;
    int KP = round_up(c->K, 16), VT = cuda_chunk_vt(c), NV = (c->V + VT - 1) / VT;
    int KT = key_tile(c);
    strbuf name = {0}, name2 = {0};
    cuda_chunk_kernel_name(&name, m, c, 0);
    cuda_chunk_kernel_name(&name2, m, c, 1);
    sb_printf(out, "// ssmc: the chunked core of state %s of model %s (codegen/cuda_chunk.c)\n", m->tensors[c->state].name,
              m->name);
    sb_printf(out, "// chunks of %d steps, %d heads, K = %d (padded to %d, tiles of %d in the state pass), V = %d in tiles of %d, decay %s%s\n",
              c->C, c->nheads, c->K, KP, KT, c->V, VT, c->decay == PASS_DECAY_NONE     ? "none"
              : c->decay == PASS_DECAY_SCALAR ? "one per head"
                                              : "one per key (sub-chunks of 16)",
              c->delta ? ", delta rule (UT transform)" : "");
    sb_printf(out, "#define CK_NAME_STATES %s\n#define CK_NAME_READOUTS %s\n#define CK_C %d\n#define CK_K %d\n#define CK_KP %d\n"
                   "#define CK_KT %d\n#define CK_NK %d\n#define CK_V %d\n#define CK_VT %d\n#define CK_NV %d\n"
                   "#define CK_WARPS %d\n#define CK_DSPAN %d\n#define CK_NH %d\n#define CK_NR %d\n#define CK_DECAY %d\n#define CK_DELTA %d\n"
                   "#define CK_HAS_STATE %d\n#define CK_SE %lldLL\n#define CK_KSTR %lldLL\n#define CK_VSTR %lldLL\n",
              sb_cstr(&name), sb_cstr(&name2), c->C, c->K, KP, KT, KP / KT, c->V, VT, NV, WARPS, diag_span(c), c->nheads, c->nreadouts, (int)c->decay, c->delta,
              has_state, (long long)c->state_elems, (long long)c->key_stride, (long long)c->value_stride);
    unsigned prev = 0;
    for (int r = 0; r < c->nreadouts; r++) prev |= (unsigned)c->prev[r] << r;
    sb_printf(out, "#define CK_PREV %uu\n#define CK_FORWARD %d\n#define CK_STATE_T %s\n", prev, forward,
              state_type(has_state ? state_dtype : SSMC_F32));
    /* parameters: every readout's q, k, v, g, beta, every readout's R, the state */
    sb_puts(out, "#define CK_PARAMS ");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, ", const float *__restrict__ q%d", r);
    sb_puts(out, ", const float *__restrict__ k, const float *__restrict__ v, const float *__restrict__ g, const float *__restrict__ beta");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, ", float *__restrict__ r%d", r);
    sb_printf(out, ", %s *state\n", state_type(has_state ? state_dtype : SSMC_F32));
    sb_puts(out, "#define CK_LOAD_Q ");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, " ck_load4(qq[%d], q%d, row, t < n, i0, CK_K);", r, r);
    sb_puts(out, "\n#define CK_STORE_Q ");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, " Qs[(%d * CK_C + t) * QS + i0 + u] = ck_bf16(qq[%d][u]);", r, r);
    sb_puts(out, "\n#define CK_R(r) (");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, "%sr == %d ? r%d", r ? " : " : "", r, r);
    sb_puts(out, " : r0)\n");
    /* the storage types and conversions of the recurrent kernels' prelude */
    sb_puts(out, "#define SSMC_MASK 0xffffffffu\n");
    cuda_prelude(out);
    sb_puts(out, "__device__ __forceinline__ float ck_f32(unsigned short b) { return __uint_as_float((unsigned)b << 16); }\n");
    sb_printf(out, "__constant__ long long ck_head_off[%d] = {", c->nheads);
    for (int i = 0; i < c->nheads; i++) sb_printf(out, "%s%lldLL", i ? ", " : "", (long long)c->head_off[i]);
    sb_puts(out, "};\n");
    cuda_chunk_preamble(out);
    for (size_t i = 0; i < sizeof body / sizeof *body; i++) {
        if (!forward && !strcmp(body[i], "#if CK_FORWARD\n")) break; /* the kernels: the forward's only */
        sb_puts(out, body[i]);
    }
    sb_free(&name);
    sb_free(&name2);
    return out->failed ? SSMC_ERR_NOMEM : SSMC_OK;
}

ssmc_status cuda_chunk_emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, bool has_state,
                            ssmc_dtype state_dtype, diag *d)
{
    return emit(out, m, c, has_state, state_dtype, true, d);
}

ssmc_status cuda_chunk_emit_states(strbuf *out, const ir_model *m, const plan_chunk_core *c, diag *d)
{
    return emit(out, m, c, true, SSMC_F32, false, d);
}
