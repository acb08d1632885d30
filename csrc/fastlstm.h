/* fastlstm C kernels: Elman RNN and LSTM, forward and backpropagation through time.
 *
 * Notation (the same as fastlstm/_functional.py):
 *   T timesteps, B batch rows, I input features, H hidden units, G gates (RNN 1, LSTM 4: i f g o)
 *   x     (T, B, I)        input
 *   hs    (T + 1, B, H)    hs[0] = h0, hs[t + 1] = h after step t (the layer output is hs[1:])
 *   cs    (T + 1, B, H)    LSTM cell states, cs[0] = c0
 *   gates (T, B, G * H)    LSTM gate activations i, f, g, o after their nonlinearities
 *   w_ih  (G * H, I), w_hh (G * H, H): torch.nn's layout; bias (G * H) is b_ih + b_hh
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

#define FL_DECLARE_KERNELS(REAL, SFX)                                                          \
    /* hs[0] IN; hs[1:] OUT */                                                                 \
    void fl_rnn_forward_##SFX(int64_t T, int64_t B, int64_t I, int64_t H, int relu,            \
                              const REAL *x, const REAL *w_ih, const REAL *w_hh,               \
                              const REAL *bias, REAL *hs, int n_threads);                      \
    /* dh IN dL/dh_n, OUT dL/dh0; da (T, B, H) scratch; dx, dw_ih, dw_hh, db OUT */            \
    void fl_rnn_backward_##SFX(int64_t T, int64_t B, int64_t I, int64_t H, int relu,           \
                               const REAL *x, const REAL *w_ih, const REAL *w_hh,              \
                               const REAL *hs, const REAL *dy, REAL *dh, REAL *da,             \
                               REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads);   \
    /* hs[0], cs[0] IN; hs[1:], cs[1:], gates OUT */                                           \
    void fl_lstm_forward_##SFX(int64_t T, int64_t B, int64_t I, int64_t H,                     \
                               const REAL *x, const REAL *w_ih, const REAL *w_hh,              \
                               const REAL *bias, REAL *hs, REAL *cs, REAL *gates,              \
                               int n_threads);                                                 \
    /* dh, dc IN dL/dh_n, dL/dc_n, OUT dL/dh0, dL/dc0; da (T, B, 4H) scratch; rest OUT */      \
    void fl_lstm_backward_##SFX(int64_t T, int64_t B, int64_t I, int64_t H,                    \
                                const REAL *x, const REAL *w_ih, const REAL *w_hh,             \
                                const REAL *hs, const REAL *cs, const REAL *gates,             \
                                const REAL *dy, REAL *dh, REAL *dc, REAL *da,                  \
                                REAL *dx, REAL *dw_ih, REAL *dw_hh, REAL *db, int n_threads);

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
