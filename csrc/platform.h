/* The two outside libraries the kernels use, each behind one small shim.
 *
 * BLAS: the scipy-openblas32 wheel, an OpenBLAS that belongs to fastlstm alone (numpy and scipy
 * carry their own copies), so tuning it never changes their behaviour. Its symbols carry the
 * prefix scipy_. Kernels call it from inside their own OpenMP regions, one block of rows per
 * thread, so every call must run single-threaded: otherwise BLAS threads and OpenMP threads
 * multiply. fl_init() (run once when fastlstm.native is imported) sets this instance to one
 * thread; that wheel exports no per-thread setting, and nothing but fastlstm uses the instance.
 *
 * OpenMP: optional at build time; without it the kernels run on one thread.
 */
#ifndef FASTLSTM_PLATFORM_H
#define FASTLSTM_PLATFORM_H

#include <cblas.h>
/* cblas.h brings in <complex.h>, whose macro I (the imaginary unit) would shadow the kernels'
 * name for the input size. */
#undef I

#define FL_SGEMM scipy_cblas_sgemm
#define FL_DGEMM scipy_cblas_dgemm
#define FL_SGEMV scipy_cblas_sgemv
#define FL_DGEMV scipy_cblas_dgemv

#define FL_BLAS_SET_NUM_THREADS scipy_openblas_set_num_threads
#define FL_BLAS_CORENAME scipy_openblas_get_corename
#define FL_BLAS_CONFIG scipy_openblas_get_config

#ifdef _OPENMP
#include <omp.h>
#define FL_OMP_NUM_PROCS() omp_get_num_procs()
#define FL_OMP_MAX_THREADS() omp_get_max_threads()
#define FL_OMP_THREAD_NUM() omp_get_thread_num()
#define FL_OMP_NUM_THREADS() omp_get_num_threads()
#else
#define FL_OMP_NUM_PROCS() 1
#define FL_OMP_MAX_THREADS() 1
#define FL_OMP_THREAD_NUM() 0
#define FL_OMP_NUM_THREADS() 1
#endif

/* Functions inlined into every caller, so that the time loops compile their own copy of the
 * gate math, specialised for their constant arguments. */
#if defined(__GNUC__) || defined(__clang__)
#define FL_INLINE static inline __attribute__((always_inline))
#else
#define FL_INLINE static inline
#endif

/* The vector builds of the time loops (kernels_isa.h) are written with GCC's vector extensions
 * and one intrinsic per instruction set, so they need GCC or clang: on x86-64 the AVX2 and
 * AVX-512 builds, on aarch64 the NEON build. Elsewhere the generic build alone. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FL_X86_BUILDS 1
#else
#define FL_X86_BUILDS 0
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define FL_NEON_BUILD 1
#else
#define FL_NEON_BUILD 0
#endif

/* Waiting for another thread in a spin loop (fl_next_part, kernels_common.h): FL_CPU_RELAX tells
 * the core that it spins (x86 pause, Arm yield: the core saves power and leaves its sibling
 * hardware thread the resources), FL_YIELD gives the processor to another thread of the system,
 * which may be the one being waited for. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FL_CPU_RELAX() __builtin_ia32_pause()
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define FL_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define FL_CPU_RELAX() ((void)0)
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#define FL_YIELD() sched_yield()
#else
#define FL_YIELD() ((void)0)
#endif

/* The kernels compute in IEEE 754 arithmetic, with gradual underflow, whatever flush-to-zero
 * (FTZ) and denormals-are-zero (DAZ) settings the calling thread has (x86: MXCSR bits 15 and 6;
 * Arm: FPCR.FZ, bit 24), settings a caller may make for speed (torch.set_flush_denormal). They
 * belong to each thread, and an OpenMP thread keeps whatever it had: left as they are, results
 * that pass through subnormal numbers, as gradients vanishing over many steps do, would depend
 * on which thread computed what. So each call (kernels.c) and each OpenMP thread's share of a
 * call (FL_IEEE) clears them, and puts the thread's own back afterwards. On processors other than
 * x86-64 and aarch64 the kernels leave them as they are. */
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FL_FLUSH_BITS 0x8040u
typedef unsigned int fl_fp_mode;
static inline fl_fp_mode fl_fp_mode_get(void) { return _mm_getcsr(); }
static inline void fl_fp_mode_set(fl_fp_mode m) { _mm_setcsr(m); }
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define FL_FLUSH_BITS (1ull << 24)
typedef unsigned long long fl_fp_mode;
static inline fl_fp_mode fl_fp_mode_get(void)
{
    fl_fp_mode m;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(m) : : "memory");
    return m;
}
static inline void fl_fp_mode_set(fl_fp_mode m)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"(m) : "memory");
}
#else
#define FL_FLUSH_BITS 0u
typedef unsigned int fl_fp_mode;
static inline fl_fp_mode fl_fp_mode_get(void) { return 0; }
static inline void fl_fp_mode_set(fl_fp_mode m) { (void)m; }
#endif

/* Clears the calling thread's flush settings; returns them, for fl_ieee_end. */
static inline fl_fp_mode fl_ieee_begin(void)
{
    const fl_fp_mode m = fl_fp_mode_get();
    if (m & FL_FLUSH_BITS)
        fl_fp_mode_set(m & ~(fl_fp_mode)FL_FLUSH_BITS);
    return m & FL_FLUSH_BITS;
}

/* Puts back the flush settings fl_ieee_begin returned (the register's other bits, such as the
 * exception flags the computation raised, stay as they are). */
static inline void fl_ieee_end(fl_fp_mode flush)
{
    if (flush)
        fl_fp_mode_set(fl_fp_mode_get() | flush);
}

/* Runs the statement `call` in IEEE arithmetic (see above): the body of every parallel loop. */
#define FL_IEEE(call)                                                                          \
    do {                                                                                       \
        const fl_fp_mode fl_flush_ = fl_ieee_begin();                                          \
        call;                                                                                  \
        fl_ieee_end(fl_flush_);                                                                \
    } while (0)

#endif /* FASTLSTM_PLATFORM_H */
