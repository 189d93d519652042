"""Hardware ceilings and the roofline: how fast a kernel could be on this GPU, measured on the GPU itself.

A kernel that moves `bytes` and does `flops` in `seconds` reaches flops / seconds. Two ceilings bound it
(Williams, Waterman & Patterson 2009, *Roofline*, CACM 52(4)):

    attainable(I) = min(peak, I × bandwidth)      I = flops / bytes  (arithmetic intensity, FLOP per byte)

Below the ridge point I* = peak / bandwidth a kernel is memory-bound (the slope), above it compute-bound
(the roof). The ceilings here are measured, not read from a datasheet: `measure_copy_bandwidth` (a
device-to-device copy of a buffer many times the L2 size; read + write counted) and `measure_matmul_rate`
(a large square matmul per dtype: float32 in IEEE precision with TF32 off, "tf32", bfloat16 from sm_80, float16).
What a copy and a cuBLAS matmul reach is what a good kernel can hope for: a datasheet's figures are higher
(an H200 lists 4.8 TB/s; a copy reaches less) and a fraction of them would flatter nobody.

Units everywhere: bytes, FLOPs, seconds; GB/s = 1e9 bytes per second; TFLOP/s = 1e12 FLOPs per second.
The math (`attainable_tflops`, `ridge_intensity`, `roofline_point`) works anywhere; measuring needs a GPU
(RuntimeError "timing needs a GPU" otherwise). `plots.plot_roofline` draws the figure.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from course_utils import bench

__all__ = [
    "Ceilings",
    "RooflinePoint",
    "attainable_tflops",
    "copy_measurement",
    "dtype_key",
    "fp32_matmul_precision",
    "matmul_measurement",
    "measure_ceilings",
    "measure_copy_bandwidth",
    "measure_matmul_rate",
    "ridge_intensity",
    "roofline_point",
]


# ---------------------------------------------------------------------------------------------------- the math


def dtype_key(dtype: Any) -> str:
    """The name a roof is filed under: torch.bfloat16 -> "bfloat16"; strings pass ("tf32" names float32 matmuls
    on TF32 tensor cores)."""
    name = str(dtype).replace("torch.", "")
    return {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(
        name, name)


def ridge_intensity(bandwidth_gbs: float, peak_tflops: float) -> float:
    """The ridge point I* = peak / bandwidth in FLOP per byte (1e12 FLOP/s over 1e9 B/s: × 1e3)."""
    if bandwidth_gbs <= 0:
        raise ValueError(f"ridge_intensity: bandwidth must be > 0 GB/s; got {bandwidth_gbs}.")
    return 1e3 * peak_tflops / bandwidth_gbs


def attainable_tflops(intensity: float, bandwidth_gbs: float, peak_tflops: float) -> float:
    """The roofline: min(peak, intensity × bandwidth) in TFLOP/s, intensity in FLOP/byte, bandwidth in GB/s."""
    if intensity < 0 or bandwidth_gbs <= 0 or peak_tflops <= 0:
        raise ValueError(f"attainable_tflops: need intensity >= 0 and positive ceilings; got intensity={intensity},"
                         f" bandwidth={bandwidth_gbs} GB/s, peak={peak_tflops} TFLOP/s.")
    return min(peak_tflops, intensity * bandwidth_gbs / 1e3)


@dataclass(frozen=True)
class RooflinePoint:
    """One kernel on the roofline: what it moved (`bytes`), computed (`flops`) and took (`seconds`)."""

    name: str
    bytes: float
    flops: float
    seconds: float

    @property
    def intensity(self) -> float:
        """flops / bytes (FLOP per byte); inf when it moved nothing."""
        return self.flops / self.bytes if self.bytes > 0 else math.inf

    @property
    def tflops(self) -> float:
        """Achieved TFLOP/s."""
        return self.flops / self.seconds / 1e12

    @property
    def gbs(self) -> float:
        """Achieved GB/s."""
        return self.bytes / self.seconds / 1e9

    def fraction(self, ceilings: Ceilings, dtype: Any) -> float:
        """Achieved TFLOP/s over the attainable rate at this intensity under `dtype`'s roof (0..1; NaN for a
        kernel with no FLOPs, which sits at intensity 0: compare its GB/s with the bandwidth instead)."""
        if self.flops <= 0:
            return float("nan")
        return self.tflops / ceilings.attainable_tflops(self.intensity, dtype)


def roofline_point(bytes: float, flops: float, seconds: float, name: str = "") -> RooflinePoint:
    """A kernel's point: bytes moved and FLOPs done by one call, and its time in seconds (e.g. a median)."""
    if not seconds > 0:
        raise ValueError(f"roofline_point {name!r}: seconds must be > 0; got {seconds}.")
    if bytes < 0 or flops < 0:
        raise ValueError(f"roofline_point {name!r}: bytes and flops must be >= 0; got {bytes}, {flops}.")
    return RooflinePoint(name=name, bytes=float(bytes), flops=float(flops), seconds=float(seconds))


@dataclass(frozen=True)
class Ceilings:
    """Measured ceilings of one GPU.

    device: its name.  bandwidth_gbs: device-to-device copy rate, GB/s (bytes read + written per second / 1e9).
    tflops: {dtype key: matmul rate in TFLOP/s}, e.g. {"float32": 51.0, "bfloat16": 700.0} (keys: `dtype_key`).
    l2_bytes: the L2 cache size the measurements were sized against.
    """

    device: str
    bandwidth_gbs: float
    tflops: dict[str, float] = field(default_factory=dict)
    l2_bytes: int | None = None

    def peak_tflops(self, dtype: Any) -> float:
        key = dtype_key(dtype)
        if key not in self.tflops:
            raise KeyError(f"Ceilings of {self.device}: no matmul rate measured for {key!r}; measured: "
                           f"{sorted(self.tflops)}.")
        return self.tflops[key]

    def ridge(self, dtype: Any) -> float:
        """The ridge point of `dtype`'s roof, FLOP per byte."""
        return ridge_intensity(self.bandwidth_gbs, self.peak_tflops(dtype))

    def attainable_tflops(self, intensity: float, dtype: Any) -> float:
        return attainable_tflops(intensity, self.bandwidth_gbs, self.peak_tflops(dtype))

    def __str__(self) -> str:
        roofs = ", ".join(f"{k} {v:,.1f} TFLOP/s (ridge {self.ridge(k):,.0f} FLOP/B)" for k, v in self.tflops.items())
        return f"{self.device}: copy {self.bandwidth_gbs:,.0f} GB/s; matmul {roofs}"


# ----------------------------------------------------------------------------------------------- measurements

_CACHE: dict[tuple, bench.Measurement] = {}


def _gpu(device: torch.device | str | None, what: str) -> torch.device:
    dev = bench.require_gpu(what, device)
    return torch.device("cuda", torch.cuda.current_device()) if dev.index is None else dev


def copy_measurement(device: torch.device | str | None = None, *, nbytes: int | None = None,
                     **options: Any) -> bench.Measurement:
    """`dst.copy_(src)` timed by `bench.benchmark`, bytes = 2 × nbytes (each byte read once and written once).

    nbytes: the buffer's size; default 1 GiB, and at least 8 × the L2 size, at most a quarter of the free memory
    (a buffer that large makes the L2 irrelevant, so no rotation: one pair of buffers). Cached per process for
    the default options. options: passed to `bench.benchmark`.
    """
    dev = _gpu(device, "roofline.copy_measurement")
    key = ("copy", str(dev), nbytes, tuple(sorted(options.items())))
    if key not in _CACHE:
        l2 = bench.l2_cache_bytes(dev)
        free, _ = torch.cuda.mem_get_info(dev)
        n = nbytes if nbytes is not None else min(max(2**30, 8 * l2), free // 4)
        n = int(n) // 16 * 16

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.empty(n, dtype=torch.uint8, device=dev), torch.ones(n, dtype=torch.uint8, device=dev)

        _CACHE[key] = bench.benchmark(lambda dst, src: dst.copy_(src), make, name=f"copy {bench.format_bytes(n)}",
                                      bytes=2 * n, flops=0, rotate=1, device=dev, **options)
    return _CACHE[key]


def measure_copy_bandwidth(device: torch.device | str | None = None, *, nbytes: int | None = None) -> float:
    """The GPU's copy bandwidth in GB/s (median of `copy_measurement`): the memory slope of the roofline."""
    return copy_measurement(device, nbytes=nbytes).gbs


@contextlib.contextmanager
def fp32_matmul_precision(mode: str) -> Iterator[None]:
    """float32 matmuls in `mode` ("ieee": true float32, TF32 off; "tf32": TF32 tensor cores) inside the block;
    the previous setting is restored after, also on an error.

    torch >= 2.9 keeps two switches, the legacy `torch.backends.cuda.matmul.allow_tf32` and the new
    `fp32_precision`, and raises when code reads the legacy one after the new one was set to disagree with it.
    So: the legacy switch (which sets both) while it is readable, the new one when the process already uses it.
    """
    if mode not in ("ieee", "tf32"):
        raise ValueError(f"fp32_matmul_precision: mode must be 'ieee' or 'tf32'; got {mode!r}.")
    matmul = torch.backends.cuda.matmul
    try:
        legacy = matmul.allow_tf32
    except RuntimeError:  # the new API set TF32 on its own: keep to it
        legacy = None
    if legacy is not None or not hasattr(matmul, "fp32_precision"):
        matmul.allow_tf32 = mode == "tf32"
        try:
            yield
        finally:
            matmul.allow_tf32 = legacy
    else:
        before = matmul.fp32_precision
        matmul.fp32_precision = mode
        try:
            yield
        finally:
            matmul.fp32_precision = before


def _check_matmul_dtype(key: str, dev: torch.device) -> None:
    cap = torch.cuda.get_device_capability(dev)
    if key in ("bfloat16", "tf32") and cap < (8, 0):
        raise ValueError(f"measure_matmul_rate: {key} matmuls need sm_80 or newer (Ampere); this GPU is "
                         f"sm_{cap[0]}{cap[1]} (a T4 is sm_75). Use torch.float16 (tensor cores) or torch.float32.")
    if key not in ("float32", "tf32", "bfloat16", "float16"):
        raise ValueError(f"measure_matmul_rate: dtype must be float32, 'tf32', bfloat16 or float16; got {key!r}.")


def matmul_measurement(device: torch.device | str | None = None, dtype: Any = torch.float32, *,
                       n: int | None = None, **options: Any) -> bench.Measurement:
    """`torch.mm(a, b)` of two n × n matrices timed by `bench.benchmark`: flops = 2 n³, bytes = 3 n² × element size.

    dtype: torch.float32 (IEEE: TF32 off), "tf32" (float32 tensors on TF32 tensor cores), torch.bfloat16
    (sm_80+), torch.float16. n: default 8192 (4096 on a GPU with less than 24 GiB, e.g. a T4, where float32
    at 8192 takes ~0.1 s a call). Cached per process for the default options.
    """
    dev = _gpu(device, "roofline.matmul_measurement")
    key_name = dtype_key(dtype)
    _check_matmul_dtype(key_name, dev)
    cache_key = ("matmul", str(dev), key_name, n, tuple(sorted(options.items())))
    if cache_key not in _CACHE:
        size = n or (8192 if torch.cuda.get_device_properties(dev).total_memory >= 24 * 2**30 else 4096)
        tdtype = torch.float32 if key_name in ("float32", "tf32") else getattr(torch, key_name)
        make = lambda: (torch.randn(size, size, device=dev, dtype=tdtype),  # noqa: E731
                        torch.randn(size, size, device=dev, dtype=tdtype))
        elem = torch.tensor([], dtype=tdtype).element_size()
        with fp32_matmul_precision("tf32" if key_name == "tf32" else "ieee"):
            _CACHE[cache_key] = bench.benchmark(torch.mm, make, name=f"matmul {size}² {key_name}",
                                                bytes=3 * size**2 * elem, flops=2 * size**3, dtype=key_name,
                                                device=dev, **options)
    return _CACHE[cache_key]


def measure_matmul_rate(device: torch.device | str | None = None, dtype: Any = torch.float32, *,
                        n: int | None = None) -> float:
    """The GPU's matmul rate in TFLOP/s for `dtype` (median of `matmul_measurement`): one compute roof."""
    return matmul_measurement(device, dtype, n=n).tflops


def default_dtypes(device: torch.device | str | None = None) -> list[str]:
    """The roofs worth measuring here: float32 (IEEE), and from sm_80 "tf32" and bfloat16, else float16."""
    dev = _gpu(device, "roofline.default_dtypes")
    if torch.cuda.get_device_capability(dev) >= (8, 0):
        return ["float32", "tf32", "bfloat16"]
    return ["float32", "float16"]


def measure_ceilings(device: torch.device | str | None = None, dtypes: Sequence[Any] | None = None) -> Ceilings:
    """Copy bandwidth and the matmul rate of every dtype in `dtypes` (default `default_dtypes`), as a Ceilings.
    Takes a few seconds (each measurement warms up and times for ~0.4 s); cached per process."""
    dev = _gpu(device, "roofline.measure_ceilings")
    keys = [dtype_key(d) for d in (dtypes if dtypes is not None else default_dtypes(dev))]
    return Ceilings(device=torch.cuda.get_device_name(dev), bandwidth_gbs=measure_copy_bandwidth(dev),
                    tflops={k: measure_matmul_rate(dev, k) for k in keys}, l2_bytes=bench.l2_cache_bytes(dev))


__all__ += ["default_dtypes"]
