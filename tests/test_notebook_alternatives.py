"""Correct code written differently from the solution passes the graded cell *and* every check after it:
each solution notebook runs top to bottom with some exercise cells replaced by such alternatives.

The grader-only side of this (many more alternatives) is in tests/exercises/; here the point is the
notebook's own checks (FLOP counts, plots, asserts), which must not depend on how the student wrote it.
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from course_utils.authoring import SOLUTIONS

ALTERNATIVES = {
    "01_kernel_trick.ipynb": {
        "1.1": '''def softmax_attention(q, k, v, causal=False, scale=None):
    """Row sums as a product with a ones vector, head-first matmuls."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qh, kh, vh = (x.float().transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    s = scale * qh @ kh.transpose(-1, -2)
    if causal:
        T = q.shape[1]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    e = torch.exp(s - s.amax(-1, keepdim=True))
    o = (e @ vh) / (e @ torch.ones(e.shape[-1], 1, device=q.device))
    return o.transpose(1, 2).to(q.dtype)
''',
        "1.2b": '''def linear_attention_associative(q, k, v, eps=1e-6):
    """The normaliser as an extra column of V: phi(K)^T [V, 1] in one product."""
    fq, fk = phi(q.float()), phi(k.float())
    v1 = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], dim=-1)
    out = torch.einsum("bthk,bhkv->bthv", fq, torch.einsum("bthk,bthv->bhkv", fk, v1))
    return (out[..., :-1] / (out[..., -1:] + eps)).to(q.dtype)
''',
    },
    "03_chunkwise.ipynb": {
        "3.1": '''def chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None):
    """Token-level einsums inside each chunk (contractions of size 1 when chunk_size = 1)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float32) if initial_state is None else initial_state.float()
    outs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start:start + chunk_size].float() for x in (q, k, v))
        n = qc.shape[1]
        scores = torch.einsum("bchk,bshk->bhcs", qc, kc) * torch.ones(n, n, device=q.device).tril()
        outs.append(scale * (torch.einsum("bhcs,bshv->bchv", scores, vc) + torch.einsum("bchk,bhkv->bchv", qc, S)))
        S = S + torch.einsum("bchk,bchv->bhkv", kc, vc)
    return torch.cat(outs, dim=1).to(q.dtype), S
''',
    },
}


def _with_alternatives(path, replacements):
    nb = nbformat.read(path, as_version=4)
    for ex_id, code in replacements.items():
        cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"# Exercise {ex_id}:")]
        assert len(cells) == 1, f"{path.name}: no single exercise cell for {ex_id}"
        cells[0].source = cells[0].source.splitlines()[0] + "\n" + code
    return nb


@pytest.mark.parametrize("name", sorted(ALTERNATIVES))
def test_notebook_accepts_correct_alternatives(name):
    path = SOLUTIONS / name
    nb = _with_alternatives(path, ALTERNATIVES[name])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(SOLUTIONS)}}).execute()
    graded = [c for c in nb.cells if c.cell_type == "code" and "grade(" in c.source]
    for ex_id in ALTERNATIVES[name]:
        text = "".join(o.get("text", "") for c in graded for o in c.outputs)
        assert f"✅ Exercise {ex_id} passed: " in text, f"{name}: the alternative for {ex_id} was not graded as passing"
