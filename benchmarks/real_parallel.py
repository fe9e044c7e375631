"""Train a Llama-style model under torchrun with the layouts shardplan suggests, and with the usual
alternatives, and compare measured step time and peak memory with the estimates.

    python benchmarks/real_parallel.py plan --topology live --model llama-13b -o CASES.json [--calibration F]
    torchrun --nproc-per-node N benchmarks/real_parallel.py run CASES.json --case I --out DIR
    python benchmarks/real_parallel.py report CASES.json DIR [--out D]   # report.md, results.json

`plan` asks `suggest` for the best three plans and adds, as estimates of the same kind: the first
plan's degrees in the default row-major rank order, the same degrees with every TP group spread as
far apart as the GPU numbering allows (the placement experiment), and three hand-picked layouts people
reach for without a planner (TP over all GPUs; TP=2 x DP=N/2; FSDP over all GPUs). `run` trains one
case: the plan's `rank_layout` becomes the DeviceMesh (rank g drives GPU g, so a layout *is* a placement), TP as
Megatron does it without sequence parallelism (column- then row-parallel linears, vocabulary-parallel
head and cross-entropy) through DTensor, PP with torch.distributed.pipelining's 1F1B schedule over the
plan's layers per stage, DP with FSDP2 (`fully_shard`, bf16 compute, fp32 gradient reduction) where
the plan shards (ZeRO-3), else one replica with Megatron-style fp32 master weights (llama.py). It
records the median step time (slowest rank) and the peak device memory (allocator reservation +
what the process holds outside it) of the busiest rank, and the loss, so that layouts can be checked
to train the same model. `report` compares: mean |error| of step time and memory, Spearman's rank
correlation of estimated and measured order, and whether the first plan is the fastest measured.

Nothing is tuned per case: `estimate` sees the same model, batch, recompute and ZeRO stage as the run,
and the Training flags say what this implementation does (no sequence parallelism, synchronous TP
backward, whole tensors between pipeline stages, TP as DTensors in eager mode).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardplan import Training, estimate, load_topology, suggest  # noqa: E402
from shardplan.model.hf_config import spec_from_config  # noqa: E402
from shardplan.plan import Plan  # noqa: E402

# Llama-2 shapes (head_dim 128, vocab 32000, untied head); "tiny" is for the CPU test under gloo.
MODELS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "num_hidden_layers": 4},
    "llama-1b": {"hidden_size": 2048, "num_attention_heads": 16, "intermediate_size": 5504, "num_hidden_layers": 22},
    "llama-7b": {"hidden_size": 4096, "num_attention_heads": 32, "intermediate_size": 11008, "num_hidden_layers": 32},
    "llama-13b": {"hidden_size": 5120, "num_attention_heads": 40, "intermediate_size": 13824, "num_hidden_layers": 40},
}
VOCAB = {"tiny": 512}
WARMUP, STEPS = 3, 6
# What the implementation in `run` does, in the cost model's terms (see the module docstring).
IMPLEMENTATION = dict(
    loss="fp32",  # _vocab_parallel_loss: torch's ops on an fp32 copy of the logits, none in place
    sequence_parallel=False,
    tp_async_backward=False,
    pipeline_scatter_gather=False,
    tp_impl="dtensor",
    pipeline_runtime="torch",  # FSDP2 and torch.distributed.pipelining
)
RECOMPUTE = ("none", "full")  # what llama.Llama's blocks run here


def model_config(name: str, seq_len: int) -> dict[str, Any]:
    """The Hugging Face style config.json of a benchmark model."""
    return {
        "model_type": "llama",
        "vocab_size": VOCAB.get(name, 32000),
        "num_key_value_heads": MODELS[name]["num_attention_heads"],
        "max_position_embeddings": seq_len,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        **MODELS[name],
    }


# --- plan: the cases and their estimates (no torch) -----------------------------------------------


def spread_layout(pp: int, dp: int, tp: int) -> list[list[list[int]]]:
    """Column-major order: tensor rank t of every group on GPUs t * (pp * dp) + ...; members of one TP
    group sit as far apart in GPU numbering as they can (across sockets and nodes where the row-major
    order keeps them together)."""
    return [[[t * pp * dp + p * dp + d for t in range(tp)] for d in range(dp)] for p in range(pp)]


def plan_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The cases `run` trains: the suggested plans first, best first, then the alternatives."""
    spec = spec_from_config(model_config(args.model, args.seq_len), "benchmarks/real_parallel.py", name=args.model)
    topo = load_topology(args.topology, gpu=args.gpu)
    base = Training(global_batch=args.global_batch, seq_len=args.seq_len, zero_stage=3, **IMPLEMENTATION)
    plans = suggest(spec, topo, base, top_k=10, calibration=args.calibration, zero_stages=(0, 3), recompute=RECOMPUTE)
    plans = [p for p in plans if p.virtual_stages == 1 and (p.zero_stage == 3 or p.dp == 1)][:3]
    best = plans[0]
    cases = [(f"suggested #{i + 1}", p) for i, p in enumerate(plans)]

    def alternative(label: str, tp: int, pp: int, layout: Any = None, recompute: str | None = None) -> None:
        dp = topo.num_gpus // (tp * pp)
        if dp < 1 or spec.num_heads % tp or base.global_batch % dp:
            return
        micro = best.micro_batch if (base.global_batch // dp) % best.micro_batch == 0 else 1
        train = base.model_copy(update={"zero_stage": 3 if dp > 1 else 0, "recompute": recompute or best.recompute})
        plan = estimate(spec, topo, train, tp=tp, pp=pp, dp=dp, micro_batch=micro, rank_layout=layout,
                        calibration=args.calibration)  # fmt: skip
        if not plan.fits and train.recompute != "full":
            return alternative(label, tp, pp, layout, "full")
        key = (plan.tp, plan.pp, plan.dp, plan.micro_batch, plan.recompute, plan.rank_layout)
        if all((p.tp, p.pp, p.dp, p.micro_batch, p.recompute, p.rank_layout) != key for _, p in cases):
            cases.append((label, plan))

    alternative("row-major order of #1", best.tp, best.pp)
    alternative("TP groups spread out (#1's degrees)", best.tp, best.pp, spread_layout(best.pp, best.dp, best.tp))
    alternative(f"hand-picked TP={topo.num_gpus}", topo.num_gpus, 1)
    alternative(f"hand-picked TP=2 x DP={topo.num_gpus // 2}", 2, 1)
    # the plain choice, and the one whose step the FSDP gathers weigh on most: how much of them the
    # compute hides is what the published FSDP rows leave in doubt (closing notes of issue 5)
    alternative(f"hand-picked FSDP over {topo.num_gpus}", 1, 1)
    return [case_of(label, plan, args.model) for label, plan in cases]


def case_of(label: str, plan: Plan, model: str) -> dict[str, Any]:
    """One entry of the cases file: what `run` trains and what `report` compares it with."""
    return {
        "label": label,
        "model": model,
        "config": model_config(model, plan.seq_len),
        "plan": json.loads(plan.to_json()),
    }


# --- run: one case under torchrun (torch from here) -----------------------------------------------


def _stage_module(model: Any, first: int, count: int, *, has_embed: bool, has_head: bool, recompute: str) -> Any:
    """The blocks [first, first + count) of `model`, with the embedding and the norm and head where this
    stage has them; forward returns hidden states, or the (vocabulary-sharded) logits on the last stage."""
    import torch
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    class Stage(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = model.embed if has_embed else None
            self.blocks = nn.ModuleList(model.blocks[first : first + count])
            self.norm, self.head = (model.norm, model.head) if has_head else (None, None)
            self.register_buffer("cos", model.cos, persistent=False)
            self.register_buffer("sin", model.sin, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.embed is not None:
                x = self.embed(x)
            cos, sin = self.cos[: x.shape[1]], self.sin[: x.shape[1]]
            for block in self.blocks:
                x = checkpoint(block, x, cos, sin, use_reentrant=False) if recompute == "full" else block(x, cos, sin)
            return self.head(self.norm(x)) if self.head is not None else x

    return Stage()


def _vocab_parallel_loss(group: Any) -> Any:
    """Mean cross-entropy over vocabulary-sharded logits, as Megatron's vocab_parallel_cross_entropy
    computes it: the max and the sum of exponentials and the target logit summed over the TP group."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    class SumOverGroup(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            dist.all_reduce(x, group=group)
            return x

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad  # the loss is the same on every rank of the group: d loss / d local part = d loss / d sum

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.flatten(0, 1).float()
        labels = labels.flatten()
        if group is None or dist.get_world_size(group) == 1:
            return F.cross_entropy(logits, labels)
        top = logits.detach().amax(dim=-1)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        logits = logits - top[:, None]
        width = logits.shape[-1]
        start = dist.get_rank(group) * width
        mine = (labels >= start) & (labels < start + width)
        target = logits.gather(-1, (labels - start).clamp(0, width - 1)[:, None]).squeeze(-1) * mine
        return (SumOverGroup.apply(logits.exp().sum(-1)).log() - SumOverGroup.apply(target)).mean()

    return loss


def run_case(
    case: dict[str, Any],
    *,
    device_type: str,
    init_std: float,
    lr: float,
    steps: int,
    warmup: int,
    profile: Path | None,
    dtensor_tp1: bool = False,
    compile_each_block: bool = False,
) -> dict:
    """Train one case on this rank; rank 0 returns the measured figures (other ranks: {}).
    `dtensor_tp1`: the block and head linears as DTensors even at TP 1 (a one-rank mesh): DTensor's
    host cost, on one GPU. `compile_each_block`: each block under torch.compile, as torchtitan's
    --training.compile (after TP, before FSDP)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

    from shardplan.llama import (
        Llama,
        MixedPrecisionAdamW,
        compile_blocks,
        fully_shard_model,
        parallelize_blocks,
        param_groups,
        rope_tables,
    )

    gc.collect()  # what an earlier case in this process left
    if device_type == "cuda":
        torch.cuda.empty_cache()
    plan = Plan.from_json(json.dumps(case["plan"]))
    cfg = case["config"]
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(device_type, int(os.environ.get("LOCAL_RANK", 0)) if device_type == "cuda" else 0)
    if device_type == "cuda":
        torch.cuda.set_device(device)
    mesh = plan.device_mesh(device_type)
    stage, replica = next(
        (p, d) for p, row in enumerate(plan.rank_layout) for d, cell in enumerate(row) if rank in cell
    )
    tp_group = mesh["tp"].get_group() if plan.tp > 1 else None

    torch.manual_seed(0)  # same full model on every rank and for every case (small models: `init_std` given)
    with torch.device("meta" if init_std == 0 else "cpu"):
        model = Llama(cfg)
    if init_std:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(std=init_std)
    first = sum(plan.layers_per_stage[:stage])
    module = _stage_module(
        model,
        first,
        plan.layers_per_stage[stage],
        has_embed=stage == 0,
        has_head=stage == plan.pp - 1,
        recompute=plan.recompute,
    )
    del model
    sharded = plan.zero_stage == 3
    module = module.float() if sharded else module  # FSDP2 keeps fp32 shards and computes in bf16
    if plan.tp > 1 or dtensor_tp1:
        parallelize_blocks(module, mesh["tp"])
        if module.head is not None:
            parallelize_module(module.head, mesh["tp"], ColwiseParallel())
    if init_std == 0:
        module.to_empty(device=device)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(std=0.02) if p.dim() > 1 else p.fill_(1.0)
    else:
        module.to(device)
    module.cos, module.sin = rope_tables(cfg["hidden_size"] // cfg["num_attention_heads"], plan.seq_len, device)
    if compile_each_block:
        compile_blocks(module)
    if sharded:
        fully_shard_model(module, mesh["dp"])
        # fused AdamW on GPUs, as torchtitan runs it (a foreach step makes several passes over the states)
        fused = device_type == "cuda"
        opt = torch.optim.AdamW(param_groups(module.parameters()), lr=lr, fused=fused, foreach=not fused)

        def step_optimizer() -> None:
            opt.step()
            opt.zero_grad()
    else:
        step_optimizer = MixedPrecisionAdamW(module, lr=lr).step
    loss_fn = _vocab_parallel_loss(tp_group)

    # the global batch, the same on every rank and for every case; replica d takes its share
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg["vocab_size"], (plan.global_batch, plan.seq_len + 1), generator=gen)
    share = plan.global_batch // plan.dp
    mine = data[replica * share : (replica + 1) * share].to(device)
    inputs, labels = mine[:, :-1], mine[:, 1:]
    micro = [
        (inputs[i : i + plan.micro_batch], labels[i : i + plan.micro_batch]) for i in range(0, share, plan.micro_batch)
    ]

    if plan.pp > 1:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B

        pipe = PipelineStage(module, stage, plan.pp, device, group=mesh["pp"].get_group())
        schedule = Schedule1F1B(pipe, n_microbatches=len(micro), loss_fn=loss_fn)

    def train_step() -> torch.Tensor | None:
        """One optimiser step; the mean loss of this replica's share where this rank computes it."""
        if plan.pp > 1:
            losses: list[torch.Tensor] = []
            if stage == 0:
                schedule.step(inputs)
            elif stage == plan.pp - 1:
                schedule.step(target=labels, losses=losses)
            else:
                schedule.step()
            step_optimizer()
            return torch.stack(losses).mean().detach() if losses else None
        total = torch.zeros((), device=device)
        for x, y in micro:
            loss = loss_fn(module(x), y) / len(micro)
            loss.backward()
            total += loss.detach()
        step_optimizer()
        return total

    def sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()

    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(warmup + steps):
        dist.barrier()
        sync()
        start = time.perf_counter()
        loss = train_step()
        sync()
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step ends when the slowest rank is done
        held = torch.tensor(
            [0.0 if loss is None else loss.item(), float(loss is not None)], dtype=torch.float64, device=device
        )
        dist.all_reduce(held)  # mean over the ranks that compute the loss (every replica equally often)
        losses.append(held[0].item() / held[1].item())
        if step >= warmup:
            times.append(elapsed.item())
    if profile is not None and device_type == "cuda":  # one more step, its kernels by time (rank 0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            train_step()
            sync()
        if rank == 0:
            profile.write_text(
                prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=80)
            )
    memory = torch.zeros(1, dtype=torch.float64, device=device)  # NCCL reduces device tensors only
    if device_type == "cuda":
        free, total = torch.cuda.mem_get_info()
        outside = total - free - torch.cuda.memory_reserved()
        memory[0] = torch.cuda.max_memory_reserved() + outside
    dist.all_reduce(memory, op=dist.ReduceOp.MAX)
    if rank:
        return {}
    return {
        "label": case["label"],
        "world": world,
        "device": torch.cuda.get_device_name(device) if device_type == "cuda" else "cpu",
        "torch": torch.__version__,
        "measured_step_time_s": statistics.median(times),
        "measured_step_times_s": times,
        "measured_peak_memory_bytes": memory.item() if device_type == "cuda" else None,
        "losses": losses,
    }


# --- report ---------------------------------------------------------------------------------------


def _ranks(values: list[float]) -> list[float]:
    """Ranks 1..n (ties share their mean rank)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson's on the ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 1.0


def report(cases: list[dict[str, Any]], results: dict[int, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The summary (errors, rank correlation, whether plan #1 is fastest) and its Markdown table."""
    rows = []
    for i, case in enumerate(cases):
        plan, got = case["plan"], results.get(i, {})
        row = {"case": i, "label": case["label"], "tp": plan["tp"], "pp": plan["pp"], "dp": plan["dp"]}
        row |= {"micro_batch": plan["micro_batch"], "recompute": plan["recompute"], "zero_stage": plan["zero_stage"]}
        row |= {"estimated_step_time_s": plan["step_time_s"], "estimated_memory_bytes": plan["memory_per_gpu_bytes"]}
        row |= {k: got.get(k) for k in ("measured_step_time_s", "measured_peak_memory_bytes", "error")}
        row |= {k: got[k] for k in ("measured_step_times_s", "losses", "device", "torch", "world") if k in got}
        if row["measured_step_time_s"]:
            row["step_error"] = plan["step_time_s"] / row["measured_step_time_s"] - 1
        if row["measured_peak_memory_bytes"]:
            row["memory_error"] = plan["memory_per_gpu_bytes"] / row["measured_peak_memory_bytes"] - 1
        rows.append(row)
    ran = [r for r in rows if r["measured_step_time_s"]]
    summary: dict[str, Any] = {"cases": rows}
    if ran:
        step_err = [abs(r["step_error"]) for r in ran]
        mem_err = [abs(r["memory_error"]) for r in ran if "memory_error" in r]
        fastest = min(r["measured_step_time_s"] for r in ran)
        summary |= {
            "step_error_mean": statistics.fmean(step_err),
            "step_error_max": max(step_err),
            "memory_error_mean": statistics.fmean(mem_err) if mem_err else None,
            "memory_error_max": max(mem_err) if mem_err else None,
            "spearman": spearman([r["estimated_step_time_s"] for r in ran], [r["measured_step_time_s"] for r in ran]),
            "first_plan_over_fastest": ran[0]["measured_step_time_s"] / fastest - 1 if ran[0]["case"] == 0 else None,
        }
    on = next((r for r in rows if "device" in r), {})
    lines = [
        f"# Plans trained vs estimated: {on.get('world', '?')} x {on.get('device', '?')}, torch {on.get('torch', '?')}",
        "",
        "Written by `python benchmarks/real_parallel.py report`; step time is the median over timed steps of the",
        "slowest rank, memory the allocator's peak reservation plus what the process holds outside it (busiest rank).",
        "",
        "| case | tp | pp | dp | mb | recompute | est. step s | meas. step s | error | est. GiB | meas. GiB | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        meas = f"{r['measured_step_time_s']:.3f}" if r["measured_step_time_s"] else r.get("error") or "not run"
        gib = r["measured_peak_memory_bytes"] / 2**30 if r["measured_peak_memory_bytes"] else None
        lines.append(
            f"| {r['label']} | {r['tp']} | {r['pp']} | {r['dp']} | {r['micro_batch']} | {r['recompute']} "
            f"| {r['estimated_step_time_s']:.3f} | {meas} | {r.get('step_error', float('nan')):+.1%} "
            f"| {r['estimated_memory_bytes'] / 2**30:.1f} | {'' if gib is None else f'{gib:.1f}'} "
            f"| {r.get('memory_error', float('nan')):+.1%} |"
        )
    if ran:
        first = summary["first_plan_over_fastest"]
        lines += [
            "",
            f"Step time |error| mean {summary['step_error_mean']:.1%}, max {summary['step_error_max']:.1%}; "
            f"Spearman rank correlation of estimated and measured order {summary['spearman']:+.2f}.",
            "Plan #1 did not run."
            if first is None
            else f"Plan #1 is {first:.1%} slower than the fastest case measured.",
        ]
        if summary["memory_error_mean"] is not None:
            lines.append(
                f"Peak memory |error| mean {summary['memory_error_mean']:.1%}, max {summary['memory_error_max']:.1%}."
            )
    return summary, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("plan", help="write the cases and their estimates")
    p.add_argument("--topology", default="live")
    p.add_argument("--gpu", default=None, help="GPU model where the topology source does not name it")
    p.add_argument("--model", default="llama-13b", choices=sorted(MODELS))
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--calibration", type=Path, default=None)
    p.add_argument("-o", "--out", type=Path, required=True)
    r = verbs.add_parser("run", help="train one case (under torchrun)")
    r.add_argument("cases", type=Path)
    r.add_argument("--case", type=int, nargs="+", required=True, help="case numbers, trained one after another")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--init-std", type=float, default=0.0, help="0: meta init (large models); else a full init")
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--steps", type=int, default=STEPS)
    r.add_argument("--warmup", type=int, default=WARMUP)
    r.add_argument("--profile", action="store_true", help="write case-I.profile.txt: one more step's kernels")
    r.add_argument("--dtensor-tp1", action="store_true", help="linears as DTensors even at TP 1: DTensor's host cost")
    r.add_argument("--compile", action="store_true", help="each block under torch.compile (torchtitan's compile)")
    s = verbs.add_parser("report", help="compare measured and estimated")
    s.add_argument("cases", type=Path)
    s.add_argument("results", type=Path, help="the folder `run` wrote case-I.json files into")
    s.add_argument("--out", type=Path, default=None, help="where results.json and report.md go (default: RESULTS)")
    args = parser.parse_args()

    if args.verb == "plan":
        cases = plan_cases(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(cases, indent=1) + "\n")
        for i, case in enumerate(cases):
            plan = case["plan"]
            print(f"{i}: {case['label']:40s} tp={plan['tp']} pp={plan['pp']} dp={plan['dp']} "
                  f"mb={plan['micro_batch']} {plan['recompute']:5s} est {plan['step_time_s']:.3f} s")  # fmt: skip
    elif args.verb == "run":
        import torch.distributed as dist

        if args.device == "cuda":
            import torch

            dist.init_process_group("nccl", device_id=torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))))
        else:
            dist.init_process_group("gloo")
        cases = json.loads(args.cases.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            for i in args.case:
                try:
                    profile = args.out / f"case-{i}.profile.txt" if args.profile else None
                    got = run_case(cases[i], device_type=args.device, init_std=args.init_std, lr=args.lr,
                                   steps=args.steps, warmup=args.warmup, profile=profile,
                                   dtensor_tp1=args.dtensor_tp1, compile_each_block=args.compile)  # fmt: skip
                except Exception as exc:  # recorded for the report (out of memory, above all), then raised
                    error = {
                        "label": cases[i]["label"],
                        "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                    }
                    (args.out / f"case-{i}.rank{dist.get_rank()}.error.json").write_text(json.dumps(error) + "\n")
                    raise
                if got:
                    (args.out / f"case-{i}.json").write_text(json.dumps(got, indent=1) + "\n")
                    print(
                        f"case {i} ({got['label']}): {got['measured_step_time_s']:.4f} s, loss {got['losses'][0]:.4f}"
                    )
            dist.barrier()  # no rank leaves while another still waits on it
        finally:
            dist.destroy_process_group()
        # Every case is done and written: leave without the interpreter's teardown. Under gloo on the CPU a rank now
        # and then aborted there after its last case ("terminate called without an active exception": 2 of 4
        # clean-clone CI runs on 2026-12-05, and once before), which failed a run whose results were all in.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    else:
        cases = json.loads(args.cases.read_text())
        results = {
            int(f.name.split(".")[0].split("-")[1]): json.loads(f.read_text()) for f in args.results.glob("case-*.json")
        }
        summary, table = report(cases, results)
        out = args.out or args.results
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "report.md").write_text(table)
        print(table)


if __name__ == "__main__":
    main()
