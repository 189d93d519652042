"""Reference adapters: one function per operation, the course's conventions in, the libraries underneath.

Every function takes the layout of course_utils.conventions ([B, T, H, D], explicit scale, log-space
gates, states [B, H, K, V], returns (output, final_state)), checks its inputs with messages a student can
act on, and dispatches by device: CUDA tensors run fla's Triton kernels and mamba-ssm's kernels; CPU
tensors run the libraries' own pure-PyTorch references (fla `naive_*`, mamba-ssm `*_ref`). After each call
`last_backend()` names what ran;
`with backends_used() as used:` collects it for a block. fla and mamba-ssm are imported on first use, not here.

| module       | functions                                                                |
|--------------|--------------------------------------------------------------------------|
| attention    | softmax_attention, linear_attention_noncausal                            |
| linear_attn  | linear_attention                                                         |
| gla          | gla                                                                      |
| simple_gla   | simple_gla                                                               |
| retention    | retention, retention_gammas                                              |
| delta_rule   | delta_rule, gated_delta_rule                                             |
| ssm          | selective_scan, selective_state_update, ssd, mamba_block                 |
| discretize   | discretize_zoh, discretize_bilinear                                      |
"""

from course_utils.refs._checks import backends_used, last_backend
from course_utils.refs.attention import linear_attention_noncausal, softmax_attention
from course_utils.refs.delta_rule import delta_rule, gated_delta_rule
from course_utils.refs.discretize import discretize_bilinear, discretize_zoh
from course_utils.refs.gla import gla
from course_utils.refs.linear_attn import linear_attention
from course_utils.refs.retention import retention, retention_gammas
from course_utils.refs.simple_gla import simple_gla
from course_utils.refs.ssm import mamba_block, selective_scan, selective_state_update, ssd

__all__ = [
    "backends_used",
    "delta_rule",
    "discretize_bilinear",
    "discretize_zoh",
    "gated_delta_rule",
    "gla",
    "last_backend",
    "linear_attention",
    "mamba_block",
    "linear_attention_noncausal",
    "retention",
    "retention_gammas",
    "selective_scan",
    "selective_state_update",
    "simple_gla",
    "softmax_attention",
    "ssd",
]
