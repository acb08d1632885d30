/* fastlstm C kernels: Elman RNN, LSTM (with projection and peepholes), GRU and layer-normalised
 * LSTM, forward and backpropagation through time.
 *
 * Notation (the same as fastlstm/_functional.py):
 *   T timesteps, B sequences (batch rows), I input features, H hidden units (the size of c and
 *   of each gate), P the size of h: the LSTM's proj_size when it projects, else H,
 *   G gates: RNN 1, LSTM 4 (i f g o), GRU 3 (r z n), LN LSTM 4
 *
 * Packed batches. Step t runs the first n_t = batch_sizes[t] sequences (n_t never grows with t:
 * the caller sorts the sequences by length, longest first); without batch_sizes every step runs
 * all B. The arrays of the steps hold the rows of step 0, then those of step 1, and so on:
 * N = n_0 + ... + n_{T-1} rows in all (T * B without batch_sizes, and then (N, ...) is the same
 * memory as (T, B, ...)). Sequences b >= n_0 have length 0: no step touches them.
 *   x     (N, I)           input
 *   hs    (B + N, P)       hs[:B] = h0, then h after each step, row for row like x
 *   cs    (B + N, H)       LSTM cell states, cs[:B] = c0 (inference: (B, H), see FL_CS)
 *   gates (N, G * H)       LSTM and GRU gate activations, after their nonlinearities
 *   hn    (N, H)           GRU: W_hn h_{t-1} + b_hn, the recurrent part of n that r scales
 *   normed (N, 9H)         LN LSTM: per row xhat_ih (4H) | xhat_hh (4H) | xhat_c (H), the
 *                          normalised x_t w_ih^T, h_{t-1} w_hh^T and c_t
 *   rstd  (N, 3)           LN LSTM: per row 1 / sqrt(var + 1e-5) of those three, in that order
 *   w_ih (G * H, I), w_hh (G * H, P), b_ih and b_hh (G * H), w_hr (P, H): torch.nn's layout;
 *   w_peephole (3 * H): the LSTM peephole weights of gates i, f, o
 *   w_fb (G * H, F): a stack's feedback weights (fl_stack), F the width of a layer's fed-back
 *   inputs
 *   g_ih, g_hh (4 * H), g_c, b_c (H): the LN LSTM's gains and c's bias
 * The LN LSTM (FL_LSTM_LN; /work/notes/lnlstm-spec.md): LN(v) = (v - mean v) / sqrt(var v +
 * 1e-5) over a row, a = LN(x w_ih^T) g_ih + LN(h_{t-1} w_hh^T) g_hh + b_ih + b_hh, the LSTM's
 * gates and c_t, h_t = o tanh(LN(c_t) g_c + b_c). No projection, no peepholes, no feedback.
 * Every array is C-contiguous. Python checks shapes and allocates; the kernels only write into
 * the buffers they are given and keep no state between calls.
 *
 * Threads: the sequences are dealt round-robin to fl_num_parts() parts (sequence b to part
 * b % parts), a number that depends on the machine only, never on n_threads; each part runs the
 * whole time loop on one thread, and every reduction over rows runs in a fixed order. Results
 * are therefore bitwise identical for every n_threads. Dealt round-robin, the sequences of a
 * length-sorted batch share the work evenly. A call of fewer sequences than parts may deal the
 * units of each step to the parts instead (kernels_common.h, splits_units), a choice made
 * by the call's sizes alone; a part's share of a step then runs on its own thread, or on another
 * if that one is late, and computes the same either way. n_threads is an upper bound
 * (fl_call_threads): a call too small to share runs on one thread.
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stdint.h>

enum fl_cell { FL_RNN_TANH, FL_RNN_RELU, FL_LSTM, FL_GRU, FL_LSTM_LN };

/* The builds of the time loops: one kernel source (kernels_isa.h) compiled once per instruction
 * set, each in its own translation unit (kernels_<isa>.c) with its own target flags. The generic
 * build runs on any CPU; among the others, the higher the better. */
enum fl_isa { FL_ISA_GENERIC, FL_ISA_AVX2, FL_ISA_AVX512, FL_ISA_NEON, FL_N_ISAS };

/* One layer in one direction: which cell, its sizes and its options. */
typedef struct {
    int cell;               /* enum fl_cell */
    int64_t T, B, I, H, P;  /* P == H unless projection */
    int projection;         /* LSTM only: h = w_hr (o * tanh(c)) */
    int peephole;           /* LSTM only: the gates also see the cell state */
    const int64_t *batch_sizes; /* T non-increasing counts <= B, or NULL: every step runs B */
    int inference;          /* forward only: keep nothing for backward; FL_GATES and FL_HN are
                             * NULL, the steps' activations live in FL_WORK, and FL_CS holds
                             * the latest cell states alone */
    int input_grad;         /* backward only: form dx (FL_DX); without it FL_DX may be NULL */
    int64_t F;              /* the width of the fed-back inputs (fl_stack); 0 for none */
    int stacked;            /* a layer of a stack above its first: its input x_t is the output
                             * of the layer below, made during the time loop, so each step forms
                             * its own input product (and, backward, its own dx) */
    int isa;                /* enum fl_isa: the build that runs the call, one fl_isa_available()
                             * says this CPU can run; fl_work_size() depends on it */
    int stream;             /* forward only, T = 1: a step of a stream, whose weights and
                             * FL_WORK stay the same from step to step (the Stepper of
                             * fastlstm.native): its weights are packed into FL_WORK as a long
                             * call packs them, input side too, once for all its steps */
    int prepacked;          /* with stream: FL_WORK holds the packed weights already (every step
                             * after the first), so the call does not pack them again */
} fl_layer;

/* The arrays of a call, by slot: a kernel takes `REAL *slots[FL_N_SLOTS]`, reads the slots
 * marked IN and writes those marked OUT. A slot the call does not use may be NULL. */
enum fl_slot {
    /* the layer's weights, IN to forward and backward */
    FL_W_IH, FL_W_HH,
    FL_B_IH, FL_B_HH,       /* forward: zeros for a layer without biases */
    FL_W_HR,                /* projection */
    FL_W_PEEPHOLE,          /* peephole */
    FL_W_FB,                /* feedback: the weights of the fed-back inputs (G * H, F) */
    FL_G_IH, FL_G_HH,       /* LN LSTM: the gains of LN(x w_ih^T) and LN(h w_hh^T) (4 * H) */
    FL_G_C, FL_B_C,         /* LN LSTM: the gain and bias of LN(c) (H) */
    FL_MASK,                /* a stacked layer's dropout: NULL, or (N, I) to multiply its
                             * input by */
    /* forward: x IN; the rest IN to backward */
    FL_X,
    FL_HS,                  /* forward: hs[0] IN, hs[1:] OUT */
    FL_CS,                  /* LSTMs; forward: cs[0] IN, cs[1:] OUT; inference: (B, H), c0 IN,
                             * each sequence's row updated in place, c_n OUT */
    FL_GATES,               /* LSTMs and GRU; forward OUT (NULL for inference) */
    FL_HN,                  /* GRU; forward OUT (NULL for inference) */
    FL_NORMED, FL_RSTD,     /* LN LSTM; forward OUT (NULL for inference) */
    /* backward only */
    FL_DY,                  /* IN (N, P) */
    FL_DH,                  /* IN dL/dh_n (each sequence's last h), OUT dL/dh0 (B, P) */
    FL_DC,                  /* LSTMs: IN dL/dc_n, OUT dL/dc0 (B, H) */
    FL_DX, FL_DW_IH, FL_DW_HH, FL_DW_HR, FL_DW_PEEPHOLE, FL_DW_FB, /* OUT */
    FL_DB_IH, FL_DB_HH,     /* OUT; NULL for a layer without biases */
    FL_DG_IH, FL_DG_HH, FL_DG_C, FL_DB_C, /* LN LSTM: OUT */
    /* scratch of fl_work_size() elements, forward and backward */
    FL_WORK,
    FL_N_SLOTS
};

/* Elements of scratch (FL_WORK) a forward (backward = 0) or backward (1) call needs, of float
 * (f64 = 0) or double (1). */
int64_t fl_work_size(const fl_layer *layer, int backward, int f64);

/* N, the rows of x: the sum of batch_sizes, or T * B without them. */
int64_t fl_packed_rows(const fl_layer *layer);

/* The threads a forward or backward call of the layer runs on when given n_threads: fewer for a
 * small call or batch (see kernels.c). More than one means an OpenMP parallel region. */
int fl_call_threads(const fl_layer *layer, int n_threads);

#define FL_DECLARE_KERNELS(REAL, SFX)                                                          \
    void fl_forward_##SFX(const fl_layer *layer, REAL *const slots[], int n_threads);          \
    void fl_backward_##SFX(const fl_layer *layer, REAL *const slots[], int n_threads);         \
    void fl_matmul_t_##SFX(int64_t M, int64_t N, int64_t K, const REAL *A, const REAL *B,      \
                           REAL *C, int n_threads);

/* A stack of layers run as one, steps outermost: at step t every layer runs, bottom to top,
 * before any runs step t + 1. Layers need it when a later layer's output feeds an earlier one
 * (feedback): layer `target`'s input at step t is its normal input x_t followed by the outputs
 * h_{t-1} of its sources (the layers of the pairs naming it, in increasing order), each a P-wide
 * block of its F = sources * P fed-back inputs; h_{-1} is the source's initial state. The GRU
 * adds them to its input side, outside r's product.
 *
 * The layers share cell, T, B, batch_sizes, inference and isa; every layer but the first is
 * stacked, with I the P of the layer below. The LN LSTM runs in a stack without feedback only
 * (n_feedback = 0): a precondition, which the callers check. Slots: L arrays of FL_N_SLOTS,
 * layer k's at slots[k * FL_N_SLOTS], each as for one layer, and
 *   FL_W_FB (G * H, F)   IN, a target layer's; FL_DW_FB OUT
 *   FL_X                 a stacked layer's input: the hs rows of the layer below past its first
 *                        B (IN, forward writes them), or with FL_MASK its own (N, I) array,
 *                        which forward fills with the layer below's output times the mask
 *   FL_DY                below the top layer, an (N, P) array the backward loop writes
 *                        (dL/dy_t of the layer from the one above) before it reads it
 *   FL_DX                the first layer's alone (input_grad); the others' dx goes to FL_DY of
 *                        the layer below
 * Threads and results: as for one layer (part k runs its sequences through every layer). */
typedef struct {
    int64_t L;                  /* layers, bottom first */
    const fl_layer *layers;
    int64_t n_feedback;
    const int64_t *feedback;    /* n_feedback (source, target) pairs, target < source < L,
                                 * sorted by target, then source */
} fl_stack;

#define FL_DECLARE_STACK_KERNELS(REAL, SFX)                                                    \
    void fl_stack_forward_##SFX(const fl_stack *stack, REAL *const slots[], int n_threads);    \
    void fl_stack_backward_##SFX(const fl_stack *stack, REAL *const slots[], int n_threads);

FL_DECLARE_STACK_KERNELS(float, f32)
FL_DECLARE_STACK_KERNELS(double, f64)

/* The threads a stack's call runs on: the most any of its layers would if it dealt out its rows
 * (a stack's loop never splits a step by units). */
int fl_stack_call_threads(const fl_stack *stack, int n_threads);

/* fl_matmul_t: C (M, N) = A (M, K) B^T (B of shape (N, K)), through the BLAS the kernels use,
 * the rows of C dealt over the threads as the kernels deal theirs: the benchmarks measure the
 * machine's matrix peak with it. */

FL_DECLARE_KERNELS(float, f32)
FL_DECLARE_KERNELS(double, f64)

/* Run once before the kernels: makes the BLAS single-threaded (see platform.h) and fixes the
 * values the library keeps, facts about the machine: fl_num_parts() and the builds this CPU can
 * run. */
void fl_init(void);

/* The builds (enum fl_isa): whether one is compiled into this library and this CPU and its
 * operating system can run it; the best such; a build's name ("generic", "avx2", "avx512",
 * "neon"; NULL past the last). */
int fl_isa_available(int isa);
int fl_isa_best(void);
const char *fl_isa_name(int isa);

/* Build and machine facts for `python -m fastlstm info`. */
int fl_openmp_enabled(void);      /* 1 when built with OpenMP */
int fl_default_num_threads(void); /* omp_get_max_threads(): honours OMP_NUM_THREADS */
int fl_num_parts(void);           /* parts a batch is cut into: the processors available */
const char *fl_blas_corename(void);
const char *fl_blas_config(void);

#endif /* FASTLSTM_H */
