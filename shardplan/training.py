"""`Training`: what one optimiser step processes and how (precision, recompute, ZeRO stage)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shardplan.errors import TrainingError, describe_validation
from shardplan.model.schema import Recompute


class Training(BaseModel):
    """Settings of one optimiser step.

    `dtype="bf16"` is the usual mixed precision: fp32 master weights, fp32 gradients and fp32 Adam
    moments, bf16 compute with bf16 copies of the weights alive through forward and backward (under
    ZeRO-3, FSDP's layout: the fp32 shard is the master, bf16 copies exist only while gathered).

    >>> Training(global_batch=512, seq_len=4096).tokens_per_step
    2097152
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    global_batch: int = Field(gt=0, description="Sequences per optimiser step, over all replicas.")
    seq_len: int = Field(gt=0, description="Tokens per sequence.")
    dtype: Literal["bf16", "fp16", "fp32", "fp8"] = Field(
        "bf16",
        description="Compute precision (mixed precision). fp8: bf16 mixed precision with the transformer blocks' "
        "linear layers in FP8 (Transformer Engine, torchao float8): their inputs, weights and output gradients cast "
        "to e4m3 each micro-batch, forward GEMMs with fast accumulation; attention, norms, the output head and "
        "communication stay bf16.",
    )
    fp8_recipe: Literal["tensorwise", "current", "rowwise"] = Field(
        "tensorwise",
        description="FP8 scaling with dtype='fp8': tensorwise, one scale per tensor set in the cast's own pass "
        "(Transformer Engine's delayed scaling, from past amaxes, Megatron's default; torchao's tensorwise under "
        "torch.compile, its amax fused into the kernel that produces the tensor); current, one scale per tensor from "
        "that tensor's amax, which Transformer Engine's current scaling reads in a kernel of its own before the cast "
        "(Megatron's --fp8-recipe tensorwise); rowwise, one per row (torchao's rowwise; slower GEMMs).",
    )
    recompute: Recompute = Field(
        "none",
        description="Activation recomputation: none; selective (Megatron: the attention core); selective-op "
        "(torchtitan's per-op policy: every other matmul's output kept); selective-layer (torchtitan's per-layer "
        "policy: every second block in full); full (only each block's input kept).",
    )
    recompute_modules: tuple[Literal["moe_act", "layernorm", "mla_up_proj"], ...] = Field(
        (),
        description="Megatron-Core's selective recompute of modules beside `recompute` none or selective "
        "(--recompute-modules): moe_act, the routed experts' activation (its output dropped and recomputed from its "
        "input in backward); layernorm, the two norms of each block (their outputs recomputed from the residual "
        "stream they read); mla_up_proj, multi-head latent attention's up-projections (queries, keys and values "
        "recomputed from the latents).",
    )
    mtp_layers: int = Field(
        0,
        ge=0,
        description="Multi-token prediction layers (Megatron-Core's --mtp-num-layers; DeepSeek-V3, arXiv:2412.19437 "
        "Sec. 2.2): on the last pipeline stage, each runs one more block on the hidden state and the next token's "
        "embedding, and the output head and a loss once more; that stage also holds the embedding.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0, description="ZeRO / FSDP stage: 1 shards optimizer states, 2 also gradients, 3 also weights."
    )
    fsdp_version: Literal[1, 2] = Field(
        2,
        description="How ZeRO-3 shards: 2 = per parameter (FSDP2's fully_shard, torchtitan), which each micro-batch "
        "copies the gathered weights out of the all-gather buffer (forward and again in backward) and the "
        "gradients into the reduce-scatter buffer (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py: "
        "split_with_sizes_copy, chunk_cat), and whose hooks add to the host's time per block; 1 = flat "
        "parameters gathered and reduced in place (FSDP1, DeepSpeed ZeRO-3). Under Megatron's runtime ZeRO-3 is "
        "Megatron-FSDP, which gathers in place too, whatever this says.",
    )
    tp_impl: Literal["megatron", "dtensor"] = Field(
        "megatron",
        description="Tensor parallelism as Megatron-LM's layers on plain tensors, or as DTensors (PyTorch's "
        "parallelize_module, torchtitan), whose dispatch adds to the host's time per block in eager mode "
        "(measured by `shardplan calibrate`).",
    )
    sequence_parallel: bool = Field(True, description="Megatron sequence parallelism with TP > 1.")
    attention: Literal["flash", "triton", "unfused"] = Field(
        "flash",
        description="flash: fused attention at the rate of SDPA's own pick of kernel (FlashAttention, cuDNN), no "
        "s x s matrix in memory; triton: the FlashAttention kernel written in Triton in 2022 (flash_attn_triton.py, "
        "llm-foundry's attn_impl='triton'), slower than FlashAttention-2 by the FlashAttention-2 paper's factors; "
        "unfused: Megatron's core attention before FlashAttention (2022): batched QK^T and AV over the whole s x s "
        "square, softmax (and dropout where the model has it) on that matrix in memory.",
    )
    loss: Literal["megatron", "fp32", "fused"] = Field(
        "megatron",
        description="megatron: Megatron-LM's vocab-parallel cross-entropy, its default: an fp32 copy of the logits "
        "made into the softmax in place and kept for backward, which makes it the gradient in place (6 B per logit "
        "at the peak; --cross-entropy-loss-fusion's native implementation, the same steps compiled, holds 10, which "
        "fp32 covers); fp32: "
        "cross_entropy(logits.float()) as torchtitan and Hugging Face write it, run eagerly (an fp32 copy of the "
        "logits and an fp32 log-softmax kept for backward: 14 B per logit, the allocator's cache included); fused: "
        "one kernel over the bf16 logits that keeps only a log-sum-exp per token, writing their gradient in place "
        "(4 B per logit: flash-attn's CrossEntropyLoss, llm-foundry's default loss_fn: fused_crossentropy; "
        "Transformer Engine's, Megatron's --cross-entropy-loss-fusion --cross-entropy-fusion-impl te; the same "
        "cross_entropy under torch.compile, as torchtitan compiles its loss with the model since 2025). Measured: "
        "benchmarks/results/h100-loss-memory. Under DTensor TP fp32 and fused run inside torch's loss_parallel: "
        "16 and 10 B per local logit (compiled, it keeps the bf16 logits and two fp32 copies), and about 0.9 B more "
        "in the allocator's cache (benchmarks/results/h100-torchao-float8).",
    )
    compiled: bool = Field(
        False,
        description="Blocks run under torch.compile (torchtitan's --training.compile): the host's time per block is "
        "the compiled one, and the memory-bound ops and FP8 casts run at the rates `shardplan calibrate` measures "
        "for a whole compiled block on a GPU (Inductor fuses across ops); a compiled block's SwiGLU keeps what "
        "`fused_swiglu`'s does (Inductor recomputes the SiLU in backward), under op-level selective recompute it "
        "keeps one bf16 h-wide tensor fewer per token, and with FP8 linears and no recompute it keeps neither the "
        "norms' outputs nor the down-projection's input (all measured on H100s).",
    )
    fused_swiglu: bool = Field(
        False,
        description="SwiGLU's SiLU and product in one autograd function that keeps only its input, the gate and up "
        "projections' outputs, and recomputes SiLU in backward (Megatron-Core's bias_activation_fusion, "
        "megatron/core/fusions/fused_bias_swiglu.py SwiGLUFunction): a block keeps 6 B per element of the MLP "
        "width where eager SwiGLU keeps 8.",
    )
    fp8_saved_inputs: bool = Field(
        False,
        description="With dtype='fp8', each FP8 linear keeps its input for the weight gradient as the FP8 cast, 1 B "
        "an element (Transformer Engine's Linear and LayerNormLinear); the attention output stays kept in bf16 "
        "for attention's backward beside the out-projection's FP8 copy. False: inputs kept in bf16 as eager "
        "linears keep them.",
    )
    fp8_weight_cache: bool = Field(
        False,
        description="With dtype='fp8', each FP8 linear casts its weight on a step's first micro-batch and keeps the "
        "cast, row-major and transposed (2 B an element), for the step's other micro-batches (Transformer Engine's "
        "is_first_microbatch, which Megatron-Core's TE linears pass): the weights cast once per step. False: cast "
        "every forward, as torchao's float8 linears do.",
    )
    fp8_all_gather: bool = Field(
        False,
        description="With dtype='fp8' (tensorwise or current scaling) and ZeRO-3 under FSDP2 (`fsdp2`): FSDP gathers "
        "the blocks' FP8 linears' weights in float8, each shard cast before the all-gather (torchao's "
        "Float8LinearConfig(enable_fsdp_float8_all_gather=True), torchtitan's [float8] enable_fsdp_float8_all_gather): "
        "1 B per such weight gathered and held instead of bf16's 2, and no cast of the gathered weight. The "
        "embedding, head and norms stay bf16.",
    )
    expert_tensor_parallel: bool = Field(
        True,
        description="With expert parallelism and tp > 1: each expert split by TP as the dense layers are, its TP ranks "
        "gathering their group's tokens (Megatron-Core's default expert_tensor_parallel_size = tp). False: each "
        "expert whole on one GPU and the tokens swapped over the ep x tp GPUs, the MoE blocks' MLP without TP "
        "collectives (Megatron's --expert-tensor-parallel-size 1, its MoE recipes' choice; torchtitan's default "
        "expert_tensor_parallel_degree 1).",
    )
    ep_dispatcher: Literal["alltoall", "deduplicated"] = Field(
        "alltoall",
        description="How MoE blocks send tokens to their experts: 'alltoall', one copy per chosen expert "
        "(Megatron-Core's alltoall dispatcher, torchtitan's); 'deduplicated', one copy per other NVLink domain (a "
        "node, or an NVL72 rack) holding any chosen expert, fanned out over NVLink there (DeepEP, Megatron's flex "
        "dispatcher with DeepEP or HybridEP).",
    )
    expert_gemms: Literal["loop", "grouped"] = Field(
        "loop",
        description="How a MoE block runs its local experts: 'loop', one GEMM per expert and the tokens per expert "
        "copied to the host first (Megatron-Core's alltoall dispatcher and Transformer Engine's GroupedLinear: each "
        "GEMM's fixed time, and host work per expert); 'grouped', one torch._grouped_mm over all of them for each "
        "projection and no host synchronisation (torchtitan's GroupedExperts, transformers' grouped_mm experts).",
    )
    ep_comm_overlap: bool = Field(
        False,
        description="With expert parallelism: each micro-batch's all-to-alls run beside another micro-batch's "
        "forward or backward (Megatron-Core's --overlap-moe-expert-parallel-comm, its combined 1F1B schedule; "
        "Megatron Bridge's moe_a2a_overlap): each beside one piece of the other's block (the attention or the MLP), "
        "exposed beyond it, the two slowing each other while both run (`cost.overlap.Overlap`); the pipeline's "
        "warm-up forwards and cool-down backwards have none beside them. False: each all-to-all waited for.",
    )
    pipeline_scatter_gather: bool = Field(
        True,
        description="Without sequence parallelism, each TP rank sends 1/tp of a stage's output and the next stage "
        "all-gathers it (Megatron's default); False: every TP rank sends the whole tensor (Megatron's "
        "--no-scatter-gather-tensors-in-pipeline; DeepSpeed's PipelineEngine always does).",
    )
    pipeline_runtime: Literal["megatron", "torch", "deepspeed"] = Field(
        "megatron",
        description="What runs the pipeline schedule: Megatron-LM, whose receive buffers come and go with each "
        "transfer and which exchanges activations and gradients with a neighbour in one batched send/receive; "
        "torch.distributed.pipelining (torchtitan), which exchanges alike but whose every stage allocates a "
        "receive buffer per micro-batch for its input and one for its output's gradient up front (stage.py "
        "_setup_forward_recv_info, _setup_backward_recv_info) and keeps them; or DeepSpeed's PipelineEngine, "
        "which sends and receives each activation and gradient on its own, blocking, and sends whole tensors "
        "from every TP rank (runtime/pipe/schedule.py TrainSchedule, engine.py).",
    )
    cp_comm: Literal["p2p", "all_gather"] = Field(
        "p2p",
        description="How context parallelism moves keys and values (with cp > 1; each rank holds 1/cp of every "
        "sequence, two load-balanced chunks): p2p, a ring that passes K/V chunks on while the attention of the chunk "
        "in hand runs (Megatron-LM / Transformer Engine's default cp_comm_type): under all but the local chunk's "
        "attention; all_gather, K and V gathered from the whole group while the local chunk's attention runs and "
        "their gradients reduce-scattered after the backward (torch's context_parallel with its default "
        "'allgather' rotation, torchtitan's context_parallel_rotate_method).",
    )
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Adam(W) keeps two fp32 moments per weight.")
    grad_dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="The weight gradients' dtype where they are kept and reduced: fp32 (Megatron-LM's main_grad, "
        "FSDP with reduce_dtype=float32, torchtitan), or the 2-byte dtype of weights trained in half precision, "
        "whose .grad takes their dtype (DeepSpeed's fp16/bf16 engines, Megatron-LM fp16 without "
        "--accumulate-allreduce-grads-in-fp32, Mist's flat parameters). Master weights and Adam moments stay fp32.",
    )
    tp_async_backward: bool = Field(
        True,
        description="Megatron's column-parallel backward: the input-gradient all-reduce (reduce-scatter under SP) "
        "runs under the weight-gradient GEMM, and SP's input all-gather under the input-gradient GEMM "
        "(megatron/core/tensor_parallel/layers.py; False: --no-async-tensor-model-parallel-allreduce, Megatron "
        "of 2021 and the BigScience Megatron-DeepSpeed fork, whose backward all-reduce is synchronous).",
    )
    grad_accumulation_fusion: bool = Field(
        False,
        description="Each weight-gradient GEMM accumulates into the fp32 gradient buffer itself (Megatron's "
        "--gradient-accumulation-fusion, on by default where APEX's fused weight-gradient kernel is installed, as in "
        "NVIDIA's containers; Transformer Engine's fuse_wgrad_accumulation): no separate add per micro-batch.",
    )
    tp_comm_overlap: bool = Field(
        False,
        description="TP collectives run under the GEMMs they feed (Megatron --tp-comm-overlap, torchtitan async TP).",
    )
    overlap_param_gather: bool = Field(
        False,
        description="ZeRO-1/2 weight all-gather runs under the next forward (Megatron --overlap-param-gather).",
    )

    def __init__(self, **settings: Any) -> None:
        """Refuse settings that cannot be with a one-line `TrainingError` naming the field, in place of pydantic's
        multi-line `ValidationError`."""
        try:
            super().__init__(**settings)
        except ValidationError as err:
            raise TrainingError(describe_validation(err)) from None

    @model_validator(mode="after")
    def _modules_beside_megatron_recompute(self) -> Training:
        if self.recompute_modules and self.recompute not in ("none", "selective"):
            raise ValueError(
                f"recompute_modules {', '.join(self.recompute_modules)} go with recompute none or selective "
                f"(Megatron's selective granularity), not {self.recompute}"
            )
        return self

    def expert_group(self, ep: int, tp: int) -> int:
        """GPUs that split the experts and swap tokens: the `ep` GPUs, or ep x tp where each expert stays whole
        on a GPU (`expert_tensor_parallel` off)."""
        return ep * tp if ep > 1 and not self.expert_tensor_parallel else ep

    def stage_blocks(self, layers: int, last: bool) -> int:
        """Blocks a pipeline stage of `layers` runs: the last also runs the multi-token-prediction layers."""
        return layers + (self.mtp_layers if last else 0)

    @property
    def grad_bytes(self) -> int:
        """Bytes per weight gradient (`grad_dtype`)."""
        return 4 if self.grad_dtype == "fp32" else 2

    @property
    def fsdp2(self) -> bool:
        """Whether ZeRO-3 runs as FSDP2's fully_shard (`fsdp_version` 2). Under Megatron's runtime ZeRO-3 is
        Megatron-FSDP, whose ParamAndGradBuffer gathers into and reduces out of the parameters' own storage ("zero
        copy communication", megatron/core/distributed/fsdp/src/README.md): not FSDP2."""
        return self.zero_stage == 3 and self.fsdp_version == 2 and self.pipeline_runtime != "megatron"

    @property
    def fp8_gathered(self) -> bool:
        """Whether FSDP2 gathers the FP8 linears' weights in float8 (`fp8_all_gather`, where it applies)."""
        return self.fp8_all_gather and self.dtype == "fp8" and self.fp8_recipe != "rowwise" and self.fsdp2

    @property
    def interleaved_pipeline(self) -> bool:
        """Whether the pipeline runtime can give a GPU several model chunks (DeepSpeed's TrainSchedule cannot)."""
        return self.pipeline_runtime != "deepspeed"

    @property
    def micro_batch_per_stage(self) -> bool:
        """Whether a pipelined step needs at least as many micro-batches as stages: torch.distributed.pipelining's
        schedules raise "Number of microbatches (n) must be greater than or equal to the number of stages"
        (schedules.py); Megatron's and DeepSpeed's run fewer, with a longer bubble."""
        return self.pipeline_runtime == "torch"

    @property
    def pipeline_zero_stages(self) -> tuple[int, ...]:
        """The ZeRO stages the pipeline runtime runs with pp > 1: DeepSpeed's PipelineEngine asserts
        "ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism" (runtime/pipe/engine.py)."""
        return (0, 1) if self.pipeline_runtime == "deepspeed" else (0, 1, 2, 3)

    @property
    def tokens_per_step(self) -> int:
        """Tokens processed per optimiser step."""
        return self.global_batch * self.seq_len
