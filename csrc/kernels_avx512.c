/* The AVX-512 build of the time loops (AVX-512F CPUs: Skylake-SP and later Xeons, Ice Lake,
 * Zen 4 and Zen 5), compiled with -mavx512f -mavx2 -mfma (setup.py). 32 zmm registers of 16
 * floats or 8 doubles: tiles of 8 rows by 3 panels keep 24 accumulators, 3 vectors of weights
 * and a broadcast. A vector is a whole cache line, so a one-row tile reads whole lines of its
 * panels already: its weights stay panel after panel (ISA_ROW_GROUP 1), which grouping did not
 * make faster. */
#include "platform.h"
#if FL_X86_BUILDS
#include <immintrin.h>

#define ISA_BUILD fl_build_avx512
#define ISA_VECTOR_BYTES 64
#define ISA_FUSED 1
#define ISA_GEMM_TN_F64 1
#define ISA_TILE_ROWS 8
#define ISA_TILE_PANELS 3
#define ISA_TILE_REST(X) X(1, 8) X(2, 8) X(3, 6) X(4, 5) X(5, 4) X(6, 4) X(7, 3)
#define ISA_ROW_GROUP 1
#define ISA_SET1_F32 _mm512_set1_ps
#define ISA_FMA_F32 _mm512_fmadd_ps
#define ISA_SET1_F64 _mm512_set1_pd
#define ISA_FMA_F64 _mm512_fmadd_pd
#include "kernels_isa.h"
#endif
