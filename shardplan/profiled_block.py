"""A transformer block under torch.compile, profiled: what `shardplan calibrate` measures for compiled blocks.

Inductor fuses a block's memory-bound ops across op boundaries, so they are measured together: one Llama block
(`shardplan.llama.Block`) under torch.compile, forward and backward, its kernels sorted by name into GEMMs, attention
and the rest. The rest, against the bytes the cost model counts for the block's memory-bound ops, is the compiled
block's rate; with FP8 linears, what the rest grows by, against the FP8 casts' bytes, is the rate of the casts
Inductor fuses into the block.
"""

from __future__ import annotations

import re
import warnings

import torch

from shardplan.cost.calibration import SWEEP_HEAD_DIM
from shardplan.cost.compute import FP8_CAST_BYTES, block_elementwise_bytes, fp8_cast_elements
from shardplan.model.hf_config import spec_from_config
from shardplan.model.schema import ModelSpec

# Kernel kinds in a profile, by name: SDPA's flash and cuDNN kernels with their pre- and post-processing; cuBLAS's
# nvjet and gemm kernels and CUTLASS (FP8 GEMMs among them). The rest are a block's memory-bound ops.
ATTENTION_KERNELS = re.compile(r"sdpa|flash|fmha|cudnn", re.IGNORECASE)
GEMM_KERNELS = re.compile(r"nvjet|gemm|cutlass|xmma", re.IGNORECASE)
BLOCK_SEQ_LEN = 4096  # sequence length of the compiled block calibrate profiles


def llama_block(width: tuple, device: torch.device, *, fp8: bool = False) -> torch.nn.Module:
    """A bf16 `shardplan.llama.Block` of `width` (hidden = q; heads of 128) on `device`, its linears as `Float8Linear`
    with `fp8`."""
    from shardplan.llama import Block, float8_linears

    h, q, kv, f = width
    block = Block(h, q // SWEEP_HEAD_DIM, f, 1e-5, kv_heads=kv // SWEEP_HEAD_DIM).to(device, torch.bfloat16)
    if fp8:
        float8_linears([block])
    return block


def block_kernels(
    device: torch.device, tokens: int, width: tuple, *, fp8: bool = False, repeats: int = 5
) -> dict[str, float]:
    """GPU seconds per kernel name of one Llama block's forward + backward under torch.compile(fullgraph=True), as
    torchtitan compiles blocks: `llama_block` on `tokens` tokens in sequences of BLOCK_SEQ_LEN; the gradients of its
    input and weights taken without accumulating them; the mean of `repeats` passes under torch.profiler, after three
    to compile."""
    from shardplan.llama import rope_tables

    block = llama_block(width, device, fp8=fp8)
    torch._dynamo.reset()  # compiled afresh for these shapes, as a training run compiles its blocks once
    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    bf16 = {"dtype": torch.bfloat16, "device": device}
    x = torch.randn(tokens // BLOCK_SEQ_LEN, BLOCK_SEQ_LEN, width[0], **bf16, requires_grad=True)
    cos, sin = rope_tables(SWEEP_HEAD_DIM, BLOCK_SEQ_LEN, device)
    inputs, grad = [x, *block.parameters()], torch.randn_like(x)

    def step() -> None:
        torch.autograd.grad(compiled(x, cos, sin), inputs, grad)

    for _ in range(3):
        step()
    torch.cuda.synchronize(device)
    with warnings.catch_warnings():  # one profiling cycle: no earlier events to keep, as torch warns
        warnings.filterwarnings("ignore", message="Warning: Profiler clears events")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                step()
            torch.cuda.synchronize(device)
    return {e.key: e.self_device_time_total * 1e-6 / repeats for e in prof.key_averages() if e.self_device_time_total}


def kernels_by_kind(kernels: dict[str, float]) -> dict[str, float]:
    """Seconds of attention, GEMM and other kernels (ATTENTION_KERNELS, GEMM_KERNELS) of {kernel name: seconds}."""
    kinds = dict.fromkeys(("attention", "gemm", "other"), 0.0)
    for name, seconds in kernels.items():
        kind = "attention" if ATTENTION_KERNELS.search(name) else "gemm" if GEMM_KERNELS.search(name) else "other"
        kinds[kind] += seconds
    return kinds


def block_spec(width: tuple) -> ModelSpec:
    """The one-block Llama of `width` that `block_kernels` runs, as the cost model sees it."""
    h, q, kv, f = width
    config = {
        "model_type": "llama",
        "hidden_size": h,
        "num_attention_heads": q // SWEEP_HEAD_DIM,
        "num_key_value_heads": kv // SWEEP_HEAD_DIM,
        "intermediate_size": f,
        "num_hidden_layers": 1,
        "vocab_size": 32000,
        "max_position_embeddings": BLOCK_SEQ_LEN,
        "rms_norm_eps": 1e-5,
    }
    return spec_from_config(config, "shardplan calibrate")


def compiled_block_rates(
    width: tuple, tokens: int, bf16_other_s: float, fp8_other_s: float | None = None
) -> dict[str, float]:
    """compiled_block_gbps: the bytes the cost model counts for the block's memory-bound ops, forward and backward
    (`block_elementwise_bytes`, backward twice forward), over its kernels other than GEMMs and attention
    (`bf16_other_s`); compiled_fp8_cast_gbps: the bytes it counts for the FP8 casts (`fp8_cast_elements`) over what
    the FP8 block's such kernels (`fp8_other_s`) add to them, where measured and more."""
    spec = block_spec(width)
    out = {
        "compiled_block_gbps": 3 * sum(block_elementwise_bytes(spec, tokens, 1, False).values()) / bf16_other_s / 1e9
    }
    if fp8_other_s is not None and fp8_other_s > bf16_other_s:
        casts = FP8_CAST_BYTES * sum(fp8_cast_elements(spec, tokens, 1, False, weight_casts=True))
        out["compiled_fp8_cast_gbps"] = casts / (fp8_other_s - bf16_other_s) / 1e9
    return out


def measure_compiled_block(device: torch.device, tokens: int, width: tuple) -> dict[str, float]:
    """`compiled_block_rates` of `block_kernels`, bf16 and (FP8 tensor cores) FP8."""
    bf16 = kernels_by_kind(block_kernels(device, tokens, width))["other"]
    fp8 = None
    if torch.cuda.get_device_capability(device) >= (8, 9):
        fp8 = kernels_by_kind(block_kernels(device, tokens, width, fp8=True))["other"]
    return compiled_block_rates(width, tokens, bf16, fp8)
