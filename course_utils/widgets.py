"""Interactive explorers for the notebooks (ipywidgets), by topic: attention's complexity, the chunkwise cost,
GLA's per-channel decay.

Every explorer is an object with a `.widget` (what Jupyter shows: putting the explorer last in a cell
displays it), and an `.update(**values)` method that sets the controls, redraws, and returns the numbers
it drew. `update` works headless (nbval, CI, tests), so a notebook cell can build an explorer, call
`update` once and check what it returns. The machinery they share (observing the controls, drawing once
per update, showing the figure in an Output widget) is `_Explorer`; each explorer only computes its numbers,
its line of text and its figure.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from course_utils.bench import attention_flops, attention_memory_bytes

__all__ = ["ChunkCostExplorer", "ComplexityExplorer", "GateDecayExplorer", "chunk_cost_explorer",
           "complexity_explorer", "complexity_numbers", "gate_decay_explorer", "gate_decay_numbers"]


class _Explorer:
    """Controls, a line of text and a figure that follows them. A subclass builds its controls, calls
    `_start(controls, columns)` and implements `_draw()`; it may override `_on_control(change)`."""

    figure: Figure | None = None

    def _start(self, controls: dict[str, Any], columns: Sequence[Sequence[Any]]) -> None:
        """controls: {name: widget} in the order update() sets them.  columns: how they are laid out."""
        import ipywidgets as w

        self.controls = controls
        self.numbers: dict[str, Any] = {}
        self.out = w.Output()
        self.text = w.HTML()
        self._quiet = False  # True while several controls change together: draw once, at the end
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.widget = w.VBox([w.HBox([w.VBox(list(col)) for col in columns]), self.text, self.out])
        self._redraw()

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        """(numbers, HTML line, figure) for the controls' current values."""
        raise NotImplementedError

    def _on_control(self, change: dict[str, Any]) -> None:
        """React to one control before the redraw (e.g. narrow another control's options)."""

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        self._quiet, before = True, self._quiet
        try:
            yield
        finally:
            self._quiet = before

    def _on_change(self, change: dict[str, Any]) -> None:
        self._on_control(change)
        if not self._quiet:
            self._redraw()

    def _redraw(self) -> dict[str, Any]:
        from IPython.display import display

        if self.figure is not None:
            plt.close(self.figure)
        self.numbers, self.text.value, self.figure = self._draw()
        with self.out:
            self.out.clear_output(wait=True)
            display(self.figure)
        plt.close(self.figure)  # shown through the Output widget only, not a second time inline
        return dict(self.numbers)

    def _set(self, **values: Any) -> dict[str, Any]:
        """Set the controls given (None: unchanged) in the order of `controls`, redraw once, return the numbers."""
        with self._quietly():
            for name, control in self.controls.items():
                if values.get(name) is not None:
                    control.value = values[name]
        return self._redraw()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


# --------------------------------------------------------------- attention: softmax against linear, by N and d

_DTYPE_BYTES = {"float32": 4, "bfloat16 / float16": 2}


def complexity_numbers(N: int, d: int, H: int = 1, B: int = 1, bytes_per_element: int = 4) -> dict[str, Any]:
    """The model numbers the complexity explorer shows for one setting (non-causal, dv = d).

    Returns {"N", "d", "H", "B", "flops_softmax", "flops_linear", "flops_ratio",
             "scores_bytes", "state_bytes", "flops_crossover_N"}; flops_crossover_N is the smallest N at
    which linear attention's FLOPs drop below softmax's (4 N^2 d > 4 N d^2 + 2 N d  <=>  N > d + 1/2).
    """
    kw = dict(B=B, H=H)
    fs = attention_flops(N, d, kind="softmax", **kw)
    fl = attention_flops(N, d, kind="linear", **kw)
    return {
        "N": int(N), "d": int(d), "H": int(H), "B": int(B),
        "flops_softmax": fs,
        "flops_linear": fl,
        "flops_ratio": fs / fl,
        "scores_bytes": attention_memory_bytes(N, d, kind="softmax", bytes_per_element=bytes_per_element, **kw),
        "state_bytes": attention_memory_bytes(N, d, kind="linear", bytes_per_element=bytes_per_element, **kw),
        "flops_crossover_N": d + 1,
    }


class ComplexityExplorer(_Explorer):
    """Sliders for sequence length N, head dim d, heads H and element size; two model panels.

    Cheap: nothing is measured, every redraw evaluates closed-form counts (course_utils.bench).
    """

    def __init__(self, N: int = 4096, d: int = 64, H: int = 8, dtype: str = "float32", N_max: int = 2**17):
        import ipywidgets as w

        self.N_max = N_max
        style = {"description_width": "150px"}
        layout = w.Layout(width="460px")
        # N spans four orders of magnitude: a log-scale slider (base 2) keeps short sequences reachable.
        self.N = w.FloatLogSlider(value=N, base=2, min=4, max=math.log2(N_max), step=0.25,
                                  description="sequence length N", readout_format=",.0f",
                                  style=style, layout=layout, continuous_update=False)
        self.d = w.IntSlider(value=d, min=16, max=256, step=16, description="head dim d",
                             style=style, layout=layout, continuous_update=False)
        self.H = w.IntSlider(value=H, min=1, max=32, description="heads H", style=style, layout=layout,
                             continuous_update=False)
        self.dtype = w.Dropdown(options=list(_DTYPE_BYTES), value=dtype, description="element type",
                                style=style, layout=layout)
        self._start({"N": self.N, "d": self.d, "H": self.H, "dtype": self.dtype},
                    columns=[(self.N, self.d), (self.H, self.dtype)])

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        from course_utils.plots import plot_complexity

        bpe = _DTYPE_BYTES[self.dtype.value]
        n = complexity_numbers(int(round(self.N.value)), self.d.value, self.H.value, 1, bpe)
        text = (
            f"<b>N={n['N']:,}, d={n['d']}, H={n['H']}</b>: softmax {n['flops_softmax']:.3g} FLOPs, "
            f"linear {n['flops_linear']:.3g} FLOPs (<b>{n['flops_ratio']:,.1f}×</b>); "
            f"linear attention wins FLOPs from N = {n['flops_crossover_N']}."
        )
        return n, text, plot_complexity(n["N"], n["d"], H=n["H"], bytes_per_element=bpe, N_max=self.N_max)

    def update(self, N: int | None = None, d: int | None = None, H: int | None = None,
               dtype: str | None = None) -> dict[str, Any]:
        """Set any of the controls, redraw once, and return the numbers drawn (see complexity_numbers)."""
        return self._set(N=N, d=d, H=H, dtype=dtype)


def complexity_explorer(N: int = 4096, d: int = 64, H: int = 8, dtype: str = "float32") -> ComplexityExplorer:
    """Build the FLOPs/memory explorer for softmax vs linear attention (show it by ending a cell with it;
    call `.update(N=..., d=...)` to set it from code)."""
    return ComplexityExplorer(N=N, d=d, H=H, dtype=dtype)


# ----------------------------------------------------------------------- chunkwise form: the chunk size's cost
# It evaluates the functions it is given (the student's FLOP count and the notebook's byte count), so it
# never holds a solution itself.


class ChunkCostExplorer(_Explorer):
    """Sliders for chunk size C, sequence length T, head dim d (K = V = d) and a GPU; redraws the model
    time(C) = flops_fn(T, C, d, d) / peak FLOP/s + bytes_fn(T, C, d, d) / bandwidth (course_utils.plots
    .plot_chunk_cost) and reports the best power-of-two C.

    hardware: {name: (peak matmul FLOP/s, memory bandwidth in bytes/s)}. Nothing is measured.
    """

    def __init__(self, flops_fn: Callable[[int, int, int, int], int], bytes_fn: Callable[[int, int, int, int], int],
                 hardware: dict[str, tuple[float, float]], T: int = 4096, C: int = 64, d: int = 128,
                 gpu: str | None = None, T_choices: tuple[int, ...] = tuple(2**i for i in range(8, 17))):
        import ipywidgets as w

        if not hardware:
            raise ValueError("ChunkCostExplorer: hardware needs at least one {name: (flop/s, bytes/s)} entry.")
        self.flops_fn, self.bytes_fn, self.hardware = flops_fn, bytes_fn, dict(hardware)
        style = {"description_width": "130px"}
        layout = w.Layout(width="440px")
        self.T = w.SelectionSlider(options=list(T_choices), value=T, description="sequence length T",
                                   style=style, layout=layout, continuous_update=False)
        self.C = w.SelectionSlider(options=self._chunk_options(T), value=C, description="chunk size C",
                                   style=style, layout=layout, continuous_update=False)
        self.d = w.Dropdown(options=[32, 64, 128, 256], value=d, description="head dim K = V",
                            style=style, layout=layout)
        self.gpu = w.Dropdown(options=list(self.hardware), value=gpu or next(iter(self.hardware)),
                              description="GPU", style=style, layout=layout)
        # T before C: update(T=..., C=...) narrows C's options to T first
        self._start({"T": self.T, "C": self.C, "d": self.d, "gpu": self.gpu},
                    columns=[(self.C, self.T), (self.d, self.gpu)])

    @staticmethod
    def _chunk_options(T: int) -> list[int]:
        return [2**i for i in range(int(math.log2(T)) + 1)]

    def _on_control(self, change: dict[str, Any]) -> None:
        if change["owner"] is self.T:  # C must divide T: offer the powers of two up to T
            c = min(self.C.value, change["new"])
            with self._quietly():
                self.C.options = self._chunk_options(change["new"])
                self.C.value = c

    def model(self, T: int, C: int, d: int, gpu: str) -> tuple[int, int, float, float]:
        """(FLOPs, bytes, compute seconds, memory seconds) of one (batch, head) at chunk size C."""
        peak, bandwidth = self.hardware[gpu]
        f, b = int(self.flops_fn(T, C, d, d)), int(self.bytes_fn(T, C, d, d))
        return f, b, f / peak, b / bandwidth

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        from course_utils.plots import plot_chunk_cost

        T, C, d, gpu = self.T.value, self.C.value, self.d.value, self.gpu.value
        Cs = self._chunk_options(T)
        rows = [self.model(T, c, d, gpu) for c in Cs]
        totals = [tc + tm for _, _, tc, tm in rows]
        best = Cs[totals.index(min(totals))]
        f, b, tc, tm = self.model(T, C, d, gpu)
        numbers = {"T": T, "C": C, "d": d, "gpu": gpu, "flops": f, "bytes": b, "t_compute": tc,
                   "t_memory": tm, "time": tc + tm, "best_C": best, "best_time": min(totals), "intensity": f / b}
        text = (
            f"<b>{gpu}, T={T:,}, d={d}, C={C}</b> (one head): {f:.3g} FLOPs, {b / 2**20:.2f} MiB moved, "
            f"{f / b:.0f} FLOP/byte → model {1e6 * (tc + tm):.2f} µs "
            f"(compute {1e6 * tc:.2f} + memory {1e6 * tm:.2f}); best power of two: <b>C = {best}</b>."
        )
        figure = plot_chunk_cost(Cs, *zip(*rows), current=C, best=best,
                                 title=f"chunkwise linear attention on {gpu}: T={T:,}, K=V={d}")
        return numbers, text, figure

    def update(self, C: int | None = None, T: int | None = None, d: int | None = None,
               gpu: str | None = None) -> dict[str, Any]:
        """Set any of the controls, redraw once, and return the numbers drawn."""
        return self._set(C=C, T=T, d=d, gpu=gpu)


def chunk_cost_explorer(flops_fn: Callable[[int, int, int, int], int], bytes_fn: Callable[[int, int, int, int], int],
                        hardware: dict[str, tuple[float, float]], T: int = 4096, C: int = 64, d: int = 128,
                        gpu: str | None = None) -> ChunkCostExplorer:
    """Build the chunk-size explorer (show it by ending a cell with it; `.update(C=..., T=...)` sets it from
    code and returns the numbers)."""
    return ChunkCostExplorer(flops_fn, bytes_fn, hardware, T=T, C=C, d=d, gpu=gpu)


# ------------------------------------------------------------------------------------ gated linear attention
# Lab 04: GLA's gate α = σ(z)^(1/τ) per key channel; the bias of z and the temperature τ set how fast each
# channel forgets. Closed forms only: nothing is run.


def gate_decay_numbers(bias: float = 0.0, spread: float = 3.0, tau: float = 16.0, K: int = 16) -> dict[str, Any]:
    """The per-channel decays of a GLA gate whose logits are spread evenly over bias ± spread (one per key
    channel, as the gate's bias b_α spreads them) with temperature τ: g_i = logsigmoid(z_i) / τ,
    α_i = exp(g_i) = σ(z_i)^(1/τ), half-life ln 2 / |g_i| tokens.

    Returns {"bias", "spread", "tau", "K", "logits", "g", "alpha", "half_life", "min_half_life",
    "max_half_life"} (lists per channel, slowest-forgetting channel last).
    """
    logits = [bias + spread * (2 * i / (K - 1) - 1) if K > 1 else bias for i in range(K)]
    g = [-(math.log1p(math.exp(-z)) if z > -30 else -z) / tau for z in logits]  # logsigmoid(z) = -softplus(-z)
    half = [math.log(2) / -gi if gi < 0 else math.inf for gi in g]
    return {"bias": bias, "spread": spread, "tau": tau, "K": K, "logits": logits, "g": g,
            "alpha": [math.exp(gi) for gi in g], "half_life": half, "min_half_life": min(half),
            "max_half_life": max(half)}


class GateDecayExplorer(_Explorer):
    """Sliders for the gate logits' bias and spread and the temperature τ; redraws the per-channel decay
    α_i^n and the half-lives (course_utils.plots.plot_gate_decay)."""

    def __init__(self, bias: float = 0.0, spread: float = 3.0, tau: float = 16.0, K: int = 16, steps: int = 256):
        import ipywidgets as w

        self.K, self.steps = K, steps
        style = {"description_width": "150px"}
        layout = w.Layout(width="440px")
        self.bias = w.FloatSlider(value=bias, min=-4.0, max=8.0, step=0.25, description="logit bias",
                                  style=style, layout=layout, continuous_update=False)
        self.spread = w.FloatSlider(value=spread, min=0.0, max=6.0, step=0.25, description="spread over channels",
                                    style=style, layout=layout, continuous_update=False)
        self.tau = w.FloatLogSlider(value=tau, base=2, min=0, max=6, step=0.5, description="temperature τ",
                                    style=style, layout=layout, continuous_update=False)
        self._start({"bias": self.bias, "spread": self.spread, "tau": self.tau},
                    columns=[(self.bias, self.spread), (self.tau,)])

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        from course_utils.plots import plot_gate_decay

        n = gate_decay_numbers(self.bias.value, self.spread.value, self.tau.value, self.K)
        text = (f"<b>τ = {n['tau']:g}, logits {n['bias'] - n['spread']:g} … {n['bias'] + n['spread']:g}</b>: "
                f"α from {min(n['alpha']):.4f} to {max(n['alpha']):.4f}; half-lives from "
                f"{n['min_half_life']:.3g} to {n['max_half_life']:.3g} tokens.")
        figure = plot_gate_decay(n["alpha"], steps=self.steps, labels=[f"z={z:+.1f}" for z in n["logits"]],
                                 title=f"GLA gate α = σ(z)^(1/τ), τ = {n['tau']:g}")
        return n, text, figure

    def update(self, bias: float | None = None, spread: float | None = None, tau: float | None = None
               ) -> dict[str, Any]:
        """Set any of the controls, redraw once, and return the numbers drawn (see gate_decay_numbers)."""
        return self._set(bias=bias, spread=spread, tau=tau)


def gate_decay_explorer(bias: float = 0.0, spread: float = 3.0, tau: float = 16.0, K: int = 16,
                        steps: int = 256) -> GateDecayExplorer:
    """Build the per-channel decay explorer (show it by ending a cell with it; `.update(tau=...)` sets it from
    code and returns the numbers)."""
    return GateDecayExplorer(bias=bias, spread=spread, tau=tau, K=K, steps=steps)


# ------------------------------------------- random features: how the estimators' error grows with the norms


def relative_feature_variance(kind: str, xy: Any, sq_x: Any, sq_y: Any) -> Any:
    """Variance of one random feature's estimate of exp(x·y), divided by exp(2 x·y) (Choromanski et al. 2021,
    Lemma 2), from x·y and the squared norms |x|², |y|² (floats or numpy arrays):

    kind="positive":       e^{|x+y|²} - 1,        |x+y|² = |x|² + |y|² + 2 x·y
    kind="trigonometric":  2 sinh²(|x-y|² / 2),   |x-y|² = |x|² + |y|² - 2 x·y
    The estimate from M features has 1/M of it.
    """
    import numpy as np

    xy, sq_x, sq_y = (np.asarray(v, dtype=float) for v in (xy, sq_x, sq_y))
    if kind == "positive":
        return np.expm1(sq_x + sq_y + 2 * xy)
    if kind == "trigonometric":
        return 2 * np.sinh((sq_x + sq_y - 2 * xy) / 2) ** 2
    raise ValueError(f"relative_feature_variance: kind must be 'positive' or 'trigonometric'; got {kind!r}.")


def feature_variance_numbers(norm: float, M: int = 64) -> dict[str, Any]:
    """The numbers the feature-variance explorer shows for |x| = |y| = norm and M features.

    Returns {"norm", "M", "crossover_xy" (the x·y where both estimators have the same variance; positive
    features have the smaller one below it), "crossover_cos" (the same as cos θ = x·y / norm²),
    "error_at_crossover", "positive_at_x_eq_y" (the positive estimate's relative error at x = y, where
    |x+y|² = 4 norm²), "trigonometric_at_x_eq_minus_y"}; errors are sqrt(relative variance / M).
    """
    if norm <= 0 or M < 1:
        raise ValueError(f"feature_variance_numbers: needs norm > 0 and M >= 1; got norm={norm}, M={M}.")
    sq = float(norm) ** 2

    def err(kind: str, c: float) -> float:
        return math.sqrt(float(relative_feature_variance(kind, sq * c, sq, sq)) / M)

    lo, hi = -1.0, 1.0  # positive's error rises with cos θ from 0, trigonometric's falls to 0: one crossing
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if err("positive", mid) < err("trigonometric", mid) else (lo, mid)
    c = (lo + hi) / 2
    return {"norm": float(norm), "M": int(M), "crossover_xy": sq * c, "crossover_cos": c,
            "error_at_crossover": err("positive", c), "positive_at_x_eq_y": err("positive", 1.0),
            "trigonometric_at_x_eq_minus_y": err("trigonometric", -1.0)}


class FeatureVarianceExplorer(_Explorer):
    """A slider for the norm r = |x| = |y| and a choice of M; redraws the relative error of positive and
    trigonometric random features against x·y (course_utils.plots.plot_feature_variance). Nothing is sampled.
    """

    def __init__(self, norm: float = 1.0, M: int = 64, M_choices: Sequence[int] = (16, 64, 256, 1024)):
        import ipywidgets as w

        style = {"description_width": "120px"}
        layout = w.Layout(width="440px")
        self.norm = w.FloatSlider(value=norm, min=0.25, max=2.0, step=0.05, description="|x| = |y| = r",
                                  readout_format=".2f", style=style, layout=layout, continuous_update=False)
        self.M = w.Dropdown(options=list(M_choices), value=M, description="features M", style=style, layout=layout)
        self._start({"norm": self.norm, "M": self.M}, columns=[(self.norm,), (self.M,)])

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        from course_utils.plots import plot_feature_variance

        n = feature_variance_numbers(self.norm.value, self.M.value)
        text = (
            f"<b>|x| = |y| = {n['norm']:.2f}, M = {n['M']}</b>: positive features are the more precise for "
            f"x·y &lt; {n['crossover_xy']:+.3f} (cos θ &lt; {n['crossover_cos']:+.3f}); at x = y their relative "
            f"error is <b>{n['positive_at_x_eq_y']:.3g}</b> (it grows like e<sup>|x+y|²/2</sup>)."
        )
        return n, text, plot_feature_variance([n["norm"]], n["M"])

    def update(self, norm: float | None = None, M: int | None = None) -> dict[str, Any]:
        """Set any of the controls, redraw once, and return the numbers drawn (see feature_variance_numbers)."""
        return self._set(norm=norm, M=M)


def feature_variance_explorer(norm: float = 1.0, M: int = 64) -> FeatureVarianceExplorer:
    """Build the norm explorer for random-feature errors (show it by ending a cell with it; `.update(norm=...)`
    sets it from code and returns the numbers)."""
    return FeatureVarianceExplorer(norm=norm, M=M)


__all__ += ["FeatureVarianceExplorer", "feature_variance_explorer", "feature_variance_numbers",
            "relative_feature_variance"]


# ------------------------------------------------------- HiPPO-LegS: how much history a state of size N keeps


def legs_reconstruction_numbers(hippo: Callable[[int], Any], N: int, signal: Any, t: int) -> dict[str, Any]:
    """Run the LegS recurrence with (A, B) = hippo(N) over signal[:t] and read the history back from the state
    (course_utils.hippo). Returns {"N", "t", "reconstruction" [t], "error" (relative RMS over the history),
    "projection_gap" (online coefficients vs direct quadrature, relative)}."""
    import numpy as np

    from course_utils.hippo import legs_online, legs_project, legs_reconstruct

    if not 2 <= t <= len(signal):
        raise ValueError(f"legs_reconstruction_numbers: t must be in [2, {len(signal)}]; got {t}.")
    f = np.asarray(signal, dtype=float)[:t]
    A, B = hippo(N)
    c = legs_online(f, A, B)[-1]
    rec = legs_reconstruct(c, t)
    direct = legs_project(f, N)
    return {"N": N, "t": t, "reconstruction": rec,
            "error": float(np.linalg.norm(rec - f) / np.linalg.norm(f)),
            "projection_gap": float(np.linalg.norm(c - direct) / np.linalg.norm(direct))}


class LegsExplorer(_Explorer):
    """Sliders for the state size N and the read-out time t; redraws the history read back from the LegS state
    (course_utils.plots.plot_legs_reconstruction)."""

    def __init__(self, hippo: Callable[[int], Any], signal: Any, N: int = 16, t: int | None = None):
        import ipywidgets as w

        self.hippo, self.signal = hippo, signal
        style = {"description_width": "150px"}
        layout = w.Layout(width="440px")
        self.N = w.IntSlider(value=N, min=1, max=96, step=1, description="state size N", style=style,
                             layout=layout, continuous_update=False)
        L = len(signal)
        self.t = w.IntSlider(value=L if t is None else t, min=16, max=L, step=8, description="read after sample t",
                             style=style, layout=layout, continuous_update=False)
        self._start({"N": self.N, "t": self.t}, columns=[(self.N,), (self.t,)])

    def _draw(self) -> tuple[dict[str, Any], str, Figure]:
        from course_utils.plots import plot_legs_reconstruction

        n = legs_reconstruction_numbers(self.hippo, self.N.value, self.signal, self.t.value)
        text = (f"<b>N = {n['N']}, t = {n['t']}</b>: the {n['t']} samples seen so far, read back from {n['N']} "
                f"numbers, with relative error <b>{n['error']:.3g}</b> (the online coefficients are "
                f"{n['projection_gap']:.2g} from the exact projection)")
        figure = plot_legs_reconstruction(self.signal, {n["N"]: n["reconstruction"]}, t=n["t"],
                                          title=f"HiPPO-LegS memory, N = {n['N']}")
        return n, text, figure

    def update(self, N: int | None = None, t: int | None = None) -> dict[str, Any]:
        """Set any of the controls, redraw once, and return the numbers drawn (see legs_reconstruction_numbers)."""
        return self._set(N=N, t=t)


def legs_explorer(hippo: Callable[[int], Any], signal: Any, N: int = 16, t: int | None = None) -> LegsExplorer:
    """Build the HiPPO-LegS memory explorer: hippo(N) -> (A [N, N], B [N, 1]) (the student's Exercise 7.2),
    signal [L]. Show it by ending a cell with it; `.update(N=...)` sets it from code and returns the numbers."""
    return LegsExplorer(hippo, signal, N=N, t=t)


__all__ += ["LegsExplorer", "legs_explorer", "legs_reconstruction_numbers"]
