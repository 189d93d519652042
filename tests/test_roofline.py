"""course_utils.roofline: the roofline's arithmetic, the ceilings, the figure (CPU); measuring needs a GPU."""

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from course_utils import bench, plots, roofline  # noqa: E402

H200_LIKE = roofline.Ceilings("H200-like", bandwidth_gbs=4000.0, tflops={"float32": 50.0, "bfloat16": 800.0},
                              l2_bytes=50 * 10**6)


@pytest.mark.parametrize("intensity,expected", [
    pytest.param(1.0, 4.0, id="memory-bound: I x BW"),
    pytest.param(100.0, 400.0, id="memory-bound-near-ridge"),
    pytest.param(200.0, 800.0, id="at-the-ridge: both"),
    pytest.param(1e4, 800.0, id="compute-bound: the roof"),
    pytest.param(0.0, 0.0, id="no-flops"),
])
def test_attainable_is_min_of_roof_and_slope(intensity, expected):
    assert roofline.attainable_tflops(intensity, 4000.0, 800.0) == pytest.approx(expected)
    assert H200_LIKE.attainable_tflops(intensity, torch.bfloat16) == pytest.approx(expected)


def test_ridge_points():
    assert roofline.ridge_intensity(4000.0, 800.0) == pytest.approx(200.0)  # 800e12 FLOP/s / 4000e9 B/s
    assert H200_LIKE.ridge("float32") == pytest.approx(12.5)
    assert H200_LIKE.attainable_tflops(H200_LIKE.ridge("float32"), "float32") == pytest.approx(50.0)
    with pytest.raises(KeyError, match="no matmul rate measured for 'float16'.*bfloat16"):
        H200_LIKE.ridge(torch.float16)
    with pytest.raises(ValueError, match="bandwidth"):
        roofline.ridge_intensity(0.0, 1.0)
    with pytest.raises(ValueError, match="intensity"):
        roofline.attainable_tflops(-1.0, 1.0, 1.0)


def test_dtype_key():
    assert [roofline.dtype_key(d) for d in (torch.bfloat16, torch.float16, torch.float32, "tf32", "fp16")] == [
        "bfloat16", "float16", "float32", "tf32", "float16"]


def test_roofline_point_arithmetic():
    # a GLA-like kernel: 0.1 GB moved, 1 TFLOP of matmuls, in 5 ms
    p = roofline.roofline_point(1e8, 1e12, 5e-3, name="k")
    assert p.intensity == pytest.approx(1e4) and p.tflops == pytest.approx(200.0) and p.gbs == pytest.approx(20.0)
    assert p.fraction(H200_LIKE, "bfloat16") == pytest.approx(0.25)  # compute-bound: 200 of 800
    slow = roofline.roofline_point(1e9, 1e10, 1e-3)  # I = 10 FLOP/B: attainable 40 TFLOP/s, reaches 10
    assert slow.fraction(H200_LIKE, "bfloat16") == pytest.approx(0.25)
    copy = roofline.roofline_point(2e9, 0, 1e-3, name="copy")
    assert math.isnan(copy.fraction(H200_LIKE, "bfloat16")) and copy.gbs == pytest.approx(2000)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        roofline.roofline_point(1, 1, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        roofline.roofline_point(-1, 1, 1.0)


def test_ceilings_str_names_every_roof():
    s = str(H200_LIKE)
    assert "4,000 GB/s" in s and "float32 50.0 TFLOP/s (ridge 12 FLOP/B)" in s and "bfloat16 800.0" in s


def test_fp32_matmul_precision_sets_both_switches_and_restores_them():
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    before = matmul.allow_tf32
    with roofline.fp32_matmul_precision("tf32"):
        assert matmul.allow_tf32 is True and (not new_api or matmul.fp32_precision == "tf32")
    with pytest.raises(RuntimeError, match="boom"):
        with roofline.fp32_matmul_precision("ieee"):
            assert matmul.allow_tf32 is False and (not new_api or matmul.fp32_precision == "ieee")
            raise RuntimeError("boom")
    assert matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="ieee"):
        with roofline.fp32_matmul_precision("highest"):
            pass


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9: one switch")
def test_fp32_matmul_precision_keeps_to_the_new_api_when_the_process_uses_it():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"  # the legacy switch now disagrees and cannot be read
        with roofline.fp32_matmul_precision("ieee"):
            assert matmul.fp32_precision == "ieee" and matmul.allow_tf32 is False  # consistent inside
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = before
    assert matmul.allow_tf32 in (True, False)  # readable again


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("measure", [roofline.measure_copy_bandwidth, roofline.measure_matmul_rate,
                                     roofline.measure_ceilings], ids=lambda f: f.__name__)
def test_measuring_needs_a_gpu(measure):
    with pytest.raises(RuntimeError, match="^timing needs a GPU: roofline"):
        measure()


def _legends(ax) -> tuple[list[str], list[str]]:
    """(the roofs' legend entries, the kernels' legend entries) of a plot_roofline axes."""
    from matplotlib.legend import Legend

    roofs = [a for a in ax.artists if isinstance(a, Legend)]
    kernels = ax.get_legend()
    assert len(roofs) == 1 and kernels.get_title().get_text() == "kernels"
    return [t.get_text() for t in roofs[0].get_texts()], [t.get_text() for t in kernels.get_texts()]


def test_plot_roofline_labels_points_roofs_and_ridges():
    m = bench.Measurement(name="chunk_gla", times_ms=(1.0,), first_call_s=1.0, bytes=1e8, flops=2e11,
                          dtype="bfloat16")  # I = 2000 FLOP/B, 200 TFLOP/s: 25% of the bf16 roof
    points = [m, roofline.roofline_point(1e9, 1e10, 1e-3, name="fused_recurrent"),
              roofline.roofline_point(2e9, 0, 1e-3, name="copy")]
    fig = plots.plot_roofline(points, H200_LIKE, title="test roofline")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    roofs, kernels = _legends(ax)
    assert kernels == ["chunk_gla (25% of bfloat16 roofline)", "fused_recurrent"]
    assert "ridge float32: 12 FLOP/B" in texts and "ridge bfloat16: 200 FLOP/B" in texts
    assert any(t.startswith("no FLOPs, not on the plot — copy: 2,000 GB/s = 50% of copy bandwidth") for t in texts)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert roofs == ["copy bandwidth 4,000 GB/s", "float32 matmul 50.0 TFLOP/s", "bfloat16 matmul 800.0 TFLOP/s"]
    fig.canvas.draw()  # the kernels' legend lies right of the axes, where it cannot cover a point
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    # the points sit where the arithmetic puts them
    xy = {(round(line.get_xdata()[0], 6), round(line.get_ydata()[0], 6)) for line in ax.get_lines()
          if line.get_marker() == "o"}
    assert xy == {(2000.0, 200.0), (10.0, 10.0)}
    # the memory slope passes through (1 FLOP/B, 4 TFLOP/s) and ends at the highest ridge
    slope = ax.get_lines()[0]
    xs, ys = slope.get_xdata(), slope.get_ydata()
    assert ys / xs == pytest.approx(4.0) and xs[-1] == pytest.approx(200.0)
    only_fp32 = plots.plot_roofline(points[:2], H200_LIKE, dtypes=["float32"], roof="float32")
    assert "fused_recurrent (25% of float32 roofline)" in _legends(only_fp32.axes[0])[1]
    matplotlib.pyplot.close("all")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_ceilings_are_plausible():
    c = roofline.measure_ceilings()
    assert 100 < c.bandwidth_gbs < 20_000 and c.l2_bytes > 0
    assert 1 < c.tflops["float32"] < 200
    half = "bfloat16" if "bfloat16" in c.tflops else "float16"
    assert c.tflops[half] > 2 * c.tflops["float32"]  # tensor cores
    assert roofline.measure_ceilings() == c  # cached: the same figures, not a second measurement


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_bench_ceilings_script_refuses_on_a_cpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "scripts/bench_ceilings.py", "--out", str(tmp_path / "r.png")], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "timing needs a GPU" in r.stderr and not (tmp_path / "r.png").exists()


def test_plot_roofline_takes_compare_rows_and_skips_unmeasured_ones():
    rows = [{"name": "k", "label": "k T=1,024", "ms": 1.0, "bytes": 1e9, "flops": 1e10, "dtype": "float32"},
            {"name": "k", "ms": float("nan"), "bytes": 1e9, "flops": 1e10, "dtype": "float32"}]  # out of memory
    fig = plots.plot_roofline(rows, H200_LIKE)
    assert _legends(fig.axes[0])[1] == ["k T=1,024 (25% of float32 roofline)"]
    matplotlib.pyplot.close(fig)


def test_plot_benchmark_panels_and_ceiling_lines():
    rows = []
    for T in (1024, 2048, 4096):
        for name, ms in (("fast", T / 1024), ("slow", T / 256)):
            m = bench.Measurement(name=name, times_ms=(0.9 * ms, ms, 1.2 * ms), first_call_s=1.0, bytes=1e6 * T,
                                  flops=1e8 * T, dtype="bfloat16")
            rows.append({**m.row(H200_LIKE), "T": T})
    fig = plots.plot_benchmark(rows, x="T", ceilings=H200_LIKE, title="t")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["time per call (ms): median, p10–p90 shaded", "GB/s", "TFLOP/s", "% of the roofline"]
    ms_ax, gbs_ax, tf_ax, pct_ax = fig.axes
    fast = next(line for line in ms_ax.get_lines() if line.get_label() == "fast")
    assert list(fast.get_ydata()) == pytest.approx([1.0, 2.0, 4.0])
    assert [line.get_ydata()[0] for line in gbs_ax.get_lines() if "copy" in line.get_label()] == [4000.0]
    assert [line.get_ydata()[0] for line in tf_ax.get_lines() if "matmul" in line.get_label()] == [800.0]
    # fast: 1e8 T FLOPs in T/1024 ms = 102.4 TFLOP/s at intensity 100 FLOP/B: attainable 400 -> 25.6%
    pct = next(line for line in pct_ax.get_lines() if line.get_label() == "fast")
    assert list(pct.get_ydata()) == pytest.approx([25.6] * 3)
    bare = plots.plot_benchmark([{k: v for k, v in r.items() if k not in ("gbs", "tflops")} for r in rows[:2]])
    assert [ax.get_ylabel() for ax in bare.axes] == ["time per call (ms): median, p10–p90 shaded"]
    matplotlib.pyplot.close("all")
