# throwaway: which kernel faults in 6.7 on the GPU (run with CUDA_LAUNCH_BLOCKING=1): "ours" or "fla"
import sys
import torch
from course_utils import env as course_env
from course_utils.exercises import get
from course_utils.notebook_functions import load_namespace

which = sys.argv[1]
ex = get("6.7")
dev = torch.device("cuda")
dtypes = [torch.float32, torch.bfloat16]
ns = load_namespace("solutions/06_triton_kernels.ipynb") if which == "ours" else None
for case in ex.cases(dev, dtypes):
    inp = ex.make_inputs(case, dev)
    try:
        if which == "ours":
            kw = {k: inp[k] for k in ("scale", "initial_state", "chunk_size") if k in inp}
            o, S = ns["chunk_gla"](inp["q"], inp["k"], inp["v"], inp["g"], **kw)
        else:
            from fla.ops.gla import chunk_gla
            S0 = inp.get("initial_state")
            o, S = chunk_gla(*(inp[n].contiguous() for n in "qkv"), g=inp["g"].contiguous(), scale=inp.get("scale"),
                             initial_state=S0, output_final_state=True)
        torch.cuda.synchronize()
        print(which, case.label(), "ok", flush=True)
    except Exception as e:
        print(which, case.label(), "FAILED", type(e).__name__, str(e)[:200], flush=True)
        break
