"""A plain Python snippet that builds the planned DeviceMesh."""

from __future__ import annotations

from shardplan.emit.remap import remap_note
from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def python_snippet(plan: Plan, topology: Topology) -> str:
    """Code to paste after `init_process_group`: with the row-major order it is `init_device_mesh`;
    otherwise a `DeviceMesh` over the planned rank tensor (rank g drives GPU g).

    >>> from shardplan import Training, estimate, load_topology
    >>> t = load_topology("dgx-h100")
    >>> torch_tp = Training(global_batch=8, seq_len=1024, tp_impl="dtensor", pipeline_runtime="torch", loss="fp32")
    >>> plan = estimate("gpt2", t, torch_tp, tp=2, pp=1, dp=4)
    >>> print(python_snippet(plan, t), end="")  # doctest: +ELLIPSIS
    # shardplan: gpt2 on dgx-h100, ...
    # planned for: micro-batches of 1 sequence, 2 per step on each data-parallel rank; ZeRO-0; recompute none
    # assumed: DTensor TP (parallelize_module); cross_entropy on an fp32 copy of the logits inside loss_parallel()
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cuda", (1, 4, 2), mesh_dim_names=("pp", "dp", "tp"))
    """
    names = ", ".join(f'"{n}"' for n in plan.mesh_dim_names)
    head = [
        f"# shardplan: {plan.model} on {plan.topology}, estimated {plan.step_time_s:.3f} s/step",
        # what the mesh alone does not carry, and the estimate assumed
        f"# planned for: micro-batches of {plan.micro_batch} sequence{'s' * (plan.micro_batch > 1)}, "
        f"{plan.num_micro_batches} per step on each data-parallel rank; "
        f"ZeRO-{plan.zero_stage}; recompute {plan.recompute}",
        f"# assumed: {'; '.join(_runtime(plan))}",
    ]
    flat = plan.gpu_of_rank()
    if flat == sorted(flat):
        return (
            "\n".join(
                [
                    *head,
                    "from torch.distributed.device_mesh import init_device_mesh",
                    f'mesh = init_device_mesh("cuda", {tuple(plan.mesh_shape)}, mesh_dim_names=({names}))',
                ]
            )
            + "\n"
        )
    return (
        "\n".join(
            [
                *head,
                *remap_note(plan, topology, "#"),
                "import torch",
                "from torch.distributed.device_mesh import DeviceMesh",
                f"layout = {plan.rank_layout}  # layout[p][d]...[t]: the GPU (= rank) of each mesh position",
                f'mesh = DeviceMesh("cuda", torch.tensor(layout), mesh_dim_names=({names}))',
            ]
        )
        + "\n"
    )


_LOSSES = {
    "megatron": "Megatron-LM's vocab-parallel cross-entropy",
    "fp32": "cross_entropy on an fp32 copy of the logits",
    "fused": "a fused cross-entropy over the bf16 logits (or torch's, compiled)",
}
_PIPELINES = {"megatron": "Megatron-LM's", "torch": "torch.distributed.pipelining's", "deepspeed": "DeepSpeed's"}


def _runtime(plan: Plan) -> list[str]:
    """What the estimate assumed of the code that uses the mesh: TP's layers, the loss (inside torch's loss_parallel
    under DTensor TP, as the memory counts it), the pipeline schedule, compilation."""
    dtensor = plan.tp_impl == "dtensor" and plan.tp > 1
    return [
        *(["DTensor TP (parallelize_module)" if dtensor else "Megatron-LM's tensor-parallel layers"] * (plan.tp > 1)),
        _LOSSES[plan.loss] + " inside loss_parallel()" * (dtensor and plan.loss != "megatron"),
        *([f"{_PIPELINES[plan.pipeline_runtime]} pipeline schedule"] * (plan.pp > 1)),
        *(["blocks under torch.compile"] * plan.compiled),
    ]
