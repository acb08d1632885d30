/* What does not depend on the instruction set: the choice among the builds of the time loops
 * (kernels_<isa>.c, each the kernels of kernels_isa.h compiled for one instruction set) and the
 * calls into them, the threads of a call and the size of its scratch. */
#include "fastlstm.h"
#include "kernels_common.h"
#include "platform.h"

#include <stddef.h>

int fl_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fl_default_num_threads(void) { return FL_OMP_MAX_THREADS(); }

/* The builds compiled in: the generic one everywhere, the vector ones where the compiler and the
 * architecture allow them (platform.h; setup.py compiles the same translation units). */
extern const fl_build fl_build_generic;
#if FL_X86_BUILDS
extern const fl_build fl_build_avx2, fl_build_avx512;
#endif
#if FL_NEON_BUILD
extern const fl_build fl_build_neon;
#endif

const fl_build *const fl_builds[FL_N_ISAS] = {
    [FL_ISA_GENERIC] = &fl_build_generic,
#if FL_X86_BUILDS
    [FL_ISA_AVX2] = &fl_build_avx2,
    [FL_ISA_AVX512] = &fl_build_avx512,
#endif
#if FL_NEON_BUILD
    [FL_ISA_NEON] = &fl_build_neon,
#endif
};

/* Facts about the machine, fixed when fastlstm loads. The processors available: every call
 * cuts its batch into the same parts, and asking the OpenMP runtime each time would cost a
 * system call. Which builds this CPU and its operating system can run. */
static int num_parts = 1;
static int cpu_runs[FL_N_ISAS] = {[FL_ISA_GENERIC] = 1};

void fl_init(void)
{
    FL_BLAS_SET_NUM_THREADS(1);
    int n = FL_OMP_NUM_PROCS();
    num_parts = n > 0 ? n : 1;
#if FL_X86_BUILDS
    /* GCC's and clang's checks also ask the operating system (xgetbv) whether it saves the ymm
     * and zmm registers: a feature the OS has not enabled counts as absent. */
    __builtin_cpu_init();
    cpu_runs[FL_ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    cpu_runs[FL_ISA_AVX512] = cpu_runs[FL_ISA_AVX2] && __builtin_cpu_supports("avx512f");
#endif
#if FL_NEON_BUILD
    cpu_runs[FL_ISA_NEON] = 1; /* Advanced SIMD is part of every ARMv8-A CPU */
#endif
}

int fl_num_parts(void) { return num_parts; }

int fl_isa_available(int isa)
{
    return isa >= 0 && isa < FL_N_ISAS && fl_builds[isa] && cpu_runs[isa];
}

int fl_isa_best(void)
{
    int best = FL_ISA_GENERIC;
    for (int isa = 0; isa < FL_N_ISAS; isa++)
        if (fl_isa_available(isa))
            best = isa;
    return best;
}

const char *fl_isa_name(int isa)
{
    static const char *const names[FL_N_ISAS] = {"generic", "avx2", "avx512", "neon"};
    return isa >= 0 && isa < FL_N_ISAS ? names[isa] : NULL;
}

const char *fl_blas_corename(void) { return FL_BLAS_CORENAME(); }
const char *fl_blas_config(void) { return FL_BLAS_CONFIG(); }

int64_t fl_packed_rows(const fl_layer *l)
{
    if (!l->batch_sizes)
        return l->T * l->B;
    int64_t n = 0;
    for (int64_t t = 0; t < l->T; t++)
        n += l->batch_sizes[t];
    return n;
}

/* The threads a call runs on: n_threads, but no more than the parts (a part's work at any one time
 * runs on one thread, so more would only be started to wait), and one for a call whose products
 * come to fewer than 2^17 FLOPs: about a microsecond of work, which a second thread would not pay
 * back (an OpenMP region costs microseconds on an idle machine, and on a busy one it waits until
 * its other thread is scheduled, easily milliseconds). A batch of fewer sequences than parts leaves
 * parts without rows in the time loop, so its threads are no more than its sequences, unless it
 * splits its steps by units (splits_units, forward and backward alike) or it has rows enough
 * (PROLOGUE_ROWS a part) for the products over all rows before and after the loop (the input
 * projection, dx and the weight gradients), which share their rows among all the parts. A stream's
 * step (fl_layer.stream) starts its threads anew every step: it runs on one thread unless it splits
 * its units, or gives each part FUSE_ROWS rows and comes to 2^20 FLOPs or more (with fewer rows
 * each thread would read all the weights for little work). Results do not depend on it. */
#define PROLOGUE_ROWS 16

/* fl_call_threads of a call that splits its steps by units (split) or deals out its rows */
static int call_threads(const fl_layer *l, int n_threads, int split)
{
    const int64_t GH = gates_of(l->cell) * l->H, N = fl_packed_rows(l);
    const double flops = 2.0 * (double)N * (double)GH * (double)(l->I + l->P + l->F);
    if (l->stream && !split && (l->B < FUSE_ROWS * num_parts || flops < (double)(1 << 20)))
        return 1;
    if (flops < (double)(1 << 17))
        return 1;
    int64_t most = l->B < num_parts ? l->B : num_parts;
    if (N >= PROLOGUE_ROWS * num_parts || split)
        most = num_parts;
    return n_threads < most ? n_threads : (int)most;
}

int fl_call_threads(const fl_layer *l, int n_threads)
{
    return call_threads(l, n_threads, splits_units(fl_builds[l->isa], l));
}

/* A stack's loop never splits a step by units, not even in its first layer, which alone of its
 * layers could (splits_units): it deals out the rows. */
int fl_stack_call_threads(const fl_stack *st, int n_threads)
{
    int most = 1;
    for (int64_t k = 0; k < st->L; k++) {
        const int n = call_threads(&st->layers[k], n_threads, 0);
        most = n > most ? n : most;
    }
    return most;
}

/* The scratch a call carves out of FL_WORK (kernels_impl.h follows this layout), from its first
 * cache line on (carve_packed): first the packed weights (packed_sizes), then
 *   forward:  a cell that keeps its recurrent product apart (cell_facts.apart, the GRU, the LN
 *             LSTM) rec
 *             (B, G H), h_{t-1} W_hh^T;  projection m (B, H), o * tanh(c);
 *             inference: the activations of a cell that keeps them (R, G H), and its hn
 *             (R, hn H), R = inference_rows
 *   backward: da (N, G H), dL/d(input-side pre-activation);  the cell's own gradient columns of
 *             w_hh's last rows, d_rec (N, d_rec H) (the GRU's dL/d(W_hn h_{t-1} + b_hn), the
 *             LN LSTM's dL/d(h_{t-1} w_hh^T));  the cell's step scratch (B, d_step H);
 *             projection dhs (N, P) dL/dh_t, ms (N, H) m_t, dm (B, H);
 *             the parts' sums (parts, sums_width);  float64 in a build with gemm_tn: the
 *             parts' gemm_tn copies (parts, gemm_tn_size);  packed batches: h_prev (N, P), each
 *             row's h_{t-1}, gathered for dw_hh (without batch_sizes hs holds them in that
 *             order already);  fed-back inputs: fb_prev (N, F), each row's fed-back inputs,
 *             gathered for dw_fb */
int64_t fl_work_size(const fl_layer *l, int backward, int f64)
{
    const fl_build *b = fl_builds[l->isa];
    const cell_facts *cf = facts_of(l->cell);
    const int64_t H = l->H, GH = cf->gates * H, N = fl_packed_rows(l);
    const packed_layout p = packed_sizes(b, l, backward, N);
    const int64_t packed = p.ih + p.bias + p.hh + p.rec + p.hr + p.fb;
    /* the elements before the first cache line of FL_WORK, at most, where the scratch starts
     * (carve_packed) */
    const int64_t line = FL_LINE_BYTES / (f64 ? sizeof(double) : sizeof(float));
    if (!backward) {
        int64_t n = packed + (cf->apart ? l->B * GH : 0) + (l->projection ? l->B * H : 0);
        if (l->inference && cf->keeps_gates)
            n += inference_rows(b, l) * (GH + cf->hn * H);
        return line + n;
    }
    int64_t n = packed + N * GH + N * cf->d_rec * H + l->B * cf->d_step * H;
    if (l->projection)
        n += N * l->P + N * H + l->B * H;
    n += num_parts * (sums_width(l) + gemm_tn_size(b, l, f64));
    if (l->batch_sizes)
        n += N * l->P;
    return line + n + N * l->F;
}

/* Each call runs in the build its layer names (fl_layer.isa), in IEEE arithmetic (FL_IEEE). */
void fl_forward_f32(const fl_layer *l, float *const s[], int n_threads)
{
    FL_IEEE(fl_builds[l->isa]->forward_f32(l, s, n_threads));
}

void fl_backward_f32(const fl_layer *l, float *const s[], int n_threads)
{
    FL_IEEE(fl_builds[l->isa]->backward_f32(l, s, n_threads));
}

void fl_forward_f64(const fl_layer *l, double *const s[], int n_threads)
{
    FL_IEEE(fl_builds[l->isa]->forward_f64(l, s, n_threads));
}

void fl_backward_f64(const fl_layer *l, double *const s[], int n_threads)
{
    FL_IEEE(fl_builds[l->isa]->backward_f64(l, s, n_threads));
}

void fl_stack_forward_f32(const fl_stack *st, float *const s[], int n_threads)
{
    FL_IEEE(fl_builds[st->layers[0].isa]->stack_forward_f32(st, s, n_threads));
}

void fl_stack_backward_f32(const fl_stack *st, float *const s[], int n_threads)
{
    FL_IEEE(fl_builds[st->layers[0].isa]->stack_backward_f32(st, s, n_threads));
}

void fl_stack_forward_f64(const fl_stack *st, double *const s[], int n_threads)
{
    FL_IEEE(fl_builds[st->layers[0].isa]->stack_forward_f64(st, s, n_threads));
}

void fl_stack_backward_f64(const fl_stack *st, double *const s[], int n_threads)
{
    FL_IEEE(fl_builds[st->layers[0].isa]->stack_backward_f64(st, s, n_threads));
}
