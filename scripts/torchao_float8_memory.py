"""Peak memory of torchtitan-style training steps with torchao's Float8 linears, against the same steps in bf16, on
one GPU: what torchao's own float8 training (not the emulation in shardplan.llama) holds, for the torchtitan rows that
ran it (../shared torchtitan_benchmarks.csv WF-8node, B4-1, B5-1, B5-2).

The model is h100_torchtitan_step_memory.py's Llama 3 8B (32 blocks, micro-batch 2 x 8,192 tokens), built in
torchtitan's order (torchtitan/train.py and models/llama3/infra/parallelize.py): float8 conversion of every block
linear on the meta device (torchao `convert_to_float8_training`, tensorwise scaling, the output layer left out, FSDP
float8 all-gather on), then activation checkpointing (op-level SAC with torchtitan's save list, or full), then
per-block torch.compile, then FSDP2 over `dp` ranks of which this process is rank 0 (the others exist in a fake
process group: their collectives do nothing, rank 0's allocations are real). The loss is compiled with the blocks
(torchtitan from 2025), then clip_grad_norm_, AdamW (foreach) and, with float8, torchao's
`precompute_float8_dynamic_scale_for_fsdp`. After 3 steps the peak statistics are reset and 3 more run.

    python scripts/torchao_float8_memory.py [CASE ...] > results.json     # needs torchao; an 80 GB GPU
"""

import json
import os
import subprocess
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from h100_eager_vs_compiled_sac import B, S
from h100_torchtitan_step_memory import VOCAB, Model
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

# name -> (activation checkpointing, float8, FSDP degree)
CASES = {
    "sac-bf16-dp64": ("op", False, 64),
    "sac-float8-dp64": ("op", True, 64),  # WF-8node: Llama 3.1 8B, FSDP 64, torchtitan's default op-level SAC
    "full-bf16-dp8": ("full", False, 8),
    "full-float8-dp8": ("full", True, 8),  # B4-1 / B5: full checkpointing with float8 (here without TP)
}
# torchtitan's op-level SAC save list (models/llama3/infra/parallelize.py `_op_sac_save_list`, 2025): torchao's
# float8 linears reach aten.mm with float8 tensors, and the amax (aten.max) of each cast is kept
SAVE = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops._c10d_functional.reduce_scatter_tensor.default,
    torch.ops.aten.max.default,
}


def policy_fn():
    """torchtitan's op-level SAC: every op of SAVE kept, but every second mm recomputed."""
    count = Counter()

    def policy(ctx, func, *args, **kwargs):
        key = "recompute" if ctx.is_recompute else "forward"
        if func == torch.ops.aten.mm.default:
            count[key] += 1
        keep = func in SAVE and not (func == torch.ops.aten.mm.default and count[key] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def one(ac: str, float8: bool, dp: int) -> dict:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore

    torch.manual_seed(0)
    torch.distributed.init_process_group("fake", rank=0, world_size=dp, store=FakeStore())
    mesh = init_device_mesh("cuda", (dp,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    with torch.device("meta"):
        model = Model(32)
    if float8:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        config = Float8LinearConfig(enable_fsdp_float8_all_gather=True)
        convert_to_float8_training(model, config=config, module_filter_fn=lambda mod, fqn: fqn != "output")
    n = len(model.layers)
    for i, block in list(model.layers.items()):
        block = (
            checkpoint_wrapper(block, context_fn=policy_fn, preserve_rng_state=False)
            if ac == "op"
            else (checkpoint_wrapper(block, preserve_rng_state=False))
        )
        block = torch.compile(block, fullgraph=True)
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=int(i) < n - 1)
        model.layers.register_module(i, block)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=None)  # as h100_torchtitan_step_memory.py
    model.to_empty(device="cuda")
    with torch.no_grad():
        for p in model.parameters():
            p.to_local().normal_(0.0, 0.02)

    @torch.compile
    def loss_fn(pred, labels):
        return F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))

    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    tokens = torch.randint(0, VOCAB, (B, S), device="cuda")
    labels = torch.randint(0, VOCAB, (B, S), device="cuda")
    out = {"ac": ac, "float8": float8, "dp": dp, "blocks": n, "micro_batch": B, "seq": S}
    out["params"] = sum(p.numel() for p in model.parameters())
    for step in range(6):
        if step == 3:
            torch.cuda.reset_peak_memory_stats()
        opt.zero_grad()
        loss = loss_fn(model(tokens), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        if float8:
            from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

            precompute_float8_dynamic_scale_for_fsdp(model)
        torch.cuda.synchronize()
    stats = torch.cuda.memory_stats()
    out |= {
        "max_reserved": stats["reserved_bytes.all.peak"],
        "max_allocated": stats["allocated_bytes.all.peak"],
        "num_alloc_retries": stats["num_alloc_retries"],
    }
    torch.distributed.destroy_process_group()
    return out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":  # one case, in a fresh process
        print(json.dumps(one(*CASES[sys.argv[2]])))
        return
    names = sys.argv[1:] or list(CASES)
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")  # what torchtitan's launcher sets
    runs = []
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--one", name], env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-4000:]}", file=sys.stderr, flush=True)
            continue
        runs.append({"case": name, **json.loads(done.stdout.strip().splitlines()[-1])})
        r = runs[-1]
        print(
            f"{name}: reserved {r['max_reserved'] / 2**30:.2f} GiB, allocated {r['max_allocated'] / 2**30:.2f} GiB",
            file=sys.stderr,
            flush=True,
        )
    import torchao

    source = f"scripts/torchao_float8_memory.py, torch {torch.__version__}, torchao {torchao.__version__}"
    print(json.dumps({"_source": f"{source}, {torch.cuda.get_device_name()}", "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
