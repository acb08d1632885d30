/* The part of the CBLAS interface the kernels use (csrc/platform.h), for the harness: built
 * without OpenBLAS (a cross-compiled aarch64 harness under qemu, say), it links blas_shim.c's
 * plain loops instead. */
#ifndef FASTLSTM_HARNESS_CBLAS_H
#define FASTLSTM_HARNESS_CBLAS_H

typedef int blasint;
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

#define CBLAS_GEMM(T, name)                                                                    \
    void name(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,        \
              blasint M, blasint N, blasint K, T alpha, const T *A, blasint lda, const T *B,   \
              blasint ldb, T beta, T *C, blasint ldc);
#define CBLAS_GEMV(T, name)                                                                    \
    void name(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, blasint M, blasint N, T alpha,  \
              const T *A, blasint lda, const T *x, blasint incx, T beta, T *y, blasint incy);
CBLAS_GEMM(float, scipy_cblas_sgemm)
CBLAS_GEMM(double, scipy_cblas_dgemm)
CBLAS_GEMV(float, scipy_cblas_sgemv)
CBLAS_GEMV(double, scipy_cblas_dgemv)
#undef CBLAS_GEMM
#undef CBLAS_GEMV

void scipy_openblas_set_num_threads(int n);
char *scipy_openblas_get_corename(void);
char *scipy_openblas_get_config(void);

#endif
