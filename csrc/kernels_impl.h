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

/* pre[r] = b_ih + b_hh + x[r] @ w_ih.T for all T*B rows at once (b_hh NULL: b_ih alone): the
 * part of every step's pre-activation that does not wait for the previous step. */
static void SFX(project_inputs)(int64_t rows, int64_t I, int64_t GH, const REAL *x,
                                const REAL *w_ih, const REAL *b_ih, const REAL *b_hh, REAL *pre,
                                int n_threads)
{
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t r0, r1;
        part_range(rows, parts, k, &r0, &r1);
        for (int64_t r = r0; r < r1; r++)
            for (int64_t j = 0; j < GH; j++)
                pre[r * GH + j] = b_hh ? b_ih[j] + b_hh[j] : b_ih[j];
        SFX(gemm)(0, 1, r1 - r0, GH, I, 1, x + r0 * I, I, w_ih, I, 1, pre + r0 * GH, GH);
    }
}

/* out[j] = sum over rows r of a[r * lda + j] * (b ? b[r * ldb + j] : 1), for j < n: the bias and
 * peephole gradients. Each column belongs to one thread and sums its rows in order. */
static void SFX(column_sums)(int64_t rows, int64_t n, const REAL *a, int64_t lda, const REAL *b,
                             int64_t ldb, REAL *out, int n_threads)
{
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t j0, j1;
        part_range(n, parts, k, &j0, &j1);
        for (int64_t j = j0; j < j1; j++)
            out[j] = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = j0; j < j1; j++)
                out[j] += a[r * lda + j] * (b ? b[r * ldb + j] : 1);
    }
}

static inline REAL SFX(sigmoid)(REAL a)
{
    return 1 / (1 + EXP(-a)); /* exp overflows to inf for very negative a: 1 / inf = 0, no NaN */
}

/* ---------------------------------------------------------------- the cells
 * What one step does to a block of n rows once the recurrent product is in: the only code that
 * differs between the cells. Rows of pre/act/da have G*H entries, rows of h P, of c H. */

/* Elman: pre IN the pre-activation, which lives in hs[t + 1] and becomes h_t there. */
static inline void SFX(rnn_cell_forward)(int relu, int64_t n, REAL *pre)
{
    if (relu)
        for (int64_t j = 0; j < n; j++)
            pre[j] = pre[j] > 0 ? pre[j] : 0;
    else
        for (int64_t j = 0; j < n; j++)
            pre[j] = TANH(pre[j]);
}

/* h IN h_t; dh IN dL/dh_t; da OUT dL/d(pre-activation). */
static inline void SFX(rnn_cell_backward)(int relu, int64_t n, const REAL *h, const REAL *dh,
                                          REAL *da)
{
    if (relu)
        for (int64_t j = 0; j < n; j++)
            da[j] = h[j] > 0 ? dh[j] : 0;
    else
        for (int64_t j = 0; j < n; j++)
            da[j] = dh[j] * (1 - h[j] * h[j]);
}

/* LSTM: a IN pre-activations, OUT activations i, f, g, o; c_prev IN; c OUT; m OUT o * tanh(c)
 * (h itself unless the layer projects); p the peephole weights (p_i, p_f, p_o) or NULL. */
static inline void SFX(lstm_cell_forward)(int64_t n, int64_t H, REAL *a_all,
                                          const REAL *c_prev, REAL *c_all, REAL *m_all,
                                          const REAL *p)
{
    for (int64_t r = 0; r < n; r++) {
        REAL *a = a_all + r * 4 * H, *c = c_all + r * H, *m = m_all + r * H;
        const REAL *cp = c_prev + r * H;
        for (int64_t j = 0; j < H; j++) {
            REAL ai = a[j], af = a[H + j], ao = a[3 * H + j];
            if (p) {
                ai += p[j] * cp[j];
                af += p[H + j] * cp[j];
            }
            REAL i = SFX(sigmoid)(ai), f = SFX(sigmoid)(af), g = TANH(a[2 * H + j]);
            c[j] = f * cp[j] + i * g;
            if (p)
                ao += p[2 * H + j] * c[j]; /* the output gate sees the new cell */
            REAL o = SFX(sigmoid)(ao);
            m[j] = o * TANH(c[j]);
            a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
        }
    }
}

/* act IN i, f, g, o; c_prev, c IN; dm IN dL/dm_t (dL/dh_t without projection); dc IN dL/dc_t
 * from the future, OUT dL/dc_{t-1}; da OUT dL/d(pre-activation); m OUT o * tanh(c), when not
 * NULL (projection's weight gradient needs it). */
static inline void SFX(lstm_cell_backward)(int64_t n, int64_t H, const REAL *act_all,
                                           const REAL *c_prev, const REAL *c_all,
                                           const REAL *dm_all, REAL *dc_all, REAL *da_all,
                                           REAL *m_all, const REAL *p)
{
    for (int64_t r = 0; r < n; r++) {
        const REAL *a = act_all + r * 4 * H, *cp = c_prev + r * H, *c = c_all + r * H;
        const REAL *dm = dm_all + r * H;
        REAL *dc = dc_all + r * H, *d = da_all + r * 4 * H;
        for (int64_t j = 0; j < H; j++) {
            REAL i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
            REAL tc = TANH(c[j]);
            REAL dao = dm[j] * tc * o * (1 - o);
            REAL dcj = dc[j] + dm[j] * o * (1 - tc * tc);
            if (p)
                dcj += dao * p[2 * H + j];
            REAL dai = dcj * g * i * (1 - i), daf = dcj * cp[j] * f * (1 - f);
            d[j] = dai;
            d[H + j] = daf;
            d[2 * H + j] = dcj * i * (1 - g * g);
            d[3 * H + j] = dao;
            /* the carousel: back to c_{t-1} through the forget gate (and the peepholes) */
            dc[j] = dcj * f + (p ? dai * p[j] + daf * p[H + j] : 0);
            if (m_all)
                m_all[r * H + j] = o * tc;
        }
    }
}

/* GRU: a IN the input-side pre-activations (x W_ih^T + b_ih), OUT activations r, z, n; hh IN
 * W_hh h_{t-1} (no bias); h_prev IN; hn OUT W_hn h_{t-1} + b_hn; h OUT. */
static inline void SFX(gru_cell_forward)(int64_t n, int64_t H, REAL *a_all, const REAL *hh_all,
                                         const REAL *b_hh, const REAL *h_prev, REAL *hn_all,
                                         REAL *h_all)
{
    for (int64_t r = 0; r < n; r++) {
        REAL *a = a_all + r * 3 * H, *hn = hn_all + r * H, *h = h_all + r * H;
        const REAL *hh = hh_all + r * 3 * H, *hp = h_prev + r * H;
        for (int64_t j = 0; j < H; j++) {
            REAL rg = SFX(sigmoid)(a[j] + hh[j] + b_hh[j]);
            REAL zg = SFX(sigmoid)(a[H + j] + hh[H + j] + b_hh[H + j]);
            REAL hnj = hh[2 * H + j] + b_hh[2 * H + j];
            REAL ng = TANH(a[2 * H + j] + rg * hnj);
            h[j] = (1 - zg) * ng + zg * hp[j];
            hn[j] = hnj;
            a[j] = rg, a[H + j] = zg, a[2 * H + j] = ng;
        }
    }
}

/* act IN r, z, n; hn, h_prev IN; dh IN dL/dh_t, OUT the part of dL/dh_{t-1} that bypasses W_hh
 * (z * dL/dh_t); da OUT dL/d(input-side pre-activation); da_h OUT dL/d(W_hh h_{t-1} + b_hh). */
static inline void SFX(gru_cell_backward)(int64_t n, int64_t H, const REAL *act_all,
                                          const REAL *hn_all, const REAL *h_prev, REAL *dh_all,
                                          REAL *da_all, REAL *da_h_all)
{
    for (int64_t r = 0; r < n; r++) {
        const REAL *a = act_all + r * 3 * H, *hn = hn_all + r * H, *hp = h_prev + r * H;
        REAL *dh = dh_all + r * H, *d = da_all + r * 3 * H, *dhh = da_h_all + r * 3 * H;
        for (int64_t j = 0; j < H; j++) {
            REAL rg = a[j], zg = a[H + j], ng = a[2 * H + j], dhj = dh[j];
            REAL dan = dhj * (1 - zg) * (1 - ng * ng);
            REAL daz = dhj * (hp[j] - ng) * zg * (1 - zg);
            REAL dar = dan * hn[j] * rg * (1 - rg);
            d[j] = dhh[j] = dar;
            d[H + j] = dhh[H + j] = daz;
            d[2 * H + j] = dan;
            dhh[2 * H + j] = dan * rg;
            dh[j] = dhj * zg;
        }
    }
}

/* ---------------------------------------------------------------- the time loops */

void SFX(fl_forward)(const fl_layer *l, REAL *const s[], int n_threads)
{
    const int cell = l->cell;
    const int64_t T = l->T, B = l->B, H = l->H, P = l->P, GH = gates_of(cell) * H;
    const REAL *w_hh = s[FL_W_HH], *w_hr = s[FL_W_HR], *b_hh = s[FL_B_HH];
    const REAL *peep = l->peephole ? s[FL_W_PEEPHOLE] : NULL;
    REAL *hs = s[FL_HS], *cs = s[FL_CS], *hn = s[FL_HN], *work = s[FL_WORK];
    /* Where the pre-activations go: into gates, or for the Elman cell straight into hs[t + 1].
     * The GRU keeps b_hh out of them: it belongs inside r * (W_hn h + b_hn). */
    REAL *pre = cell == FL_LSTM || cell == FL_GRU ? s[FL_GATES] : hs + B * P;
    SFX(project_inputs)(T * B, l->I, GH, s[FL_X], s[FL_W_IH], s[FL_B_IH],
                        cell == FL_GRU ? NULL : b_hh, pre, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        const int64_t n = b1 - b0;
        if (n == 0)
            continue;
        for (int64_t t = 0; t < T; t++) {
            const REAL *h_prev = hs + (t * B + b0) * P;
            REAL *h = hs + ((t + 1) * B + b0) * P, *pre_t = pre + (t * B + b0) * GH;
            if (cell == FL_GRU) {
                REAL *hh = work + b0 * GH;
                SFX(gemm)(0, 1, n, GH, P, 1, h_prev, P, w_hh, P, 0, hh, GH);
                SFX(gru_cell_forward)(n, H, pre_t, hh, b_hh, h_prev, hn + (t * B + b0) * H, h);
                continue;
            }
            SFX(gemm)(0, 1, n, GH, P, 1, h_prev, P, w_hh, P, 1, pre_t, GH);
            if (cell != FL_LSTM) {
                SFX(rnn_cell_forward)(cell == FL_RNN_RELU, n * H, pre_t);
                continue;
            }
            REAL *c_prev = cs + (t * B + b0) * H, *m = l->projection ? work + b0 * H : h;
            SFX(lstm_cell_forward)(n, H, pre_t, c_prev, c_prev + B * H, m, peep);
            if (l->projection)
                SFX(gemm)(0, 1, n, P, H, 1, m, H, w_hr, H, 0, h, P);
        }
    }
}

void SFX(fl_backward)(const fl_layer *l, REAL *const s[], int n_threads)
{
    const int cell = l->cell;
    const int64_t T = l->T, B = l->B, H = l->H, P = l->P, GH = gates_of(cell) * H;
    const REAL *w_hh = s[FL_W_HH], *w_hr = s[FL_W_HR], *hs = s[FL_HS], *cs = s[FL_CS];
    const REAL *gates = s[FL_GATES], *hn = s[FL_HN], *dy = s[FL_DY];
    const REAL *peep = l->peephole ? s[FL_W_PEEPHOLE] : NULL;
    REAL *dh = s[FL_DH], *dc = s[FL_DC];
    /* The scratch, in the layout fl_work_size() counts. */
    REAL *da = s[FL_WORK], *rest = da + T * B * GH;
    REAL *da_h = da;              /* the recurrent side's gradient: the same, except the GRU's */
    if (cell == FL_GRU)
        da_h = rest, rest += T * B * GH;
    REAL *dhs = rest, *ms = dhs + T * B * P, *dm = ms + T * B * H; /* projection only */
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t k = 0; k < parts; k++) {
        int64_t b0, b1;
        part_range(B, parts, k, &b0, &b1);
        const int64_t n = b1 - b0;
        if (n == 0)
            continue;
        REAL *dh_b = dh + b0 * P;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t row = t * B + b0;
            const REAL *dy_t = dy + row * P;
            for (int64_t j = 0; j < n * P; j++)
                dh_b[j] += dy_t[j]; /* the output at t and the future both use h_t */
            REAL *da_t = da + row * GH, *da_h_t = da_h + row * GH;
            if (cell == FL_LSTM) {
                const REAL *dm_b = dh_b;
                if (l->projection) {
                    memcpy(dhs + row * P, dh_b, (size_t)(n * P) * sizeof(REAL));
                    SFX(gemm)(0, 0, n, H, P, 1, dh_b, P, w_hr, H, 0, dm + b0 * H, H);
                    dm_b = dm + b0 * H;
                }
                const REAL *c_prev = cs + row * H;
                SFX(lstm_cell_backward)(n, H, gates + row * GH, c_prev, c_prev + B * H, dm_b,
                                        dc + b0 * H, da_t, l->projection ? ms + row * H : NULL,
                                        peep);
            } else if (cell == FL_GRU) {
                SFX(gru_cell_backward)(n, H, gates + row * GH, hn + row * H, hs + row * P, dh_b,
                                       da_t, da_h_t);
            } else {
                SFX(rnn_cell_backward)(cell == FL_RNN_RELU, n * H, hs + row * P + B * P, dh_b,
                                       da_t);
            }
            /* dL/dh_{t-1} = da_h_t @ w_hh, added to the GRU's direct path z * dL/dh_t; the
             * other cells have consumed dh and overwrite it. */
            SFX(gemm)(0, 0, n, P, GH, 1, da_h_t, GH, w_hh, P, cell == FL_GRU ? 1 : 0, dh_b, P);
        }
    }

    /* The weight gradients: each one product over all T*B rows after the loop, not T per-step
     * products:  dx = da @ w_ih,  dw_ih = da.T @ x,  dw_hh = da_h.T @ hs[:-1],  db = column
     * sums,  dw_hr = dhs.T @ ms,  and the peepholes' sums of gate gradient times cell state. */
    const int64_t rows = T * B, I = l->I;
    SFX(gemm_rows)(0, 0, rows, I, GH, da, GH, s[FL_W_IH], I, 0, s[FL_DX], I, n_threads);
    SFX(gemm_rows)(1, 0, GH, I, rows, da, GH, s[FL_X], I, 0, s[FL_DW_IH], I, n_threads);
    SFX(gemm_rows)(1, 0, GH, P, rows, da_h, GH, hs, P, 0, s[FL_DW_HH], P, n_threads);
    if (s[FL_DB_IH]) {
        SFX(column_sums)(rows, GH, da, GH, NULL, 0, s[FL_DB_IH], n_threads);
        if (da_h == da)
            memcpy(s[FL_DB_HH], s[FL_DB_IH], (size_t)GH * sizeof(REAL));
        else
            SFX(column_sums)(rows, GH, da_h, GH, NULL, 0, s[FL_DB_HH], n_threads);
    }
    if (l->projection)
        SFX(gemm_rows)(1, 0, P, H, rows, dhs, P, ms, H, 0, s[FL_DW_HR], H, n_threads);
    if (peep) {
        REAL *dp = s[FL_DW_PEEPHOLE];
        SFX(column_sums)(rows, H, da, GH, cs, H, dp, n_threads);                  /* i: c_{t-1} */
        SFX(column_sums)(rows, H, da + H, GH, cs, H, dp + H, n_threads);          /* f: c_{t-1} */
        SFX(column_sums)(rows, H, da + 3 * H, GH, cs + B * H, H, dp + 2 * H, n_threads); /* o: c_t */
    }
}
