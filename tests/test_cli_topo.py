"""The `shardplan topo` command and the architecture rules the CLI depends on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA


def _cli(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": str(columns)} if columns else None
    return subprocess.run(
        [sys.executable, "-m", "shardplan.cli", *args], capture_output=True, text=True, check=False, env=env
    )


def test_importing_cli_does_not_import_torch_or_ortools():
    code = "import sys, shardplan.cli; print('torch' in sys.modules, 'ortools' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_topo_json_is_one_document_with_the_topology_fields():
    run = _cli("topo", "a100-pcie-8gpu-bridged", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["schema_version"] == 1 and doc["num_gpus"] == 8
    assert {"gpus", "nodes", "nvlinks", "nvswitch_domains", "nics", "network"} <= set(doc)
    assert [(b["a"], b["b"], b["links"]) for b in doc["nvlinks"]] == [(0, 1, 12), (2, 3, 12), (4, 5, 12), (6, 7, 12)]


def test_names_in_square_brackets_print_as_given(tmp_path):
    """rich reads "[...]" as a style tag: a topology named "box[/red]" made it raise MarkupError (a traceback), and a
    config at "[red]cfg.json" printed as "cfg.json". What the user named prints as it is, in lines and tables."""
    machine = tmp_path / "box.yaml"
    machine.write_text('name: "box[/red] [bold]x"\nnodes:\n  - {gpus: 2, gpu: h100-sxm}\n')
    config = tmp_path / "[red]cfg.json"
    layers = {"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128}
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, **layers}))
    topo = _cli("topo", str(machine), columns=200)
    assert topo.returncode == 0 and topo.stdout.startswith("box[/red] [bold]x  2 GPUs, 1 node(s)"), topo.stderr
    model = _cli("model", str(config), columns=200)
    assert model.returncode == 0 and model.stdout.startswith("[red]cfg  llama"), model.stderr
    assert f"source    {config}" in model.stdout
    plan = _cli(
        "estimate",
        "--model",
        str(config),
        "--topology",
        str(machine),
        "--tp",
        "1",
        "--pp",
        "1",
        "--dp",
        "2",
        columns=200,
    )
    assert plan.returncode == 0 and plan.stdout.startswith("[red]cfg on box[/red] [bold]x: tp=1"), plan.stderr
    best = _cli("suggest", "--model", str(config), "--topology", str(machine), "--top", "1", columns=200)
    assert best.returncode == 0 and "topology  box[/red] [bold]x: 2 GPUs" in best.stdout, best.stderr


def test_topo_summary_names_islands_and_link_classes():
    run = _cli("topo", "dgx1-v100", "--nodes", "2")
    assert run.returncode == 0, run.stderr
    assert "16 GPUs, 2 node(s)" in run.stdout
    for kind in ("nvlink", "sys", "net"):
        assert kind in run.stdout
    # the pairs NVLink does not join cross the sockets of its Xeons, where NCCL copies through host memory
    assert "P2P       only under a PCIe switch: NCCL 2.23+ copies sys pairs through host" in run.stdout
    assert "P2P" not in _cli("topo", "dgx-h100").stdout
    geforce = _cli("topo", "rtx4090-4x-pcie")
    assert "P2P       none over PCIe on every node: NCCL copies through host memory" in geforce.stdout


def test_topo_draws_png_and_svg(tmp_path: Path):
    for suffix in (".png", ".svg"):
        out = tmp_path / f"t{suffix}"
        run = _cli("topo", "pcie-8gpu-2socket", "--draw", str(out))
        assert run.returncode == 0, run.stderr
        assert out.stat().st_size > 1000
    assert _cli("topo", "dgx-h100", "--draw", str(tmp_path / "t.jpg")).returncode == 2
    # a picture goes to a new file only: the one drawn above stays as it is, and a missing folder is named
    drawn = (tmp_path / "t.png").read_bytes()
    for out, message in ((tmp_path / "t.png", "already exists"), (tmp_path / "no" / "t.png", "no folder")):
        run = _cli("topo", "dgx-h100", "--draw", str(out))
        assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert (tmp_path / "t.png").read_bytes() == drawn


def test_saved_text_with_gpu_option(tmp_path: Path):
    from conftest import fixture_body

    saved = tmp_path / "topo.txt"
    saved.write_text(fixture_body(DATA / "topo" / "nvidia-smi-topo-dgx1-v100-1.txt"))
    run = _cli("topo", str(saved), "--gpu", "v100-sxm2-16gb", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["gpus"][0]["model"] == "v100-sxm2-16gb"
    bad = _cli("topo", str(saved), "--gpu", "v200")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown GPU model 'v200'")
    # a source that names its GPUs takes --gpu only where it agrees, never dropping it unseen
    assert _cli("topo", "dgx-h100", "--gpu", "h100-sxm").returncode == 0
    contradicted = _cli("topo", "dgx-h100", "--gpu", "a100-sxm-80gb")
    assert contradicted.returncode == 2
    assert "names GPU 0 of node 'dgx-h100' h100-sxm, not a100-sxm-80gb" in contradicted.stderr


def test_nic_gbit_option_plans_copies_of_a_saved_topo_m(tmp_path: Path):
    from conftest import fixture_body

    saved = tmp_path / "topo.txt"
    saved.write_text(fixture_body(DATA / "topo" / "nvidia-smi-topo-h100-hgx4gpu-nv6-4nic-1.txt"))
    args = ("suggest", "--model", "llama3-8b", "--topology", str(saved), "--gpu", "h100-sxm", "--nodes", "2")
    missing = _cli(*args)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no NIC speed" in missing.stderr and "pass --nic-gbit" in missing.stderr
    run = _cli(*args, "--nic-gbit", "400", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["plans"][0]["num_gpus"] == 8
    shown = _cli("topo", str(saved), "--gpu", "h100-sxm", "--nic-gbit", "400")
    assert shown.returncode == 0 and "NIC0 400Gb/s" in shown.stdout, shown.stdout
    bad = _cli("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--dp", "8", "--nic-gbit", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: dgx-h100: --nic-gbit (nic_gbit=) must be a positive")


def test_a_misspelt_name_gets_the_names_it_may_mean():
    for args, hint in (
        (("topo", "dgx-h10"), "did you mean 'dgx-h100'?"),
        (("topo", "dgx-h100", "--gpu", "h100"), "did you mean 'h100-nvl', 'h100-pcie' or 'h100-sxm'?"),
        (("model", "llama-3-8b"), "did you mean 'llama3-8b'?"),
    ):
        run = _cli(*args)
        assert run.returncode == 2 and hint in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "did you mean" not in _cli("topo", "dgx").stderr  # seven presets begin so: the list follows


def test_a_usage_error_is_one_line_naming_the_help():
    for args, said in (
        (("suggest", "--model", "llama3-8b"), "error: Missing option '--topology'. (see '"),
        (("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--tp", "x"), "Invalid value for '--tp'"),
        (("suggest", "--model", "llama3-8b", "--topology", "dgx-h100", "--mtp-layers", "-1"), "'--mtp-layers'"),
        (("nope",), "error: No such command 'nope'."),
        (("suggest", "--model", "llama3-8b", "--topology", "dgx-h100", "--global-batch", "0"), "'--global-batch'"),
        (("suggest", "--model", "llama3-8b", "--topology", "dgx-h100", "--top", "0"), "'--top'"),
    ):
        run = _cli(*args)
        assert run.returncode == 2 and said in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert run.stderr.strip().endswith(f"{args[0]} --help')" if len(args) > 1 else "shardplan.cli --help')")


def test_public_names_of_the_contract_exist():
    import shardplan

    for name in ("load_topology", "Topology", "ShardplanError"):
        assert hasattr(shardplan, name)


def test_model_command_table_json_and_errors(tmp_path: Path):
    run = _cli("model", "llama3-8b")
    assert run.returncode == 0, run.stderr
    assert "8,030,261,248" in run.stdout
    doc = json.loads(_cli("model", "mixtral-8x7b", "--json").stdout)
    assert doc["num_params"] == 46_702_792_704 and doc["moe"]["top_k"] == 2
    mla = _cli("model", "deepseek-v3")
    assert "mla: q/k 128 + 64, v 128; latents q 1536, kv 512" in " ".join(mla.stdout.split())
    assert json.loads(_cli("model", "deepseek-v3", "--json").stdout)["mla"]["kv_lora_rank"] == 512
    assert "head dim 64, a learned sink each" in " ".join(_cli("model", "gpt-oss-20b").stdout.split())
    assert "sink" not in run.stdout and json.loads(_cli("model", "gpt-oss-20b", "--json").stdout)["attention_sinks"]
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": 64}')
    run = _cli("model", str(bad))
    assert run.returncode == 2
    assert run.stderr == f"error: {bad}: vocab_size: missing (required for this model_type)\n"


def test_estimate_command_json_and_bad_degrees():
    run = _cli(
        "estimate",
        "--model",
        "llama3-8b",
        "--topology",
        "dgx-h100",
        "--tp",
        "2",
        "--dp",
        "4",
        "--global-batch",
        "32",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["schema_version"] == 1 and plan["mesh_shape"] == [1, 4, 2] and plan["mtp_layers"] == 0
    text = _cli(*(arg for arg in run.args[3:] if arg != "--json"))  # the same command, its text
    nvlink = plan["comm_time_by_link"]["nvlink"]
    assert nvlink > 0 and f"communication seconds by link, hidden or not: nvlink {nvlink:.4f}" in text.stdout
    mtp = ["estimate", "--model", "deepseek-v2-lite", "--topology", "dgx-h100", "--dp", "8", "--global-batch", "8"]
    assert json.loads(_cli(*mtp, "--mtp-layers", "1", "--json").stdout)["mtp_layers"] == 1
    # DeepSpeed-style pipelines: no SP, every TP rank sends the whole activation to the next stage
    pipelined = ["estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--nodes", "2", "--tp", "4", "--pp", "4"]
    pipelined += ["--global-batch", "16", "--json"]
    megatron, deepspeed = (
        json.loads(_cli(*pipelined, *flags).stdout)["breakdown"]["pp"]
        for flags in ((), ("--no-sequence-parallel", "--no-pipeline-scatter-gather"))
    )
    assert deepspeed > 2 * megatron
    bad = _cli("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--tp", "3")
    assert bad.returncode == 2
    assert bad.stderr == "error: tp x pp x dp = 3 x 1 x 1 = 3, but the topology has 8 GPUs\n"
    bad = _cli("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--tp", "0", "--dp", "-8")
    assert (bad.returncode, bad.stderr) == (2, "error: tp 0, dp -8: expected at least 1\n")
    bad = _cli("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--dp", "8", "--recompute", "most")
    assert bad.returncode == 2 and bad.stderr.startswith("error: recompute:")


def test_estimate_of_a_layout_that_does_not_fit_says_by_how_much_and_what_would():
    """Eight GPUs each holding all of Llama 3 8B's states (ZeRO-0), micro-batches of 8 x 4,096 tokens without
    recompute: the line after the step says how many GiB it is short of the GPU and that ZeRO-3 and full recompute
    would fit these degrees, with the memory they would take, as `estimate` gives it."""
    args = ["estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--dp", "8", "--zero", "0"]
    args += ["--micro-batch", "8", "--recompute", "none"]
    plan = json.loads(_cli(*args, "--json").stdout)
    fixed = json.loads(_cli(*args, "--zero", "3", "--recompute", "full", "--json").stdout)
    assert not plan["fits"] and fixed["fits"]
    need = (plan["memory_per_gpu_bytes"] - plan["memory_breakdown"]["allocator_cache"]) / 2**30
    run = _cli(*args, columns=300)
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if line.startswith("needs "))
    assert line == (
        f"needs {need:.1f} GiB per GPU beyond the allocator's cache, {need - 85520809984 / 2**30:.1f} GiB more than "
        f"the smallest GPU's 79.6; would fit: ZeRO-3 and full recompute ({fixed['memory_per_gpu_bytes'] / 2**30:.1f} "
        "GiB)"
    )
    assert "needs " not in _cli(*args[:-6], "--zero", "3").stdout  # ZeRO-3, selective recompute, one sequence


def test_suggest_refuses_values_no_plan_can_take():
    """Each bad option is one line naming the option and what was expected, exit code 2."""
    base = ("suggest", "--model", "llama3-8b", "--topology", "dgx-h100")
    no_layout = "error: no layout of llama3-8b on 8 GPUs takes"
    expected = {
        ("--seq-len", "0"): "error: --seq-len 0: expected a positive number of tokens\n",
        ("--cp", "0"): "error: cp 0: expected whole numbers of at least 1\n",
        ("--micro-batch", "-1"): "error: micro_batch -1: expected whole numbers of at least 1\n",
        ("--zero", "4"): "error: ZeRO stage 4: expected 0, 1, 2 or 3\n",
        ("--tp", "0"): "error: tp 0: expected whole numbers of at least 1\n",
        ("--tp", "3"): f"{no_layout} tp 3 with the rest as asked; tp 1, 2, 4, 8 would\n",
        ("--tp", "8", "--pp", "2"): f"{no_layout} tp 8 with the rest as asked; tp 1, 2, 4 would\n",
        ("--time-limit", "-1"): "error: time limit -1.0 s: expected 0 or more seconds\n",
    }
    for flags, message in expected.items():
        bad = _cli(*base, *flags)
        assert (bad.returncode, bad.stderr) == (2, message)
    # the same words from the other commands that take a sequence length
    for args in (("model", "llama3-8b"), ("estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--dp", "8")):
        bad = _cli(*args, "--seq-len", "-3")
        assert (bad.returncode, bad.stderr) == (2, "error: --seq-len -3: expected a positive number of tokens\n")


def test_suggest_places_the_degrees_a_user_pins():
    """`--tp` and `--pp` pin the degrees and leave the placement to the search: on a workstation whose NVLink bridges
    join GPUs 0-2, 1-3, 4-6 and 5-7, every TP pair sits on a bridge, where the default order puts it across PCIe."""
    topo = DATA / "machines" / "a100-pcie-bridged-crossed.yaml"
    run = _cli("suggest", "--model", "llama3-8b", "--topology", str(topo), "--tp", "2", "--pp", "4", "--top", "2",
               "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    plans = json.loads(run.stdout)["plans"]
    assert len(plans) == 2 and {(p["tp"], p["pp"], p["dp"]) for p in plans} == {(2, 4, 1)}
    pairs = [sorted(pair) for p in plans for stage in p["rank_layout"] for pair in stage]
    assert all(pair in ([0, 2], [1, 3], [4, 6], [5, 7]) for pair in pairs)
    assert all(p["step_time_s"] < p["default_step_time_s"] for p in plans)


def test_suggest_names_the_emit_formats_that_take_its_best_plan():
    """The plans shown run under Megatron's runtime, unless the command names another: torchtitan, DeepSpeed and
    torch code (python) plan again for theirs. With the runtime named, GPT-OSS's best plan on 8 DGX H100s recomputes
    Megatron's modules, which DeepSpeed refuses, so the closing line leaves deepspeed out; torchtitan and torch code
    still plan again, for their own loss (torch's fp32 cross-entropy, not Megatron's)."""
    dense = _cli("suggest", "--model", "llama3-8b", "--topology", "dgx-h100", "--top", "1")
    moe = _cli("suggest", "--model", "gpt-oss-120b", "--topology", "dgx-h100", "--nodes", "8", "--top", "1",
               "--global-batch", "1280", "--pipeline-runtime", "megatron", "--tp-impl", "megatron",
               "--cp-comm", "p2p")  # fmt: skip
    assert dense.returncode == moe.returncode == 0
    last = [" ".join(run.stdout.split("next:")[-1].split()) for run in (dense, moe)]  # as wrapped for a pipe
    assert last == [
        "the same command with --emit torchtitan|megatron|deepspeed|python [-o FILE]; torchtitan|deepspeed|python: "
        "planned again for that framework's runtime",
        "the same command with --emit torchtitan|megatron|python [-o FILE]; torchtitan|python: planned again for "
        "that framework's runtime",
    ]


def test_suggest_emits_a_plan_made_for_the_frameworks_runtime(tmp_path: Path):
    """`--emit torchtitan` plans under torch's pipelines and DTensor TP (its estimate is the Python search's under
    those), unless the command names a runtime; `--emit deepspeed` keeps a MoE model's experts unsplit."""
    from shardplan import Training, load_topology, suggest

    base = ("suggest", "--model", "llama3-70b", "--topology", "dgx-h100", "--nodes", "4", "--global-batch", "128")
    runs = {
        name: _cli(*base, "--emit", "torchtitan", "-o", str(tmp_path / f"{name}.toml"), *flags)
        for name, flags in (("torch", ()), ("megatron", ("--pipeline-runtime", "megatron", "--tp-impl", "megatron")))
    }
    assert all(run.returncode == 0 for run in runs.values())
    estimated = {n: float((tmp_path / f"{n}.toml").read_text().split("estimated ")[1].split()[0]) for n in runs}
    for name, (runtime, tp_impl) in {"torch": ("torch", "dtensor"), "megatron": ("megatron", "megatron")}.items():
        train = Training(global_batch=128, seq_len=4096, pipeline_runtime=runtime, tp_impl=tp_impl, loss="fp32")
        best = suggest("llama3-70b", load_topology("dgx-h100", nodes=4), train, top_k=1, zero_stages=(0, 2, 3))[0]
        assert estimated[name] == pytest.approx(best.step_time_s, abs=5e-4)
    assert estimated["torch"] != pytest.approx(estimated["megatron"], rel=0.01)
    # torchtitan has no ZeRO-1: on bridged A100 pairs, where its runtime's best plan is ZeRO-1, it plans without it
    bridged = ("suggest", "--model", "llama3-8b", "--topology", "a100-pcie-8gpu-bridged", "--emit")
    titan = _cli(*bridged, "torchtitan")
    assert titan.returncode == 0 and "fsdp_reshard_after_forward" in titan.stdout and "ZeRO-1" not in titan.stdout
    pinned = _cli(*bridged, "torchtitan", "--zero", "1")
    assert "# ZeRO-2; the plan's ZeRO-1 kept gradients whole" in pinned.stdout


def test_torchtitan_compiled_plans_count_its_compiled_loss(tmp_path: Path):
    """torchtitan compiles its loss with the model (torchtitan/components/loss.py), keeping no fp32 logits: `--emit
    torchtitan --compiled` plans with the fused loss's memory unless --loss says otherwise, as the Python search with
    loss='fused' does; without --compiled, or with --loss fp32, the fp32 loss's. The config turns compiling on
    where the plan assumed it."""
    import tomllib

    from shardplan import Training, load_topology, suggest

    base = ("suggest", "--model", "llama3-8b", "--topology", "dgx-h100", "--global-batch", "64", "--seq-len", "8192")
    flags = {"compiled": ("--compiled",), "eager": (), "fp32": ("--compiled", "--loss", "fp32")}
    estimated = {}
    for name, extra in flags.items():
        out = tmp_path / f"{name}.toml"
        assert _cli(*base, "--emit", "torchtitan", "-o", str(out), *extra).returncode == 0
        estimated[name] = float(out.read_text().split("estimated ")[1].split()[0])
        assert tomllib.loads(out.read_text())["training"].get("compile", False) == (name != "eager")
    torch_runtime = {"pipeline_runtime": "torch", "tp_impl": "dtensor", "cp_comm": "all_gather"}
    torch_runtime["expert_gemms"] = "grouped"
    for name, loss in (("compiled", "fused"), ("fp32", "fp32")):
        train = Training(global_batch=64, seq_len=8192, compiled=True, loss=loss, **torch_runtime)
        best = suggest("llama3-8b", load_topology("dgx-h100"), train, top_k=1, zero_stages=(0, 2, 3))[0]
        assert estimated[name] == pytest.approx(best.step_time_s, abs=5e-4), name
    assert estimated["compiled"] < estimated["fp32"]


def test_each_framework_plans_with_its_own_loss():
    """Without --loss a plan takes the loss of the framework it is for: Megatron-LM's vocab-parallel one for the table
    and for Megatron and DeepSpeed (Megatron-DeepSpeed's GPT calls it), torch's fp32 cross_entropy for torchtitan and
    torch code, fused where torchtitan compiles it (--loss wins: the test above)."""
    from shardplan.cli_options import loss_of

    assert [loss_of(emit, compiled=False) for emit in (None, "megatron", "deepspeed", "torchtitan", "python")] == [
        "megatron", "megatron", "megatron", "fp32", "fp32"
    ]  # fmt: skip
    assert loss_of("torchtitan", compiled=True) == "fused" and loss_of("python", compiled=True) == "fp32"
    assert loss_of("megatron", compiled=True) == "megatron"


def test_suggest_refuses_an_output_file_before_planning(tmp_path: Path):
    """-o never writes over the user's file, says where a missing folder is, and needs a format to write; each is a
    one-line error with exit code 2, and the file already there keeps its bytes."""
    kept = tmp_path / "plan.toml"
    kept.write_text("mine\n")
    base = ("suggest", "--model", "gpt2", "--topology", "dgx-h100")
    cases = {
        "already exists": (*base, "--emit", "torchtitan", "-o", str(kept)),
        "no folder": (*base, "--json", "-o", str(tmp_path / "missing" / "plan.json")),
        "add one of them": (*base, "-o", str(tmp_path / "table.txt")),
    }
    for message, args in cases.items():
        run = _cli(*args)
        assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert kept.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]


def test_suggest_table_in_a_pipe_keeps_every_figure_whole():
    """A table with cp and ep columns and recompute with three modules is 148 columns wide, more than a pipe's
    default 80 or the 140 it was once cut to; printed into a pipe, no figure is shortened to an ellipsis."""
    modules = ("--recompute-module", "moe_act", "--recompute-module", "layernorm", "--recompute-module", "mla_up_proj")
    base = ("suggest", "--model", "deepseek-v2-lite", "--topology", "dgx-h100", "--nodes", "2", "--top", "2")
    run = _cli(*base, "--recompute", "selective", *modules, "--cp", "2")
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and "…" not in run.stdout
    assert all("selective+moe_act+layernorm+mla_up_proj" in row and row.split()[-1] == "optimal" for row in rows)


def test_help_keeps_the_defaults_it_states_in_square_brackets():
    """typer renders help through rich markup, which drops an unescaped "[...]" as an unknown tag."""
    run = _cli("suggest", "--help", columns=240)
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.replace("│", " ").split())
    for default in ("[default: 2^20 tokens / seq-len", "[default: p2p; --emit torchtitan", "[default for MoE models"):
        assert default in text, default


def test_the_example_session_is_what_the_cli_prints():
    """examples/cli_session.md shows commands with their output; each command, run now, prints exactly that."""
    text = (Path(__file__).resolve().parent.parent / "examples" / "cli_session.md").read_text()
    session = text.split("```console\n", 1)[1].rsplit("```", 1)[0]
    for block in session.split("\n$ "):
        command, _, shown = block.removeprefix("$ ").partition("\n")
        run = subprocess.run(
            [sys.executable, "-m", "shardplan.cli", *command.split()[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert (run.stdout + run.stderr).rstrip() == shown.rstrip(), command
