"""The cost model's Gated DeltaNet blocks (Qwen3-Next, Qwen3.5), no GPU needed: the kernels' roofline
(`shardplan.cost.linear_attention`) kernel by kernel and the H100's measurement over it, the kernels' time beside
causal softmax attention over as many heads of the
same width at the calibrated flash rates, what share of a hybrid block's time each part takes, and the one
published training run of such a model found so far beside its estimate.

`scripts/gated_delta_device.sh` measures the kernels and the whole mixer on a GPU (the rows the module rests on:
benchmarks/results/h100-gated-delta-53 and -54).

    python benchmarks/linear_attention.py
"""

from __future__ import annotations

from shardplan import load_model
from shardplan.cost.calibration import ATTN_BWD_FLOPS_OVER_FWD, at_head_dim, at_seq, rates_for
from shardplan.cost.compute import _block_times, stage_times
from shardplan.cost.linear_attention import (
    _BACKWARD,
    _FORWARD,
    MEASURED,
    _kernel_s,
    _measured_over_roofline,
    gated_delta_s,
)

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
    print("\nthe roofline kernel by kernel on an h100-sxm (ns per token and value head):")
    for phase, kernels in (("forward", _FORWARD), ("backward", _BACKWARD)):
        for name, rows in kernels.items():
            print(f"  {phase:8} {name:26} {_kernel_s(name, rows, g, rates) * 1e9:6.3f}")
    forward, backward = _measured_over_roofline()
    host = MEASURED["host_s"]
    print(f"measured over the roofline: forward x{forward:.2f}, backward x{backward:.2f}; the host's time a call "
          f"{host[0] * 1e3:.3f} / {host[1] * 1e3:.3f} ms (benchmarks/results/h100-gated-delta-53, -54)")  # fmt: skip
    print(
        "\nGated DeltaNet kernels' GPU time against causal flash attention over as many heads (forward + backward, ms):"
    )
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


def megatron_bridge_h100_row() -> None:
    """The one published training run of a Gated DeltaNet hybrid found so far: Megatron Bridge's model-verification
    card for Qwen/Qwen3.6-35B-A3B (docs/model-verification/models/qwen3.6-35b-a3b.md, pretrain_performance.H100,
    verified 2026-08-05; Qwen3_5MoeForConditionalGeneration, the qwen3.5-35b-a3b preset's language model): 16 H100s
    in 2 nodes, TP1 PP2 (16 and 24 language blocks) EP8, micro-batch 1, global batch 512 of 4,096 tokens (5,885
    tokens/s/GPU x 22.27 s x 16 / 512), selective recompute with MoE-activation recompute, TE fused cross-entropy;
    measured 22.271 s a step. Not a clean row: its vision encoder (27 small blocks) runs on the first stage, and
    Transformer Engine CUDA graphs cover attention, router and preprocessing, which cut the host's dispatch time."""
    from shardplan import Training, estimate, load_topology

    train = Training(
        global_batch=512, seq_len=4096, recompute="selective", recompute_modules=("moe_act",), loss="fused"
    )
    model, topology = load_model("qwen3.5-35b-a3b"), load_topology("dgx-h100", nodes=2)
    plan = estimate(model, topology, train, tp=1, pp=2, dp=1, ep=8, layers_per_stage=(16, 24))
    print(f"\nMegatron Bridge, Qwen3.6-35B-A3B on 16 H100s: measured 22.271 s, estimate {plan.step_time_s:.2f} s "
          f"({plan.step_time_s / 22.271 - 1:+.0%})")  # fmt: skip
    rates = rates_for("h100-sxm")
    stage = stage_times(model, train, layers=24, first=False, last=True, micro_batch=1, tp=1, ep=8, rates=rates)
    busy, waiting = stage.forward_s + stage.backward_s + stage.recompute_s, stage.host_slack_s
    print(f"  last stage per micro-batch {busy * 1e3:.0f} ms, of it waiting on the host's dispatch "
          f"{waiting * 1e3:.0f} ms ({waiting / busy:.0%}: MoE host time per local expert, FLA's a call)")  # fmt: skip


if __name__ == "__main__":
    main()
    megatron_bridge_h100_row()
