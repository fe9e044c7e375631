"""One GPU: cuDNN's fused attention with and without learnable sinks, the kernel Transformer Engine runs for
GPT-OSS in Megatron (softmax_type="learnable": `FusedAttention`, cuDNN >= 9.13; FlashAttention is refused for
it). Does a sink, or a sliding window with one, make the attention slower than the cost model's rate?

GPT-OSS 120B's attention (openai/gpt-oss-120b config.json: 64 query heads of 64, 8 KV heads, a 128-token window
on every other block) at B x 4,096 tokens, bf16, forward and backward, through cudnn-frontend's graph API (the
library TE calls), CUDA events, median of repeats. Cases: causal; causal with a sink per head; causal within a
128-key window (TE's window_size (128, 0): diagonal band 128 to the left, 0 to the right); the window with a
sink. torch's SDPA (causal, its own kernel pick: the calibration's) on the same shape as a reference.
FLOPs count the (query, key) pairs attended: 4 x heads x head dim per pair forward, 2.5x that backward.

    python benchmarks/attention_sinks.py [OUT.json]       (needs the nvidia-cudnn-frontend package)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from attention_window import BWD_OVER_FWD, pairs
from moe_block import gpu_s

SEQ, HEADS, KV_HEADS, HEAD_DIM, WINDOW = 4096, 64, 8, 64, 128
BATCHES = (1, 4)  # Megatron Bridge's H100 and B200 GPT-OSS micro-batches
# how a sink's cost scales: (batch, sequence, head dim) beside GPT-OSS's, causal, with and without a sink
SCALING = ((1, 2048, 64), (1, 8192, 64), (1, 4096, 128))


def _cudnn_case(batch: int, window: int | None, sink: bool, seq: int = SEQ, head_dim: int = HEAD_DIM) -> dict:
    """Forward and backward seconds of one cuDNN SDPA graph pair (cuDNN raises where it has no engine for it)."""
    import cudnn

    bf16, fp32 = cudnn.data_type.BFLOAT16, cudnn.data_type.FLOAT

    def bshd(heads: int) -> torch.Tensor:  # dims (b, h, s, d) over a (b, s, h, d) buffer, as TE lays them out
        return torch.randn(batch, seq, heads, head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)

    q, k, v, grad_o = bshd(HEADS), bshd(KV_HEADS), bshd(KV_HEADS), bshd(HEADS)
    out, dq, dk, dv = torch.empty_like(q), torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    stats = torch.empty(batch, HEADS, seq, 1, device="cuda", dtype=torch.float32)
    sinks = torch.randn(1, HEADS, 1, 1, device="cuda", dtype=torch.float32)
    dsinks = torch.zeros_like(sinks)
    mask = dict(diagonal_alignment=cudnn.diagonal_alignment.TOP_LEFT, diagonal_band_right_bound=0)
    if window is not None:
        mask["diagonal_band_left_bound"] = window
    scale = head_dim**-0.5
    handle = cudnn.create_handle()
    torch.cuda.synchronize()

    def build(graph: object) -> torch.Tensor:
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        return torch.empty(graph.get_workspace_size(), device="cuda", dtype=torch.uint8)

    fwd = cudnn.pygraph(io_data_type=bf16, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    tq, tk, tv = fwd.tensor_like(q), fwd.tensor_like(k), fwd.tensor_like(v)
    tsink = fwd.tensor_like(sinks) if sink else None
    to, tstats = fwd.sdpa(
        name="sdpa", q=tq, k=tk, v=tv, attn_scale=scale, generate_stats=True, sink_token=tsink, **mask
    )
    to.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride()))
    tstats.set_output(True).set_data_type(fp32)
    fwd_space = build(fwd)
    fwd_pack = {tq: q, tk: k, tv: v, to: out, tstats: stats} | ({tsink: sinks} if sink else {})

    bwd = cudnn.pygraph(io_data_type=bf16, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    bq, bk, bv, bo, bdo = (bwd.tensor_like(t) for t in (q, k, v, out, grad_o))
    bstats = bwd.tensor_like(stats)
    bsink = bwd.tensor_like(sinks) if sink else None
    bdsink = bwd.tensor_like(dsinks) if sink else None
    gq, gk, gv = bwd.sdpa_backward(
        name="sdpa_backward", q=bq, k=bk, v=bv, o=bo, dO=bdo, stats=bstats, attn_scale=scale,
        sink_token=bsink, dSink_token=bdsink, **mask,
    )  # fmt: skip
    for grad_t, buffer in ((gq, dq), (gk, dk), (gv, dv)):
        grad_t.set_output(True).set_dim(list(buffer.shape)).set_stride(list(buffer.stride()))
    if sink:
        bdsink.set_output(True)
    bwd_space = build(bwd)
    bwd_pack = {bq: q, bk: k, bv: v, bo: out, bdo: grad_o, bstats: stats, gq: dq, gk: dk, gv: dv}
    bwd_pack |= {bsink: sinks, bdsink: dsinks} if sink else {}

    fwd.execute(fwd_pack, fwd_space, handle=handle)
    forward_s = gpu_s(lambda: fwd.execute(fwd_pack, fwd_space, handle=handle))
    backward_s = gpu_s(lambda: bwd.execute(bwd_pack, bwd_space, handle=handle))
    return {"forward_s": forward_s, "backward_s": backward_s}


def _sdpa_case(batch: int) -> dict:
    """torch's SDPA, causal, GQA: the calibration's kernel family, on the same shape."""
    q = torch.randn(batch, HEADS, SEQ, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(batch, KV_HEADS, SEQ, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(batch, KV_HEADS, SEQ, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(batch, HEADS, SEQ, HEAD_DIM, device="cuda", dtype=torch.bfloat16)

    def forward() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    forward_s = gpu_s(forward)
    total_s = gpu_s(lambda: torch.autograd.grad(forward(), (q, k, v), grad))
    return {"forward_s": forward_s, "backward_s": total_s - forward_s}


def _timed(name: str, run: Callable[[], dict], batch: int, seq: int, head_dim: int, window: int | None) -> dict:
    """One case's times and rates, or the error cuDNN gave (a graph it has no engine for: recorded, not fatal)."""
    try:
        row = run()
    except Exception as exc:
        row = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    flops = 4 * batch * HEADS * head_dim * pairs(seq, window)
    if "forward_s" in row:
        row["forward_tflops"] = flops / row["forward_s"] / 1e12
        row["backward_tflops"] = BWD_OVER_FWD * flops / row["backward_s"] / 1e12
    out = {"case": name, "batch": batch, "seq": seq, "head_dim": head_dim, "window": window, **row}
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def main() -> None:
    import cudnn

    runs = []
    for batch in BATCHES:
        cases = [("sdpa causal", None, lambda b=batch: _sdpa_case(b))]
        for window in (None, WINDOW):
            for sink in (False, True):
                name = f"cudnn causal{f' window {window}' if window else ''}{' + sink' if sink else ''}"
                cases.append((name, window, lambda b=batch, w=window, s=sink: _cudnn_case(b, w, s)))
        for name, window, run in cases:
            runs.append(_timed(name, run, batch, SEQ, HEAD_DIM, window))
    for batch, seq, head_dim in SCALING:
        for sink in (False, True):
            run = lambda b=batch, s=seq, d=head_dim, k=sink: _cudnn_case(b, None, k, s, d)  # noqa: E731
            runs.append(_timed(f"cudnn causal{' + sink' if sink else ''}", run, batch, seq, head_dim, None))
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cudnn_backend": cudnn.backend_version(),
        "cudnn_frontend": cudnn.__version__,
        "shape": dict(seq=SEQ, heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM),
        "runs": runs,
    }
    text = json.dumps(result, indent=1)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
