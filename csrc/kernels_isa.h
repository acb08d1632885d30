/* The kernels of one build: a translation unit kernels_<isa>.c defines the build's parameters
 * and includes this file, which instantiates kernels_impl.h for float and for double and fills
 * the build's entry of the dispatch table (fl_build, kernels_common.h). Each such unit is
 * compiled with its own target flags (setup.py), and kernels.c calls into it only on a CPU that
 * can run it.
 *
 * The parameters:
 *   ISA_BUILD          the fl_build to define: fl_build_<isa>
 *   ISA_VECTOR_BYTES   the width of a vector register, or 0 for the generic build: no packed
 *                      product, the steps call the BLAS
 *   ISA_FUSED          1 when the target has an FMA instruction for the gate math (see madd)
 *   ISA_GEMM_TN_F64    1 when the float64 weight gradients run on gemm_tn's tiles
 *   ISA_TILE_ROWS, ISA_TILE_PANELS   the packed product's main tile, rows by panels (vectors)
 *   ISA_TILE_REST(X)   X(rows, panels) for each row count below ISA_TILE_ROWS: the tile of a
 *                      step's last rows
 *   ISA_ROW_GROUP      the panels per group of the weights of steps of one row (the packed
 *                      layout, kernels_impl.h): 1, panel after panel, or the one-row tile's
 *                      panels, for a core whose prefetchers follow one stretch of memory better
 *                      than that many streams
 *   ISA_SET1_F32, ISA_FMA_F32, ISA_SET1_F64, ISA_FMA_F64   the intrinsics of the packed
 *                      product: broadcast a scalar, and a fused multiply-add a * b + c
 * A tile of mr rows by np panels keeps mr np accumulators, np vectors of the weights and one
 * broadcast in registers: the shapes must fit the target's register file. */
#include "fastlstm.h"
#include "kernels_common.h"
#include "platform.h"

#include <math.h>
#include <string.h>

extern const fl_build ISA_BUILD;

#define REAL float
#define SFX(name) name##_f32
#define IS_F64 0
#define GEMM FL_SGEMM
#define GEMV FL_SGEMV
#define FMA fmaf
#define SQRT sqrtf
#define EXP_UINT uint32_t
#define EXP_MANT 23
#define EXP_BIAS 127u
#define EXP_ROUND 12582912.0f          /* 1.5 * 2^23 */
#define EXP_ROUND_BITS 0x4B400000u
#define EXP_MIN -87.0f                 /* 2^n normal: n >= -126 */
#define EXP_MAX 88.0f                  /* n <= 127 */
#define EXP_LN2_HI 0.693359375f        /* ln 2 = HI + LO, HI with few bits: n * HI is exact */
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_DEGREE 7
#define VEC_BROADCAST ISA_SET1_F32
#define VEC_FMA ISA_FMA_F32
#include "kernels_impl.h"

#define REAL double
#define SFX(name) name##_f64
#define IS_F64 1
#define GEMM FL_DGEMM
#define GEMV FL_DGEMV
#define FMA fma
#define SQRT sqrt
#define EXP_UINT uint64_t
#define EXP_MANT 52
#define EXP_BIAS 1023u
#define EXP_ROUND 6755399441055744.0   /* 1.5 * 2^52 */
#define EXP_ROUND_BITS 0x4338000000000000u
#define EXP_MIN -708.0                 /* n >= -1022 */
#define EXP_MAX 709.0                  /* n <= 1023 */
#define EXP_LN2_HI 0.693145751953125   /* ln 2 = HI + LO, HI with few bits: n * HI is exact */
#define EXP_LN2_LO 1.42860682030941723212e-6
#define EXP_DEGREE 13
#define VEC_BROADCAST ISA_SET1_F64
#define VEC_FMA ISA_FMA_F64
#include "kernels_impl.h"

#if ISA_VECTOR_BYTES
/* A tile reads within one group of the panels (kernels_impl.h, tile): a one-row tile's panels
 * make the group, and the narrower tiles of a row's last panels fit in the last group. */
#define ONE_ROW_PANELS(rows, panels) ((rows) == 1 ? (panels) : 0) +
_Static_assert(ISA_ROW_GROUP == 1 || ISA_ROW_GROUP == (ISA_TILE_REST(ONE_ROW_PANELS) 0),
               "a group of more than one panel holds a one-row tile's panels");
#undef ONE_ROW_PANELS
#endif

#if ISA_GEMM_TN_F64
/* gemm_tn reads A^T's panels from a tile's first row: a tile never straddles two of them. */
_Static_assert(ISA_VECTOR_BYTES / sizeof(double) % ISA_TILE_ROWS == 0,
               "gemm_tn needs tiles of rows that divide a panel of doubles");
#endif

const fl_build ISA_BUILD = {ISA_VECTOR_BYTES, ISA_GEMM_TN_F64, forward_f32, backward_f32,
                            forward_f64, backward_f64, stack_forward_f32, stack_backward_f32,
                            stack_forward_f64, stack_backward_f64};
