/* The kernels for one floating type and one instruction set, written once: kernels_isa.h
 * includes this file with REAL = float and with REAL = double (SFX names the twins _f32 and
 * _f64; GEMM and GEMV pick the matching BLAS functions, FMA and SQRT the C99 fused
 * multiply-add and square root, EXP_* the constants of exp below, VEC_* the build's intrinsics
 * of the packed product, IS_F64 which of the two types it is), and undefines them all at its
 * end, ready for the next type. The build's own parameters are kernels_isa.h's ISA_*.
 * Notation: csrc/fastlstm.h. */

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
    if (M == 1 && !trans_a) {
        /* One row, as every step of a batch of one has: a matrix-vector product reads op(B)
         * once, where GEMM would first copy it into its packed panels. */
        if (trans_b)
            GEMV(CblasRowMajor, CblasNoTrans, (blasint)N, (blasint)K, alpha, Bm, (blasint)ldb, A,
                 1, beta, C, 1);
        else
            GEMV(CblasRowMajor, CblasTrans, (blasint)K, (blasint)N, alpha, Bm, (blasint)ldb, A,
                 1, beta, C, 1);
        return;
    }
    GEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
         (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, Bm, (blasint)ldb, beta, C,
         (blasint)ldc);
}

/* dst[j] = b_ih[j] + b_hh[j] for j < n, or b_ih[j] when b_hh is NULL: a loop for each case.
 * Vectorized, one loop with the test inside would load b_hh under a mask even when it is NULL,
 * and a masked-off load of an unmapped address costs a microcode assist per vector on some CPUs
 * (Zen 4: more than the input projection itself, for the GRU, whose b_hh is inside r). */
FL_INLINE void SFX(bias_sum)(int64_t n, const REAL *b_ih, const REAL *b_hh, REAL *dst)
{
    if (b_hh)
        #pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] = b_ih[j] + b_hh[j];
    else
        #pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] = b_ih[j];
}

/* pre[r] = b_ih + b_hh + x[r] @ w_ih.T for the rows of part k of `parts` (b_hh NULL: b_ih
 * alone; b_ih NULL too: no bias): the part of every step's pre-activation that does not wait for
 * the previous step. */
static void SFX(project_part)(int64_t rows, int64_t I, int64_t GH, const REAL *x,
                              const REAL *w_ih, const REAL *b_ih, const REAL *b_hh, REAL *pre,
                              int64_t k, int64_t parts)
{
    int64_t r0, r1;
    part_range(rows, parts, k, &r0, &r1);
    for (int64_t r = r0; b_ih && r < r1; r++)
        SFX(bias_sum)(GH, b_ih, b_hh, pre + r * GH);
    SFX(gemm)(0, 1, r1 - r0, GH, I, 1, x + r0 * I, I, w_ih, I, b_ih != NULL, pre + r0 * GH, GH);
}

/* a * b + c, rounded once by an FMA instruction when `fused`, else twice. The gate math takes
 * `fused` as a constant, ISA_FUSED: 1 in the vector builds, whose targets have the
 * instruction; 0 in the generic one, where fma() would be a library call per element and its
 * loops would not vectorize. */
FL_INLINE REAL SFX(madd)(REAL a, REAL b, REAL c, const int fused)
{
    return fused ? FMA(a, b, c) : a * b + c;
}

/* exp(a) for the gates, written so that the compiler vectorizes the loops that call it (a libm
 * call per element would not be): a = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor
 * polynomial (EXP_DEGREE terms, below one unit of roundoff on that interval), 2^n built in the
 * exponent bits. a is first clamped to the range where 2^n is a normal number, so large |a|
 * give a huge or tiny result rather than inf or 0 (the sigmoid and tanh below get their
 * limits 0, 1 or +-1 either way); NaN stays NaN through the comparisons. With `fused`, the
 * reduction and the polynomial run on FMAs, each step rounded once, in fewer instructions. */
static const REAL SFX(exp_taylor)[] = { /* 1 / k! */
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
    1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};

/* The reduction of exp and expm1: a, clamped, = n ln2 + r; returns r, and 2^n in *scale. */
FL_INLINE REAL SFX(exp_reduce)(REAL a, REAL *scale, const int fused)
{
    a = a < EXP_MIN ? EXP_MIN : a;
    a = a > EXP_MAX ? EXP_MAX : a;
    /* adding 1.5 * 2^(mantissa bits) rounds a / ln2 to an integer n held in the low bits */
    REAL t = SFX(madd)(a, (REAL)1.4426950408889634, EXP_ROUND, fused);
    REAL n = t - EXP_ROUND;
    REAL r = SFX(madd)(-n, EXP_LN2_LO, SFX(madd)(-n, EXP_LN2_HI, a, fused), fused);
    EXP_UINT bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - EXP_ROUND_BITS + EXP_BIAS) << EXP_MANT; /* 2^n: n + bias in the exponent */
    memcpy(scale, &bits, sizeof *scale);
    return r;
}

FL_INLINE REAL SFX(exp)(REAL a, const int fused)
{
    REAL scale, r = SFX(exp_reduce)(a, &scale, fused);
    REAL p = SFX(exp_taylor)[EXP_DEGREE];
#pragma GCC unroll 16 /* counted as calls, the FMAs would keep GCC from unrolling it */
    for (int k = EXP_DEGREE - 1; k >= 0; k--)
        p = SFX(madd)(p, r, SFX(exp_taylor)[k], fused);
    return p * scale;
}

/* exp(a) - 1 to a few units of roundoff of itself, also for a near 0: 2^n (e^r - 1) + 2^n - 1,
 * e^r - 1 by the polynomial of exp without its constant term (for |a| <= ln2 / 2, n = 0 and
 * that is all). */
FL_INLINE REAL SFX(expm1)(REAL a, const int fused)
{
    REAL scale, r = SFX(exp_reduce)(a, &scale, fused);
    REAL p = SFX(exp_taylor)[EXP_DEGREE];
#pragma GCC unroll 16
    for (int k = EXP_DEGREE - 1; k >= 1; k--)
        p = SFX(madd)(p, r, SFX(exp_taylor)[k], fused);
    return SFX(madd)(scale, p * r, scale - 1, fused);
}

FL_INLINE REAL SFX(sigmoid)(REAL a, const int fused)
{
    return 1 / (1 + SFX(exp)(-a, fused));
}

/* tanh(a) = 1 - 2 / (1 + exp(2a)): one exp, like the sigmoid. Exact to a few units of
 * roundoff of 1 (so for |a| near 0 in absolute, not relative, terms, which is what the layers'
 * sums of many terms need); +-1 for large |a|, NaN for NaN. */
FL_INLINE REAL SFX(tanh)(REAL a, const int fused)
{
    return 1 - 2 / (1 + SFX(exp)(2 * a, fused));
}

/* tanh(a) = e / (e + 2), e = expm1(2a): as cheap as tanh above, and exact to a few units of
 * roundoff of itself, also for |a| near 0. The LN LSTM's: LN(h w_hh^T) does not see the scale
 * of h, so a row of small h (small o or tanh) would bring the absolute error of tanh above up
 * to the size of the next step's pre-activations. +-1 for large |a|, NaN for NaN. */
FL_INLINE REAL SFX(tanh_rel)(REAL a, const int fused)
{
    const REAL e = SFX(expm1)(2 * a, fused);
    return e / (e + 2);
}

/* ---------------------------------------------------------------- layer normalisation
 * The LN LSTM's (FL_LSTM_LN): LN(v) = (v - mean v) / sqrt(var v + LN_EPS) over the n entries of
 * a row, var biased, and its gradient. A sum over a row runs in LN_LANES lanes, lane q summing
 * the entries j = q mod LN_LANES in order, then the lanes in order: one order, fixed by n, in
 * every build and for every alignment of the row (which an "omp simd" reduction would not
 * promise), and the compiler keeps the lanes in a vector register or a few. The other passes
 * are loops over independent entries ("omp simd"). */
#define LN_EPS 1e-5
#define LN_LANES 16

/* The sum over j < n of v[j], or with `square` (a constant at every call) of (v[j] - shift)^2,
 * in the order above. */
FL_INLINE REAL SFX(row_sum)(int64_t n, const REAL *v, REAL shift, const int square)
{
    REAL lane[LN_LANES] = {0};
    int64_t j = 0;
    for (; j + LN_LANES <= n; j += LN_LANES)
        #pragma omp simd
        for (int q = 0; q < LN_LANES; q++) {
            const REAL d = v[j + q] - shift;
            lane[q] += square ? d * d : v[j + q];
        }
    for (int q = 0; j + q < n; q++) {
        const REAL d = v[j + q] - shift;
        lane[q] += square ? d * d : v[j + q];
    }
    REAL sum = 0;
    for (int q = 0; q < LN_LANES; q++)
        sum += lane[q];
    return sum;
}

/* *ab = the sum of a[j] b[j] and *abc = that of a[j] b[j] c[j] over j < n, each in the order of
 * row_sum, in one pass: two independent sets of lanes. */
FL_INLINE void SFX(row_dots)(int64_t n, const REAL *a, const REAL *b, const REAL *c, REAL *ab,
                             REAL *abc)
{
    REAL lane2[LN_LANES] = {0}, lane3[LN_LANES] = {0};
    int64_t j = 0;
    for (; j + LN_LANES <= n; j += LN_LANES)
        #pragma omp simd
        for (int q = 0; q < LN_LANES; q++) {
            const REAL t = a[j + q] * b[j + q];
            lane2[q] += t;
            lane3[q] += t * c[j + q];
        }
    for (int q = 0; j + q < n; q++) {
        const REAL t = a[j + q] * b[j + q];
        lane2[q] += t;
        lane3[q] += t * c[j + q];
    }
    REAL sum2 = 0, sum3 = 0;
    for (int q = 0; q < LN_LANES; q++)
        sum2 += lane2[q], sum3 += lane3[q];
    *ab = sum2, *abc = sum3;
}

/* The mean of v[0 .. n) and 1 / sqrt(var + eps), the variance as the mean of the squared
 * deviations from the mean (a second pass: no cancellation for rows far from zero mean). */
FL_INLINE void SFX(ln_stats)(int64_t n, const REAL *v, REAL *mean, REAL *rstd)
{
    const REAL mu = SFX(row_sum)(n, v, 0, 0) / (REAL)n;
    const REAL var = SFX(row_sum)(n, v, mu, 1) / (REAL)n;
    *mean = mu;
    *rstd = 1 / SQRT(var + (REAL)LN_EPS);
}

/* dv = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = dy g: the gradient of v
 * from that of LN(v) g (+ b), over a row of n, xhat = LN(v) and rstd saved by the forward. dv
 * may be dy. */
FL_INLINE void SFX(ln_backward)(int64_t n, const REAL *dy, const REAL *g, const REAL *xhat,
                                REAL rstd, REAL *dv)
{
    REAL m1, m2;
    SFX(row_dots)(n, dy, g, xhat, &m1, &m2);
    m1 /= (REAL)n, m2 /= (REAL)n;
    #pragma omp simd
    for (int64_t j = 0; j < n; j++)
        dv[j] = rstd * (dy[j] * g[j] - m1 - xhat[j] * m2);
}

/* The LN LSTM's input side, n rows every ld-th (row i of an array whose rows have w entries at
 * i ld w), from row r of x: pre IN x w_ih^T, OUT LN(x w_ih^T) g_ih + b_ih + b_hh; when training
 * (FL_NORMED, FL_RSTD) xhat_ih to the first G H entries of normed's rows, its rstd to column 0. */
static void SFX(ln_input)(const fl_layer *l, REAL *const s[], int64_t n, int64_t ld, int64_t r0,
                          REAL *pre_all)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t GH = cf->gates * l->H, wn = cf->normed * l->H;
    const REAL *g = s[FL_G_IH], *b_ih = s[FL_B_IH], *b_hh = s[FL_B_HH];
    REAL *normed_all = s[FL_NORMED] ? s[FL_NORMED] + r0 * wn : NULL;
    REAL *rstd_all = s[FL_RSTD] ? s[FL_RSTD] + r0 * cf->rstd : NULL;
    for (int64_t r = 0; r < n; r++) {
        REAL *pre = pre_all + r * ld * GH, mu, rs;
        SFX(ln_stats)(GH, pre, &mu, &rs);
        if (normed_all) {
            REAL *xh = normed_all + r * ld * wn;
            #pragma omp simd
            for (int64_t j = 0; j < GH; j++) {
                xh[j] = (pre[j] - mu) * rs;
                pre[j] = xh[j] * g[j] + (b_ih[j] + b_hh[j]);
            }
            rstd_all[r * ld * cf->rstd] = rs;
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < GH; j++)
                pre[j] = (pre[j] - mu) * rs * g[j] + (b_ih[j] + b_hh[j]);
        }
    }
}

/* ---------------------------------------------------------------- the packed recurrent product
 * Every step multiplies a few rows of h_{t-1} (or of a gradient) by the same weight matrix: T
 * times per call. A BLAS call re-packs that matrix into its own panels every time, which costs
 * as much as the product for the small row counts of a step. Here the matrix is packed once per
 * call and each step runs a register-tiled product over the packed panels; a forward on a batch
 * of a few rows per part or more (FUSE_ROWS) packs w_ih^T too, and each step sums x_t w_ih^T and
 * h_{t-1} w_hh^T in the same tiles, so that its pre-activations are written once, while they
 * are in cache. Only the vector builds have it (ISA_VECTOR_BYTES > 0); the generic build's
 * steps call the BLAS.
 *
 * Packed layout: op(W), the (K, N) right-hand operand, cut into panels of VLEN columns (one
 * vector), zero past column N, in groups of `group` panels (the last group may have fewer):
 * a group holds, for k = 0 .. K-1, row k of each of its panels side by side (panel_offset).
 * Group 1, panel after panel, is every product's layout; a wider group serves steps of one row
 * (row_group), whose tile reads row k of a whole group at once: one stretch of memory a k
 * rather than a vector from each of its panels' separate streams, which a core's prefetchers
 * follow less well once the weights outgrow its first-level cache. The layout moves entries,
 * never the arithmetic: the results are the same in every layout. */
#if ISA_VECTOR_BYTES
#define VLEN ((int64_t)(ISA_VECTOR_BYTES / sizeof(REAL)))
typedef REAL SFX(vec) __attribute__((vector_size(ISA_VECTOR_BYTES), aligned(sizeof(REAL))));

/* A VLEN x VLEN block of op(W) = W^T into a panel: its rows are VLEN columns of W's rows
 * (src, leading dimension lds), its VLEN packed rows of VLEN entries go to dst, ldd apart. In
 * registers, by log2(VLEN) stages: the stage of distance s swaps, in every 2s x 2s block, the
 * s x s block above the diagonal with the one below it (row i, i & s == 0, takes row i + s's
 * entries j - s for its entries j with j & s set, and row i + s takes row i's j + s for its j
 * without), two shuffles of a pair of rows; after every stage each entry (i, j) is at (j, i).
 * The shuffles' lane lists are constants (LANES, per vector length), so that each one compiles
 * to the target's own permutes. A packed matrix is written per call, so this runs for every
 * call: the scalar copy of transposed entries, one at a time, took longer than a whole step at
 * B = 1. */
#define VLANES (ISA_VECTOR_BYTES / (4 << IS_F64)) /* VLEN, for the preprocessor */
#if VLANES == 16
#define LANES(F, s)                                                                            \
    F(0, s), F(1, s), F(2, s), F(3, s), F(4, s), F(5, s), F(6, s), F(7, s), F(8, s), F(9, s),  \
        F(10, s), F(11, s), F(12, s), F(13, s), F(14, s), F(15, s)
#elif VLANES == 8
#define LANES(F, s) F(0, s), F(1, s), F(2, s), F(3, s), F(4, s), F(5, s), F(6, s), F(7, s)
#elif VLANES == 4
#define LANES(F, s) F(0, s), F(1, s), F(2, s), F(3, s)
#elif VLANES == 2
#define LANES(F, s) F(0, s), F(1, s)
#else
#error "a vector build of 2, 4, 8 or 16 lanes"
#endif
/* Lane j of the pair's first row after the stage of distance s, and of its second: lanes
 * VLEN .. 2 VLEN - 1 are the second row's. */
#define SWAP_FIRST(j, s) (((j) & (s)) ? VLANES + (j) - (s) : (j))
#define SWAP_SECOND(j, s) (((j) & (s)) ? VLANES + (j) : (j) + (s))
/* EXP_UINT: the unsigned integer as wide as REAL, which GCC's shuffle takes for lane numbers */
typedef EXP_UINT SFX(lanes) __attribute__((vector_size(ISA_VECTOR_BYTES)));
#ifdef __clang__
#define SHUFFLE(a, b, F, s) __builtin_shufflevector(a, b, LANES(F, s))
#else
#define SHUFFLE(a, b, F, s) __builtin_shuffle(a, b, (SFX(lanes)){LANES(F, s)})
#endif
#define SWAP_STAGE(s)                                                                          \
    _Pragma("GCC unroll 16") for (int i = 0; i < VLANES; i++) if (!(i & (s)))                  \
    {                                                                                          \
        const SFX(vec) first = r[i], second = r[i + (s)];                                      \
        r[i] = SHUFFLE(first, second, SWAP_FIRST, s);                                          \
        r[i + (s)] = SHUFFLE(first, second, SWAP_SECOND, s);                                   \
    }

FL_INLINE void SFX(transpose_block)(const REAL *src, int64_t lds, REAL *dst, int64_t ldd)
{
    SFX(vec) r[VLANES];
#pragma GCC unroll 16
    for (int i = 0; i < VLANES; i++)
        r[i] = *(const SFX(vec) *)(src + i * lds);
#if VLANES >= 16
    SWAP_STAGE(8)
#endif
#if VLANES >= 8
    SWAP_STAGE(4)
#endif
#if VLANES >= 4
    SWAP_STAGE(2)
#endif
    SWAP_STAGE(1)
#pragma GCC unroll 16
    for (int i = 0; i < VLANES; i++)
        *(SFX(vec) *)(dst + i * ldd) = r[i];
}
#undef SWAP_STAGE
#undef SHUFFLE
#undef SWAP_SECOND
#undef SWAP_FIRST
#undef LANES
#undef VLANES

/* Where panel p of a packed op(W) of K rows, in `panels` panels by groups of `group`, starts:
 * its row k is *ks entries further on for every k. */
static inline int64_t SFX(panel_offset)(int64_t K, int64_t panels, int64_t group, int64_t p,
                                        int64_t *ks)
{
    const int64_t g0 = p - p % group, width = panels - g0 < group ? panels - g0 : group;
    *ks = width * VLEN;
    return g0 * K * VLEN + (p - g0) * VLEN;
}

/* Panels k of `parts` (part_range of them) of op(W), in groups of `group`: W^T for W of shape
 * (N, K) (trans), else W itself, of shape (K, N); ldw, W's leading dimension. A whole panel of
 * W^T goes by blocks of VLEN rows (transpose_block), the rest entry by entry. */
static void SFX(pack_part)(int trans, int64_t K, int64_t N, const REAL *W, int64_t ldw,
                           int64_t group, REAL *packed, int64_t k_part, int64_t parts)
{
    const int64_t panels = (N + VLEN - 1) / VLEN;
    int64_t p0, p1;
    part_range(panels, parts, k_part, &p0, &p1);
    for (int64_t p = p0; p < p1; p++) {
        int64_t ks;
        REAL *panel = packed + SFX(panel_offset)(K, panels, group, p, &ks);
        const int full = N - p * VLEN >= VLEN;
        int64_t k = 0;
        if (trans && full)
            for (; k + VLEN <= K; k += VLEN)
                SFX(transpose_block)(W + p * VLEN * ldw + k, ldw, panel + k * ks, ks);
        if (!trans && full) /* a vector's copy per k: the loop below stays scalar at -O2 */
            for (; k < K; k++)
                memcpy(panel + k * ks, W + k * ldw + p * VLEN, VLEN * sizeof(REAL));
        for (; k < K; k++)
            for (int64_t v = 0; v < VLEN; v++) {
                const int64_t col = p * VLEN + v;
                panel[k * ks + v] =
                    col >= N ? 0 : trans ? W[col * ldw + k] : W[k * ldw + col];
            }
    }
}
/* One k of a tile: acc[i][q] += A[i, k] times row k of panel q, at w + q qs + k ks. A[i, k]
 * is at A[i lda + k], or for a product by columns (a constant at every call) at A[i + VLEN k]:
 * A^T packed into panels like W (see gemm_tn), from the tile's first row. */
FL_INLINE void SFX(tile_k)(const int mr, const int np, const int by_columns, int64_t k,
                           const REAL *A, int64_t lda, const REAL *w, int64_t qs, int64_t ks,
                           SFX(vec) acc[8][8])
{
    SFX(vec) wk[8];
#pragma GCC unroll 8
    for (int q = 0; q < np; q++)
        wk[q] = *(const SFX(vec) *)(w + q * qs + k * ks);
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        const SFX(vec) a = VEC_BROADCAST(by_columns ? A[i + k * VLEN] : A[i * lda + k]);
#pragma GCC unroll 8
        for (int q = 0; q < np; q++)
            acc[i][q] = VEC_FMA(a, wk[q], acc[i][q]);
    }
}

/* One term of a packed product: the rows of A (K entries each, leading dimension lda; or A^T
 * packed, for a product by columns, lda unused) times a packed op(W) of K rows, in groups of
 * `group` panels. */
typedef struct {
    const REAL *A;
    int64_t lda, K;
    const REAL *packed;
    int64_t group;
} SFX(term);

/* A term's share of a tile (see tile): every k of its K, in the u sets of accumulators, on
 * panels at w + q qs, each row k of them ks further on. Panel after panel, ks is the constant
 * VLEN, as in every tile but a grouped one-row tile's, whose qs is. */
FL_INLINE void SFX(tile_term)(const int mr, const int np, const int by_columns, const int u,
                              int64_t K, const REAL *A, int64_t lda, const REAL *w, int64_t qs,
                              int64_t ks, SFX(vec) acc[8][8][8])
{
    int64_t k = 0;
    for (; k + u <= K; k += u)
#pragma GCC unroll 8
        for (int s = 0; s < u; s++)
            SFX(tile_k)(mr, np, by_columns, k + s, A, lda, w, qs, ks, acc[s]);
    for (; k < K; k++)
        SFX(tile_k)(mr, np, by_columns, k, A, lda, w, qs, ks, acc[0]);
}

/* C[:mr, :cols] = beta C + bias + the sum over the terms of A[row:row + mr] times panels
 * panel .. panel + np - 1 of op(W), A laid out as by_columns says (see tile_k) (cols <= np
 * VLEN, the last panel may be partial; bias, when not NULL, holds the cols entries of the
 * panels' columns). mr and np are constants at every call, so the loops unroll into registers:
 * mr * np accumulators, which the build's tile shapes (ISA_TILE_*) keep within its vector
 * registers. A thin tile (mr * np < 8) would wait on the latency of its FMAs, each adding to
 * the one before: it sums the k of each residue modulo u into its own accumulators instead (u
 * sets of them, mr * np * u >= 8), and adds the sets together at the end. */
FL_INLINE void
SFX(tile)(const int mr, const int np, const int by_columns, const SFX(term) *terms, int n_terms,
          int64_t row, int64_t panel, int64_t cols, const REAL *bias, int beta, REAL *C,
          int64_t ldc)
{
    const int u = mr * np >= 8 ? 1 : mr * np >= 4 ? 2 : mr * np >= 2 ? 4 : 8;
    SFX(vec) acc[8][8][8];
#pragma GCC unroll 8
    for (int s = 0; s < u; s++)
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                acc[s][i][q] = (SFX(vec)){0};
    for (int t = 0; t < n_terms; t++) {
        const int64_t K = terms[t].K, lda = terms[t].lda;
        const REAL *A = terms[t].A + (by_columns ? row / VLEN * K * VLEN + row % VLEN
                                                 : row * lda);
        if (ISA_ROW_GROUP > 1 && mr == 1 && !by_columns && terms[t].group > 1) {
            /* the tile's panels are in one group (row_group): side by side in each row */
            int64_t ks;
            const REAL *w = terms[t].packed +
                            SFX(panel_offset)(K, panel + (cols + VLEN - 1) / VLEN,
                                              terms[t].group, panel, &ks);
            SFX(tile_term)(1, np, 0, u, K, A, lda, w, VLEN, ks, acc);
        } else {
            SFX(tile_term)(mr, np, by_columns, u, K, A, lda, terms[t].packed + panel * K * VLEN,
                           K * VLEN, VLEN, acc);
        }
    }
#pragma GCC unroll 8
    for (int s = 1; s < u; s++)
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
            for (int q = 0; q < np; q++)
                acc[0][i][q] += acc[s][i][q];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 8
        for (int q = 0; q < np; q++) {
            REAL *c = C + i * ldc + q * VLEN;
            const REAL *b = bias ? bias + q * VLEN : NULL;
            const int64_t n = cols - q * VLEN < VLEN ? cols - q * VLEN : VLEN;
            if (n == VLEN) {
                SFX(vec) *cv = (SFX(vec) *)c, v = acc[0][i][q];
                if (b)
                    v += *(const SFX(vec) *)b;
                *cv = beta ? *cv + v : v;
            } else { /* through memory: acc itself, indexed by j, would live there too */
                REAL sum[VLEN];
                *(SFX(vec) *)sum = acc[0][i][q];
                if (b) /* outside the loop: see bias_sum */
                    for (int64_t j = 0; j < n; j++)
                        sum[j] += b[j];
                for (int64_t j = 0; j < n; j++)
                    c[j] = beta ? c[j] + sum[j] : sum[j];
            }
        }
}

/* Rows [0, rows) of C, rows a multiple of mr, by tiles of mr rows and np panels; the fewer than
 * np panels left after the last such tile run one at a time, but for a single row in tiles of 4
 * and then 2 panels where they fit in np: a step split by units (forward_split_step) gives a row
 * a few panels of each gate block, and one at a time each re-reads the row and sums its k in 8
 * accumulators of which it stores one. Wider tiles of more rows would not fit the registers.
 * Each tile's np panels stay in cache while every row block passes over them. */
FL_INLINE void
SFX(tile_rows)(const int mr, const int np, const int by_columns, int64_t row0, int64_t rows,
               int64_t N, const SFX(term) *terms, int n_terms, const REAL *bias, int beta,
               REAL *C, int64_t ldc)
{
    const int64_t panels = (N + VLEN - 1) / VLEN;
    int64_t p = 0;
    for (; p + np <= panels; p += np)
        for (int64_t i = row0; i < row0 + rows; i += mr)
            SFX(tile)(mr, np, by_columns, terms, n_terms, i, p, N - p * VLEN,
                      bias ? bias + p * VLEN : NULL, beta, C + i * ldc + p * VLEN, ldc);
#define LEFT_OVER(w)                                                                           \
    for (; p + (w) <= panels; p += (w))                                                        \
        for (int64_t i = row0; i < row0 + rows; i++)                                           \
            SFX(tile)(1, (w), by_columns, terms, n_terms, i, p, N - p * VLEN,                  \
                      bias ? bias + p * VLEN : NULL, beta, C + i * ldc + p * VLEN, ldc);
    if (mr == 1 && np > 4)
        LEFT_OVER(4)
    if (mr == 1 && np > 2)
        LEFT_OVER(2)
#undef LEFT_OVER
    for (; p < panels; p++)
        for (int64_t i = row0; i < row0 + rows; i += mr)
            SFX(tile)(mr, 1, by_columns, terms, n_terms, i, p, N - p * VLEN,
                      bias ? bias + p * VLEN : NULL, beta, C + i * ldc + p * VLEN, ldc);
}

/* C (n, N) = beta C + bias + the sum of the terms' products, A (n, K) op(W) with op(W) packed
 * by pack_part, or by columns A^T W (see tile_k); beta is 0 or 1, bias NULL or N entries for
 * every row. Blocks of ISA_TILE_ROWS rows run tiles of ISA_TILE_PANELS panels; the rest, fewer
 * rows, one tile row of as many panels as the build's ISA_TILE_REST gives. */
FL_INLINE void SFX(tiles)(const int by_columns, int64_t n, int64_t N, const SFX(term) *terms,
                          int n_terms, const REAL *bias, int beta, REAL *C, int64_t ldc)
{
    const int64_t full = n - n % ISA_TILE_ROWS;
    SFX(tile_rows)(ISA_TILE_ROWS, ISA_TILE_PANELS, by_columns, 0, full, N, terms, n_terms, bias,
                   beta, C, ldc);
    switch (n % ISA_TILE_ROWS) {
#define REST(mr, np)                                                                           \
    case mr:                                                                                   \
        SFX(tile_rows)(mr, np, by_columns, full, mr, N, terms, n_terms, bias, beta, C, ldc);  \
        break;
        ISA_TILE_REST(REST)
#undef REST
    }
}

static void SFX(packed_gemm)(int64_t n, int64_t N, const SFX(term) *terms, int n_terms,
                             const REAL *bias, int beta, REAL *C, int64_t ldc)
{
    SFX(tiles)(0, n, N, terms, n_terms, bias, beta, C, ldc);
}

static void SFX(columns_gemm)(int64_t n, int64_t N, const SFX(term) *term, int beta, REAL *C,
                              int64_t ldc)
{
    SFX(tiles)(1, n, N, term, 1, NULL, beta, C, ldc);
}

/* C (M, N) = A^T W for A (K, M) and W (K, N), both row-major (leading dimensions lda and N), as
 * the weight gradients are, whose sums run over the rows of both. Block by block of
 * GEMM_TN_ROWS rows of both, it packs W's into `copy`, and after them A's, GEMM_TN_COLS columns
 * at a time: A^T's panels, each row's VLEN entries side by side, as tile_k reads them. Each
 * block adds its share to C in turn. */
static void SFX(gemm_tn)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                         const REAL *W, REAL *C, REAL *copy)
{
    const int64_t kc0 = GEMM_TN_ROWS, mc0 = GEMM_TN_COLS;
    REAL *a = copy + kc0 * ((N + VLEN - 1) / VLEN * VLEN);
    for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kc0) {
        const int64_t kc = K - k0 < kc0 ? K - k0 : kc0;
        SFX(pack_part)(0, kc, N, W + k0 * N, N, 1, copy, 0, 1);
        const SFX(term) term = {a, 0, kc, copy, 1};
        for (int64_t m0 = 0; m0 < M; m0 += mc0) {
            const int64_t mc = M - m0 < mc0 ? M - m0 : mc0;
            SFX(pack_part)(0, kc, mc, A + k0 * lda + m0, lda, 1, a, 0, 1);
            SFX(columns_gemm)(mc, N, &term, k0 > 0, C + m0 * N, N);
        }
    }
}
#undef VLEN
#endif

/* The packed weights of a call, at the front of FL_WORK (see fl_work_size); NULL when the call
 * does not pack them or the layer does not project. A forward that fuses the input term packs
 * w_ih^T and keeps the bias its steps add (input_bias). A backward packs the last d_rec H rows
 * of w_hh (cell_facts.d_rec: the GRU's n rows) apart (rec), after the others (hh). fb holds
 * w_fb's blocks of P columns, one per source, packed as w_ih is: source j's at fb_block().
 * Every matrix of a call is packed in groups of `group` panels (row_group). */
typedef struct {
    REAL *ih, *bias, *hh, *rec, *hr, *fb;
    int64_t group;
} SFX(packed);

static inline REAL *SFX(fb_block)(const fl_layer *l, const SFX(packed) *pw, int backward,
                                  int64_t j)
{
    const int64_t GH = gates_of(l->cell) * l->H;
    return pw->fb + j * (backward ? GH * PADDED(l->P) : l->P * PADDED(GH));
}

/* The panels per group (see the packed layout) of the weights a call packs: ISA_ROW_GROUP for
 * a forward whose every step is a single row, a batch of one; 1 otherwise, and always for a
 * backward, whose products after its loop take many rows of the same packed w_ih. So every
 * product on a grouped matrix has one row, and tile reads groups in one-row tiles only. */
static int64_t SFX(row_group)(const fl_layer *l, int backward)
{
#if ISA_VECTOR_BYTES
    return !backward && l->B == 1 ? ISA_ROW_GROUP : 1;
#else
    (void)l, (void)backward;
    return 1; /* nothing is packed */
#endif
}

/* Points pw at the packed weights of a call on N rows in `work` (FL_WORK); returns the scratch
 * after them. Both start at work's first cache line (fl_work_size counts the elements up to it),
 * not at whatever offset the caller's allocator gave: a part of a split step writes whole panels
 * of each row of the scratch (the inference pre-activations, a GRU's recurrent product), so
 * where a panel is a whole line (the AVX-512 build) and a row whole lines, no line of those rows
 * holds two parts' columns, which the threads would otherwise pass back and forth every step.
 * The caller's arrays (hs, cs, the gates) keep the caller's alignment. */
static REAL *SFX(carve_packed)(const fl_layer *l, int backward, int64_t N, REAL *work,
                               SFX(packed) *pw)
{
    const packed_layout n = packed_sizes(&ISA_BUILD, l, backward, N);
    work = (REAL *)(((uintptr_t)work + FL_LINE_BYTES - 1) & ~(uintptr_t)(FL_LINE_BYTES - 1));
    pw->group = SFX(row_group)(l, backward);
    pw->ih = n.ih ? work : NULL;
    pw->bias = n.bias ? work + n.ih : NULL;
    pw->hh = n.hh ? work + n.ih + n.bias : NULL;
    pw->rec = n.rec ? work + n.ih + n.bias + n.hh : NULL;
    pw->hr = n.hr ? work + n.ih + n.bias + n.hh + n.rec : NULL;
    pw->fb = n.fb ? work + n.ih + n.bias + n.hh + n.rec + n.hr : NULL;
    return work + n.ih + n.bias + n.hh + n.rec + n.hr + n.fb;
}

/* C = beta C + A op(W) for the n rows of a step (beta 0 or 1; op(W) = W^T for W (N, K) when
 * trans, else W (K, N); ldw W's leading dimension): on the packed op(W) (in groups of `group`
 * panels) when the call packed it (packed not NULL), else through the BLAS. */
static void SFX(step_product_ldw)(int64_t n, int64_t N, int64_t K, const REAL *A, int64_t lda,
                                  const REAL *W, int64_t ldw, int trans, const REAL *packed,
                                  int64_t group, int beta, REAL *C, int64_t ldc)
{
#if ISA_VECTOR_BYTES
    if (packed) {
        const SFX(term) term = {A, lda, K, packed, group};
        SFX(packed_gemm)(n, N, &term, 1, NULL, beta, C, ldc);
        return;
    }
#else
    (void)group;
#endif
    SFX(gemm)(0, trans, n, N, K, 1, A, lda, W, ldw, beta, C, ldc);
}

/* step_product_ldw of a whole W: leading dimension K (trans) or N. */
static void SFX(step_product)(int64_t n, int64_t N, int64_t K, const REAL *A, int64_t lda,
                              const REAL *W, int trans, const REAL *packed, int64_t group,
                              int beta, REAL *C, int64_t ldc)
{
    SFX(step_product_ldw)(n, N, K, A, lda, W, trans ? K : N, trans, packed, group, beta, C,
                          ldc);
}

/* The biases the product of the input carries, b_ih + b_hh or b_ih alone (b_hh NULL: the GRU's
 * b_hh is inside r) or none (both NULL: a cell that normalises the product adds them after). */
static inline void SFX(input_bias)(const fl_layer *l, REAL *const s[], const REAL **b_ih,
                                   const REAL **b_hh)
{
    const cell_facts *cf = facts_of(l->cell);
    *b_ih = cf->layer_norm ? NULL : s[FL_B_IH];
    *b_hh = cf->b_hh_inside || cf->layer_norm ? NULL : s[FL_B_HH];
}

#if ISA_VECTOR_BYTES /* a call splits its steps only in the vector builds (splits_units) */
/* The units of part k of a call split by units (splits_units): [*j0, *j1), whole panels of
 * each gate block (H is a multiple of the panel width). */
static inline void SFX(split_units_of)(const fl_layer *l, int64_t k, int64_t parts, int64_t *j0,
                                       int64_t *j1)
{
    const int64_t vlen = ISA_VECTOR_BYTES / sizeof(REAL);
    int64_t q0, q1;
    part_range(l->H / vlen, parts, k, &q0, &q1);
    *j0 = q0 * vlen, *j1 = q1 * vlen;
}

#endif

/* Part k of packing the weights of a call (see fl_work_size): forward w_ih^T, w_hh^T, w_hr^T and
 * w_fb^T and the input side's bias, backward w_ih (when packed_sizes counts it), w_hh (its last
 * d_rec H rows apart, in rec), w_hr and w_fb. Nothing without packing. A forward that splits its
 * steps by units (`split`: forward_split runs it) in groups wider than a panel packs part k's
 * columns of each gate block, which that part's steps read alone (forward_split_step), as a
 * matrix of their own: its groups start at its first panel, and it takes the place the matrix's
 * columns take panel after panel. Every other call's steps read each matrix whole, grouped from
 * its first panel: a stack's loop, say, never splits, though its first layer alone passes
 * splits_units. */
static void SFX(pack_weights_part)(const fl_layer *l, REAL *const s[], int backward, int split,
                                   const SFX(packed) *pw, int64_t k, int64_t parts)
{
#if ISA_VECTOR_BYTES
    const int64_t GH = gates_of(l->cell) * l->H, H = l->H, P = l->P;
    if (!pw->hh && !pw->rec)
        return;
    if (backward) {
        const int64_t rec_rows = facts_of(l->cell)->d_rec * H;
        if (pw->ih)
            SFX(pack_part)(0, GH, l->I, s[FL_W_IH], l->I, pw->group, pw->ih, k, parts);
        if (pw->hh)
            SFX(pack_part)(0, GH - rec_rows, P, s[FL_W_HH], P, pw->group, pw->hh, k, parts);
        if (pw->rec)
            SFX(pack_part)(0, rec_rows, P, s[FL_W_HH] + (GH - rec_rows) * P, P, pw->group,
                           pw->rec, k, parts);
        if (pw->hr)
            SFX(pack_part)(0, P, H, s[FL_W_HR], H, pw->group, pw->hr, k, parts);
        for (int64_t j = 0; pw->fb && j < l->F / P; j++)
            SFX(pack_part)(0, GH, P, s[FL_W_FB] + j * P, l->F, pw->group,
                           SFX(fb_block)(l, pw, 1, j), k, parts);
        return;
    }
    if (ISA_ROW_GROUP > 1 && pw->group > 1 && split) {
        /* no projection, no fed-back inputs (splits_units) */
        int64_t j0, j1;
        SFX(split_units_of)(l, k, parts, &j0, &j1);
        for (int64_t g = 0; g < gates_of(l->cell) && j1 > j0; g++) {
            const int64_t c0 = g * H + j0, I = l->I;
            SFX(pack_part)(1, P, j1 - j0, s[FL_W_HH] + c0 * P, P, pw->group, pw->hh + c0 * P, 0,
                           1);
            if (pw->ih)
                SFX(pack_part)(1, I, j1 - j0, s[FL_W_IH] + c0 * I, I, pw->group,
                               pw->ih + c0 * I, 0, 1);
        }
    } else {
        SFX(pack_part)(1, P, GH, s[FL_W_HH], P, pw->group, pw->hh, k, parts);
        if (pw->ih)
            SFX(pack_part)(1, l->I, GH, s[FL_W_IH], l->I, pw->group, pw->ih, k, parts);
    }
    if (pw->hr)
        SFX(pack_part)(1, H, P, s[FL_W_HR], H, pw->group, pw->hr, k, parts);
    for (int64_t j = 0; pw->fb && j < l->F / P; j++)
        SFX(pack_part)(1, P, GH, s[FL_W_FB] + j * P, l->F, pw->group,
                       SFX(fb_block)(l, pw, 0, j), k, parts);
    if (!pw->ih)
        return;
    const REAL *b_ih, *b_hh;
    SFX(input_bias)(l, s, &b_ih, &b_hh);
    int64_t j0, j1;
    part_range(GH, parts, k, &j0, &j1);
    if (pw->bias)
        SFX(bias_sum)(j1 - j0, b_ih + j0, b_hh ? b_hh + j0 : NULL, pw->bias + j0);
#else
    (void)l, (void)s, (void)backward, (void)split, (void)pw, (void)k, (void)parts;
#endif
}

/* The fed-back inputs of layer `target` of a stack (fl_stack): n sources, the pairs first ..
 * first + n - 1 of the stack's list; `slots` every layer's. n = 0 for a layer without them. */
typedef struct {
    int64_t n, first;
    const fl_stack *stack;
    REAL *const *slots;
} SFX(fed);

/* Slot `slot` of the j-th source of the fed-back inputs. */
static REAL *SFX(fed_slot)(const SFX(fed) *fb, int64_t j, int slot)
{
    return fb->slots[fb->stack->feedback[2 * (fb->first + j)] * FL_N_SLOTS + slot];
}

/* The terms a packed product adds in one pass: the input, recurrent and fed-back ones. */
#define STEP_TERMS 8

/* The pre-activations of step t for n rows of a part (x_t and pre_t at their first row, r of x
 * and of the step's pre-activations; h_{t-1} and the fed-back outputs at row prev_row of their
 * hs; rows every `parts`-th): when the call packed w_ih^T, passes of register tiles over the
 * packed matrices write x_t w_ih^T + h_{t-1} w_hh^T + the fed-back inputs times w_fb^T, and the
 * bias (one pass for up to STEP_TERMS terms); otherwise the projection before the loop has left
 * the input side, bias + x_t w_ih^T, in pre_t (a stacked layer forms it here, through the BLAS),
 * and this adds h_{t-1} w_hh^T and the fed-back products (on the packed weights when there are
 * some, else through the BLAS). A cell that keeps the recurrent product apart (cell_facts.apart)
 * gets the input side alone (input_bias + x_t w_ih^T, and the fed-back products, which are input
 * too); one that normalises rows, when its steps form x_t w_ih^T, gets that product alone,
 * which it normalises here (ln_input: the biases come after LN). */
static void SFX(step_pre)(const fl_layer *l, int64_t n, REAL *const s[], int64_t r,
                          int64_t prev_row, const SFX(packed) *pw, const SFX(fed) *fb,
                          REAL *pre_t, int64_t parts)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t P = l->P, I = l->I, GH = cf->gates * l->H;
    const int64_t ldp = parts * P, ldg = parts * GH;
    const REAL *x_t = s[FL_X] + r * I, *h_prev = s[FL_HS] + prev_row * P;
    if (cf->layer_norm && (l->stacked || pw->ih)) { /* the input side of a step, normalised */
        SFX(step_product)(n, GH, I, x_t, parts * I, s[FL_W_IH], 1, pw->ih, pw->group, 0, pre_t,
                          ldg);
        SFX(ln_input)(l, s, n, parts, r, pre_t);
        return; /* the recurrent product apart, and no fed-back inputs (fl_stack) */
    }
#if ISA_VECTOR_BYTES
    if (pw->ih) {
        SFX(term) terms[STEP_TERMS] = {{x_t, parts * I, I, pw->ih, pw->group},
                                       {h_prev, ldp, P, pw->hh, pw->group}};
        int n_terms = cf->apart ? 1 : 2, beta = 0;
        for (int64_t j = 0; j < fb->n; j++) {
            if (n_terms == STEP_TERMS) {
                SFX(packed_gemm)(n, GH, terms, n_terms, beta ? NULL : pw->bias, beta, pre_t, ldg);
                n_terms = 0, beta = 1;
            }
            const SFX(term) fed = {SFX(fed_slot)(fb, j, FL_HS) + prev_row * P, ldp, P,
                                   SFX(fb_block)(l, pw, 0, j), pw->group};
            terms[n_terms++] = fed;
        }
        SFX(packed_gemm)(n, GH, terms, n_terms, beta ? NULL : pw->bias, beta, pre_t, ldg);
        return;
    }
#endif
    if (l->stacked) {
        const REAL *b_ih, *b_hh;
        SFX(input_bias)(l, s, &b_ih, &b_hh);
        for (int64_t i = 0; i < n; i++)
            SFX(bias_sum)(GH, b_ih, b_hh, pre_t + i * ldg);
        SFX(gemm)(0, 1, n, GH, I, 1, x_t, parts * I, s[FL_W_IH], I, 1, pre_t, ldg);
    }
    if (!cf->apart)
        SFX(step_product)(n, GH, P, h_prev, ldp, s[FL_W_HH], 1, pw->hh, pw->group, 1, pre_t,
                          ldg);
    for (int64_t j = 0; j < fb->n; j++)
        SFX(step_product_ldw)(n, GH, P, SFX(fed_slot)(fb, j, FL_HS) + prev_row * P, ldp,
                              s[FL_W_FB] + j * P, l->F, 1,
                              pw->fb ? SFX(fb_block)(l, pw, 0, j) : NULL, pw->group, 1, pre_t,
                              ldg);
}

/* ---------------------------------------------------------------- the cells
 * What one step does to n rows of one part once the recurrent product is in: the only code that
 * differs between the cells, with their rows of cell_facts (kernels_common.h) and the LN LSTM's
 * normalisation above. A part's rows are every `ld`-th row of the arrays (see the time loops):
 * row r of an array whose rows have w entries starts at r * ld * w. Rows of pre/act/da have G*H
 * entries, rows of h P, of c H. Within a row, every array a cell reads or writes is a different
 * block of memory (but for an inference LSTM's c, which is c_prev, and an inference LN LSTM's
 * xhat_hh, which is rec: each unit is read before it is written), so the loops over the units
 * are vectorized ("omp simd"). */

/* Elman: pre IN the pre-activation, which lives in hs and becomes h_t there. `fused`, here and
 * below, as in madd; the forward steps run the units j0 .. j1 - 1 of each row. */
FL_INLINE void SFX(rnn_cell_forward)(int relu, int64_t n, int64_t ld, int64_t H, REAL *pre,
                                     const int fused, int64_t j0, int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        REAL *a = pre + r * ld * H;
        if (relu)
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                a[j] = a[j] < 0 ? 0 : a[j]; /* NaN stays NaN, as in max(a, 0) */
        else
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                a[j] = SFX(tanh)(a[j], fused);
    }
}

/* h IN h_t; dh IN dL/dh_t; da OUT dL/d(pre-activation). The backward steps too run the units
 * j0 .. j1 - 1 of each row. */
FL_INLINE void SFX(rnn_cell_backward)(int relu, int64_t n, int64_t ld, int64_t H,
                                      const REAL *h_all, const REAL *dh_all, REAL *da_all,
                                      int64_t j0, int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        const REAL *h = h_all + r * ld * H, *dh = dh_all + r * ld * H;
        REAL *da = da_all + r * ld * H;
        if (relu)
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
            {
                REAL g = dh[j]; /* read either way: a select, not a branch, vectorizes */
                da[j] = h[j] > 0 ? g : 0;
            }
        else
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                da[j] = dh[j] * (1 - h[j] * h[j]);
    }
}

/* LSTM, unit j of one row: a IN pre-activations, OUT activations i, f, g, o; cp IN c_{t-1};
 * c OUT (it may be cp: cp[j] is read before c[j] is written); m OUT o * tanh(c) (h itself
 * unless the layer projects); p the peephole weights (p_i, p_f, p_o) when `peephole`. The row
 * functions below call it with `peephole` a constant, so each of their loops compiles without
 * the test and vectorizes. */
FL_INLINE void SFX(lstm_unit_forward)(int64_t j, int64_t H, REAL *a, const REAL *cp, REAL *c,
                                      REAL *m, const REAL *p, int peephole, const int fused)
{
    REAL ai = a[j], af = a[H + j], ao = a[3 * H + j];
    if (peephole) {
        ai += p[j] * cp[j];
        af += p[H + j] * cp[j];
    }
    REAL i = SFX(sigmoid)(ai, fused), f = SFX(sigmoid)(af, fused);
    REAL g = SFX(tanh)(a[2 * H + j], fused);
    c[j] = f * cp[j] + i * g;
    if (peephole)
        ao += p[2 * H + j] * c[j]; /* the output gate sees the new cell */
    REAL o = SFX(sigmoid)(ao, fused);
    m[j] = o * SFX(tanh)(c[j], fused);
    a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
}

/* The LSTM step of n rows (see lstm_unit_forward); p NULL without peepholes. */
FL_INLINE void SFX(lstm_cell_forward)(int64_t n, int64_t ld, int64_t H, REAL *a_all,
                                      const REAL *c_prev, REAL *c_all, REAL *m_all,
                                      const REAL *p, const int fused, int64_t j0, int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        REAL *a = a_all + r * ld * 4 * H, *c = c_all + r * ld * H, *m = m_all + r * ld * H;
        const REAL *cp = c_prev + r * ld * H;
        if (p) {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_forward)(j, H, a, cp, c, m, p, 1, fused);
        } else {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_forward)(j, H, a, cp, c, m, NULL, 0, fused);
        }
    }
}

/* Unit j of one row, backwards: act IN i, f, g, o; cp, c IN c_{t-1}, c_t; dm IN dL/dm_t
 * (dL/dh_t without projection); dc IN dL/dc_t from the future, OUT dL/dc_{t-1}; d OUT
 * dL/d(pre-activation); m OUT o * tanh(c) when `keep_m` (projection's weight gradient needs
 * it); p as in lstm_unit_forward. */
FL_INLINE void SFX(lstm_unit_backward)(int64_t j, int64_t H, const REAL *a, const REAL *cp,
                                       const REAL *c, const REAL *dm, REAL *dc, REAL *d,
                                       REAL *m, int keep_m, const REAL *p, int peephole,
                                       const int fused)
{
    REAL i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    REAL tc = SFX(tanh)(c[j], fused);
    REAL dao = dm[j] * tc * o * (1 - o);
    REAL dcj = dc[j] + dm[j] * o * (1 - tc * tc);
    if (peephole)
        dcj += dao * p[2 * H + j];
    REAL dai = dcj * g * i * (1 - i), daf = dcj * cp[j] * f * (1 - f);
    d[j] = dai;
    d[H + j] = daf;
    d[2 * H + j] = dcj * i * (1 - g * g);
    d[3 * H + j] = dao;
    /* the carousel: back to c_{t-1} through the forget gate (and the peepholes) */
    dc[j] = dcj * f;
    if (peephole)
        dc[j] += dai * p[j] + daf * p[H + j];
    if (keep_m)
        m[j] = o * tc;
}

/* The LSTM's backward step of n rows (see lstm_unit_backward); m_all NULL unless the layer
 * projects, p NULL without peepholes. */
FL_INLINE void SFX(lstm_cell_backward)(int64_t n, int64_t ld, int64_t H, const REAL *act_all,
                                       const REAL *c_prev, const REAL *c_all,
                                       const REAL *dm_all, REAL *dc_all, REAL *da_all,
                                       REAL *m_all, const REAL *p, const int fused, int64_t j0,
                                       int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        const int64_t rh = r * ld * H;
        const REAL *a = act_all + 4 * rh, *cp = c_prev + rh, *c = c_all + rh, *dm = dm_all + rh;
        REAL *dc = dc_all + rh, *d = da_all + 4 * rh, *m = m_all ? m_all + rh : NULL;
        if (p && m) {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_backward)(j, H, a, cp, c, dm, dc, d, m, 1, p, 1, fused);
        } else if (p) {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_backward)(j, H, a, cp, c, dm, dc, d, NULL, 0, p, 1, fused);
        } else if (m) {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_backward)(j, H, a, cp, c, dm, dc, d, m, 1, NULL, 0, fused);
        } else {
            #pragma omp simd
            for (int64_t j = j0; j < j1; j++)
                SFX(lstm_unit_backward)(j, H, a, cp, c, dm, dc, d, NULL, 0, NULL, 0, fused);
        }
    }
}

/* GRU: a IN the input-side pre-activations (x W_ih^T + b_ih), OUT activations r, z, n; hh IN
 * W_hh h_{t-1} (no bias); h_prev IN; hn OUT W_hn h_{t-1} + b_hn; h OUT. */
FL_INLINE void SFX(gru_cell_forward)(int64_t n, int64_t ld, int64_t H, REAL *a_all,
                                     const REAL *hh_all, const REAL *b_hh,
                                     const REAL *h_prev, REAL *hn_all, REAL *h_all,
                                     const int fused, int64_t j0, int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        const int64_t rh = r * ld * H;
        REAL *a = a_all + 3 * rh, *hn = hn_all + rh, *h = h_all + rh;
        const REAL *hh = hh_all + 3 * rh, *hp = h_prev + rh;
        #pragma omp simd
        for (int64_t j = j0; j < j1; j++) {
            REAL rg = SFX(sigmoid)(a[j] + hh[j] + b_hh[j], fused);
            REAL zg = SFX(sigmoid)(a[H + j] + hh[H + j] + b_hh[H + j], fused);
            REAL hnj = hh[2 * H + j] + b_hh[2 * H + j];
            REAL ng = SFX(tanh)(a[2 * H + j] + rg * hnj, fused);
            h[j] = (1 - zg) * ng + zg * hp[j];
            hn[j] = hnj;
            a[j] = rg, a[H + j] = zg, a[2 * H + j] = ng;
        }
    }
}

/* act IN r, z, n; hn, h_prev IN; dh IN dL/dh_t, OUT the part of dL/dh_{t-1} that bypasses W_hh
 * (z * dL/dh_t); da OUT dL/d(input-side pre-activation); da_hn OUT dL/d(W_hn h_{t-1} + b_hn),
 * r dL/dn. The gradient of W_hh h_{t-1} + b_hh is da in its r and z parts and da_hn in its n
 * part, so it is not stored whole. */
FL_INLINE void SFX(gru_cell_backward)(int64_t n, int64_t ld, int64_t H, const REAL *act_all,
                                      const REAL *hn_all, const REAL *h_prev, REAL *dh_all,
                                      REAL *da_all, REAL *da_hn_all, int64_t j0, int64_t j1)
{
    for (int64_t r = 0; r < n; r++) {
        const int64_t rh = r * ld * H;
        const REAL *a = act_all + 3 * rh, *hn = hn_all + rh, *hp = h_prev + rh;
        REAL *dh = dh_all + rh, *d = da_all + 3 * rh, *dhn = da_hn_all + rh;
        #pragma omp simd
        for (int64_t j = j0; j < j1; j++) {
            REAL rg = a[j], zg = a[H + j], ng = a[2 * H + j], dhj = dh[j];
            REAL dan = dhj * (1 - zg) * (1 - ng * ng);
            REAL daz = dhj * (hp[j] - ng) * zg * (1 - zg);
            REAL dar = dan * hn[j] * rg * (1 - rg);
            d[j] = dar;
            d[H + j] = daz;
            d[2 * H + j] = dan;
            dhn[j] = dan * rg;
            dh[j] = dhj * zg;
        }
    }
}

/* out[j] += the sum over the n rows r of a[r * lda + j] * (b ? b[r * ldb + j] : 1), for j < w,
 * row after row: a part's share of the bias and peephole gradients. */
FL_INLINE void SFX(add_row_sums)(int64_t n, int64_t w, const REAL *a, int64_t lda,
                                 const REAL *b, int64_t ldb, REAL *out)
{
    for (int64_t r = 0; r < n; r++) {
        const REAL *ar = a + r * lda;
        if (b) {
            const REAL *br = b + r * ldb;
            #pragma omp simd
            for (int64_t j = 0; j < w; j++)
                out[j] += ar[j] * br[j];
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < w; j++)
                out[j] += ar[j];
        }
    }
}

/* The LN LSTM's gates, unit j of one row: a IN the pre-activations, OUT i, f, g, o; cp IN
 * c_{t-1}; c OUT c_t (it may be cp). */
FL_INLINE void SFX(lnlstm_unit_gates)(int64_t j, int64_t H, REAL *a, const REAL *cp, REAL *c,
                                      const int fused)
{
    REAL i = SFX(sigmoid)(a[j], fused), f = SFX(sigmoid)(a[H + j], fused);
    REAL g = SFX(tanh_rel)(a[2 * H + j], fused), o = SFX(sigmoid)(a[3 * H + j], fused);
    c[j] = f * cp[j] + i * g;
    a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
}

/* h_t, unit j of one row: o tanh(xhat_c g_c + b_c), xhat_c = (c - mean) rstd, kept in xc when
 * `keep`. */
FL_INLINE void SFX(lnlstm_unit_h)(int64_t j, const REAL *o, const REAL *c, REAL mean, REAL rstd,
                                  const REAL *g_c, const REAL *b_c, REAL *xc, int keep, REAL *h,
                                  const int fused)
{
    const REAL x = (c[j] - mean) * rstd;
    if (keep)
        xc[j] = x;
    h[j] = o[j] * SFX(tanh_rel)(x * g_c[j] + b_c[j], fused);
}

/* The LN LSTM's step of n rows: a IN the input side (ln_input), OUT the activations i, f, g, o;
 * rec IN h_{t-1} w_hh^T (scratch, which inference leaves xhat_hh in); cp, c, h as the LSTM's
 * (lstm_unit_forward); normed, rstd (training; NULL for inference) OUT xhat_hh and xhat_c in
 * the blocks 4H .. 8H and 8H .. 9H of normed's rows, their rstd in columns 1 and 2. */
FL_INLINE void SFX(lnlstm_cell_forward)(const fl_layer *l, REAL *const s[], int64_t n,
                                        int64_t ld, REAL *a_all, REAL *rec_all,
                                        const REAL *c_prev, REAL *c_all, REAL *h_all,
                                        REAL *normed_all, REAL *rstd_all, const int fused)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, GH = cf->gates * H, wn = cf->normed * H;
    const REAL *g_hh = s[FL_G_HH], *g_c = s[FL_G_C], *b_c = s[FL_B_C];
    for (int64_t r = 0; r < n; r++) {
        REAL *a = a_all + r * ld * GH, *rec = rec_all + r * ld * GH;
        REAL *c = c_all + r * ld * H, *h = h_all + r * ld * H;
        const REAL *cp = c_prev + r * ld * H;
        REAL *xh = normed_all ? normed_all + r * ld * wn + GH : rec;
        REAL *xc = normed_all ? normed_all + r * ld * wn + 2 * GH : NULL;
        REAL mu, rs, mu_c, rs_c;
        SFX(ln_stats)(GH, rec, &mu, &rs);
        #pragma omp simd
        for (int64_t j = 0; j < GH; j++) {
            xh[j] = (rec[j] - mu) * rs;
            a[j] += xh[j] * g_hh[j];
        }
        #pragma omp simd
        for (int64_t j = 0; j < H; j++)
            SFX(lnlstm_unit_gates)(j, H, a, cp, c, fused);
        SFX(ln_stats)(H, c, &mu_c, &rs_c);
        if (xc) {
            #pragma omp simd
            for (int64_t j = 0; j < H; j++)
                SFX(lnlstm_unit_h)(j, a + 3 * H, c, mu_c, rs_c, g_c, b_c, xc, 1, h, fused);
            rstd_all[r * ld * cf->rstd + 1] = rs;
            rstd_all[r * ld * cf->rstd + 2] = rs_c;
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < H; j++)
                SFX(lnlstm_unit_h)(j, a + 3 * H, c, mu_c, rs_c, g_c, b_c, NULL, 0, h, fused);
        }
    }
}

/* The LN LSTM's backward step of n rows, through h = o tanh(y_c), y_c = xhat_c g_c + b_c: act,
 * cp, dh, dc as the LSTM's (lstm_unit_backward); normed, rstd IN the forward's; dyc OUT
 * dL/dy_c (scratch); da OUT the gradient of the pre-activations, which it then turns into that
 * of x_t w_ih^T (through LN); drec OUT that of h_{t-1} w_hh^T. Adds each row to the part's sums
 * (cell_facts.sums, after db_ih's G H, which it adds when `biases`): dg_ih += da xhat_ih,
 * dg_hh += da xhat_hh, dg_c += dyc xhat_c, db_c += dyc. */
FL_INLINE void SFX(lnlstm_cell_backward)(const fl_layer *l, REAL *const s[], int64_t n,
                                         int64_t ld, const REAL *act_all, const REAL *c_prev,
                                         const REAL *normed_all, const REAL *rstd_all,
                                         const REAL *dh_all, REAL *dc_all, REAL *dyc_all,
                                         REAL *da_all, REAL *drec_all, REAL *sums, int biases,
                                         const int fused)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, GH = cf->gates * H, wn = cf->normed * H;
    const REAL *g_ih = s[FL_G_IH], *g_hh = s[FL_G_HH], *g_c = s[FL_G_C], *b_c = s[FL_B_C];
    REAL *db = sums, *dg_ih = sums + GH, *dg_hh = sums + 2 * GH, *dg_c = sums + 3 * GH;
    REAL *db_c = dg_c + H;
    for (int64_t r = 0; r < n; r++) {
        const REAL *a = act_all + r * ld * GH, *cp = c_prev + r * ld * H;
        const REAL *dh = dh_all + r * ld * H, *rs = rstd_all + r * ld * cf->rstd;
        const REAL *x_ih = normed_all + r * ld * wn, *x_hh = x_ih + GH, *x_c = x_ih + 2 * GH;
        REAL *dc = dc_all + r * ld * H, *dyc = dyc_all + r * ld * H;
        REAL *da = da_all + r * ld * GH, *drec = drec_all + r * ld * GH;
        #pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            const REAL o = a[3 * H + j], tc = SFX(tanh_rel)(x_c[j] * g_c[j] + b_c[j], fused);
            da[3 * H + j] = dh[j] * tc * o * (1 - o);
            dyc[j] = dh[j] * o * (1 - tc * tc);
        }
        REAL m1, m2;
        SFX(row_dots)(H, dyc, g_c, x_c, &m1, &m2);
        m1 /= (REAL)H, m2 /= (REAL)H;
        #pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            const REAL i = a[j], f = a[H + j], g = a[2 * H + j];
            const REAL dcj = dc[j] + rs[2] * (dyc[j] * g_c[j] - m1 - x_c[j] * m2);
            da[j] = dcj * g * i * (1 - i);
            da[H + j] = dcj * cp[j] * f * (1 - f);
            da[2 * H + j] = dcj * i * (1 - g * g);
            dc[j] = dcj * f; /* the carousel, back to c_{t-1} */
        }
        SFX(ln_backward)(GH, da, g_hh, x_hh, rs[1], drec);
        if (biases) {
            #pragma omp simd
            for (int64_t j = 0; j < GH; j++) {
                db[j] += da[j];
                dg_ih[j] += da[j] * x_ih[j];
                dg_hh[j] += da[j] * x_hh[j];
            }
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < GH; j++) {
                dg_ih[j] += da[j] * x_ih[j];
                dg_hh[j] += da[j] * x_hh[j];
            }
        }
        #pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            dg_c[j] += dyc[j] * x_c[j];
            db_c[j] += dyc[j];
        }
        SFX(ln_backward)(GH, da, g_ih, x_ih, rs[0], da);
    }
}

/* ---------------------------------------------------------------- a step of any cell
 * The time loops' one call into the cells, forward and backward: a switch on the layer's cell
 * picks its functions above, for n rows of a part, every ld-th row of the arrays, each array at
 * the step's first row (a part's, in the usual loops). */

/* A forward step's arrays (NULL where the cell has none). */
typedef struct {
    REAL *pre;          /* IN the pre-activations (the input side alone when the cell keeps the
                         * recurrent product apart), OUT the activations; the Elman cell's are
                         * in hs, and become h there */
    REAL *rec;          /* cell_facts.apart: IN h_{t-1} w_hh^T */
    const REAL *h_prev; /* IN h_{t-1} */
    REAL *h;            /* OUT h_t; m when the layer projects */
    const REAL *c_prev; /* cell_facts.cell_state: IN c_{t-1} */
    REAL *c;            /* OUT c_t (it may be c_prev: inference) */
    REAL *hn;           /* OUT the GRU's hn */
    REAL *normed, *rstd; /* OUT the LN LSTM's, training; NULL for inference */
} SFX(cell_rows);

FL_INLINE void SFX(cell_forward)(const fl_layer *l, REAL *const s[], const SFX(cell_rows) *a,
                                 int64_t n, int64_t ld, int64_t j0, int64_t j1, const int fused)
{
    const int64_t H = l->H;
    switch (l->cell) {
    case FL_RNN_TANH:
    case FL_RNN_RELU:
        SFX(rnn_cell_forward)(l->cell == FL_RNN_RELU, n, ld, H, a->pre, fused, j0, j1);
        break;
    case FL_LSTM:
        SFX(lstm_cell_forward)(n, ld, H, a->pre, a->c_prev, a->c, a->h,
                               l->peephole ? s[FL_W_PEEPHOLE] : NULL, fused, j0, j1);
        break;
    case FL_GRU:
        SFX(gru_cell_forward)(n, ld, H, a->pre, a->rec, s[FL_B_HH], a->h_prev, a->hn, a->h,
                              fused, j0, j1);
        break;
    case FL_LSTM_LN: /* all of each row: it never splits by units */
        SFX(lnlstm_cell_forward)(l, s, n, ld, a->pre, a->rec, a->c_prev, a->c, a->h, a->normed,
                                 a->rstd, fused);
        break;
    }
}

/* A backward step's arrays (NULL where the cell has none). */
typedef struct {
    const REAL *act;    /* IN the activations (the Elman cell's: h_t, in hs) */
    const REAL *h_prev; /* IN h_{t-1} */
    const REAL *hn;     /* IN the GRU's hn */
    const REAL *c_prev, *c; /* IN c_{t-1}, c_t */
    const REAL *dm;     /* IN dL/dh_t, or dL/dm_t when the layer projects */
    REAL *dh;           /* IN dL/dh_t; OUT the part of dL/dh_{t-1} outside w_hh
                         * (cell_facts.dh_direct) */
    REAL *dc;           /* IN dL/dc_t, OUT dL/dc_{t-1} */
    REAL *da;           /* OUT dL/d(input side): the gradient of x_t w_ih^T, and of h_{t-1} w_hh^T
                         * in its first G - d_rec blocks */
    REAL *d_rec;        /* OUT the gradient of h_{t-1} w_hh^T in its last d_rec blocks */
    REAL *m;            /* OUT m_t when the layer projects */
    const REAL *normed, *rstd; /* IN the LN LSTM's */
    REAL *d_step;       /* the cell's step scratch (cell_facts.d_step) */
} SFX(cell_grads);

/* Units j0 .. j1 - 1 of n rows (every unit for the LN LSTM, which never splits by units). Also
 * adds their columns of the step's rows to the part's sums (sums_width()): db_ih's when the
 * layer has biases, the cell's own (cell_facts.sums) and the peepholes'. */
FL_INLINE void SFX(cell_backward)(const fl_layer *l, REAL *const s[], const SFX(cell_grads) *g,
                                  int64_t n, int64_t ld, int64_t j0, int64_t j1, REAL *sums,
                                  const int fused)
{
    const int64_t H = l->H, G = gates_of(l->cell), GH = G * H, w = j1 - j0;
    const int biases = s[FL_DB_IH] != NULL;
    switch (l->cell) {
    case FL_RNN_TANH:
    case FL_RNN_RELU:
        SFX(rnn_cell_backward)(l->cell == FL_RNN_RELU, n, ld, H, g->act, g->dh, g->da, j0, j1);
        break;
    case FL_LSTM: {
        const REAL *peep = l->peephole ? s[FL_W_PEEPHOLE] : NULL;
        SFX(lstm_cell_backward)(n, ld, H, g->act, g->c_prev, g->c, g->dm, g->dc, g->da, g->m,
                                peep, fused, j0, j1);
        if (peep) { /* i and f see c_{t-1}, o sees c_t */
            REAL *dp = sums + sums_width(l) - 3 * H + j0;
            const REAL *da = g->da + j0, *cp = g->c_prev + j0, *c = g->c + j0;
            SFX(add_row_sums)(n, w, da, ld * GH, cp, ld * H, dp);
            SFX(add_row_sums)(n, w, da + H, ld * GH, cp, ld * H, dp + H);
            SFX(add_row_sums)(n, w, da + 3 * H, ld * GH, c, ld * H, dp + 2 * H);
        }
        break;
    }
    case FL_GRU:
        SFX(gru_cell_backward)(n, ld, H, g->act, g->hn, g->h_prev, g->dh, g->da, g->d_rec, j0,
                               j1);
        if (biases) /* db_hn */
            SFX(add_row_sums)(n, w, g->d_rec + j0, ld * H, NULL, 0, sums + GH + j0);
        break;
    case FL_LSTM_LN: /* adds db_ih's sums itself, before da becomes x_t w_ih^T's gradient */
        SFX(lnlstm_cell_backward)(l, s, n, ld, g->act, g->c_prev, g->normed, g->rstd, g->dm,
                                  g->dc, g->d_step, g->da, g->d_rec, sums, biases, fused);
        return;
    }
    for (int64_t gate = 0; biases && gate < G; gate++)
        SFX(add_row_sums)(n, w, g->da + gate * H + j0, ld * GH, NULL, 0, sums + gate * H + j0);
}

/* ---------------------------------------------------------------- the time loops
 * Part k owns the sequences k, k + parts, ...: at step t, of the n_t running ones, the
 * part_count(n_t) rows starting at row k of the step's block, every parts-th row. A product
 * over them is one GEMM with leading dimension parts * (row width). Step t's block starts at row
 * off_t = n_0 + ... + n_{t-1} of x, gates, hn, dy and da, at row B + off_t of hs and cs, and
 * reads h_{t-1} from the block before it: rows 0.. of hs (h0) for t = 0, else B + off_{t-1}.
 * (An inference forward's cs has B rows, sequence b's in row b, updated in place.) */

/* Where a forward's steps put their pre-activations (which become the activations) and the
 * GRU's hn: the gates and hn arrays (the Elman cell: hs), or for inference scratch in FL_WORK.
 * reuse: that scratch holds one step, whose rows every step reuses. rec and m: scratch of one
 * step, B rows, for the recurrent product a cell keeps apart and the projection's m. */
typedef struct {
    REAL *pre, *hn, *rec, *m;
    int reuse;
} SFX(step_arrays);

/* A forward step's arrays from row r of x (and of hs past h0), h_{t-1} at row prev of hs; k the
 * sequence of row r, whose row of the step's scratch (rec; pre and hn when they hold one step)
 * and of an inference's cs (a row per sequence, from c0 to its last state) it starts at. */
FL_INLINE SFX(cell_rows) SFX(forward_rows)(const fl_layer *l, REAL *const s[],
                                           const SFX(step_arrays) *out, int64_t r, int64_t prev,
                                           int64_t k)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t B = l->B, H = l->H, P = l->P, GH = cf->gates * H;
    const int64_t row = out->reuse ? k : r;
    SFX(cell_rows) a = {out->pre + row * GH, cf->apart ? out->rec + k * GH : NULL,
                        s[FL_HS] + prev * P, s[FL_HS] + (B + r) * P, NULL, NULL,
                        cf->hn ? out->hn + row * cf->hn * H : NULL};
    if (cf->cell_state) {
        a.c_prev = s[FL_CS] + (l->inference ? k : prev) * H;
        a.c = s[FL_CS] + (l->inference ? k : B + r) * H;
    }
    if (cf->normed && s[FL_NORMED])
        a.normed = s[FL_NORMED] + r * cf->normed * H, a.rstd = s[FL_RSTD] + r * cf->rstd;
    return a;
}

/* Step t of part k (the sequences k, k + parts, ...), n of its rows: the block of step t
 * starts at row `off`, h_{t-1}'s at row `prev` of hs; fb the layer's fed-back inputs; `fused`
 * as in madd. */
FL_INLINE void
SFX(forward_step)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                  const SFX(step_arrays) *out, const SFX(fed) *fb, int64_t off, int64_t prev,
                  int64_t n, int64_t k, int64_t parts, const int fused)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, P = l->P, GH = cf->gates * H;
    const int64_t r = off + k; /* this part's first row */
    SFX(cell_rows) a = SFX(forward_rows)(l, s, out, r, prev + k, k);
    SFX(step_pre)(l, n, s, r, prev + k, pw, fb, a.pre, parts);
    if (cf->apart)
        SFX(step_product)(n, GH, P, a.h_prev, parts * P, s[FL_W_HH], 1, pw->hh, pw->group, 0,
                          a.rec, parts * GH);
    REAL *h = a.h;
    if (l->projection)
        a.h = out->m + k * H;
    SFX(cell_forward)(l, s, &a, n, parts, 0, H, fused);
    if (l->projection)
        SFX(step_product)(n, P, H, a.h, parts * H, s[FL_W_HR], 1, pw->hr, pw->group, 0, h,
                          parts * P);
}

/* The time loop of part k of one layer. */
FL_INLINE void
SFX(forward_part_body)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                       const SFX(step_arrays) *out, int64_t k, int64_t parts, const int fused)
{
    const SFX(fed) none = {0, 0, NULL, NULL};
    int64_t off = 0, prev = 0; /* the first rows of this step's block and of the last one's */
    for (int64_t t = 0; t < l->T; t++) {
        const int64_t n_t = batch_size(l, t), n = part_count(n_t, parts, k);
        if (n == 0)
            break; /* the batch only shrinks */
        SFX(forward_step)(l, s, pw, out, &none, off, prev, n, k, parts, fused);
        prev = l->B + off;
        off += n_t;
    }
}

/* The scratch of a backward call (see fl_work_size): da, the cell's d_rec and d_step, with
 * projection dhs, ms, dm, and sums: each part's row of sums_width() sums. */
typedef struct {
    REAL *da, *d_rec, *d_step, *dhs, *ms, *dm, *sums;
} SFX(backward_scratch);

/* The two halves of step t of the backward loop of part k: n rows of the step's block, which
 * starts at row `off`, every ld-th from its row k (ld = parts, or one part's every row: k = 0,
 * ld = 1, in a backward split by units); units j0 .. j1 - 1, the columns of dh they own (every
 * P of them when the step runs every unit: a projected layer's P differs from H, and a split
 * never projects); `sums` the part's (sums_width()); fb the layer's fed-back inputs; `fused` as
 * in madd. The first half adds dy to dh and runs the cell, to da; the second forms dh_{t-1} from
 * da, every unit's: a split's parts meet between the two. A stacked layer also forms dL/dy_t of
 * the layer below (its FL_DY rows, times its own dropout mask), and a layer with fed-back inputs
 * adds their share to dL/dh_{t-1} of each source (its FL_DH). */
FL_INLINE void
SFX(backward_cell_half)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                        const SFX(backward_scratch) *sc, int64_t t, int64_t off, int64_t n,
                        int64_t k, int64_t ld, int64_t j0, int64_t j1, REAL *sums,
                        const int fused)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t B = l->B, H = l->H, P = l->P, GH = cf->gates * H;
    const int64_t rec_rows = cf->d_rec * H, c1 = j1 < H ? j1 : P;
    const REAL *cs = s[FL_CS], *hs = s[FL_HS];
    const int64_t r = off + k, prev = t == 0 ? 0 : B + off - batch_size(l, t - 1);
    const int64_t ldp = ld * P;
    /* dh holds dL/dh of each sequence's latest state: dh_n until the loop reaches the
     * sequence's last step, then dL/dh_t as t goes back. */
    REAL *dh_k = s[FL_DH] + k * P;
    const REAL *dy_t = s[FL_DY] + r * P;
    for (int64_t i = 0; i < n; i++)
        #pragma omp simd /* at -O2, GCC vectorizes a loop of unknown length only when told to */
        for (int64_t j = j0; j < c1; j++)
            dh_k[i * ldp + j] += dy_t[i * ldp + j]; /* the output and the future use h_t */
    SFX(cell_grads) g = {cf->keeps_gates ? s[FL_GATES] + r * GH : hs + (B + r) * P,
                         hs + (prev + k) * P, cf->hn ? s[FL_HN] + r * cf->hn * H : NULL,
                         NULL, NULL, dh_k, dh_k, NULL, sc->da + r * GH,
                         rec_rows ? sc->d_rec + r * rec_rows : NULL, NULL};
    if (cf->cell_state)
        g.c_prev = cs + (prev + k) * H, g.c = cs + (B + r) * H, g.dc = s[FL_DC] + k * H;
    if (cf->normed)
        g.normed = s[FL_NORMED] + r * cf->normed * H, g.rstd = s[FL_RSTD] + r * cf->rstd;
    if (cf->d_step)
        g.d_step = sc->d_step + k * cf->d_step * H;
    if (l->projection) {
        for (int64_t i = 0; i < n; i++)
            memcpy(sc->dhs + (r + i * ld) * P, dh_k + i * ldp, (size_t)P * sizeof(REAL));
        SFX(step_product)(n, H, P, dh_k, ldp, s[FL_W_HR], 0, pw->hr, pw->group, 0,
                          sc->dm + k * H, ld * H);
        g.dm = sc->dm + k * H, g.m = sc->ms + r * H;
    }
    SFX(cell_backward)(l, s, &g, n, ld, j0, j1, sums, fused);
}

FL_INLINE void
SFX(backward_products_half)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                            const SFX(backward_scratch) *sc, const SFX(fed) *fb,
                            REAL *dy_below, int64_t off, int64_t n, int64_t k, int64_t ld,
                            int64_t j0, int64_t j1)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, P = l->P, GH = cf->gates * H;
    /* w_hh's rows whose gradient is in da's first columns, and those with the cell's own */
    const int64_t rec_rows = cf->d_rec * H, da_rows = GH - rec_rows;
    const int64_t c1 = j1 < H ? j1 : P, ldp = ld * P, ldg = ld * GH, r = off + k;
    const REAL *w_hh = s[FL_W_HH], *da = sc->da + r * GH;
    REAL *dh = s[FL_DH] + k * P;
    /* dL/dh_{t-1}: da's columns times w_hh's first rows and the cell's own columns times its
     * last, added to what the cell left in dh when h_t sees h_{t-1} outside w_hh too (the GRU's
     * z dL/dh_t); the other cells have consumed dh and overwrite it. The packed w_hh's columns
     * j0.. start at its panel j0 / VLEN: j0 is a multiple of VLEN. */
    if (da_rows)
        SFX(step_product_ldw)(n, c1 - j0, da_rows, da, ldg, w_hh + j0, P, 0,
                              pw->hh ? pw->hh + j0 * da_rows : NULL, pw->group, cf->dh_direct,
                              dh + j0, ldp);
    if (rec_rows)
        SFX(step_product_ldw)(n, c1 - j0, rec_rows, sc->d_rec + r * rec_rows, ld * rec_rows,
                              w_hh + da_rows * P + j0, P, 0,
                              pw->rec ? pw->rec + j0 * rec_rows : NULL, pw->group,
                              cf->dh_direct || da_rows, dh + j0, ldp);
    if (l->stacked) {
        const int64_t I = l->I;
        const REAL *mask = s[FL_MASK];
        REAL *dx_t = dy_below + r * I;
        SFX(step_product)(n, I, GH, da, ldg, s[FL_W_IH], 0, pw->ih, pw->group, 0, dx_t, ld * I);
        for (int64_t i = 0; mask && i < n; i++)
            #pragma omp simd
            for (int64_t j = 0; j < I; j++)
                dx_t[i * ld * I + j] *= mask[(r + i * ld) * I + j];
    }
    for (int64_t j = 0; j < fb->n; j++) /* the fed-back inputs were the sources' h_{t-1} */
        SFX(step_product_ldw)(n, P, GH, da, ldg, s[FL_W_FB] + j * P, l->F, 0,
                              pw->fb ? SFX(fb_block)(l, pw, 1, j) : NULL, pw->group, 1,
                              SFX(fed_slot)(fb, j, FL_DH) + k * P, ldp);
}

/* Step t of the backward loop of part k, n of its rows (the sequences k, k + parts, ...), every
 * unit: both halves. */
FL_INLINE void
SFX(backward_step)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                   const SFX(backward_scratch) *sc, const SFX(fed) *fb, REAL *dy_below,
                   int64_t t, int64_t off, int64_t n, int64_t k, int64_t parts, const int fused)
{
    SFX(backward_cell_half)(l, s, pw, sc, t, off, n, k, parts, 0, l->H,
                            sc->sums + k * sums_width(l), fused);
    SFX(backward_products_half)(l, s, pw, sc, fb, dy_below, off, n, k, parts, 0, l->H);
}

/* The backward time loop of part k of one layer. */
FL_INLINE void
SFX(backward_part_body)(const fl_layer *l, REAL *const s[], const SFX(packed) *pw,
                        const SFX(backward_scratch) *sc, int64_t k, int64_t parts,
                        const int fused)
{
    const SFX(fed) none = {0, 0, NULL, NULL};
    const int64_t n_sums = sums_width(l);
    for (int64_t j = 0; j < n_sums; j++)
        sc->sums[k * n_sums + j] = 0;
    int64_t off = fl_packed_rows(l); /* step t's first row, walking back from the end */
    for (int64_t t = l->T - 1; t >= 0; t--) {
        const int64_t n_t = batch_size(l, t), n = part_count(n_t, parts, k);
        off -= n_t;
        if (n > 0)
            SFX(backward_step)(l, s, pw, sc, &none, NULL, t, off, n, k, parts, fused);
    }
}

/* Where a forward's steps keep their pre-activations: into gates, or for the Elman cell straight
 * into hs; for inference, into the scratch after the packed weights, rec and m (see
 * fl_work_size). Sets pw and out for a call on N rows. */
static void SFX(forward_scratch)(const fl_layer *l, REAL *const s[], int64_t N, SFX(packed) *pw,
                                 SFX(step_arrays) *out)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t B = l->B, H = l->H, GH = cf->gates * H;
    out->rec = SFX(carve_packed)(l, 0, N, s[FL_WORK], pw);
    out->m = out->rec + (cf->apart ? B * GH : 0);
    out->pre = s[FL_GATES], out->hn = s[FL_HN], out->reuse = 0;
    if (!cf->keeps_gates) {
        out->pre = s[FL_HS] + B * l->P;
    } else if (l->inference) {
        out->pre = out->m + (l->projection ? B * H : 0);
        out->reuse = pw->ih != NULL;
        out->hn = out->pre + (out->reuse ? B : N) * GH;
    }
}

/* Part k of what a forward does before its time loop: pack the weights (unless a stream's
 * earlier step did, fl_layer.prepacked), for steps split by units when `split`, and, unless its
 * steps add the input term themselves, project every step's input (with the biases of
 * input_bias; normalised, for a cell that normalises rows). */
static void SFX(forward_prologue_part)(const fl_layer *l, REAL *const s[], int64_t k,
                                       int64_t parts, int split)
{
    const int64_t N = fl_packed_rows(l);
    SFX(packed) pw;
    SFX(step_arrays) out;
    SFX(forward_scratch)(l, s, N, &pw, &out);
    if (!l->prepacked)
        SFX(pack_weights_part)(l, s, 0, split, &pw, k, parts);
    if (!pw.ih && !l->stacked) {
        const REAL *b_ih, *b_hh;
        SFX(input_bias)(l, s, &b_ih, &b_hh);
        SFX(project_part)(N, l->I, gates_of(l->cell) * l->H, s[FL_X], s[FL_W_IH], b_ih, b_hh,
                          out.pre, k, parts);
        if (facts_of(l->cell)->layer_norm) {
            int64_t r0, r1;
            part_range(N, parts, k, &r0, &r1);
            SFX(ln_input)(l, s, r1 - r0, 1, r0, out.pre + r0 * gates_of(l->cell) * l->H);
        }
    }
}

static void SFX(forward_part)(const fl_layer *l, REAL *const s[], int64_t k, int64_t parts)
{
    SFX(packed) pw;
    SFX(step_arrays) out;
    SFX(forward_scratch)(l, s, fl_packed_rows(l), &pw, &out);
    SFX(forward_part_body)(l, s, &pw, &out, k, parts, ISA_FUSED);
}

#if ISA_VECTOR_BYTES /* a call splits its steps only in the vector builds (splits_units) */
/* A call split by units: `split` (forward_split or backward_split) on each of n_threads
 * threads, sharing the state of the parts (fl_part). */
typedef void (*SFX(split_loop))(const fl_layer *l, REAL *const s[], fl_part *parts_of,
                                int thread, int threads);

static void SFX(run_split)(SFX(split_loop) split, const fl_layer *l, REAL *const s[],
                           int n_threads)
{
    fl_part parts_of[fl_num_parts()];
    memset(parts_of, 0, sizeof parts_of);
    if (n_threads > 1) {
#pragma omp parallel num_threads(n_threads)
        FL_IEEE(split(l, s, parts_of, FL_OMP_THREAD_NUM(), FL_OMP_NUM_THREADS()));
    } else {
        split(l, s, parts_of, 0, 1);
    }
}

/* Step t of a forward split by units (splits_units), part k's share: it runs its units
 * (split_units_of) for all n rows, its columns of the recurrent product and then the cell on
 * them, which reads no other part's columns. The input side is in pre already, from the projection
 * before the loop (a batch this small never fuses it), but in a stream's step, which forms its
 * columns of it here, with the bias, in the recurrent product's pass (as step_pre does). */
FL_INLINE void SFX(forward_split_step)(const fl_layer *l, REAL *const s[],
                                       const SFX(packed) *pw, const SFX(step_arrays) *out,
                                       int64_t off, int64_t prev, int64_t n, int64_t k,
                                       int64_t parts, const int fused)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, P = l->P, GH = cf->gates * H;
    int64_t j0, j1;
    SFX(split_units_of)(l, k, parts, &j0, &j1);
    const SFX(cell_rows) a = SFX(forward_rows)(l, s, out, off, prev, 0);
    /* the recurrent product apart (cell_facts.apart), or on top of the input side */
    REAL *sum = cf->apart ? a.rec : a.pre;
    /* column c0 of a packed matrix of K rows, a panel's first, starts c0 K entries in: panel
     * after panel, or grouped as this part's own matrix (forward_split packed them so) */
    for (int64_t g = 0; g < cf->gates && j1 > j0; g++) {
        const int64_t c0 = g * H + j0;
        const SFX(term) rec = {a.h_prev, P, P, pw->hh + c0 * P, pw->group};
        if (pw->ih) {
            const SFX(term) terms[2] = {
                {s[FL_X] + off * l->I, l->I, l->I, pw->ih + c0 * l->I, pw->group}, rec};
            SFX(packed_gemm)(n, j1 - j0, terms, cf->apart ? 1 : 2, pw->bias + c0, 0, a.pre + c0,
                             GH);
            if (!cf->apart)
                continue;
        }
        SFX(packed_gemm)(n, j1 - j0, &rec, 1, NULL, !cf->apart && !pw->ih, sum + c0, GH);
    }
    SFX(cell_forward)(l, s, &a, n, 1, j0, j1, fused);
}

/* A forward split by units, on thread `thread` of `threads`: in phases (fl_part), the
 * prologue's parts, then the parts of every step, whose h the next step reads whole. */
static void SFX(forward_split)(const fl_layer *l, REAL *const s[], fl_part *parts_of,
                               int thread, int threads)
{
    const int64_t parts = fl_num_parts(), steps = steps_with_rows(l);
    SFX(packed) pw;
    SFX(step_arrays) out;
    SFX(forward_scratch)(l, s, fl_packed_rows(l), &pw, &out);
    for (int64_t j = 0, k; (k = fl_next_part(parts_of, parts, thread, threads, 0, &j)) >= 0;) {
        SFX(forward_prologue_part)(l, s, k, parts, 1);
        fl_finish_part(&parts_of[k], 0);
    }
    int64_t off = 0, prev = 0;
    for (int64_t t = 0; t < steps; t++) {
        for (int64_t j = 0, k;
             (k = fl_next_part(parts_of, parts, thread, threads, t + 1, &j)) >= 0;) {
            SFX(forward_split_step)(l, s, &pw, &out, off, prev, batch_size(l, t), k, parts,
                                    ISA_FUSED);
            fl_finish_part(&parts_of[k], t + 1);
        }
        prev = l->B + off;
        off += batch_size(l, t);
    }
}
#endif

static void SFX(forward)(const fl_layer *l, REAL *const s[], int n_threads)
{
    n_threads = fl_call_threads(l, n_threads);
    const int64_t parts = fl_num_parts();
#if ISA_VECTOR_BYTES
    if (splits_units(&ISA_BUILD, l)) {
        SFX(run_split)(SFX(forward_split), l, s, n_threads);
        return;
    }
#endif
    /* On one thread, plain loops: an OpenMP region costs about 250 ns even then, as much as a
     * whole small step of a stream. */
    if (n_threads > 1) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t k = 0; k < parts; k++)
            FL_IEEE(SFX(forward_prologue_part)(l, s, k, parts, 0));
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t k = 0; k < parts; k++)
            FL_IEEE(SFX(forward_part)(l, s, k, parts));
    } else {
        for (int64_t k = 0; k < parts; k++)
            SFX(forward_prologue_part)(l, s, k, parts, 0);
        for (int64_t k = 0; k < parts; k++)
            SFX(forward_part)(l, s, k, parts);
    }
}

/* The fed-back inputs of layer `target` of a stack. */
static SFX(fed) SFX(fed_of)(const fl_stack *st, REAL *const slots[], int64_t target)
{
    SFX(fed) fb = {0, 0, st, slots};
    for (int64_t j = 0; j < st->n_feedback; j++)
        if (st->feedback[2 * j + 1] == target) {
            fb.first = fb.n ? fb.first : j;
            fb.n++;
        }
    return fb;
}

/* The time loop of part k of a stack: at each step, every layer bottom to top. A stacked layer
 * with dropout first writes its input rows, the layer below's output times the mask. */
static void SFX(stack_forward_part)(const fl_stack *st, REAL *const slots[], int64_t k,
                                    int64_t parts)
{
    const fl_layer *first = &st->layers[0];
    const int64_t N = fl_packed_rows(first);
    int64_t off = 0, prev = 0;
    for (int64_t t = 0; t < first->T; t++) {
        const int64_t n_t = batch_size(first, t), n = part_count(n_t, parts, k);
        if (n == 0)
            break;
        for (int64_t i = 0; i < st->L; i++) {
            const fl_layer *l = &st->layers[i];
            REAL *const *s = slots + i * FL_N_SLOTS;
            if (s[FL_MASK]) {
                const int64_t I = l->I, B = l->B;
                const REAL *below = slots[(i - 1) * FL_N_SLOTS + FL_HS], *mask = s[FL_MASK];
                for (int64_t q = 0; q < n; q++) {
                    const int64_t row = off + k + q * parts;
                    #pragma omp simd
                    for (int64_t j = 0; j < I; j++)
                        s[FL_X][row * I + j] = below[(B + row) * I + j] * mask[row * I + j];
                }
            }
            SFX(packed) pw;
            SFX(step_arrays) out;
            SFX(forward_scratch)(l, s, N, &pw, &out);
            const SFX(fed) fb = SFX(fed_of)(st, slots, i);
            SFX(forward_step)(l, s, &pw, &out, &fb, off, prev, n, k, parts, ISA_FUSED);
        }
        prev = first->B + off;
        off += n_t;
    }
}

static void SFX(stack_forward)(const fl_stack *st, REAL *const slots[], int n_threads)
{
    n_threads = fl_stack_call_threads(st, n_threads);
    const int64_t parts = fl_num_parts();
    if (n_threads > 1) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t k = 0; k < parts; k++)
            for (int64_t i = 0; i < st->L; i++)
                FL_IEEE(SFX(forward_prologue_part)(&st->layers[i], slots + i * FL_N_SLOTS, k,
                                                   parts, 0));
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (int64_t k = 0; k < parts; k++)
            FL_IEEE(SFX(stack_forward_part)(st, slots, k, parts));
    } else {
        for (int64_t k = 0; k < parts; k++)
            for (int64_t i = 0; i < st->L; i++)
                SFX(forward_prologue_part)(&st->layers[i], slots + i * FL_N_SLOTS, k, parts,
                                           0);
        for (int64_t k = 0; k < parts; k++)
            SFX(stack_forward_part)(st, slots, k, parts);
    }
}

/* dst gets, row for row of the packed steps, the row of src (hs or cs, rows of `width`) that
 * step read as its previous state: h_{t-1} (or c_{t-1}) of every row of x. */
static void SFX(gather_prev)(const fl_layer *l, const REAL *src, int64_t width, REAL *dst)
{
    int64_t off = 0, prev = 0;
    for (int64_t t = 0; t < l->T; t++) {
        const int64_t n_t = batch_size(l, t);
        memcpy(dst + off * width, src + prev * width, (size_t)(n_t * width) * sizeof(REAL));
        prev = l->B + off;
        off += n_t;
    }
}

/* Part k of `parts` of the M rows of C (M, N) = A^T W, for A (K, M) and W (K, N) row-major
 * (leading dimensions lda and N): a weight gradient, summed over the K rows of every step; on
 * gemm_tn when the call has its copies (see gemm_tn_size), else through the BLAS. */
static void SFX(gradient_part)(int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda,
                               const REAL *W, REAL *C, int64_t k, int64_t parts, REAL *copies)
{
    int64_t m0, m1;
    part_range(M, parts, k, &m0, &m1);
#if ISA_VECTOR_BYTES
    if (copies) {
        SFX(gemm_tn)(m1 - m0, N, K, A + m0, lda, W, C + m0 * N, copies);
        return;
    }
#endif
    SFX(gemm)(1, 0, m1 - m0, N, K, 1, A + m0, lda, W, N, 0, C + m0 * N, N);
}

/* Points pw and sc at a backward call's scratch, in the layout fl_work_size() counts (N its
 * rows); returns the scratch after the parts' sums: the gemm_tn copies, then room to gather. */
static REAL *SFX(backward_scratch_of)(const fl_layer *l, REAL *const s[], int64_t N,
                                      SFX(packed) *pw, SFX(backward_scratch) *sc)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t B = l->B, H = l->H, P = l->P;
    REAL *rest = SFX(carve_packed)(l, 1, N, s[FL_WORK], pw);
    sc->da = rest, rest += N * cf->gates * H;
    sc->d_rec = cf->d_rec ? rest : NULL, rest += N * cf->d_rec * H;
    sc->d_step = cf->d_step ? rest : NULL, rest += B * cf->d_step * H;
    sc->dhs = sc->ms = sc->dm = NULL;
    if (l->projection) {
        sc->dhs = rest, sc->ms = rest + N * P, sc->dm = rest + N * P + N * H;
        rest += N * P + N * H + B * H;
    }
    sc->sums = rest;
    return rest + fl_num_parts() * sums_width(l);
}

/* dst (N, F) gets, row for row of the packed steps, the inputs the fb's sources fed back to
 * that row: their h_{t-1}, side by side in source order. */
static void SFX(gather_fed)(const fl_layer *l, const SFX(fed) *fb, REAL *dst)
{
    const int64_t P = l->P, F = l->F;
    for (int64_t j = 0; j < fb->n; j++) {
        const REAL *hs = SFX(fed_slot)(fb, j, FL_HS);
        int64_t off = 0, prev = 0;
        for (int64_t t = 0; t < l->T; t++) {
            const int64_t n_t = batch_size(l, t);
            for (int64_t i = 0; i < n_t; i++)
                memcpy(dst + (off + i) * F + j * P, hs + (prev + i) * P,
                       (size_t)P * sizeof(REAL));
            prev = l->B + off;
            off += n_t;
        }
    }
}

/* out[j] = the sum over the parts of their sums at..at + width - 1 (sums_width() a part), in
 * part order. */
static void SFX(add_parts)(const REAL *sums, int64_t n_sums, int64_t at, int64_t width,
                           REAL *out)
{
    const int64_t parts = fl_num_parts();
    for (int64_t j = 0; j < width; j++) {
        REAL sum = 0;
        for (int64_t k = 0; k < parts; k++)
            sum += sums[k * n_sums + at + j];
        out[j] = sum;
    }
}

/* What a backward call does after its time loop. dx (when the call asks for it) and the weight
 * gradients: each one product over all N rows, not T per-step products: dx = da @ w_ih (on the
 * packed w_ih when there is one), dw_ih = da.T @ x, dw_hh = da.T @ h_prev (its last d_rec H rows
 * d_rec.T @ h_prev), dw_hr = dhs.T @ ms, dw_fb = da.T @ the fed-back inputs; one parallel
 * region, each thread its block of rows of each. Then the bias, the cell's and the peephole
 * gradients: the parts' sums added in part order. */
static void SFX(backward_epilogue)(const fl_layer *l, REAL *const s[], const SFX(fed) *fb,
                                   int n_threads)
{
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, I = l->I, P = l->P, GH = cf->gates * H;
    const int64_t rec_rows = cf->d_rec * H, da_rows = GH - rec_rows;
    const int64_t N = fl_packed_rows(l), parts = fl_num_parts(), n_sums = sums_width(l);
    SFX(packed) pw;
    SFX(backward_scratch) sc;
    REAL *rest = SFX(backward_scratch_of)(l, s, N, &pw, &sc);
    const int64_t n_copies = gemm_tn_size(&ISA_BUILD, l, IS_F64);
    REAL *copies = n_copies ? rest : NULL; /* each part's gemm_tn copies */
    rest += parts * n_copies;
    /* h_prev (each row's h_{t-1}, for dw_hh) is hs without its last block, unless the batch is
     * packed. */
    const REAL *h_prev = s[FL_HS];
    if (l->batch_sizes) {
        SFX(gather_prev)(l, s[FL_HS], P, rest);
        h_prev = rest;
        rest += N * P;
    }
    if (fb->n)
        SFX(gather_fed)(l, fb, rest);
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++) {
        const fl_fp_mode flush = fl_ieee_begin();
        int64_t m0, m1;
        part_range(N, parts, k, &m0, &m1);
        if (l->input_grad)
            SFX(step_product)(m1 - m0, I, GH, sc.da + m0 * GH, GH, s[FL_W_IH], 0, pw.ih,
                              pw.group, 0, s[FL_DX] + m0 * I, I);
        REAL *part_copies = copies ? copies + k * n_copies : NULL;
        SFX(gradient_part)(GH, I, N, sc.da, GH, s[FL_X], s[FL_DW_IH], k, parts, part_copies);
        if (da_rows)
            SFX(gradient_part)(da_rows, P, N, sc.da, GH, h_prev, s[FL_DW_HH], k, parts,
                               part_copies);
        if (rec_rows)
            SFX(gradient_part)(rec_rows, P, N, sc.d_rec, rec_rows, h_prev,
                               s[FL_DW_HH] + da_rows * P, k, parts, part_copies);
        if (l->projection)
            SFX(gradient_part)(P, H, N, sc.dhs, P, sc.ms, s[FL_DW_HR], k, parts, part_copies);
        if (fb->n)
            SFX(gradient_part)(GH, l->F, N, sc.da, GH, rest, s[FL_DW_FB], k, parts,
                               part_copies);
        fl_ieee_end(flush);
    }
    /* The sums, in their order (sums_width): db_ih, which db_hh is too but where the cell keeps
     * sums of its own for it (the GRU's n part), the cell's, the peepholes'. */
    int64_t at = GH;
    if (s[FL_DB_IH]) {
        SFX(add_parts)(sc.sums, n_sums, 0, GH, s[FL_DB_IH]);
        memcpy(s[FL_DB_HH], s[FL_DB_IH], (size_t)GH * sizeof(REAL));
    }
    for (int i = 0; i < 4 && cf->sums[i].width; at += cf->sums[i].width * H, i++)
        if (s[cf->sums[i].slot])
            SFX(add_parts)(sc.sums, n_sums, at, cf->sums[i].width * H,
                           s[cf->sums[i].slot] + cf->sums[i].at * H);
    if (l->peephole)
        SFX(add_parts)(sc.sums, n_sums, at, 3 * H, s[FL_DW_PEEPHOLE]);
}

static void SFX(backward_pack_part)(const fl_layer *l, REAL *const s[], int64_t k,
                                    int64_t parts)
{
    SFX(packed) pw;
    SFX(carve_packed)(l, 1, fl_packed_rows(l), s[FL_WORK], &pw);
    SFX(pack_weights_part)(l, s, 1, 0, &pw, k, parts);
}

static void SFX(backward_part)(const fl_layer *l, REAL *const s[], int64_t k, int64_t parts)
{
    SFX(packed) pw;
    SFX(backward_scratch) sc;
    SFX(backward_scratch_of)(l, s, fl_packed_rows(l), &pw, &sc);
    SFX(backward_part_body)(l, s, &pw, &sc, k, parts, ISA_FUSED);
}

#if ISA_VECTOR_BYTES /* as the forward, the backward splits by units only in the vector builds */
/* A backward split by units (splits_units, as its forward), on thread `thread` of `threads`,
 * in phases (fl_part): the packing's parts; the cell of the last step on each part's units of
 * every row; then, at each step t from the last, each part's columns of dh_{t-1} (the product
 * reads all of da) followed by the cell of step t - 1 on its units, which reads only the part's
 * own columns of dh, so one task, and the phases are one a step; step 0's product alone last.
 * Each part keeps the sums of its units, zero elsewhere. */
static void SFX(backward_split)(const fl_layer *l, REAL *const s[], fl_part *parts_of,
                                int thread, int threads)
{
    const int64_t parts = fl_num_parts(), n_sums = sums_width(l), steps = steps_with_rows(l);
    const SFX(fed) none = {0, 0, NULL, NULL};
    SFX(packed) pw;
    SFX(backward_scratch) sc;
    SFX(backward_scratch_of)(l, s, fl_packed_rows(l), &pw, &sc);
    for (int64_t j = 0, k; (k = fl_next_part(parts_of, parts, thread, threads, 0, &j)) >= 0;) {
        SFX(pack_weights_part)(l, s, 1, 0, &pw, k, parts);
        for (int64_t i = 0; i < n_sums; i++)
            sc.sums[k * n_sums + i] = 0;
        fl_finish_part(&parts_of[k], 0);
    }
    /* phase steps + 1 - t: the product of step t (none after the last step) and the cell of
     * step t - 1 (none before step 0); off, step t's first row */
    for (int64_t t = steps, off = fl_packed_rows(l); steps && t >= 0; t--) {
        const int64_t p = steps + 1 - t, n_prev = t > 0 ? batch_size(l, t - 1) : 0;
        for (int64_t j = 0, k; (k = fl_next_part(parts_of, parts, thread, threads, p, &j)) >= 0;) {
            int64_t j0, j1;
            SFX(split_units_of)(l, k, parts, &j0, &j1);
            if (t < steps)
                SFX(backward_products_half)(l, s, &pw, &sc, &none, NULL, off, batch_size(l, t),
                                            0, 1, j0, j1);
            if (t > 0)
                SFX(backward_cell_half)(l, s, &pw, &sc, t - 1, off - n_prev, n_prev, 0, 1, j0,
                                        j1, sc.sums + k * n_sums, ISA_FUSED);
            fl_finish_part(&parts_of[k], p);
        }
        off -= n_prev;
    }
}
#endif

static void SFX(backward)(const fl_layer *l, REAL *const s[], int n_threads)
{
    n_threads = fl_call_threads(l, n_threads);
    const int64_t parts = fl_num_parts();
    const SFX(fed) none = {0, 0, NULL, NULL};
#if ISA_VECTOR_BYTES
    if (splits_units(&ISA_BUILD, l)) {
        SFX(run_split)(SFX(backward_split), l, s, n_threads);
        SFX(backward_epilogue)(l, s, &none, n_threads);
        return;
    }
#endif
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++)
        FL_IEEE(SFX(backward_pack_part)(l, s, k, parts));
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++)
        FL_IEEE(SFX(backward_part)(l, s, k, parts));
    SFX(backward_epilogue)(l, s, &none, n_threads);
}

/* The backward time loop of part k of a stack: steps from the last, and at each every layer top
 * to bottom, so that a layer's dL/dh_t is whole when it runs: from the layer above (its dx_t,
 * through FL_DY) and from the layers it feeds back to (at step t + 1, already run). */
static void SFX(stack_backward_part)(const fl_stack *st, REAL *const slots[], int64_t k,
                                     int64_t parts)
{
    const fl_layer *first = &st->layers[0];
    const int64_t N = fl_packed_rows(first);
    for (int64_t i = 0; i < st->L; i++) {
        const int64_t n_sums = sums_width(&st->layers[i]);
        SFX(packed) pw;
        SFX(backward_scratch) sc;
        SFX(backward_scratch_of)(&st->layers[i], slots + i * FL_N_SLOTS, N, &pw, &sc);
        for (int64_t j = 0; j < n_sums; j++)
            sc.sums[k * n_sums + j] = 0;
    }
    int64_t off = N;
    for (int64_t t = first->T - 1; t >= 0; t--) {
        const int64_t n_t = batch_size(first, t), n = part_count(n_t, parts, k);
        off -= n_t;
        if (n == 0)
            continue;
        for (int64_t i = st->L - 1; i >= 0; i--) {
            const fl_layer *l = &st->layers[i];
            REAL *const *s = slots + i * FL_N_SLOTS;
            SFX(packed) pw;
            SFX(backward_scratch) sc;
            SFX(backward_scratch_of)(l, s, N, &pw, &sc);
            const SFX(fed) fb = SFX(fed_of)(st, slots, i);
            REAL *dy_below = i > 0 ? slots[(i - 1) * FL_N_SLOTS + FL_DY] : NULL;
            SFX(backward_step)(l, s, &pw, &sc, &fb, dy_below, t, off, n, k, parts, ISA_FUSED);
        }
    }
}

static void SFX(stack_backward)(const fl_stack *st, REAL *const slots[], int n_threads)
{
    n_threads = fl_stack_call_threads(st, n_threads);
    const int64_t parts = fl_num_parts();
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++)
        for (int64_t i = 0; i < st->L; i++)
            FL_IEEE(SFX(backward_pack_part)(&st->layers[i], slots + i * FL_N_SLOTS, k, parts));
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++)
        FL_IEEE(SFX(stack_backward_part)(st, slots, k, parts));
    for (int64_t i = 0; i < st->L; i++) {
        const SFX(fed) fb = SFX(fed_of)(st, slots, i);
        SFX(backward_epilogue)(&st->layers[i], slots + i * FL_N_SLOTS, &fb, n_threads);
    }
}

#if !ISA_VECTOR_BYTES /* one copy in the library, in the generic build */
void SFX(fl_matmul_t)(int64_t M, int64_t N, int64_t K, const REAL *A, const REAL *Bm, REAL *C,
                      int n_threads)
{
    const int64_t parts = fl_num_parts();
    n_threads = n_threads < parts ? n_threads : (int)parts;
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n_threads > 1)
    for (int64_t k = 0; k < parts; k++) {
        int64_t m0, m1;
        part_range(M, parts, k, &m0, &m1);
        FL_IEEE(SFX(gemm)(0, 1, m1 - m0, N, K, 1, A + m0 * K, K, Bm, K, 0, C + m0 * N, N));
    }
}
#endif

#undef REAL
#undef SFX
#undef GEMM
#undef GEMV
#undef FMA
#undef SQRT
#undef EXP_UINT
#undef EXP_MANT
#undef EXP_BIAS
#undef EXP_ROUND
#undef EXP_ROUND_BITS
#undef EXP_MIN
#undef EXP_MAX
#undef EXP_LN2_HI
#undef EXP_LN2_LO
#undef EXP_DEGREE
#undef VEC_BROADCAST
#undef VEC_FMA
#undef IS_F64
