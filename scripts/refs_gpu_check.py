"""Throwaway: every refs function on CUDA (kernels) vs the same function on CPU (naive refs)."""

import sys
import time
import traceback

import torch
import torch.nn.functional as F

import course_utils  # noqa: F401
from course_utils import refs

torch.manual_seed(0)
dev = "cuda"
results = []


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def flat(x):
    if isinstance(x, (tuple, list)):
        return [y for z in x for y in flat(z)]
    return [x]


def case(name, fn):
    t0 = time.time()
    try:
        msg = fn()
        print(f"OK   {name:55s} {msg}  [{time.time() - t0:.1f}s]", flush=True)
    except Exception as e:
        print(f"FAIL {name:55s} {type(e).__name__}: {str(e)[:300]}", flush=True)
        traceback.print_exc(limit=3, file=sys.stdout)


def make(B, T, H, K, V):
    return dict(
        q=F.elu(torch.randn(B, T, H, K)) + 1, k=F.elu(torch.randn(B, T, H, K)) + 1,
        kn=F.normalize(torch.randn(B, T, H, K), dim=-1), v=torch.randn(B, T, H, V),
        gk=F.logsigmoid(torch.randn(B, T, H, K) + 3), g=F.logsigmoid(torch.randn(B, T, H) + 3),
        beta=torch.rand(B, T, H), S0=torch.randn(B, H, K, V), z0=torch.rand(B, H, K) * T,
    )


FAM = {
    "linear_attention": lambda d, m, S0: refs.linear_attention(d["q"], d["k"], d["v"], None, S0, False, m),
    "linear_attention_norm": lambda d, m, S0: refs.linear_attention(
        d["q"], d["k"], d["v"], None, None if S0 is None else (S0, d["z0"]), True, m),
    "gla": lambda d, m, S0: refs.gla(d["q"], d["k"], d["v"], d["gk"], None, S0, m),
    "simple_gla": lambda d, m, S0: refs.simple_gla(d["q"], d["k"], d["v"], d["g"], None, S0, m),
    "retention": lambda d, m, S0: refs.retention(d["q"], d["k"], d["v"], None, S0, m),
    "delta_rule": lambda d, m, S0: refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"], None, S0, m),
    "gated_delta_rule": lambda d, m, S0: refs.gated_delta_rule(
        d["q"], d["kn"], d["v"], d["g"], d["beta"], None, S0, m),
}


def fam_section(shape, dtypes, fams, modes, states, grads):
    B, T, H, K, V = shape
    d = make(B, T, H, K, V)
    for dtype in dtypes:
        dg = {n: (x.to(dev, dtype) if n in ("q", "k", "kn", "v") else x.to(dev)) for n, x in d.items()}
        for fam in fams:
            call = FAM[fam]
            for mode in modes:
                for with_state in states:
                    S0c = d["S0"] if with_state else None
                    S0g = dg["S0"] if with_state else None

                    def run(fam=fam, call=call, mode=mode, S0c=S0c, S0g=S0g, dtype=dtype):
                        want = call({n: x for n, x in d.items()}, "recurrent", S0c)
                        got = call(dg, mode, S0g)
                        be = refs.last_backend()
                        errs = [rel(a, b) for a, b in zip(flat(got), flat(want))]
                        dts = [str(x.dtype).replace("torch.", "") for x in flat(got)]
                        tol = 2e-3 if dtype == torch.float32 else 5e-2
                        status = "" if max(errs) < tol else "  <-- LARGE"
                        return f"err={['%.1e' % e for e in errs]} dt={dts} {be}{status}"

                    case(f"{fam}/{mode}/{str(dtype)[6:]}/S0={with_state}/{shape}", run)
    for fam in grads:
        call = FAM[fam]

        def grad_run(fam=fam, call=call):
            names = ["q", "kn" if "delta" in fam else "k", "v", "S0"]
            if fam == "linear_attention_norm":
                names = names[:3]
            cpu = {n: x.detach().clone().requires_grad_(n in names) for n, x in d.items()}
            gpu = {n: x.detach().clone().to(dev).requires_grad_(n in names) for n, x in d.items()}
            S0k = "S0" if "S0" in names else None
            oc, sc = call(cpu, "recurrent", cpu[S0k] if S0k else None)
            og, sg = call(gpu, "auto", gpu[S0k] if S0k else None)
            be = refs.last_backend()
            wo = torch.randn_like(oc)
            (oc * wo).sum().backward()
            (og * wo.to(dev)).sum().backward()
            errs = {n: rel(gpu[n].grad, cpu[n].grad) for n in names}
            return f"grad errs {({k: '%.1e' % v for k, v in errs.items()})} {be}"

        case(f"GRAD {fam}/{shape}", grad_run)


def ssm_section():
    d = make(2, 10, 2, 16, 16)
    for (Bz, L, H, P, G, N, cs) in [(2, 100, 4, 64, 1, 64, 64), (2, 37, 4, 8, 2, 16, 16)]:
        x = torch.randn(Bz, L, H, P)
        dt = F.softplus(torch.randn(Bz, L, H) - 1)
        A = -torch.rand(H) - 0.1
        Bm, Cm = torch.randn(Bz, L, G, N), torch.randn(Bz, L, G, N)
        h0 = torch.randn(Bz, H, P, N)
        Dv = torch.randn(H)
        for dtype in (torch.float32, torch.bfloat16):
            def ssd_run(dtype=dtype):
                want = refs.ssd(x, dt, A, Bm, Cm, chunk_size=cs, D=Dv, initial_states=h0)
                got = refs.ssd(x.to(dev, dtype), dt.to(dev), A.to(dev), Bm.to(dev, dtype), Cm.to(dev, dtype),
                               chunk_size=cs, D=Dv.to(dev), initial_states=h0.to(dev))
                errs = [f"{rel(a, b):.1e}" for a, b in zip(got, want)]
                return f"err={errs} {[a.dtype for a in got]} {refs.last_backend()}"

            case(f"ssd/{str(dtype)[6:]}/{(Bz, L, H, P, G, N, cs)}", ssd_run)

        def ssu_run():
            A3 = A[:, None, None].expand(H, P, N)
            st_c, st_g = h0.clone(), h0.to(dev)
            before = st_g.clone()
            errs = []
            for t in range(5):
                args = (x[:, t], dt[:, t, :, None].expand(Bz, H, P), A3, Bm[:, t], Cm[:, t])
                oc, st_c = refs.selective_state_update(st_c, *args, D=Dv[:, None].expand(H, P))
                og, st_g2 = refs.selective_state_update(st_g, *(a.to(dev) for a in args),
                                                        D=Dv[:, None].expand(H, P).to(dev))
                assert torch.equal(st_g, before if t == 0 else st_g), "state mutated"
                st_g = st_g2
                errs.append(max(rel(og, oc), rel(st_g, st_c)))
            return f"max err {max(errs):.1e} {refs.last_backend()}"

        case(f"selective_state_update multihead/{(Bz, H, P, N)}", ssu_run)

    Bz, D, N, L = 2, 16, 8, 50
    u, delta, z = torch.randn(Bz, D, L), torch.randn(Bz, D, L), torch.randn(Bz, D, L)
    A = -torch.rand(D, N) - 0.5
    Bm, Cm, Dv, db = torch.randn(Bz, N, L), torch.randn(Bz, N, L), torch.randn(D), torch.randn(D)


    def ss_run():
        want = refs.selective_scan(u, delta, A, Bm, Cm, D=Dv, z=z, delta_bias=db, delta_softplus=True)
        got = refs.selective_scan(*(t.to(dev) for t in (u, delta, A, Bm, Cm)), D=Dv.to(dev), z=z.to(dev),
                                  delta_bias=db.to(dev), delta_softplus=True)
        return f"err={[('%.1e' % rel(a, b)) for a, b in zip(got, want)]} {refs.last_backend()}"


    case("selective_scan", ss_run)


    def ssu1_run():
        st = torch.zeros(Bz, D, N, device=dev)
        before = st.clone()
        args = [t[..., 0].to(dev) for t in (u, delta)] + [A.to(dev)] + [t[..., 0].to(dev) for t in (Bm, Cm)]
        og, sg = refs.selective_state_update(st, *args, D=Dv.to(dev), z=z[..., 0].to(dev), dt_bias=db.to(dev),
                                             dt_softplus=True)
        oc, sc = refs.selective_state_update(st.cpu(), *(a.cpu() for a in args), D=Dv, z=z[..., 0], dt_bias=db,
                                             dt_softplus=True)
        assert torch.equal(st, before)
        return f"err={rel(og, oc):.1e},{rel(sg, sc):.1e} {refs.last_backend()}"


    case("selective_state_update mamba1", ssu1_run)

    case("softmax_attention", lambda: "%.1e %s" % (
        rel(refs.softmax_attention(*(t.to(dev) for t in (d["q"], d["k"], d["v"])), causal=True),
            refs.softmax_attention(d["q"], d["k"], d["v"], causal=True)), refs.last_backend()))
    case("discretize", lambda: str(refs.discretize_zoh(torch.eye(2, device=dev) * -1, torch.ones(2, 1, device=dev),
                                                       0.1)[0].device) + " " + refs.last_backend())

def ssu_section():
    for D_, bias in ((True, False), (False, True), (False, False)):
        def run(D_=D_, bias=bias):
            Bz, H, P, N, G = 2, 4, 16, 16, 2
            st = torch.randn(Bz, H, P, N, device=dev)
            before = st.clone()
            x, dt = torch.randn(Bz, H, P, device=dev), F.softplus(torch.randn(Bz, H, P, device=dev))
            A = -torch.rand(H, P, N, device=dev)
            Bm, Cm = torch.randn(Bz, G, N, device=dev), torch.randn(Bz, G, N, device=dev)
            Dv = torch.randn(H, P, device=dev) if D_ else None
            db = torch.randn(H, P, device=dev) if bias else None
            og, sg = refs.selective_state_update(st, x, dt, A, Bm, Cm, D=Dv, dt_bias=db)
            be = refs.last_backend()
            assert torch.equal(st, before), "state mutated"
            cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
            oc, sc = refs.selective_state_update(*(cpu(t) for t in (st, x, dt, A, Bm, Cm)), D=cpu(Dv),
                                                 dt_bias=cpu(db))
            return f"err={rel(og, oc):.1e},{rel(sg, sc):.1e} {be}"
        case(f"ssu multihead D={D_} dt_bias={bias}", run)


BIG, SMALL = (2, 100, 3, 64, 64), (2, 37, 2, 8, 5)
ALL = list(FAM)
f32, bf16 = torch.float32, torch.bfloat16
for sec in sys.argv[1:]:
    if sec == "ssu":
        ssu_section()
    elif sec == "ssm":
        ssm_section()
    elif sec == "norm_bf16":
        fam_section(BIG, [bf16], ["linear_attention_norm"], ["auto"], [True], [])
    elif sec == "grad_la":
        fam_section(BIG, [], [], [], [], ["linear_attention", "linear_attention_norm"])
    elif sec == "small":
        fam_section(SMALL, [f32], ["linear_attention", "delta_rule"], ["auto"], [True], [])
    elif sec == "dbf16":
        fam_section(BIG, [bf16], ["delta_rule", "gated_delta_rule"], ["auto"], [True], [])
    elif sec == "bf16":
        fam_section(BIG, [bf16], ["delta_rule", "gated_delta_rule", "simple_gla", "gla", "retention"],
                    ["auto"], [True], [])
    elif sec == "grad_rest":
        fam_section(BIG, [], [], [], [], ["delta_rule", "simple_gla", "gated_delta_rule", "gla", "retention"])
print("done")
