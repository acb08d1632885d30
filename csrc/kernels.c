/* Instantiates csrc/kernels_impl.h once for float32 and once for float64, and holds the
 * helpers that do not depend on the floating type. */
#include "fastlstm.h"
#include "platform.h"

#include <math.h>
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

int fl_num_parts(void)
{
    int n = FL_OMP_NUM_PROCS();
    return n > 0 ? n : 1;
}

void fl_blas_init(void) { FL_BLAS_SET_NUM_THREADS(1); }
const char *fl_blas_corename(void) { return FL_BLAS_CORENAME(); }
const char *fl_blas_config(void) { return FL_BLAS_CONFIG(); }

/* Part k of n items cut into `parts` contiguous, nearly equal ranges: [*lo, *hi). */
static inline void part_range(int64_t n, int64_t parts, int64_t k, int64_t *lo, int64_t *hi)
{
    int64_t base = n / parts, extra = n % parts;
    *lo = k * base + (k < extra ? k : extra);
    *hi = *lo + base + (k < extra ? 1 : 0);
}

/* The cells the shared time loops in kernels_impl.h run. */
enum { CELL_TANH, CELL_RELU, CELL_LSTM };

#define REAL float
#define SFX(name) name##_f32
#define GEMM FL_SGEMM
#define EXP expf
#define TANH tanhf
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef TANH

#define REAL double
#define SFX(name) name##_f64
#define GEMM FL_DGEMM
#define EXP exp
#define TANH tanh
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef TANH
