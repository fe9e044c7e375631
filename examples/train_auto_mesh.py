"""A few training steps of a small Llama-style model on the mesh shardplan plans, with tensor
parallelism (`parallelize_module`) and FSDP2 (`fully_shard`) on the planned axes.

CPU (gloo), 8 processes, a declared topology with NVLink bridge pairs (TP pinned to 2 to use it):
    torchrun --nproc-per-node 8 examples/train_auto_mesh.py --tp 2 \
        --topology tests/data/machines/a100-pcie-bridged-crossed.yaml
GPUs (NCCL), the machine's own topology read through NVML:
    torchrun --nproc-per-node 8 examples/train_auto_mesh.py --topology live

Every rank prints nothing but rank 0, which prints the plan, the loss per step and a summary line.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from shardplan import Training, auto_device_mesh


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.w1, self.w3 = nn.Linear(dim, 4 * dim, bias=False), nn.Linear(dim, 4 * dim, bias=False)
        self.w2 = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.norm1(x)
        # -1: heads on this rank (a tensor-parallel rank holds num_heads / tp of them)
        q, k, v = (
            w(h).view(b, s, -1, x.shape[-1] // self.num_heads).transpose(1, 2) for w in (self.wq, self.wk, self.wv)
        )
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, -1)
        x = x + self.wo(a)
        h = self.norm2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class TinyLlama(nn.Module):
    def __init__(self, vocab: int = 512, dim: int = 128, layers: int = 4, heads: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topology", default="live")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tp", type=int, default=None, help="pin the tensor-parallel degree")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and args.topology == "live"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = "cuda" if cuda else "cpu"
    rank = dist.get_rank()

    with torch.device("meta"):
        spec_source = TinyLlama()
    train = Training(global_batch=16, seq_len=64, loss="fp32")  # cross_entropy(logits.float()) below
    # pipeline parallelism is left out of this example: ask for pp = 1
    pins = {"pp": (1,), **({"tp": (args.tp,)} if args.tp else {})}
    mesh, plan = auto_device_mesh(spec_source, train, device_type=device, topology=args.topology, **pins)
    if rank == 0:
        print(f"plan: tp={plan.tp} pp={plan.pp} dp={plan.dp} micro-batch {plan.micro_batch}, layout {plan.rank_layout}")

    torch.manual_seed(0)  # same initial weights on every rank
    model = TinyLlama().to(device)
    if plan.tp > 1:
        for block in model.layers:
            parallelize_module(
                block,
                mesh["tp"],
                {
                    **{w: ColwiseParallel() for w in ("wq", "wk", "wv", "w1", "w3")},
                    **{w: RowwiseParallel() for w in ("wo", "w2")},
                },
            )
    if plan.dp > 1:
        for block in model.layers:
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)

    # each replica trains on its own slice of one fixed batch (a memorisation task: loss must fall)
    replica = mesh["dp"].get_local_rank()
    data = torch.randint(0, 512, (plan.global_batch, plan.seq_len + 1), generator=torch.Generator().manual_seed(1))
    mine = data.view(plan.dp, -1, plan.seq_len + 1)[replica].to(device)
    losses = []
    for _ in range(args.steps):
        optim.zero_grad()
        for micro in mine.split(plan.micro_batch):
            logits = model(micro[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), micro[:, 1:].flatten()) / plan.num_micro_batches
            loss.backward()
        optim.step()
        total = loss.detach().clone() * plan.num_micro_batches
        dist.all_reduce(total)
        losses.append(total.item() / dist.get_world_size())
        if rank == 0:
            print(f"step {len(losses)} loss {losses[-1]:.4f}", flush=True)
    ok = all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    if rank == 0:
        print(f"{'OK' if ok else 'FAILED'}: loss {losses[0]:.4f} -> {losses[-1]:.4f} on {dist.get_world_size()} ranks")
    dist.destroy_process_group()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
