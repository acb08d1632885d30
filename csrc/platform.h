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

#endif /* FASTLSTM_PLATFORM_H */
