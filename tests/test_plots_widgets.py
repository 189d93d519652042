"""course_utils.plots and course_utils.widgets under the Agg backend (headless, fast)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_utils import bench, plots, widgets  # noqa: E402


def _rows():
    rows = []
    for n in (64, 128, 256, 512, 1024):
        rows.append({"name": "softmax", "N": n, "ms": 1e-4 * n * n, "peak_bytes": 4.0 * n * n,
                     "flops": 4.0 * n * n * 64})
        rows.append({"name": "linear", "N": n, "ms": 0.02 * n, "peak_bytes": 4.0 * 64 * n,
                     "flops": 4.0 * n * 64 * 64})
    return rows


def _vlines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == ":"]


def test_plot_scaling_one_panel_per_metric_and_crossovers():
    fig = plots.plot_scaling(_rows(), pair=("softmax", "linear"),
                             models={"flops": {"4N²d": lambda N: 4 * N * N * 64}})
    assert len(fig.axes) == 3
    time_ax, mem_ax, flop_ax = fig.axes
    assert len(_vlines(time_ax)) == 1
    assert _vlines(time_ax)[0].get_xdata()[0] == pytest.approx(200.0)  # 1e-4 n^2 = 0.02 n
    assert _vlines(mem_ax)[0].get_xdata()[0] == pytest.approx(64.0)
    assert any(line.get_linestyle() == "--" for line in flop_ax.get_lines())
    plt.close(fig)


def test_plot_scaling_without_crossover_says_so_and_skips_empty_metrics():
    rows = [r for r in _rows() if r["N"] >= 256]
    for r in rows:
        r["flops"] = float("nan")
    fig = plots.plot_scaling(rows, metrics=("ms", "flops"))
    assert len(fig.axes) == 1
    assert any(t.get_text().startswith("no crossover: linear") for t in fig.axes[0].texts)
    plt.close(fig)


def test_plot_scaling_needs_rows():
    with pytest.raises(ValueError):
        plots.plot_scaling([])


def test_plot_feature_error_lines_and_bands():
    Ms = [4, 8, 16]
    rng = np.random.default_rng(0)
    errors = {"iid": rng.random((3, 5)) + 0.5, "orthogonal": rng.random((3, 5))}
    fig = plots.plot_feature_error(Ms, errors, reference={"1/√M": lambda M: 1 / np.sqrt(M)})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["iid", "orthogonal", "1/√M"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), errors["iid"].mean(1))
    plt.close(fig)
    with pytest.raises(ValueError, match="rows"):
        plots.plot_feature_error([4, 8], {"iid": np.ones((3, 2))})


def test_plot_complexity_titles_use_exact_numbers():
    fig = plots.plot_complexity(4096, 64, H=2)
    ratio = bench.attention_flops(4096, 64, kind="softmax") / bench.attention_flops(4096, 64, kind="linear")
    assert f"{ratio:,.1f}×" in fig.axes[0].get_title()
    plt.close(fig)


def test_complexity_numbers_crossover_is_where_the_formulas_cross():
    for d in (16, 64, 128):
        n = widgets.complexity_numbers(1024, d)
        N = n["flops_crossover_N"]
        below = bench.attention_flops(N - 1, d, kind="softmax") <= bench.attention_flops(N - 1, d, kind="linear")
        above = bench.attention_flops(N, d, kind="softmax") > bench.attention_flops(N, d, kind="linear")
        assert below and above


def test_complexity_explorer_builds_and_updates_headless():
    ex = widgets.complexity_explorer(N=1024, d=32, H=4)
    assert ex.figure is not None and ex.numbers["N"] == 1024
    n = ex.update(N=8192, d=64, dtype="bfloat16 / float16")
    assert (n["N"], n["d"], n["H"]) == (8192, 64, 4)
    assert n["scores_bytes"] == 4 * 8192 * 8192 * 2
    assert n == widgets.complexity_numbers(8192, 64, H=4, bytes_per_element=2)
    assert len(ex.figure.axes) == 2
    # moving a slider redraws too (what a student does in Jupyter)
    first = ex.figure
    ex.d.value = 128
    assert ex.figure is not first and ex.numbers["d"] == 128
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()
    plt.close("all")
