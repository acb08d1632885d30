/* The kernels for one floating type, written once: csrc/kernels.c includes this file with
 * REAL = float and with REAL = double (SFX names the twins _f32 and _f64, GEMM, EXP and TANH
 * pick the matching BLAS and libm functions). Notation: csrc/fastlstm.h. */

/* C = alpha op(A) op(B) + beta C, row-major, with op(A) of shape (M, K) and op(B) (K, N).
 * Handles the empty cases itself (K = 0 leaves beta * C; BLAS would reject zero strides). */
static void SFX(gemm)(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, REAL alpha,
                      const REAL *A, int64_t lda, const REAL *Bm, int64_t ldb, REAL beta,
                      REAL *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                C[m * ldc + n] = beta == 0 ? 0 : beta * C[m * ldc + n];
        return;
    }
    GEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
         (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, Bm, (blasint)ldb, beta, C,
         (blasint)ldc);
}

/* The same product with the M rows of C cut into fl_num_parts() blocks, one per thread. */
static void SFX(gemm_rows)(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                           const REAL *A, int64_t lda, const REAL *Bm, int64_t ldb, REAL beta,
                           REAL *C, int64_t ldc, int n_threads)
{
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t m0, m1;
        part_range(M, parts, k, &m0, &m1);
        const REAL *a = trans_a ? A + m0 : A + m0 * lda;
        SFX(gemm)(trans_a, trans_b, m1 - m0, N, K, 1, a, lda, Bm, ldb, beta, C + m0 * ldc, ldc);
    }
}

/* pre[r] = bias + x[r] @ w_ih.T for all T*B rows at once: the part of every step's
 * pre-activation that does not wait for the previous step. pre: (T*B, GH). */
static void SFX(project_inputs)(int64_t rows, int64_t I, int64_t GH, const REAL *x,
                                const REAL *w_ih, const REAL *bias, REAL *pre, int64_t ld_pre,
                                int n_threads)
{
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t r0, r1;
        part_range(rows, parts, k, &r0, &r1);
        for (int64_t r = r0; r < r1; r++)
            memcpy(pre + r * ld_pre, bias, (size_t)GH * sizeof(REAL));
        SFX(gemm)(0, 1, r1 - r0, GH, I, 1, x + r0 * I, I, w_ih, I, 1, pre + r0 * ld_pre, ld_pre);
    }
}

/* Everything after the backward time loop, from da = dL/d(pre-activation), (T*B, GH):
 *   dx = da @ w_ih        dw_ih = da.T @ x        dw_hh = da.T @ hs[:-1]        db = sum_r da[r]
 * Each is one product over all T*B rows (not a sum of T per-step products), and the bias sum
 * runs over rows in a fixed order, each column owned by one thread. */
static void SFX(weight_grads)(int64_t rows, int64_t I, int64_t H, int64_t GH, const REAL *x,
                              const REAL *w_ih, const REAL *hs_prev, const REAL *da, REAL *dx,
                              REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads)
{
    SFX(gemm_rows)(0, 0, rows, I, GH, da, GH, w_ih, I, 0, dx, I, n_threads);
    SFX(gemm_rows)(1, 0, GH, I, rows, da, GH, x, I, 0, dw_ih, I, n_threads);
    SFX(gemm_rows)(1, 0, GH, H, rows, da, GH, hs_prev, H, 0, dw_hh, H, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t j0, j1;
        part_range(GH, parts, k, &j0, &j1);
        for (int64_t j = j0; j < j1; j++)
            db[j] = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = j0; j < j1; j++)
                db[j] += da[r * GH + j];
    }
}

static inline REAL SFX(sigmoid)(REAL a)
{
    return 1 / (1 + EXP(-a)); /* exp overflows to inf for very negative a: 1 / inf = 0, no NaN */
}

/* ---------------------------------------------------------------- Elman RNN */

void SFX(fl_rnn_forward)(int64_t T, int64_t B, int64_t I, int64_t H, int relu, const REAL *x,
                         const REAL *w_ih, const REAL *w_hh, const REAL *bias, REAL *hs,
                         int n_threads)
{
    /* hs[t + 1] first receives the input part of the pre-activation, then the recurrent part,
     * then the nonlinearity in place. */
    SFX(project_inputs)(T * B, I, H, x, w_ih, bias, hs + B * H, H, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        for (int64_t t = 0; t < T; t++) {
            const REAL *h_prev = hs + (t * B + b0) * H;
            REAL *h = hs + ((t + 1) * B + b0) * H;
            SFX(gemm)(0, 1, b1 - b0, H, H, 1, h_prev, H, w_hh, H, 1, h, H);
            const int64_t n = (b1 - b0) * H;
            if (relu)
                for (int64_t j = 0; j < n; j++)
                    h[j] = h[j] > 0 ? h[j] : 0;
            else
                for (int64_t j = 0; j < n; j++)
                    h[j] = TANH(h[j]);
        }
    }
}

void SFX(fl_rnn_backward)(int64_t T, int64_t B, int64_t I, int64_t H, int relu, const REAL *x,
                          const REAL *w_ih, const REAL *w_hh, const REAL *hs, const REAL *dy,
                          REAL *dh, REAL *da, REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db,
                          int n_threads)
{
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        const int64_t n = (b1 - b0) * H;
        REAL *dh_blk = dh + b0 * H;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t off = (t * B + b0) * H;
            const REAL *h = hs + off + B * H, *dy_t = dy + off;
            REAL *da_t = da + off;
            for (int64_t j = 0; j < n; j++) {
                REAL d = relu ? (h[j] > 0) : 1 - h[j] * h[j];
                da_t[j] = (dh_blk[j] + dy_t[j]) * d;
            }
            SFX(gemm)(0, 0, b1 - b0, H, H, 1, da_t, H, w_hh, H, 0, dh_blk, H);
        }
    }
    SFX(weight_grads)(T * B, I, H, H, x, w_ih, hs, da, dx, dw_ih, dw_hh, db, n_threads);
}

/* ---------------------------------------------------------------- LSTM */

void SFX(fl_lstm_forward)(int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                          const REAL *w_ih, const REAL *w_hh, const REAL *bias, REAL *hs,
                          REAL *cs, REAL *gates, int n_threads)
{
    const int64_t G4 = 4 * H;
    SFX(project_inputs)(T * B, I, G4, x, w_ih, bias, gates, G4, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        for (int64_t t = 0; t < T; t++) {
            REAL *g_t = gates + (t * B + b0) * G4;
            SFX(gemm)(0, 1, b1 - b0, G4, H, 1, hs + (t * B + b0) * H, H, w_hh, H, 1, g_t, G4);
            for (int64_t b = b0; b < b1; b++) {
                REAL *a = g_t + (b - b0) * G4; /* pre-activations in, activations out */
                const REAL *c_prev = cs + (t * B + b) * H;
                REAL *c = cs + ((t + 1) * B + b) * H, *h = hs + ((t + 1) * B + b) * H;
                for (int64_t j = 0; j < H; j++) {
                    REAL i = SFX(sigmoid)(a[j]), f = SFX(sigmoid)(a[H + j]);
                    REAL g = TANH(a[2 * H + j]), o = SFX(sigmoid)(a[3 * H + j]);
                    c[j] = f * c_prev[j] + i * g;
                    h[j] = o * TANH(c[j]);
                    a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
                }
            }
        }
    }
}

void SFX(fl_lstm_backward)(int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                           const REAL *w_ih, const REAL *w_hh, const REAL *hs, const REAL *cs,
                           const REAL *gates, const REAL *dy, REAL *dh, REAL *dc, REAL *da,
                           REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads)
{
    const int64_t G4 = 4 * H;
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        for (int64_t t = T - 1; t >= 0; t--) {
            for (int64_t b = b0; b < b1; b++) {
                const REAL *gt = gates + (t * B + b) * G4;
                const REAL *c = cs + ((t + 1) * B + b) * H, *c_prev = cs + (t * B + b) * H;
                const REAL *dy_t = dy + (t * B + b) * H;
                REAL *dh_b = dh + b * H, *dc_b = dc + b * H, *d = da + (t * B + b) * G4;
                for (int64_t j = 0; j < H; j++) {
                    REAL i = gt[j], f = gt[H + j], g = gt[2 * H + j], o = gt[3 * H + j];
                    REAL dhj = dh_b[j] + dy_t[j], tc = TANH(c[j]);
                    REAL dcj = dc_b[j] + dhj * o * (1 - tc * tc);
                    d[j] = dcj * g * i * (1 - i);
                    d[H + j] = dcj * c_prev[j] * f * (1 - f);
                    d[2 * H + j] = dcj * i * (1 - g * g);
                    d[3 * H + j] = dhj * tc * o * (1 - o);
                    dc_b[j] = dcj * f; /* the carousel: back to c_{t-1} through the forget gate */
                }
            }
            SFX(gemm)(0, 0, b1 - b0, H, G4, 1, da + (t * B + b0) * G4, G4, w_hh, H, 0,
                      dh + b0 * H, H);
        }
    }
    SFX(weight_grads)(T * B, I, H, G4, x, w_ih, hs, da, dx, dw_ih, dw_hh, db, n_threads);
}
