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
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
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
                          timing=lambda fn, args, dev: {"ms": time_fn(fn, *args, warmup=warmup, reps=reps,
                                                                      device=dev)})
    finally:
        torch.set_num_threads(threads_before)


def _sweep(fns, sizes, make_inputs, *, x, memory, flops, device, desc, progress, timing, timing_keys):
    """The loop of `sweep` and `sweep_stats`: timing(fn, args, device) -> {key: ms} fills the row's timing
    keys (NaN until measured, and for every size from a function's first CUDA out-of-memory error on)."""
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
                row.update(timing(fn, args, dev))
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

    def timing(fn: Callable[..., Any], args: tuple, dev: torch.device) -> dict[str, float]:
        stats = time_stats(fn, *args, warmup=warmup, reps=reps, device=dev)
        return {"ms": stats["median"], "ms_min": stats["min"], "ms_q1": stats["q1"], "ms_q3": stats["q3"],
                "ms_max": stats["max"]}

    with fixed_threads(threads), torch.no_grad():
        rows = _sweep(fns, sizes, make_inputs, x=x, memory=memory, flops=flops, device=device, desc=desc,
                      progress=progress, timing=timing, timing_keys=("ms", "ms_min", "ms_q1", "ms_q3", "ms_max"))
    return [{**row, "reps": reps, "threads": threads} for row in rows]


__all__ += ["BENCH_THREADS", "fixed_threads", "sweep_stats", "time_stats"]
