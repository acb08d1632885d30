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

/* ---------------------------------------------------------------- the cells
 * What one step does to a block of n rows once its pre-activations (input part plus recurrent
 * part) are in: the only code that differs between the cells. Rows of pre/act/da have G*H
 * entries, rows of the states H. */

/* pre IN pre-activations, OUT activations (the RNN's pre is h itself); c_prev IN, c and h OUT. */
static inline void SFX(cell_forward)(int cell, int64_t n, int64_t H, REAL *pre,
                                     const REAL *c_prev, REAL *c, REAL *h)
{
    if (cell == CELL_TANH) {
        for (int64_t j = 0; j < n * H; j++)
            h[j] = TANH(pre[j]);
    } else if (cell == CELL_RELU) {
        for (int64_t j = 0; j < n * H; j++)
            h[j] = pre[j] > 0 ? pre[j] : 0;
    } else {
        for (int64_t r = 0; r < n; r++) {
            REAL *a = pre + r * 4 * H;
            const REAL *cp = c_prev + r * H;
            REAL *cr = c + r * H, *hr = h + r * H;
            for (int64_t j = 0; j < H; j++) {
                REAL i = SFX(sigmoid)(a[j]), f = SFX(sigmoid)(a[H + j]);
                REAL g = TANH(a[2 * H + j]), o = SFX(sigmoid)(a[3 * H + j]);
                cr[j] = f * cp[j] + i * g;
                hr[j] = o * TANH(cr[j]);
                a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
            }
        }
    }
}

/* act IN the step's activations (the RNN's: h_t); c_prev, c, dy IN; dh IN dL/dh_t from the
 * future, dc IN/OUT dL/dc_t -> dL/dc_{t-1}; da OUT dL/d(pre-activation). */
static inline void SFX(cell_backward)(int cell, int64_t n, int64_t H, const REAL *act,
                                      const REAL *c_prev, const REAL *c, const REAL *dy,
                                      const REAL *dh, REAL *dc, REAL *da)
{
    if (cell == CELL_TANH) {
        for (int64_t j = 0; j < n * H; j++)
            da[j] = (dh[j] + dy[j]) * (1 - act[j] * act[j]);
    } else if (cell == CELL_RELU) {
        for (int64_t j = 0; j < n * H; j++)
            da[j] = (dh[j] + dy[j]) * (act[j] > 0);
    } else {
        for (int64_t r = 0; r < n; r++) {
            const REAL *a = act + r * 4 * H, *cp = c_prev + r * H, *cr = c + r * H;
            const REAL *dyr = dy + r * H, *dhr = dh + r * H;
            REAL *dcr = dc + r * H, *d = da + r * 4 * H;
            for (int64_t j = 0; j < H; j++) {
                REAL i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
                REAL dhj = dhr[j] + dyr[j], tc = TANH(cr[j]);
                REAL dcj = dcr[j] + dhj * o * (1 - tc * tc);
                d[j] = dcj * g * i * (1 - i);
                d[H + j] = dcj * cp[j] * f * (1 - f);
                d[2 * H + j] = dcj * i * (1 - g * g);
                d[3 * H + j] = dhj * tc * o * (1 - o);
                dcr[j] = dcj * f; /* the carousel: back to c_{t-1} through the forget gate */
            }
        }
    }
}

/* ---------------------------------------------------------------- the time loops */

static void SFX(forward)(int cell, int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                         const REAL *w_ih, const REAL *w_hh, const REAL *bias, REAL *hs,
                         REAL *cs, REAL *gates, int n_threads)
{
    const int64_t GH = (cell == CELL_LSTM ? 4 : 1) * H;
    /* Where the pre-activations go: the LSTM's into gates, the RNN's straight into hs[t + 1]. */
    REAL *pre = cell == CELL_LSTM ? gates : hs + B * H;
    SFX(project_inputs)(T * B, I, GH, x, w_ih, bias, pre, GH, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        for (int64_t t = 0; t < T; t++) {
            const int64_t prev = (t * B + b0) * H, next = prev + B * H;
            REAL *pre_t = pre + (t * B + b0) * GH;
            SFX(gemm)(0, 1, b1 - b0, GH, H, 1, hs + prev, H, w_hh, H, 1, pre_t, GH);
            SFX(cell_forward)(cell, b1 - b0, H, pre_t, cs ? cs + prev : NULL,
                              cs ? cs + next : NULL, hs + next);
        }
    }
}

static void SFX(backward)(int cell, int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                          const REAL *w_ih, const REAL *w_hh, const REAL *hs, const REAL *cs,
                          const REAL *gates, const REAL *dy, REAL *dh, REAL *dc, REAL *da,
                          REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads)
{
    const int64_t GH = (cell == CELL_LSTM ? 4 : 1) * H;
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        if (b1 == b0)
            continue;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t prev = (t * B + b0) * H, next = prev + B * H;
            REAL *da_t = da + (t * B + b0) * GH;
            const REAL *act = cell == CELL_LSTM ? gates + (t * B + b0) * GH : hs + next;
            SFX(cell_backward)(cell, b1 - b0, H, act, cs ? cs + prev : NULL,
                               cs ? cs + next : NULL, dy + prev, dh + b0 * H,
                               dc ? dc + b0 * H : NULL, da_t);
            /* dL/dh_{t-1} = da_t @ w_hh: overwrites dh, which cell_backward has consumed */
            SFX(gemm)(0, 0, b1 - b0, H, GH, 1, da_t, GH, w_hh, H, 0, dh + b0 * H, H);
        }
    }
    SFX(weight_grads)(T * B, I, H, GH, x, w_ih, hs, da, dx, dw_ih, dw_hh, db, n_threads);
}

/* ---------------------------------------------------------------- the public kernels */

void SFX(fl_rnn_forward)(int64_t T, int64_t B, int64_t I, int64_t H, int relu, const REAL *x,
                         const REAL *w_ih, const REAL *w_hh, const REAL *bias, REAL *hs,
                         int n_threads)
{
    SFX(forward)(relu ? CELL_RELU : CELL_TANH, T, B, I, H, x, w_ih, w_hh, bias, hs, NULL, NULL,
                 n_threads);
}

void SFX(fl_rnn_backward)(int64_t T, int64_t B, int64_t I, int64_t H, int relu, const REAL *x,
                          const REAL *w_ih, const REAL *w_hh, const REAL *hs, const REAL *dy,
                          REAL *dh, REAL *da, REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db,
                          int n_threads)
{
    SFX(backward)(relu ? CELL_RELU : CELL_TANH, T, B, I, H, x, w_ih, w_hh, hs, NULL, NULL, dy,
                  dh, NULL, da, dx, dw_ih, dw_hh, db, n_threads);
}

void SFX(fl_lstm_forward)(int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                          const REAL *w_ih, const REAL *w_hh, const REAL *bias, REAL *hs,
                          REAL *cs, REAL *gates, int n_threads)
{
    SFX(forward)(CELL_LSTM, T, B, I, H, x, w_ih, w_hh, bias, hs, cs, gates, n_threads);
}

void SFX(fl_lstm_backward)(int64_t T, int64_t B, int64_t I, int64_t H, const REAL *x,
                           const REAL *w_ih, const REAL *w_hh, const REAL *hs, const REAL *cs,
                           const REAL *gates, const REAL *dy, REAL *dh, REAL *dc, REAL *da,
                           REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads)
{
    SFX(backward)(CELL_LSTM, T, B, I, H, x, w_ih, w_hh, hs, cs, gates, dy, dh, dc, da, dx,
                  dw_ih, dw_hh, db, n_threads);
}
