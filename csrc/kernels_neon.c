/* The NEON (Advanced SIMD) build of the time loops for aarch64, whose baseline it is: no flags
 * needed (setup.py). 32 registers of 4 floats or 2 doubles: tiles of 8 rows by 3 panels keep 24
 * accumulators, 3 vectors of weights and a broadcast. The float64 weight gradients stay with
 * the BLAS: gemm_tn's tiles must fit in a panel of 2 doubles. Steps of one row keep their
 * weights panel after panel (ISA_ROW_GROUP 1): the grouping that helps the AVX2 build's
 * half-line vectors is untried on an ARM core. */
#include "platform.h"
#if FL_NEON_BUILD
#include <arm_neon.h>

#define ISA_BUILD fl_build_neon
#define ISA_VECTOR_BYTES 16
#define ISA_FUSED 1
#define ISA_GEMM_TN_F64 0
#define ISA_TILE_ROWS 8
#define ISA_TILE_PANELS 3
#define ISA_TILE_REST(X) X(1, 8) X(2, 8) X(3, 6) X(4, 5) X(5, 4) X(6, 4) X(7, 3)
#define ISA_ROW_GROUP 1
#define ISA_SET1_F32 vdupq_n_f32
#define ISA_FMA_F32(a, b, c) vfmaq_f32((c), (a), (b))
#define ISA_SET1_F64 vdupq_n_f64
#define ISA_FMA_F64(a, b, c) vfmaq_f64((c), (a), (b))
#include "kernels_isa.h"
#endif
