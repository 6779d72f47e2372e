/* ref_models.c: hand-written f64 references for the example models.
 *
 * Each model is written from its paper's recurrence as plain loops over batch,
 * time and the model's axes, in the paper's own arrangement where it differs
 * from the .ssm file (the delta rules build the matrix I - beta k k^T and
 * multiply; GLA raises sigmoid to the power 1/16 rather than going through log
 * space; linear attention uses elu + 1 by cases). Nothing here knows about the
 * compiler: a bug shared by the interpreter and these loops would need the
 * same mistake made twice, in two different forms.
 *
 * Assumes io holds every tensor and dim named below (missing ones are reported,
 * not dereferenced) with the shapes of SPEC §5. States are updated in place. A
 * model with an init (ttt_linear) also takes its state as NULL: no initial
 * state given, so it starts from its init and no final state is kept. */
#include "ref_models.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *ref_get(const ref_io *io, const char *name, int *missing)
{
    for (int i = 0; i < io->n; i++)
        if (strcmp(io->t[i].name, name) == 0 && io->t[i].data)
            return io->t[i].data;
    *missing = 1;
    return NULL;
}

static int64_t ref_dim(const ref_io *io, const char *name, int *missing)
{
    for (int i = 0; i < io->ndims; i++)
        if (strcmp(io->dim_names[i], name) == 0 && io->dim_values[i] > 0)
            return io->dim_values[i];
    *missing = 1;
    return 1;
}

static double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }
static double softplus_(double x) { return log1p(exp(x)); }

/* ---- Mamba-2 (SSD): h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, y_t = C_t^T h_t + D x_t,
 * one scalar decay per head, B and C shared by the heads. */
static int ref_mamba2(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), P = ref_dim(io, "P", &m), N = ref_dim(io, "N", &m);
    double *x = ref_get(io, "x", &m), *dt = ref_get(io, "dt", &m);
    double *Bt = ref_get(io, "B", &m), *Ct = ref_get(io, "C", &m);
    double *A_log = ref_get(io, "A_log", &m), *D = ref_get(io, "D", &m);
    double *dt_bias = ref_get(io, "dt_bias", &m), *S = ref_get(io, "S", &m);
    double *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++) {
            int64_t bt = b * io->T + t;
            for (int64_t h = 0; h < H; h++) {
                double delta = softplus_(dt[bt * H + h] + dt_bias[h]);
                double decay = exp(delta * -exp(A_log[h]));
                for (int64_t p = 0; p < P; p++) {
                    double xv = x[(bt * H + h) * P + p];
                    double *s = S + ((b * H + h) * P + p) * N;
                    double acc = 0;
                    for (int64_t n = 0; n < N; n++) {
                        s[n] = decay * s[n] + delta * Bt[bt * N + n] * xv;
                        acc += Ct[bt * N + n] * s[n];
                    }
                    y[(bt * H + h) * P + p] = acc + D[h] * xv;
                }
            }
        }
    return 0;
}

/* ---- Mamba-2 with grouped B/C (R = H / G heads share a group) and a causal
 * depthwise convolution of width W over x, then SiLU, before the SSD step:
 * xc_t = silu(conv_b + sum_k w_k x_{t-k}) (x before the start is 0). */
static int ref_mamba2_conv(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), P = ref_dim(io, "P", &m), N = ref_dim(io, "N", &m);
    int64_t G = ref_dim(io, "G", &m), W = ref_dim(io, "W", &m);
    double *x = ref_get(io, "x", &m), *dt = ref_get(io, "dt", &m);
    double *Bt = ref_get(io, "B", &m), *Ct = ref_get(io, "C", &m);
    double *cw = ref_get(io, "conv_w", &m), *cb = ref_get(io, "conv_b", &m);
    double *A_log = ref_get(io, "A_log", &m), *D = ref_get(io, "D", &m);
    double *dt_bias = ref_get(io, "dt_bias", &m), *S = ref_get(io, "S", &m);
    double *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    int64_t heads_per_group = H / G;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++) {
            int64_t bt = b * io->T + t;
            for (int64_t h = 0; h < H; h++) {
                int64_t g = h / heads_per_group;
                double delta = softplus_(dt[bt * H + h] + dt_bias[h]);
                double decay = exp(delta * -exp(A_log[h]));
                for (int64_t p = 0; p < P; p++) {
                    double conv = cb[h * P + p];
                    for (int64_t k = 0; k < W && k <= t; k++)
                        conv += cw[(h * P + p) * W + k] * x[((bt - k) * H + h) * P + p];
                    double xv = conv * sigmoid_(conv);
                    double *s = S + ((b * H + h) * P + p) * N;
                    double acc = 0;
                    for (int64_t n = 0; n < N; n++) {
                        s[n] = decay * s[n] + delta * Bt[(bt * G + g) * N + n] * xv;
                        acc += Ct[(bt * G + g) * N + n] * s[n];
                    }
                    y[(bt * H + h) * P + p] = acc + D[h] * xv;
                }
            }
        }
    return 0;
}

/* ---- Mamba-1 selective scan: per channel e and state n,
 * h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, y_t = (C_t h_t + D x_t) silu(z_t). */
static int ref_mamba(const ref_io *io)
{
    int m = 0;
    int64_t E = ref_dim(io, "E", &m), N = ref_dim(io, "N", &m);
    double *x = ref_get(io, "x", &m), *z = ref_get(io, "z", &m), *dt = ref_get(io, "dt", &m);
    double *Bt = ref_get(io, "B", &m), *Ct = ref_get(io, "C", &m);
    double *A_log = ref_get(io, "A_log", &m), *D = ref_get(io, "D", &m);
    double *dt_bias = ref_get(io, "dt_bias", &m), *S = ref_get(io, "S", &m);
    double *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++) {
            int64_t bt = b * io->T + t;
            for (int64_t e = 0; e < E; e++) {
                double delta = softplus_(dt[bt * E + e] + dt_bias[e]);
                double xv = x[bt * E + e], zv = z[bt * E + e];
                double *s = S + (b * E + e) * N;
                double acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    double abar = exp(delta * -exp(A_log[e * N + n]));
                    s[n] = abar * s[n] + delta * Bt[bt * N + n] * xv;
                    acc += Ct[bt * N + n] * s[n];
                }
                y[bt * E + e] = (acc + D[e] * xv) * zv * sigmoid_(zv);
            }
        }
    return 0;
}

/* ---- GLA: S_t = (alpha_t^T 1) * S_{t-1} + k_t^T v_t, o_t = q_t S_t / sqrt(K),
 * alpha_t = sigmoid(gk_t)^(1/16). */
static int ref_gla(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *gk = ref_get(io, "gk", &m), *S = ref_get(io, "S", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bth = (b * io->T + t) * H + h;
                double *s = S + (b * H + h) * K * V;
                for (int64_t i = 0; i < K; i++) {
                    double alpha = pow(sigmoid_(gk[bth * K + i]), 1.0 / 16.0);
                    for (int64_t j = 0; j < V; j++)
                        s[i * V + j] = alpha * s[i * V + j] + k[bth * K + i] * v[bth * V + j];
                }
                for (int64_t j = 0; j < V; j++) {
                    double acc = 0;
                    for (int64_t i = 0; i < K; i++)
                        acc += q[bth * K + i] * s[i * V + j];
                    y[bth * V + j] = acc / sqrt((double)K);
                }
            }
    return 0;
}

/* The delta rules, key-major S (K x V per head):
 * S_t = alpha_t (I - beta_t k k^T) S_{t-1} + beta_t k v^T, o_t = S_t^T q / sqrt(K),
 * k and q L2-normalised with eps 1e-6 under the root. alpha = 1 is DeltaNet. */
static int ref_delta(const ref_io *io, int gated)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *bl = ref_get(io, "b", &m), *S = ref_get(io, "S", &m), *y = ref_get(io, "y", &m);
    double *a = NULL, *A_log = NULL, *dt_bias = NULL;
    if (gated) {
        a = ref_get(io, "a", &m);
        A_log = ref_get(io, "A_log", &m);
        dt_bias = ref_get(io, "dt_bias", &m);
    }
    if (m)
        return REF_ERR_MISSING;
    double *kn = malloc(sizeof(double) * (size_t)K);
    double *qn = malloc(sizeof(double) * (size_t)K);
    double *Pm = malloc(sizeof(double) * (size_t)(K * K));
    double *Sn = malloc(sizeof(double) * (size_t)(K * V));
    if (!kn || !qn || !Pm || !Sn) {
        free(kn), free(qn), free(Pm), free(Sn);
        return REF_ERR_NOMEM;
    }
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bth = (b * io->T + t) * H + h;
                double *s = S + (b * H + h) * K * V;
                double kk = 0, qq = 0;
                for (int64_t i = 0; i < K; i++) {
                    kk += k[bth * K + i] * k[bth * K + i];
                    qq += q[bth * K + i] * q[bth * K + i];
                }
                for (int64_t i = 0; i < K; i++) {
                    kn[i] = k[bth * K + i] / sqrt(kk + 1e-6);
                    qn[i] = q[bth * K + i] / sqrt(qq + 1e-6) / sqrt((double)K);
                }
                double beta = sigmoid_(bl[bth]);
                double alpha = 1.0;
                if (gated)
                    alpha = exp(-exp(A_log[h]) * softplus_(a[bth] + dt_bias[h]));
                for (int64_t i = 0; i < K; i++)
                    for (int64_t c = 0; c < K; c++)
                        Pm[i * K + c] = alpha * ((i == c ? 1.0 : 0.0) - beta * kn[i] * kn[c]);
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) {
                        double acc = beta * kn[i] * v[bth * V + j];
                        for (int64_t c = 0; c < K; c++)
                            acc += Pm[i * K + c] * s[c * V + j];
                        Sn[i * V + j] = acc;
                    }
                memcpy(s, Sn, sizeof(double) * (size_t)(K * V));
                for (int64_t j = 0; j < V; j++) {
                    double acc = 0;
                    for (int64_t i = 0; i < K; i++)
                        acc += qn[i] * s[i * V + j];
                    y[bth * V + j] = acc;
                }
            }
    free(kn), free(qn), free(Pm), free(Sn);
    return 0;
}

static int ref_deltanet(const ref_io *io) { return ref_delta(io, 0); }
static int ref_gated_deltanet(const ref_io *io) { return ref_delta(io, 1); }

/* ---- RWKV-6: o_t = r_t (S_{t-1} + diag(u) k_t^T v_t), S_t = diag(w_t) S_{t-1} + k_t^T v_t,
 * w_t = exp(-exp(wlog_t)). */
static int ref_rwkv6(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *r = ref_get(io, "r", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *wlog = ref_get(io, "wlog", &m), *u = ref_get(io, "u", &m);
    double *S = ref_get(io, "S", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bth = (b * io->T + t) * H + h;
                double *s = S + (b * H + h) * K * V;
                for (int64_t j = 0; j < V; j++) {
                    double acc = 0;
                    for (int64_t i = 0; i < K; i++) {
                        double wkv = s[i * V + j] + u[h * K + i] * k[bth * K + i] * v[bth * V + j];
                        acc += r[bth * K + i] * wkv;
                    }
                    y[bth * V + j] = acc;
                }
                for (int64_t i = 0; i < K; i++) {
                    double w = exp(-exp(wlog[bth * K + i]));
                    for (int64_t j = 0; j < V; j++)
                        s[i * V + j] = w * s[i * V + j] + k[bth * K + i] * v[bth * V + j];
                }
            }
    return 0;
}

/* ---- Linear attention with phi = elu + 1:
 * S_t = S_{t-1} + phi(k) v^T, z_t = z_{t-1} + phi(k), y = phi(q)^T S_t / phi(q)^T z_t. */
static double elu1(double x) { return x > 0 ? x + 1.0 : exp(x); }

static int ref_linear_attn(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *S = ref_get(io, "S", &m), *z = ref_get(io, "z", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bth = (b * io->T + t) * H + h;
                double *s = S + (b * H + h) * K * V, *zz = z + (b * H + h) * K;
                double den = 0;
                for (int64_t i = 0; i < K; i++) {
                    double fk = elu1(k[bth * K + i]);
                    for (int64_t j = 0; j < V; j++)
                        s[i * V + j] += fk * v[bth * V + j];
                    zz[i] += fk;
                    den += elu1(q[bth * K + i]) * zz[i];
                }
                for (int64_t j = 0; j < V; j++) {
                    double num = 0;
                    for (int64_t i = 0; i < K; i++)
                        num += elu1(q[bth * K + i]) * s[i * V + j];
                    y[bth * V + j] = num / den;
                }
            }
    return 0;
}

/* ---- RetNet retention: S_n = gamma S_{n-1} + K_n^T V_n / sqrt(K), o_n = Q_n S_n,
 * gamma_h = 1 - 2^(-5 - scale_h). */
static int ref_retnet(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *scale = ref_get(io, "scale", &m), *S = ref_get(io, "S", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bth = (b * io->T + t) * H + h;
                double *s = S + (b * H + h) * K * V;
                double gamma = 1.0 - pow(2.0, -5.0 - scale[h]);
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++)
                        s[i * V + j] = gamma * s[i * V + j]
                                     + k[bth * K + i] * v[bth * V + j] / sqrt((double)K);
                for (int64_t j = 0; j < V; j++) {
                    double acc = 0;
                    for (int64_t i = 0; i < K; i++)
                        acc += q[bth * K + i] * s[i * V + j];
                    y[bth * V + j] = acc;
                }
            }
    return 0;
}

/* ---- LSTM (PyTorch gate order i, f, g, o):
 * gates = W x_t + U h_{t-1} + b; c_t = f c_{t-1} + i g; h_t = o tanh(c_t); y_t = h_t. */
static int ref_lstm(const ref_io *io)
{
    int m = 0;
    int64_t G = ref_dim(io, "G", &m), E = ref_dim(io, "E", &m), H = ref_dim(io, "H", &m);
    double *x = ref_get(io, "x", &m), *W = ref_get(io, "W", &m), *U = ref_get(io, "U", &m);
    double *bias = ref_get(io, "bias", &m), *hs = ref_get(io, "h", &m), *cs = ref_get(io, "c", &m);
    double *y = ref_get(io, "y", &m);
    if (m || G != 4)
        return REF_ERR_MISSING;
    double *pre = malloc(sizeof(double) * (size_t)(4 * H));
    if (!pre)
        return REF_ERR_NOMEM;
    for (int64_t b = 0; b < io->B; b++) {
        double *h = hs + b * H, *c = cs + b * H;
        for (int64_t t = 0; t < io->T; t++) {
            const double *xt = x + (b * io->T + t) * E;
            for (int64_t g = 0; g < 4; g++)
                for (int64_t j = 0; j < H; j++) {
                    double acc = bias[g * H + j];
                    for (int64_t e = 0; e < E; e++)
                        acc += W[(g * H + j) * E + e] * xt[e];
                    for (int64_t a = 0; a < H; a++)
                        acc += U[(g * H + j) * H + a] * h[a];
                    pre[g * H + j] = acc;
                }
            for (int64_t j = 0; j < H; j++) {
                double ig = sigmoid_(pre[0 * H + j]), fg = sigmoid_(pre[1 * H + j]);
                double gg = tanh(pre[2 * H + j]), og = sigmoid_(pre[3 * H + j]);
                c[j] = fg * c[j] + ig * gg;
                h[j] = og * tanh(c[j]);
                y[(b * io->T + t) * H + j] = h[j];
            }
        }
    }
    free(pre);
    return 0;
}


/* ---- Mamba-3-style: complex state h (one per pair n), rotated by exp(i phi_t)
 * with phi_t = theta_t delta_t, the trapezoidal rule over the input:
 *   h_t = a_t e^{i phi_t} h_{t-1} + (1 - lam_t) delta_t a_t b_{t-1} x_{t-1} + lam_t delta_t b_t x_t,
 * b = (B_0 + i B_1) * scale RMS-normalised over the 2N reals, y_t = Re(conj(c_t) h_t) + D x_t.
 * The previous step's b and x are kept from the step before (zero at t = 0). */
static int ref_mamba3(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), P = ref_dim(io, "P", &m), N = ref_dim(io, "N", &m);
    double *x = ref_get(io, "x", &m), *dt = ref_get(io, "dt", &m), *l = ref_get(io, "l", &m);
    double *Bt = ref_get(io, "B", &m), *Ct = ref_get(io, "C", &m), *theta = ref_get(io, "theta", &m);
    double *A_log = ref_get(io, "A_log", &m), *D = ref_get(io, "D", &m), *dt_bias = ref_get(io, "dt_bias", &m);
    double *bw = ref_get(io, "bw", &m), *cw = ref_get(io, "cw", &m);
    double *S = ref_get(io, "S", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    double complex *h = malloc((size_t)(H * P * N) * sizeof *h);
    double complex *b = malloc((size_t)N * sizeof *b), *bprev = malloc((size_t)N * sizeof *bprev);
    double complex *c = malloc((size_t)N * sizeof *c);
    double *xprev = malloc((size_t)(H * P) * sizeof *xprev);
    if (!h || !b || !bprev || !c || !xprev) {
        free(h), free(b), free(bprev), free(c), free(xprev);
        return REF_ERR_NOMEM;
    }
    for (int64_t bi = 0; bi < io->B; bi++) {
        double *Sb = S + bi * H * P * N * 2;
        for (int64_t k = 0; k < H * P * N; k++) h[k] = Sb[2 * k] + I * Sb[2 * k + 1];
        for (int64_t n = 0; n < N; n++) bprev[n] = 0;
        for (int64_t k = 0; k < H * P; k++) xprev[k] = 0;
        for (int64_t t = 0; t < io->T; t++) {
            int64_t bt = bi * io->T + t;
            const double *Bs = Bt + bt * N * 2, *Cs = Ct + bt * N * 2;
            double bss = 0, css = 0;
            for (int64_t k = 0; k < 2 * N; k++) bss += Bs[k] * Bs[k], css += Cs[k] * Cs[k];
            double bsc = 1 / sqrt(bss / (double)(2 * N) + 1e-6), csc = 1 / sqrt(css / (double)(2 * N) + 1e-6);
            for (int64_t n = 0; n < N; n++) {
                b[n] = (Bs[2 * n] * bw[2 * n] + I * Bs[2 * n + 1] * bw[2 * n + 1]) * bsc;
                c[n] = (Cs[2 * n] * cw[2 * n] + I * Cs[2 * n + 1] * cw[2 * n + 1]) * csc;
            }
            for (int64_t hh = 0; hh < H; hh++) {
                double delta = softplus_(dt[bt * H + hh] + dt_bias[hh]);
                double a = exp(-exp(A_log[hh]) * delta);
                double lam = sigmoid_(l[bt * H + hh]);
                for (int64_t p = 0; p < P; p++) {
                    double xv = x[(bt * H + hh) * P + p], xp = xprev[hh * P + p];
                    double acc = 0;
                    for (int64_t n = 0; n < N; n++) {
                        double complex rot = cexp(I * theta[bt * N + n] * delta);
                        double complex *hs = &h[(hh * P + p) * N + n];
                        *hs = a * rot * *hs + (1 - lam) * delta * a * bprev[n] * xp + lam * delta * b[n] * xv;
                        acc += creal(conj(c[n]) * *hs);
                    }
                    y[(bt * H + hh) * P + p] = acc + D[hh] * xv;
                    xprev[hh * P + p] = xv;
                }
            }
            for (int64_t n = 0; n < N; n++) bprev[n] = b[n];
        }
        for (int64_t k = 0; k < H * P * N; k++) Sb[2 * k] = creal(h[k]), Sb[2 * k + 1] = cimag(h[k]);
    }
    free(h), free(b), free(bprev), free(c), free(xprev);
    return 0;
}

/* ---- Mixture-of-Memories: the router's scores sorted (descending, ties by
 * index); the first TOPK memories are written, M_m += k_m v_m^T, and read,
 * o = sum over them of softmax_m(score) q^T M_m, the softmax taken over the
 * chosen memories alone. */
static int ref_mom(const ref_io *io)
{
    int m = 0;
    int64_t M = ref_dim(io, "M", &m), TOPK = ref_dim(io, "TOPK", &m), E = ref_dim(io, "E", &m);
    int64_t K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m);
    double *x = ref_get(io, "x", &m), *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m);
    double *v = ref_get(io, "v", &m), *Wr = ref_get(io, "Wr", &m), *S = ref_get(io, "S", &m);
    double *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    double *score = malloc((size_t)M * sizeof *score), *gate = malloc((size_t)M * sizeof *gate);
    int64_t *order = malloc((size_t)M * sizeof *order);
    if (!score || !gate || !order) {
        free(score), free(gate), free(order);
        return REF_ERR_NOMEM;
    }
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t t = 0; t < io->T; t++) {
            int64_t bt = b * io->T + t;
            for (int64_t mm = 0; mm < M; mm++) {
                score[mm] = 0;
                for (int64_t e = 0; e < E; e++) score[mm] += Wr[mm * E + e] * x[bt * E + e];
                order[mm] = mm;
            }
            for (int64_t i = 1; i < M; i++) /* insertion sort: stable, so ties keep the lower index first */
                for (int64_t j = i; j > 0 && score[order[j]] > score[order[j - 1]]; j--) {
                    int64_t tmp = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = tmp;
                }
            int64_t chosen = TOPK < M ? TOPK : M;
            double top = score[order[0]], z = 0;
            for (int64_t mm = 0; mm < M; mm++) gate[mm] = 0;
            for (int64_t r = 0; r < chosen; r++) z += exp(score[order[r]] - top);
            for (int64_t r = 0; r < chosen; r++) gate[order[r]] = exp(score[order[r]] - top) / z;
            for (int64_t r = 0; r < chosen; r++) {
                int64_t mm = order[r];
                double *Sm = S + (b * M + mm) * K * V;
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++)
                        Sm[i * V + j] += k[(bt * M + mm) * K + i] * v[(bt * M + mm) * V + j];
            }
            for (int64_t j = 0; j < V; j++) {
                double acc = 0;
                for (int64_t mm = 0; mm < M; mm++) {
                    if (gate[mm] == 0) continue;
                    const double *Sm = S + (b * M + mm) * K * V;
                    for (int64_t i = 0; i < K; i++) acc += gate[mm] * q[bt * K + i] * Sm[i * V + j];
                }
                y[bt * V + j] = acc;
            }
        }
    free(score), free(gate), free(order);
    return 0;
}

/* ---- TTT-Linear: per head, W <- W - eta ks (W^T ks - v)^T with ks the mean
 * of the last L normalised keys (a history kept here; before the start, 0),
 * o = (W^T q) * gelu(z), gelu exact (erf). Without an initial state W starts
 * at W0. */
static int ref_ttt_linear(const ref_io *io)
{
    int m = 0;
    int64_t H = ref_dim(io, "H", &m), K = ref_dim(io, "K", &m), V = ref_dim(io, "V", &m), L = ref_dim(io, "L", &m);
    double *q = ref_get(io, "q", &m), *k = ref_get(io, "k", &m), *v = ref_get(io, "v", &m);
    double *lr = ref_get(io, "lr", &m), *z = ref_get(io, "z", &m), *W0 = ref_get(io, "W0", &m);
    double *base_lr = ref_get(io, "base_lr", &m), *y = ref_get(io, "y", &m);
    if (m)
        return REF_ERR_MISSING;
    double *Wgiven = ref_get(io, "W", &m); /* NULL: not given, start at W0 */
    double *Wall = Wgiven ? Wgiven : malloc((size_t)(io->B * H * K * V) * sizeof *Wall);
    double *hist = malloc((size_t)(L * K) * sizeof *hist); /* hist[s]: the normalised key s steps back */
    double *ks = malloc((size_t)K * sizeof *ks), *err = malloc((size_t)V * sizeof *err);
    if (!Wall || !hist || !ks || !err) {
        if (!Wgiven) free(Wall);
        free(hist), free(ks), free(err);
        return REF_ERR_NOMEM;
    }
    if (!Wgiven)
        for (int64_t b = 0; b < io->B; b++) memcpy(Wall + b * H * K * V, W0, (size_t)(H * K * V) * sizeof *W0);
    for (int64_t b = 0; b < io->B; b++)
        for (int64_t hh = 0; hh < H; hh++) {
            double *Wm = Wall + (b * H + hh) * K * V;
            for (int64_t i = 0; i < L * K; i++) hist[i] = 0;
            for (int64_t t = 0; t < io->T; t++) {
                int64_t bth = (b * io->T + t) * H + hh;
                memmove(hist + K, hist, (size_t)((L - 1) * K) * sizeof *hist);
                double nn = 0;
                for (int64_t i = 0; i < K; i++) nn += k[bth * K + i] * k[bth * K + i];
                for (int64_t i = 0; i < K; i++) hist[i] = k[bth * K + i] / sqrt(nn + 1e-6);
                for (int64_t i = 0; i < K; i++) {
                    ks[i] = 0;
                    for (int64_t s = 0; s < L; s++) ks[i] += hist[s * K + i];
                    ks[i] /= (double)L;
                }
                double eta = base_lr[hh] / (1 + exp(-lr[bth]));
                for (int64_t j = 0; j < V; j++) {
                    err[j] = -v[bth * V + j];
                    for (int64_t i = 0; i < K; i++) err[j] += ks[i] * Wm[i * V + j];
                }
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) Wm[i * V + j] -= eta * ks[i] * err[j];
                for (int64_t j = 0; j < V; j++) {
                    double o = 0;
                    for (int64_t i = 0; i < K; i++) o += q[bth * K + i] * Wm[i * V + j];
                    double zz = z[bth * V + j];
                    y[bth * V + j] = o * 0.5 * zz * (1 + erf(zz / sqrt(2.0)));
                }
            }
        }
    if (!Wgiven) free(Wall);
    free(hist), free(ks), free(err);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(const ref_io *io);
} ref_table[] = {
    {"mamba2", ref_mamba2},
    {"mamba2_conv", ref_mamba2_conv},
    {"mamba", ref_mamba},
    {"gla", ref_gla},
    {"deltanet", ref_deltanet},
    {"gated_deltanet", ref_gated_deltanet},
    {"rwkv6", ref_rwkv6},
    {"linear_attn", ref_linear_attn},
    {"retnet", ref_retnet},
    {"lstm", ref_lstm},
    {"mamba3", ref_mamba3},
    {"mom", ref_mom},
    {"ttt_linear", ref_ttt_linear},
};

int ref_has(const char *model)
{
    for (size_t i = 0; i < sizeof ref_table / sizeof ref_table[0]; i++)
        if (strcmp(ref_table[i].name, model) == 0)
            return 1;
    return 0;
}

int ref_run(const char *model, const ref_io *io)
{
    for (size_t i = 0; i < sizeof ref_table / sizeof ref_table[0]; i++)
        if (strcmp(ref_table[i].name, model) == 0)
            return ref_table[i].run(io);
    return REF_ERR_NO_MODEL;
}
