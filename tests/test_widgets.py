"""course_utils.widgets headless (Agg backend): each explorer builds, `update` returns the numbers it drew,
moving a control redraws once, and the chunk explorer follows the functions it is given."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils import bench, widgets  # noqa: E402

HARDWARE = {"fast": (1e15, 1e12), "slow": (1e13, 1e11)}


def flops(T, C, K, V):
    """The chunkwise form's matmul FLOPs (what Exercise 3.2 asks for), for the tests only."""
    return (T // C) * (2 * C * C * (K + V) + 4 * C * K * V)


def nbytes(T, C, K, V, bytes_per_element=2):
    return bytes_per_element * (T * (2 * K + 2 * V) + 2 * (T // C) * K * V)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _count_draws(explorer, monkeypatch):
    calls = []
    draw = explorer._draw
    monkeypatch.setattr(explorer, "_draw", lambda: calls.append(1) or draw())
    return calls


# ----------------------------------------------------------------------------------- attention complexity


def test_complexity_numbers_crossover_is_where_the_formulas_cross():
    for d in (16, 64, 128):
        n = widgets.complexity_numbers(1024, d)
        N = n["flops_crossover_N"]
        below = bench.attention_flops(N - 1, d, kind="softmax") <= bench.attention_flops(N - 1, d, kind="linear")
        above = bench.attention_flops(N, d, kind="softmax") > bench.attention_flops(N, d, kind="linear")
        assert below and above


def test_complexity_explorer_builds_and_updates_headless(monkeypatch):
    ex = widgets.complexity_explorer(N=1024, d=32, H=4)
    assert ex.figure is not None and ex.numbers["N"] == 1024
    draws = _count_draws(ex, monkeypatch)
    n = ex.update(N=8192, d=64, dtype="bfloat16 / float16")
    assert len(draws) == 1, "update() should draw once however many controls it sets"
    assert (n["N"], n["d"], n["H"]) == (8192, 64, 4)
    assert n["scores_bytes"] == 4 * 8192 * 8192 * 2
    assert n == widgets.complexity_numbers(8192, 64, H=4, bytes_per_element=2)
    assert len(ex.figure.axes) == 2 and "8192" in ex.text.value.replace(",", "")
    # moving a slider redraws too (what a student does in Jupyter)
    first = ex.figure
    ex.d.value = 128
    assert ex.figure is not first and ex.numbers["d"] == 128 and len(draws) == 2
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()


# ----------------------------------------------------------------------------------------- chunkwise cost


def test_chunk_cost_explorer_headless_update():
    ex = widgets.chunk_cost_explorer(flops, nbytes, HARDWARE, T=4096, C=64, d=64, gpu="fast")
    n = ex.update(C=16, T=1024, d=32, gpu="slow")
    assert (n["T"], n["C"], n["d"], n["gpu"]) == (1024, 16, 32, "slow")
    assert n["flops"] == flops(1024, 16, 32, 32) and n["bytes"] == nbytes(1024, 16, 32, 32)
    P, W = HARDWARE["slow"]
    assert math.isclose(n["time"], flops(1024, 16, 32, 32) / P + nbytes(1024, 16, 32, 32) / W)
    Cs = [2**i for i in range(11)]
    times = [flops(1024, c, 32, 32) / P + nbytes(1024, c, 32, 32) / W for c in Cs]
    assert n["best_C"] == Cs[int(np.argmin(times))]
    assert isinstance(ex.figure, Figure) and "C = " in ex.text.value


def test_chunk_cost_explorer_keeps_C_within_T():
    ex = widgets.chunk_cost_explorer(flops, nbytes, HARDWARE, T=4096, C=1024)
    n = ex.update(T=256)  # C=1024 no longer divides T: it is clamped to T
    assert n["C"] == 256 and max(ex.C.options) == 256
    with pytest.raises(ValueError):
        widgets.chunk_cost_explorer(flops, nbytes, {})


def test_chunk_cost_explorer_slider_narrows_C_and_redraws_once(monkeypatch):
    ex = widgets.chunk_cost_explorer(flops, nbytes, HARDWARE, T=4096, C=1024)
    draws = _count_draws(ex, monkeypatch)
    ex.T.value = 512  # what a student does: C's options shrink with T, one redraw
    assert len(draws) == 1 and ex.numbers["C"] == 512 and max(ex.C.options) == 512


def test_explorer_propagates_a_stub():
    def stub(T, C, K, V):
        raise NotImplementedError("Exercise 3.2: stub")

    with pytest.raises(NotImplementedError, match="Exercise 3.2"):
        widgets.chunk_cost_explorer(stub, nbytes, HARDWARE)


# ------------------------------------------------------------------------------ random-feature variance


def test_relative_feature_variance_formulas():
    xy, sq = np.array([-0.5, 0.0, 0.5]), 1.0
    assert np.allclose(widgets.relative_feature_variance("positive", xy, sq, sq), np.expm1(2 + 2 * xy))
    assert np.allclose(widgets.relative_feature_variance("trigonometric", xy, sq, sq), 2 * np.sinh(1 - xy) ** 2)
    with pytest.raises(ValueError, match="kind"):
        widgets.relative_feature_variance("cosine", xy, sq, sq)


def test_feature_variance_numbers_crossing_and_growth():
    n = widgets.feature_variance_numbers(1.0, 64)
    assert n["crossover_xy"] == pytest.approx(-0.1710, abs=2e-4) and n["crossover_cos"] == n["crossover_xy"]
    pos = widgets.relative_feature_variance("positive", n["crossover_xy"], 1.0, 1.0)
    trig = widgets.relative_feature_variance("trigonometric", n["crossover_xy"], 1.0, 1.0)
    assert pos == pytest.approx(trig, rel=1e-9)
    assert n["positive_at_x_eq_y"] == pytest.approx(math.sqrt(math.expm1(4.0) / 64))
    assert widgets.feature_variance_numbers(3.0)["crossover_xy"] == pytest.approx(-math.log(2) / 4, abs=1e-6)
    assert widgets.feature_variance_numbers(1.5)["positive_at_x_eq_y"] > 10 * n["positive_at_x_eq_y"]
    with pytest.raises(ValueError, match="norm"):
        widgets.feature_variance_numbers(0.0)


def test_feature_variance_explorer_headless(monkeypatch):
    ex = widgets.feature_variance_explorer(norm=1.0, M=64)
    draws = _count_draws(ex, monkeypatch)
    n = ex.update(norm=1.5, M=256)
    assert len(draws) == 1 and n == widgets.feature_variance_numbers(1.5, 256)
    assert len(ex.figure.axes) == 1 and "1.50" in ex.text.value
    ex.norm.value = 0.5
    assert len(draws) == 2 and ex.numbers["norm"] == 0.5
    assert isinstance(ex.figure, Figure)


# ------------------------------------------------------------------------------------ gated linear attention


def test_gate_decay_numbers_follow_the_formula():
    n = widgets.gate_decay_numbers(bias=0.0, spread=3.0, tau=16.0, K=16)
    assert n["logits"][0] == -3.0 and n["logits"][-1] == 3.0
    for z, g, a, h in zip(n["logits"], n["g"], n["alpha"], n["half_life"]):
        assert math.isclose(a, (1 / (1 + math.exp(-z))) ** (1 / 16), rel_tol=1e-12)  # α = σ(z)^(1/τ)
        assert math.isclose(g, math.log(a), rel_tol=1e-9) and math.isclose(h, math.log(2) / -g, rel_tol=1e-12)
    assert n["min_half_life"] == n["half_life"][0] and n["max_half_life"] == n["half_life"][-1]
    assert widgets.gate_decay_numbers(-100.0, 0.0, 1.0, 2)["g"] == [-100.0, -100.0]  # logsigmoid(z) ≈ z


def test_gate_decay_explorer_headless_update(monkeypatch):
    ex = widgets.gate_decay_explorer(tau=16.0)
    draws = _count_draws(ex, monkeypatch)
    n = ex.update(tau=1.0, spread=1.0)
    assert len(draws) == 1 and n == widgets.gate_decay_numbers(0.0, 1.0, 1.0, 16)
    assert len(ex.figure.axes) == 3 and "τ = 1" in ex.text.value  # heatmap, its colorbar, the half-lives
