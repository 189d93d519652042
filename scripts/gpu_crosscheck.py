"""Cross-check the reference adapters' GPU paths (fla Triton kernels, mamba-ssm kernels) against their CPU
paths (the libraries' own pure-PyTorch references), and the identities between families, on a CUDA GPU.

Usage (on a GPU machine, after `make setup` or the recipe in reports/README.md):
    python scripts/gpu_crosscheck.py --out reports/gpu_crosscheck.md
Prints one row per check: relative RMS error, what ran, seconds of the first call (autotuning included).
Exits non-zero if any error is above its tolerance. CI never runs this (no GPU); its report is committed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
import torch.nn.functional as F

from course_utils import refs
from course_utils.conventions import relative_rms_error
from course_utils.mamba_import import has_mamba_cuda

TOL = {torch.float32: 5e-3, torch.bfloat16: 2e-2, torch.float16: 1e-2}  # TF32 inside fla's tl.dot
rows: list[tuple[str, str, float, float, str, bool]] = []


def rel(a, b) -> float:
    """The course's relative error (conventions.relative_rms_error); the worst item of a tuple."""
    if isinstance(a, (tuple, list)):
        return max(rel(x, y) for x, y in zip(a, b))
    return relative_rms_error(a, b)


def record(name: str, dtype, fn_gpu, fn_ref) -> None:
    t0 = time.perf_counter()
    got = fn_gpu()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    backend = refs.last_backend()
    want = fn_ref()
    err = rel(got, want)
    ok = err < TOL[dtype]
    rows.append((name, str(dtype).replace("torch.", ""), err, seconds, backend, ok))
    print(f"{'✅' if ok else '❌'} {name:<55} {str(dtype):<15} err {err:.2e}  first call {seconds:6.1f}s  {backend}",
          flush=True)


def cpu(*xs):
    return [None if x is None else x.detach().float().cpu() for x in xs]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="reports/gpu_crosscheck.md")
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU (checks the script, not the GPU)")
    parser.add_argument("--only", choices=["fla", "mamba"], help="run one library's checks (fla autotuning is slow)")
    args = parser.parse_args()
    assert args.cpu or torch.cuda.is_available(), "this script needs a CUDA GPU (or --cpu for a dry run)"
    dev = torch.device("cpu" if args.cpu else "cuda")
    torch.manual_seed(0)
    B, T, H, K, V = 2, 100, 3, 64, 64  # T=100: not a multiple of the kernels' chunk sizes

    def qkv(dtype=torch.float32):
        q, k, v = (torch.randn(B, T, H, d, device=dev, dtype=dtype) for d in (K, K, V))
        return q, k, v

    q, k, v = qkv()
    S0 = torch.randn(B, H, K, V, device=dev)
    gk = F.logsigmoid(torch.randn(B, T, H, K, device=dev)) / 8  # log-space gate, decays near 1
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)) / 8
    beta = torch.rand(B, T, H, device=dev)
    kn = F.normalize(k, dim=-1)  # the delta rule wants unit-norm keys

    if args.only != "mamba":
        # --- each GPU path vs the CPU reference, same inputs
        for mode in ("chunk", "recurrent"):
            record(f"linear_attention mode={mode}", torch.float32,
                   lambda: refs.linear_attention(q, k, v, initial_state=S0, mode=mode),
                   lambda: refs.linear_attention(*cpu(q, k, v), initial_state=cpu(S0)[0]))
            record(f"linear_attention normalize mode={mode}", torch.float32,
                   lambda: refs.linear_attention(q.sigmoid(), k.sigmoid(), v, normalize=True, mode=mode)[0],
                   lambda: refs.linear_attention(*cpu(q.sigmoid(), k.sigmoid(), v), normalize=True)[0])
            record(f"gla mode={mode}", torch.float32,
                   lambda: refs.gla(q, k, v, gk, initial_state=S0, mode=mode),
                   lambda: refs.gla(*cpu(q, k, v, gk), initial_state=cpu(S0)[0]))
            record(f"simple_gla mode={mode}", torch.float32,
                   lambda: refs.simple_gla(q, k, v, g, initial_state=S0, mode=mode),
                   lambda: refs.simple_gla(*cpu(q, k, v, g), initial_state=cpu(S0)[0]))
            record(f"retention mode={mode}", torch.float32,
                   lambda: refs.retention(q, k, v, initial_state=S0, mode=mode),
                   lambda: refs.retention(*cpu(q, k, v), initial_state=cpu(S0)[0]))
            record(f"delta_rule mode={mode}", torch.float32,
                   lambda: refs.delta_rule(q, kn, v, beta, initial_state=S0, mode=mode),
                   lambda: refs.delta_rule(*cpu(q, kn, v, beta), initial_state=cpu(S0)[0]))
            record(f"gated_delta_rule mode={mode}", torch.float32,
                   lambda: refs.gated_delta_rule(q, kn, v, g, beta, initial_state=S0, mode=mode),
                   lambda: refs.gated_delta_rule(*cpu(q, kn, v, g, beta), initial_state=cpu(S0)[0]))
        qb, kb, vb = (x.bfloat16() for x in (q, kn, v))
        record("delta_rule mode=chunk (bf16: chunk kernel)", torch.bfloat16,
               lambda: refs.delta_rule(qb, kb, vb, beta.bfloat16(), mode="chunk"),
               lambda: refs.delta_rule(*cpu(qb, kb, vb, beta.bfloat16())))
        record("gla mode=chunk (bf16)", torch.bfloat16,
               lambda: refs.gla(qb, k.bfloat16(), vb, gk.bfloat16(), mode="chunk"),
               lambda: refs.gla(*cpu(qb, k.bfloat16(), vb, gk.bfloat16())))
        record("softmax_attention causal (SDPA)", torch.float32,
               lambda: refs.softmax_attention(q, k, v, causal=True),
               lambda: refs.softmax_attention(*cpu(q, k, v), causal=True))

        # --- identities between families, all on the GPU kernels
        gam = refs.retention_gammas(H, device=dev).log().view(1, 1, H).expand(B, T, H).contiguous()
        record("retention == simple_gla(g = log gamma_h) [GPU]", torch.float32,
               lambda: refs.retention(q, k, v, mode="chunk"), lambda: refs.simple_gla(q, k, v, gam, mode="chunk"))
        record("gated_delta_rule(g=0) == delta_rule [GPU]", torch.float32,
               lambda: refs.gated_delta_rule(q, kn, v, torch.zeros_like(g), beta, mode="recurrent"),
               lambda: refs.delta_rule(q, kn, v, beta, mode="recurrent"))
        record("gla(g constant over K) == simple_gla [GPU]", torch.float32,
               lambda: refs.gla(q, k, v, g.unsqueeze(-1).expand(B, T, H, K).contiguous(), mode="chunk"),
               lambda: refs.simple_gla(q, k, v, g, mode="chunk"))

    if args.only != "fla":
        # --- mamba-ssm
        b, d, L, n = 2, 64, 100, 16
        u = torch.randn(b, d, L, device=dev)
        delta = F.softplus(torch.randn(b, d, L, device=dev) - 1)
        A = -torch.rand(d, n, device=dev) - 0.1
        Bm, Cm = torch.randn(b, n, L, device=dev), torch.randn(b, n, L, device=dev)
        Dm = torch.randn(d, device=dev)
        record("selective_scan" + (" (CUDA extension)" if has_mamba_cuda() else " (no CUDA extension: ref)"),
               torch.float32, lambda: refs.selective_scan(u, delta, A, Bm, Cm, D=Dm),
               lambda: refs.selective_scan(*cpu(u, delta, A, Bm, Cm), D=cpu(Dm)[0]))
        st = torch.randn(b, d, n, device=dev)
        record("selective_state_update (Triton)", torch.float32,
               lambda: refs.selective_state_update(st, u[..., 0], delta[..., 0], A, Bm[..., 0], Cm[..., 0], D=Dm),
               lambda: refs.selective_state_update(*cpu(st, u[..., 0], delta[..., 0], A, Bm[..., 0], Cm[..., 0]),
                                                   D=cpu(Dm)[0]))
        hb, Lh, hh, p, g_, nn = 2, 100, 4, 32, 1, 16
        x = torch.randn(hb, Lh, hh, p, device=dev)
        dt = F.softplus(torch.randn(hb, Lh, hh, device=dev) - 1)
        Ah = -torch.rand(hh, device=dev) - 0.1
        Bs, Cs = torch.randn(hb, Lh, g_, nn, device=dev), torch.randn(hb, Lh, g_, nn, device=dev)
        h0 = torch.randn(hb, hh, p, nn, device=dev)
        record("ssd (mamba_chunk_scan_combined) vs ssd_minimal_discrete", torch.float32,
               lambda: refs.ssd(x, dt, Ah, Bs, Cs, chunk_size=64, initial_states=h0),
               lambda: refs.ssd(*cpu(x, dt, Ah, Bs, Cs), chunk_size=64, initial_states=cpu(h0)[0]))
        # SSD is scalar-gated linear attention: C <-> q, B <-> k, dt*x <-> v, dt*A <-> g, scale 1 (Mamba-2 §3).
        record("ssd (mamba-ssm) == simple_gla(g = A*dt) (fla) [GPU]", torch.float32,
               lambda: refs.ssd(x, dt, Ah, Bs, Cs, chunk_size=64)[0],
               lambda: refs.simple_gla(Cs.expand(hb, Lh, hh, nn).contiguous(), Bs.expand(hb, Lh, hh, nn).contiguous(),
                                       x * dt.unsqueeze(-1), dt * Ah, scale=1.0, mode="recurrent")[0])

    failed = [r for r in rows if not r[5]]
    lines = [
        "# GPU cross-check of the reference adapters",
        "",
        (f"Device: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
         if not args.cpu else "Device: CPU (dry run), ")
        + f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}.",
        f"mamba-ssm CUDA selective scan built: {has_mamba_cuda()}.",
        "",
        f"Command: `python scripts/gpu_crosscheck.py {' '.join(sys.argv[1:])}` (see reports/README.md for the",
        "set-up on the GPU machine). Shapes: B=2, T=100, H=3, K=V=64 (T not a multiple of any chunk size);",
        "SSM b=2, d=64, L=100, N=16; SSD b=2, L=100, H=4, P=32, N=16. Error: relative RMS (‖a−b‖/‖b‖).",
        "'first call' includes Triton autotuning and compilation.",
        "",
        "| check | dtype | rel. error | first call (s) | GPU path that ran | ok |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {dt_} | {e:.2e} | {s:.1f} | `{be}` | {'✅' if ok else '❌'} |" for n, dt_, e, s, be, ok in rows]
    lines += ["", f"{len(rows) - len(failed)} passed, {len(failed)} failed."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
