"""The cost model's Gated DeltaNet blocks (Qwen3-Next, Qwen3.5), no GPU needed: the kernels' roofline
(`shardplan.cost.linear_attention`) kernel by kernel, beside causal softmax attention over as many heads of the
same width at the calibrated flash rates, and what share of a hybrid block's time each part takes.

The roofline is not a measurement (the module says why); this prints what it assumes so that a measurement
(`scripts/gated_delta_device.sh`, whose rows carry the same shapes) can be set beside it.

    python benchmarks/linear_attention.py
"""

from __future__ import annotations

from shardplan import load_model
from shardplan.cost.calibration import ATTN_BWD_FLOPS_OVER_FWD, at_head_dim, at_seq, rates_for
from shardplan.cost.compute import _block_times
from shardplan.cost.linear_attention import _BACKWARD, _FORWARD, _kernel_s, gated_delta_s

GPUS = ("h100-sxm", "h200-sxm", "a100-sxm-80gb")
SEQS = (4096, 8192, 16384, 32768)


def softmax_attention_s(heads: int, dim: int, seq: int, gpu: str) -> tuple[float, float]:
    """Causal flash attention over `heads` heads of `dim` for one sequence of `seq`, at the calibrated rates."""
    rates = rates_for(gpu)
    flops = 2 * 2 * seq * seq * heads * dim / 2  # QK^T and AV, half of the square

    def seconds(kernel: str, work: float) -> float:
        by_dim = at_head_dim(rates.attention_head_dim.get(kernel, {}), dim)
        return work / (at_seq(getattr(rates, f"{kernel}_flops"), seq) * by_dim)

    return seconds("attention", flops), seconds("attention_bwd", flops * ATTN_BWD_FLOPS_OVER_FWD)


def main() -> None:
    model = load_model("qwen3.5-35b-a3b")
    g = model.gated_delta
    assert g is not None
    rates = rates_for("h100-sxm")
    print(f"{model.name}: {g.key_heads} key / {g.value_heads} value heads of {g.key_head_dim} x {g.value_head_dim}")
    print("\nkernel by kernel on an h100-sxm, one sequence of 4,096 tokens (ms):")
    for phase, kernels in (("forward", _FORWARD), ("backward", _BACKWARD)):
        for name, rows in kernels.items():
            print(f"  {phase:8} {name:26} {_kernel_s(name, rows, g, 4096 * g.value_heads, rates) * 1e3:7.3f}")
    print("\nGated DeltaNet kernels against causal flash attention over as many heads (forward + backward, ms):")
    for gpu in GPUS:
        for seq in SEQS:
            linear = sum(gated_delta_s(g, seq, rates_for(gpu)))
            softmax = sum(softmax_attention_s(g.value_heads, g.value_head_dim, seq, gpu))
            print(f"  {gpu:14} seq {seq:6,}: linear {linear * 1e3:7.2f}  softmax {softmax * 1e3:7.2f}  "
                  f"ratio {linear / softmax:5.2f}")  # fmt: skip
    print("\none hybrid block on an h100-sxm, TP 1, one sequence (ms; the average block, 3 of 4 linear):")
    for seq in SEQS:
        gemms, gemms_bwd, attn, attn_bwd, memory, _ = _block_times(model, seq, seq, 1, False, rates)
        total = gemms + gemms_bwd + attn + attn_bwd + 3 * memory
        print(f"  seq {seq:6,}: linears {(gemms + gemms_bwd) * 1e3:7.2f}  mixing {(attn + attn_bwd) * 1e3:7.2f}  "
              f"memory-bound {3 * memory * 1e3:6.2f}  mixing share {(attn + attn_bwd) / total:5.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
