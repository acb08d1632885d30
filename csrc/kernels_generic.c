/* The generic build of the time loops: any CPU, compiled for the architecture's baseline. Its
 * steps' products go through the BLAS and its gate math rounds every product and sum apart. */
#define ISA_BUILD fl_build_generic
#define ISA_VECTOR_BYTES 0
#define ISA_FUSED 0
#define ISA_GEMM_TN_F64 0
#include "kernels_isa.h"
