/* cuda_chunk_bwd.c: CUDA C of a chunked core's backward (chunked_run.h,
 * core_backward; the CPU's reference is codegen/cpu_chunk.c), the same
 * algorithm: the chunk start states recomputed from the run's initial state,
 * then the chunks from the last, the cotangent dH of a chunk's end state
 * carried to its start (the reverse chunk-state scan). This version renders
 * no decay and a decay per head, with and without the delta rule, and a decay
 * per key without it, readouts of S(t) and S(t-1) (the delta rule with a
 * decay per key is not chunked: cuda_chunk_bwd_supported refuses it).
 *
 * One block of 4 warps per (sequence, head). Per chunk of n <= C steps, with
 * b the cumulative log-decay, H the start state, dH the end state's
 * cotangent, Kt[s] = k_s exp(b_last - b_s), E_t = exp(b_tb) (tb = t, or t - 1
 * for S(t-1); 1 where tb < 0), M[t][s] = exp(b_tb - b_s) for s <= tb, else 0:
 *   carry:    dH0 = exp(b_last) dH; dK = diag(exp(b_last - b)) U dH^T;
 *             dU = Kt dH; db_last += exp(b_last) <H, dH> + sum_s k_s . dK_s,
 *             db_s -= k_s . dK_s;
 *   readouts: P = dR H^T, D = dR U^T, S = Q K^T; W = M o D, A = M o S;
 *             dQ = diag(E) P + W K; dK += W^T Q; dU += A^T dR;
 *             dH0 += (diag(E) Q)^T dR; db_tb += E_t q_t . P_t + sum_s (M o S o D)[t][s],
 *             db_s -= sum_t (M o S o D)[t][s];
 *   delta rule (U = (I + L)^-1 (V - diag(beta exp(b)) K H), recomputed the
 *             forward's way): dRHS = (I + L)^-T dU by back substitution;
 *             dL = -(dRHS U^T) below the diagonal, F = dL o beta exp(b_t - b_s):
 *             dK += F K + F^T K, dbeta, db; the correction: Y = dRHS H^T,
 *             dK -= diag(beta exp(b)) Y, dH0 -= (diag(beta exp(b)) K)^T dRHS;
 *             dv = dRHS (else dv = dU); k and w are one vector (passes/chunk.c):
 *             the whole gradient along it in dk, dw zero;
 *   dg_s = sum_{t >= s} db_t; dH <- dH0.
 * With a decay per key (b_t[i]) the exponents are per key, db is [C][K], and
 * A[t][s] = sum_i q_t[i] k_s[i] exp(b_tb[i] - b_s[i]) has no factor outside
 * the sum: A and the intra-chunk dq_t[i] = sum_s k_s[i] exp(b_tb[i] - b_s[i])
 * D[t][s] and dk are summed elementwise in f32 over s <= tb only (still to do:
 * the sub-chunks of 16 with reference points that the forward puts on tensor
 * cores); db_tb += q_t o dq_t, db_s -= k_s o dk_s(intra). P, D, dU += A^T dR
 * and the carry stay on tensor cores.
 * Every matrix product is cb_mm: mma.sync m16n8k16 over 16 x 8 tiles, bf16
 * operands formed from f32 as the fragments are loaded, f32 accumulators;
 * the masks, the exponents and the reductions in f32. Every exponent is
 * b_tb - b_s with s <= tb, b_last - b_s, b_last or b_tb: <= 0 where the
 * decays are <= 1. The working matrices (K and V zero-padded to multiples of
 * 16) and the chunk start states are the block's slice of the workspace in
 * global memory (cuda_chunk_bwd_ws_bytes), not shared memory: the version
 * that stages them in shared memory is still to do. As cuda_chunk.c, the
 * source needs no header, and without __CUDA_ARCH__ the mma is the emulator's. */
#include "codegen/cuda_chunk.h"

#define THREADS 128

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

bool cuda_chunk_bwd_supported(const plan_chunk_core *c, diag *d)
{
    const char *why = c->decay == PASS_DECAY_KEY && c->delta ? "the delta rule with a decay per key"
                      : c->C % 16 || c->C > 64     ? "a chunk length that is not a multiple of 16 up to 64"
                      : c->K > 256 || c->V > 256   ? "a key or value dim above 256"
                                                   : NULL;
    if (why && d)
        diag_error(d, "cuda: the backward of the chunked core does not render %s yet (use --algo=recurrent, or the cpu "
                      "device)", why);
    return !why;
}

/* floats of a block's workspace besides the nch chunk start states */
static size_t fixed_floats(const plan_chunk_core *c)
{
    size_t C = (size_t)c->C, KP = (size_t)round_up(c->K, 16), VP = (size_t)round_up(c->V, 16), NR = (size_t)c->nreadouts;
    return 2 * KP * VP + (NR + 8) * C * KP + (NR + 3) * C * VP + 4 * C * C + 4 * C + 256;
}

/* The three-pass form's X buffer (bf16 elements): a K x V matrix stored (VP rows of KP + 8) or transposed
 * (KP rows of VP + 8). */
static size_t xn_of(const plan_chunk_core *c)
{
    size_t KP = (size_t)round_up(c->K, 16), VP = (size_t)round_up(c->V, 16), a = VP * (KP + 8), b = KP * (VP + 8);
    return a > b ? a : b;
}

/* Shared memory of the three-pass form's gradient pass (body_passes' CB_NAME_GRADS), in bytes. */
static size_t grads_smem(const plan_chunk_core *c)
{
    size_t C = (size_t)c->C, KP = (size_t)round_up(c->K, 16), VP = (size_t)round_up(c->V, 16);
    size_t QS = KP + 8, VS = VP + 8, TS = C + 8;
    size_t h = 2 * (2 * C * QS + 2 * KP * TS + 2 * C * VS + VP * TS + 3 * C * TS + xn_of(c));
    return (h + 15) / 16 * 16 + 4 * 2 * C;
}

/* The backward in three passes (the forward's state pass, the end-state cotangents from the last chunk, every
 * chunk's gradients at once) serves a decay none or per head without the delta rule, where the gradient pass's
 * block fits an SM's shared memory (227 KiB: K and V up to 128 at C = 64); the rest run the one kernel below. */
#define SMEM_MAX ((size_t)227 * 1024)
static bool three_passes(const plan_chunk_core *c)
{
    return c->decay != PASS_DECAY_KEY && !c->delta && grads_smem(c) <= SMEM_MAX;
}

int cuda_chunk_bwd_passes(const plan_chunk_core *c) { return three_passes(c) ? 3 : 1; }

size_t cuda_chunk_bwd_ws_bytes(const plan_chunk_core *c, int64_t batch, int64_t T)
{
    size_t KP = (size_t)round_up(c->K, 16), VP = (size_t)round_up(c->V, 16), nch = (size_t)((T + c->C - 1) / c->C);
    if (three_passes(c)) { /* the start states and the end states' cotangents, bf16, in cuda_chunk.c's layout */
        size_t VT = (size_t)cuda_chunk_vt(c), NV = ((size_t)c->V + VT - 1) / VT;
        return 2 * 2 * (size_t)batch * (size_t)c->nheads * nch * NV * VT * KP + 256;
    }
    return (size_t)batch * (size_t)c->nheads * (nch * KP * VP + fixed_floats(c)) * sizeof(float);
}

cuda_launch cuda_chunk_bwd_launch(const plan_chunk_core *c, int64_t batch, int64_t T, int pass)
{
    if (!three_passes(c)) return (cuda_launch){.blocks = batch * c->nheads, .threads = THREADS, .shared_bytes = 0};
    if (pass < 2) return cuda_chunk_launch(c, batch, T, 0); /* the state pass's grid, block and shared memory */
    return (cuda_launch){.blocks = batch * c->nheads * ((T + c->C - 1) / c->C), .threads = 256,
                         .shared_bytes = (unsigned)grads_smem(c)};
}

void cuda_chunk_bwd_kernel_name(strbuf *out, const ir_model *m, const plan_chunk_core *c, int pass)
{
    static const char *const suffix[] = {"_states", "_dh", "_grads"};
    sb_printf(out, "ssmc_%s_chunk_bwd_%s%s", m->name, m->tensors[c->state].name,
              three_passes(c) ? suffix[pass < 0 ? 0 : pass > 2 ? 2 : pass] : "");
}

/* The kernel's body: one string per line (C11 promises literals of 4095 bytes only). */
static const char *const body[] = {
    "__device__ __forceinline__ unsigned cb_pair(float x0, float x1) { return (unsigned)ck_bf16(x0) | (unsigned)ck_bf16(x1) << 16; }\n",
    "/* D[m][n] = (acc ? D[m][n] : 0) + sum_k A(m, k) B(k, n), m < M, n < N (multiples of 16 and 8), k < KD (of 16),\n",
    " * X(r, c) = X[r * xr + c * xc]: the block's 4 warps over the 16 x 8 tiles, bf16 operands, f32 accumulators;\n",
    " * D is none of the operands */\n",
    "__device__ void cb_mm(float *D, int ld, int M, int N, int KD, const float *A, int ar, int ac, const float *Bm, int br,\n",
    "                      int bcs, int acc, int warp, int gq, int tq)\n",
    "{\n",
    "    const int nt = N / 8, tiles = M / 16 * nt;\n",
    "    for (int tile = warp; tile < tiles; tile += 4) {\n",
    "        const int m0 = tile / nt * 16, n0 = tile % nt * 8;\n",
    "        float d[4];\n",
    "        for (int e = 0; e < 4; e++) d[e] = acc ? D[(m0 + gq + (e >> 1) * 8) * ld + n0 + 2 * tq + (e & 1)] : 0.f;\n",
    "        const float *a0 = A + (m0 + gq) * ar, *a1 = A + (m0 + gq + 8) * ar, *bb = Bm + (n0 + gq) * bcs;\n",
    "        for (int k0 = 0; k0 < KD; k0 += 16) {\n",
    "            const int k = k0 + 2 * tq;\n",
    "            ck_mma(d, cb_pair(a0[k * ac], a0[(k + 1) * ac]), cb_pair(a1[k * ac], a1[(k + 1) * ac]),\n",
    "                   cb_pair(a0[(k + 8) * ac], a0[(k + 9) * ac]), cb_pair(a1[(k + 8) * ac], a1[(k + 9) * ac]),\n",
    "                   cb_pair(bb[k * br], bb[(k + 1) * br]), cb_pair(bb[(k + 8) * br], bb[(k + 9) * br]));\n",
    "        }\n",
    "        for (int e = 0; e < 4; e++) D[(m0 + gq + (e >> 1) * 8) * ld + n0 + 2 * tq + (e & 1)] = d[e];\n",
    "    }\n",
    "}\n",
    "#define KV (CB_KP * CB_VP)\n",
    "#define CKP (CB_C * CB_KP)\n",
    "#define CVP (CB_C * CB_VP)\n",
    "#define CC (CB_C * CB_C)\n",
    "#define CB_ROW(t) (((b * T + c0 + (t)) * CB_NH + hh))\n",
    "/* b at step t, key i: [C][KP] with a decay per key, else [C] */\n",
    "#define CB_B(t, i) bc[CB_DECAY == 2 ? (t) * CB_KP + (i) : (t)]\n",
    "/* the chunk's cumulative log-decay bc, keys Kc, keys scaled to its end Kt = k_s exp(b_last - b_s), values U */\n",
    "__device__ void cb_load_kv(const float *k, const float *v, const float *g, const float *beta, long long b, long long T,\n",
    "                           int hh, long long c0, int n, float *bc, float *bs, float *Kc, float *Kt, float *U, int tid)\n",
    "{\n",
    "#if CB_DECAY == 2\n",
    "    for (int x = tid; x < CKP; x += 128) {\n",
    "        int t = x / CB_KP, i = x % CB_KP;\n",
    "        bc[x] = t < n && i < CB_K ? g[CB_ROW(t) * CB_K + i] : 0.f;\n",
    "    }\n",
    "#endif\n",
    "    for (int t = tid; t < CB_C; t += 128) {\n",
    "#if CB_DECAY == 1\n",
    "        bc[t] = t < n ? g[CB_ROW(t)] : 0.f;\n",
    "#elif CB_DECAY == 0\n",
    "        bc[t] = 0.f;\n",
    "#endif\n",
    "#if CB_DELTA\n",
    "        bs[t] = t < n ? beta[CB_ROW(t)] : 0.f;\n",
    "#endif\n",
    "    }\n",
    "    __syncthreads();\n",
    "#if CB_DECAY == 2\n",
    "    for (int i = tid; i < CB_KP; i += 128)\n",
    "        for (int t = 1; t < CB_C; t++) bc[t * CB_KP + i] += bc[(t - 1) * CB_KP + i];\n",
    "#else\n",
    "    if (tid == 0)\n",
    "        for (int t = 1; t < CB_C; t++) bc[t] += bc[t - 1];\n",
    "#endif\n",
    "    __syncthreads();\n",
    "    for (int x = tid; x < CKP; x += 128) {\n",
    "        int t = x / CB_KP, i = x % CB_KP;\n",
    "        float kv = t < n && i < CB_K ? k[CB_ROW(t) * CB_K + i] : 0.f;\n",
    "        Kc[x] = kv;\n",
    "        Kt[x] = t < n ? kv * expf(CB_B(n - 1, i) - CB_B(t, i)) : 0.f;\n",
    "    }\n",
    "    for (int x = tid; x < CVP; x += 128) {\n",
    "        int t = x / CB_VP, j = x % CB_VP;\n",
    "        U[x] = t < n && j < CB_V ? v[CB_ROW(t) * CB_V + j] : 0.f;\n",
    "    }\n",
    "}\n",
    "#if CB_DELTA\n",
    "/* the delta rule's pseudo-values from the chunk's start state H: WW = K K^T, L[t][s] = beta_t WW[t][s] exp(b_t - b_s)\n",
    " * (s < t), U = (I + L)^-1 (V - diag(beta exp(b)) K H) by forward substitution, a value column a thread (Z: scratch) */\n",
    "__device__ void cb_delta_values(const float *H, const float *Kc, const float *bc, const float *bs, int n, float *WW,\n",
    "                                float *L, float *Z, float *U, int tid, int warp, int gq, int tq)\n",
    "{\n",
    "    __syncthreads();\n",
    "    cb_mm(WW, CB_C, CB_C, CB_C, CB_KP, Kc, CB_KP, 1, Kc, 1, CB_KP, 0, warp, gq, tq); /* K K^T */\n",
    "    cb_mm(Z, CB_VP, CB_C, CB_VP, CB_KP, Kc, CB_KP, 1, H, CB_VP, 1, 0, warp, gq, tq);  /* K H */\n",
    "    __syncthreads();\n",
    "    for (int x = tid; x < CC; x += 128) {\n",
    "        int t = x / CB_C, s = x % CB_C;\n",
    "        L[x] = t < n && s < t ? bs[t] * WW[x] * expf(bc[t] - bc[s]) : 0.f;\n",
    "    }\n",
    "    for (int x = tid; x < CVP; x += 128) {\n",
    "        int t = x / CB_VP;\n",
    "        if (t < n) U[x] -= bs[t] * expf(bc[t]) * Z[x];\n",
    "    }\n",
    "    __syncthreads();\n",
    "    for (int j = tid; j < CB_VP; j += 128)\n",
    "        for (int t = 1; t < n; t++) {\n",
    "            float acc = U[t * CB_VP + j];\n",
    "            for (int s = 0; s < t; s++) acc -= L[t * CB_C + s] * U[s * CB_VP + j];\n",
    "            U[t * CB_VP + j] = acc;\n",
    "        }\n",
    "    __syncthreads();\n",
    "}\n",
    "#endif\n",
    "extern \"C\" __global__ void __launch_bounds__(128) CB_NAME(long long B, long long T, float *ws CB_PARAMS)\n",
    "{\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;\n",
    "    const long long blk = blockIdx.x;\n",
    "    const int hh = (int)(blk % CB_NH);\n",
    "    const long long b = blk / CB_NH;\n",
    "    if (b >= B) return;\n",
    "    const long long nch = (T + CB_C - 1) / CB_C;\n",
    "    /* this block's workspace (cuda_chunk_bwd_ws_bytes), zero-padded matrices of f32 */\n",
    "    float *Hs = ws + blk * (nch * KV + CB_FIXED); /* [nch][KP][VP] every chunk's start state */\n",
    "    float *dH = Hs + nch * KV, *dH0 = dH + KV;     /* the cotangents of the chunk's end and start states */\n",
    "    float *Qm = dH0 + KV;                          /* [NR][C][KP] */\n",
    "    float *Kc = Qm + CB_NR * CKP, *Kt = Kc + CKP, *dQ = Kt + CKP, *dK = dQ + CKP, *Pm = dK + CKP, *Mk = Pm + CKP;\n",
    "    float *U = Mk + CKP, *dR = U + CVP, *dU = dR + CB_NR * CVP; /* [C][VP], [NR][C][VP], [C][VP] */\n",
    "    float *S = dU + CVP, *Dm = S + CC;                          /* [C][C] */\n",
    "    float *bc = Dm + CC, *db = bc + CKP, *rowv = db + CKP, *colv = rowv + CB_C, *red = colv + CB_C; /* red: [256] */\n",
    "    /* bc, db: [C][KP] with a decay per key (db's column i is thread i's), else [C] (db[t] thread t's) */\n",
    "    float *WW = red + 256, *Lm = WW + CC, *dRHS = Lm + CC, *bs = dRHS + CVP, *dbs = bs + CB_C; /* the delta rule's */\n",
    "    const long long sb = b * CB_SE + cb_head_off[hh];\n",
    "    long long c0 = 0;\n",
    "    /* the chunk start states, from the initial state */\n",
    "    for (int x = tid; x < KV; x += 128) {\n",
    "        int i = x / CB_VP, j = x % CB_VP;\n",
    "        Hs[x] = state && i < CB_K && j < CB_V ? state[sb + i * CB_KSTR + j * CB_VSTR] : 0.f;\n",
    "    }\n",
    "    for (long long ch = 0; ch + 1 < nch; ch++) {\n",
    "        c0 = ch * CB_C;\n",
    "        __syncthreads();\n",
    "        cb_load_kv(k, v, g, beta, b, T, hh, c0, CB_C, bc, bs, Kc, Kt, U, tid);\n",
    "        float *H0 = Hs + ch * KV, *H1 = H0 + KV;\n",
    "#if CB_DELTA\n",
    "        cb_delta_values(H0, Kc, bc, bs, CB_C, WW, Lm, dRHS, U, tid, warp, gq, tq);\n",
    "#endif\n",
    "        for (int x = tid; x < KV; x += 128) H1[x] = expf(CB_B(CB_C - 1, x / CB_VP)) * H0[x];\n",
    "        __syncthreads();\n",
    "        cb_mm(H1, CB_VP, CB_KP, CB_VP, CB_C, Kt, 1, CB_KP, U, CB_VP, 1, 1, warp, gq, tq); /* += Kt^T U */\n",
    "    }\n",
    "    /* the reverse chunk-state scan */\n",
    "    for (int x = tid; x < KV; x += 128) {\n",
    "        int i = x / CB_VP, j = x % CB_VP;\n",
    "        dH[x] = dstate && i < CB_K && j < CB_V ? dstate[sb + i * CB_KSTR + j * CB_VSTR] : 0.f;\n",
    "    }\n",
    "    for (long long ch = nch - 1; ch >= 0; ch--) {\n",
    "        c0 = ch * CB_C;\n",
    "        const int n = (int)(T - c0 < CB_C ? T - c0 : CB_C), last = n - 1;\n",
    "        const float *H = Hs + ch * KV;\n",
    "        __syncthreads();\n",
    "        cb_load_kv(k, v, g, beta, b, T, hh, c0, n, bc, bs, Kc, Kt, U, tid);\n",
    "#if CB_DELTA\n",
    "        cb_delta_values(H, Kc, bc, bs, n, WW, Lm, dRHS, U, tid, warp, gq, tq);\n",
    "#endif\n",
    "        for (int r = 0; r < CB_NR; r++) {\n",
    "            const float *q = CB_Q(r), *dr = CB_DR(r);\n",
    "            for (int x = tid; x < CKP; x += 128) {\n",
    "                int t = x / CB_KP, i = x % CB_KP;\n",
    "                Qm[r * CKP + x] = t < n && i < CB_K ? q[CB_ROW(t) * CB_K + i] : 0.f;\n",
    "            }\n",
    "            for (int x = tid; x < CVP; x += 128) {\n",
    "                int t = x / CB_VP, j = x % CB_VP;\n",
    "                dR[r * CVP + x] = t < n && j < CB_V ? dr[CB_ROW(t) * CB_V + j] : 0.f;\n",
    "            }\n",
    "        }\n",
    "        /* the carry H' = exp(b_last) H + sum_s exp(b_last - b_s) k_s U_s^T */\n",
    "#if CB_DECAY == 2\n",
    "        for (int i = tid; i < CB_KP; i += 128) {\n",
    "            float e = expf(CB_B(last, i)), acc = 0.f;\n",
    "            for (int x = 0; x < CB_VP; x++) {\n",
    "                acc += H[i * CB_VP + x] * dH[i * CB_VP + x];\n",
    "                dH0[i * CB_VP + x] = e * dH[i * CB_VP + x];\n",
    "            }\n",
    "            red[i] = e * acc;\n",
    "        }\n",
    "#else\n",
    "        const float blast = bc[last], eb = expf(blast);\n",
    "        float part = 0.f;\n",
    "        for (int x = tid; x < KV; x += 128) {\n",
    "            part += H[x] * dH[x];\n",
    "            dH0[x] = eb * dH[x];\n",
    "        }\n",
    "        red[tid] = part;\n",
    "#endif\n",
    "        __syncthreads();\n",
    "        cb_mm(Mk, CB_KP, CB_C, CB_KP, CB_VP, U, CB_VP, 1, dH, 1, CB_VP, 0, warp, gq, tq); /* U dH^T */\n",
    "        cb_mm(dU, CB_VP, CB_C, CB_VP, CB_KP, Kt, CB_KP, 1, dH, CB_VP, 1, 0, warp, gq, tq); /* Kt dH */\n",
    "        __syncthreads();\n",
    "#if CB_DECAY == 2\n",
    "        for (int i = tid; i < CB_KP; i += 128) {\n",
    "            float tot = 0.f;\n",
    "            for (int s = 0; s < CB_C; s++) {\n",
    "                float m = s < n ? expf(CB_B(last, i) - CB_B(s, i)) * Mk[s * CB_KP + i] : 0.f, tb = Kc[s * CB_KP + i] * m;\n",
    "                dK[s * CB_KP + i] = m;\n",
    "                db[s * CB_KP + i] = -tb;\n",
    "                tot += tb;\n",
    "            }\n",
    "            db[last * CB_KP + i] += red[i] + tot;\n",
    "        }\n",
    "#else\n",
    "        for (int s = tid; s < CB_C; s += 128) {\n",
    "            float e = s < n ? expf(blast - bc[s]) : 0.f, tb = 0.f;\n",
    "            for (int i = 0; i < CB_KP; i++) {\n",
    "                float m = e * Mk[s * CB_KP + i];\n",
    "                dK[s * CB_KP + i] = m;\n",
    "                tb += Kc[s * CB_KP + i] * m;\n",
    "            }\n",
    "            colv[s] = tb;\n",
    "            db[s] = -tb;\n",
    "        }\n",
    "        __syncthreads();\n",
    "        if (tid == 0) {\n",
    "            float hd = 0.f, tot = 0.f;\n",
    "            for (int x = 0; x < 128; x++) hd += red[x];\n",
    "            for (int t = 0; t < n; t++) tot += colv[t];\n",
    "            db[last] += eb * hd + tot;\n",
    "        }\n",
    "#endif\n",
    "        /* the readouts R_t = exp(b_tb) H^T q_t + sum_{s <= tb} exp(b_tb - b_s) (q_t . k_s) U_s, tb = t (t - 1 for S(t-1)) */\n",
    "        for (int r = 0; r < CB_NR; r++) {\n",
    "            const int prev = (CB_PREV >> r) & 1;\n",
    "            float *Q = Qm + r * CKP, *dRr = dR + r * CVP;\n",
    "            __syncthreads();\n",
    "            cb_mm(Pm, CB_KP, CB_C, CB_KP, CB_VP, dRr, CB_VP, 1, H, 1, CB_VP, 0, warp, gq, tq); /* dR H^T */\n",
    "            cb_mm(Dm, CB_C, CB_C, CB_C, CB_VP, dRr, CB_VP, 1, U, 1, CB_VP, 0, warp, gq, tq);  /* dR U^T */\n",
    "#if CB_DECAY == 2\n",
    "            /* a decay per key: A[t][s] = sum_i q_t[i] k_s[i] exp(b_tb[i] - b_s[i]) (s <= tb), and the intra-chunk\n",
    "             * dq, dk (into Mk), elementwise in f32, no exponent formed for s > tb */\n",
    "            for (int x = tid; x < CC; x += 128) {\n",
    "                int t = x / CB_C, s = x % CB_C, tb = t - prev;\n",
    "                float a = 0.f;\n",
    "                if (t < n && s <= tb)\n",
    "                    for (int i = 0; i < CB_K; i++) a += Q[t * CB_KP + i] * Kc[s * CB_KP + i] * expf(CB_B(tb, i) - CB_B(s, i));\n",
    "                S[x] = a;\n",
    "            }\n",
    "            __syncthreads();\n",
    "            for (int x = tid; x < CKP; x += 128) {\n",
    "                int t = x / CB_KP, i = x % CB_KP, tb = t - prev;\n",
    "                float dq = 0.f, dk = 0.f;\n",
    "                if (t < n && i < CB_K) {\n",
    "                    dq = (tb >= 0 ? expf(CB_B(tb, i)) : 1.f) * Pm[x];\n",
    "                    for (int s = 0; s <= tb; s++) dq += Kc[s * CB_KP + i] * expf(CB_B(tb, i) - CB_B(s, i)) * Dm[t * CB_C + s];\n",
    "                    /* t as a key: the queries u with u - prev >= t */\n",
    "                    for (int u = t + prev; u < n; u++)\n",
    "                        dk += Q[u * CB_KP + i] * expf(CB_B(u - prev, i) - CB_B(t, i)) * Dm[u * CB_C + t];\n",
    "                }\n",
    "                dQ[x] = dq;\n",
    "                Mk[x] = dk;\n",
    "            }\n",
    "            __syncthreads();\n",
    "            for (int i = tid; i < CB_KP; i += 128)\n",
    "                for (int t = 0; t < n; t++) {\n",
    "                    if (t - prev >= 0) db[(t - prev) * CB_KP + i] += Q[t * CB_KP + i] * dQ[t * CB_KP + i];\n",
    "                    db[t * CB_KP + i] -= Kc[t * CB_KP + i] * Mk[t * CB_KP + i];\n",
    "                }\n",
    "            for (int x = tid; x < CKP; x += 128) dK[x] += Mk[x];\n",
    "            __syncthreads();\n",
    "            cb_mm(dU, CB_VP, CB_C, CB_VP, CB_C, S, 1, CB_C, dRr, CB_VP, 1, 1, warp, gq, tq);  /* += A^T dR */\n",
    "#else\n",
    "            cb_mm(S, CB_C, CB_C, CB_C, CB_KP, Q, CB_KP, 1, Kc, 1, CB_KP, 0, warp, gq, tq);    /* Q K^T */\n",
    "            __syncthreads();\n",
    "            for (int t = tid; t < CB_C; t += 128) {\n",
    "                const int tb = t - prev;\n",
    "                float row = 0.f, col = 0.f;\n",
    "                if (t < n && tb >= 0) {\n",
    "                    float qp = 0.f;\n",
    "                    for (int i = 0; i < CB_KP; i++) qp += Q[t * CB_KP + i] * Pm[t * CB_KP + i];\n",
    "                    row = expf(bc[tb]) * qp;\n",
    "                    for (int s = 0; s <= tb; s++) row += expf(bc[tb] - bc[s]) * S[t * CB_C + s] * Dm[t * CB_C + s];\n",
    "                }\n",
    "                for (int u = t + prev; u < n; u++) col += expf(bc[u - prev] - bc[t]) * S[u * CB_C + t] * Dm[u * CB_C + t];\n",
    "                rowv[t] = row;\n",
    "                colv[t] = col;\n",
    "            }\n",
    "            __syncthreads();\n",
    "            for (int x = tid; x < CC; x += 128) {\n",
    "                int t = x / CB_C, s = x % CB_C, tb = t - prev;\n",
    "                float m = t < n && s <= tb ? expf(bc[tb] - bc[s]) : 0.f;\n",
    "                Dm[x] *= m;\n",
    "                S[x] *= m;\n",
    "            }\n",
    "            for (int x = tid; x < CKP; x += 128) {\n",
    "                int t = x / CB_KP, tb = t - prev;\n",
    "                dQ[x] = t < n ? (tb >= 0 ? expf(bc[tb]) : 1.f) * Pm[x] : 0.f;\n",
    "            }\n",
    "            for (int t = tid; t < CB_C; t += 128) db[t] += (t + prev < n ? rowv[t + prev] : 0.f) - colv[t];\n",
    "            __syncthreads();\n",
    "            cb_mm(dQ, CB_KP, CB_C, CB_KP, CB_C, Dm, CB_C, 1, Kc, CB_KP, 1, 1, warp, gq, tq);  /* += W K */\n",
    "            cb_mm(dK, CB_KP, CB_C, CB_KP, CB_C, Dm, 1, CB_C, Q, CB_KP, 1, 1, warp, gq, tq);   /* += W^T Q */\n",
    "            cb_mm(dU, CB_VP, CB_C, CB_VP, CB_C, S, 1, CB_C, dRr, CB_VP, 1, 1, warp, gq, tq);  /* += A^T dR */\n",
    "#endif\n",
    "            __syncthreads();\n",
    "            float *dq = CB_DQ(r);\n",
    "            for (int x = tid; x < CKP; x += 128) {\n",
    "                int t = x / CB_KP, i = x % CB_KP, tb = t - prev;\n",
    "                if (t < n && i < CB_K) dq[CB_ROW(t) * CB_K + i] = dQ[x];\n",
    "                Q[x] *= t < n ? (tb >= 0 ? expf(CB_B(tb, i)) : 1.f) : 0.f;\n",
    "            }\n",
    "            __syncthreads();\n",
    "            cb_mm(dH0, CB_VP, CB_KP, CB_VP, CB_C, Q, 1, CB_KP, dRr, CB_VP, 1, 1, warp, gq, tq); /* += (E Q)^T dR */\n",
    "        }\n",
    "        __syncthreads();\n",
    "#if CB_DELTA\n",
    "        /* through U = (I + L)^-1 RHS: dRHS = (I + L)^-T dU by back substitution, a value column a thread */\n",
    "        for (int j = tid; j < CB_VP; j += 128)\n",
    "            for (int t = CB_C - 1; t >= 0; t--) {\n",
    "                float acc = 0.f;\n",
    "                if (t < n) {\n",
    "                    acc = dU[t * CB_VP + j];\n",
    "                    for (int s = t + 1; s < n; s++) acc -= Lm[s * CB_C + t] * dRHS[s * CB_VP + j];\n",
    "                }\n",
    "                dRHS[t * CB_VP + j] = acc;\n",
    "            }\n",
    "        __syncthreads();\n",
    "        cb_mm(S, CB_C, CB_C, CB_C, CB_VP, dRHS, CB_VP, 1, U, 1, CB_VP, 0, warp, gq, tq);     /* G = dRHS U^T, dL = -G */\n",
    "        cb_mm(Pm, CB_KP, CB_C, CB_KP, CB_VP, dRHS, CB_VP, 1, H, 1, CB_VP, 0, warp, gq, tq);  /* Y = dRHS H^T */\n",
    "        __syncthreads();\n",
    "        /* L[t][s] = beta_t (k_t . k_s) exp(b_t - b_s): F = dL beta exp(b_t - b_s) into Dm; the correction\n",
    "         * RHS_t = v_t - beta_t exp(b_t) H^T k_t: dk_t -= beta_t exp(b_t) Y_t, dH0 -= (diag(beta exp(b)) K)^T dRHS */\n",
    "        for (int t = tid; t < CB_C; t += 128) {\n",
    "            float dbeta = 0.f, row = 0.f, col = 0.f, wy = 0.f, et = t < n ? expf(bc[t]) : 0.f;\n",
    "            for (int s = 0; s < CB_C; s++) {\n",
    "                float dl = t < n && s < t ? -S[t * CB_C + s] : 0.f, e = t < n && s < t ? expf(bc[t] - bc[s]) : 0.f;\n",
    "                dbeta += dl * WW[t * CB_C + s] * e;\n",
    "                Dm[t * CB_C + s] = dl * bs[t] * e;\n",
    "                row += dl * Lm[t * CB_C + s];\n",
    "                float dl2 = s < n && t < s ? -S[s * CB_C + t] : 0.f;\n",
    "                col += dl2 * Lm[s * CB_C + t];\n",
    "            }\n",
    "            for (int i = 0; i < CB_KP; i++) wy += Kc[t * CB_KP + i] * Pm[t * CB_KP + i];\n",
    "            dbs[t] = dbeta - et * wy;\n",
    "            db[t] += row - col - bs[t] * et * wy;\n",
    "        }\n",
    "        for (int x = tid; x < CKP; x += 128) {\n",
    "            int t = x / CB_KP;\n",
    "            float f = t < n ? bs[t] * expf(bc[t]) : 0.f;\n",
    "            dK[x] -= f * Pm[x];\n",
    "            Mk[x] = -f * Kc[x];\n",
    "        }\n",
    "        __syncthreads();\n",
    "        cb_mm(dK, CB_KP, CB_C, CB_KP, CB_C, Dm, CB_C, 1, Kc, CB_KP, 1, 1, warp, gq, tq);  /* += F K */\n",
    "        cb_mm(dK, CB_KP, CB_C, CB_KP, CB_C, Dm, 1, CB_C, Kc, CB_KP, 1, 1, warp, gq, tq);  /* += F^T K */\n",
    "        cb_mm(dH0, CB_VP, CB_KP, CB_VP, CB_C, Mk, 1, CB_KP, dRHS, CB_VP, 1, 1, warp, gq, tq); /* -= (beta e^b K)^T dRHS */\n",
    "        __syncthreads();\n",
    "        const float *dV = dRHS;\n",
    "        /* k and w are one vector (passes/chunk.c): the whole gradient along it in dk, dw zero */\n",
    "        for (int x = tid; x < CKP; x += 128) {\n",
    "            int t = x / CB_KP, i = x % CB_KP;\n",
    "            if (t < n && i < CB_K) dw[CB_ROW(t) * CB_K + i] = 0.f;\n",
    "        }\n",
    "        for (int t = tid; t < n; t += 128) dbeta[CB_ROW(t)] = dbs[t];\n",
    "#else\n",
    "        const float *dV = dU;\n",
    "#endif\n",
    "        for (int x = tid; x < CKP; x += 128) {\n",
    "            int t = x / CB_KP, i = x % CB_KP;\n",
    "            if (t < n && i < CB_K) dk[CB_ROW(t) * CB_K + i] = dK[x];\n",
    "        }\n",
    "        for (int x = tid; x < CVP; x += 128) {\n",
    "            int t = x / CB_VP, j = x % CB_VP;\n",
    "            if (t < n && j < CB_V) dv[CB_ROW(t) * CB_V + j] = dV[x];\n",
    "        }\n",
    "#if CB_DECAY == 2\n",
    "        /* b_t = g_0 + .. + g_t: dg_s = sum_{t >= s} db_t, per key */\n",
    "        for (int i = tid; i < CB_K; i += 128) {\n",
    "            float acc = 0.f;\n",
    "            for (int t = n - 1; t >= 0; t--) dg[CB_ROW(t) * CB_K + i] = acc += db[t * CB_KP + i];\n",
    "        }\n",
    "#elif CB_DECAY\n",
    "        /* b_t = g_0 + .. + g_t: dg_s = sum_{t >= s} db_t */\n",
    "        if (tid == 0) {\n",
    "            float acc = 0.f;\n",
    "            for (int t = n - 1; t >= 0; t--) dg[CB_ROW(t)] = acc += db[t];\n",
    "        }\n",
    "#endif\n",
    "        for (int x = tid; x < KV; x += 128) dH[x] = dH0[x];\n",
    "    }\n",
    "    __syncthreads();\n",
    "    if (dstate)\n",
    "        for (int x = tid; x < KV; x += 128) {\n",
    "            int i = x / CB_VP, j = x % CB_VP;\n",
    "            if (i < CB_K && j < CB_V) dstate[sb + i * CB_KSTR + j * CB_VSTR] = dH[x];\n",
    "        }\n",
    "}\n",
};

/* The three-pass form's kernels (after cuda_chunk.c's state pass, cuda_chunk_emit_states). */
static const char *const body_passes[] = {
    "/* ---- the backward in three passes (a decay none or per head, no delta rule): ck_states (cuda_chunk.c's\n",
    " * state pass: the chunks' start states), then the end-state cotangents from the last chunk, then every chunk's\n",
    " * gradients at once ---- */\n",
    "#define CB_DHWS(b, hh, ci) (CK_HWS(b, hh, ci) + B * CK_NH * nchunks * CK_HROWS)\n",
    "/* Pass 1: the start states (bf16, CK_HWS) from the given state, which stays as it is */\n",
    "extern \"C\" __global__ void __launch_bounds__(CK_THREADS, 2) CB_NAME_STATES(long long B, long long T, float *ws CB_PARAMS)\n",
    "{\n",
    "    ck_states(B, T, ws, k, v, g, beta, (float *)state);\n",
    "}\n",
    "/* a (the thread's rows r0 and r0 + 8 of a 16 x 8 fragment, x0 and x1) summed over the four lanes of a row\n",
    " * into acc[r] where r >= 0 */\n",
    "__device__ __forceinline__ void cb_rows_add(float *acc, int r0, float x0, float x1, int tq)\n",
    "{\n",
    "    for (int o = 1; o < 4; o <<= 1) {\n",
    "        x0 += __shfl_xor_sync(0xffffffffu, x0, o);\n",
    "        x1 += __shfl_xor_sync(0xffffffffu, x1, o);\n",
    "    }\n",
    "    if (tq == 0) {\n",
    "        if (r0 >= 0) atomicAdd(&acc[r0], x0);\n",
    "        if (r0 + 8 >= 0) atomicAdd(&acc[r0 + 8], x1);\n",
    "    }\n",
    "}\n",
    "/* Pass 2: the cotangent dh of every chunk's end state, from the last chunk: one block per (sequence, head,\n",
    " * value tile, key tile) as the state pass, dh's tile in the warps' accumulators. Before chunk ci's update dh is\n",
    " * stored (bf16, after the start states, their layout); then dh = exp(b_last) dh + sum_r (diag(E) Q_r)^T dR_r,\n",
    " * E_t = exp(b_tb) (1 where tb < 0). At the end dh is the gradient of the state before the first step. */\n",
    "extern \"C\" __global__ void __launch_bounds__(CK_THREADS, 2) CB_NAME_DH(long long B, long long T, float *ws CB_PARAMS)\n",
    "{\n",
    "    extern __shared__ float ssmc_smem[];\n",
    "    ck_b16 *QsT = (ck_b16 *)ssmc_smem;            /* [KT][TS]: q_t[i] E_t, the block's keys */\n",
    "    ck_b16 *DsT = QsT + CK_KT * TS;               /* [VT][TS]: dR_t[j] */\n",
    "    ck_b16 *HsT = DsT + CK_VT * TS;               /* [VT][HS]: dh's tile, transposed, for the store */\n",
    "    float *bc = (float *)((char *)ssmc_smem + ((size_t)(HsT + CK_VT * HS - QsT) * 2 + 15) / 16 * 16);\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;\n",
    "    long long blk = blockIdx.x;\n",
    "    const int kt = (int)(blk % CK_NK);\n",
    "    blk /= CK_NK;\n",
    "    const int vt = (int)(blk % CK_NV);\n",
    "    blk /= CK_NV;\n",
    "    const int hh = (int)(blk % CK_NH);\n",
    "    const long long b = blk / CK_NH;\n",
    "    if (b >= B) return;\n",
    "    const int v0 = vt * CK_VT, k0 = kt * CK_KT;\n",
    "    const long long nchunks = (T + CK_C - 1) / CK_C;\n",
    "    float h[H_TILES][4];\n",
    "    for (int i = 0; i < H_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int r = k0 + mt * 16 + gq + (e >> 1) * 8, cl = nt * 8 + 2 * tq + (e & 1);\n",
    "            h[i][e] = tile < MT_H * NT_V && r < CK_K && v0 + cl < CK_V && dstate\n",
    "                          ? dstate[b * CK_SE + ck_head_off[hh] + (long long)r * CK_KSTR + (long long)(v0 + cl) * CK_VSTR]\n",
    "                          : 0.f;\n",
    "        }\n",
    "    }\n",
    "    for (long long ci = nchunks - 1; ci >= 0; ci--) {\n",
    "        const long long c0 = ci * CK_C;\n",
    "        const int n = (int)(T - c0 < CK_C ? T - c0 : CK_C);\n",
    "        for (int i = 0; i < H_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            if (tile >= MT_H * NT_V) continue;\n",
    "            for (int e = 0; e < 4; e++) HsT[(nt * 8 + 2 * tq + (e & 1)) * HS + mt * 16 + gq + (e >> 1) * 8] = ck_bf16(h[i][e]);\n",
    "        }\n",
    "        ck_decay(bc, g, b, T, c0, n, hh, k0, CK_KT);\n",
    "        __syncthreads();\n",
    "        {\n",
    "            ck_b16 *hd = CB_DHWS(b, hh, ci) + (long long)v0 * CK_KP + k0;\n",
    "            for (int x = tid * 8; x < CK_VT * CK_KT; x += 8 * CK_THREADS) {\n",
    "                int j = x / CK_KT, i = x % CK_KT;\n",
    "                *(uint4 *)(hd + (long long)j * CK_KP + i) = *(const uint4 *)(HsT + j * HS + i);\n",
    "            }\n",
    "        }\n",
    "        const float eb = expf(bc[n - 1]);\n",
    "        for (int i = 0; i < H_TILES; i++)\n",
    "            for (int e = 0; e < 4; e++) h[i][e] *= eb;\n",
    "        for (int r = 0; r < CK_NR; r++) {\n",
    "            const int prev = (CK_PREV >> r) & 1;\n",
    "            float qp[KPRE][4], dp[VPRE][4];\n",
    "            ck_load_kv(qp, dp, CB_Q(r), CB_DR(r), b, T, c0, n, hh, k0, v0);\n",
    "#pragma unroll\n",
    "            for (int p = 0; p < KPRE; p++) {\n",
    "                int x = (tid + p * CK_THREADS) * 4, t = x / CK_KT, i0 = x % CK_KT, tb = t - prev;\n",
    "                if (x >= CK_C * CK_KT) break;\n",
    "                float e = t < n ? (tb >= 0 ? expf(bc[tb]) : 1.f) : 0.f;\n",
    "                for (int u = 0; u < 4; u++) QsT[(i0 + u) * TS + t] = ck_bf16(qp[p][u] * e);\n",
    "            }\n",
    "#pragma unroll\n",
    "            for (int p = 0; p < VPRE; p++) {\n",
    "                int x = (tid + p * CK_THREADS) * 4, t = x / CK_VT, j0 = x % CK_VT;\n",
    "                if (x >= CK_C * CK_VT) break;\n",
    "                for (int u = 0; u < 4; u++) DsT[(j0 + u) * TS + t] = ck_bf16(dp[p][u]);\n",
    "            }\n",
    "            __syncthreads();\n",
    "#pragma unroll\n",
    "            for (int i = 0; i < H_TILES; i++) {\n",
    "                int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "                if (tile >= MT_H * NT_V) continue;\n",
    "                ck_tile(h[i], QsT, TS, mt * 16, DsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "            }\n",
    "            __syncthreads();\n",
    "        }\n",
    "    }\n",
    "    if (dstate)\n",
    "        for (int i = 0; i < H_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / NT_V, nt = tile % NT_V;\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int r = k0 + mt * 16 + gq + (e >> 1) * 8, cl = nt * 8 + 2 * tq + (e & 1);\n",
    "                if (tile < MT_H * NT_V && r < CK_K && v0 + cl < CK_V)\n",
    "                    dstate[b * CK_SE + ck_head_off[hh] + (long long)r * CK_KSTR + (long long)(v0 + cl) * CK_VSTR] = h[i][e];\n",
    "            }\n",
    "        }\n",
    "}\n",
    "#define VS (CB_VP + 8)\n",
    "#define S_TILES (((CK_C / 16) * (CK_C / 8) + CK_WARPS - 1) / CK_WARPS)\n",
    "#define DK_TILES (((CK_C / 16) * (CK_KP / 8) + CK_WARPS - 1) / CK_WARPS)\n",
    "#define DV_TILES (((CK_C / 16) * (CB_VP / 8) + CK_WARPS - 1) / CK_WARPS)\n",
    "/* X = a chunk's stored K x V matrix (value rows of KP keys, bf16; rows past V read as zeros) as stored (VP value\n",
    " * rows, QS apart) or transposed (KP key rows, VS apart) */\n",
    "__device__ __forceinline__ void cb_load_x(ck_b16 *X, const ck_b16 *src, int trans)\n",
    "{\n",
    "    for (int x = threadIdx.x * 8; x < CB_VP * CK_KP; x += 8 * CK_THREADS) {\n",
    "        int j = x / CK_KP, i = x % CK_KP;\n",
    "        uint4 w = {0u, 0u, 0u, 0u};\n",
    "        if (j < CK_V) w = *(const uint4 *)(src + (long long)j * CK_KP + i);\n",
    "        if (!trans) {\n",
    "            *(uint4 *)(X + j * QS + i) = w;\n",
    "        } else {\n",
    "            const unsigned wv[4] = {w.x, w.y, w.z, w.w};\n",
    "            for (int u = 0; u < 8; u++) X[(i + u) * VS + j] = (ck_b16)(wv[u >> 1] >> (16 * (u & 1)));\n",
    "        }\n",
    "    }\n",
    "}\n",
    "/* Pass 3: every chunk's gradients at once: one block per (sequence, head, chunk), every key and value, from the\n",
    " * chunk's start state H (pass 1) and its end-state cotangent dH (pass 2); with E_t = exp(b_tb), M[t][s] =\n",
    " * exp(b_tb - b_s) for s <= tb, e_s = exp(b_last - b_s):\n",
    " *   dV = diag(e) K dH + sum_r (M o Q_r K^T)^T dR_r,   dK = diag(e) V dH^T + sum_r (M o dR_r V^T)^T Q_r,\n",
    " *   dQ_r = diag(E) dR_r H^T + (M o dR_r V^T) K,\n",
    " *   db_tb += E_t q_t . (H dR_t) + sum_s (M o S o D)[t][s], db_s -= sum_t (M o S o D)[t][s],\n",
    " *   db_last += exp(b_last) <H, dH> + sum_s k_s . dK_s(carry), db_s -= k_s . dK_s(carry); dg_u = sum_{t >= u} db_t.\n",
    " * dK and dV accumulate in the warps' registers over the readouts. */\n",
    "extern \"C\" __global__ void __launch_bounds__(CK_THREADS) CB_NAME_GRADS(long long B, long long T, float *ws CB_PARAMS)\n",
    "{\n",
    "    extern __shared__ float ssmc_smem[];\n",
    "    ck_b16 *Qs = (ck_b16 *)ssmc_smem;             /* [C][QS]: q_r */\n",
    "    ck_b16 *QsT = Qs + CK_C * QS;                 /* [KP][TS] */\n",
    "    ck_b16 *Ks = QsT + CK_KP * TS;                /* [C][QS] */\n",
    "    ck_b16 *KsT = Ks + CK_C * QS;                 /* [KP][TS] */\n",
    "    ck_b16 *Vs = KsT + CK_KP * TS;                /* [C][VS] */\n",
    "    ck_b16 *Ds = Vs + CK_C * VS;                  /* [C][VS]: dR_r */\n",
    "    ck_b16 *DsT = Ds + CK_C * VS;                 /* [VP][TS] */\n",
    "    ck_b16 *AT = DsT + CB_VP * TS;                /* [C][TS]: (M o S)^T */\n",
    "    ck_b16 *Ws = AT + CK_C * TS;                  /* [C][TS]: M o D */\n",
    "    ck_b16 *WT = Ws + CK_C * TS;                  /* [C][TS]: (M o D)^T */\n",
    "    ck_b16 *X = WT + CK_C * TS;                   /* CB_XN: dH^T, then dH, then H */\n",
    "    float *bc = (float *)((char *)ssmc_smem + ((size_t)(X + CB_XN - Qs) * 2 + 15) / 16 * 16);\n",
    "    float *db = bc + CK_C;                        /* [C]: the gradient of b_t */\n",
    "    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;\n",
    "    const long long nchunks = (T + CK_C - 1) / CK_C;\n",
    "    long long blk = blockIdx.x;\n",
    "    const long long ci = blk % nchunks;\n",
    "    blk /= nchunks;\n",
    "    const int hh = (int)(blk % CK_NH);\n",
    "    const long long b = blk / CK_NH;\n",
    "    if (b >= B) return;\n",
    "    const long long c0 = ci * CK_C;\n",
    "    const int n = (int)(T - c0 < CK_C ? T - c0 : CK_C);\n",
    "    ck_decay(bc, g, b, T, c0, n, hh, 0, CK_KP);\n",
    "    for (int t = tid; t < CK_C; t += CK_THREADS) db[t] = 0.f;\n",
    "    for (int x = tid * 4; x < CK_C * CK_KP; x += 4 * CK_THREADS) {\n",
    "        int t = x / CK_KP, i0 = x % CK_KP;\n",
    "        float kk[4];\n",
    "        ck_load4(kk, k, ((b * T + c0 + t) * CK_NH + hh) * CK_K + i0, t < n, i0, CK_K);\n",
    "        for (int u = 0; u < 4; u++) {\n",
    "            ck_b16 z = ck_bf16(kk[u]);\n",
    "            Ks[t * QS + i0 + u] = z;\n",
    "            KsT[(i0 + u) * TS + t] = z;\n",
    "        }\n",
    "    }\n",
    "    for (int x = tid * 4; x < CK_C * CB_VP; x += 4 * CK_THREADS) {\n",
    "        int t = x / CB_VP, j0 = x % CB_VP;\n",
    "        float vv[4];\n",
    "        ck_load4(vv, v, ((b * T + c0 + t) * CK_NH + hh) * CK_V + j0, t < n, j0, CK_V);\n",
    "        for (int u = 0; u < 4; u++) Vs[t * VS + j0 + u] = ck_bf16(vv[u]);\n",
    "    }\n",
    "    const ck_b16 *Hst = CK_HWS(b, hh, ci), *dHst = CB_DHWS(b, hh, ci);\n",
    "    cb_load_x(X, dHst, 0);\n",
    "    __syncthreads();\n",
    "    const float blast = bc[n - 1];\n",
    "    float adk[DK_TILES][4], adv[DV_TILES][4];\n",
    "    /* the carry's share: dV = diag(e) K dH */\n",
    "#pragma unroll\n",
    "    for (int i = 0; i < DV_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / (CB_VP / 8), nt = tile % (CB_VP / 8);\n",
    "        for (int e = 0; e < 4; e++) adv[i][e] = 0.f;\n",
    "        if (tile >= (CK_C / 16) * (CB_VP / 8)) continue;\n",
    "        ck_tile(adv[i], Ks, QS, mt * 16, X, QS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int s = mt * 16 + gq + (e >> 1) * 8;\n",
    "            adv[i][e] *= s < n ? expf(blast - bc[s]) : 0.f;\n",
    "        }\n",
    "    }\n",
    "    __syncthreads();\n",
    "    cb_load_x(X, dHst, 1);\n",
    "    __syncthreads();\n",
    "    /* dK = diag(e) V dH^T; c_s = k_s . dK_s into db */\n",
    "    float cl = 0.f;\n",
    "#pragma unroll\n",
    "    for (int i = 0; i < DK_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / (CK_KP / 8), nt = tile % (CK_KP / 8);\n",
    "        for (int e = 0; e < 4; e++) adk[i][e] = 0.f;\n",
    "        if (tile >= (CK_C / 16) * (CK_KP / 8)) continue;\n",
    "        ck_tile(adk[i], Vs, VS, mt * 16, X, VS, nt * 8, 0, CB_VP / 16, gq, tq);\n",
    "        float c[4];\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int s = mt * 16 + gq + (e >> 1) * 8, col = nt * 8 + 2 * tq + (e & 1);\n",
    "            adk[i][e] *= s < n ? expf(blast - bc[s]) : 0.f;\n",
    "            c[e] = ck_f32(Ks[s * QS + col]) * adk[i][e];\n",
    "            cl += c[e];\n",
    "        }\n",
    "#if CK_DECAY\n",
    "        cb_rows_add(db, mt * 16 + gq, -(c[0] + c[1]), -(c[2] + c[3]), tq);\n",
    "#endif\n",
    "    }\n",
    "#if CK_DECAY\n",
    "    /* exp(b_last) <H, dH> (dH in X, key rows) */\n",
    "    {\n",
    "        const float ebl = expf(blast);\n",
    "        for (int x = tid; x < CK_V * CK_KP; x += CK_THREADS) {\n",
    "            int j = x / CK_KP, i = x % CK_KP;\n",
    "            cl += ebl * ck_f32(Hst[(long long)j * CK_KP + i]) * ck_f32(X[i * VS + j]);\n",
    "        }\n",
    "        for (int o = 16; o > 0; o >>= 1) cl += __shfl_xor_sync(0xffffffffu, cl, o);\n",
    "        if (lane == 0) atomicAdd(&db[n - 1], cl);\n",
    "    }\n",
    "#endif\n",
    "    __syncthreads();\n",
    "    cb_load_x(X, Hst, 1);\n",
    "    for (int r = 0; r < CK_NR; r++) {\n",
    "        const int prev = (CK_PREV >> r) & 1;\n",
    "        const float *q = CB_Q(r), *dr = CB_DR(r);\n",
    "        float *dq = CB_DQ(r);\n",
    "        for (int x = tid * 4; x < CK_C * CK_KP; x += 4 * CK_THREADS) {\n",
    "            int t = x / CK_KP, i0 = x % CK_KP;\n",
    "            float qq[4];\n",
    "            ck_load4(qq, q, ((b * T + c0 + t) * CK_NH + hh) * CK_K + i0, t < n, i0, CK_K);\n",
    "            for (int u = 0; u < 4; u++) {\n",
    "                ck_b16 z = ck_bf16(qq[u]);\n",
    "                Qs[t * QS + i0 + u] = z;\n",
    "                QsT[(i0 + u) * TS + t] = z;\n",
    "            }\n",
    "        }\n",
    "        for (int x = tid * 4; x < CK_C * CB_VP; x += 4 * CK_THREADS) {\n",
    "            int t = x / CB_VP, j0 = x % CB_VP;\n",
    "            float dd[4];\n",
    "            ck_load4(dd, dr, ((b * T + c0 + t) * CK_NH + hh) * CK_V + j0, t < n, j0, CK_V);\n",
    "            for (int u = 0; u < 4; u++) {\n",
    "                ck_b16 z = ck_bf16(dd[u]);\n",
    "                Ds[t * VS + j0 + u] = z;\n",
    "                DsT[(j0 + u) * TS + t] = z;\n",
    "            }\n",
    "        }\n",
    "        __syncthreads();\n",
    "        /* S = Q K^T and D = dR V^T under the mask: A^T, W, W^T; db from M o S o D */\n",
    "        for (int i = 0; i < S_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_C / 8), nt = tile % (CK_C / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_C / 8)) continue;\n",
    "            float sd[4] = {0.f, 0.f, 0.f, 0.f}, dd[4] = {0.f, 0.f, 0.f, 0.f}, x[4];\n",
    "            ck_tile(sd, Qs, QS, mt * 16, Ks, QS, nt * 8, 0, CK_KP / 16, gq, tq);\n",
    "            ck_tile(dd, Ds, VS, mt * 16, Vs, VS, nt * 8, 0, CB_VP / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, s = nt * 8 + 2 * tq + (e & 1), tb = t - prev;\n",
    "                float m = s <= tb && t < n ? expf(bc[tb] - bc[s]) : 0.f;\n",
    "                AT[s * TS + t] = ck_bf16(m * sd[e]);\n",
    "                ck_b16 w = ck_bf16(m * dd[e]);\n",
    "                Ws[t * TS + s] = w;\n",
    "                WT[s * TS + t] = w;\n",
    "                x[e] = m * sd[e] * dd[e];\n",
    "            }\n",
    "#if CK_DECAY\n",
    "            /* rows tb: the four lanes of a row; columns s: each lane's two, once per row half */\n",
    "            cb_rows_add(db, mt * 16 + gq - prev, x[0] + x[1], x[2] + x[3], tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                float y = x[e];\n",
    "                for (int o = 4; o < 32; o <<= 1) y += __shfl_xor_sync(0xffffffffu, y, o);\n",
    "                if (gq == 0) atomicAdd(&db[nt * 8 + 2 * tq + (e & 1)], -y);\n",
    "            }\n",
    "#endif\n",
    "        }\n",
    "        __syncthreads();\n",
    "        /* dV += A^T dR, dK += W^T Q */\n",
    "#pragma unroll\n",
    "        for (int i = 0; i < DV_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CB_VP / 8), nt = tile % (CB_VP / 8);\n",
    "            if (tile >= (CK_C / 16) * (CB_VP / 8)) continue;\n",
    "            ck_tile(adv[i], AT, TS, mt * 16, DsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "        }\n",
    "#pragma unroll\n",
    "        for (int i = 0; i < DK_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_KP / 8), nt = tile % (CK_KP / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_KP / 8)) continue;\n",
    "            ck_tile(adk[i], WT, TS, mt * 16, QsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "        }\n",
    "        /* dQ = diag(E) dR H^T + W K; db_tb += E_t q_t . (H dR_t) */\n",
    "        for (int i = 0; i < DK_TILES; i++) {\n",
    "            int tile = warp + CK_WARPS * i, mt = tile / (CK_KP / 8), nt = tile % (CK_KP / 8);\n",
    "            if (tile >= (CK_C / 16) * (CK_KP / 8)) continue;\n",
    "            float p[4] = {0.f, 0.f, 0.f, 0.f}, w[4] = {0.f, 0.f, 0.f, 0.f}, x[4];\n",
    "            ck_tile(p, Ds, VS, mt * 16, X, VS, nt * 8, 0, CB_VP / 16, gq, tq);\n",
    "            ck_tile(w, Ws, TS, mt * 16, KsT, TS, nt * 8, 0, CK_C / 16, gq, tq);\n",
    "            for (int e = 0; e < 4; e++) {\n",
    "                int t = mt * 16 + gq + (e >> 1) * 8, col = nt * 8 + 2 * tq + (e & 1), tb = t - prev;\n",
    "                float E = tb >= 0 ? expf(bc[tb]) : 1.f;\n",
    "                x[e] = tb >= 0 ? E * ck_f32(Qs[t * QS + col]) * p[e] : 0.f;\n",
    "                if (t < n && col < CK_K && dq) dq[((b * T + c0 + t) * CK_NH + hh) * CK_K + col] = E * p[e] + w[e];\n",
    "            }\n",
    "#if CK_DECAY\n",
    "            cb_rows_add(db, mt * 16 + gq - prev, x[0] + x[1], x[2] + x[3], tq);\n",
    "#endif\n",
    "        }\n",
    "        __syncthreads();\n",
    "    }\n",
    "    for (int i = 0; i < DV_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / (CB_VP / 8), nt = tile % (CB_VP / 8);\n",
    "        if (tile >= (CK_C / 16) * (CB_VP / 8)) continue;\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int s = mt * 16 + gq + (e >> 1) * 8, j = nt * 8 + 2 * tq + (e & 1);\n",
    "            if (s < n && j < CK_V && dv) dv[((b * T + c0 + s) * CK_NH + hh) * CK_V + j] = adv[i][e];\n",
    "        }\n",
    "    }\n",
    "    for (int i = 0; i < DK_TILES; i++) {\n",
    "        int tile = warp + CK_WARPS * i, mt = tile / (CK_KP / 8), nt = tile % (CK_KP / 8);\n",
    "        if (tile >= (CK_C / 16) * (CK_KP / 8)) continue;\n",
    "        for (int e = 0; e < 4; e++) {\n",
    "            int s = mt * 16 + gq + (e >> 1) * 8, col = nt * 8 + 2 * tq + (e & 1);\n",
    "            if (s < n && col < CK_K && dk) dk[((b * T + c0 + s) * CK_NH + hh) * CK_K + col] = adk[i][e];\n",
    "        }\n",
    "    }\n",
    "#if CK_DECAY\n",
    "    /* dg_u = sum_{t >= u} db_t, u < n: a suffix sum by warp 0, 32 steps at a time from the last */\n",
    "    __syncthreads();\n",
    "    if (warp == 0 && dg) {\n",
    "        float carry = 0.f;\n",
    "        for (int base = (CK_C - 1) / 32 * 32; base >= 0; base -= 32) {\n",
    "            float x = base + lane < n ? db[base + lane] : 0.f;\n",
    "            for (int o = 1; o < 32; o <<= 1) {\n",
    "                float y = __shfl_down_sync(0xffffffffu, x, o);\n",
    "                if (lane + o < 32) x += y;\n",
    "            }\n",
    "            x += carry;\n",
    "            if (base + lane < n) dg[(b * T + c0 + base + lane) * CK_NH + hh] = x;\n",
    "            carry = __shfl_sync(0xffffffffu, x, 0);\n",
    "        }\n",
    "    }\n",
    "#endif\n",
    "}\n",
};

static void pick(strbuf *out, const char *macro, const char *prefix, int n)
{
    sb_printf(out, "#define %s(r) (", macro);
    for (int r = 0; r < n; r++) sb_printf(out, "%sr == %d ? %s%d", r ? " : " : "", r, prefix, r);
    sb_printf(out, " : %s0)\n", prefix);
}

/* The parameters every kernel of the backward takes (cuda_chunk.h) and the macros that pick a readout's. */
static void emit_params(strbuf *out, const plan_chunk_core *c)
{
    /* every readout's q, k, v, g, beta, every readout's dR, the state, its cotangent (in: of h(T), out: of the
     * initial state), every readout's dq, dk, dv, dg, dbeta, dw */
    sb_puts(out, "#define CB_PARAMS ");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, ", const float *__restrict__ q%d", r);
    sb_puts(out, ", const float *__restrict__ k, const float *__restrict__ v, const float *__restrict__ g, const float *__restrict__ beta");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, ", const float *__restrict__ dr%d", r);
    sb_puts(out, ", const float *__restrict__ state, float *__restrict__ dstate");
    for (int r = 0; r < c->nreadouts; r++) sb_printf(out, ", float *__restrict__ dq%d", r);
    sb_puts(out, ", float *__restrict__ dk, float *__restrict__ dv, float *__restrict__ dg, float *__restrict__ dbeta, "
                 "float *__restrict__ dw\n");
    pick(out, "CB_Q", "q", c->nreadouts);
    pick(out, "CB_DR", "dr", c->nreadouts);
    pick(out, "CB_DQ", "dq", c->nreadouts);
}

/* The three-pass form: cuda_chunk.c's state pass, then body_passes. */
static ssmc_status emit_passes(strbuf *out, const ir_model *m, const plan_chunk_core *c, diag *d)
{
    sb_printf(out, "// ssmc: the backward of the chunked core of state %s of model %s in three passes "
                   "(codegen/cuda_chunk_bwd.c), after the forward's state pass (codegen/cuda_chunk.c)\n",
              m->tensors[c->state].name, m->name);
    ssmc_status st = cuda_chunk_emit_states(out, m, c, d);
    if (st != SSMC_OK) return st;
    static const char *const macro[] = {"CB_NAME_STATES", "CB_NAME_DH", "CB_NAME_GRADS"};
    for (int p = 0; p < 3; p++) {
        strbuf name = {0};
        cuda_chunk_bwd_kernel_name(&name, m, c, p);
        sb_printf(out, "#define %s %s\n", macro[p], sb_cstr(&name));
        sb_free(&name);
    }
    sb_printf(out, "#define CB_VP %d\n#define CB_XN %zu\n", round_up(c->V, 16), xn_of(c));
    emit_params(out, c);
    for (size_t i = 0; i < sizeof body_passes / sizeof *body_passes; i++) sb_puts(out, body_passes[i]);
    return out->failed ? SSMC_ERR_NOMEM : SSMC_OK;
}

ssmc_status cuda_chunk_bwd_emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, diag *d)
{
    if (!cuda_chunk_bwd_supported(c, d)) return SSMC_ERR_UNSUPPORTED;
    if (three_passes(c)) return emit_passes(out, m, c, d);
    int KP = round_up(c->K, 16), VP = round_up(c->V, 16);
    strbuf name = {0};
    cuda_chunk_bwd_kernel_name(&name, m, c, 0);
    sb_printf(out, "// ssmc: the backward of the chunked core of state %s of model %s (codegen/cuda_chunk_bwd.c)\n",
              m->tensors[c->state].name, m->name);
    sb_printf(out, "// chunks of %d steps, %d heads, K = %d (padded to %d), V = %d (padded to %d), decay %s%s\n", c->C,
              c->nheads, c->K, KP, c->V, VP,
              c->decay == PASS_DECAY_NONE ? "none" : c->decay == PASS_DECAY_SCALAR ? "one per head" : "one per key",
              c->delta ? ", delta rule" : "");
    unsigned prev = 0;
    for (int r = 0; r < c->nreadouts; r++) prev |= (unsigned)c->prev[r] << r;
    sb_printf(out, "#define CB_NAME %s\n#define CB_C %d\n#define CB_K %d\n#define CB_KP %d\n#define CB_V %d\n#define CB_VP %d\n"
                   "#define CB_NH %d\n#define CB_NR %d\n#define CB_DECAY %d\n#define CB_DELTA %d\n#define CB_PREV %uu\n#define CB_SE %lldLL\n"
                   "#define CB_KSTR %lldLL\n#define CB_VSTR %lldLL\n#define CB_FIXED %lldLL\n",
              sb_cstr(&name), c->C, c->K, KP, c->V, VP, c->nheads, c->nreadouts, (int)c->decay, c->delta, prev,
              (long long)c->state_elems, (long long)c->key_stride, (long long)c->value_stride,
              (long long)fixed_floats(c));
    emit_params(out, c);
    sb_printf(out, "__constant__ long long cb_head_off[%d] = {", c->nheads);
    for (int i = 0; i < c->nheads; i++) sb_printf(out, "%s%lldLL", i ? ", " : "", (long long)c->head_off[i]);
    sb_puts(out, "};\n");
    cuda_chunk_preamble(out); /* ck_b16, ck_bf16, ck_mma */
    for (size_t i = 0; i < sizeof body / sizeof *body; i++) sb_puts(out, body[i]);
    sb_free(&name);
    return out->failed ? SSMC_ERR_NOMEM : SSMC_OK;
}
