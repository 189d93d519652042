"""Measure this GPU's ceilings and place a few kernels on its roofline (issue #11). Needs a CUDA GPU.

    python scripts/bench_ceilings.py --out reports/roofline_nvidia_h200.png [--repeat 3] [--quick]

Prints, in order:
1. the ceilings: copy bandwidth (GB/s) and the matmul rate per dtype (TFLOP/s), with each ridge point;
2. a table of sample kernels, each timed by `bench.benchmark` (first call apart, warm-up by time, inputs
   rotated past L2, median [p10–p90] of per-run CUDA events): the copy, the matmuls, fla's chunk_gla and
   fused_recurrent_gla (B=4, T=4096, H=8, K=V=128), and fla's chunk linear attention as Lab 03 times it
   (B=4, H=8, K=V=64, T = 1,024 / 2,048 / 4,096), with GB/s, TFLOP/s and the fractions of the ceilings;
3. the small-T check: Lab 03's kernel timed `--repeat` times at each T three ways (the old sweep_stats
   way: 2 warm-up calls and 7 runs; the harness, eager; the harness with CUDA graphs), and how far the
   medians move between repeats (max / min).
Saves the roofline figure to --out and the rows and ceilings as JSON beside it (same stem).
Bytes and FLOPs are models, printed with the table: bytes = inputs read once + output written once; FLOPs =
the matrix products (the chunkwise cost 2TC(K+V) + 4TKV per head at C = 64, 4TKV for the recurrent form).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

import course_utils  # noqa: F401  (sets TRITON_INTERPRET before fla is imported)
from course_utils import bench, roofline


def gla_kernels(dtype: torch.dtype, T: int = 4096) -> list[bench.Measurement]:
    """fla's chunk_gla and fused_recurrent_gla, called directly (the course adapter checks g <= 0 on the CPU)."""
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    B, H, K, V, C = 4, 8, 128, 128, 64
    e = torch.tensor([], dtype=dtype).element_size()

    def make():
        q, k, v = (torch.randn(B, T, H, d, device="cuda", dtype=dtype) for d in (K, K, V))
        g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device="cuda")).div(16).to(dtype)
        return q, k, v, g

    nbytes = B * T * H * (3 * K + 2 * V) * e  # q, k, g, v read; o written
    chunk_flops = B * H * (2 * T * C * (K + V) + 4 * T * K * V)
    rec_flops = B * H * 4 * T * K * V
    tag = f"T={T:,}"
    return [bench.benchmark(lambda q, k, v, g: chunk_gla(q, k, v, g=g), make, name=f"fla chunk_gla {tag}",
                            bytes=nbytes, flops=chunk_flops),
            bench.benchmark(lambda q, k, v, g: fused_recurrent_gla(q, k, v, gk=g), make,
                            name=f"fla fused_recurrent_gla {tag}", bytes=nbytes, flops=rec_flops)]


def lab03_problem(T: int, dtype: torch.dtype):
    """Lab 03's benchmark problem at length T: (fn, inputs, bytes, flops)."""
    from course_utils.inputs import make_inputs
    from course_utils.refs.linear_attn import linear_attention

    B, H, D, C = 4, 8, 64, 64
    e = torch.tensor([], dtype=dtype).element_size()
    fn = lambda q, k, v: linear_attention(q, k, v, mode="chunk")  # noqa: E731
    inputs = lambda: make_inputs(B, T, H, D, D, seed=4, dtype=dtype, device="cuda")  # noqa: E731
    return fn, inputs, B * T * H * 4 * D * e, B * H * (2 * T * C * 2 * D + 4 * T * D * D)


def small_t_check(dtype: torch.dtype, lengths: list[int], repeat: int) -> list[dict]:
    """Lab 03's kernel timed `repeat` times per T: old way, harness eager, harness with CUDA graphs."""
    rows = []
    for T in lengths:
        fn, inputs, nbytes, flops = lab03_problem(T, dtype)
        old, eager, graph, note = [], [], [], ""
        for _ in range(repeat):
            args = inputs()
            old.append(bench.time_stats(fn, *args, warmup=2, reps=7)["median"])
            eager.append(bench.benchmark(fn, inputs, bytes=nbytes, flops=flops).median_ms)
            try:
                graph.append(bench.benchmark(fn, inputs, bytes=nbytes, flops=flops, cuda_graph=True).median_ms)
            except RuntimeError as err:
                note = str(err).splitlines()[0][:160]
        rows.append({"T": T, "old_ms": old, "eager_ms": eager, "graph_ms": graph, "graph_error": note})
    return rows


def fmt_repeats(ms: list[float]) -> str:
    if not ms:
        return "n/a"
    spread = max(ms) / min(ms)
    return f"{', '.join(f'{m:.3f}' for m in ms)}  (median {statistics.median(ms):.3f}, max/min {spread:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/roofline.png", help="figure path (PNG); a .json goes beside it")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the small-T check (default 3)")
    parser.add_argument("--quick", action="store_true", help="ceilings and the table only, no small-T check")
    args = parser.parse_args(argv)
    try:
        bench.require_gpu("scripts/bench_ceilings.py")
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    from course_utils import plots

    cap = torch.cuda.get_device_capability()
    half = torch.bfloat16 if cap >= (8, 0) else torch.float16
    ceilings = roofline.measure_ceilings()
    print(f"{ceilings}\nL2 {bench.format_bytes(ceilings.l2_bytes)}; torch {torch.__version__}\n")

    kernels = [roofline.copy_measurement()]
    kernels += [roofline.matmul_measurement(dtype=k) for k in ceilings.tflops]
    try:
        kernels += gla_kernels(half)
    except ImportError as err:
        print(f"fla's GLA kernels not importable, left out: {err}")
    lab03 = []
    for T in (1024, 2048, 4096):
        fn, inputs, nbytes, flops = lab03_problem(T, half)
        lab03.append(bench.benchmark(fn, inputs, name=f"fla chunk linear attn T={T:,}", bytes=nbytes, flops=flops))
    kernels += lab03
    rows = [m.row(ceilings) for m in kernels]
    print(bench.format_table(rows))
    print("\nbytes: inputs read once + output written once; FLOPs: the matrix products (a model). "
          "% roofline: TFLOP/s over min(matmul peak of the kernel's dtype, intensity × copy bandwidth).")
    print("first calls (s, compile + autotune where new): "
          + ", ".join(f"{m.name} {m.first_call_s:.2f}" for m in kernels))

    check = []
    if not args.quick:
        print(f"\nsmall-T check: Lab 03's kernel (fla chunk linear attention, B=4, H=8, K=V=64, {half}), "
              f"{args.repeat} repeats; ms per call")
        check = small_t_check(half, [1024, 2048, 4096], args.repeat)
        for r in check:
            print(f"T={r['T']:>5,}  old (2 warm-up + 7 runs): {fmt_repeats(r['old_ms'])}")
            print(f"         harness, eager:           {fmt_repeats(r['eager_ms'])}")
            print(f"         harness, CUDA graph:      {fmt_repeats(r['graph_ms'])}"
                  + (f"  [{r['graph_error']}]" if r["graph_error"] else ""))

    fig = plots.plot_roofline(kernels, ceilings, title=f"roofline of {ceilings.device} (measured ceilings)")
    out = Path(args.out)
    meta = {"gpu": ceilings.device, "bandwidth_gbs": ceilings.bandwidth_gbs, "tflops": ceilings.tflops,
            "l2_bytes": ceilings.l2_bytes, "torch": torch.__version__, "small_t_check": check,
            "timing": "bench.benchmark: first call apart, warm-up 200 ms, 200 ms of runs, median of CUDA events"}
    paths = bench.save_report(fig, out.stem, rows, meta=meta, directory=out.parent)
    print("\nsaved:", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
