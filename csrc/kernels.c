/* Instantiates csrc/kernels_impl.h once for float32 and once for float64, and holds the
 * helpers that do not depend on the floating type. */
#include "fastlstm.h"
#include "platform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fl_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fl_default_num_threads(void) { return FL_OMP_MAX_THREADS(); }

/* Facts about the machine, fixed when fastlstm loads. The processors available: every call
 * cuts its batch into the same parts, and asking the OpenMP runtime each time would cost a
 * system call. Whether the steps run the AVX-512 packed product (kernels_impl.h): the CPU and
 * the operating system support it, and FASTLSTM_VECTOR_KERNELS is not "0". */
static int num_parts = 1;
static int vector_kernels = 0;

void fl_init(void)
{
    FL_BLAS_SET_NUM_THREADS(1);
    int n = FL_OMP_NUM_PROCS();
    num_parts = n > 0 ? n : 1;
#if FL_HAVE_VECTOR_KERNELS
    const char *env = getenv("FASTLSTM_VECTOR_KERNELS");
    __builtin_cpu_init();
    vector_kernels = __builtin_cpu_supports("avx512f") && !(env && strcmp(env, "0") == 0);
#endif
}

int fl_num_parts(void) { return num_parts; }
int fl_vector_kernels(void) { return vector_kernels; }
const char *fl_blas_corename(void) { return FL_BLAS_CORENAME(); }
const char *fl_blas_config(void) { return FL_BLAS_CONFIG(); }

/* The block of A a by-columns product (kernels_impl.h, gemm_tn) copies at a time: rows, and
 * columns (a multiple of 16, the floats of a panel). */
#define GEMM_TN_ROWS 512
#define GEMM_TN_COLS 32

/* Part k of n items cut into `parts` contiguous, nearly equal ranges: [*lo, *hi). */
static inline void part_range(int64_t n, int64_t parts, int64_t k, int64_t *lo, int64_t *hi)
{
    int64_t base = n / parts, extra = n % parts;
    *lo = k * base + (k < extra ? k : extra);
    *hi = *lo + base + (k < extra ? 1 : 0);
}

/* How many of the sequences 0 .. n-1 part k owns when they are dealt round-robin: k, k + parts,
 * k + 2 parts, ... */
static inline int64_t part_count(int64_t n, int64_t parts, int64_t k)
{
    return n > k ? (n - k - 1) / parts + 1 : 0;
}

static inline int64_t gates_of(int cell)
{
    return cell == FL_LSTM ? 4 : cell == FL_GRU ? 3 : 1;
}

static inline int64_t batch_size(const fl_layer *l, int64_t t)
{
    return l->batch_sizes ? l->batch_sizes[t] : l->B;
}

int64_t fl_packed_rows(const fl_layer *l)
{
    if (!l->batch_sizes)
        return l->T * l->B;
    int64_t n = 0;
    for (int64_t t = 0; t < l->T; t++)
        n += l->batch_sizes[t];
    return n;
}

/* The threads a call runs on: n_threads, but no more than the parts (each runs on one thread, so
 * more would only be started to wait) or the sequences (a batch of one has one part with rows,
 * and no work for a second thread), and one for a call whose products come to
 * fewer than 2^17 FLOPs: about a microsecond of work, which a second thread would not pay back
 * (an OpenMP region costs microseconds on an idle machine, and on a busy one it waits until its
 * other thread is scheduled, easily milliseconds). Results do not depend on it. */
int fl_call_threads(const fl_layer *l, int n_threads)
{
    const int64_t GH = gates_of(l->cell) * l->H;
    const double flops = 2.0 * (double)fl_packed_rows(l) * (double)GH * (double)(l->I + l->P);
    if (flops < (double)(1 << 17) || l->B < 2)
        return 1;
    int64_t most = l->B < num_parts ? l->B : num_parts;
    return n_threads < most ? n_threads : (int)most;
}

/* Elements of the packed weights of a call (kernels_impl.h, "the packed recurrent product"): a
 * forward packs w_ih^T, w_hh^T and w_hr^T and keeps the sum of the biases, a backward packs
 * w_hh and w_hr, and w_ih for dx = da w_ih when it forms dx and the batch has at least G H rows
 * (with fewer, at B = 1, H = 64 for one, the packed dx was no faster than OpenBLAS's, whose
 * small-matrix kernels copy nothing). All 0 when the call runs its products through the BLAS:
 * without the vector kernels, or for a single step, which would not pay back reading the
 * weights once more to pack them. Panels are 16 floats or 8 doubles wide: K rows of N columns
 * rounded up to 16 hold either. hn, the n rows of a GRU's w_hh packed apart for its backward,
 * is 0 otherwise; hr is 0 unless the layer projects. */
typedef struct {
    int64_t ih, bias, hh, hn, hr;
} packed_layout;

static packed_layout packed_sizes(const fl_layer *l, int backward)
{
    packed_layout size = {0, 0, 0, 0, 0};
    if (!vector_kernels || l->T < 2)
        return size;
    const int64_t GH = gates_of(l->cell) * l->H, H = l->H, P = l->P;
#define PADDED(n) (((n) + 15) / 16 * 16)
    if (backward) {
        size.ih = l->input_grad && fl_packed_rows(l) >= GH ? GH * PADDED(l->I) : 0;
        size.hh = (l->cell == FL_GRU ? 2 * H : GH) * PADDED(P);
        size.hn = l->cell == FL_GRU ? H * PADDED(P) : 0;
        size.hr = l->projection ? P * PADDED(H) : 0;
    } else {
        size.ih = l->I * PADDED(GH);
        size.bias = PADDED(GH);
        size.hh = P * PADDED(GH);
        size.hr = l->projection ? H * PADDED(P) : 0;
    }
#undef PADDED
    return size;
}

/* The sums each part of a backward call keeps (kernels_impl.h, fl_backward): the bias
 * gradient's (G H), the n part of the GRU's second bias gradient's (H) and the peephole
 * gradients' (3 H). */
static int64_t sums_width(const fl_layer *l)
{
    const int64_t GH = gates_of(l->cell) * l->H;
    return GH + (l->cell == FL_GRU ? l->H : 0) + (l->peephole ? 3 * l->H : 0);
}

/* The copies each part of a backward call makes for gemm_tn (kernels_impl.h), which forms the
 * weight gradients in float64: a block of GEMM_TN_ROWS rows of W packed (as wide as the widest
 * gradient: I, P or H columns), and GEMM_TN_COLS columns of the same rows of A. In float64,
 * OpenBLAS's products run at 95-100 GFLOP/s per core here and gemm_tn's at 110-130; in float32
 * OpenBLAS's are as fast or a few percent faster, and the weight gradients stay with it. 0 then,
 * and without the vector kernels. */
static int64_t gemm_tn_size(const fl_layer *l, int f64)
{
    if (!vector_kernels || !f64)
        return 0;
    const int64_t I = l->I, H = l->H, P = l->P;
    const int64_t widest = I > P ? (I > H ? I : H) : (P > H ? P : H);
    return GEMM_TN_ROWS * (GEMM_TN_COLS + (widest + 15) / 16 * 16);
}

/* Rows of the pre-activations and activations (and the GRU's hn) an inference forward keeps in
 * FL_WORK: one step's, B, when its steps add their own input projection (a packing call), else
 * all N, which the projection before the loop fills. */
static int64_t inference_rows(const fl_layer *l)
{
    return packed_sizes(l, 0).ih ? l->B : fl_packed_rows(l);
}

/* The scratch a call carves out of FL_WORK (kernels_impl.h follows this layout): first the
 * packed weights (packed_sizes), then
 *   forward:  GRU hh (B, 3H), W_hh h_{t-1} before b_hh;  projection m (B, H), o * tanh(c);
 *             inference: LSTM and GRU gates (R, G H), GRU hn (R, H), R = inference_rows
 *   backward: da (N, G H), dL/d(input-side pre-activation);  GRU da_hn (N, H), dL/d(W_hn
 *             h_{t-1} + b_hn);  projection dhs (N, P) dL/dh_t, ms (N, H) m_t, dm (B, H);
 *             the parts' sums (parts, sums_width);  float64 with the vector kernels: the
 *             parts' gemm_tn copies (parts, gemm_tn_size);  packed batches: h_prev (N, P), each
 *             row's h_{t-1}, gathered for dw_hh (without batch_sizes hs holds them in that
 *             order already) */
int64_t fl_work_size(const fl_layer *l, int backward, int f64)
{
    const int64_t GH = gates_of(l->cell) * l->H, N = fl_packed_rows(l);
    const packed_layout p = packed_sizes(l, backward);
    const int64_t packed = p.ih + p.bias + p.hh + p.hn + p.hr;
    if (!backward) {
        int64_t n = packed + (l->cell == FL_GRU ? l->B * GH : l->projection ? l->B * l->H : 0);
        if (l->inference && (l->cell == FL_LSTM || l->cell == FL_GRU))
            n += inference_rows(l) * (GH + (l->cell == FL_GRU ? l->H : 0));
        return n;
    }
    int64_t n = packed + N * GH;
    if (l->cell == FL_GRU)
        n += N * l->H;
    if (l->projection)
        n += N * l->P + N * l->H + l->B * l->H;
    n += num_parts * (sums_width(l) + gemm_tn_size(l, f64));
    if (l->batch_sizes)
        n += N * l->P;
    return n;
}

#define REAL float
#define SFX(name) name##_f32
#define IS_F64 0
#define GEMM FL_SGEMM
#define GEMV FL_SGEMV
#define FMA fmaf
#define EXP_UINT uint32_t
#define EXP_MANT 23
#define EXP_BIAS 127u
#define EXP_ROUND 12582912.0f          /* 1.5 * 2^23 */
#define EXP_ROUND_BITS 0x4B400000u
#define EXP_MIN -87.0f                 /* 2^n normal: n >= -126 */
#define EXP_MAX 88.0f                  /* n <= 127 */
#define EXP_LN2_HI 0.693359375f        /* ln 2 = HI + LO, HI with few bits: n * HI is exact */
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_DEGREE 7
#define VEC_BROADCAST _mm512_set1_ps
#define VEC_FMA _mm512_fmadd_ps
#include "kernels_impl.h"

#define REAL double
#define SFX(name) name##_f64
#define IS_F64 1
#define GEMM FL_DGEMM
#define GEMV FL_DGEMV
#define FMA fma
#define EXP_UINT uint64_t
#define EXP_MANT 52
#define EXP_BIAS 1023u
#define EXP_ROUND 6755399441055744.0   /* 1.5 * 2^52 */
#define EXP_ROUND_BITS 0x4338000000000000u
#define EXP_MIN -708.0                 /* n >= -1022 */
#define EXP_MAX 709.0                  /* n <= 1023 */
#define EXP_LN2_HI 0.693145751953125   /* ln 2 = HI + LO, HI with few bits: n * HI is exact */
#define EXP_LN2_LO 1.42860682030941723212e-6
#define EXP_DEGREE 13
#define VEC_BROADCAST _mm512_set1_pd
#define VEC_FMA _mm512_fmadd_pd
#include "kernels_impl.h"
