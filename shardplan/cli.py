"""The `shardplan` command line. Thin: parse options, call one public function, render.

Errors a user can cause print one line on stderr and exit with code 2. torch, ortools and NVML
are imported only inside the commands that need them, so `shardplan topo` starts fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich import box
from rich.table import Table

from shardplan.cli_options import (
    Attention,
    Compiled,
    Dtype,
    Emit,
    EpCommOverlap,
    EpDispatcher,
    ExpertGemms,
    ExpertTensorParallel,
    Fp8AllGather,
    Fp8Recipe,
    Fp8SavedInputs,
    Fp8WeightCache,
    FsdpVersion,
    FusedSwiglu,
    GradAccumulationFusion,
    GradDtype,
    Loss,
    MtpLayers,
    OverlapParamGather,
    PipelineRuntime,
    PipelineScatterGather,
    RecomputeModules,
    SequenceParallel,
    TpAsyncBackward,
    TpCommOverlap,
    TpImpl,
    training_of,
)
from shardplan.cli_output import (
    console,
    print_heading,
    print_link_scale,
    print_notes,
    print_table,
    progress,
    write_output,
)
from shardplan.errors import ShardplanError, describe_validation
from shardplan.files import check_new_file

if TYPE_CHECKING:
    from shardplan.cost.calibration import Calibration
    from shardplan.plan import Plan
    from shardplan.topology import Topology

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Decide how to shard a model over a GPU cluster.",
)
GPU_HELP = "GPU model where the source does not say it, e.g. h100-sxm (an error where it says another)."
NIC_HELP = (
    "Line rate of each NIC in Gb/s, e.g. 400, where the source states none (a saved nvidia-smi topo -m); a node "
    "listing no NICs leaves through one (an error where the source says another)."
)


@app.callback()
def _root() -> None:
    """Decide how to shard a model over a GPU cluster."""


def _check_tokens(seq_len: int) -> None:
    """--seq-len: a positive number of tokens, before anything is computed from it."""
    if seq_len < 1:
        raise ShardplanError(f"--seq-len {seq_len}: expected a positive number of tokens")


def _topology_and_calibration(
    source: str, nodes: int, gpu: str | None, nic_gbit: float | None, calibration: Path | None
) -> tuple[Topology, Calibration | None]:
    """The topology to plan on, its links at the rates the calibration file's collectives measured, and the file."""
    from shardplan.cost.calibration import read_calibration
    from shardplan.cost.link_scale import calibrated_links
    from shardplan.topology import load_topology

    cal = read_calibration(calibration) if calibration is not None else None
    return calibrated_links(load_topology(source, nodes=nodes, gpu=gpu, nic_gbit=nic_gbit), cal), cal


@app.command()
def topo(
    source: Annotated[
        str,
        typer.Argument(
            help="'live', a preset name, a YAML/JSON file, saved `nvidia-smi topo -m`, or NCCL topology XML."
        ),
    ],
    nodes: Annotated[int, typer.Option(help="Copies of the source joined by its network.")] = 1,
    gpu: Annotated[str | None, typer.Option(help=GPU_HELP)] = None,
    nic_gbit: Annotated[float | None, typer.Option(help=NIC_HELP)] = None,
    nvlink: Annotated[Path | None, typer.Option(help="Saved `nvidia-smi nvlink -s` of the same machine.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    draw: Annotated[Path | None, typer.Option(help="Write a picture of the topology (.png or .svg).")] = None,
) -> None:
    """Show a machine's GPUs, NVLink islands, PCIe groups, NICs and bandwidth by link class."""
    from shardplan.topology import load_topology
    from shardplan.topology.summary import summarize

    topology = load_topology(source, nodes=nodes, gpu=gpu, nvlink_status=nvlink, nic_gbit=nic_gbit)
    if draw is not None:
        from shardplan.topology.draw import draw as draw_topology

        draw_topology(topology, draw)
    if as_json:
        print(topology.to_json())
        return
    s = summarize(topology)
    print_heading(s["name"], f"  {s['num_gpus']} GPUs, {s['num_nodes']} node(s)")
    if s["source"]:
        console.print(f"source    {s['source']}", highlight=False)
    print_notes(s["caveats"])
    console.print("GPUs      " + ", ".join(f"{k} x{v}" for k, v in s["gpu_models"].items()), highlight=False)
    islands = s["nvlink_islands"]
    console.print("NVLink    " + (" ".join(str(i) for i in islands) if islands else "none"), highlight=False)
    console.print(f"sockets   {s['sockets_first_node']} (first node)", highlight=False)
    if s["nodes_without_p2p"]:
        where = "every node" if len(s["nodes_without_p2p"]) == s["num_nodes"] else f"nodes {s['nodes_without_p2p']}"
        console.print(f"P2P       none over PCIe on {where}: NCCL copies through host memory", highlight=False)
    elif s["through_host_first_node"]:
        kinds = ", ".join(s["through_host_first_node"])
        console.print(
            f"P2P       only under a PCIe switch: NCCL 2.23+ copies {kinds} pairs through host memory "
            "(peer-to-peer through the CPU only between two GPUs of an AMD host)",
            highlight=False,
        )
    if s["nics_first_node"]:
        nics = ", ".join(
            f"{n['name']} {format(n['gbit'], 'g') if n['gbit'] else '?'}Gb/s near {n['near']}"
            for n in s["nics_first_node"]
        )
        console.print(f"NICs      {nics}", highlight=False)
    table = Table(title="bandwidth by link class (GB/s per direction)")
    for col in ("link", "GPU pairs (first node)", "achievable", "datasheet"):
        table.add_column(col)
    for c in s["link_classes"]:
        pairs = "-" if c["pairs_in_first_node"] is None else str(c["pairs_in_first_node"])
        table.add_row(c["kind"], pairs, c["gbps"] or "? (pass --gpu)", c["datasheet_gbps"] or "?")
    print_table(table)
    if draw is not None:
        console.print(f"picture   {draw}")


@app.command()
def model(
    source: Annotated[str, typer.Argument(help="A model preset, a Hugging Face config.json, or a folder holding one.")],
    seq_len: Annotated[int | None, typer.Option(help="Sequence length for FLOPs (default: the model's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show a model's layers, parameters, forward FLOPs per token and activation bytes per token."""
    from shardplan.model import load_model

    if seq_len is not None:
        _check_tokens(seq_len)
    spec = load_model(source)
    s = seq_len or spec.seq_len
    acts = {
        "none (flash attention)": spec.activation_bytes_per_token(seq_len=s),
        "none (eager attention)": spec.activation_bytes_per_token(seq_len=s, flash_attention=False),
        **{
            mode: spec.activation_bytes_per_token(recompute=mode, seq_len=s)
            for mode in ("selective", "selective-op", "selective-layer", "full")
        },
    }
    if as_json:
        doc = spec.model_dump(mode="json")
        doc.update(
            schema_version=1,
            num_params=spec.num_params,
            num_active_params=spec.num_active_params,
            seq_len_used=s,
            flops_per_token=spec.flops_per_token(s),
            activation_bytes_per_token_tp1=acts,
        )
        print(json.dumps(doc, indent=2))
        return
    print_heading(
        spec.name,
        f"  {spec.model_type}, {spec.num_params / 1e9:.2f} B params"
        + (f" ({spec.num_active_params / 1e9:.2f} B active)" if spec.moe else ""),
    )
    console.print(f"source    {spec.source}", highlight=False)
    print_notes(spec.caveats)
    heads = f"{spec.num_heads} heads ({spec.attention}, {spec.num_kv_heads} KV), head dim {spec.head_dim}"
    heads += ", a learned sink each" if spec.attention_sinks else ""
    heads += ", output gated" if spec.attention_gate else ""
    if g := spec.gated_delta:
        heads += (
            f"; Gated DeltaNet in {spec.num_linear_layers} of the blocks ({g.key_heads} key heads of "
            f"{g.key_head_dim}, {g.value_heads} value heads of {g.value_head_dim}, convolution {g.conv_kernel})"
        )
    if spec.mla:  # queries and keys of nope + rope, values apart; the latents the down-projections make
        m = spec.mla
        heads = (
            f"{spec.num_heads} heads (mla: q/k {m.qk_nope_head_dim} + {m.qk_rope_head_dim}, v {m.v_head_dim}; "
            f"latents q {m.q_lora_rank or 'none'}, kv {m.kv_lora_rank})"
        )
    console.print(
        f"shape     hidden {spec.hidden_size}, {spec.num_layers} layers, {heads}, FFN {spec.ffn_hidden_size} "
        f"{spec.mlp}, vocabulary {spec.vocab_size:,}, tied embeddings {spec.tied_embeddings}",
        highlight=False,
    )
    table = Table(title=f"layers (forward FLOPs per token at sequence {s})")
    for col in ("layer", "count", "params each", "params total", "GFLOP/token each"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for ly in spec.layers:
        flops = ly.flops_per_token(s) / 1e9
        table.add_row(ly.name, str(ly.count), f"{ly.params:,}", f"{ly.params * ly.count:,}", f"{flops:.4f}")
    table.add_row("total", "", "", f"{spec.num_params:,}", f"{spec.flops_per_token(s) / 1e9:.3f}")
    print_table(table)
    console.print(
        "activations per token per block, TP=1, flash attention: "
        + ", ".join(f"recompute {k}: {v / 1024:.1f} KiB" for k, v in acts.items()),
        highlight=False,
    )


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="Model preset or config.json.")],
    topology: Annotated[str, typer.Option(help="Topology source (preset, file, saved nvidia-smi, NCCL XML, 'live').")],
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    dp: Annotated[int, typer.Option(help="Data-parallel degree.")] = 1,
    nodes: Annotated[int, typer.Option(help="Copies of the topology source.")] = 1,
    gpu: Annotated[str | None, typer.Option(help=GPU_HELP)] = None,
    nic_gbit: Annotated[float | None, typer.Option(help=NIC_HELP)] = None,
    global_batch: Annotated[int, typer.Option(min=1, help="Sequences per optimiser step.")] = 512,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 4096,
    micro_batch: Annotated[int, typer.Option(help="Sequences per micro-batch.")] = 1,
    virtual_stages: Annotated[int, typer.Option(help="Interleaved pipeline chunks per GPU.")] = 1,
    cp: Annotated[int, typer.Option(help="Context-parallel degree: GPUs that split each sequence.")] = 1,
    cp_comm: Annotated[
        str,
        typer.Option(
            help="With --cp: p2p (a ring under the attention, Megatron / Transformer Engine) or all_gather "
            "(torch's context_parallel, torchtitan)."
        ),
    ] = "p2p",
    ep: Annotated[
        int,
        typer.Option(
            help="Expert-parallel degree (MoE models): GPUs that split the experts; tp x pp x dp x cp x ep = GPUs, "
            "the dense layers' data parallelism is dp x ep."
        ),
    ] = 1,
    zero: Annotated[int, typer.Option(help="ZeRO / FSDP stage 0-3.")] = 1,
    recompute: Annotated[
        str, typer.Option(help="none, selective (Megatron), selective-op or selective-layer (torchtitan), full.")
    ] = "selective",
    dtype: Dtype = "bf16",
    fp8_recipe: Fp8Recipe = "tensorwise",
    grad_dtype: GradDtype = "fp32",
    grad_accumulation_fusion: GradAccumulationFusion = False,
    tp_comm_overlap: TpCommOverlap = False,
    overlap_param_gather: OverlapParamGather = False,
    fused_swiglu: FusedSwiglu = False,
    fp8_saved_inputs: Fp8SavedInputs = False,
    fp8_weight_cache: Fp8WeightCache = False,
    fp8_all_gather: Fp8AllGather = False,
    expert_tensor_parallel: ExpertTensorParallel = True,
    ep_comm_overlap: EpCommOverlap = False,
    recompute_modules: RecomputeModules = None,
    mtp_layers: MtpLayers = 0,
    ep_dispatcher: EpDispatcher = "alltoall",
    expert_gemms: ExpertGemms = "loop",
    sequence_parallel: SequenceParallel = True,
    pipeline_scatter_gather: PipelineScatterGather = True,
    pipeline_runtime: PipelineRuntime = "megatron",
    tp_async_backward: TpAsyncBackward = True,
    fsdp_version: FsdpVersion = 2,
    tp_impl: TpImpl = "megatron",
    attention: Attention = "flash",
    loss: Loss = None,
    compiled: Compiled = False,
    calibration: Annotated[Path | None, typer.Option(help="Calibration file from `shardplan calibrate`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON document.")] = False,
) -> None:
    """Estimate step time and memory of one layout (row-major rank order)."""
    from shardplan.model import load_model
    from shardplan.solve.estimate import estimate as run_estimate
    from shardplan.solve.estimate import shortfall

    _check_tokens(seq_len)
    train = training_of(
        locals(), global_batch=global_batch, seq_len=seq_len, zero_stage=zero, recompute=recompute, cp_comm=cp_comm
    )
    topo, cal = _topology_and_calibration(topology, nodes, gpu, nic_gbit, calibration)
    spec = load_model(model)
    plan = run_estimate(
        spec,
        topo,
        train,
        tp=tp,
        pp=pp,
        dp=dp,
        cp=cp,
        ep=ep,
        micro_batch=micro_batch,
        virtual_stages=virtual_stages,
        calibration=cal,
    )
    if as_json:
        print(plan.to_json())
        return
    print_heading(
        plan.model,
        f" on {plan.topology}: tp={plan.tp} pp={plan.pp} dp={plan.dp}"
        f"{f' cp={plan.cp}' if plan.cp > 1 else ''}{f' ep={plan.ep}' if plan.ep > 1 else ''} "
        f"micro-batch {plan.micro_batch} x {plan.num_micro_batches}, ZeRO {plan.zero_stage}, "
        f"recompute {' + '.join((plan.recompute, *plan.recompute_modules))}",
    )
    print_notes((*topo.caveats, *spec.caveats))
    print_link_scale(topo)
    console.print(
        f"step {plan.step_time_s:.3f} s, {plan.tokens_per_s:,.0f} tokens/s, MFU {plan.mfu:.1%}, "
        f"memory {plan.memory_per_gpu_bytes / 2**30:.1f} GiB per GPU, allocator cache included "
        f"({'fits' if plan.fits else 'does NOT fit'})",
        highlight=False,
    )
    if not plan.fits:
        layout = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=micro_batch, virtual_stages=virtual_stages)
        console.print(shortfall(model, topo, train, plan, **layout, calibration=cal), highlight=False)
    table = Table(title="where the step goes")
    table.add_column("part")
    table.add_column("seconds", justify="right")
    for part, seconds in plan.breakdown.items():
        if part not in ("cp", "ep") or getattr(plan, part) > 1:  # opt-in: no row of zeros where unused
            table.add_row(part, f"{seconds:.4f}")
    print_table(table)
    links = ", ".join(f"{k} {v:.4f}" for k, v in plan.comm_time_by_link.items())
    console.print(f"communication seconds by link, hidden or not: {links}", highlight=False)
    mem = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in plan.memory_breakdown.items())
    console.print(f"memory GiB: {mem}", highlight=False)


TOKENS_PER_STEP = 2**20  # default global batch: about a million tokens per step (Llama-2/3 warm-up scale)


@app.command()
def suggest(
    model: Annotated[str, typer.Option(help="Model preset or config.json.")],
    topology: Annotated[str, typer.Option(help="Topology source (preset, file, saved nvidia-smi, NCCL XML, 'live').")],
    nodes: Annotated[int, typer.Option(help="Copies of the topology source.")] = 1,
    gpu: Annotated[str | None, typer.Option(help=GPU_HELP)] = None,
    nic_gbit: Annotated[float | None, typer.Option(help=NIC_HELP)] = None,
    global_batch: Annotated[
        int | None,
        typer.Option(
            min=1, help="Sequences per optimiser step \\[default: 2^20 tokens / seq-len, a multiple of the GPUs]."
        ),
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 4096,
    top: Annotated[int, typer.Option(min=1, help="How many plans to show.")] = 5,
    time_limit: Annotated[float | None, typer.Option(help="Seconds to search; the gap says what is left.")] = None,
    zero: Annotated[
        list[int] | None,
        typer.Option(help="Only these ZeRO stages (repeat) \\[default: 0-3; --emit torchtitan: 0, 2, 3]."),
    ] = None,
    recompute: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these recompute modes (repeat): none, selective, selective-op, selective-layer, full "
            "\\[default: none, selective, full]."
        ),
    ] = None,
    micro_batch: Annotated[list[int] | None, typer.Option(help="Only these micro-batch sizes.")] = None,
    tp: Annotated[
        list[int] | None,
        typer.Option(help="Only these tensor-parallel degrees (repeat): the best placement of degrees you chose."),
    ] = None,
    pp: Annotated[list[int] | None, typer.Option(help="Only these pipeline-parallel degrees (repeat).")] = None,
    cp: Annotated[
        list[int] | None,
        typer.Option(help="Context-parallel degrees to try too (repeat; e.g. for long sequences) \\[default: 1]."),
    ] = None,
    cp_comm: Annotated[
        str | None,
        typer.Option(
            help="With --cp: p2p (Megatron / Transformer Engine's ring) or all_gather (torchtitan) \\[default: p2p; "
            "--emit torchtitan or python: all_gather]."
        ),
    ] = None,
    ep: Annotated[
        list[int] | None,
        typer.Option(
            help="Only these expert-parallel degrees (repeat) \\[default for MoE models: every degree that divides the "
            "experts and the data-parallel GPUs; dense models: 1]."
        ),
    ] = None,
    dtype: Dtype = "bf16",
    fp8_recipe: Fp8Recipe = "tensorwise",
    grad_dtype: GradDtype = "fp32",
    grad_accumulation_fusion: GradAccumulationFusion = False,
    tp_comm_overlap: TpCommOverlap = False,
    overlap_param_gather: OverlapParamGather = False,
    fused_swiglu: FusedSwiglu = False,
    fp8_saved_inputs: Fp8SavedInputs = False,
    fp8_weight_cache: Fp8WeightCache = False,
    fp8_all_gather: Fp8AllGather = False,
    expert_tensor_parallel: ExpertTensorParallel = True,
    ep_comm_overlap: EpCommOverlap = False,
    recompute_modules: RecomputeModules = None,
    mtp_layers: MtpLayers = 0,
    ep_dispatcher: EpDispatcher = "alltoall",
    expert_gemms: ExpertGemms = None,
    sequence_parallel: SequenceParallel = True,
    pipeline_scatter_gather: PipelineScatterGather = True,
    pipeline_runtime: PipelineRuntime = None,
    tp_async_backward: TpAsyncBackward = True,
    fsdp_version: FsdpVersion = 2,
    tp_impl: TpImpl = None,
    attention: Attention = "flash",
    loss: Loss = None,
    compiled: Compiled = False,
    calibration: Annotated[Path | None, typer.Option(help="Calibration file from `shardplan calibrate`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plans as one JSON document.")] = False,
    emit: Emit = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File for --emit or --json output.")] = None,
) -> None:
    """Search degrees, options, stages and rank placement; show the best plans."""
    from shardplan.emit import FORMATS
    from shardplan.model import load_model
    from shardplan.solve.explain import explain
    from shardplan.solve.search import suggest as run_suggest

    if emit is not None and emit not in FORMATS:
        raise ShardplanError(f"unknown --emit format {emit!r}; one of {', '.join(FORMATS)}")
    if output is not None and emit is None and not as_json:
        raise ShardplanError(f"-o {output}: writes what --emit or --json prints; add one of them")
    if output is not None:
        check_new_file(output)
    topo, cal = _topology_and_calibration(topology, nodes, gpu, nic_gbit, calibration)
    spec = load_model(model)
    _check_tokens(seq_len)
    if global_batch is None:
        per_gpu = -(-TOKENS_PER_STEP // (seq_len * topo.num_gpus))
        global_batch = per_gpu * topo.num_gpus
    options = locals()
    train = training_of(options, global_batch=global_batch, seq_len=seq_len, cp_comm=cp_comm)
    if emit == "deepspeed" and spec.moe is not None and not ep:
        ep = [1]  # DeepSpeed sets expert parallelism in the model code, not in its config
    if emit == "torchtitan" and not zero:
        zero = [0, 2, 3]  # torchtitan has no ZeRO-1: its FSDP2 shards gradients with the optimizer states
    with progress() as report:
        plans = run_suggest(
            spec,
            topo,
            train,
            top_k=top,
            time_limit_s=time_limit,
            calibration=cal,
            zero_stages=tuple(zero) if zero else None,
            recompute=tuple(recompute) if recompute else None,  # type: ignore[arg-type]
            micro_batch=tuple(micro_batch) if micro_batch else None,
            tp=tuple(tp) if tp else None,
            pp=tuple(pp) if pp else None,
            cp=tuple(sorted({1, *cp})) if cp else None,
            ep=tuple(ep) if ep else None,
            progress=report,
        )
    if emit is not None:
        from shardplan.emit import emit as render

        write_output(render(plans[0], topo, emit), output)
        return
    if as_json:
        write_output(
            json.dumps({"schema_version": 1, "plans": [json.loads(p.to_json()) for p in plans]}, indent=2), output
        )
        return
    from shardplan.topology.summary import summarize

    s = summarize(topo)
    console.print(f"topology  {s['name']}: {s['num_gpus']} GPUs, {s['num_nodes']} node(s)", highlight=False)
    print_notes(s["caveats"])
    print_link_scale(topo)
    console.print(
        f"model     {spec.name}: {spec.num_params / 1e9:.2f} B params, {spec.num_layers} layers; "
        f"batch {global_batch} x {seq_len} tokens",
        highlight=False,
    )
    print_notes(spec.caveats)
    table = Table(box=box.SIMPLE_HEAD)
    degrees = ("tp", "pp", "dp", *(("cp",) if cp else ()), *(("ep",) if spec.moe else ()))
    for col in ("#", *degrees, "mb", "v", "zero", "recompute", "step s", "tokens/s", "MFU", "GB/GPU"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("vs default", justify="right", no_wrap=True)
    table.add_column("proof", no_wrap=True)
    for k, p in enumerate(plans, 1):
        speedup = (p.default_step_time_s or p.step_time_s) / p.step_time_s
        table.add_row(
            str(k),
            *(str(getattr(p, axis)) for axis in degrees),
            *(str(x) for x in (p.micro_batch, p.virtual_stages, p.zero_stage)),
            "+".join((p.recompute, *p.recompute_modules)),
            f"{p.step_time_s:.3f}",
            f"{p.tokens_per_s:,.0f}",
            f"{p.mfu:.1%}",
            f"{p.memory_per_gpu_bytes / 1e9:.1f}",
            f"{speedup:.2f}x",
            "optimal" if p.optimal else f"gap {p.gap:.1%}" if p.gap is not None else "unproved",
        )
    print_table(table)
    console.print(f"why #1: {explain(plans[0], topo)}", highlight=False)
    replans = [
        fmt
        for fmt in FORMATS
        if training_of({**options, "emit": fmt}, global_batch=global_batch, seq_len=seq_len, cp_comm=cp_comm) != train
    ]
    formats = "|".join(_emitters_for(plans[0], topo, replans))
    again = f"; {'|'.join(replans)}: planned again for that framework's runtime" if replans else ""
    console.print(f"next:   the same command with --emit {formats} [-o FILE]{again}", highlight=False)


def _emitters_for(plan: Plan, topology: Topology, replans: list[str]) -> list[str]:
    """The `--emit` formats that take `plan` (a framework refuses what it cannot run, e.g. DeepSpeed expert
    parallelism, torchtitan Megatron's recompute modules), and those that plan again for their runtime."""
    from shardplan.emit import FORMATS, emit

    taken = []
    for fmt in FORMATS:
        try:
            if fmt not in replans:
                emit(plan, topology, fmt)
        except ShardplanError:
            continue
        taken.append(fmt)
    return taken


@app.command()
def calibrate(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the calibration file here.")] = None,
    quick: Annotated[bool, typer.Option(help="A few tiny shapes only (a smoke test; CPU works).")] = False,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda; without a GPU only --quick measures the CPU).")
    ] = None,
) -> None:
    """Measure this machine (GEMMs by TP shape, attention, memory-bound ops, copies, AdamW; under
    torchrun also peer copies and collectives) and write a calibration file for --calibration."""
    import os

    from shardplan.calibrate import calibrate as measure
    from shardplan.calibrate import write

    if output is not None:
        check_new_file(output)
    result = measure(quick=quick, device_type=device)
    if int(os.environ.get("RANK", "0")) == 0:
        write_output(write(result), output)


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except ShardplanError as exc:  # includes ModelSpecError, TopologyError, ParseError
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:
        print(f"error: {describe_validation(exc)}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors (vendored by typer)
            message, ctx = " ".join(exc.format_message().split()), getattr(exc, "ctx", None)
            if message:  # none where a bare `shardplan` has printed its help
                see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                print(f"error: {message}{see}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
