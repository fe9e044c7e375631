"""Peak memory of torchtitan-style training steps on one GPU, for the memory model (issue 5).

The model is Llama 3 8B with N blocks (embedding, N blocks, RMSNorm, output over the 128,256-token
vocabulary), built as torchtitan built it in Dec 2024 (blocks from h100_eager_vs_compiled_sac.py):
op-level SAC on each block, then per-block torch.compile (or not), then FSDP2 on each block and on
the root with bf16 parameters and fp32 reduction, initialised on the meta device. FSDP runs over `dp`
ranks of which this process is rank 0; with dp > 1 the other ranks exist only in a fake process group
(torch.testing's FakeStore: collectives do nothing), so rank 0's own allocations are the real ones of
a dp-way run. The loss is cross_entropy(pred.flatten(0, 1).float(), labels) with `del pred` before
backward, then clip_grad_norm_ and AdamW (foreach), as torchtitan's train.py. Micro-batch 2 x 8,192
tokens. After 3 steps the peak statistics are reset and 3 more run; the peaks printed are over those
3, as torchtitan logs `max_reserved`. Each configuration runs in its own process. TRACE_RESERVE=1
records the allocator's history over the first two steps and reports each growth of the reserve.

    python scripts/h100_torchtitan_step_memory.py [MIN_BLOCKS] > results.json   # on a GPU with 80+ GiB
"""

import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from h100_eager_vs_compiled_sac import FFN, HEADS, KV, B, Block, H, RMSNorm, S, policy_fn
from torch import nn

VOCAB = 128256
EXPANDABLE = "expandable_segments:True"  # what torchtitan's launcher sets
# blocks, compiled, allocator setting, sharding, optimizer, DP degree. Sharding "fsdp2" is FSDP2 over
# `dp` ranks, of which this process is rank 0 (the others exist only in a fake process group);
# "none" is bf16 parameters whose gradients are dropped as they are produced.
CONFIGS = [
    (2, False, EXPANDABLE, "none", "none", 1),
    (4, False, EXPANDABLE, "none", "none", 1),
    (4, True, EXPANDABLE, "none", "none", 1),
    (4, False, "", "none", "none", 1),
    (4, False, EXPANDABLE, "fsdp2", "foreach", 1),
    (4, False, EXPANDABLE, "fsdp2", "none", 1),
    # torchtitan's Llama 3.1 8B runs of Dec 2024 (../shared torchtitan_benchmarks.csv B3-1, B3-2, B1-2)
    (32, False, EXPANDABLE, "fsdp2", "foreach", 128),
    (32, True, EXPANDABLE, "fsdp2", "foreach", 128),
    (32, True, EXPANDABLE, "fsdp2", "foreach", 8),
    (32, False, "", "fsdp2", "foreach", 128),
    (32, True, "", "fsdp2", "foreach", 128),
    (32, True, "", "fsdp2", "foreach", 8),
]


class Model(nn.Module):
    """Embedding, `n` blocks (`block()` each; Llama 3 8B's by default, of width `h` with `heads` heads), norm, head."""

    def __init__(self, n, block=Block, h=H, heads=HEADS):
        super().__init__()
        d = h // heads
        self.tok_embeddings = nn.Embedding(VOCAB, h)
        self.layers = nn.ModuleDict({str(i): block() for i in range(n)})
        self.norm = RMSNorm(h)
        self.output = nn.Linear(h, VOCAB, bias=False)
        inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2).float() / d))
        angles = torch.outer(torch.arange(S).float(), inv)
        self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles), persistent=False)

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, self.freqs_cis)
        return self.output(self.norm(h))


def _reserve_growth(snapshot: dict, reserved: int, allocated: int) -> list[dict]:
    """Each time the reserve grew (a new segment, or pages mapped under expandable segments): by how
    much, what was allocated then, and where the allocation that needed it came from."""
    events = snapshot["device_traces"][0]
    grew = []
    for i, ev in enumerate(events):
        size, action = ev["size"], ev["action"]
        if action in ("segment_alloc", "segment_map"):
            reserved += size
            nxt = next((e for e in events[i + 1 :] if e["action"] == "alloc"), ev)
            where = nxt.get("frames", [])
            frames = [f"{f['filename'].split('site-packages/')[-1]}:{f['line']} {f['name']}" for f in where]
            grew.append(
                {
                    "grew_gib": size / 2**30,
                    "reserved_gib": reserved / 2**30,
                    "allocated_gib": allocated / 2**30,
                    "request_gib": nxt["size"] / 2**30,
                    "frames": frames[:3] + [f for f in frames[3:] if "torch/" not in f][:3],
                }
            )
        elif action in ("segment_free", "segment_unmap"):
            reserved -= size
        elif action == "alloc":
            allocated += size
        elif action == "free_completed":
            allocated -= size
    return grew


def one(n: int, compiled: bool, sharding: str, optimizer: str, dp: int) -> dict:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    torch.manual_seed(0)
    if sharding == "fsdp2":
        if dp > 1:  # rank 0 of `dp` ranks whose collectives do nothing: its own allocations are real
            from torch.testing._internal.distributed.fake_pg import FakeStore

            torch.distributed.init_process_group("fake", rank=0, world_size=dp, store=FakeStore())
        else:
            os.environ.update(MASTER_ADDR="localhost", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1")
            torch.distributed.init_process_group("nccl")
        mesh = init_device_mesh("cuda", (dp,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    with torch.device("meta" if sharding == "fsdp2" else "cuda"):  # torchtitan initialises on meta
        model = Model(n)
    if sharding == "none":
        model.to(torch.bfloat16)
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
    for i, block in list(model.layers.items()):
        block = checkpoint_wrapper(block, context_fn=policy_fn, preserve_rng_state=False)
        if compiled:
            block = torch.compile(block, fullgraph=True)
        if sharding == "fsdp2":  # torchtitan: the last block is not resharded after forward
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=int(i) < n - 1)
        model.layers.register_module(i, block)
    if sharding == "fsdp2":
        # torchtitan passes True for the root, but torch of Dec 2024 kept the root gathered from forward
        # to backward whatever was passed (FSDPState._lazy_init); torch 2.11 does so for None
        fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=None)
        model.to_empty(device="cuda")  # values do not matter to memory; a fake all-gather leaves garbage
        with torch.no_grad():
            for p in model.parameters():
                p.to_local().normal_(0.0, 0.02)
    kw = {"lr": 8e-4, "betas": (0.9, 0.95), "weight_decay": 0.1}
    opt = torch.optim.AdamW(model.parameters(), **kw, fused=optimizer == "fused", foreach=optimizer == "foreach")
    tokens = torch.randint(0, VOCAB, (B, S), device="cuda")
    labels = torch.randint(0, VOCAB, (B, S), device="cuda")
    out = {
        "blocks": n,
        "compiled": compiled,
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "sharding": sharding,
        "optimizer": optimizer,
        "dp": dp,
        "params": sum(p.numel() for p in model.parameters()),
        "reserved_after_step": [],
    }
    torch.cuda.reset_peak_memory_stats()
    trace = os.environ.get("TRACE_RESERVE") == "1"
    if trace:
        start = (torch.cuda.memory_reserved(), torch.cuda.memory_allocated())
        torch.cuda.memory._record_memory_history(stacks="python", max_entries=2_000_000)
    for step in range(6):
        if trace and step == 2:
            out["reserve_growth"] = _reserve_growth(torch.cuda.memory._snapshot(), *start)
            torch.cuda.memory._record_memory_history(enabled=None)
        if step == 3:
            torch.cuda.reset_peak_memory_stats()
        opt.zero_grad()
        pred = model(tokens)
        loss = F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))
        del pred
        loss.backward()
        if optimizer != "none":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
        torch.cuda.synchronize()
        out["reserved_after_step"].append(torch.cuda.memory_reserved())
        if step == 0:
            out["first_step_max_reserved"] = torch.cuda.max_memory_reserved()
            out["first_step_max_allocated"] = torch.cuda.max_memory_allocated()
    stats = torch.cuda.memory_stats()
    out |= {
        "max_reserved": stats["reserved_bytes.all.peak"],
        "max_active": stats["active_bytes.all.peak"],
        "max_allocated": stats["allocated_bytes.all.peak"],
        "num_alloc_retries": stats["num_alloc_retries"],
    }
    if sharding == "fsdp2":
        torch.distributed.destroy_process_group()
    return out


def main():
    if len(sys.argv) == 6:  # one configuration, in a fresh process
        print(json.dumps(one(int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        return
    configs = CONFIGS if len(sys.argv) == 1 else [c for c in CONFIGS if c[0] >= int(sys.argv[1])]
    runs = []
    for n, compiled, conf, sharding, optimizer, dp in configs:
        env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF=conf)
        cmd = [sys.executable, __file__, str(n), "1" if compiled else "0", sharding, optimizer, str(dp)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(
            f"blocks={n} compiled={compiled} conf={conf or 'default'} {sharding} dp={dp} optimizer={optimizer}: "
            f"reserved {r['max_reserved'] / 2**30:.2f} GiB, allocated {r['max_allocated'] / 2**30:.2f} "
            f"(first step {r['first_step_max_reserved'] / 2**30:.2f}, {r['first_step_max_allocated'] / 2**30:.2f})",
            file=sys.stderr,
            flush=True,
        )
    shape = {"hidden": H, "heads": HEADS, "kv_heads": KV, "ffn": FFN, "vocab": VOCAB, "micro_batch": B, "seq": S}
    source = f"scripts/h100_torchtitan_step_memory.py, torch {torch.__version__}, {torch.cuda.get_device_name()}"
    print(json.dumps({"_source": source, "shape": shape, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
