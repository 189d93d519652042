"""The helpers Labs 02-03 added to course_utils (plots, widgets, bench): figures build headless, the chunk
explorer's numbers follow the functions it is given, and reports land where they should."""

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils import bench, plots, widgets  # noqa: E402

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


def test_attention_matrices_one_panel_per_matrix_and_masked_zeros():
    a = torch.rand(6, 6).tril()
    fig = plots.plot_attention_matrices({"a": a, "b": np.tril(np.ones((6, 6)))}, title="t")
    assert isinstance(fig, Figure)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    data = images[0].get_array()
    assert data.mask[0, 5] and not data.mask[5, 0]  # the future (upper triangle) is left blank


def test_state_vs_cache_lines_and_crossover():
    t = np.array([1, 2, 4, 8, 16])
    fig = plots.plot_state_vs_cache(t, t * 10, 40, crossover=4)
    ax = fig.axes[0]
    kv, state, cross = ax.get_lines()[:3]
    assert list(kv.get_ydata()) == list(t * 10) and set(state.get_ydata()) == {40}
    assert list(cross.get_xdata()) == [4, 4]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_chunk_partition_figure():
    T, C = 12, 4
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    kind = torch.where(s > t, 0, torch.where(t // C == s // C, 2, 1))
    fig = plots.plot_chunk_partition(kind, C)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (T, T)
    assert len(ax.get_lines()) == 2 * (T // C - 1)  # boundaries between chunks, both directions
    assert "C = 4" in ax.get_title()


def test_chunk_cost_and_timing_figures():
    Cs = [1, 2, 4, 8]
    fig = plots.plot_chunk_cost(Cs, [flops(64, c, 8, 8) for c in Cs], [nbytes(64, c, 8, 8) for c in Cs],
                                [1e-6] * 4, [2e-6, 1e-6, 5e-7, 3e-7], current=4, best=8, title="x")
    assert len(fig.axes) == 3  # two panels + the bytes twin axis
    fig = plots.plot_chunk_timing(Cs, [4.0, 2.0, 1.0, 3.0], [4.1, 2.1, 1.2, 2.9], fit_label="fit",
                                  model=(Cs, [1e-6, 5e-7, 6e-7, 9e-7], "model"))
    left, right = fig.axes
    assert "fastest: C = 4" in [t.get_text() for t in left.get_legend().get_texts()]
    assert "best: C = 2" in [t.get_text() for t in right.get_legend().get_texts()]
    assert len(plots.plot_chunk_timing(Cs, [1, 2, 3, 4], [1, 2, 3, 4], fit_label="f").axes) == 1


def test_binary_bytes_axis_labels():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1024, 2**21])
    plots.binary_bytes_axis(ax)
    assert ax.get_yscale() == "log"
    fmt = ax.yaxis.get_major_formatter()
    assert fmt(1024, None) == "1 KiB" and fmt(3 * 2**20, None) == "3 MiB" and fmt(512, None) == "512 B"


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
    assert isinstance(ex.figure, Figure)


def test_chunk_cost_explorer_keeps_C_within_T():
    ex = widgets.chunk_cost_explorer(flops, nbytes, HARDWARE, T=4096, C=1024)
    n = ex.update(T=256)  # C=1024 no longer divides T: it is clamped to T
    assert n["C"] == 256 and max(ex.C.options) == 256
    with pytest.raises(ValueError):
        widgets.chunk_cost_explorer(flops, nbytes, {})


def test_explorer_propagates_a_stub():
    def stub(T, C, K, V):
        raise NotImplementedError("Exercise 3.2: stub")

    with pytest.raises(NotImplementedError, match="Exercise 3.2"):
        widgets.chunk_cost_explorer(stub, nbytes, HARDWARE)


def test_save_report_writes_png_and_json(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    rows = [{"name": "a", "T": 8, "ms": float("nan")}]
    paths = bench.save_report(fig, "bench_x", rows, meta={"gpu": "test"}, directory=tmp_path / "out")
    assert [p.name for p in paths] == ["bench_x.png", "bench_x.json"] and all(p.exists() for p in paths)
    data = json.loads(paths[1].read_text())
    assert data == {"meta": {"gpu": "test"}, "rows": [{"name": "a", "T": 8, "ms": None}]}
    # default directory: reports/ beside the notebook's folder when there is one, else the current folder
    (tmp_path / "repo" / "reports").mkdir(parents=True)
    (tmp_path / "repo" / "solutions").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "solutions")
    assert bench.save_report(fig, "y") == [tmp_path / "repo" / "reports" / "y.png"]
    monkeypatch.chdir(tmp_path)
    assert bench.save_report(fig, "z") == [tmp_path / "z.png"]
