"""nccl-tests-style timing under torchrun: each collective 20 times back to back between two CUDA
events (after 5 warm-up calls), mean time per call and bus bandwidth, 1 MiB to 1 GiB. A check on
`shardplan calibrate`'s per-call timing.

    torchrun --standalone --nproc_per_node 2 scripts/nccl_loop.py
"""

import os
from functools import partial

import torch
import torch.distributed as dist


def main() -> None:
    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", rank))
    g = dist.get_world_size()
    for size in (2**20, 2**22, 2**24, 2**26, 2**28, 2**30):
        numel = size // 2 // g * g
        buf = torch.randn(numel, device="cuda", dtype=torch.bfloat16)
        shard = torch.empty(numel // g, device="cuda", dtype=torch.bfloat16)
        ops = {
            "all_reduce": (partial(dist.all_reduce, buf), 2 * (g - 1) / g),
            "all_gather": (partial(dist.all_gather_into_tensor, buf, shard), (g - 1) / g),
            "reduce_scatter": (partial(dist.reduce_scatter_tensor, shard, buf), (g - 1) / g),
        }
        for op, (call, factor) in ops.items():
            for _ in range(5):
                call()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(20):
                call()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3 / 20
            if rank == 0:
                busbw = size * factor / seconds / 1e9
                print(f"{op:15s} {size / 2**20:6.0f} MiB {seconds * 1e6:9.1f} us busbw {busbw:6.1f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
