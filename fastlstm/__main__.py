"""Command line: ``python -m fastlstm {info, demo, bench}``."""

import argparse
import os
import platform
import sys

import numpy as np

import fastlstm
from fastlstm._blas import cpuinfo


def cpu_flags():
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo), or None elsewhere."""
    fields = cpuinfo()
    return None if fields is None else fields.get("flags", "").split()


def simd_level(flags):
    """The widest x86 vector extension among the CPU's ``flags`` (see cpu_flags)."""
    if flags is None:
        return f"unknown ({platform.machine()})"
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                       ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return f"baseline ({platform.machine()})"


def describe_isa(isa):
    """A build of the time loops (fastlstm.native.ISAS), as `info` and `bench` name it."""
    vector = {"avx512": "AVX-512", "avx2": "AVX2 + FMA", "neon": "NEON"}
    if isa in vector:
        return f"{isa} build ({vector[isa]}; weights packed once per call, register tiles)"
    return f"{isa} build (products through the BLAS at every step)"


def info(args):
    build = fastlstm.native.build_info()
    omp = "on" if build["openmp"] else "off (built without an OpenMP compiler: one thread)"
    env = os.environ.get("OMP_NUM_THREADS")
    print(f"fastlstm {fastlstm.__version__}   (numpy {np.__version__}, Python "
          f"{platform.python_version()})")
    print(f"OpenMP:        {omp}")
    print(f"threads:       {build['num_threads']}"
          + (f" (OMP_NUM_THREADS={env})" if env else "")
          + f"; a batch is dealt round-robin into {build['parts']} parts")
    print(f"BLAS library:  {build['blas_config']} (scipy-openblas32, single-threaded: "
          "fastlstm threads its own work)")
    print(f"BLAS kernel:   {build['blas_core']}")
    print(f"time loops:    {describe_isa(build['isa'])}; builds this CPU can run: "
          f"{', '.join(build['isas'])} (FASTLSTM_ISA=<build> runs a lower one)")
    from .bench import cpuid_hides_avx512
    flags = cpu_flags()
    hidden = cpuid_hides_avx512(flags or [], build["isas"])
    print(f"CPU SIMD:      {simd_level(flags)}" + " (hidden from this process's CPUID)" * hidden)


def demo(args):
    from . import demo as adding_problem
    adding_problem.run(T=args.seq_len, hidden=args.hidden, batch=args.batch, steps=args.steps,
                      seed=args.seed, report_every=max(1, args.steps // 15))


def bench(args):
    from . import bench as bench_module
    # --dtype is that of the cases given with --case (the goal cases have their own)
    cases = [c._replace(dtype=args.dtype) for c in args.case] if args.case else bench_module.GOALS
    report = bench_module.run(cases, sections=args.section or bench_module.SECTIONS,
                              dtype=args.dtype, repeat=args.repeat,
                              with_reference=args.reference, with_torch=not args.no_torch,
                              isas=args.isa)
    if args.json:
        bench_module.save_json(report, args.json)
        print(f"report written to {args.json}")
    if args.plot:
        bench_module.plot(report, args.plot)
        print(f"plot written to {args.plot}")


def isa_list(text):
    """An argparse type: 'avx2,generic' -> ["avx2", "generic"], builds this machine runs."""
    names = text.split(",")
    have = fastlstm.native.available_isas()
    if not all(name in have for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct builds this machine can run, among {', '.join(have)}, separated "
            f"by commas, got {text!r}")
    return names


def bench_case(text):
    """An argparse type: 'lstm,100,32,256' -> Case("lstm", 100, 32, 256), a training step;
    'lstm,100,32,256,infer' an inference forward. The dtype is --dtype's."""
    from .bench import CELLS, Case
    parts = text.split(",")
    try:
        cell, T, B, H = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        cell = None
    mode = parts[4] if len(parts) == 5 else "train"
    if (cell not in CELLS or len(parts) not in (4, 5) or mode not in ("train", "infer")
            or min(T, B, H) < 1):
        raise argparse.ArgumentTypeError(
            f"expected CELL,T,B,H or CELL,T,B,H,infer such as lstm,100,32,256 (CELL one of "
            f"{', '.join(CELLS)}; sizes >= 1), got {text!r}")
    return Case(cell, T, B, H, mode=mode)


def main(argv=None):
    from .bench import SECTIONS
    parser = argparse.ArgumentParser(prog="python -m fastlstm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, OpenMP, threads, BLAS and SIMD")
    p = commands.add_parser("demo", help="LSTM against Elman RNN on the adding problem")
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("bench", help="native against PyTorch (and the reference)")
    p.add_argument("--section", action="append", metavar="NAME",
                   choices=list(SECTIONS),
                   help=f"{', '.join(SECTIONS)} (repeatable; default: all)")
    p.add_argument("--case", action="append", type=bench_case, metavar="CELL,T,B,H[,infer]",
                   help="measure this case in the goals section instead of the goal cases, such "
                        "as gru,100,32,256; CELL is rnn, gru, lstm, lstmp (proj_size H/2) or "
                        "peephole; ',infer' for an inference forward (repeatable)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="of --case and of the packed, stream and convert sections")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--reference", action="store_true",
                   help="also time the NumPy reference (slow at the large sizes)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--isa", type=isa_list, metavar="BUILD[,BUILD...]",
                   help="the builds of the kernels to time side by side, such as avx2,generic: "
                        "the first is 'native' and the others get columns beside it (default: "
                        "the best this CPU runs; see `info`)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot the speed-ups against their goals (needs matplotlib)")
    args = parser.parse_args(argv)
    {"info": info, "demo": demo, "bench": bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
