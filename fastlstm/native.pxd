# Declarations of the C kernels in csrc/fastlstm.h (see that header for the notation and for what
# each argument means). Every kernel runs without the GIL.
from libc.stdint cimport int64_t

cdef extern from "fastlstm.h" nogil:
    void fl_rnn_forward_f32(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                            const float *x, const float *w_ih, const float *w_hh,
                            const float *bias, float *hs, int n_threads)
    void fl_rnn_forward_f64(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                            const double *x, const double *w_ih, const double *w_hh,
                            const double *bias, double *hs, int n_threads)
    void fl_rnn_backward_f32(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                             const float *x, const float *w_ih, const float *w_hh,
                             const float *hs, const float *dy, float *dh, float *da,
                             float *dx, float *dw_ih, float *dw_hh, float *db, int n_threads)
    void fl_rnn_backward_f64(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                             const double *x, const double *w_ih, const double *w_hh,
                             const double *hs, const double *dy, double *dh, double *da,
                             double *dx, double *dw_ih, double *dw_hh, double *db, int n_threads)
    void fl_lstm_forward_f32(int64_t T, int64_t B, int64_t I, int64_t H,
                             const float *x, const float *w_ih, const float *w_hh,
                             const float *bias, float *hs, float *cs, float *gates, int n_threads)
    void fl_lstm_forward_f64(int64_t T, int64_t B, int64_t I, int64_t H,
                             const double *x, const double *w_ih, const double *w_hh,
                             const double *bias, double *hs, double *cs, double *gates,
                             int n_threads)
    void fl_lstm_backward_f32(int64_t T, int64_t B, int64_t I, int64_t H,
                              const float *x, const float *w_ih, const float *w_hh,
                              const float *hs, const float *cs, const float *gates,
                              const float *dy, float *dh, float *dc, float *da,
                              float *dx, float *dw_ih, float *dw_hh, float *db, int n_threads)
    void fl_lstm_backward_f64(int64_t T, int64_t B, int64_t I, int64_t H,
                              const double *x, const double *w_ih, const double *w_hh,
                              const double *hs, const double *cs, const double *gates,
                              const double *dy, double *dh, double *dc, double *da,
                              double *dx, double *dw_ih, double *dw_hh, double *db, int n_threads)
    void fl_blas_init()
    int fl_openmp_enabled()
    int fl_default_num_threads()
    int fl_num_parts()
    const char *fl_blas_corename()
    const char *fl_blas_config()
