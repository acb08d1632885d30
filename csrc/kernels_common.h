/* What kernels.c (the dispatch and the scratch sizes) and every build of the time loops
 * (kernels_isa.h) share: the cut of a batch into parts, and the layout of a call's scratch. All
 * static inline, so that each translation unit compiles its own copy with its own target flags
 * and no code of one instruction set is ever linked into another's caller.
 * Notation: csrc/fastlstm.h. */
#ifndef FASTLSTM_KERNELS_COMMON_H
#define FASTLSTM_KERNELS_COMMON_H

#include "fastlstm.h"
#include "platform.h"

/* A cache line on the CPUs the builds target, in bytes: what threads that write neighbouring
 * data keep apart (the parts' state, the scratch's rows). */
#define FL_LINE_BYTES 64

/* One build of the time loops, for one instruction set (kernels_isa.h fills one per
 * translation unit). `vector_bytes`: the width of its vectors, 0 in the generic build; the
 * others' steps run the packed product (weights packed once per call), the generic one's call
 * the BLAS. `gemm_tn_f64`: its float64 weight gradients run on gemm_tn's register tiles rather
 * than in the BLAS. */
typedef struct {
    int vector_bytes, gemm_tn_f64;
    void (*forward_f32)(const fl_layer *, float *const[], int);
    void (*backward_f32)(const fl_layer *, float *const[], int);
    void (*forward_f64)(const fl_layer *, double *const[], int);
    void (*backward_f64)(const fl_layer *, double *const[], int);
    void (*stack_forward_f32)(const fl_stack *, float *const[], int);
    void (*stack_backward_f32)(const fl_stack *, float *const[], int);
    void (*stack_forward_f64)(const fl_stack *, double *const[], int);
    void (*stack_backward_f64)(const fl_stack *, double *const[], int);
} fl_build;

/* The builds compiled into this library, by enum fl_isa; NULL where none was (kernels.c). */
extern const fl_build *const fl_builds[FL_N_ISAS];

#if defined(__GNUC__) || defined(__clang__)
/* A call split by units (forward_split, backward_split) runs in phases, a task per part in
 * each, where a task reads what the earlier phases wrote and nothing another task of its own
 * phase writes. Each thread runs its own parts' tasks (parts thread, thread + threads, ...),
 * then any other part's that no thread has begun, and then waits for the rest. So a thread the
 * system leaves without a processor for a while (another program runs, or both threads share
 * one) holds up a phase only if it is inside one of its tasks, where a barrier after every
 * phase would hold up each phase until it ran again. A task computes the same whoever runs it:
 * the results do not depend on the threads. The state of one part, on a cache line of its own,
 * written by whoever runs its task and read by the threads waiting for it; zero before the
 * threads start. OpenMP's own barrier, which parks the waiting threads through the runtime,
 * costs as much as a whole step at B = 1. Vector builds only (GCC's and clang's atomic
 * built-ins): the generic build never splits a step (splits_units). */
typedef struct {
    int64_t claimed; /* the phases whose task of this part a thread has begun */
    int64_t done;    /* the phases whose task of this part has finished */
} __attribute__((aligned(FL_LINE_BYTES))) fl_part;

/* Whether the calling thread now runs the task of `part` in phase p: no thread had begun it. */
static inline int fl_claim_part(fl_part *part, int64_t p)
{
    int64_t unclaimed = p;
    return __atomic_compare_exchange_n(&part->claimed, &unclaimed, p + 1, 0, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
}

/* The next part whose task of phase p the calling thread (thread of threads) runs, or -1 once
 * every part has finished phase p; what those tasks wrote is then seen by this thread. The
 * thread has seen phase p - 1 finish (its call for p - 1 returned -1). `*j` is where it is in
 * its round of phase p, 0 at its start: its own parts, then every part in turn that is still
 * unbegun (a load first: a failed exchange would take the line from the thread running the
 * part), then every part waited for. */
static inline int64_t fl_next_part(fl_part *parts_of, int64_t parts, int thread, int threads,
                                   int64_t p, int64_t *j)
{
    const int64_t own = (parts - thread + threads - 1) / threads;
    while (*j < own) {
        const int64_t k = thread + (*j)++ * threads;
        if (fl_claim_part(&parts_of[k], p))
            return k;
    }
    while (*j < own + parts) {
        fl_part *part = &parts_of[(*j)++ - own];
        if (__atomic_load_n(&part->claimed, __ATOMIC_RELAXED) == p && fl_claim_part(part, p))
            return part - parts_of;
    }
    for (int64_t k = 0; k < parts; k++) {
        /* its thread runs it, and may be waiting for this processor */
        for (unsigned spins = 1; __atomic_load_n(&parts_of[k].done, __ATOMIC_ACQUIRE) <= p;
             spins++) {
            FL_CPU_RELAX();
            if (spins % 1024 == 0)
                FL_YIELD();
        }
    }
    return -1;
}

/* The task of `part` in phase p has finished: what it wrote is seen by every thread that then
 * finds it done (fl_next_part). */
static inline void fl_finish_part(fl_part *part, int64_t p)
{
    __atomic_store_n(&part->done, p + 1, __ATOMIC_RELEASE);
}
#endif

/* The block of A a by-columns product (kernels_impl.h, gemm_tn) copies at a time: rows, and
 * columns (a multiple of 16, so of every build's panel width). */
#define GEMM_TN_ROWS 512
#define GEMM_TN_COLS 32

/* A forward's steps add the input term x_t w_ih^T in the tiles of the recurrent one when every
 * part of the batch has at least FUSE_ROWS rows a step. With fewer, each step would read all of
 * w_ih for a row or two, bound by memory; one product over every step's rows before the loop
 * reads it once. */
#define FUSE_ROWS 4

/* Packed panels are VLEN = 16, 8, 4 or 2 entries wide (by the build and the floating type);
 * every size below rounds a panel's columns up to 16, which holds any of them. */
#define PADDED(n) (((n) + 15) / 16 * 16)

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

/* What the shared code needs to know of a cell, one row per enum fl_cell. A cell is this row and
 * its step functions behind cell_forward and cell_backward (kernels_impl.h); the time loops,
 * products and scratch layouts read the rest from here. Widths in units of H. */
typedef struct {
    int64_t gates;       /* G: blocks of H in a row of pre-activations */
    int cell_state;      /* carries c: FL_CS, and backward FL_DC */
    int keeps_gates;     /* its activations go to FL_GATES (inference: to scratch); the Elman
                          * cell's pre-activation becomes h in place, in hs */
    int apart;           /* the recurrent product h_{t-1} w_hh^T goes to scratch (G H a row),
                          * apart from the input side rather than summed onto it: the GRU's r
                          * scales it */
    int b_hh_inside;     /* b_hh is not part of the input side (the GRU's is inside r) */
    int layer_norm;      /* normalises rows (the LN LSTM): the product of the input before the
                          * biases are added to it, in passes of its own (not in the recurrent
                          * product's tiles); and a forward never splits a step by units, as
                          * the statistics of a row need all of its units */
    int dh_direct;       /* h_t depends on h_{t-1} also outside w_hh (the GRU's z h_{t-1}): its
                          * backward leaves that part of dL/dh_{t-1} in dh, for the products of
                          * w_hh to add to */
    int64_t hn;          /* width of its rows of FL_HN (the GRU's W_hn h_{t-1} + b_hn) */
    int64_t normed, rstd; /* training: width of its rows of FL_NORMED, entries of FL_RSTD's (the
                          * LN LSTM's xhat_ih, xhat_hh, xhat_c and their 1 / sqrt(var + eps)) */
    int64_t d_rec;       /* backward: the last d_rec H rows of w_hh have their own gradient
                          * columns, d_rec (N, d_rec H) in scratch (the GRU's da_hn); the first
                          * G - d_rec take da's */
    int64_t d_step;      /* backward: scratch of one step, (B, d_step H) (the LN LSTM's dy_c) */
    struct {
        int slot;
        int64_t at, width;
    } sums[4];           /* backward: the sums each part keeps past db_ih's G H, in order, and
                          * their totals' place: `width` H entries from entry `at` H of slot's
                          * array (a slot the call left NULL, without biases, is skipped); the
                          * first of width 0 ends them */
} cell_facts;

static const cell_facts fl_cells[] = {
    [FL_RNN_TANH] = {.gates = 1},
    [FL_RNN_RELU] = {.gates = 1},
    [FL_LSTM] = {.gates = 4, .cell_state = 1, .keeps_gates = 1},
    /* db_hn: db_hh's n part; its r and z parts are db_ih's */
    [FL_GRU] = {.gates = 3, .keeps_gates = 1, .apart = 1, .b_hh_inside = 1, .dh_direct = 1,
                .hn = 1, .d_rec = 1, .sums = {{FL_DB_HH, 2, 1}}},
    /* d_rec: dL/d(h_{t-1} w_hh^T) through LN is none of da's columns */
    [FL_LSTM_LN] = {.gates = 4, .cell_state = 1, .keeps_gates = 1, .apart = 1, .layer_norm = 1,
                    .normed = 9, .rstd = 3, .d_rec = 4, .d_step = 1,
                    .sums = {{FL_DG_IH, 0, 4}, {FL_DG_HH, 0, 4}, {FL_DG_C, 0, 1},
                             {FL_DB_C, 0, 1}}},
};

static inline const cell_facts *facts_of(int cell)
{
    return &fl_cells[cell];
}

static inline int64_t gates_of(int cell)
{
    return fl_cells[cell].gates;
}

static inline int64_t batch_size(const fl_layer *l, int64_t t)
{
    return l->batch_sizes ? l->batch_sizes[t] : l->B;
}

/* The steps of a call that have rows: the first ones, as a batch's sizes never grow. */
static inline int64_t steps_with_rows(const fl_layer *l)
{
    int64_t steps = 0;
    while (steps < l->T && batch_size(l, steps) > 0)
        steps++;
    return steps;
}

/* Elements of the packed weights of a call on N rows (kernels_impl.h, "the packed recurrent
 * product"): a forward packs w_hh^T and w_hr^T, and w_ih^T and the sum of the biases (but for a
 * cell that normalises rows, which adds them after) when its steps add the input term too
 * (FUSE_ROWS; always in a stacked layer, whose input is made step by step, and in a stream's
 * step), a backward packs w_hh and w_hr, and w_ih for dx = da w_ih when it forms dx and the batch
 * has at least G H rows (with fewer, at B = 1, H = 64 for one, the packed dx was no faster than
 * OpenBLAS's, whose small-matrix kernels copy nothing) or its steps do (stacked). A layer with
 * fed-back inputs packs w_fb too, one block of P columns per source, as w_ih (fb). All 0 when the
 * call runs its products through the BLAS: in a build that does not pack, or for a single step,
 * which would not pay back reading the weights once more to pack them, but for a stream's
 * (fl_layer.stream), whose steps share one packing. A backward packs the rows of w_hh whose
 * gradient the cell keeps apart (cell_facts.d_rec: the GRU's n rows) apart from the others, in
 * rec, 0 for the other cells; hr is 0 unless the layer projects. */
typedef struct {
    int64_t ih, bias, hh, rec, hr, fb;
} packed_layout;

static inline packed_layout packed_sizes(const fl_build *b, const fl_layer *l, int backward,
                                         int64_t N)
{
    packed_layout size = {0, 0, 0, 0, 0, 0};
    if (!b->vector_bytes || (l->T < 2 && !l->stream))
        return size;
    const cell_facts *cf = facts_of(l->cell);
    const int64_t GH = cf->gates * l->H, H = l->H, P = l->P;
    if (backward) {
        const int dx = l->stacked || (l->input_grad && N >= GH);
        size.ih = dx ? GH * PADDED(l->I) : 0;
        size.hh = (cf->gates - cf->d_rec) * H * PADDED(P);
        size.rec = cf->d_rec * H * PADDED(P);
        size.hr = l->projection ? P * PADDED(H) : 0;
        size.fb = l->F / P * GH * PADDED(P);
    } else {
        const int fuse = l->stacked || l->stream || l->B >= FUSE_ROWS * fl_num_parts();
        size.ih = fuse ? l->I * PADDED(GH) : 0;
        size.bias = fuse && !cf->layer_norm ? PADDED(GH) : 0;
        size.hh = P * PADDED(GH);
        size.hr = l->projection ? H * PADDED(P) : 0;
        size.fb = l->F * PADDED(GH);
    }
    return size;
}

/* Whether a call splits its steps by units rather than by sequences (kernels_impl.h, forward_split
 * and backward_split): a batch of fewer sequences than parts, which would leave parts without rows,
 * on packed weights (of at least SPLIT_WEIGHTS entries: smaller ones cost less a step than the
 * threads' meeting) whose gate blocks start at panels of float vectors (the same test for float64,
 * whose panels are narrower); not for a projection, whose product needs every unit, nor for a cell
 * that normalises rows (the same), nor for a layer with fed-back inputs or above the first of a
 * stack. A stack's loop never splits, not even its first layer, which this test would let split:
 * stack_forward and stack_backward never ask it. Each part then takes whole
 * panels of every gate block, its units, for every row: the weights of a step are read once, a
 * share by each thread, from its own cache. A stream's step (fl_layer.stream) reads w_ih too and
 * starts its threads anew, so it splits from SPLIT_STREAM_WEIGHTS entries of both: below that, one
 * core reads them from its own cache in about the time the threads take to meet. A property of the
 * call, never of the threads it runs on. */
#define SPLIT_WEIGHTS 16384
#define SPLIT_STREAM_WEIGHTS 262144

static inline int splits_units(const fl_build *b, const fl_layer *l)
{
    const int64_t vlen = b->vector_bytes / (int64_t)sizeof(float);
    const int64_t GH = gates_of(l->cell) * l->H;
    const int big = l->stream ? GH * (l->I + l->P) >= SPLIT_STREAM_WEIGHTS
                              : l->T >= 2 && GH * l->P >= SPLIT_WEIGHTS;
    return vlen && big && l->B < fl_num_parts() && !l->projection && !l->stacked && l->F == 0 &&
           !facts_of(l->cell)->layer_norm && l->H % vlen == 0;
}

/* The sums each part of a backward call keeps (kernels_impl.h, fl_backward): the bias
 * gradient's (G H), the cell's own (cell_facts.sums: the n part of the GRU's second bias
 * gradient) and the peephole gradients' (3 H), in that order. */
static inline int64_t sums_width(const fl_layer *l)
{
    const cell_facts *cf = facts_of(l->cell);
    int64_t width = cf->gates + (l->peephole ? 3 : 0);
    for (int i = 0; i < 4 && cf->sums[i].width; i++)
        width += cf->sums[i].width;
    return width * l->H;
}

/* The copies each part of a backward call makes for gemm_tn (kernels_impl.h), in a build that
 * forms the float64 weight gradients on it: a block of GEMM_TN_ROWS rows of W packed (as wide
 * as the widest gradient: I, P, H or F columns), and GEMM_TN_COLS columns of the same rows of
 * A. 0 otherwise: the BLAS forms them. */
static inline int64_t gemm_tn_size(const fl_build *b, const fl_layer *l, int f64)
{
    if (!b->gemm_tn_f64 || !f64)
        return 0;
    int64_t widest = l->I;
    const int64_t widths[3] = {l->P, l->H, l->F};
    for (int i = 0; i < 3; i++)
        widest = widths[i] > widest ? widths[i] : widest;
    return GEMM_TN_ROWS * (GEMM_TN_COLS + PADDED(widest));
}

/* Rows of the pre-activations and activations (and the GRU's hn) an inference forward keeps in
 * FL_WORK: one step's, B, when its steps add their own input projection (a packing call), else
 * all N, which the projection before the loop fills. */
static inline int64_t inference_rows(const fl_build *b, const fl_layer *l)
{
    return packed_sizes(b, l, 0, 0).ih ? l->B : fl_packed_rows(l);
}

#endif /* FASTLSTM_KERNELS_COMMON_H */
