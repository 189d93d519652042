"""course_utils.bench: timing, peak memory, FLOP counts and models, sweeps, crossovers, reports (CPU, fast)."""

import json
import math

import pytest
import torch

from course_utils import bench


def _softmax_attn(q, k, v):
    s = torch.einsum("bthk,bshk->bhts", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("bhts,bshv->bthv", s.softmax(-1), v)


def _linear_attn(q, k, v):
    S = torch.einsum("bthk,bthv->bhkv", k, v)
    z = k.sum(1)
    return torch.einsum("bthk,bhkv->bthv", q, S) / torch.einsum("bthk,bhk->bth", q, z).unsqueeze(-1)


def test_time_fn_calls_warmup_plus_reps_and_returns_ms():
    calls = []
    ms = bench.time_fn(lambda x: calls.append(x), 1, warmup=2, reps=5)
    assert len(calls) == 7 and isinstance(ms, float) and 0 <= ms < 100


def test_time_fn_median_of_sleeps():
    import time

    ms = bench.time_fn(time.sleep, 0.01, warmup=0, reps=3)
    assert 9 < ms < 60


def test_time_fn_rejects_zero_reps():
    with pytest.raises(ValueError, match="reps"):
        bench.time_fn(lambda: None, reps=0)


def test_peak_memory_counts_one_tensor():
    n = 1 << 20
    peak = bench.peak_memory_bytes(lambda: torch.empty(n, dtype=torch.float32), device="cpu")
    assert peak == 4 * n


def test_peak_memory_is_a_peak_not_a_sum():
    n = 1 << 20

    def two_temporaries():
        a = torch.ones(n)
        del a
        b = torch.ones(n)
        return b.sum()

    peak = bench.peak_memory_bytes(two_temporaries, device="cpu")
    assert 4 * n <= peak < 2 * 4 * n


def test_peak_memory_excludes_inputs_and_sees_the_score_matrix():
    B, T, H, D = 1, 512, 2, 16
    q = torch.randn(B, T, H, D)
    peak = bench.peak_memory_bytes(_softmax_attn, q, q, q)
    scores = B * H * T * T * 4
    assert scores <= peak <= 4 * scores
    assert bench.peak_memory_bytes(_linear_attn, q, q, q) < scores / 10


def test_count_flops_of_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert bench.count_flops(torch.matmul, a, b) == 2 * 8 * 16 * 4


@pytest.mark.parametrize("N,d,dv,B,H", [(64, 16, 16, 1, 1), (100, 8, 12, 2, 3)])
def test_attention_flops_match_flop_counter(N, d, dv, B, H):
    q, k, v = torch.randn(B, N, H, d), torch.randn(B, N, H, d), torch.randn(B, N, H, dv)
    assert bench.count_flops(_softmax_attn, q, k, v) == bench.attention_flops(N, d, dv, kind="softmax", B=B, H=H)
    assert bench.count_flops(_linear_attn, q, k, v) == bench.attention_flops(N, d, dv, kind="linear", B=B, H=H)
    assert bench.attention_flops(N, d, dv, kind="linear", normalizer=False) == 4 * N * d * dv


def test_attention_models_reject_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        bench.attention_flops(8, 4, kind="flash")
    with pytest.raises(ValueError, match="kind"):
        bench.attention_memory_bytes(8, 4, kind="flash")


def test_attention_memory_model():
    assert bench.attention_memory_bytes(1024, 64, kind="softmax", H=2) == 2 * 1024 * 1024 * 4
    assert bench.attention_memory_bytes(1024, 64, kind="linear", H=2, bytes_per_element=2) == 2 * (64 * 64 + 64) * 2


def test_sweep_rows_and_keys():
    def make(N):
        return (torch.randn(1, N, 2, 8),) * 3

    rows = bench.sweep({"softmax": _softmax_attn, "linear": _linear_attn}, [16, 32], make,
                       warmup=0, reps=1, flops=True, progress=False)
    assert [(r["name"], r["N"]) for r in rows] == [("softmax", 16), ("linear", 16), ("softmax", 32), ("linear", 32)]
    for r in rows:
        assert r["ms"] > 0 and r["peak_bytes"] > 0 and r["device"] == "cpu"
        kind = "softmax" if r["name"] == "softmax" else "linear"
        assert r["flops"] == bench.attention_flops(r["N"], 8, kind=kind, H=2)


def test_sweep_names_the_swept_variable():
    rows = bench.sweep({"id": lambda x: x + 1}, [4, 8], lambda T: (torch.ones(T),), x="T", warmup=0, reps=1,
                       memory=False, progress=False)
    assert [r["T"] for r in rows] == [4, 8] and all("N" not in r for r in rows)
    rows += [{"name": "slow", "T": T, "ms": 1e3 * T} for T in (4, 8)]
    assert bench.crossover(rows, "id", "slow", x="T") is None  # read by the name it was given


def test_sweep_skips_after_out_of_memory_but_propagates_other_errors():
    def greedy(x):
        if x.shape[0] >= 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 2

    rows = bench.sweep({"greedy": greedy}, [16, 32, 64], lambda N: (torch.ones(N),), warmup=0, reps=1,
                       memory=False, progress=False)
    assert rows[0]["ms"] > 0 and math.isnan(rows[1]["ms"]) and math.isnan(rows[2]["ms"])

    def stub(x):
        raise NotImplementedError("Exercise 1.1: softmax attention — write your code here")

    with pytest.raises(NotImplementedError, match="Exercise 1.1"):
        bench.sweep({"stub": stub}, [4], lambda N: (torch.ones(N),), progress=False)


def test_crossover_interpolates_in_log_space():
    rows = [{"name": "a", "N": n, "ms": float(n)} for n in (1, 2, 4, 8)]
    rows += [{"name": "b", "N": n, "ms": 3.0} for n in (1, 2, 4, 8)]
    x = bench.crossover(rows, "a", "b")
    assert x == pytest.approx(3.0)
    assert bench.crossover(rows[:2] + rows[4:6], "a", "b") is None


def test_format_bytes():
    assert bench.format_bytes(512) == "512 B"
    assert bench.format_bytes(1536) == "1.5 KiB"
    assert bench.format_bytes(3 * 2**30) == "3.0 GiB"
    assert bench.format_bytes(float("nan")) == "n/a"


def test_sweep_restores_cpu_threads():
    before = torch.get_num_threads()
    bench.sweep({"id": lambda x: x + 1}, [4], lambda N: (torch.ones(N),), warmup=0, reps=1, memory=False,
                progress=False, cpu_threads=1)
    assert torch.get_num_threads() == before


def test_save_report_writes_png_and_json(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    plt.close(fig)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_memory_and_timing():
    n = 1 << 24
    x = torch.ones(n, device="cuda")
    peak = bench.peak_memory_bytes(lambda t: t * 2 + 1, x)  # two temporaries of 64 MiB at most alive together
    assert 4 * n <= peak <= 2 * 4 * n
    ms = bench.time_fn(lambda t: t.sum(), x, warmup=1, reps=3)
    assert 0 < ms < 1000
    rows = bench.sweep({"sum": lambda t: t.sum()}, [1 << 10, 1 << 12], lambda N: (torch.ones(N, device="cuda"),),
                       progress=False, flops=True)
    assert all(r["device"] == "cuda" and r["peak_bytes"] >= 0 for r in rows)


# ------------------------------------------------------------- steady timings: fixed threads, the spread


def test_fixed_threads_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    with bench.fixed_threads() as n:
        assert n == bench.BENCH_THREADS == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"):
        with bench.fixed_threads(2):
            assert torch.get_num_threads() == 2
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with bench.fixed_threads(0):
            pass


def test_time_stats_counts_calls_and_orders_its_statistics():
    calls = []
    s = bench.time_stats(lambda x: calls.append(x), 1, warmup=2, reps=5)
    assert len(calls) == 7 and s["reps"] == 5 and len(s["times"]) == 5
    assert s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
    one = bench.time_stats(lambda: None, warmup=0, reps=1)
    assert one["min"] == one["q1"] == one["median"] == one["q3"] == one["max"]
    with pytest.raises(ValueError, match="reps"):
        bench.time_stats(lambda: None, reps=0)


def test_time_stats_median_of_sleeps_and_a_spread_that_shows_an_outlier():
    import time

    delays = iter([0.0, 0.002, 0.002, 0.002, 0.002, 0.050])  # one warm-up, then one slow run of five
    s = bench.time_stats(lambda: time.sleep(next(delays)), warmup=1, reps=5)
    assert 1.5 < s["median"] < 15 and s["max"] > 45 and s["max"] > 3 * s["median"]


def test_sweep_stats_rows_carry_the_spread_and_the_threads_and_restore_them():
    before = torch.get_num_threads()
    seen = []

    def fn(x):
        seen.append(torch.get_num_threads())
        return x + 1

    rows = bench.sweep_stats({"id": fn, "sq": lambda x: x * x}, [4, 8], lambda T: (torch.ones(T),), x="T",
                             warmup=1, reps=3, memory=True, flops=False, progress=False)
    assert torch.get_num_threads() == before and set(seen) == {1}
    assert [(r["name"], r["T"]) for r in rows] == [("id", 4), ("sq", 4), ("id", 8), ("sq", 8)]
    for r in rows:
        assert r["ms_min"] <= r["ms_q1"] <= r["ms"] <= r["ms_q3"] <= r["ms_max"]
        assert r["reps"] == 3 and r["threads"] == 1 and r["peak_bytes"] >= 0 and math.isnan(r["flops"])


def test_sweep_stats_propagates_a_stub_error():
    def stub(x):
        raise NotImplementedError("Exercise 1.1: write your code here")

    with pytest.raises(NotImplementedError):
        bench.sweep_stats({"stub": stub}, [4], lambda N: (torch.ones(N),), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep_stats():
    rows = bench.sweep_stats({"sum": lambda t: t.sum()}, [1 << 10, 1 << 12], lambda N: (torch.ones(N, device="cuda"),),
                             progress=False, flops=True)
    assert all(r["device"] == "cuda" and r["ms_min"] <= r["ms"] <= r["ms_max"] and r["peak_bytes"] >= 0 for r in rows)
