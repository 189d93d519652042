"""Figures the notebooks draw. Every function returns the matplotlib Figure (and draws nothing else), so
a notebook shows it inline and a test can inspect it under the Agg backend.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from course_utils.bench import crossover

__all__ = ["METRIC_LABELS", "plot_complexity", "plot_feature_error", "plot_scaling"]

METRIC_LABELS = {
    "ms": "time per call (ms, median)",
    "peak_bytes": "peak memory above inputs",
    "flops": "matmul FLOPs (FlopCounterMode)",
}

_PALETTE = ["tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown"]


def _bytes_axis(ax) -> None:
    def fmt(v, _pos):
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if v < 1024:
                return f"{v:g} {unit}"
            v /= 1024
        return f"{v:g} PiB"

    ax.yaxis.set_major_formatter(FuncFormatter(fmt))


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


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
        b becomes cheaper than a, or "no crossover in range"). Default: the first and last names.
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
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(labels.get(metric, metric))
        if metric == "peak_bytes":
            _bytes_axis(ax)
        ax.grid(True, which="major", alpha=0.3)
        x_star = crossover(rows, pair[0], pair[1], key=metric, x=x)
        if x_star is not None:
            ax.axvline(x_star, color="k", ls=":", lw=1.2)
            ax.annotate(f"crossover\n{x}≈{x_star:,.0f}", xy=(x_star, 0.97), xycoords=("data", "axes fraction"),
                        ha="left", va="top", fontsize=8, xytext=(3, 0), textcoords="offset points")
        else:
            ax.text(0.03, 0.97, "no crossover in range", transform=ax.transAxes, va="top", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def plot_feature_error(
    Ms: Sequence[int],
    errors: Mapping[str, np.ndarray],
    *,
    reference: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    ylabel: str = "relative error of exp(q·k)",
    title: str | None = None,
) -> Figure:
    """Approximation error against the number of random features M, one line per estimator.

    Ms: [len(Ms)] feature counts.  errors: {name: array [len(Ms), trials]} one error per independent
    draw of the random features; the line is the mean over trials, the band ± one standard deviation.
    reference: optional dashed curves {label: f(M array)}, e.g. the Monte-Carlo rate c / sqrt(M).
    """
    Ms_arr = np.asarray(Ms, dtype=float)
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    colors = _colors(list(errors))
    for name, err in errors.items():
        err = np.asarray(err, dtype=float)
        if err.ndim == 1:
            err = err[:, None]
        if err.shape[0] != len(Ms_arr):
            raise ValueError(f"plot_feature_error: errors[{name!r}] has {err.shape[0]} rows for {len(Ms_arr)} Ms.")
        mean, std = err.mean(1), err.std(1)
        ax.plot(Ms_arr, mean, "o-", color=colors[name], label=name, ms=4)
        ax.fill_between(Ms_arr, np.clip(mean - std, mean * 1e-3, None), mean + std, color=colors[name], alpha=0.15)
    for label, f in (reference or {}).items():
        ax.plot(Ms_arr, f(Ms_arr), "--", color="0.4", lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of random features M")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_complexity(
    N: int, d: int, *, H: int = 1, B: int = 1, bytes_per_element: int = 4, N_max: int = 2**17,
    memory_limit_bytes: float | None = 16 * 2**30,
) -> Figure:
    """Model curves (no measurement): FLOPs and the distinguishing intermediate's memory against N, for
    softmax attention and (associative) linear attention with head dim d, marking the chosen N and the
    crossovers. Used by `course_utils.widgets.complexity_explorer`.
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
                               (ax2, mem_s, mem_l, "T×T matrix vs state (model)")):
        ax.plot(Ns, ys, color="tab:red", label="softmax  O(N²d)" if ax is ax1 else "softmax: B·H·N² scores")
        ax.plot(Ns, yl, color="tab:blue", label="linear  O(Nd²)" if ax is ax1 else "linear: B·H·(d²+d) state")
        ax.axvline(N, color="k", lw=1)
        ax.set_xscale("log", base=2)
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
    _bytes_axis(ax2)
    ratio = attention_flops(N, d, kind="softmax", B=B, H=H) / attention_flops(N, d, kind="linear", B=B, H=H)
    ax1.set_title(f"N={N:,}, d={d}: softmax needs {ratio:,.1f}× the FLOPs", fontsize=10)
    kw = dict(B=B, H=H, bytes_per_element=bytes_per_element)
    ax2.set_title(f"scores {format_bytes(attention_memory_bytes(N, d, kind='softmax', **kw))} vs "
                  f"state {format_bytes(attention_memory_bytes(N, d, kind='linear', **kw))}", fontsize=10)
    for ax in (ax1, ax2):
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
