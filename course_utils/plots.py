"""Figures the notebooks draw, by topic: attention's weights and cost, random features, the recurrent state,
the chunkwise form, gated linear attention. Every function returns the matplotlib Figure (and draws nothing
else), so a notebook shows it inline and a test can inspect it under the Agg backend.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from course_utils.bench import crossover

__all__ = [
    "METRIC_LABELS",
    "binary_bytes_axis",
    "plot_attention_matrices",
    "plot_chunk_cost",
    "plot_chunk_partition",
    "plot_complexity",
    "plot_feature_error",
    "plot_gate_decay",
    "plot_gated_errors",
    "plot_gla_chunk_partition",
    "plot_pair_errors",
    "plot_scaling",
    "plot_state_vs_cache",
]

METRIC_LABELS = {
    "ms": "time per call (ms, median)",
    "peak_bytes": "peak memory above inputs",
    "flops": "matmul FLOPs (FlopCounterMode)",
}

_PALETTE = ["tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown"]


# --------------------------------------------------------------- axes, colours, arrays: shared by every figure


def _tick_bytes(v: float, _pos: Any = None) -> str:
    """Tick label for a power-of-two byte count: 512 B, 4 KiB, 3 MiB (exact, so no '976.562 KiB')."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024:
            return f"{v:g} {unit}"
        v /= 1024
    return f"{v:g} PiB"


def binary_bytes_axis(ax: Any, axis: str = "y") -> None:
    """Log base-2 bytes axis, ticks at powers of two (at most ~7) labelled B/KiB/MiB/GiB."""
    getattr(ax, f"set_{axis}scale")("log", base=2)
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(LogLocator(base=2, numticks=7))
    target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(_tick_bytes))


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


def _as_array(x: Any) -> np.ndarray:
    """A float numpy array from a tensor (any device/dtype) or a sequence."""
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _finish(fig: Figure, title: str | None = None, ax: Any = None) -> Figure:
    """Every figure's last step: the title (the Axes' own when `ax` is given, else the figure's), then a tight
    layout. Returns `fig`."""
    if title:
        if ax is not None:
            ax.set_title(title, fontsize=10)
        else:
            fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ attention: its weights, its cost against N


def plot_attention_matrices(mats: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Heatmaps of T x T matrices side by side: row t is the query, column s the key.

    mats: {panel title: [T, T] tensor or array}. Entries that are exactly zero (a causal mask's future)
    are left white, so the mask shows as the empty upper triangle.
    """
    fig, axes = plt.subplots(1, len(mats), figsize=(4.3 * len(mats), 3.9), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        a = _as_array(m)
        im = ax.imshow(np.ma.masked_where(a == 0, a), cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("key position s")
        ax.set_ylabel("query position t")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _finish(fig, title)


def plot_scaling(
    rows: list[dict[str, Any]],
    metrics: Sequence[str] = ("ms", "peak_bytes", "flops"),
    *,
    x: str = "N",
    pair: tuple[str, str] | None = None,
    models: Mapping[str, Mapping[str, Callable[[np.ndarray], np.ndarray]]] | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """One log-log panel per metric of `rows` (from `bench.sweep`), one line per function name.

    pair: (a, b) function names whose crossover is marked on each panel (a dotted vertical line where
        b becomes cheaper than a; without a crossing, which one is lower at every measured x).
        Default: the first and last names.
    models: {metric: {legend label: f(N array) -> values}} dashed closed-form curves (e.g. FLOP formulas
        or the analytic size of the T x T matrix), drawn on that metric's panel.
    labels: y-axis labels per metric (default METRIC_LABELS).
    Metrics whose values are all NaN are skipped.
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        raise ValueError("plot_scaling: no rows to plot.")
    pair = pair or (names[0], names[-1])
    colors = _colors(names)
    metrics = [m for m in metrics if any(not _isnan(r.get(m)) for r in rows)]
    labels = {**METRIC_LABELS, **(labels or {})}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.9), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name in names:
            pts = sorted((r[x], r[metric]) for r in rows if r["name"] == name and not _isnan(r.get(metric)))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", color=colors[name], label=name, ms=4)
        for i, (label, f) in enumerate((models or {}).get(metric, {}).items()):
            grid = np.array(sorted({r[x] for r in rows}), dtype=float)
            ax.plot(grid, f(grid), "--", color="0.35" if i == 0 else "0.6", lw=1.2, label=label)
        ax.set_xscale("log", base=2)
        if metric == "peak_bytes":
            binary_bytes_axis(ax)
        else:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, which="major", alpha=0.3)
        x_star = crossover(rows, pair[0], pair[1], key=metric, x=x)
        if x_star is not None:
            ax.axvline(x_star, color="k", ls=":", lw=1.2)
            ax.annotate(f"crossover\n{x}≈{x_star:,.0f}", xy=(x_star, 0.97), xycoords=("data", "axes fraction"),
                        ha="left", va="top", fontsize=8, xytext=(3, 0), textcoords="offset points")
        else:
            ax.text(0.03, 0.97, _no_crossover_text(rows, pair, metric, x), transform=ax.transAxes, va="top",
                    fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, title)


def _no_crossover_text(rows: list[dict[str, Any]], pair: tuple[str, str], metric: str, x: str) -> str:
    """"no crossover: <name> lower at every N" (or just "no crossover" when nothing can be compared)."""
    values = {name: {r[x]: r[metric] for r in rows if r["name"] == name and not _isnan(r.get(metric))}
              for name in pair}
    common = sorted(set(values[pair[0]]) & set(values[pair[1]]))
    if not common:
        return "no crossover"
    lower = pair[1] if values[pair[1]][common[-1]] < values[pair[0]][common[-1]] else pair[0]
    return f"no crossover: {lower}\nlower at every {x} measured"


def plot_complexity(
    N: int, d: int, *, H: int = 1, B: int = 1, bytes_per_element: int = 4, N_max: int = 2**17,
    memory_limit_bytes: float | None = 16 * 2**30,
) -> Figure:
    """Model curves (no measurement): FLOPs and the distinguishing intermediate's memory against N, for
    softmax attention and (associative) linear attention with head dim d, marking the chosen N and the
    crossovers. Drawn by `course_utils.widgets.ComplexityExplorer`.
    """
    from course_utils.bench import attention_flops, attention_memory_bytes, format_bytes

    Ns = np.unique(np.logspace(4, math.log2(N_max), 200, base=2).astype(int))
    fl_s = np.array([attention_flops(n, d, kind="softmax", B=B, H=H) for n in Ns], dtype=float)
    fl_l = np.array([attention_flops(n, d, kind="linear", B=B, H=H) for n in Ns], dtype=float)
    mem_s = np.array([attention_memory_bytes(n, d, kind="softmax", B=B, H=H, bytes_per_element=bytes_per_element)
                      for n in Ns], dtype=float)
    mem_l = np.array([attention_memory_bytes(n, d, kind="linear", B=B, H=H, bytes_per_element=bytes_per_element)
                      for n in Ns], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, ys, yl, ylabel in ((ax1, fl_s, fl_l, "matmul FLOPs (model)"),
                               (ax2, mem_s, mem_l, "memory (model)")):
        ax.plot(Ns, ys, color="tab:red", label="softmax  O(N²d)" if ax is ax1 else "softmax: B·H·N² scores")
        ax.plot(Ns, yl, color="tab:blue", label="linear  O(Nd²)" if ax is ax1 else "linear: B·H·(d²+d) state")
        ax.axvline(N, color="k", lw=1)
        ax.set_xscale("log", base=2)
        if ax is ax2:
            binary_bytes_axis(ax)
        else:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        diff = np.sign(ys - yl)
        idx = np.nonzero(diff[1:] != diff[:-1])[0]
        if len(idx):
            ax.axvline(Ns[idx[0] + 1], color="k", ls=":", lw=1)
    if memory_limit_bytes:
        ax2.axhline(memory_limit_bytes, color="0.5", ls="--", lw=1, label=f"{memory_limit_bytes / 2**30:g} GiB (a T4)")
    ratio = attention_flops(N, d, kind="softmax", B=B, H=H) / attention_flops(N, d, kind="linear", B=B, H=H)
    ax1.set_title(f"N={N:,}, d={d}: softmax needs {ratio:,.1f}× the FLOPs", fontsize=10)
    kw = dict(B=B, H=H, bytes_per_element=bytes_per_element)
    ax2.set_title(f"scores {format_bytes(attention_memory_bytes(N, d, kind='softmax', **kw))} vs "
                  f"state {format_bytes(attention_memory_bytes(N, d, kind='linear', **kw))}", fontsize=10)
    for ax in (ax1, ax2):
        ax.legend(fontsize=8, loc="upper left")
    return _finish(fig)


# ---------------------------------------------------------- random features: the error of the kernel estimates


def plot_feature_error(
    Ms: Sequence[int],
    errors: Mapping[str, np.ndarray],
    *,
    reference: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    ylabel: str = "relative error of exp(x·y)",
    title: str | None = None,
    band: bool = True,
    colors: Mapping[str, str] | None = None,
    ax=None,
) -> Figure:
    """Approximation error against the number of random features M, one line per estimator.

    Ms: [len(Ms)] feature counts.  errors: {name: array [len(Ms)] or [len(Ms), n]}: with a second axis
    (e.g. one error per draw, or per query-key pair) the line is the mean over it and, when `band`, the
    shaded band ± one standard deviation.
    reference: optional dashed curves {label: f(M array)}, e.g. a closed-form error or c / sqrt(M).
    colors: {name: colour} (default: a fixed palette in the order of `errors`).
    ax: draw into this Axes (e.g. one panel of a larger figure); default a new figure.
    """
    Ms_arr = np.asarray(Ms, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
    fig = ax.figure
    colors = {**_colors(list(errors)), **(colors or {})}
    for name, err in errors.items():
        err = np.asarray(err, dtype=float)
        if err.ndim == 1:
            err = err[:, None]
        if err.shape[0] != len(Ms_arr):
            raise ValueError(f"plot_feature_error: errors[{name!r}] has {err.shape[0]} rows for {len(Ms_arr)} Ms.")
        mean, std = err.mean(1), err.std(1)
        ax.plot(Ms_arr, mean, "o-", color=colors[name], label=name, ms=4)
        if band:
            ax.fill_between(Ms_arr, np.clip(mean - std, mean * 1e-3, None), mean + std, color=colors[name],
                            alpha=0.15)
    for i, (label, f) in enumerate((reference or {}).items()):
        ax.plot(Ms_arr, f(Ms_arr), ls=("--", ":", "-.")[i % 3], color="0.3", lw=1.2, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of random features M")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, title, ax=ax)


def plot_pair_errors(
    xy: np.ndarray,
    errors: Mapping[str, np.ndarray],
    *,
    curves: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    xlabel: str = "x·y (so the kernel is exp(x·y))",
    ylabel: str = "relative error of the estimate",
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
    ax=None,
) -> Figure:
    """Per-pair errors against a per-pair quantity (e.g. x·y): one scatter per estimator.

    xy: [P] the quantity on the x-axis for P pairs.  errors: {name: [P]}.  curves: optional closed-form
    lines {label: f(xy grid)}.  colors: {name: colour}, to match another panel (default: fixed palette).
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
    fig = ax.figure
    xy = np.asarray(xy, dtype=float)
    colors = {**_colors(list(errors)), **(colors or {})}
    for name, err in errors.items():
        err = np.asarray(err, dtype=float)
        if err.shape != xy.shape:
            raise ValueError(f"plot_pair_errors: errors[{name!r}] has shape {err.shape}, xy has {xy.shape}.")
        ax.scatter(xy, err, s=6, alpha=0.45, color=colors[name], label=name)
    grid = np.linspace(xy.min(), xy.max(), 200)
    for i, (label, f) in enumerate((curves or {}).items()):
        ax.plot(grid, f(grid), ls=("--", ":", "-.")[i % 3], color="0.2", lw=1.3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, markerscale=2)
    return _finish(fig, title, ax=ax)


# ----------------------------------------------------------------------- recurrent state: what a decoder keeps


def plot_state_vs_cache(
    lengths: Sequence[int],
    kv_bytes: Sequence[float],
    state_bytes: float,
    *,
    crossover: float | None = None,
    kv_label: str = "softmax attention: KV cache",
    state_label: str = "linear attention: state S",
    title: str | None = None,
) -> Figure:
    """What a decoder keeps in memory against the number of tokens seen: a KV cache that grows with t
    against a constant recurrent state (log-log), with the length where they are equal marked."""
    t = _as_array(lengths)
    kv = _as_array(kv_bytes)
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    ax.plot(t, kv, color="tab:red", lw=2, label=kv_label)
    ax.plot(t, np.full_like(t, float(state_bytes)), color="tab:blue", lw=2, label=state_label)
    if crossover is not None:
        ax.axvline(crossover, color="k", ls=":", lw=1.2)
        ax.annotate(f"equal at t = {crossover:,.0f}", xy=(crossover, 0.04), xycoords=("data", "axes fraction"),
                    xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax.annotate(f"{kv[-1] / state_bytes:,.0f}× the state\nat t = {t[-1]:,.0f}", xy=(t[-1], kv[-1]),
                xytext=(-8, -4), textcoords="offset points", ha="right", va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    binary_bytes_axis(ax)
    ax.set_xlabel("tokens seen t")
    ax.set_ylabel("bytes kept for the next step")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, title, ax=ax)


# -------------------------------------------- chunkwise form: which term covers a pair, the cost model, timing


def plot_chunk_partition(kind: Any, chunk_size: int, *, title: str | None = None) -> Figure:
    """Which term of the chunkwise form covers each (query t, key s) pair.

    kind: [T, T] ints: 0 = not attended (s > t), 1 = inter-chunk (read through the state), 2 = intra-chunk
    (the masked C x C block on the diagonal). Chunk boundaries are drawn every `chunk_size` positions.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = _as_array(kind)
    T = k.shape[0]
    colors = ["white", "tab:blue", "tab:orange"]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(k, cmap=ListedColormap(colors), vmin=0, vmax=2, interpolation="nearest")
    for b in range(chunk_size, T, chunk_size):
        ax.axhline(b - 0.5, color="0.3", lw=0.6)
        ax.axvline(b - 0.5, color="0.3", lw=0.6)
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position t")
    ax.legend(handles=[Patch(color=colors[2], label="intra-chunk: masked block (Q Kᵀ ⊙ M) V"),
                       Patch(color=colors[1], label="inter-chunk: through the state Q S"),
                       Patch(facecolor="white", edgecolor="0.5", label="future (s > t): never read")],
              fontsize=7, loc="upper right")
    return _finish(fig, title or f"T = {T}, chunk size C = {chunk_size}", ax=ax)


def plot_chunk_cost(
    Cs: Sequence[int],
    flops: Sequence[float],
    nbytes: Sequence[float],
    t_compute: Sequence[float],
    t_memory: Sequence[float],
    *,
    current: int | None = None,
    best: float | None = None,
    title: str | None = None,
) -> Figure:
    """The cost model of the chunkwise form against the chunk size C (log-log, two panels).

    Left: matmul FLOPs and HBM bytes. Right: modelled time, FLOPs / peak + bytes / bandwidth, with its two
    terms dashed. current: the C to mark (solid line); best: the C that minimises the model (dotted).
    """
    C = _as_array(Cs)
    tc, tm = _as_array(t_compute), _as_array(t_memory)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    ax1.plot(C, _as_array(flops), "o-", ms=3, color="tab:purple", label="FLOPs (matmuls)")
    ax1.set_ylabel("FLOPs", color="tab:purple")
    ax1b = ax1.twinx()
    ax1b.plot(C, _as_array(nbytes), "s-", ms=3, color="tab:green", label="bytes moved (HBM)")
    binary_bytes_axis(ax1b)
    ax1b.set_ylabel("bytes", color="tab:green")
    lines = ax1.get_lines() + ax1b.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper center")
    ax2.plot(C, 1e6 * tc, "--", color="tab:purple", lw=1.2, label="compute: FLOPs / peak")
    ax2.plot(C, 1e6 * tm, "--", color="tab:green", lw=1.2, label="memory: bytes / bandwidth")
    ax2.plot(C, 1e6 * (tc + tm), "o-", ms=3, color="k", label="model: sum")
    ax2.set_ylabel("modelled time (µs)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("chunk size C")
        ax.grid(True, which="major", alpha=0.3)
        if current is not None:
            ax.axvline(current, color="tab:red", lw=1.2)
    if best is not None:
        ax2.axvline(best, color="k", ls=":", lw=1.2)
        ax2.annotate(f"best C = {best:g}", xy=(best, 0.55), xycoords=("data", "axes fraction"),
                     xytext=(3, 0), textcoords="offset points", fontsize=8, va="center")
    ax2.legend(fontsize=8, loc="upper center")
    return _finish(fig, title)


def plot_gated_errors(rows: list[dict[str, Any]], *, threshold: float | None = None,
                      title: str | None = None) -> Figure:
    """Relative error of GLA outputs against T: one panel per dtype, one colour per gate strength.

    rows: {"dtype": str, "g": float (the log-gate of every step, < 0), "T": int, "err": float, "form": str}; an
    err that is not finite (the output held inf or NaN) is drawn as × near the panel's top edge. Forms are told
    apart by line style (the first form solid, the next dashed, ...). threshold: when given (e.g. the log of
    the dtype's largest number), a dotted line per gate at the predicted breakdown T* = threshold / |g|.
    """
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    gates = sorted(dict.fromkeys(r["g"] for r in rows), reverse=True)
    forms = list(dict.fromkeys(r.get("form", "") for r in rows))
    colors = _colors([str(g) for g in gates])
    styles = ["-", "--", "-.", ":"]
    finite = [r["err"] for r in rows if math.isfinite(r["err"]) and r["err"] > 0]
    top = 10 ** math.ceil(math.log10(max(finite + [1.0]))) * 10
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.4 * len(dtypes), 4.0), squeeze=False, sharey=True)
    for ax, dt in zip(axes[0], dtypes):
        for g in gates:
            c = colors[str(g)]
            for j, form in enumerate(forms):
                pts = sorted((r["T"], r["err"]) for r in rows if r["dtype"] == dt and r["g"] == g
                             and r.get("form", "") == form)
                if not pts:
                    continue
                ok = [(t, e) for t, e in pts if math.isfinite(e)]
                bad = [t for t, e in pts if not math.isfinite(e)]
                label = f"g = {g:g} (α = {math.exp(g):.3g})" + (f", {form}" if len(forms) > 1 else "")
                if ok:
                    ax.plot(*zip(*ok), styles[j % len(styles)], marker="o", ms=3, color=c, label=label)
                if bad:  # on the top edge, one row per gate so that crosses of different gates never overlap
                    ax.plot(bad, [top / 1.6 ** gates.index(g)] * len(bad), "x", ms=7, mew=2, color=c,
                            label=None if ok else label)
            if threshold is not None:
                ax.axvline(threshold / abs(g), color=c, ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(top=top * 3)
        ax.set_xlabel("sequence length T")
        ax.set_title(f"{dt}   (×: inf or NaN in the output)", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("relative RMS error vs the recurrence")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _finish(fig, title)


def plot_gla_chunk_partition(kind: Any, chunk_size: int, sub_chunk_size: int, *, title: str | None = None
                             ) -> Figure:
    """Which part of the chunkwise GLA computes each (query t, key s) pair.

    kind: [T, T] ints: 0 = not attended (s > t), 1 = inter-chunk (through the state), 2 = intra-chunk, an
    earlier sub-chunk (a matmul), 3 = intra-chunk, the sub-block on the diagonal (log space, full precision).
    Chunk boundaries are drawn solid, sub-chunk boundaries dotted.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = _as_array(kind)
    T = k.shape[0]
    colors = ["white", "tab:blue", "tab:green", "tab:orange"]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(k, cmap=ListedColormap(colors), vmin=0, vmax=3, interpolation="nearest")
    for b in range(sub_chunk_size, T, sub_chunk_size):
        chunk_edge = b % chunk_size == 0
        for line in (ax.axhline, ax.axvline):
            line(b - 0.5, color="0.2" if chunk_edge else "0.5", lw=0.9 if chunk_edge else 0.5,
                 ls="-" if chunk_edge else ":")
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position t")
    ax.legend(handles=[Patch(color=colors[3], label="diagonal sub-block: exp(G_t − G_s) per channel"),
                       Patch(color=colors[2], label="earlier sub-chunk: a matmul"),
                       Patch(color=colors[1], label="earlier chunk: through the state"),
                       Patch(facecolor="white", edgecolor="0.5", label="future (s > t): never read")],
              fontsize=7, loc="upper right")
    return _finish(fig, title or f"T = {T}, chunk size {chunk_size}, sub-chunks of {sub_chunk_size}", ax=ax)


def plot_gate_decay(alpha: Sequence[float], *, steps: int = 256, labels: Sequence[str] | None = None,
                    title: str | None = None) -> Figure:
    """How fast each channel forgets: left, α_i^n (what is left after n tokens of something written into
    channel i, one row per channel); right, each channel's half-life ln 2 / |ln α_i| in tokens.

    alpha: per-channel decays in (0, 1]; labels: one per channel (default its index).
    """
    a = np.clip(_as_array(alpha).reshape(-1), 1e-12, 1.0)
    n = np.arange(steps + 1)
    left = a[:, None] ** n[None, :]
    half = np.where(a < 1, np.log(2) / np.maximum(-np.log(a), 1e-300), np.inf)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.9), gridspec_kw={"width_ratios": [1.6, 1]})
    im = ax1.imshow(left, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                    extent=(-0.5, steps + 0.5, len(a) - 0.5, -0.5))
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label="α_i^n")
    ax1.set_xlabel("tokens since the write, n")
    ax1.set_ylabel("key channel i")
    ticks = labels if labels is not None else [str(i) for i in range(len(a))]
    ax2.barh(np.arange(len(a)), np.minimum(half, 1e9), color="tab:purple")
    ax2.set_xscale("log")
    ax2.invert_yaxis()
    ax2.set_yticks(np.arange(len(a)))
    ax2.set_yticklabels(ticks, fontsize=6)
    ax2.axvline(steps, color="0.4", ls=":", lw=1)
    ax2.set_xlabel("half-life (tokens, log)")
    ax2.grid(True, axis="x", which="major", alpha=0.3)
    return _finish(fig, title)


# ---- retention and the delta rule ----


def plot_retention_decay(D: Any, gammas: Sequence[float], *, heads: Sequence[int] | None = None,
                         title: str | None = None) -> Figure:
    """Retention's decay mask and what it means per head (lab 05).

    D: [H, T, T] decay masks (D[h, t, s] = gamma_h^(t-s) for s <= t, else 0), e.g. read off a parallel
    retention with q = k = e_0 and one-hot values; gammas: the H decays. Left: the masks of `heads` (default:
    the first and the last) as heatmaps, the future left white. Right: gamma_h^d against the distance d for
    every head, each half-life d = ln 2 / -ln gamma_h marked.
    """
    d_all = _as_array(D)
    g = _as_array(gammas)
    H, T = d_all.shape[0], d_all.shape[-1]
    heads = list(heads) if heads is not None else sorted({0, H - 1})
    halves = [math.log(2) / -math.log(x) for x in g]
    fig, axes = plt.subplots(1, len(heads) + 1, figsize=(3.9 * len(heads) + 5.2, 3.8))
    for ax, h in zip(axes, heads):
        im = ax.imshow(np.ma.masked_where(d_all[h] == 0, d_all[h]), cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(f"D for head {h}: γ = {g[h]:.6g}", fontsize=10)
        ax.set_xlabel("key position s")
        ax.set_ylabel("query position t")
    fig.colorbar(im, ax=axes[len(heads) - 1], fraction=0.046, pad=0.04, label="γ^(t−s)")
    ax = axes[-1]
    dist = np.arange(0, int(max(4 * T, 1.15 * max(halves))) + 1)
    colors = plt.cm.viridis(np.linspace(0, 0.85, H))
    for h in range(H):
        ax.plot(dist, g[h] ** dist, color=colors[h], lw=1.6, label=f"head {h}: half-life {halves[h]:,.0f}")
        ax.plot([halves[h]], [0.5], "o", color=colors[h], ms=4)
    ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
    ax.axvline(T - 1, color="0.5", lw=0.8, ls="--")
    ax.annotate(f"T − 1 = {T - 1}", xy=(T - 1, 0.03), xycoords=("data", "axes fraction"), xytext=(3, 0),
                textcoords="offset points", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("distance t − s (tokens)")
    ax.set_ylabel("weight of token s in S_t: γ_h^(t−s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _finish(fig, title or "retention's decay: each head forgets at its own fixed rate")


def plot_capacity(ratios: Sequence[float], errors: Mapping[str, Sequence[float]], *,
                  theory: Mapping[str, Sequence[float]] | None = None, xlabel: str = "pairs written / key dim (n/K)",
                  ylabel: str = "retrieval error (relative RMS)", title: str | None = None) -> Figure:
    """Associative recall against load (lab 05): the error of reading back n written pairs with q = k_i.

    ratios: n/K for each point; errors: {memory: error per point}; theory: {label: curve per point}, dashed.
    n/K = 1 (as many pairs as the key dimension: the state's rank) is marked.
    """
    x = _as_array(ratios)
    colors = _colors(list(errors))
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for name, ys in errors.items():
        ax.plot(x, _as_array(ys), "o-", ms=3.5, lw=1.6, color=colors[name], label=name)
    for i, (label, ys) in enumerate((theory or {}).items()):
        ax.plot(x, _as_array(ys), ls=("--", ":", "-.")[i % 3], color="0.25", lw=1.2, label=label)
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.annotate("n = K", xy=(1.0, 0.97), xycoords=("data", "axes fraction"), xytext=(3, 0),
                textcoords="offset points", fontsize=8, va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, title, ax=ax)


def plot_overwrite(similarity: Mapping[str, Mapping[str, float]], *, title: str | None = None) -> Figure:
    """What each memory returns for a key written twice (lab 05): grouped bars of the cosine similarity
    between the read-out and each written value.

    similarity: {memory: {value label: cosine}}, e.g. {"linear attention": {"first value": 0.7, ...}}.
    """
    memories = list(similarity)
    labels = list(next(iter(similarity.values())))
    colors = _colors(labels)
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(6.8, 3.9))
    for j, label in enumerate(labels):
        xs = np.arange(len(memories)) + (j - (len(labels) - 1) / 2) * width
        vals = [similarity[m][label] for m in memories]
        bars = ax.bar(xs, vals, width, color=colors[label], label=label)
        for bar, val in zip(bars, vals):
            ax.annotate(f"{val:.2f}", xy=(bar.get_x() + bar.get_width() / 2, max(val, 0)), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(memories)), memories)
    ax.set_ylabel("cosine(read-out, value)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.15)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=len(labels))
    return _finish(fig, title, ax=ax)


__all__ += ["plot_capacity", "plot_overwrite", "plot_retention_decay"]


# ------------------------------------------ measured costs with their spread; estimators with their intervals


def _pair_note(rows: list[dict[str, Any]], pair: tuple[str, str], short: Mapping[str, str], metric: str,
               x: str) -> str:
    """What the dotted line compares, naming both of the pair: where they cross, and which is lower at the
    largest x measured (or that they never cross)."""
    a, b = pair
    values = {name: {r[x]: r[metric] for r in rows if r["name"] == name and not _isnan(r.get(metric))}
              for name in pair}
    common = sorted(set(values[a]) & set(values[b]))
    if not common:
        return f"{short[a]} vs {short[b]}: nothing to compare"
    last = common[-1]
    lower = short[b] if values[b][last] < values[a][last] else short[a]
    x_star = crossover(rows, a, b, key=metric, x=x)
    if x_star is None:
        return f"{short[a]} vs {short[b]}: no crossover;\n{lower} lower at every {x} measured"
    return f"{short[a]} vs {short[b]}: cross at {x} ≈ {x_star:,.0f};\n{lower} lower at {x} = {last:,}"


def _one_legend_below(fig: Figure, axes: Sequence[Any], ncol: int = 3) -> None:
    """One legend for all panels, below them, where it covers no curve (labels deduplicated)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(ncol, len(handles)), fontsize=8, frameon=False)


def plot_scaling_spread(
    rows: list[dict[str, Any]],
    metrics: Sequence[str] = ("ms", "peak_bytes", "flops"),
    *,
    x: str = "N",
    pair: tuple[str, str] | None = None,
    pair_labels: tuple[str, str] | None = None,
    models: Mapping[str, Mapping[str, Callable[[np.ndarray], np.ndarray]]] | None = None,
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    spread: tuple[str, str] | None = ("ms_q1", "ms_q3"),
) -> Figure:
    """`plot_scaling` for rows from `bench.sweep_stats`: the time panel draws each point's spread as a bar
    (default: the quartiles of the timed runs, so the middle half of the runs lies on the bar), every panel's
    note names the pair whose crossover its dotted line marks, and one legend sits below the panels, where it
    covers no curve.

    pair: (a, b) as in plot_scaling (default: the first and last names).  pair_labels: short names for the
    pair in the notes (default: the names).  spread: the row keys of the bar's ends, or None for no bars.
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        raise ValueError("plot_scaling_spread: no rows to plot.")
    pair = pair or (names[0], names[-1])
    short = dict(zip(pair, pair_labels or pair))
    shown = [m for m in metrics if any(not _isnan(r.get(m)) for r in rows)]
    fig = plot_scaling(rows, shown, x=x, pair=pair, models=models, labels=labels)
    for ax, metric in zip(fig.axes, shown):
        for text in list(ax.texts):  # plot_scaling's notes do not say which pair they compare: ours do
            text.remove()
        if metric == "ms" and spread is not None:
            colors = {line.get_label(): line.get_color() for line in ax.get_lines()}
            for name in names:
                pts = sorted((r[x], r["ms"], r.get(spread[0]), r.get(spread[1])) for r in rows
                             if r["name"] == name and not any(_isnan(r.get(k)) for k in ("ms", *spread)))
                if pts:
                    xs, mid, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
                    ax.errorbar(xs, mid, yerr=[mid - lo, hi - mid], fmt="none", ecolor=colors.get(name, "0.3"),
                                elinewidth=1.2, capsize=3, label="_nolegend_")
            reps = {r.get("reps") for r in rows} - {None}
            runs = f"{reps.pop()} runs" if len(reps) == 1 else "the runs"
            ax.set_ylabel(f"{ax.get_ylabel()}\nbars: middle half of {runs}")
        ax.text(0.03, 0.97, _pair_note(rows, pair, short, metric, x), transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5})
    _one_legend_below(fig, fig.axes)
    return _finish(fig, title)


def plot_error_intervals(
    Ms: Sequence[int],
    errors: Mapping[str, tuple[Any, Any, Any]],
    *,
    ratio: tuple[Any, Any, Any] | None = None,
    ratio_label: str = "ratio of the errors",
    mark: float | None = None,
    mark_label: str | None = None,
    ylabel: str = "relative RMS error of exp(x·y)",
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Errors against the number of random features M, each point with its confidence interval (a bar), and
    optionally the ratio of two estimators with its own interval in a second panel.

    errors: {name: (center, low, high)}, each [len(Ms)].  ratio: (center, low, high), e.g. orthogonal / iid
    from a paired bootstrap; a dashed line marks 1 (no difference).  mark: an M to mark with a dotted line
    (e.g. the dimension d, where orthogonal blocks fill up), labelled mark_label.
    """
    Ms_arr = np.asarray(Ms, dtype=float)
    n = 2 if ratio is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.0), squeeze=False)
    ax = axes[0][0]
    colors = {**_colors(list(errors)), **(colors or {})}
    for i, (name, (mid, lo, hi)) in enumerate(errors.items()):
        mid, lo, hi = (_as_array(v) for v in (mid, lo, hi))
        if not len(mid) == len(lo) == len(hi) == len(Ms_arr):
            raise ValueError(f"plot_error_intervals: errors[{name!r}] needs {len(Ms_arr)} values per array.")
        xs = Ms_arr * 1.04 ** (i - (len(errors) - 1) / 2)  # side by side, so that no bar hides another
        ax.errorbar(xs, mid, yerr=[mid - lo, hi - mid], fmt="o-", ms=4, capsize=3, color=colors[name], label=name)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    panels = [ax]
    if ratio is not None:
        rax = axes[0][1]
        mid, lo, hi = (_as_array(v) for v in ratio)
        rax.errorbar(Ms_arr, mid, yerr=[mid - lo, hi - mid], fmt="o-", ms=4, capsize=3, color="k", label=ratio_label)
        rax.axhline(1.0, color="0.4", ls="--", lw=1, label="1: no difference")
        rax.set_ylabel(ratio_label)
        panels.append(rax)
    for a in panels:
        a.set_xscale("log", base=2)
        a.set_xlabel("number of random features M")
        a.grid(True, which="major", alpha=0.3)
        if mark is not None:
            a.axvline(mark, color="k", ls=":", lw=1.1, label=mark_label)
    _one_legend_below(fig, panels)
    return _finish(fig, title)


def plot_feature_variance(norms: Sequence[float], M: int = 64, *, title: str | None = None) -> Figure:
    """The error of one random-feature estimate of exp(x·y), averaged over M features, against x·y, for
    equal norms |x| = |y| = r (one panel per r, the same y-axis): sqrt(relative variance / M) with the
    relative variances of Performer's Lemma 2, e^{|x+y|²} - 1 (positive features) and 2 sinh²(|x-y|²/2)
    (trigonometric). The dotted line marks where the two are equal. Nothing is sampled.
    """
    from course_utils.widgets import feature_variance_numbers, relative_feature_variance

    norms = list(norms)
    fig, axes = plt.subplots(1, len(norms), figsize=(4.4 * len(norms), 3.9), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], norms):
        n = feature_variance_numbers(r, M)
        xy = r * r * np.linspace(-1, 1, 401)
        for kind, color in (("positive", "tab:red"), ("trigonometric", "tab:blue")):
            err = np.sqrt(relative_feature_variance(kind, xy, r * r, r * r) / M)
            ax.plot(xy, np.where(err > 0, err, np.nan), color=color, lw=2, label=f"{kind} features")
        ax.axvline(n["crossover_xy"], color="k", ls=":", lw=1.1)
        ax.annotate(f"positive = trigonometric\nat x·y = {n['crossover_xy']:+.2f}", xy=(n["crossover_xy"], 0.97),
                    xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points", va="top",
                    fontsize=8)
        ax.annotate(f"x = y: {n['positive_at_x_eq_y']:.3g}", xy=(xy[-1], n["positive_at_x_eq_y"]), xytext=(-2, 5),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="tab:red")
        ax.set_yscale("log")
        ax.set_ylim(1e-2, 1e3)
        ax.set_xlabel("x·y  (x·y = r² cos θ)")
        ax.set_title(f"|x| = |y| = {r:g}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(f"relative error of the estimate, M = {M}")
    _one_legend_below(fig, list(axes[0]))
    return _finish(fig, title)


# ------------------------------------------------------------------ feature maps: how spiky their weights are


def plot_feature_map_weights(
    scores: Any,
    weights: Mapping[str, Any],
    entropies: Mapping[str, Any],
    *,
    max_entropy: float | None = None,
    reference: str = "softmax",
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Attention weights of several feature maps against softmax's, on the same queries and keys.

    Left, one small panel per map: one query's weight on every key against the key's score x·y (log scale:
    zero weights, from ReLU-like maps, are not drawn), with the reference's weights as a black line (softmax's
    lie on a straight line, exp(x·y) / Z). Right: the entropy of every query's weights, one box per map
    (lower: spikier), with log T, the entropy of uniform weights, dashed.
    scores: [T_k].  weights: {name: [T_k]}, the reference included.  entropies: {name: [T_q]}.
    """
    s = _as_array(scores)
    names = list(weights)
    others = [n for n in names if n != reference]
    palette = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:blue", "tab:pink", "tab:olive"]
    colors = {reference: "k", **{n: palette[i % len(palette)] for i, n in enumerate(others)}, **(colors or {})}
    cols = 3
    rows_ = max(1, math.ceil(len(others) / cols))
    # two sub-figures, each laid out on its own: the long names on the right need no gaps between small panels
    fig = plt.figure(figsize=(13.0, 2.5 * rows_ + 1.3), layout="constrained")
    panels, boxes = fig.subfigures(1, 2, width_ratios=[2.3, 1], wspace=0.02)
    small = panels.subplots(rows_, cols, sharex=True, sharey=True, squeeze=False).ravel()
    order = np.argsort(s)
    ref = _as_array(weights[reference]) if reference in weights else None
    for i, ax in enumerate(small):
        if i >= len(others):
            ax.set_visible(False)
            continue
        name = others[i]
        w = _as_array(weights[name])
        if w.shape != s.shape:
            raise ValueError(f"plot_feature_map_weights: weights[{name!r}] has shape {w.shape}, scores {s.shape}.")
        if ref is not None:
            ax.plot(s[order], ref[order], color="k", lw=1.6)
        ax.scatter(s, np.where(w > 0, w, np.nan), s=9, alpha=0.8, color=colors[name])
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9, color=colors[name])
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8, labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel("weight", fontsize=9)
        if i + cols >= len(others):
            ax.set_xlabel("score x·y of each key", fontsize=9)
    right = boxes.subplots()
    ents = [_as_array(entropies[n]) for n in names]
    box = right.boxplot(ents, vert=False, patch_artist=True, widths=0.6, showfliers=False,
                        medianprops={"color": "k", "lw": 1.5})
    for patch, name in zip(box["boxes"], names):
        patch.set_facecolor(colors[name])
        patch.set_alpha(0.45)
    right.set_yticks(range(1, len(names) + 1), names)
    right.invert_yaxis()
    if max_entropy is not None:
        right.axvline(max_entropy, color="0.3", ls="--", lw=1.2)
        right.annotate("uniform: log T", xy=(max_entropy, 1.0), xycoords=("data", "axes fraction"),
                       xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8)
    right.set_xlabel("entropy of each query's weights (nats):\nlower is spikier")
    right.grid(True, axis="x", alpha=0.3)
    if len(others):
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="k", lw=1.6, label=f"{reference}'s weights (the same in every panel)"),
                   Line2D([], [], color="0.45", marker="o", ls="none", ms=4,
                          label="the weights of the map in the panel's title")]
        panels.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


__all__ += ["plot_error_intervals", "plot_feature_map_weights", "plot_feature_variance", "plot_scaling_spread"]


# ------------------------------------------------------------------ timings with their spread; named comparisons
# Lab 03: a timing is a median with the spread of its runs (bench.time_stats / bench.sweep_stats), a crossover
# names the two curves it compares, and legends sit below the panels, where they cover no curve.


def _legend_below(ax: Any, handles: Sequence[Any] | None = None, ncol: int = 1) -> None:
    handles = list(handles) if handles is not None else ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False)


def plot_timings_spread(
    Cs: Sequence[float],
    series: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    fit: tuple[Sequence[float], str] | None = None,
    model: tuple[Sequence[float], Sequence[float], str] | None = None,
    xlabel: str = "chunk size C",
    ylabel: str = "time per call (ms)",
    title: str | None = None,
) -> Figure:
    """Measured times against C (log-log): per series the median of the runs, with a bar over the middle half
    of them (first to third quartile) and a thin one from the fastest to the slowest run.

    series: {label: [bench.time_stats(...) dict per C]} (keys "median", "q1", "q3", "min", "max"); the fastest C
        of the first series is starred. fit: (ms per C, label), dashed. model: (Cs, seconds, label) drawn in a
        second panel in µs, its best C starred. Legends sit below the panels.
    """
    n = 2 if model is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.5), squeeze=False)
    ax = axes[0][0]
    C = _as_array(Cs)
    markers = ["o", "s", "^", "D"]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    first, first_label = None, ""
    for i, (label, stats) in enumerate(series.items()):
        med = np.array([s["median"] for s in stats], dtype=float)
        lo, hi = np.array([s["q1"] for s in stats]), np.array([s["q3"] for s in stats])
        mn, mx = np.array([s["min"] for s in stats]), np.array([s["max"] for s in stats])
        c = colors[i % len(colors)]
        ax.errorbar(C, med, yerr=[med - mn, mx - med], fmt="none", ecolor=c, elinewidth=0.7, alpha=0.5)
        ax.errorbar(C, med, yerr=[med - lo, hi - med], fmt=markers[i % len(markers)] + "-", color=c, ms=4,
                    lw=1, elinewidth=2.2, capsize=0, label=f"{label} (median; bars: middle half, min–max)")
        if first is None:
            first, first_label = med, label.split(":")[0] if ":" in label else ""
    if fit is not None:
        ax.plot(C, _as_array(fit[0]), "--", color="0.3", label=fit[1])
    if first is not None:
        i = int(np.nanargmin(first))
        which = f" ({first_label})" if first_label else ""
        ax.plot(C[i], first[i], "*", ms=13, color="tab:red", label=f"fastest{which}: C = {C[i]:.0f}", zorder=5)
    ax.set_ylabel(ylabel)
    if model is not None:
        Cm, sm, label = model
        ax2 = axes[0][1]
        ys = 1e6 * _as_array(sm)
        ax2.plot(_as_array(Cm), ys, "o-", ms=3, color="k", label=label)
        j = int(np.nanargmin(ys))
        ax2.plot(_as_array(Cm)[j], ys[j], "*", ms=13, color="tab:red", label=f"best: C = {_as_array(Cm)[j]:.0f}")
        ax2.set_ylabel("modelled time (µs)")
    for a in axes[0]:
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel(xlabel)
        a.grid(True, which="major", alpha=0.3)
        _legend_below(a)
    return _finish(fig, title)


def _pair_text(rows: list[dict[str, Any]], a: str, b: str, metric: str, x: str) -> tuple[float | None, str]:
    """(crossover x or None, one line naming both curves and what the comparison found)."""
    values = {name: {r[x]: r[metric] for r in rows if r["name"] == name and not _isnan(r.get(metric))}
              for name in (a, b)}
    common = sorted(set(values[a]) & set(values[b]))
    if not common:
        return None, f"{a} vs {b}: not measured at the same {x}"
    x_star = crossover(rows, a, b, key=metric, x=x)
    if x_star is not None:
        low_after = a if values[a][common[-1]] < values[b][common[-1]] else b
        return x_star, f"{a} vs {b}: cross at {x} ≈ {x_star:,.0f} ({low_after} lower above it)"
    lower = a if values[a][common[-1]] < values[b][common[-1]] else b
    return None, (f"{a} vs {b}: no crossover for {x} = {common[0]:,}…{common[-1]:,}, {lower} lower at every "
                  f"{x} measured")


def plot_scaling_pairs(
    rows: list[dict[str, Any]],
    metrics: Sequence[str] = ("ms", "peak_bytes"),
    *,
    x: str = "N",
    pairs: Sequence[tuple[str, str]] = (),
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """`plot_scaling` for a benchmark read by others: every comparison names its two curves, the timing panel
    shows the spread of the runs, and the legend sits below the panels.

    rows: from bench.sweep_stats (or bench.sweep: no spread then); one log-log panel per metric, one line per
    function name; on "ms" a band from the first to the third quartile of the runs where rows hold them.
    pairs: (a, b) function names compared on every panel: a dotted vertical line, numbered, where they cross,
    and under the panel one line per pair ("a vs b: cross at T ≈ … (b lower above it)" or "a vs b: no
    crossover for T = …, a lower at every T measured").
    """
    import textwrap

    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        raise ValueError("plot_scaling_pairs: no rows to plot.")
    colors = _colors(names)
    metrics = [m for m in metrics if any(not _isnan(r.get(m)) for r in rows)]
    labels = {**METRIC_LABELS, **(labels or {})}
    texts = {m: [_pair_text(rows, a, b, m, x) for a, b in pairs] for m in metrics}
    wrapped = {m: ["\n".join(textwrap.wrap(f"({k}) {t}", 62, subsequent_indent="     "))
                   for k, (_, t) in enumerate(texts[m], start=1)] for m in metrics}
    n_lines = max([sum(w.count("\n") + 1 for w in wrapped[m]) for m in metrics] + [0])
    fig = plt.figure(figsize=(5.2 * len(metrics), 4.3 + 0.16 * n_lines))
    grid = fig.add_gridspec(2, len(metrics), height_ratios=[3.6, 0.35 + 0.16 * n_lines])
    handles = []
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[0, j])
        for name in names:
            pts = sorted((r[x], r[metric], r.get(f"{metric}_q1"), r.get(f"{metric}_q3")) for r in rows
                         if r["name"] == name and not _isnan(r.get(metric)))
            if not pts:
                continue
            xs, ys, q1, q3 = zip(*pts)
            (line,) = ax.plot(xs, ys, "o-", color=colors[name], label=name, ms=4)
            if j == 0:
                handles.append(line)
            if not any(_isnan(v) for v in q1 + q3):
                ax.fill_between(xs, q1, q3, color=colors[name], alpha=0.25, lw=0)
        ax.set_xscale("log", base=2)
        if metric == "peak_bytes":
            binary_bytes_axis(ax)
        else:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, which="major", alpha=0.3)
        for k, (x_star, _) in enumerate(texts[metric], start=1):
            if x_star is not None:
                ax.axvline(x_star, color="k", ls=":", lw=1.1)
                ax.annotate(f"({k})", xy=(x_star, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                            textcoords="offset points", fontsize=8, va="top")
        note = fig.add_subplot(grid[1, j])
        note.axis("off")
        note.text(0.0, 1.0, "\n".join(wrapped[metric]), va="top", ha="left", fontsize=7.5,
                  transform=note.transAxes)
    rows_of_legend = math.ceil(len(handles) / 3)
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.045 * rows_of_legend * 4.3 / fig.get_figheight(), 1, 1))
    return fig


__all__ += ["plot_scaling_pairs", "plot_timings_spread"]


# ------------------------------------------- low precision: what grows with t, and what a low-precision state loses
# Lab 02, section 5: the normaliser q·z grows like t (float16 overflows), a state accumulated in bf16 drifts.


def plot_precision_drift(
    t: Sequence[float],
    magnitudes: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]],
    *,
    limit: tuple[float, str] | None = (65504.0, "largest float16 (65,504)"),
    marks: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Two log-log panels against the token index t: on the left, quantities that grow with t (e.g. the
    normaliser q_t·z_t and the size of the unnormalised output) with `limit` as a dashed horizontal line; on the
    right, the relative error of each token's output per dtype of the state. Non-finite errors are left out.

    marks: {note: t} dotted vertical lines on both panels, each labelled with its note (say which curve it
    marks, e.g. "float16: q·z = inf from t = 646"). Legends sit below the panels, where they cover no curve.
    """
    x = _as_array(t)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    for (name, ys), color in zip(magnitudes.items(), _PALETTE[2:] + _PALETTE[:2]):
        left.plot(x, _as_array(ys), lw=1.6, color=color, label=name)
    if limit is not None:
        left.axhline(limit[0], color="k", ls="--", lw=1.1, label=limit[1])
    left.set_ylabel("magnitude")
    colors = _colors(list(errors))
    for name, ys in errors.items():
        e = _as_array(ys)
        e = np.where(np.isfinite(e) & (e > 0), e, np.nan)
        right.plot(x, e, lw=1.4, color=colors[name], label=name)
    right.set_ylabel("relative error of o_t (vs float64)")
    for k, (note, where) in enumerate((marks or {}).items()):
        for ax in (left, right):
            ax.axvline(where, color="0.2", ls=":", lw=1.1)
        right.annotate(note, xy=(where, 0.95 - 0.08 * k), xycoords=("data", "axes fraction"), xytext=(-3, 0),
                       textcoords="offset points", ha="right", va="top", fontsize=8,
                       bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.0})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("token t")
        ax.grid(True, which="major", alpha=0.3)
        _legend_below(ax, ncol=2)
    return _finish(fig, title)


__all__ += ["plot_precision_drift"]


# ------------------------------------------------------- the roofline: measured ceilings and each kernel's point
# course_utils.roofline measures the ceilings; a point is a roofline.RooflinePoint or a bench.Measurement.


def plot_roofline(
    points: Sequence[Any],
    ceilings: Any,
    *,
    dtypes: Sequence[Any] | None = None,
    roof: Any = None,
    title: str | None = None,
) -> Figure:
    """The roofline of measured `ceilings` (a roofline.Ceilings) with each kernel as a labelled point (log-log).

    x: arithmetic intensity (FLOP per byte), y: TFLOP/s. The memory slope (copy bandwidth × intensity) rises to
    each compute roof (one per dtype in `dtypes`, default every measured one), whose ridge point is marked and
    labelled with its intensity. points: roofline.RooflinePoint, bench.Measurement (with bytes and flops) or
    rows of bench.compare (labelled by their "label" key if they have one, else "name"; rows without bytes,
    flops or time are skipped).
    Each point's label (in a legend of kernels, beside the legend of roofs) gives its name and its fraction of the
    attainable rate under `roof`'s roof (default: a
    Measurement's own dtype; none for a bare RooflinePoint). Kernels without FLOPs (a copy) cannot sit on the
    log axis: a note below the plot lists them with their GB/s and fraction of the copy bandwidth.
    """
    from course_utils.roofline import dtype_key, roofline_point

    keys = [dtype_key(d) for d in (dtypes if dtypes is not None else list(ceilings.tflops))]
    if not keys:
        raise ValueError("plot_roofline: the ceilings hold no compute roof (measure at least one dtype).")
    bw = ceilings.bandwidth_gbs
    placed, off_axis = [], []
    for p in points:
        if isinstance(p, Mapping):  # a row of bench.compare: its median, bytes and flops
            if any(_isnan(p.get(k)) for k in ("ms", "bytes", "flops")):
                continue
            own = p.get("dtype")
            pt = roofline_point(p["bytes"], p["flops"], p["ms"] / 1e3, name=p.get("label", p["name"]))
        else:
            own = getattr(p, "dtype", None)
            pt = p.point() if hasattr(p, "point") else p
        which = dtype_key(roof) if roof is not None else (dtype_key(own) if own else None)
        (placed if pt.flops > 0 and pt.bytes > 0 else off_axis).append((pt, which))
    ridges = {k: ceilings.ridge(k) for k in keys}
    xs = [pt.intensity for pt, _ in placed] + list(ridges.values())
    lo, hi = min(xs) / 8, max(xs) * 8
    labels = [pt.name + (f" ({100 * pt.fraction(ceilings, which):.0f}% of {which} roofline)"
                         if which is not None and which in ceilings.tflops else "") for pt, which in placed]
    # the kernels' legend sits right of the axes: widen the figure by its width (about 0.06 in per character)
    legend_in = 0.5 + 0.06 * max((len(label) for label in labels), default=0) if labels else 0.0
    fig, ax = plt.subplots(figsize=(7.6 + legend_in, 5.0))
    top = max(ceilings.tflops[k] for k in keys)
    grid = np.geomspace(lo, max(ridges.values()), 64)
    roof_lines = ax.plot(grid, grid * bw / 1e3, color="k", lw=1.6, label=f"copy bandwidth {bw:,.0f} GB/s")
    roof_colors = ["0.25", "tab:gray", "tab:brown", "tab:olive"]
    for k, c in zip(keys, roof_colors * len(keys)):
        peak, r = ceilings.tflops[k], ridges[k]
        roof_lines += ax.plot([r, hi], [peak, peak], color=c, lw=1.6, ls="-" if peak == top else "--",
                              label=f"{k} matmul {peak:,.1f} TFLOP/s")
        ax.plot([r], [peak], "D", color=c, ms=6)
        ax.annotate(f"ridge {k}: {r:,.0f} FLOP/B", xy=(r, peak), xytext=(4, 4), textcoords="offset points",
                    fontsize=7.5, color=c)
    kernel_marks = []  # named in a legend of their own: labels beside points of equal intensity would overlap
    for i, ((pt, _), label) in enumerate(zip(placed, labels)):
        kernel_marks += ax.plot([pt.intensity], [pt.tflops], "o", color=_PALETTE[i % len(_PALETTE)], ms=7, zorder=5,
                                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ys = [pt.tflops for pt, _ in placed] + [lo * bw / 1e3]
    ax.set_ylim(min(ys) / 3, top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("TFLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    roofs = ax.legend(handles=roof_lines, fontsize=8, loc="upper left", frameon=False)
    if kernel_marks:
        ax.add_artist(roofs)  # a second legend replaces the first unless the first is kept as an artist
        ax.legend(handles=kernel_marks, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="kernels",
                  title_fontsize=8, frameon=False)  # outside the axes, on the right: it never covers a point
    if off_axis:
        note = "; ".join(f"{pt.name}: {pt.gbs:,.0f} GB/s = {100 * pt.gbs / bw:.0f}% of copy bandwidth"
                         for pt, _ in off_axis)
        ax.text(0.0, -0.16, f"no FLOPs, not on the plot — {note}", transform=ax.transAxes, fontsize=7.5, va="top")
    device = getattr(ceilings, "device", "")
    return _finish(fig, title or f"roofline of {device} (measured ceilings)")


def plot_benchmark(rows: list[dict[str, Any]], *, x: str = "T", ceilings: Any = None,
                   title: str | None = None) -> Figure:
    """Rows of `bench.compare` against `x` (log-log), one line per function, in up to four panels: time
    (median, the p10–p90 band shaded), GB/s, TFLOP/s and % of the roofline (each left out where no row has a
    value: GB/s needs a bytes model, TFLOP/s a FLOP model, % of the roofline both and `ceilings`).
    ceilings (a roofline.Ceilings): the copy bandwidth is drawn on the GB/s panel and the matmul roof of
    every dtype in the rows on the TFLOP/s panel, dashed. One legend sits below the panels.
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        raise ValueError("plot_benchmark: no rows to plot.")
    if ceilings is not None:
        rows = [{**r, "pct": 100 * r["pct_roofline"]} if "pct_roofline" in r else r for r in rows]
    panels = [(m, label) for m, label in (("ms", "time per call (ms): median, p10–p90 shaded"), ("gbs", "GB/s"),
                                          ("tflops", "TFLOP/s"), ("pct", "% of the roofline"))
              if any(not _isnan(r.get(m)) for r in rows)]
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        for name in names:
            pts = sorted((r[x], r[metric], r.get("ms_p10"), r.get("ms_p90")) for r in rows
                         if r["name"] == name and not _isnan(r.get(metric)))
            if not pts:
                continue
            xs, ys, lo, hi = zip(*pts)
            ax.plot(xs, ys, "o-", ms=4, color=colors[name], label=name)
            if metric == "ms" and not any(_isnan(v) for v in lo + hi):
                ax.fill_between(xs, lo, hi, color=colors[name], alpha=0.25, lw=0)
        if ceilings is not None and metric == "gbs":
            ax.axhline(ceilings.bandwidth_gbs, color="k", ls="--", lw=1.1,
                       label=f"copy bandwidth {ceilings.bandwidth_gbs:,.0f} GB/s")
        if ceilings is not None and metric == "tflops":
            for key in dict.fromkeys(r.get("dtype") for r in rows):
                if key in ceilings.tflops:
                    ax.axhline(ceilings.tflops[key], color="0.4", ls="--", lw=1.1,
                               label=f"{key} matmul {ceilings.tflops[key]:,.1f} TFLOP/s")
        if metric == "pct":
            ax.axhline(100, color="k", ls="--", lw=1.1, label="the roofline (100%)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    _one_legend_below(fig, list(axes[0]))
    return _finish(fig, title)


__all__ += ["plot_benchmark", "plot_roofline"]


# ------------------------------------------------------------------------------- state-space models (Lab 07)


def plot_legs_reconstruction(signal: Any, reconstructions: Mapping[int, Any], *, t: int | None = None,
                             title: str | None = None) -> Figure:
    """A signal's history and its HiPPO-LegS reconstructions (course_utils.hippo): one line per state size N.

    signal: [L] the samples f_1 .. f_L   reconstructions: {N: [t] history read back from the state after
    sample t}   t: the time of the read-out (default L; marked by a vertical line). Right panel: the error
    |f̂ - f| along the history, log scale.
    """
    f = _as_array(signal)
    t = len(f) if t is None else int(t)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), gridspec_kw={"width_ratios": [1.6, 1.0]})
    left.plot(np.arange(1, len(f) + 1), f, color="0.75", lw=3.0, label="signal f")
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(reconstructions), 1)))
    for (N, rec), color in zip(reconstructions.items(), colors):
        r = _as_array(rec)
        x = np.linspace(1, t, len(r))
        left.plot(x, r, lw=1.3, color=color, label=f"read back from the state, N = {N}")
        err = np.abs(r - np.interp(x, np.arange(1, len(f) + 1), f))
        right.plot(x, np.maximum(err, 1e-8), lw=1.0, color=color, label=f"N = {N}")
    left.axvline(t, color="k", ls=":", lw=1.0)
    left.set_xlabel("sample k (the state is read after sample t, dotted)")
    left.set_ylabel("f")
    right.set_yscale("log")
    right.set_xlabel("sample k")
    right.set_ylabel("|reconstruction - f|")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        _legend_below(ax, ncol=2)
    return _finish(fig, title)


def plot_timings_vs_length(Ls: Sequence[int], series: Mapping[str, Sequence[Mapping[str, float]]], *,
                           slopes: bool = True, title: str | None = None) -> Figure:
    """Measured times against the sequence length (log-log): per series the median of the runs, a bar over the
    middle half of them (first to third quartile) and a thin one from the fastest to the slowest run.

    series: {label: [bench.time_stats(...) dict per L]}. slopes: dashed guides ∝ L through each series' first point
    (a straight line at that slope is linear growth).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    x = _as_array(Ls)
    for (label, stats), color, marker in zip(series.items(), _PALETTE[2:] + _PALETTE[:2], "osD^v"):
        med = np.array([s["median"] for s in stats], dtype=float)
        lo, hi = np.array([s["q1"] for s in stats]), np.array([s["q3"] for s in stats])
        mn, mx = np.array([s["min"] for s in stats]), np.array([s["max"] for s in stats])
        ax.errorbar(x, med, yerr=[med - mn, mx - med], fmt="none", ecolor=color, elinewidth=0.7, alpha=0.5)
        ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt=marker + "-", color=color, ms=4, lw=1.2, elinewidth=2.2,
                    label=f"{label} (median; bars: middle half, min–max)")
        if slopes:
            ax.plot(x, med[0] * x / x[0], "--", color=color, lw=0.8, alpha=0.6)
    if slopes:
        ax.plot([], [], "--", color="0.4", lw=0.8, label="∝ L (dashed, through the first point)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("time per call (ms)")
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax)
    return _finish(fig, title)


__all__ += ["plot_legs_reconstruction", "plot_timings_vs_length"]
