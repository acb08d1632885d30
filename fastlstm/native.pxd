# Declarations of the C kernels in csrc/fastlstm.h (see that header for the notation, the slots
# and what each one holds). Every kernel runs without the GIL.
from libc.stdint cimport int64_t

cdef extern from "fastlstm.h" nogil:
    enum fl_cell:
        FL_RNN_TANH, FL_RNN_RELU, FL_LSTM, FL_GRU, FL_LSTM_LN

    enum fl_isa:
        FL_ISA_GENERIC, FL_ISA_AVX2, FL_ISA_AVX512, FL_ISA_NEON, FL_N_ISAS

    ctypedef struct fl_layer:
        int cell
        int64_t T, B, I, H, P
        int projection
        int peephole
        const int64_t *batch_sizes
        int inference
        int input_grad
        int64_t F
        int stacked
        int isa
        int stream
        int prepacked

    enum fl_slot:
        FL_W_IH, FL_W_HH, FL_B_IH, FL_B_HH, FL_W_HR, FL_W_PEEPHOLE, FL_W_FB, FL_MASK,
        FL_X, FL_HS, FL_CS, FL_GATES, FL_HN,
        FL_DY, FL_DH, FL_DC, FL_DX, FL_DW_IH, FL_DW_HH, FL_DW_HR, FL_DW_PEEPHOLE, FL_DW_FB,
        FL_DB_IH, FL_DB_HH, FL_WORK, FL_N_SLOTS,
        # the layer-normalised LSTM's
        FL_G_IH, FL_G_HH, FL_G_C, FL_B_C, FL_NORMED, FL_RSTD,
        FL_DG_IH, FL_DG_HH, FL_DG_C, FL_DB_C

    int64_t fl_work_size(const fl_layer *layer, int backward, int f64)
    int64_t fl_packed_rows(const fl_layer *layer)
    int fl_call_threads(const fl_layer *layer, int n_threads)
    void fl_forward_f32(const fl_layer *layer, float *const slots[], int n_threads)
    void fl_forward_f64(const fl_layer *layer, double *const slots[], int n_threads)
    void fl_backward_f32(const fl_layer *layer, float *const slots[], int n_threads)
    void fl_backward_f64(const fl_layer *layer, double *const slots[], int n_threads)

    ctypedef struct fl_stack:
        int64_t L
        const fl_layer *layers
        int64_t n_feedback
        const int64_t *feedback

    int fl_stack_call_threads(const fl_stack *stack, int n_threads)
    void fl_stack_forward_f32(const fl_stack *stack, float *const slots[], int n_threads)
    void fl_stack_forward_f64(const fl_stack *stack, double *const slots[], int n_threads)
    void fl_stack_backward_f32(const fl_stack *stack, float *const slots[], int n_threads)
    void fl_stack_backward_f64(const fl_stack *stack, double *const slots[], int n_threads)
    void fl_matmul_t_f32(int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                         float *C, int n_threads)
    void fl_matmul_t_f64(int64_t M, int64_t N, int64_t K, const double *A, const double *B,
                         double *C, int n_threads)

    void fl_init()
    int fl_openmp_enabled()
    int fl_default_num_threads()
    int fl_num_parts()
    int fl_isa_available(int isa)
    int fl_isa_best()
    const char *fl_isa_name(int isa)
    const char *fl_blas_corename()
    const char *fl_blas_config()
