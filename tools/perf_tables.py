"""Markdown tables of `python -m fastlstm bench --json` reports, for docs/performance.md.

Usage: python tools/perf_tables.py REPORT.json[=TITLE] ... > docs/performance.md
       python tools/perf_tables.py --readme REPORT.json[=CPU]   (the README's Performance block)

Each report becomes a section: its title (default: the CPU and the build that ran), the machine
as the report recorded it, the goal table (every system the run timed: fastlstm's builds, torch,
ONNX Runtime; times in ms, ratios as the other system's time over fastlstm's) and the streaming
table (µs). Nothing is typed by hand: rerun the bench and this script to update the page.
"""
import json
import sys
import textwrap

SYSTEMS = {"torch": "torch", "onnxruntime": "ONNX Runtime", "torch-inference": "torch (inference_mode)"}


def name_of(system):
    return SYSTEMS.get(system) or (system[len("native-"):] + " build")


def others(rows):
    """The systems besides native that the rows timed, in the order they first appear."""
    seen = []
    for row in rows:
        for key in row:
            if (key.startswith("native-") or key in SYSTEMS) and key not in seen:
                seen.append(key)
    return seen


def table(rows, label, scale, unit):
    systems = others(rows)
    head = [label, f"fastlstm ({unit})"] + [f"{name_of(s)} ({unit}), ratio" for s in systems]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["label"] if "label" in row else
                 f"{row['cell'].upper()} B={row['B']} I={row['I']} H={row['H']}",
                 f"{row['native'] * scale:.2f}"]
        for s in systems:
            cells.append(f"{row[s] * scale:.2f}, {row[s] / row['native']:.2f}x" if s in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def section(path, title=None):
    report = json.load(open(path))
    m = report["machine"]
    builds = report.get("builds") or [m.get("isa", "?")]
    title = title or f"{m['cpu']}, the {builds[0]} build"
    out = [f"## {title}", "",
           f"`{path}`: {m['cores']} cores, {m['num_threads']} threads for each system, medians "
           f"of {report['repeat']}; fastlstm's builds {', '.join(builds)} (the first is "
           f"\"fastlstm\"); BLAS {m['blas_config']}; torch {m.get('torch', '-')}"
           + (f" ({m['torch_cpu_capability']})" if "torch_cpu_capability" in m else "")
           + "".join(f"; {k}={v}" for k, v in m.get("environment", {}).items())
           + ("; AVX-512 hidden from every library's CPUID (tools/avx2_machine)"
              if m.get("cpuid_hides_avx512") else "")
           + "." + (" Matrix peak, the best beside the goal cases: "
                    + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report["peak_gflops"].items())
                    + "." if report.get("peak_gflops") else ""),
           ""]
    goals = [r for r in report["rows"] if r["section"] == "goals"]
    if goals:
        out += table(goals, "case", 1e3, "ms")
        out.append("")
        if "geomean_speedup" in report:
            out.append(f"Geometric mean of the speed-ups over torch on the goal cases: "
                       f"{report['geomean_speedup']:.2f}x.")
        if "geomean_ort_speedup" in report:
            out.append(f"Over ONNX Runtime on the inference rows: "
                       f"{report['geomean_ort_speedup']:.2f}x.")
        out.append("")
        out += ["The matrix peak of each row was timed in turn with its systems (a "
                f"{report['peak_size']}^3 product in fastlstm's BLAS):", "",
                "| case | GFLOP/s | matrix peak beside it (GFLOP/s) | share of that peak |",
                "|---|---|---|---|"]
        out += [f"| {r['label']} | {r['gflops']:.0f} | {r['peak_gflops']:.0f} | "
                f"{r['peak_share'] * 100:.0f}% |" for r in goals]
        out.append("")
    stream = [r for r in report["rows"] if r["section"] == "stream"]
    if stream:
        out += ["Streaming, one step of `layer.stream(B).step(x)` from Python:", ""]
        out += table(stream, "case", 1e6, "µs")
        out.append("")
    feedback = [r for r in report["rows"] if r["section"] == "feedback"]
    if feedback:
        out += ["Feedback from later layers (2 layers, `feedback=\"top\"`): a training step "
                "against the same stack without feedback and against torch's Python loop of "
                "its cells over the concatenated inputs, and one step of a stream against the "
                "plain stack's:", "",
                "| case | feedback (ms) | plain (ms), plain/feedback | torch loop (ms), "
                "loop/feedback | stream step (µs) | plain stream (µs), feedback/plain |",
                "|---|---|---|---|---|---|"]
        for r in feedback:
            loop = (f"{r['torch_loop'] * 1e3:.2f}, {r['torch_speedup']:.2f}x"
                    if "torch_loop" in r else "")
            out.append(f"| {r['cell'].upper()} T={r['T']} B={r['B']} I=H={r['H']} | "
                       f"{r['feedback'] * 1e3:.2f} | {r['plain'] * 1e3:.2f}, "
                       f"{r['plain_share']:.2f}x | {loop} | {r['stream_feedback'] * 1e6:.2f} | "
                       f"{r['stream_plain'] * 1e6:.2f}, {r['stream_ratio']:.2f}x |")
        out.append("")
    layer_norm = [r for r in report["rows"] if r["section"] == "layernorm"]
    if layer_norm:
        out += ["The layer-normalised LSTM (`LSTM(layer_norm=True)`): a training step against "
                "the plain LSTM's and against the same cell in PyTorch, a loop over the steps "
                "with `F.layer_norm` under autograd:", "",
                "| case | layer_norm (ms) | plain (ms), layer_norm/plain | torch loop (ms), "
                "loop/layer_norm |", "|---|---|---|---|"]
        for r in layer_norm:
            loop = (f"{r['torch_loop'] * 1e3:.2f}, {r['torch_speedup']:.2f}x"
                    if "torch_loop" in r else "")
            out.append(f"| LSTM {r['dtype'].replace('float', 'f')} T={r['T']} B={r['B']} "
                       f"I=H={r['H']} | {r['layer_norm'] * 1e3:.2f} | {r['plain'] * 1e3:.2f}, "
                       f"{r['plain_ratio']:.2f}x | {loop} |")
        out.append("")
    return out


def readme(path, cpu=None):
    """The README's performance block for one report: how it ran (on ``cpu``, by default the
    CPU's name and x86 family and model as the report has them), and its goal table with
    torch's and ONNX Runtime's times and ratios."""
    report = json.load(open(path))
    m = report["machine"]
    rows = [r for r in report["rows"] if r["section"] == "goals"]
    ort = "onnxruntime" in m
    ident = m.get("cpu_id", {})
    cpu = cpu or m["cpu"] + (f" (family {ident['cpu family']}, model {ident['model']})"
                             if ident else "")
    out = [textwrap.fill(
               f"`python -m fastlstm bench` on {m['cores']} cores of {cpu}, the "
               f"{report['builds'][0]} build, {m['num_threads']} threads for each system, "
               f"medians of {report['repeat']}, the systems taking turns within each repeat; "
               f"ratios are the other system's time over fastlstm's (`{path}`).", 100), "",
           "| case (I = H; training step unless said) | fastlstm | torch "
           f"{m.get('torch', '-').split('+')[0]} | ratio |"
           + (f" ONNX Runtime {m['onnxruntime']} | ratio |" if ort else ""),
           "|---|---|---|---|" + ("---|---|" if ort else "")]
    for r in rows:
        label = r["label"].replace(" train ", " ").replace("I=H=", "H=")
        cells = [label, f"{r['native'] * 1e3:.2f} ms"] + (
            [f"{r['torch'] * 1e3:.2f} ms", f"{r['speedup']:.2f}x"] if "torch" in r else ["", ""])
        if ort:
            cells += ([f"{r['onnxruntime'] * 1e3:.2f} ms", f"{r['ort_speedup']:.2f}x"]
                      if "onnxruntime" in r else ["", ""])
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(args):
    if args[:1] == ["--readme"]:
        path, _, cpu = args[1].partition("=")
        print("\n".join(readme(path, cpu or None)))
        return
    lines = ["# Performance", "",
             "Generated by `tools/perf_tables.py` from the reports in `docs/bench/` "
             "(`python -m fastlstm bench --json`); see the README's Performance section for "
             "how they were run.", ""]
    for arg in args:
        path, _, title = arg.partition("=")
        lines += section(path, title or None)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
