"""One GPU, eager PyTorch: what a mixture-of-experts MLP costs against the cost model's reading of it (the top-k
experts' GEMMs as one GEMM of the active width, the token permutation at the copy rate).

For each shape (hidden h, expert width f, local experts, rows routed to this GPU) it times, forward and backward,
with CUDA events (median of repeats):
- `dense`: the same FLOPs as one SwiGLU MLP over all routed rows (what the cost model times);
- `loop`: one SwiGLU expert after the other over its rows (what Transformer Engine's GroupedLinear launches);
- `grouped`: torch._grouped_mm over all local experts at once, where this torch has it, the experts' weights
  stacked once as torchtitan's GroupedExperts holds them (`grouped_gemm`: its two grouped GEMMs alone, no activation);
- `block`: a whole MoE layer as Megatron-Core's alltoall dispatcher runs it on one rank, bar the all-to-all
  (`shardplan.llama.Experts`: router, softmax, top-k, the token counts copied to the host, the permutation,
  one expert after the other, the weighted un-permutation),
- `torch_block`: a whole MoE layer as torchtitan runs it on one rank, bar the all-to-all (`shardplan.llama.Experts`
  with `grouped`: router, top-k, the token counts by histc, no host synchronisation, the permutation, grouped
  GEMMs, the weighted sum back),
and the host seconds of `block` and `torch_block` with tiny tensors (launch-bound: the host's dispatch time per MoE
layer). `host` and `torch_host`: what each adds to a dense MLP's host time at several local expert counts.

    python benchmarks/moe_block.py [OUT.json [NAME ...]]   # NAME: only the shapes whose names start so
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# (name, hidden, expert width, experts, local experts, tokens on this GPU, top-k): Qwen3 30B-A3B under EP 16 and
# EP 8 (Qwen/Qwen3-30B-A3B config.json), Qwen3 235B-A22B under EP 32, Mixtral 8x7B under EP 8
SHAPES = [
    ("qwen3-30b-a3b ep16", 2048, 768, 128, 8, 4096, 8),
    ("qwen3-30b-a3b ep8", 2048, 768, 128, 16, 4096, 8),
    ("qwen3-235b-a22b ep32", 4096, 1536, 128, 4, 4096, 8),
    ("mixtral-8x7b ep8", 4096, 14336, 8, 1, 4096, 2),
    ("gpt-oss-120b ep8", 2880, 2880, 128, 16, 4096, 4),  # openai/gpt-oss-120b config.json (biases left out)
    # deepseek-ai/DeepSeek-V3 config.json under EP 32 and TP 2 with SP (Megatron Bridge's H100 recipe): each GPU's
    # 2,048-token sequence shard
    ("deepseek-v3 ep32", 7168, 2048, 256, 8, 2048, 8),
    # Qwen3.5-35B-A3B and Qwen3-Next-80B-A3B under EP 8 (transformers' Qwen3_5MoeTextConfig / Qwen3NextConfig
    # defaults): 32 and 64 small experts a GPU
    ("qwen3.5-35b-a3b ep8", 2048, 512, 256, 32, 4096, 8),
    ("qwen3-next-80b-a3b ep8", 2048, 512, 512, 64, 4096, 10),
]
REPEATS = 20
DEVICE = "cuda"
# shardplan/llama.py alone (it needs torch only): a lent GPU machine need not have shardplan's other dependencies
_spec = importlib.util.spec_from_file_location(
    "shardplan_llama", Path(__file__).resolve().parents[1] / "shardplan/llama.py"
)
_llama = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llama)


def gpu_s(fn: Callable[[], None], repeats: int = REPEATS) -> float:
    """Median seconds of `fn` on the GPU (CUDA events), after warm-up; wall clock where there is no GPU (a CPU
    check that a benchmark runs)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if not torch.cuda.is_available():
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def host_s(fn: Callable[[], None], repeats: int = REPEATS) -> float:
    """Median wall seconds of `fn`, synchronised (with tiny tensors: the host's dispatch time)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def swiglu(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    gate, up = (x @ w13).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ w2


class Experts:
    """`local` SwiGLU experts, h -> 2f -> h, bf16 weights."""

    def __init__(self, h: int, f: int, local: int) -> None:
        def weight(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16) * 0.02).requires_grad_()

        self.w13 = [weight(h, 2 * f) for _ in range(local)]
        self.w2 = [weight(f, h) for _ in range(local)]
        self.params = [*self.w13, *self.w2]
        self.stacked = [weight(local, h, 2 * f), weight(local, f, h)]  # as torchtitan's GroupedExperts holds them

    def loop(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        parts = x.split(counts)
        return torch.cat([swiglu(p, a, b) for p, a, b in zip(parts, self.w13, self.w2, strict=True)])

    def grouped(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        w13, w2 = self.stacked
        gate, up = torch._grouped_mm(x, w13, offs=offsets).chunk(2, dim=-1)
        return torch._grouped_mm(F.silu(gate) * up, w2, offs=offsets)

    def grouped_gemms(self, x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> Callable[[], None]:
        """A step of the two grouped GEMMs alone, forward and backward (`y`: the down projection's input), for
        their time without the activation."""
        w13, w2 = self.stacked
        grads = [torch.ones(x.shape[0], w.shape[-1], device=x.device, dtype=x.dtype) for w in (w13, w2)]

        def step() -> None:
            outs = [torch._grouped_mm(x, w13, offs=offsets), torch._grouped_mm(y, w2, offs=offsets)]
            torch.autograd.grad(outs, [x, y, w13, w2], grads)

        return step


def measure(name: str, h: int, f: int, num_experts: int, local: int, tokens: int, top_k: int) -> dict:
    rows = tokens * top_k  # balanced: every rank sends this GPU as many rows as it keeps
    per_expert = rows // local
    experts = Experts(h, f, local)
    x = torch.randn(rows, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dense13 = torch.randn(h, 2 * f * top_k, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dense2 = torch.randn(f * top_k, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    counts = [per_expert] * local
    out: dict = {"shape": name, "h": h, "f": f, "experts": num_experts, "local": local, "rows": rows}
    flops = 3 * 2 * rows * 3 * h * f  # forward + backward, three GEMMs of h x f per row routed

    fwd_bwd = fwd_bwd_of
    # the cost model's reading: one GEMM chain as wide as the active experts, over the GPU's own tokens
    tok = torch.randn(tokens, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    out["dense_s"] = gpu_s(fwd_bwd(lambda: swiglu(tok, dense13, dense2), [tok]))
    out["loop_s"] = gpu_s(fwd_bwd(lambda: experts.loop(x, counts), [x, *experts.params]))
    tok_in = torch.randn(tokens, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    if hasattr(torch, "_grouped_mm"):
        offsets = torch.arange(1, local + 1, device=DEVICE, dtype=torch.int32) * per_expert
        y = torch.randn(rows, f, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
        try:
            out["grouped_s"] = gpu_s(fwd_bwd(lambda: experts.grouped(x, offsets), [x, *experts.stacked]))
            out["grouped_gemm_s"] = gpu_s(experts.grouped_gemms(x, y, offsets))
            torch_layer = _llama.Experts(h, f, num_experts, local, top_k, grouped=True).to(DEVICE, torch.bfloat16)
            torch_block = fwd_bwd(lambda: torch_layer(tok_in), [tok_in, *torch_layer.parameters()])
            out["torch_block_s"] = gpu_s(torch_block)
            out["torch_block_wall_s"] = host_s(torch_block)
            tiny_in = torch.randn(local * top_k, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
            tiny_block = fwd_bwd(lambda: torch_layer(tiny_in), [tiny_in, *torch_layer.parameters()])
            out["torch_block_host_s"] = host_s(tiny_block)
        except RuntimeError as exc:  # not on this GPU or build
            out["grouped_error"] = str(exc)[:200]
    layer = _llama.Experts(h, f, num_experts, local, top_k).to(DEVICE, torch.bfloat16)
    block = fwd_bwd(lambda: layer(tok_in), [tok_in, *layer.parameters()])
    out["block_s"] = gpu_s(block)
    out["block_wall_s"] = host_s(block)
    tiny = torch.randn(local * top_k, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    out["block_host_s"] = host_s(fwd_bwd(lambda: layer(tiny), [tiny, *layer.parameters()]))
    for key in ("dense_s", "loop_s", "grouped_s", "grouped_gemm_s"):
        if key in out:
            out[key.replace("_s", "_tflops")] = flops / out[key] / 1e12
    return out


def host_extra(locals_: tuple[int, ...] = (2, 8, 16), h: int = 256, f: int = 512, *, grouped: bool = False) -> dict:
    """What a MoE MLP adds to a dense SwiGLU MLP's host time, forward and backward, with tiny tensors (launch-bound)
    at several local expert counts (top-2 of the local experts), and the least-squares line through them: the
    `moe_*_s_per_block` (fixed) and `moe_*_s_per_expert` figures `shardplan calibrate` writes (`grouped`: of the
    layer as torchtitan runs it, its `grouped_moe_*` figures)."""
    x = torch.randn(1, 64, h, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    dense = _llama.Block(h, 2, f, 1e-5).to(DEVICE, torch.bfloat16)

    def forward_backward(mlp: Callable[[torch.Tensor], torch.Tensor], params: list) -> tuple[float, float]:
        forward = host_s(lambda: mlp(x))
        both = host_s(fwd_bwd_of(lambda: mlp(x), [x, *params]))
        return forward, both - forward

    def dense_mlp(y: torch.Tensor) -> torch.Tensor:
        return dense.w2(F.silu(dense.w1(y)) * dense.w3(y))

    base = forward_backward(dense_mlp, [dense.w1.weight, dense.w3.weight, dense.w2.weight])
    extra = {}
    for local in locals_:
        layer = _llama.Experts(h, f, max(local, 8), local, 2, grouped=grouped).to(DEVICE, torch.bfloat16)
        extra[local] = [t - b for t, b in zip(forward_backward(layer, list(layer.parameters())), base, strict=True)]
    out: dict = {"local_experts": list(locals_), "dense_mlp_s": base, "extra_s": [extra[n] for n in locals_]}
    for i, way in enumerate(("forward", "backward")):
        slope = statistics.linear_regression(locals_, [extra[n][i] for n in locals_])
        out[f"moe_{way}_s_per_expert"], out[f"moe_{way}_s_per_block"] = slope.slope, slope.intercept
    return out


def fwd_bwd_of(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    """One forward and backward of `fn` (gradients of `inputs`), as a step to time."""

    def step() -> None:
        y = fn()
        torch.autograd.grad(y, inputs, torch.ones_like(y))

    return step


def main() -> None:
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}
    results["host"] = host_extra()
    print(json.dumps(results["host"]), flush=True)
    if hasattr(torch, "_grouped_mm"):
        results["torch_host"] = host_extra((2, 8, 32, 128), grouped=True)
        print(json.dumps(results["torch_host"]), flush=True)
    for shape in SHAPES:
        if sys.argv[2:] and not shape[0].startswith(tuple(sys.argv[2:])):
            continue
        run = measure(*shape)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        torch.cuda.empty_cache()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
