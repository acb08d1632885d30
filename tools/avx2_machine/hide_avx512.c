/* Preloaded into a process (LD_PRELOAD, see run.sh), makes every CPUID instruction in it report
 * the CPU without its AVX-512 extensions, so that every library that picks its kernels by CPUID
 * (fastlstm's dispatch, numpy's, OpenBLAS's, oneDNN's, ATen's, ONNX Runtime's MLAS) picks the
 * ones it would run on an AVX2 + FMA machine. The code they then run is exactly that machine's
 * code; only the core under it differs.
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, on CPUs and hypervisors that offer it:
 * the flag cpuid_fault in /proc/cpuinfo) makes CPUID raise SIGSEGV. The handler runs the real
 * instruction with faulting lifted for that moment, clears the AVX-512 bits of its answer, and
 * resumes after the instruction. Any other SIGSEGV gets the handler that was there before, and
 * faults again into it.
 *
 * The setting is per thread and new threads inherit it; execve clears it, and the preload sets
 * it again in a child that keeps LD_PRELOAD. A library that installs its own SIGSEGV handler
 * later (Python's faulthandler, for one) takes the faults of CPUID over and breaks this. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction previous;

/* Leaf 7, subleaf 0: EBX AVX512F (16), DQ (17), IFMA (21), PF (26), ER (27), CD (28), BW (30),
 * VL (31); ECX VBMI (1), VBMI2 (6), VNNI (11), BITALG (12), VPOPCNTDQ (14); EDX 4VNNIW (2),
 * 4FMAPS (3), VP2INTERSECT (8), FP16 (23). Subleaf 1: EAX BF16 (5); EDX AVX10 (19). */
static void hide(unsigned leaf, unsigned subleaf, unsigned *a, unsigned *b, unsigned *c,
                 unsigned *d)
{
    if (leaf == 7 && subleaf == 0) {
        *b &= ~(1u << 16 | 1u << 17 | 1u << 21 | 1u << 26 | 1u << 27 | 1u << 28 | 1u << 30 |
                1u << 31);
        *c &= ~(1u << 1 | 1u << 6 | 1u << 11 | 1u << 12 | 1u << 14);
        *d &= ~(1u << 2 | 1u << 3 | 1u << 8 | 1u << 23);
    } else if (leaf == 7 && subleaf == 1) {
        *a &= ~(1u << 5);
        *d &= ~(1u << 19);
    }
}

static void on_segv(int sig, siginfo_t *info, void *context)
{
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    /* si_code > 0: a fault of the kernel's, not a signal sent by a process */
    if (sig == SIGSEGV && info->si_code > 0 && ip[0] == 0x0f && ip[1] == 0xa2) {
        const unsigned leaf = (unsigned)reg[REG_RAX], subleaf = (unsigned)reg[REG_RCX];
        unsigned a, b, c, d;
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        __cpuid_count(leaf, subleaf, a, b, c, d);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        hide(leaf, subleaf, &a, &b, &c, &d);
        reg[REG_RAX] = a, reg[REG_RBX] = b, reg[REG_RCX] = c, reg[REG_RDX] = d;
        reg[REG_RIP] += 2; /* CPUID is 0F A2 */
        return;
    }
    sigaction(SIGSEGV, &previous, NULL);
}

__attribute__((constructor)) static void start(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        static const char message[] =
            "hide_avx512: no CPUID faulting here; the process sees the whole CPU\n";
        (void)!write(2, message, sizeof message - 1);
        _exit(70);
    }
}
