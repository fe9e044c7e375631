"""DeepSpeed config JSON (https://www.deepspeed.ai/docs/config-json/)."""

from __future__ import annotations

import json

from shardplan.emit.remap import remap_note
from shardplan.errors import PlanError
from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def deepspeed_json(plan: Plan, topology: Topology) -> str:
    """A DeepSpeed config: batch sizes, ZeRO stage, bf16, activation checkpointing. DeepSpeed takes
    tensor and pipeline degrees from the model code (Megatron-DeepSpeed, PipelineModule), so they
    travel in the `shardplan` block for that code to read, with the loss the plan's memory assumed and whether it
    assumed compiled blocks; DeepSpeed ignores unknown top-level keys
    only in some versions, so remove the block where yours rejects it. DeepSpeed's PipelineEngine
    sends each TP rank's whole activation (its sequence shard under Megatron-DeepSpeed's --sequence-parallel),
    runs one model chunk per GPU and refuses ZeRO-2 and ZeRO-3: plan such runs with
    `Training(pipeline_runtime="deepspeed")`; a pipelined plan it cannot run is a one-line error.

    >>> from shardplan import Training, estimate, load_topology
    >>> t = load_topology("dgx-h100")
    >>> cfg = json.loads(deepspeed_json(estimate("llama3-8b", t, Training(global_batch=32, seq_len=4096, zero_stage=3),
    ...                                          tp=1, pp=1, dp=8), t))
    >>> cfg["train_batch_size"], cfg["gradient_accumulation_steps"], cfg["zero_optimization"]["stage"]
    (32, 4, 3)
    """
    if plan.cp > 1:
        raise PlanError("DeepSpeed has no ring-attention context parallelism: emit the plan for megatron or torchtitan")
    if plan.recompute_modules:
        raise PlanError("DeepSpeed has no per-module recompute (Megatron's --recompute-modules): emit for megatron")
    if plan.mtp_layers:
        raise PlanError("DeepSpeed has no multi-token prediction (Megatron's --mtp-num-layers): emit for megatron")
    if plan.ep > 1:
        raise PlanError(
            "DeepSpeed sets expert parallelism in the model code (deepspeed.moe.layer.MoE(ep_size=...)), not in its "
            "config: emit the plan for megatron or torchtitan"
        )
    if plan.pp > 1 and (plan.zero_stage > 1 or plan.virtual_stages > 1):
        raise PlanError(
            "DeepSpeed's PipelineEngine runs ZeRO-0 or ZeRO-1 and one model chunk per GPU: "
            "plan again with --pipeline-runtime deepspeed"
        )
    config = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.num_micro_batches,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": plan.zero_stage},
        "activation_checkpointing": {"partition_activations": plan.recompute != "none" and plan.tp > 1},
        "shardplan": {
            "tensor_parallel": plan.tp,
            "pipeline_parallel": plan.pp,
            "data_parallel": plan.dp,
            "recompute": plan.recompute,
            "loss": plan.loss,
            "compiled": plan.compiled,  # blocks under torch.compile: the model code's engine.compile()
            "layers_per_stage": list(plan.layers_per_stage),
            "gpu_of_rank_note": remap_note(plan, topology, "") or None,
            "estimated_step_time_s": plan.step_time_s,
        },
    }
    return json.dumps(config, indent=2) + "\n"
