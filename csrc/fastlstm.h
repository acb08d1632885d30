/* fastlstm C kernels: Elman RNN, LSTM (with projection and peepholes) and GRU, forward and
 * backpropagation through time.
 *
 * Notation (the same as fastlstm/_functional.py):
 *   T timesteps, B batch rows, I input features, H hidden units (the size of c and of each gate),
 *   P the size of h: the LSTM's proj_size when it projects, else H,
 *   G gates: RNN 1, LSTM 4 (i f g o), GRU 3 (r z n)
 *   x     (T, B, I)        input
 *   hs    (T + 1, B, P)    hs[0] = h0, hs[t + 1] = h after step t (the layer output is hs[1:])
 *   cs    (T + 1, B, H)    LSTM cell states, cs[0] = c0
 *   gates (T, B, G * H)    LSTM and GRU gate activations, after their nonlinearities
 *   hn    (T, B, H)        GRU: W_hn h_{t-1} + b_hn, the recurrent part of n that r scales
 *   w_ih (G * H, I), w_hh (G * H, P), b_ih and b_hh (G * H), w_hr (P, H): torch.nn's layout;
 *   w_peephole (3 * H): the LSTM peephole weights of gates i, f, o
 * Every array is C-contiguous. Python checks shapes and allocates; the kernels only write into
 * the buffers they are given and keep no state between calls.
 *
 * Threads: the batch is cut into fl_num_parts() contiguous row blocks, a number that depends on
 * the machine only, never on n_threads; each block runs the whole time loop on one thread, and
 * every reduction over rows runs in a fixed order. Results are therefore bitwise identical for
 * every n_threads.
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stdint.h>

enum fl_cell { FL_RNN_TANH, FL_RNN_RELU, FL_LSTM, FL_GRU };

/* One layer in one direction: which cell, its sizes and its options. */
typedef struct {
    int cell;               /* enum fl_cell */
    int64_t T, B, I, H, P;  /* P == H unless projection */
    int projection;         /* LSTM only: h = w_hr (o * tanh(c)) */
    int peephole;           /* LSTM only: the gates also see the cell state */
} fl_layer;

/* The arrays of a call, by slot: a kernel takes `REAL *slots[FL_N_SLOTS]`, reads the slots
 * marked IN and writes those marked OUT. A slot the call does not use may be NULL. */
enum fl_slot {
    /* the layer's weights, IN to forward and backward */
    FL_W_IH, FL_W_HH,
    FL_B_IH, FL_B_HH,       /* forward: zeros for a layer without biases */
    FL_W_HR,                /* projection */
    FL_W_PEEPHOLE,          /* peephole */
    /* forward: x IN; the rest IN to backward */
    FL_X,
    FL_HS,                  /* forward: hs[0] IN, hs[1:] OUT */
    FL_CS,                  /* LSTM; forward: cs[0] IN, cs[1:] OUT */
    FL_GATES,               /* LSTM and GRU; forward OUT */
    FL_HN,                  /* GRU; forward OUT */
    /* backward only */
    FL_DY,                  /* IN (T, B, P) */
    FL_DH,                  /* IN dL/dh_n, OUT dL/dh0 (B, P) */
    FL_DC,                  /* LSTM: IN dL/dc_n, OUT dL/dc0 (B, H) */
    FL_DX, FL_DW_IH, FL_DW_HH, FL_DW_HR, FL_DW_PEEPHOLE,   /* OUT */
    FL_DB_IH, FL_DB_HH,     /* OUT; NULL for a layer without biases */
    /* scratch of fl_work_size() elements, forward and backward */
    FL_WORK,
    FL_N_SLOTS
};

/* Elements of scratch (FL_WORK) a forward (backward = 0) or backward (1) call needs. */
int64_t fl_work_size(const fl_layer *layer, int backward);

#define FL_DECLARE_KERNELS(REAL, SFX)                                                          \
    void fl_forward_##SFX(const fl_layer *layer, REAL *const slots[], int n_threads);          \
    void fl_backward_##SFX(const fl_layer *layer, REAL *const slots[], int n_threads);

FL_DECLARE_KERNELS(float, f32)
FL_DECLARE_KERNELS(double, f64)

/* Run once before the kernels: makes the BLAS single-threaded (see platform.h). */
void fl_blas_init(void);

/* Build and machine facts for `python -m fastlstm info`. */
int fl_openmp_enabled(void);      /* 1 when built with OpenMP */
int fl_default_num_threads(void); /* omp_get_max_threads(): honours OMP_NUM_THREADS */
int fl_num_parts(void);           /* row blocks a batch is cut into: the processors available */
const char *fl_blas_corename(void);
const char *fl_blas_config(void);

#endif /* FASTLSTM_H */
