"""`Plan`: one placed parallel layout with its estimated step time and memory; versioned JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shardplan.errors import ShardplanError, describe_validation

PLAN_SCHEMA_VERSION = 1

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


class Plan(BaseModel):
    """A layout (degrees, micro-batch, rank placement) and what the cost model says about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Model name.")
    topology: str = Field(description="Topology name.")
    num_gpus: int
    tp: int = Field(ge=1, description="Tensor-parallel degree.")
    pp: int = Field(ge=1, description="Pipeline-parallel degree.")
    dp: int = Field(
        ge=1,
        description="Data-parallel degree: the mesh's dp axis. With expert parallelism the replicas that hold the "
        "same experts; the dense layers' data-parallel group is then dp x ep (Megatron's data-parallel size).",
    )
    cp: int = Field(1, ge=1, description="Context-parallel degree (1: not used).")
    ep: int = Field(
        1,
        ge=1,
        description="Expert-parallel degree (1: not used): GPUs that split the experts and swap tokens by all-to-all; "
        "they take different data, so the global batch splits over dp x ep.",
    )
    expert_tensor_parallel: bool = Field(
        True,
        description="With ep > 1 and tp > 1: experts split by TP; False: each expert whole on a GPU, the tokens "
        "swapped over the ep x tp GPUs (the frameworks' expert-parallel degree is then ep x tp).",
    )
    ep_comm_overlap: bool = Field(False, description="MoE all-to-alls assumed beside another micro-batch's compute.")
    ep_dispatcher: str = Field(
        "alltoall", description="MoE token dispatch: alltoall or deduplicated (per NVLink domain)."
    )
    expert_gemms: str = Field(
        "loop", description="A MoE block's local experts: loop (a GEMM each, Megatron) or grouped (torch._grouped_mm)."
    )
    recompute_modules: tuple[str, ...] = Field(
        (), description="Megatron's --recompute-modules beside `recompute` (moe_act, layernorm, mla_up_proj)."
    )
    mtp_layers: int = Field(0, ge=0, description="Multi-token prediction layers on the last stage (--mtp-num-layers).")
    micro_batch: int = Field(ge=1, description="Sequences per micro-batch per data-parallel replica.")
    num_micro_batches: int = Field(ge=1, description="Micro-batches per optimiser step per replica.")
    virtual_stages: int = Field(1, ge=1, description="Interleaved pipeline chunks per GPU.")
    zero_stage: int = Field(0, description="ZeRO / FSDP stage.")
    recompute: str = Field("none", description="Activation recomputation.")
    dtype: str = Field("bf16", description="Compute precision: bf16, or fp8 (the blocks' linears in FP8).")
    fp8_recipe: str = Field("tensorwise", description="FP8 scaling (with dtype fp8): tensorwise, current or rowwise.")
    fp8_weight_cache: bool = Field(
        False,
        description="With dtype fp8: the linears' weight casts made once per step and kept (Transformer Engine under "
        "Megatron-Core), not made every micro-batch.",
    )
    fp8_all_gather: bool = Field(
        False,
        description="With dtype fp8 and ZeRO-3 under FSDP2: the FP8 linears' weights gathered in float8 (torchao's "
        "enable_fsdp_float8_all_gather).",
    )
    sequence_parallel: bool = True
    compiled: bool = Field(
        False, description="Blocks under torch.compile (and, as torchtitan runs them, the loss): --training.compile."
    )
    loss: str = Field(
        "fp32",
        description="The cross-entropy the memory assumed: megatron (Megatron-LM's vocab-parallel one), fp32 (torch's "
        "on an fp32 copy of the logits) or fused (one kernel over the bf16 logits, or torch's loss compiled); under "
        "DTensor TP (torchtitan's) the last two inside torch's loss_parallel.",
    )
    tp_impl: str = Field(
        "megatron", description="Tensor parallelism assumed: megatron (Megatron-LM's layers) or dtensor (torch's)."
    )
    pipeline_runtime: str = Field(
        "megatron",
        description="What runs the pipeline schedule assumed: megatron, torch (torch.distributed.pipelining) or "
        "deepspeed.",
    )
    cp_comm: str = Field("p2p", description="With cp > 1, how keys and values move: p2p (a ring) or all_gather.")
    tp_comm_overlap: bool = Field(False, description="TP collectives assumed hidden under the GEMMs they feed.")
    overlap_param_gather: bool = Field(False, description="ZeRO-1/2 weight all-gather assumed under the next forward.")
    global_batch: int
    seq_len: int
    mesh_dim_names: tuple[str, ...] = ("pp", "dp", "tp")
    mesh_shape: tuple[int, ...]
    rank_layout: list[list[list[int]]] | list[list[list[list[int]]]] | list[list[list[list[list[int]]]]] = Field(
        description="rank_layout[p][d][t]: the GPU of pipeline stage p, replica d, tensor rank t; with context "
        "parallelism rank_layout[p][d][c][t], c the rank in the context-parallel group; with expert parallelism "
        "rank_layout[p][d][e][t] (or [p][d][c][e][t]), e the rank in the expert-parallel group."
    )
    layers_per_stage: tuple[int, ...]
    step_time_s: float
    tokens_per_s: float
    mfu: float = Field(description="Model FLOPs utilisation: model FLOPs per second / (GPUs x dense bf16 peak).")
    memory_per_gpu_bytes: float = Field(
        description="The largest over GPUs: the peak a run reports (max_memory_reserved and what the process "
        "holds outside the allocator), the caching allocator's cache included."
    )
    memory_breakdown: dict[str, float] = Field(description="Bytes per part on the GPU with the most memory.")
    fits: bool = Field(
        description="memory_per_gpu_bytes, less the allocator cache (given back before out of memory), fits the "
        "smallest GPU's memory."
    )
    breakdown: dict[str, float] = Field(description="Seconds per part of the step.")
    comm_time_by_link: dict[str, float] = Field(
        description="Communication seconds per link class (nvlink, pcie, net), hidden or not, of one GPU of the "
        "pipeline stage that sets the pace."
    )
    default_step_time_s: float | None = Field(None, description="Same degrees in row-major rank order.")
    optimal: bool = Field(
        False,
        description="Proved, as far as the search proves anything: no unexplored candidate's lower bound beats this "
        "step, and CP-SAT proved its placement optimal for its own objective (each pair's link cost weighted by its "
        "axis's traffic, solve/placement.py), a proxy that the cost model then scores. The cost model does not "
        "score every permutation, so on irregular NVLink meshes another placement can be a few percent faster.",
    )
    gap: float | None = Field(None, description="Relative gap of those proofs (0: optimal).")

    def gpu_of_rank(self) -> list[int]:
        """The GPUs of `rank_layout` flat, in row-major mesh order: the GPU each rank of a row-major
        mesh (torchrun's default order) must drive."""
        flat: list[Any] = self.rank_layout
        for _ in self.mesh_shape[1:]:
            flat = [x for inner in flat for x in inner]
        return flat

    def to_json(self) -> str:
        """One JSON document with a schema version."""
        return json.dumps({"schema_version": PLAN_SCHEMA_VERSION, **self.model_dump(mode="json")}, indent=2)

    def device_mesh(self, device_type: str = "cuda", *, rank_of_gpu: Sequence[int] | None = None) -> DeviceMesh:
        """The plan as a `torch.distributed.DeviceMesh` (see `shardplan.emit.device_mesh`); every
        rank calls it after `init_process_group`."""
        from shardplan.emit.device_mesh import device_mesh

        return device_mesh(self, device_type, rank_of_gpu=rank_of_gpu)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Read what `to_json` wrote; anything else is a one-line `ShardplanError`."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShardplanError(f"plan: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        version = data.pop("schema_version", None) if isinstance(data, dict) else None
        if version != PLAN_SCHEMA_VERSION:
            raise ShardplanError(f"plan schema_version {version!r} is not {PLAN_SCHEMA_VERSION}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ShardplanError(f"plan: {describe_validation(err)}") from None
