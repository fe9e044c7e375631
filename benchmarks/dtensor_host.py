"""Host time per transformer block with DTensor tensor parallelism (torchtitan's way), on one GPU.

`shardplan calibrate` times the host's eager dispatch per block plain and under FSDP2; this times the
same tiny Llama with each block's linears under `parallelize_module` (column-wise Q, K, V, W1, W3;
row-wise O, W2) over a one-rank mesh, three times, and calibrate's own figures once after. Prints
JSON (the first argument, if given, is the output file). The cost model does not use it yet: which TP
implementation a run uses (DTensor, or Megatron's plain tensors) is not a Training setting.

    python benchmarks/dtensor_host.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from shardplan.calibrate import _forward_backward_s, _Timer, _tiny_llama, measure_host


def main() -> None:
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    mesh = DeviceMesh.from_group(dist.group.WORLD, "cuda")
    wall = _Timer(device, warmup=3, repeats=30, host_clock=True)
    runs = []
    for _ in range(3):
        per_blocks = {}
        for blocks in (1, 3):
            model = _tiny_llama(blocks, device)
            plan = {name: ColwiseParallel() for name in ("wq", "wk", "wv", "w1", "w3")}
            plan |= {name: RowwiseParallel() for name in ("wo", "w2")}
            for block in model.blocks:
                parallelize_module(block, mesh, plan)
            per_blocks[blocks] = _forward_backward_s(wall, model, device)
        runs.append(
            {
                "dtensor_tp_forward_s_per_block": (per_blocks[3][0] - per_blocks[1][0]) / 2,
                "dtensor_tp_backward_s_per_block": (per_blocks[3][1] - per_blocks[1][1]) / 2,
            }
        )
    dist.destroy_process_group()
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "runs": runs}
    result["calibrate_host"] = measure_host(device)
    text = json.dumps(result, indent=1)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
