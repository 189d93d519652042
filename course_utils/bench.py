"""Measuring what an attention layer costs: time, peak memory and FLOPs, on CPU or GPU.

Three measurements, each honest about what it is:

- `time_fn`: the median wall-clock time of a call, in milliseconds, after warm-up calls. On a GPU the
  device is synchronised before and after every timed call (kernels launch asynchronously, so a timer
  without a synchronise measures the launch, not the work).
- `peak_memory_bytes`: how far memory rose above its level at the start of the call, at the call's peak
  (temporaries and the output included, the inputs excluded). On CUDA this is
  `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`; on CPU, where torch keeps no peak
  counter, it replays the allocation and free events that `torch.profiler` records with
  `profile_memory=True`. Both count bytes handed out by torch's allocator, not the process's RSS.
- `count_flops`: the FLOPs `torch.utils.flop_counter.FlopCounterMode` attributes to the call's matrix
  products (2 per multiply-add). Elementwise work (exp, division, masking) is not counted.

`attention_flops` and `attention_memory_bytes` are the matching closed-form models, `sweep` runs a set of
functions over growing sizes, with a progress bar, into rows for `course_utils.plots`, and `save_report`
keeps a benchmark's figure and rows under reports/.

GPU kernels get their own harness. `benchmark` (one function, one problem) returns a `Measurement`: the first
call's time on its own (compilation, autotuning), then the median and spread of many runs timed with CUDA events
after a warm-up by time, with the inputs rotated so that the L2 cache does not hold them, and GB/s, TFLOP/s and
the fractions of the measured ceilings (`course_utils.roofline`) when the bytes and FLOPs are given. `compare`
runs several functions over sizes into rows, `format_table` prints them, `plots.plot_benchmark` and
`plots.plot_roofline` draw them. On a CPU they refuse: "timing needs a GPU".
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

__all__ = [
    "attention_flops",
    "attention_memory_bytes",
    "count_flops",
    "crossover",
    "format_bytes",
    "peak_memory_bytes",
    "save_report",
    "sweep",
    "synchronize",
    "time_fn",
]


def _device_of(args: Iterable[Any], device: torch.device | str | None = None) -> torch.device:
    """The device to measure on: `device` if given, else that of the first tensor argument, else CPU."""
    if device is not None:
        return torch.device(device)
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def synchronize(device: torch.device | str) -> None:
    """Wait for every kernel queued on `device` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ time


def time_fn(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 3,
    reps: int = 10,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> float:
    """Median wall-clock time of `fn(*args, **kwargs)` in milliseconds.

    `warmup` untimed calls first (caches, allocator, kernel compilation), then `reps` timed calls; the
    median ignores the odd slow call (a page fault, another process). The device (inferred from the first
    tensor argument unless given) is synchronised around each timed call.
    """
    if reps < 1:
        raise ValueError(f"time_fn: reps must be >= 1; got {reps}.")
    dev = _device_of(args, device)
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        synchronize(dev)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# ---------------------------------------------------------------------------------------------- memory


def _cpu_peak_bytes(fn: Callable[..., Any], args: tuple, kwargs: dict) -> int:
    from torch.profiler import ProfilerActivity, profile

    # Kineto logs "profiler_start/stop" lines to the process's stderr at its default level; in a
    # notebook they would appear under every measurement. Level 6 keeps it quiet (set before first use).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*args, **kwargs)
        del out  # the output counts while it is alive; freeing it here ends the call's footprint
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:  # allocations are positive, frees negative
        if e.device_type() == torch.autograd.DeviceType.CPU:
            level += e.nbytes()
            peak = max(peak, level)
    return int(peak)


def peak_memory_bytes(
    fn: Callable[..., Any], *args: Any, device: torch.device | str | None = None, **kwargs: Any
) -> int:
    """Peak bytes allocated by torch during `fn(*args, **kwargs)`, above the level before the call.

    Counts temporaries and the returned tensors, not the inputs (they exist before the call).
    CUDA: `torch.cuda.max_memory_allocated` (after `reset_peak_memory_stats`) minus the bytes allocated
    before the call. CPU: the running sum of the allocation/free events recorded by `torch.profiler` with
    `profile_memory=True`, maximised over the call. Run `fn` once before measuring if it caches anything.
    """
    dev = _device_of(args, device)
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fn(*args, **kwargs)
        synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        del out
        return int(peak - before)
    if dev.type == "cpu":
        return _cpu_peak_bytes(fn, args, kwargs)
    raise ValueError(f"peak_memory_bytes: no peak-memory measurement for device type {dev.type!r}.")


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units), NaN -> 'n/a'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------- flops, and the closed-form attention models


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of the matrix products in `fn(*args, **kwargs)`, as FlopCounterMode counts them.

    2 FLOPs per multiply-add, over mm/bmm/addmm/baddbmm/einsum-lowered products and convolutions;
    softmax, exp, masking and elementwise normalisers are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def counted_attention_flops(N: int, d: int, dv: int | None = None, *, kind: str, B: int = 1, H: int = 1) -> int:
    """What FlopCounterMode counts for the products of one attention form, on `meta` tensors (nothing is
    computed): the measured side of `attention_flops`, independent of how anyone's code is written.

    kind="softmax": Q K^T, then the weights times V.  kind="linear": phi(K)^T V, phi(Q) (phi(K)^T V), and the
    normaliser phi(Q) z.
    """
    dv = d if dv is None else dv
    q, k = torch.empty(B, H, N, d, device="meta"), torch.empty(B, H, N, d, device="meta")
    v = torch.empty(B, H, N, dv, device="meta")
    if kind == "softmax":
        return count_flops(lambda: (q @ k.transpose(-1, -2)).softmax(-1) @ v)
    if kind == "linear":
        return count_flops(lambda: (q @ (k.transpose(-1, -2) @ v), q @ k.sum(-2, keepdim=True).transpose(-1, -2)))
    raise ValueError(f"counted_attention_flops: kind must be 'softmax' or 'linear'; got {kind!r}.")


def attention_flops(
    N: int, d: int, dv: int | None = None, *, kind: str, B: int = 1, H: int = 1, normalizer: bool = True
) -> int:
    """Matrix-product FLOPs of one attention forward pass (non-causal), 2 FLOPs per multiply-add.

    kind="softmax" (and "linear_quadratic", which builds the same T x T matrix):
        scores Q K^T: 2 N^2 d   +   weights times V: 2 N^2 dv                   ->  O(N^2 d)
    kind="linear" (associative form, Katharopoulos et al. 2020, §3.2):
        phi(K)^T V: 2 N d dv    +   phi(Q) (phi(K)^T V): 2 N d dv
        + the normaliser phi(Q) z, z = sum_j phi(k_j): 2 N d  (when `normalizer`)  ->  O(N d^2)
    All terms are multiplied by the B * H independent heads. The normaliser term counts only if it is
    computed as a product (an einsum or matmul); as `(q * z).sum(-1)` FlopCounterMode does not see it.
    """
    dv = d if dv is None else dv
    if kind in ("softmax", "linear_quadratic"):
        per_head = 2 * N * N * d + 2 * N * N * dv
    elif kind == "linear":
        per_head = 4 * N * d * dv + (2 * N * d if normalizer else 0)
    else:
        raise ValueError(f"attention_flops: kind must be 'softmax', 'linear_quadratic' or 'linear'; got {kind!r}.")
    return int(B * H * per_head)


def attention_memory_bytes(
    N: int, d: int, dv: int | None = None, *, kind: str, B: int = 1, H: int = 1, bytes_per_element: int = 4
) -> int:
    """Analytic size of the intermediate that distinguishes the two forms (not a measurement).

    kind="softmax": the T x T score matrix, B H N^2 elements (softmax's output is a second one unless
        computed in place, and a fused FlashAttention kernel never stores either).
    kind="linear": the K x V state phi(K)^T V plus the normaliser z, B H (d dv + d) elements.
    Inputs and output (B N H (2d + 2dv) elements) are the same for both and not included.
    """
    dv = d if dv is None else dv
    if kind == "softmax":
        elements = B * H * N * N
    elif kind == "linear":
        elements = B * H * (d * dv + d)
    else:
        raise ValueError(f"attention_memory_bytes: kind must be 'softmax' or 'linear'; got {kind!r}.")
    return int(elements * bytes_per_element)


# ----------------------------------------------------------------------------------------------- sweep


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def sweep(
    fns: dict[str, Callable[..., Any]],
    sizes: Sequence[int],
    make_inputs: Callable[[int], tuple],
    *,
    x: str = "N",
    warmup: int = 2,
    reps: int = 5,
    memory: bool = True,
    flops: bool = False,
    device: torch.device | str | None = None,
    desc: str = "sizes",
    progress: bool = True,
    cpu_threads: int | None = None,
) -> list[dict[str, Any]]:
    """Time (and optionally measure memory and FLOPs of) every function at every size.

    fns: {name: fn}; each is called as fn(*make_inputs(size)).  sizes: the values of the swept variable.
    x: that variable's name, the key of the size in every row ("N" by default; e.g. x="T" for sequence
    lengths, so that plots.plot_scaling(rows, x="T") and crossover(rows, ..., x="T") read it).
    Returns one row per (size, name): {"name", x, "ms", "peak_bytes", "flops", "device"}
    (peak_bytes / flops are NaN when not measured). Runs under torch.no_grad() (forward cost only).
    A CUDA out-of-memory error is caught: that row gets NaN and larger sizes of that function are
    skipped (also NaN). Any other error propagates, NotImplementedError from an exercise stub included.
    A tqdm.auto progress bar runs over the sizes (progress=False hides it).
    cpu_threads: torch's intra-op threads during the sweep (restored afterwards). On a small CPU that
    other work shares, 1 gives steady timings: with 2 threads, every operation waits for the slower
    thread, and a core taken by another process adds milliseconds at random. None keeps the setting.
    """
    threads_before = torch.get_num_threads()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    try:
        with torch.no_grad():
            return _sweep(fns, sizes, make_inputs, x=x, memory=memory, flops=flops, device=device, desc=desc,
                          progress=progress, timing_keys=("ms",),
                          timing=lambda name, fn, args, dev, size: {"ms": time_fn(fn, *args, warmup=warmup, reps=reps,
                                                                                  device=dev)})
    finally:
        torch.set_num_threads(threads_before)


def _sweep(fns, sizes, make_inputs, *, x, memory, flops, device, desc, progress, timing, timing_keys):
    """The loop of `sweep`, `sweep_stats` and `compare`: timing(name, fn, args, device, size) -> {key: value} fills the
    row's timing keys (NaN until measured, and for every size from a function's first CUDA out-of-memory error
    on) and may add more."""
    from tqdm.auto import tqdm

    nan = float("nan")
    rows: list[dict[str, Any]] = []
    out_of_memory: set[str] = set()
    for size in tqdm(list(sizes), desc=desc, disable=not progress, leave=False):
        args = make_inputs(size)
        dev = _device_of(args, device)
        for name, fn in fns.items():
            row = {"name": name, x: int(size), **{k: nan for k in timing_keys}, "peak_bytes": nan, "flops": nan,
                   "device": dev.type}
            rows.append(row)
            if name in out_of_memory:
                continue
            try:
                row.update(timing(name, fn, args, dev, size))
                if memory:
                    row["peak_bytes"] = peak_memory_bytes(fn, *args, device=dev)
                if flops:
                    row["flops"] = count_flops(fn, *args)
            except Exception as err:  # only out-of-memory is expected; re-raise the rest
                if not _is_oom(err):
                    raise
                out_of_memory.add(name)
                row.update({k: nan for k in (*timing_keys, "peak_bytes", "flops")})
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        del args
    return rows


def crossover(
    rows: list[dict[str, Any]], a: str, b: str, key: str = "ms", x: str = "N"
) -> float | None:
    """The x at which `b` stops being costlier than `a` (or the reverse): the first sign change of
    rows[a][key] - rows[b][key] along x, interpolated linearly in log(x) and log(cost).

    None when the curves do not cross within the measured range (or a value is missing).
    """
    series = {}
    for name in (a, b):
        pts = sorted((r[x], r[key]) for r in rows if r["name"] == name)
        series[name] = dict(pts)
    xs = sorted(set(series[a]) & set(series[b]))
    prev = None
    for xv in xs:
        ya, yb = series[a][xv], series[b][xv]
        if not (ya > 0 and yb > 0) or math.isnan(ya) or math.isnan(yb):
            prev = None
            continue
        diff = math.log(ya) - math.log(yb)
        if diff == 0:
            return float(xv)
        if prev is not None and (prev[1] < 0) != (diff < 0):
            x0, d0 = prev
            t = d0 / (d0 - diff)
            return float(math.exp(math.log(x0) + t * (math.log(xv) - math.log(x0))))
        prev = (xv, diff)
    return None


# --------------------------------------------------------------------------------------------- reports


def save_report(fig: Any, stem: str, rows: list[dict[str, Any]] | None = None,
                meta: dict[str, Any] | None = None, directory: str | os.PathLike | None = None) -> list[Any]:
    """Save a benchmark figure (PNG) and, when given, its rows and metadata (JSON) as `stem.png/.json`.

    directory: default the repository's reports/ folder when the notebook runs inside the repository
    (cwd or its parent holds reports/), else the current directory (e.g. /content on Colab).
    Returns the paths written.
    """
    import json
    from pathlib import Path

    if directory is None:
        cwd = Path.cwd()
        directory = next((p / "reports" for p in (cwd, cwd.parent) if (p / "reports").is_dir()), cwd)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    if rows is not None or meta is not None:
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                 for r in (rows or [])]
        paths.append(out / f"{stem}.json")
        paths[1].write_text(json.dumps({"meta": meta or {}, "rows": clean}, indent=1) + "\n")
    return paths


# ------------------------------------------------- steady timings: one thread count everywhere, and the spread

BENCH_THREADS = 1
"""torch's intra-op thread count for every timing in the labs (the default of `fixed_threads`)."""


@contextlib.contextmanager
def fixed_threads(threads: int = BENCH_THREADS) -> Iterator[int]:
    """Run the body with torch's intra-op thread count set to `threads`; the previous count is restored after,
    also when the body raises. Yields the count in force.

    Every lab times its code inside `with bench.fixed_threads():`, so that all labs measure the same way. One
    thread by default: on a small CPU shared with other work, two threads make every operation wait for the
    slower one, and a core taken by another process adds milliseconds at random; one thread is steady and,
    for the labs' small tensors, rarely slower. GPU kernels are not affected (they run on the device).
    """
    if threads < 1:
        raise ValueError(f"fixed_threads: threads must be >= 1; got {threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def time_stats(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 3,
    reps: int = 10,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Wall-clock times of `fn(*args, **kwargs)` in milliseconds: the median and the spread of the runs.

    Measured as `time_fn` measures (`warmup` untimed calls, then `reps` timed ones, the device synchronised
    around each). Returns {"median", "min", "q1", "q3", "max": ms, "reps": reps, "times": [ms per run]};
    q1 and q3 are the quartiles (the middle half of the runs lies between them). Report the median (or the
    min) with the spread: a single number hides how much another process moved it.
    """
    if reps < 1:
        raise ValueError(f"time_stats: reps must be >= 1; got {reps}.")
    dev = _device_of(args, device)
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        synchronize(dev)
        times.append(1e3 * (time.perf_counter() - t0))
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if reps > 1 else (times[0],) * 3
    return {"median": statistics.median(times), "min": min(times), "q1": q1, "q3": q3, "max": max(times),
            "reps": reps, "times": times}


def sweep_stats(
    fns: dict[str, Callable[..., Any]],
    sizes: Sequence[int],
    make_inputs: Callable[[int], tuple],
    *,
    x: str = "N",
    warmup: int = 2,
    reps: int = 7,
    memory: bool = True,
    flops: bool = False,
    device: torch.device | str | None = None,
    desc: str = "sizes",
    progress: bool = True,
    threads: int = BENCH_THREADS,
) -> list[dict[str, Any]]:
    """`sweep`, with the spread of the timed runs in every row and torch's thread count fixed.

    Rows as `sweep`'s ({"name", x, "ms", "peak_bytes", "flops", "device"}, "ms" the median), plus
    "ms_min", "ms_q1", "ms_q3", "ms_max" (see `time_stats`), "reps" and "threads". Runs under
    `fixed_threads(threads)` and torch.no_grad(); a CUDA out-of-memory error gives NaN for that size and the
    larger ones of that function, as in `sweep`; any other error propagates.
    """

    def timing(name: str, fn: Callable[..., Any], args: tuple, dev: torch.device, size: int) -> dict[str, float]:
        stats = time_stats(fn, *args, warmup=warmup, reps=reps, device=dev)
        return {"ms": stats["median"], "ms_min": stats["min"], "ms_q1": stats["q1"], "ms_q3": stats["q3"],
                "ms_max": stats["max"]}

    with fixed_threads(threads), torch.no_grad():
        rows = _sweep(fns, sizes, make_inputs, x=x, memory=memory, flops=flops, device=device, desc=desc,
                      progress=progress, timing=timing, timing_keys=("ms", "ms_min", "ms_q1", "ms_q3", "ms_max"))
    return [{**row, "reps": reps, "threads": threads} for row in rows]


__all__ += ["BENCH_THREADS", "fixed_threads", "sweep_stats", "time_stats"]


# ------------------------------------------------------------------ GPU kernels: a benchmark that can be trusted
#
# What makes a GPU figure repeatable, and what `benchmark` does about each cause of a wrong one:
# - the first call compiles (Triton JIT, or loads it from the disk cache) and autotunes (runs every config):
#   timed on its own and reported as `first_call_s`, never mixed into the steady-state figure;
# - clocks and caches settle only after some work: a warm-up *by time* (`warmup_ms`, every input set at least
#   once), not by a count that a 5 µs kernel finishes in microseconds;
# - a kernel that re-reads the inputs it has just read finds them in L2 (50 MB on an H200) and looks faster
#   than it is in a model, where they come from HBM: the inputs are rotated over enough distinct sets that
#   together they exceed twice the L2 size;
# - a handful of runs (Lab 03's sweeps took 7 of ~0.5 ms: 3.5 ms in all) catches one hiccup of the CPU or the
#   clocks and calls it the figure: `rep_ms` of runs (at least `min_reps`), each timed with its own pair of
#   CUDA events, summarised by the median with p10–p90;
# - a launch-bound call (small T: a few µs of GPU work behind ~100 µs of Python and launches) measures the CPU,
#   whose speed varies with the machine and what else runs on it: `cuda_graph=True` replays a captured graph,
#   which takes the CPU out, and the two figures together say how much of the eager time is launch overhead.
#
# Why not `triton.testing.do_bench`: its method is the same (events per run, warm-up and repetitions by time),
# but it discards the first call's time, flushes L2 with a 256 MB memset (a kernel of its own) before every run
# instead of rotating the caller's inputs, and needs a GPU driver, so none of it can be tested here; its graph
# variant, do_bench_cudagraph, times a graph of many calls on one input (kept in L2) and returns averages, not
# single runs. The loop below is ~30 lines, takes its clock as an argument, and is tested on a CPU with a fake one.

DEFAULT_L2_BYTES = 128 * 2**20
"""L2 size assumed when torch does not report it (more than an H200's 50 MB: rotation errs on the safe side)."""


def require_gpu(what: str, device: torch.device | str | None = None) -> torch.device:
    """The CUDA device to time on, or RuntimeError("timing needs a GPU: ...") saying why there is none."""
    if device is not None and torch.device(device).type != "cuda":
        raise RuntimeError(
            f"timing needs a GPU: {what} times kernels with CUDA events, and the inputs are on "
            f"{torch.device(device)}. Make them on 'cuda' (make_inputs(..., device='cuda')). For CPU code, "
            "bench.time_stats gives wall-clock figures.")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"timing needs a GPU: {what} times kernels with CUDA events, and this process sees no CUDA device "
            f"(torch {torch.__version__}). GPU figures cannot be measured here; for CPU code, bench.time_stats "
            "gives wall-clock figures. On Colab: Runtime → Change runtime type → T4 GPU.")
    return torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())


def l2_cache_bytes(device: torch.device | str | None = None) -> int:
    """The GPU's L2 cache size in bytes (torch's `L2_cache_size`; 50 MB on an H200, 4 MB on a T4), or
    `DEFAULT_L2_BYTES` where torch does not report it. Needs a GPU."""
    dev = require_gpu("l2_cache_bytes", device)
    return int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or DEFAULT_L2_BYTES)


def _as_call(obj: Any) -> tuple[tuple, dict]:
    """One input set as (args, kwargs): a tuple or list is positional, a dict keyword, anything else one arg."""
    if isinstance(obj, dict):
        return (), dict(obj)
    if isinstance(obj, (tuple, list)):
        return tuple(obj), {}
    return (obj,), {}


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)


def input_bytes(inputs: Any) -> int:
    """Bytes of the distinct tensors in one input set (a tensor, or tuples / lists / dicts of them): a tensor
    passed twice (q, q, q) counts once. Works on any device (meta included)."""
    seen: dict[tuple[str, int], int] = {}
    for t in _tensors(inputs):
        key = (str(t.device), t.data_ptr() if t.device.type != "meta" else id(t))
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size())
    return int(sum(seen.values()))


def rotation_count(set_bytes: int, l2_bytes: int, *, max_sets: int = 128, budget_bytes: int | None = None) -> int:
    """How many distinct input sets to cycle through so that they keep the L2 cache from holding the inputs:
    enough to fill twice `l2_bytes` (at least 2, so a set is never read twice in a row), at most `max_sets`,
    and at most `budget_bytes` of them in all. 1 when the sets hold no tensors (nothing to rotate).

    Below 2 × L2 in all (tiny sets hitting `max_sets`, or the memory budget), part of the inputs may be read
    from L2: `Measurement.cold_l2` says whether the rotation covered the cache.
    """
    if set_bytes <= 0:
        return 1
    n = min(max(2, math.ceil(2 * l2_bytes / set_bytes)), max_sets)
    if budget_bytes is not None:
        n = min(n, max(1, budget_bytes // set_bytes))
    return int(n)


def make_input_sets(inputs: Callable[[], Any], count: int, first: Any = None) -> list[tuple[tuple, dict]]:
    """`count` input sets from `inputs()` (`first` as the first when given), checked to share no tensor: a
    function that returns the same tensors every time would make the rotation measure a warm cache."""
    made = [first if first is not None else inputs()] + [inputs() for _ in range(count - 1)]
    owner: dict[tuple[str, int], int] = {}
    for j, s in enumerate(made):
        for t in _tensors(s):
            if t.device.type == "meta" or t.numel() == 0:
                continue
            key = (str(t.device), t.data_ptr())
            if owner.setdefault(key, j) != j:
                raise ValueError(
                    f"benchmark: inputs() returned the same tensor in set {owner[key]} and set {j}; it must make "
                    "new tensors on every call (e.g. lambda: make_inputs(B, T, H, K, V)), else rotating the input "
                    "sets measures a warm L2 cache. Pass rotate=1 to time one set over and over on purpose.")
    return [_as_call(s) for s in made]


_MAX_WARMUP_CALLS = 100_000  # a bound, should a clock stand still


class _CudaClock:
    """What the timing loop needs from the device: a barrier, a wall clock, timing events."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    @staticmethod
    def event() -> Any:
        return torch.cuda.Event(enable_timing=True)


def _time_first_call(call: Callable[[], Any], clock: Any) -> float:
    """Seconds of one call, the device synchronised before and after (compilation and autotuning included)."""
    clock.sync()
    t0 = clock.now()
    call()
    clock.sync()
    return clock.now() - t0


def _time_runs(call: Callable[[int], Any], n_sets: int, clock: Any, *, warmup_ms: float, rep_ms: float,
               min_reps: int, max_reps: int, start: int = 1) -> tuple[int, float, list[float]]:
    """The steady-state loop. call(j) runs the function on input set j.

    Warm-up: calls (the device synchronised after each, so the wall clock sees the device's work) until
    `warmup_ms` have passed and every set ran once (3 calls at least). Runs: as many as fit in `rep_ms` at the
    warm-up's pace, clamped to [min_reps, max_reps], issued back to back, each between two events; set j is
    followed by set j + 1 (mod n_sets) from `start` on.
    Returns (warm-up calls, warm-up seconds, [ms per run]).
    """
    j, calls = start, 0
    t0 = clock.now()
    while calls < max(3, n_sets) or (1e3 * (clock.now() - t0) < warmup_ms and calls < _MAX_WARMUP_CALLS):
        call(j % n_sets)
        clock.sync()
        j, calls = j + 1, calls + 1
    warm_s = clock.now() - t0
    per_call_ms = max(1e3 * warm_s / calls, 1e-6)
    reps = int(min(max_reps, max(min_reps, math.ceil(rep_ms / per_call_ms))))
    starts, ends = [clock.event() for _ in range(reps)], [clock.event() for _ in range(reps)]
    for r in range(reps):
        starts[r].record()
        call((j + r) % n_sets)
        ends[r].record()
    clock.sync()
    return calls, warm_s, [float(s.elapsed_time(e)) for s, e in zip(starts, ends)]


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Measurement:
    """One function timed by `benchmark` on one problem. Times in milliseconds unless named `_s`.

    times_ms: each timed run (CUDA events around one call).  first_call_s: the first call alone (compilation,
    autotuning and the run; a kernel compiled earlier in the process only runs).  warmup_calls, warmup_s: the
    untimed warm-up.  input_sets, input_set_bytes: the rotation (sets cycled, bytes of one).  l2_bytes: the L2
    size it was sized against.  bytes, flops: the work of one call as the caller counts it (a model, e.g.
    inputs read + outputs written; the FLOPs of the matrix products), or None.  dtype: the compute dtype whose
    matmul roof `fractions` compares with ("bfloat16", "float32", "tf32", ...), by default the first
    floating-point input's.  cuda_graph: the runs replayed a captured CUDA graph (no CPU launch cost).

    Derived: median_ms, p10_ms, q1_ms, q3_ms, p90_ms, min_ms, max_ms, n; gbs = bytes / median (GB/s, 1e9 B/s);
    tflops = flops / median (TFLOP/s, 1e12 FLOP/s); intensity = flops / bytes (FLOP per byte); NaN where
    bytes or flops are missing.
    """

    name: str
    times_ms: tuple[float, ...]
    first_call_s: float
    warmup_calls: int = 0
    warmup_s: float = 0.0
    input_sets: int = 1
    input_set_bytes: int = 0
    l2_bytes: int = 0
    bytes: float | None = None
    flops: float | None = None
    dtype: str | None = None
    cuda_graph: bool = False
    device: str = "cuda"

    def __post_init__(self):
        if not self.times_ms:
            raise ValueError(f"Measurement {self.name!r}: no timed runs.")

    def _pct(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(np.asarray(self.times_ms, dtype=float), q))

    n = property(lambda self: len(self.times_ms), doc="number of timed runs")
    median_ms = property(lambda self: self._pct(50), doc="median of the runs (ms): the figure to report")
    p10_ms = property(lambda self: self._pct(10), doc="10th percentile of the runs (ms)")
    q1_ms = property(lambda self: self._pct(25), doc="first quartile (ms)")
    q3_ms = property(lambda self: self._pct(75), doc="third quartile (ms)")
    p90_ms = property(lambda self: self._pct(90), doc="90th percentile of the runs (ms)")
    min_ms = property(lambda self: min(self.times_ms), doc="fastest run (ms)")
    max_ms = property(lambda self: max(self.times_ms), doc="slowest run (ms)")

    @property
    def seconds(self) -> float:
        """The median in seconds."""
        return self.median_ms / 1e3

    @property
    def gbs(self) -> float:
        """bytes / median time, in GB/s (1e9 bytes per second); NaN without `bytes`."""
        return float("nan") if self.bytes is None else self.bytes / self.seconds / 1e9

    @property
    def tflops(self) -> float:
        """flops / median time, in TFLOP/s (1e12 FLOPs per second); NaN without `flops`."""
        return float("nan") if self.flops is None else self.flops / self.seconds / 1e12

    @property
    def intensity(self) -> float:
        """Arithmetic intensity flops / bytes (FLOP per byte); NaN without both."""
        if self.bytes is None or self.flops is None or self.bytes <= 0:
            return float("nan")
        return self.flops / self.bytes

    @property
    def cold_l2(self) -> bool:
        """Whether the rotated input sets together exceed the L2 cache (else part of them may be read from it)."""
        return self.input_sets * self.input_set_bytes > self.l2_bytes

    def point(self) -> Any:
        """This measurement as a `roofline.RooflinePoint` (needs bytes and flops)."""
        from course_utils.roofline import roofline_point

        if self.bytes is None or self.flops is None:
            raise ValueError(f"Measurement {self.name!r}: a roofline point needs bytes= and flops= (got "
                             f"bytes={self.bytes}, flops={self.flops}).")
        return roofline_point(self.bytes, self.flops, self.seconds, name=self.name)

    def fractions(self, ceilings: Any, dtype: Any = None) -> dict[str, float]:
        """Fractions (0..1, NaN where unknown) of a `roofline.Ceilings`:
        pct_bandwidth = GB/s over the measured copy bandwidth; pct_compute = TFLOP/s over the matmul rate of
        `dtype` (default self.dtype); pct_roofline = TFLOP/s over the attainable rate at this intensity,
        min(peak, intensity × bandwidth)."""
        from course_utils.roofline import dtype_key

        nan = float("nan")
        dtype = self.dtype if dtype is None else dtype
        peak = nan if dtype is None else ceilings.tflops.get(dtype_key(dtype), nan)
        out = {"pct_bandwidth": self.gbs / ceilings.bandwidth_gbs, "pct_compute": self.tflops / peak,
               "pct_roofline": nan}
        if not math.isnan(self.intensity) and not math.isnan(peak):
            out["pct_roofline"] = self.tflops / min(peak, self.intensity * ceilings.bandwidth_gbs / 1e3)
        return out

    def stats(self) -> dict[str, Any]:
        """The runs in `time_stats`'s form, for plots.plot_timings_spread: {"median", "min", "q1", "q3", "max",
        "p10", "p90": ms, "reps": n, "times": [ms per run]}."""
        return {"median": self.median_ms, "min": self.min_ms, "q1": self.q1_ms, "q3": self.q3_ms, "max": self.max_ms,
                "p10": self.p10_ms, "p90": self.p90_ms, "reps": self.n, "times": list(self.times_ms)}

    def row(self, ceilings: Any = None) -> dict[str, Any]:
        """A flat dict for tables and plots: "name", "ms" (median), "ms_min", "ms_p10", "ms_q1", "ms_q3",
        "ms_p90", "ms_max", "n", "first_call_s", "bytes", "flops", "gbs", "tflops", "intensity", "dtype",
        "input_sets", "cold_l2", "cuda_graph", and with `ceilings` "pct_bandwidth", "pct_compute",
        "pct_roofline" (fractions, 0..1). Keys "ms", "ms_q1", "ms_q3" are those plots.plot_scaling_pairs reads."""
        nan = float("nan")
        r = {"name": self.name, "ms": self.median_ms, "ms_min": self.min_ms, "ms_p10": self.p10_ms,
             "ms_q1": self.q1_ms, "ms_q3": self.q3_ms, "ms_p90": self.p90_ms, "ms_max": self.max_ms, "n": self.n,
             "first_call_s": self.first_call_s, "bytes": nan if self.bytes is None else float(self.bytes),
             "flops": nan if self.flops is None else float(self.flops), "gbs": self.gbs, "tflops": self.tflops,
             "intensity": self.intensity, "dtype": self.dtype, "input_sets": self.input_sets,
             "cold_l2": self.cold_l2, "cuda_graph": self.cuda_graph}
        if ceilings is not None:
            r.update(self.fractions(ceilings))
        return r

    def __str__(self) -> str:
        s = (f"{self.name}: {self.median_ms:.4g} ms [p10–p90 {self.p10_ms:.4g}–{self.p90_ms:.4g}], n={self.n}, "
             f"first call {self.first_call_s:.3g} s")
        if self.bytes is not None:
            s += f", {self.gbs:,.0f} GB/s"
        if self.flops is not None:
            s += f", {self.tflops:.3g} TFLOP/s"
        return s + (", CUDA graph" if self.cuda_graph else "")


def _capture_graphs(fn: Callable[..., Any], sets: list[tuple[tuple, dict]], device: torch.device,
                    name: str) -> list[Any]:
    """One CUDA graph per input set, in one shared memory pool (they replay one after another, never together).
    torch's recipe: a few eager calls on a side stream first, then capture."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for args, kwargs in sets[:3]:
            fn(*args, **kwargs)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graphs, pool = [], None
    try:
        for args, kwargs in sets:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = fn(*args, **kwargs)
            del out
            pool = graph.pool() if pool is None else pool
            graphs.append(graph)
    except Exception as err:
        raise RuntimeError(
            f"benchmark: {name} cannot be captured in a CUDA graph ({type(err).__name__}: {err}). A captured "
            "function may not synchronise, read a tensor's value on the CPU (.item(), printing, a Python `if` "
            "on a tensor) or allocate outside torch's allocator. Time it with cuda_graph=False.") from err
    torch.cuda.synchronize(device)
    return graphs


def benchmark(
    fn: Callable[..., Any],
    inputs: Callable[[], Any],
    *,
    name: str | None = None,
    bytes: float | None = None,
    flops: float | None = None,
    dtype: Any = None,
    warmup_ms: float = 200.0,
    rep_ms: float = 200.0,
    min_reps: int = 10,
    max_reps: int = 10_000,
    rotate: int | None = None,
    l2_bytes: int | None = None,
    cuda_graph: bool = False,
    device: torch.device | str | None = None,
) -> Measurement:
    """Time `fn` on a GPU: the first call on its own, then the median and spread of many steady-state runs.

    fn: called as fn(*set) for a tuple (or list) set, fn(**set) for a dict, fn(set) otherwise.
    inputs: a function of no arguments that makes ONE new input set (e.g. `lambda: make_inputs(4, T, 8, 64,
        64, dtype=torch.bfloat16)`), called once per set; sets must not share tensors (checked).
    bytes, flops: one call's memory traffic (bytes) and work (FLOPs), as your model counts them; give them for
        GB/s, TFLOP/s and a roofline point.  dtype: the compute roof's dtype for `Measurement.fractions`
        (default the first floating-point input's; "tf32" for float32 matmuls on TF32 tensor cores).
    warmup_ms: the warm-up's length in milliseconds (every set at least once, 3 calls at least).
    rep_ms: how long to time for: ceil(rep_ms / the warm-up's ms per call) runs, clamped to [min_reps, max_reps].
    rotate: the number of input sets to cycle through; None sizes it so that together they exceed twice the
        L2 cache (`rotation_count`: at least 2, at most 128, at most a quarter of the free GPU memory);
        1 times one set over and over (a warm cache, on purpose).  l2_bytes: override the L2 size.
    cuda_graph: capture one CUDA graph per set and time its replays (after an eager first call and warm-up):
        the GPU's time without the CPU's launch cost. For launch-bound calls (small problems); fails with a
        clear error when `fn` cannot be captured.
    device: the GPU (default: that of the first input tensor, else the current one).

    What it does, in order: the first call of set 0 (synchronised before and after) -> first_call_s; a
    warm-up by time; then the timed runs, back to back, set j then j + 1 (mod sets), each between two CUDA
    events. The median of the per-run times is the figure (robust to the odd slow run); p10–p90 its spread.
    Not under torch.no_grad(): wrap `fn` if its inputs require grad and you time the forward pass only.
    Raises RuntimeError("timing needs a GPU: ...") without a CUDA device or with inputs on the CPU.

    Which figure to quote: the median. For a launch-bound call (GPU work much shorter than the few µs per
    kernel launch plus the Python around it), the eager median is the CPU's time to issue the call, and it
    moves with the machine; quote it beside the cuda_graph=True median, the GPU's own time, and say which is
    which.

    Example:
        make = lambda: make_inputs(4, 4096, 8, 64, 64, dtype=torch.bfloat16)  # q, k, v [B, T, H, 64], new each call
        m = bench.benchmark(lambda q, k, v: kernel(q, k, v), make, name="mine",
                            bytes=4 * 4096 * 8 * 4 * 64 * 2, flops=4 * 8 * 4 * 4096 * 64 * 64)
        print(m)  # mine: 0.21 ms [p10–p90 ...], n=..., first call ... s, ... GB/s, ... TFLOP/s
        m.fractions(roofline.measure_ceilings())  # {"pct_bandwidth": ..., "pct_compute": ..., "pct_roofline": ...}
    """
    name = name or getattr(fn, "__name__", "fn")
    if not callable(fn):
        raise TypeError(f"benchmark: fn must be a function; got {type(fn).__name__}.")
    if not callable(inputs):
        raise TypeError(
            f"benchmark: inputs must be a function that makes ONE new input set (e.g. lambda: make_inputs(...)); "
            f"got {type(inputs).__name__}. It is called once per rotated set, so that the sets are distinct tensors.")
    dev = require_gpu("bench.benchmark", device)
    first = inputs()
    tensors = list(_tensors(first))
    if device is None and tensors:
        dev = tensors[0].device
    require_gpu("bench.benchmark", dev)
    if dtype is None:
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), None)
    l2 = int(l2_bytes) if l2_bytes is not None else l2_cache_bytes(dev)
    set_bytes = input_bytes(first)
    if rotate is None:
        free, _total = torch.cuda.mem_get_info(dev)
        rotate = rotation_count(set_bytes, l2, budget_bytes=free // 4)
    if rotate < 1:
        raise ValueError(f"benchmark: rotate must be >= 1 (or None); got {rotate}.")
    sets = make_input_sets(inputs, rotate, first=first)
    clock = _CudaClock(dev)

    def eager(j: int) -> None:
        args, kwargs = sets[j]
        fn(*args, **kwargs)

    # events record on the current device's stream: make it the inputs' device
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        first_call_s = _time_first_call(lambda: eager(0), clock)
        call = eager
        if cuda_graph:
            graphs = _capture_graphs(fn, sets, dev, name)
            call = lambda j: graphs[j].replay()  # noqa: E731
        calls, warm_s, times = _time_runs(call, len(sets), clock, warmup_ms=warmup_ms, rep_ms=rep_ms,
                                          min_reps=min_reps, max_reps=max_reps)
    return Measurement(name=name, times_ms=tuple(times), first_call_s=first_call_s, warmup_calls=calls,
                       warmup_s=warm_s, input_sets=len(sets), input_set_bytes=set_bytes, l2_bytes=l2,
                       bytes=bytes, flops=flops, dtype=_dtype_name(dtype), cuda_graph=cuda_graph, device=str(dev))


_COMPARE_KEYS = ("ms", "ms_min", "ms_p10", "ms_q1", "ms_q3", "ms_p90", "ms_max", "first_call_s", "gbs", "tflops",
                 "intensity")


def compare(
    fns: dict[str, Callable[..., Any]],
    sizes: Sequence[int],
    make_inputs: Callable[[int], Any],
    *,
    x: str = "T",
    bytes: Callable[[int], float] | dict[str, Callable[[int], float]] | None = None,
    flops: Callable[[int], float] | dict[str, Callable[[int], float]] | None = None,
    ceilings: Any = None,
    memory: bool = True,
    device: torch.device | str | None = None,
    desc: str = "sizes",
    progress: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """`benchmark` every function at every size, under torch.no_grad(), with a tqdm progress bar over sizes.

    fns: {name: fn}, each called as fn(*make_inputs(size)).  make_inputs(size): one NEW input set (a tuple);
        called once per rotated set.  x: the swept variable's name, the rows' key for the size. To sweep a
        kernel's parameter instead (time against block size), put it in the set: make_inputs = lambda BT:
        (*make(T), BT) with fns = {"mine": lambda q, k, v, BT: kernel(q, k, v, BT)} and x="BT" (non-tensors
        in a set are passed through, not rotated or counted).
    bytes, flops: size -> one call's bytes / FLOPs (the same model for every function), or {name: size -> ...}
        per function; they give the rows' "gbs", "tflops", "intensity".  ceilings: a `roofline.Ceilings`: adds
        "pct_bandwidth", "pct_compute", "pct_roofline" (fractions, 0..1).  memory: also the peak memory
        (`peak_memory_bytes`, one more call).  options: passed to `benchmark` (warmup_ms, rep_ms, cuda_graph, ...).
    Returns one row per (size, name), sizes outermost: `Measurement.row()`'s keys plus x, "peak_bytes" and
    "device". A CUDA out-of-memory error gives NaN for that size and every larger one of that function; any other
    error propagates (on a CPU: "timing needs a GPU").
    """
    taken = {"name", "n", "bytes", "flops", "dtype", "device", "peak_bytes", "input_sets", "cold_l2", "cuda_graph",
             *_COMPARE_KEYS}
    if x in taken:
        raise ValueError(f"compare: x={x!r} is a key the rows already use for something else; name the swept "
                         "variable differently (e.g. x='T', 'N', 'BT').")
    require_gpu("bench.compare", device)

    def model(spec: Any, name: str, size: int) -> float | None:
        f = spec.get(name) if isinstance(spec, dict) else spec
        return None if f is None else float(f(size))

    def timing(name: str, fn: Callable[..., Any], args: tuple, dev: torch.device, size: int) -> dict[str, Any]:
        m = benchmark(fn, lambda: make_inputs(size), name=name, bytes=model(bytes, name, size),
                      flops=model(flops, name, size), device=dev, **options)
        return m.row(ceilings)

    with torch.no_grad():
        return _sweep(fns, sizes, make_inputs, x=x, memory=memory, flops=False, device=device, desc=desc,
                      progress=progress, timing=timing, timing_keys=_COMPARE_KEYS)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def format_table(rows: Sequence[dict[str, Any]], *, x: str | None = None) -> str:
    """Rows of `compare` (or `Measurement.row()`) as a plain-text table, one line per row:
    name, the size (column `x` when given), time "median [p10–p90]" in ms, runs, first call (s), GB/s, TFLOP/s,
    and, where the rows hold them, % of the copy bandwidth, % of the matmul peak, % of the roofline. Columns
    with no value in any row are left out; "–" marks a missing value (not measured, out of memory)."""
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [("name", lambda r: str(r["name"]))]
    if x is not None:
        cols.append((x, lambda r: _fmt(r.get(x), ",")))
    cols += [
        ("time ms: median [p10–p90]",
         lambda r: f"{_fmt(r.get('ms'), '.4g')} [{_fmt(r.get('ms_p10'), '.4g')}–{_fmt(r.get('ms_p90'), '.4g')}]"),
        ("runs", lambda r: _fmt(r.get("n"), "d")),
        ("1st call s", lambda r: _fmt(r.get("first_call_s"), ".3g")),
        ("GB/s", lambda r: _fmt(r.get("gbs"), ",.0f")),
        ("TFLOP/s", lambda r: _fmt(r.get("tflops"), ".3g")),
        ("% copy BW", lambda r: _fmt(100 * r["pct_bandwidth"], ".0f") if "pct_bandwidth" in r else "–"),
        ("% matmul", lambda r: _fmt(100 * r["pct_compute"], ".0f") if "pct_compute" in r else "–"),
        ("% roofline", lambda r: _fmt(100 * r["pct_roofline"], ".0f") if "pct_roofline" in r else "–"),
    ]
    cells = [[f(r) for _, f in cols] for r in rows]
    keep = [i for i, (head, _) in enumerate(cols)
            if i < 3 or head in ("runs",) or any(c[i] != "–" for c in cells)]
    heads = [cols[i][0] for i in keep]
    table = [[c[i] for i in keep] for c in cells]
    widths = [max([len(h)] + [len(t[k]) for t in table]) for k, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(heads, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) if k == 0 else v.rjust(w) for k, (v, w) in enumerate(zip(t, widths)))
              for t in table]
    return "\n".join(lines)


__all__ += ["DEFAULT_L2_BYTES", "Measurement", "benchmark", "compare", "format_table", "input_bytes", "require_gpu",
            "l2_cache_bytes", "make_input_sets", "rotation_count"]
