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


# ------------------------------------------------------ the GPU harness: benchmark, compare, on a fake clock


class FakeClock:
    """Stands in for the CUDA device: time moves only when a fake kernel says so; events read it."""

    def __init__(self, device=None):
        self.t = 0.0
        self.syncs = 0

    def sync(self):
        self.syncs += 1

    def now(self):
        return self.t

    def event(self):
        clock = self

        class Event:
            def record(self):
                self.t = clock.t

            def elapsed_time(self, end):
                return 1e3 * (end.t - self.t)

        return Event()


@pytest.fixture
def fake_gpu(monkeypatch):
    """benchmark()'s CUDA parts replaced: a GPU 'present' (inputs on the CPU), a fake clock, a 1 MB L2."""
    clock = FakeClock()
    monkeypatch.setattr(bench, "require_gpu", lambda what, device=None: torch.device("cpu"))
    monkeypatch.setattr(bench, "_CudaClock", lambda device: clock)
    monkeypatch.setattr(bench, "l2_cache_bytes", lambda device=None: 2**20)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))
    return clock


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_timing_needs_a_gpu_on_a_cpu():
    made = []
    with pytest.raises(RuntimeError, match="^timing needs a GPU: bench.benchmark .* no CUDA device"):
        bench.benchmark(lambda x: x, lambda: made.append(1) or torch.ones(4))
    assert made == []  # refused before making (or timing) anything
    with pytest.raises(RuntimeError, match="^timing needs a GPU: bench.compare"):
        bench.compare({"id": lambda x: x}, [4], lambda n: (torch.ones(n),), progress=False)
    with pytest.raises(RuntimeError, match="^timing needs a GPU"):
        bench.l2_cache_bytes()


def test_timing_needs_a_gpu_for_inputs_on_the_cpu():
    with pytest.raises(RuntimeError, match="^timing needs a GPU: .* inputs are on cpu"):
        bench.require_gpu("bench.benchmark", "cpu")


@pytest.mark.parametrize("set_bytes,l2,kw,expected", [
    pytest.param(12 * 10**6, 50 * 10**6, {}, 9, id="H200-T1024-bf16: ceil(2 L2 / set)"),
    pytest.param(300 * 10**6, 50 * 10**6, {}, 2, id="set-larger-than-L2: still 2"),
    pytest.param(1000, 50 * 10**6, {}, 128, id="tiny-set: capped at max_sets"),
    pytest.param(1000, 50 * 10**6, {"max_sets": 16}, 16, id="tiny-set: own cap"),
    pytest.param(12 * 10**6, 50 * 10**6, {"budget_bytes": 50 * 10**6}, 4, id="memory-budget"),
    pytest.param(0, 50 * 10**6, {}, 1, id="no-tensors: nothing to rotate"),
])
def test_rotation_count(set_bytes, l2, kw, expected):
    assert bench.rotation_count(set_bytes, l2, **kw) == expected


def test_input_bytes_counts_each_tensor_once():
    q, v = torch.ones(2, 8), torch.ones(3, dtype=torch.float16)
    assert bench.input_bytes((q, q, v)) == 2 * 8 * 4 + 3 * 2
    assert bench.input_bytes({"x": q, "rest": [v, 5]}) == 64 + 6
    assert bench.input_bytes(q) == 64 and bench.input_bytes(()) == 0


def test_make_input_sets_are_distinct_and_reject_a_reused_tensor():
    sets = bench.make_input_sets(lambda: (torch.ones(4), torch.zeros(4)), 5)
    assert len(sets) == 5 and all(kw == {} and len(args) == 2 for args, kw in sets)
    ptrs = [t.data_ptr() for args, _ in sets for t in args]
    assert len(set(ptrs)) == 10
    first = (torch.ones(4),)
    assert bench.make_input_sets(lambda: (torch.ones(4),), 3, first=first)[0][0][0] is first[0]
    assert bench.make_input_sets(lambda: {"x": torch.ones(2)}, 2)[1][1].keys() == {"x"}
    cached = torch.ones(4)
    with pytest.raises(ValueError, match="same tensor in set 0 and set 1.*new tensors"):
        bench.make_input_sets(lambda: (cached,), 2)


def test_first_call_is_timed_on_its_own(fake_gpu):
    def compile_then_run():
        fake_gpu.t += 2.5

    assert bench._time_first_call(compile_then_run, fake_gpu) == pytest.approx(2.5)
    assert fake_gpu.syncs == 2  # the device waited for before and after


def test_time_runs_warms_up_by_time_cycles_the_sets_and_fills_rep_ms(fake_gpu):
    seen = []

    def call(j):
        seen.append(j)
        fake_gpu.t += 1e-3 if len(seen) % 10 else 5e-3  # 1 ms, every tenth call 5 ms (a hiccup)

    calls, warm_s, times = bench._time_runs(call, 4, fake_gpu, warmup_ms=50, rep_ms=100, min_reps=5, max_reps=1000)
    assert 1e3 * warm_s >= 50 and calls == len(seen) - len(times)
    assert seen == [(1 + i) % 4 for i in range(len(seen))]  # set 0 was the first call's: then 1, 2, 3, 0, ...
    # 100 ms at the warm-up's pace (50 ms over `calls` calls) -> ceil(100 / (warm / calls)) runs
    assert len(times) == math.ceil(100 / (1e3 * warm_s / calls))
    assert sorted(set(round(t, 6) for t in times)) == [1.0, 5.0]


def test_time_runs_clamps_the_run_count_and_warms_every_set(fake_gpu):
    def call(j):
        fake_gpu.t += 1.0  # one second a call: rep_ms allows none, min_reps gives 3

    calls, _, times = bench._time_runs(call, 6, fake_gpu, warmup_ms=10, rep_ms=10, min_reps=3, max_reps=100)
    assert calls == 6 and len(times) == 3  # every one of the 6 sets warmed once though 10 ms passed at once
    calls, _, times = bench._time_runs(lambda j: None, 2, fake_gpu, warmup_ms=0, rep_ms=1e9, min_reps=1,
                                       max_reps=7)
    assert calls == 3 and len(times) == 7


def _measurement(times, **kw):
    return bench.Measurement(name="k", times_ms=tuple(times), first_call_s=0.5, **kw)


def test_measurement_statistics_and_rates():
    m = _measurement([float(t) for t in range(1, 11)], bytes=4e9, flops=2e12, dtype="bfloat16")
    assert (m.n, m.median_ms, m.min_ms, m.max_ms) == (10, 5.5, 1.0, 10.0)
    assert m.p10_ms == pytest.approx(1.9) and m.p90_ms == pytest.approx(9.1)  # linear interpolation
    assert m.q1_ms == pytest.approx(3.25) and m.q3_ms == pytest.approx(7.75)
    assert m.gbs == pytest.approx(4e9 / 5.5e-3 / 1e9) and m.tflops == pytest.approx(2e12 / 5.5e-3 / 1e12)
    assert m.intensity == pytest.approx(500.0)
    st = m.stats()
    assert (st["median"], st["min"], st["max"], st["reps"]) == (5.5, 1.0, 10.0, 10) and st["q1"] == m.q1_ms
    bare = _measurement([2.0])
    assert math.isnan(bare.gbs) and math.isnan(bare.tflops) and math.isnan(bare.intensity)
    assert bare.p10_ms == bare.median_ms == bare.p90_ms == 2.0
    with pytest.raises(ValueError, match="no timed runs"):
        _measurement([])


def test_measurement_fractions_of_the_ceilings():
    from course_utils.roofline import Ceilings

    c = Ceilings("GPU", bandwidth_gbs=1000.0, tflops={"bfloat16": 100.0, "float32": 10.0})
    # 1 ms, 0.5 GB, 20 GFLOP: 500 GB/s, 20 TFLOP/s, intensity 40 FLOP/B -> attainable min(100, 40) = 40
    m = _measurement([1.0], bytes=5e8, flops=2e10, dtype="bfloat16")
    f = m.fractions(c)
    assert f["pct_bandwidth"] == pytest.approx(0.5) and f["pct_compute"] == pytest.approx(0.2)
    assert f["pct_roofline"] == pytest.approx(0.5)
    assert m.fractions(c, "float32")["pct_roofline"] == pytest.approx(2.0)  # above fp32's roof of 10: not fp32
    assert math.isnan(m.fractions(c, "float16")["pct_compute"])  # no roof measured for float16
    row = m.row(c)
    assert row["ms"] == row["ms_q1"] == 1.0 and row["gbs"] == pytest.approx(500) and row["pct_roofline"] == 0.5
    pt = m.point()
    assert pt.intensity == pytest.approx(40) and pt.tflops == pytest.approx(20)
    with pytest.raises(ValueError, match="bytes= and flops="):
        _measurement([1.0]).point()


def test_benchmark_times_first_call_apart_rotates_and_reports(fake_gpu):
    calls = []

    def kernel(x, y, scale=1.0):
        calls.append(x.data_ptr())
        fake_gpu.t += 3.0 if len(calls) == 1 else 1e-3 * (1 + (x.numel() > 0))  # compile once, then 2 ms

    made = []

    def inputs():
        made.append(1)
        return (torch.ones(2**16), torch.ones(2**16, dtype=torch.bfloat16))  # 256 KiB + 128 KiB

    m = bench.benchmark(kernel, inputs, bytes=1e6, flops=2e9, warmup_ms=20, rep_ms=40)
    assert m.first_call_s == pytest.approx(3.0) and max(m.times_ms) == pytest.approx(2.0)
    assert m.input_set_bytes == 3 * 2**17 and m.input_sets == len(made) == 6  # ceil(2 MiB / 384 KiB)
    assert m.cold_l2 and m.dtype == "float32" and m.name == "kernel" and m.n in (20, 21)  # 40 ms of 2 ms runs
    assert calls[0] == calls[len(made)]  # set 0 first, then every set in turn, back to set 0
    assert len(set(calls[:len(made)])) == len(made)
    assert m.gbs == pytest.approx(1e6 / 2e-3 / 1e9) and m.tflops == pytest.approx(1.0)
    warm = bench.benchmark(kernel, inputs, rotate=1, warmup_ms=0, rep_ms=0, min_reps=4)
    assert warm.input_sets == 1 and not warm.cold_l2 and warm.n == 4
    with pytest.raises(ValueError, match="rotate"):
        bench.benchmark(kernel, inputs, rotate=0)
    with pytest.raises(TypeError, match="inputs must be a function that makes ONE new input set.*got tuple"):
        bench.benchmark(kernel, inputs())


def test_compare_rows_models_and_out_of_memory(fake_gpu):
    from course_utils.roofline import Ceilings

    def fast(x):
        fake_gpu.t += 1e-6 * x.numel()

    def greedy(x):
        if x.numel() >= 2**16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        fake_gpu.t += 2e-6 * x.numel()

    ceil = Ceilings("GPU", bandwidth_gbs=100.0, tflops={"float32": 1.0})
    rows = bench.compare({"fast": fast, "greedy": greedy}, [2**12, 2**16], lambda T: (torch.ones(T),),
                         bytes=lambda T: 4 * T, flops={"fast": lambda T: 2 * T}, ceilings=ceil, memory=False,
                         progress=False, warmup_ms=1, rep_ms=1)
    assert [(r["name"], r["T"]) for r in rows] == [("fast", 4096), ("greedy", 4096), ("fast", 65536),
                                                   ("greedy", 65536)]
    f = rows[0]
    assert f["ms"] == pytest.approx(4.096) and f["gbs"] == pytest.approx(4 * 4096 / 4.096e-3 / 1e9)
    assert f["tflops"] == pytest.approx(2 * 4096 / 4.096e-3 / 1e12)
    assert f["pct_bandwidth"] == pytest.approx(f["gbs"] / 100) and f["device"] == "cpu"
    assert math.isnan(rows[1]["tflops"]) and rows[1]["ms"] == pytest.approx(8.192)  # no FLOP model for greedy
    assert math.isnan(rows[3]["ms"])  # out of memory: NaN, and the run goes on
    table = bench.format_table(rows, x="T")
    lines = table.splitlines()
    assert len(lines) == 2 + 4 and "time ms: median [p10–p90]" in lines[0] and "% copy BW" in lines[0]
    assert "4.096 [4.096–4.096]" in lines[2] and "65,536" in lines[5] and "– [–]" not in table
    assert lines[5].split()[0] == "greedy" and "–" in lines[5]

    with pytest.raises(ValueError, match="x='n' is a key the rows already use"):
        bench.compare({"fast": fast}, [4], lambda n: (torch.ones(n),), x="n", progress=False)

    def stub(x):
        raise NotImplementedError("Exercise 6.1: write your code here")

    with pytest.raises(NotImplementedError):
        bench.compare({"stub": stub}, [4], lambda T: (torch.ones(T),), progress=False)


def test_format_table_leaves_out_columns_nobody_has():
    row = _measurement([1.0, 2.0, 3.0]).row()
    table = bench.format_table([row])
    assert "GB/s" not in table and "TFLOP/s" not in table and "% roofline" not in table
    assert "2 [1.2–2.8]" in table and "0.5" in table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda-graph"])
def test_cuda_benchmark_of_an_add(graph):
    n = 1 << 24
    m = bench.benchmark(torch.add, lambda: (torch.ones(n, device="cuda"), torch.ones(n, device="cuda")),
                        bytes=3 * 4 * n, warmup_ms=20, rep_ms=50, cuda_graph=graph)
    assert m.n >= 10 and 0 < m.min_ms <= m.median_ms <= m.p90_ms and m.first_call_s > 0
    assert 10 < m.gbs < 20_000 and m.cold_l2 and m.cuda_graph == graph and m.dtype == "float32"
    rows = bench.compare({"add": torch.add}, [1 << 20], lambda n: (torch.ones(n, device="cuda"),) * 2,
                         progress=False, rep_ms=20)
    assert rows[0]["device"] == "cuda" and rows[0]["ms"] > 0 and rows[0]["peak_bytes"] >= 0


def test_compare_sweeps_a_kernel_parameter_passed_in_the_set(fake_gpu):
    seen = []

    def kernel(x, block):
        seen.append(block)
        fake_gpu.t += 1e-3 * (1 + abs(block - 32) / 16)  # fastest at block 32

    rows = bench.compare({"mine": kernel}, [16, 32, 64], lambda BT: (torch.ones(256), BT), x="BT", memory=False,
                         progress=False, warmup_ms=1, rep_ms=1)
    assert [r["BT"] for r in rows] == [16, 32, 64] and set(seen) == {16, 32, 64}
    assert [r["ms"] for r in rows] == pytest.approx([2.0, 1.0, 3.0])
    assert all(r["input_sets"] == 128 and not r["cold_l2"] for r in rows)  # 1 KiB sets: 128 of them < 1 MiB L2
