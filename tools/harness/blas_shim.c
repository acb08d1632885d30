/* Row-major GEMM and GEMV in plain loops, all the harness's kernels ask of a BLAS (cblas.h). */
#include "cblas.h"

#define GEMM(T, name)                                                                          \
    void name(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,        \
              blasint M, blasint N, blasint K, T alpha, const T *A, blasint lda, const T *B,   \
              blasint ldb, T beta, T *C, blasint ldc)                                          \
    {                                                                                          \
        (void)order; /* the kernels are row-major throughout */                               \
        for (blasint m = 0; m < M; m++)                                                        \
            for (blasint n = 0; n < N; n++) {                                                  \
                T sum = 0;                                                                     \
                for (blasint k = 0; k < K; k++)                                                \
                    sum += (ta == CblasTrans ? A[k * lda + m] : A[m * lda + k])                \
                           * (tb == CblasTrans ? B[n * ldb + k] : B[k * ldb + n]);             \
                C[m * ldc + n] = alpha * sum + (beta == 0 ? 0 : beta * C[m * ldc + n]);        \
            }                                                                                  \
    }
#define GEMV(T, name)                                                                          \
    void name(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, blasint M, blasint N, T alpha,  \
              const T *A, blasint lda, const T *x, blasint incx, T beta, T *y, blasint incy)   \
    {                                                                                          \
        (void)order;                                                                           \
        const blasint rows = ta == CblasTrans ? N : M, cols = ta == CblasTrans ? M : N;        \
        for (blasint i = 0; i < rows; i++) {                                                   \
            T sum = 0;                                                                         \
            for (blasint j = 0; j < cols; j++)                                                 \
                sum += (ta == CblasTrans ? A[j * lda + i] : A[i * lda + j]) * x[j * incx];     \
            y[i * incy] = alpha * sum + (beta == 0 ? 0 : beta * y[i * incy]);                  \
        }                                                                                      \
    }
GEMM(float, scipy_cblas_sgemm)
GEMM(double, scipy_cblas_dgemm)
GEMV(float, scipy_cblas_sgemv)
GEMV(double, scipy_cblas_dgemv)

void scipy_openblas_set_num_threads(int n) { (void)n; }
char *scipy_openblas_get_corename(void) { return "harness loops"; }
char *scipy_openblas_get_config(void) { return "harness loops (tools/harness/blas_shim.c)"; }
