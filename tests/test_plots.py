"""course_utils.plots under the Agg backend (headless, fast): each figure builds, by topic, and shows what it
claims (crossovers, masks, lines, best chunk sizes)."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils import bench, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rows(x="N"):
    rows = []
    for n in (64, 128, 256, 512, 1024):
        rows.append({"name": "softmax", x: n, "ms": 1e-4 * n * n, "peak_bytes": 4.0 * n * n,
                     "flops": 4.0 * n * n * 64})
        rows.append({"name": "linear", x: n, "ms": 0.02 * n, "peak_bytes": 4.0 * 64 * n,
                     "flops": 4.0 * n * 64 * 64})
    return rows


def _vlines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == ":"]


# ------------------------------------------------------------------------------------------ shared: axes


def test_binary_bytes_axis_labels():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1024, 2**21])
    plots.binary_bytes_axis(ax)
    assert ax.get_yscale() == "log"
    fmt = ax.yaxis.get_major_formatter()
    assert fmt(1024, None) == "1 KiB" and fmt(3 * 2**20, None) == "3 MiB" and fmt(512, None) == "512 B"


def test_every_public_figure_function_is_exported():
    public = {n for n in dir(plots) if n.startswith("plot_") or n == "binary_bytes_axis"}
    assert public <= set(plots.__all__)


# ---------------------------------------------------------------------------- attention: weights and cost


def test_attention_matrices_one_panel_per_matrix_and_masked_zeros():
    a = torch.rand(6, 6).tril()
    fig = plots.plot_attention_matrices({"a": a, "b": np.tril(np.ones((6, 6)))}, title="t")
    assert isinstance(fig, Figure)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    data = images[0].get_array()
    assert data.mask[0, 5] and not data.mask[5, 0]  # the future (upper triangle) is left blank
    assert fig.get_suptitle() == "t"


def test_plot_scaling_one_panel_per_metric_and_crossovers():
    fig = plots.plot_scaling(_rows(), pair=("softmax", "linear"),
                             models={"flops": {"4N²d": lambda N: 4 * N * N * 64}})
    assert len(fig.axes) == 3
    time_ax, mem_ax, flop_ax = fig.axes
    assert len(_vlines(time_ax)) == 1
    assert _vlines(time_ax)[0].get_xdata()[0] == pytest.approx(200.0)  # 1e-4 n^2 = 0.02 n
    assert _vlines(mem_ax)[0].get_xdata()[0] == pytest.approx(64.0)
    assert any(line.get_linestyle() == "--" for line in flop_ax.get_lines())


def test_plot_scaling_reads_the_swept_variable_by_name():
    fig = plots.plot_scaling(_rows("T"), ("ms",), x="T")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "T"
    assert _vlines(ax)[0].get_xdata()[0] == pytest.approx(200.0)


def test_plot_scaling_without_crossover_says_so_and_skips_empty_metrics():
    rows = [r for r in _rows() if r["N"] >= 256]
    for r in rows:
        r["flops"] = float("nan")
    fig = plots.plot_scaling(rows, metrics=("ms", "flops"))
    assert len(fig.axes) == 1
    assert any(t.get_text().startswith("no crossover: linear") for t in fig.axes[0].texts)


def test_plot_scaling_needs_rows():
    with pytest.raises(ValueError):
        plots.plot_scaling([])


def test_plot_complexity_titles_use_exact_numbers():
    fig = plots.plot_complexity(4096, 64, H=2)
    ratio = bench.attention_flops(4096, 64, kind="softmax") / bench.attention_flops(4096, 64, kind="linear")
    assert f"{ratio:,.1f}×" in fig.axes[0].get_title()


# ------------------------------------------------------------------------------------------ random features


def test_plot_feature_error_lines_and_bands():
    Ms = [4, 8, 16]
    rng = np.random.default_rng(0)
    errors = {"iid": rng.random((3, 5)) + 0.5, "orthogonal": rng.random((3, 5))}
    fig = plots.plot_feature_error(Ms, errors, reference={"1/√M": lambda M: 1 / np.sqrt(M)}, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["iid", "orthogonal", "1/√M"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), errors["iid"].mean(1))
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match="rows"):
        plots.plot_feature_error([4, 8], {"iid": np.ones((3, 2))})


def test_plot_pair_errors_one_scatter_per_estimator():
    xy = np.linspace(-1, 1, 20)
    fig = plots.plot_pair_errors(xy, {"a": np.exp(xy), "b": np.exp(-xy)}, curves={"c": np.exp})
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and len(ax.get_lines()) == 1
    with pytest.raises(ValueError, match="shape"):
        plots.plot_pair_errors(xy, {"a": np.ones(3)})


# ------------------------------------------------------------------------------------------ recurrent state


def test_state_vs_cache_lines_and_crossover():
    t = np.array([1, 2, 4, 8, 16])
    fig = plots.plot_state_vs_cache(t, t * 10, 40, crossover=4)
    ax = fig.axes[0]
    kv, state, cross = ax.get_lines()[:3]
    assert list(kv.get_ydata()) == list(t * 10) and set(state.get_ydata()) == {40}
    assert list(cross.get_xdata()) == [4, 4]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


# ------------------------------------------------------------------------------------------- chunkwise form


def chunk_flops(T, C, K, V):
    """The chunkwise form's matmul FLOPs (what Exercise 3.2 asks for), for the tests only."""
    return (T // C) * (2 * C * C * (K + V) + 4 * C * K * V)


def chunk_bytes(T, C, K, V, bytes_per_element=2):
    return bytes_per_element * (T * (2 * K + 2 * V) + 2 * (T // C) * K * V)


def test_chunk_partition_figure():
    T, C = 12, 4
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    kind = torch.where(s > t, 0, torch.where(t // C == s // C, 2, 1))
    fig = plots.plot_chunk_partition(kind, C)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (T, T)
    assert len(ax.get_lines()) == 2 * (T // C - 1)  # boundaries between chunks, both directions
    assert "C = 4" in ax.get_title()


def test_chunk_cost_figure():
    Cs = [1, 2, 4, 8]
    fig = plots.plot_chunk_cost(Cs, [chunk_flops(64, c, 8, 8) for c in Cs], [chunk_bytes(64, c, 8, 8) for c in Cs],
                                [1e-6] * 4, [2e-6, 1e-6, 5e-7, 3e-7], current=4, best=8, title="x")
    assert len(fig.axes) == 3  # two panels + the bytes twin axis


# ------------------------------------------------------------------------------ retention and the delta rule


def test_retention_decay_figure_marks_half_lives():
    gammas = torch.tensor([0.96875, 0.984375, 0.9921875])
    T = 16
    dist = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    D = torch.where(dist >= 0, gammas[:, None, None] ** dist.clamp(min=0), 0.0)
    fig = plots.plot_retention_decay(D, gammas, title="t")
    heat0, heat2, curves = fig.axes[:3]  # then the colour bar
    assert "head 0" in heat0.get_title() and "head 2" in heat2.get_title()  # first and last head by default
    assert heat0.images[0].get_array().mask[0, 1]  # the future (s > t) is left white
    labels = [t.get_text() for t in curves.get_legend().get_texts()]
    assert labels[0] == "head 0: half-life 22" and labels[-1] == "head 2: half-life 88"
    assert curves.get_lines()[0].get_xdata()[-1] >= 88  # the curves reach every half-life


def test_capacity_figure_one_line_per_memory_and_theory():
    ratios = [0.25, 0.5, 1.0, 2.0]
    fig = plots.plot_capacity(ratios, {"additive": [0.5, 0.7, 1.0, 1.4], "delta": [0.3, 0.5, 0.8, 1.0]},
                              theory={"sqrt(n/K)": [0.5, 0.7, 1.0, 1.41]}, title="t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["additive", "delta", "sqrt(n/K)"]
    assert any(line.get_xdata()[0] == 1.0 and line.get_linestyle() == ":" for line in ax.get_lines())  # n = K


def test_overwrite_figure_groups_bars_by_memory():
    sim = {"linear": {"v_a": 0.7, "v_b": 0.7}, "delta": {"v_a": 0.0, "v_b": 1.0}, "softmax": {"v_a": 0.7, "v_b": 0.7}}
    fig = plots.plot_overwrite(sim, title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == 6 and [t.get_text() for t in ax.get_xticklabels()] == ["linear", "delta", "softmax"]
    assert sorted(round(p.get_height(), 2) for p in ax.patches)[-1] == 1.0


# ------------------------------------------- lab 01: spread, intervals, random-feature variance, feature maps


def _rows_with_spread():
    rows = _rows()
    for r in rows:
        r.update(ms_q1=0.8 * r["ms"], ms_q3=1.3 * r["ms"], reps=7)
    return rows


def test_plot_scaling_spread_bars_named_pair_and_one_legend_below():
    fig = plots.plot_scaling_spread(_rows_with_spread(), pair=("softmax", "linear"), pair_labels=("S", "L"),
                                    models={"flops": {"4N²d": lambda N: 4 * N * N * 64}}, title="t")
    time_ax, mem_ax, flop_ax = fig.axes
    bars = [c for c in time_ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 2 and not mem_ax.containers  # spread on the time panel only
    segments = bars[0].lines[2][0].get_segments()  # softmax's bars: from q1 to q3 at every N
    assert np.allclose([(s[0][1], s[1][1]) for s in segments], [(0.8e-4 * n * n, 1.3e-4 * n * n)
                                                                 for n in (64, 128, 256, 512, 1024)])
    assert "7 runs" in time_ax.get_ylabel()
    notes = [t.get_text() for t in time_ax.texts]
    assert notes == ["S vs L: cross at N ≈ 200;\nL lower at N = 1,024"]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["softmax", "linear", "4N²d"]  # deduplicated across panels
    assert _vlines(time_ax)[0].get_xdata()[0] == pytest.approx(200.0) and fig.get_suptitle() == "t"


def test_plot_scaling_spread_without_crossover_names_both_and_needs_rows():
    rows = [r for r in _rows_with_spread() if r["N"] >= 256]
    fig = plots.plot_scaling_spread(rows, ("ms",), pair=("softmax", "linear"), spread=None)
    assert not fig.axes[0].containers
    assert fig.axes[0].texts[0].get_text() == "softmax vs linear: no crossover;\nlinear lower at every N measured"
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_scaling_spread([])


def test_plot_error_intervals_bars_ratio_panel_and_mark():
    Ms = [4, 8, 16]
    mid = np.array([1.0, 0.7, 0.5])
    fig = plots.plot_error_intervals(Ms, {"iid": (mid, mid - 0.1, mid + 0.1), "orth": (mid * 0.9, mid * 0.8, mid)},
                                     ratio=(np.full(3, 0.9), np.full(3, 0.8), np.full(3, 1.0)), mark=16,
                                     mark_label="M = d")
    left, right = fig.axes
    assert len(left.containers) == 2 and len(right.containers) == 1
    assert any(line.get_linestyle() == "--" and set(line.get_ydata()) == {1.0} for line in right.get_lines())
    assert len(_vlines(left)) == 1 and _vlines(left)[0].get_xdata()[0] == 16
    assert "M = d" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(plots.plot_error_intervals(Ms, {"iid": (mid, mid, mid)}).axes) == 1
    with pytest.raises(ValueError, match="3 values"):
        plots.plot_error_intervals(Ms, {"iid": (mid[:2], mid[:2], mid[:2])})


def test_plot_feature_variance_one_panel_per_norm_and_the_crossing():
    from course_utils.widgets import feature_variance_numbers

    fig = plots.plot_feature_variance([0.5, 1.0], M=64)
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    red, blue = ax.get_lines()[:2]
    assert red.get_ydata()[-1] == pytest.approx(np.sqrt(np.expm1(4.0) / 64))  # x = y at |x| = |y| = 1
    assert _vlines(ax)[0].get_xdata()[0] == pytest.approx(feature_variance_numbers(1.0)["crossover_xy"])
    assert "positive = trigonometric" in ax.texts[0].get_text()


def test_plot_feature_map_weights_one_panel_per_map_and_entropy_boxes():
    s = np.linspace(-3, 3, 20)
    soft = np.exp(s) / np.exp(s).sum()
    weights = {"softmax": soft, "flat": np.full(20, 0.05), "relu": np.where(s > 0, s, 0) / np.clip(s, 0, None).sum()}
    ents = {n: np.random.default_rng(0).random(8) + i for i, n in enumerate(weights)}
    fig = plots.plot_feature_map_weights(s, weights, ents, max_entropy=np.log(20), title="t")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    small, right = visible[:-1], visible[-1]
    assert [ax.get_title() for ax in small] == ["flat", "relu"]
    assert [t.get_text() for t in right.get_yticklabels()] == list(weights)
    assert len(small[1].collections[0].get_offsets().compressed()) < 2 * 20  # zero weights are not drawn
    with pytest.raises(ValueError, match="shape"):
        plots.plot_feature_map_weights(s, {"softmax": soft, "bad": np.ones(3)}, ents)


# ------------------------------------------- lab 03: timings with their spread, benchmarks comparing named pairs


def test_timings_spread_draws_bars_the_fit_and_the_fastest_c():
    Cs = [1, 2, 4, 8, 16]
    stats = [{"median": m, "q1": 0.9 * m, "q3": 1.2 * m, "min": 0.8 * m, "max": 2 * m} for m in (9.0, 5, 2, 3, 6)]
    fig = plots.plot_timings_spread(Cs, {"3.1: loop": stats}, fit=([8, 5, 3, 3, 5], "fit"),
                                    model=(Cs, [5e-6, 3e-6, 1e-6, 2e-6, 4e-6], "model"))
    ax, ax2 = fig.axes
    labels = ax.get_legend_handles_labels()[1]
    assert "fastest (3.1): C = 4" in labels and "fit" in labels
    assert "best: C = 4" in ax2.get_legend_handles_labels()[1]
    for a in (ax, ax2):  # legends sit below the axes, where they cover no curve
        assert a.get_legend().get_bbox_to_anchor().y0 < a.get_window_extent().y0


def test_scaling_pairs_names_both_curves_of_every_comparison():
    rows = _rows()
    for r in rows:
        r.update(ms_q1=0.9 * r["ms"], ms_q3=1.1 * r["ms"])
    rows += [{"name": "third", "N": n, "ms": 0.05 * n, "ms_q1": 0.05 * n, "ms_q3": 0.05 * n, "peak_bytes": 8.0 * n}
             for n in (64, 128, 256, 512, 1024)]
    fig = plots.plot_scaling_pairs(rows, ("ms", "peak_bytes"), pairs=[("softmax", "linear"), ("linear", "third")])
    notes = [t.get_text() for a in fig.axes for t in a.texts if t.get_text().startswith("(1) ")]
    assert len(notes) == 2  # one note block per panel
    assert "softmax vs linear: cross at N ≈ 200" in notes[0].replace("\n", " ").replace("      ", " ")
    assert "linear vs third: no crossover" in notes[0].replace("\n", " ").replace("      ", " ")
    assert len(_vlines(fig.axes[0])) == 1  # the crossing is marked; the pair that does not cross is not
    assert fig.legends and not any(a.get_legend() for a in fig.axes)  # one legend, below the panels


# ------------------------------------------------------------------------------------ gated linear attention


def test_gated_errors_marks_non_finite_runs_and_the_predicted_breakdown():
    rows = [{"dtype": dt, "g": g, "T": n, "err": (1e-7 if n * abs(g) < 88.7 else math.inf), "form": "naive"}
            for dt in ("float32", "bfloat16") for g in (-0.05, -0.6) for n in (64, 128, 256)]
    fig = plots.plot_gated_errors(rows, threshold=88.7)
    assert len(fig.axes) == 2  # one panel per dtype
    ax = fig.axes[0]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [256]  # g = -0.6 breaks at T = 256 only
    assert sorted(round(line.get_xdata()[0]) for line in _vlines(ax)) == [148, 1774]  # T* = 88.7 / |g|
    assert ax.get_legend() is None and fig.axes[1].get_legend() is not None  # outside the last panel


def test_gla_chunk_partition_draws_four_kinds():
    t, s = torch.arange(32)[:, None], torch.arange(32)[None, :]
    kind = torch.where(s > t, 0, torch.where(t // 16 == s // 16, torch.where(t // 4 == s // 4, 3, 2), 1))
    fig = plots.plot_gla_chunk_partition(kind, 16, 4)
    assert len(fig.axes[0].get_legend().get_texts()) == 4 and "sub-chunks of 4" in fig.axes[0].get_title()


def test_gate_decay_half_lives():
    fig = plots.plot_gate_decay([0.5, 0.9, 1.0], steps=16)
    bars = fig.axes[1].patches  # axes: the heatmap, the half-lives, the colour bar
    assert len(bars) == 3 and abs(bars[0].get_width() - 1.0) < 1e-9  # α = 0.5: half-life of one token
    assert abs(bars[1].get_width() - math.log(2) / -math.log(0.9)) < 1e-9


# ------------------------------------------------------------------------------------ low precision (lab 02)


def test_precision_drift_marks_the_overflow_and_drops_non_finite_errors():
    t = np.arange(1, 65)
    errs = {"float32 state": 1e-7 * np.ones(64), "float16 state": np.where(t < 40, 1e-3, np.inf)}
    fig = plots.plot_precision_drift(t, {"q·z": 1000.0 * t}, errs, marks={"float16: q·z = inf from t = 40": 40})
    left, right = fig.axes
    assert [line.get_ydata()[0] for line in left.get_lines() if line.get_linestyle() == "--"] == [65504.0]
    assert len(_vlines(left)) == len(_vlines(right)) == 1 and _vlines(right)[0].get_xdata()[0] == 40
    f16 = next(line for line in right.get_lines() if line.get_label() == "float16 state")
    assert np.isnan(f16.get_ydata()[45]) and f16.get_ydata()[10] == 1e-3  # inf is not drawn
    assert any("t = 40" in text.get_text() for text in right.texts)
    for ax in (left, right):  # legends below the axes, where they cover no curve
        assert ax.get_legend() is not None and ax.get_legend().get_bbox_to_anchor().y0 < ax.bbox.y0
