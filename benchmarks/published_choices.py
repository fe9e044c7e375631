"""Does the planner pick the degrees that published sweeps found best?
(fixtures/validation/parallelism_choice_findings.csv)

python benchmarks/published_choices.py    -> prints and writes benchmarks/results/published_choices.md

Where a paper compared a fixed set of degrees (Narayanan et al. 2021, Figures 13-15), every member
of that set is estimated with its best options and the fastest is compared with the published
best. The Llama 3 production choice is compared with a free `suggest()`. Each row prints
the estimated step time of our pick and of the published one, so a mismatch shows by how much.
"""

from __future__ import annotations

from pathlib import Path

from shardplan import Training, estimate, load_model, load_topology, suggest
from shardplan.errors import ShardplanError

HERE = Path(__file__).parent
GPT_162B, GPT_5_9B = HERE / "models/gpt-162b.json", HERE / "models/gpt-5.9b.json"
CASES = [
    # row id, model, topology, nodes, batch, seq, published (tp, pp, dp), compared set (None: free search)
    ("NAR-F13", GPT_162B, "dgx-a100", 8, 512, 2048, (8, 8, 1), [(t, 64 // t, 1) for t in (2, 4, 8, 16, 32)]),
    ("NAR-F14", GPT_5_9B, "dgx-a100", 8, 512, 2048, (1, 1, 64), [(1, p, 64 // p) for p in (1, 2, 4, 8, 16, 32)]),
    ("NAR-F15", GPT_5_9B, "dgx-a100", 8, 512, 2048, (1, 1, 64), [(t, 1, 64 // t) for t in (1, 2, 4, 8, 16, 32)]),
    ("LLAMA3-405B", "llama3-405b", "dgx-h100", 2048, 2048, 8192, (8, 16, 128), None),
]


def best_with_degrees(model, topo, train, tp: int, pp: int, dp: int) -> tuple[float, str] | None:
    """The fastest fitting estimate of these degrees over micro-batch, interleaving, ZeRO, recompute."""
    best = None
    for mb in (1, 2):
        for z in (0, 1, 2, 3) if dp > 1 else (0,):
            for r in ("none", "selective", "full"):
                for v in (1, 2, 4, 8):
                    t = train.model_copy(update={"zero_stage": z, "recompute": r})
                    try:
                        p = estimate(model, topo, t, tp=tp, pp=pp, dp=dp, micro_batch=mb, virtual_stages=v)
                    except ShardplanError:  # degrees that cannot take this option
                        continue
                    if p.fits and (best is None or p.step_time_s < best[0]):
                        best = (p.step_time_s, f"mb {mb}, v {v}, ZeRO-{z}, recompute {r}")
    return best


def main() -> None:
    lines = [
        "| row | model | GPUs | published tp,pp,dp | ours tp,pp,dp | est. s/step ours | est. s/step theirs | match |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, src, topo_name, nodes, batch, seq, published, compared in CASES:
        model, topo = load_model(src), load_topology(topo_name, nodes=nodes)
        train = Training(global_batch=batch, seq_len=seq)
        if compared is None:
            plan = suggest(model, topo, train, top_k=1, time_limit_s=30)[0]
            ours = (plan.tp, plan.pp, plan.dp)
            ours_s = (plan.step_time_s, f"mb {plan.micro_batch}, v {plan.virtual_stages}, ZeRO-{plan.zero_stage}")
        else:
            scored = {d: best_with_degrees(model, topo, train, *d) for d in compared}
            ours, ours_s = min(((d, s) for d, s in scored.items() if s), key=lambda item: item[1][0])
        theirs = best_with_degrees(model, topo, train, *published)
        their_text = f"{theirs[0]:.2f} ({theirs[1]})" if theirs else "does not fit"
        line = (
            f"| {row} | {model.name} | {topo.num_gpus} | {published} | {ours} | {ours_s[0]:.2f} ({ours_s[1]}) | "
            f"{their_text} | {'yes' if ours == published else 'no'} |"
        )
        print(line, flush=True)
        lines.append(line)
    (HERE / "results/published_choices.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
