/* The AVX2 + FMA build of the time loops (x86-64 CPUs since Haswell and Zen), compiled with
 * -mavx2 -mfma (setup.py). 16 ymm registers of 8 floats or 4 doubles: tiles of 4 rows by 3
 * panels keep 12 accumulators, 3 vectors of weights and a broadcast. The float64 weight
 * gradients stay with the BLAS: OpenBLAS's AVX2 dgemm formed them faster than gemm_tn's tiles
 * of this shape, while its per-step products lost to the packed ones. Steps of one row read
 * their weights in groups of the one-row tile's 8 panels (ISA_ROW_GROUP): half a cache line of
 * each of 8 panels a k was slower, once the weights outgrow the first-level cache, than the 4
 * whole lines of a group's row. */
#include "platform.h"
#if FL_X86_BUILDS
#include <immintrin.h>

#define ISA_BUILD fl_build_avx2
#define ISA_VECTOR_BYTES 32
#define ISA_FUSED 1
#define ISA_GEMM_TN_F64 0
#define ISA_TILE_ROWS 4
#define ISA_TILE_PANELS 3
#define ISA_TILE_REST(X) X(1, 8) X(2, 4) X(3, 3)
#define ISA_ROW_GROUP 8
#define ISA_SET1_F32 _mm256_set1_ps
#define ISA_FMA_F32 _mm256_fmadd_ps
#define ISA_SET1_F64 _mm256_set1_pd
#define ISA_FMA_F64 _mm256_fmadd_pd
#include "kernels_isa.h"
#endif
