/* Preloaded into a process (LD_PRELOAD, see run.sh), makes every CPUID instruction run after it
 * loads report the CPU without its AVX-512 extensions, so that every library that picks its
 * kernels by CPUID when it loads or later (fastlstm's dispatch, numpy's, OpenBLAS's, oneDNN's,
 * ATen's, ONNX Runtime's MLAS) picks the ones it would run on an AVX2 + FMA machine. The code
 * they then run is exactly that machine's code; only the core under it differs. It sets
 * FASTLSTM_CPUID_HIDES_AVX512=1 in the environment, which fastlstm's bench and info read.
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, on CPUs and hypervisors that offer it:
 * the flag cpuid_fault in /proc/cpuinfo) makes CPUID raise SIGSEGV. The handler runs the real
 * instruction with faulting lifted for that moment, clears the AVX-512 bits of its answer, and
 * resumes after the instruction. Any other SIGSEGV goes to the handler that was there before.
 *
 * The setting is per thread and new threads inherit it; execve clears it, and the preload sets
 * it again in a child that keeps LD_PRELOAD. Limits: a library that installs its own SIGSEGV
 * handler later (Python's faulthandler, PYTHONFAULTHANDLER or PYTHONDEVMODE, for one) takes the
 * faults of CPUID over, and a thread that blocks SIGSEGV dies at its first CPUID. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdlib.h>
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

/* Any other SIGSEGV: to the previous handler, called here, so that this one stays for the
 * other threads' CPUID. With none, the default action: for a fault, on the instruction's next
 * try when this returns; for a signal a process sent, at once. */
static void pass_on(int sig, siginfo_t *info, void *context)
{
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    } else {
        struct sigaction fallback;
        memset(&fallback, 0, sizeof fallback);
        fallback.sa_handler = SIG_DFL;
        sigaction(sig, &fallback, NULL);
        if (info->si_code <= 0)
            raise(sig); /* delivered once this handler returns and unblocks it */
    }
}

static void on_segv(int sig, siginfo_t *info, void *context)
{
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    /* CPUID faulting's general protection fault comes as SI_KERNEL, with no address: only then
     * is the instruction's address known to be readable (another fault's may not be) */
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        pass_on(sig, info, context);
        return;
    }
    const unsigned leaf = (unsigned)reg[REG_RAX], subleaf = (unsigned)reg[REG_RCX];
    unsigned a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, subleaf, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    hide(leaf, subleaf, &a, &b, &c, &d);
    reg[REG_RAX] = a, reg[REG_RBX] = b, reg[REG_RCX] = c, reg[REG_RDX] = d;
    reg[REG_RIP] += 2; /* CPUID is 0F A2 */
}

__attribute__((constructor)) static void start(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    /* no other handler runs while faulting is lifted, and sees the whole CPU */
    sigfillset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous) != 0 ||
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        static const char message[] =
            "hide_avx512: no CPUID faulting here; the process would see the whole CPU\n";
        (void)!write(2, message, sizeof message - 1);
        _exit(70);
    }
    setenv("FASTLSTM_CPUID_HIDES_AVX512", "1", 1);
}
