"""InstructGPT in miniature on the bundled model, on a CPU: SFT -> reward model -> PPO, with DPO
alongside, on preference data the project writes itself (lmlab.train.prefgen: right vs wrong
arithmetic, refusing vs complying with harmful requests, concise vs rambling answers).

    python recipes/instructgpt.py [--out runs/instructgpt] [--pairs 96] [--ppo-rollouts 4]

Writes OUT/report.json and OUT/report.md with: the reward model's held-out pair accuracy; PPO's
reward, KL and response length over its steps (OUT/ppo_curves.png); and the win rate of the PPO
and DPO models over the SFT model under the reward model, on held-out prompts (greedy answers).
Every stage is the Python API that `lmlab train sft|rm|ppo|dpo` calls; the configs each stage
ran with are in OUT/<stage>/config.yaml.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def make_data(out: Path, pairs: int, held: int, seed: int) -> dict:
    """Demonstrations for SFT (the preferred answers of their own prompts), pairs for the reward
    model and DPO, held-out pairs; disjoint draws of the generator."""
    from lmlab.train.prefgen import make_preferences, write_jsonl

    demos = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in make_preferences(pairs // 2, seed + 1)]
    return {"sft": str(write_jsonl(demos, out / "data" / "sft.jsonl")),
            "pairs": str(write_jsonl(make_preferences(pairs, seed), out / "data" / "pairs.jsonl")),
            "held": str(write_jsonl(make_preferences(held, seed + 2), out / "data" / "held.jsonl"))}


def config(**values):
    from lmlab.config import load_config
    from lmlab.train.config import TrainConfig

    return load_config(TrainConfig, None, None, **{"max_length": 128, "progress": False, "batch_size": 8, **values})


def win_rates(models: dict[str, str], held: str, scorer, max_new_tokens: int) -> dict:
    """Greedy answers of each model to the held-out prompts; for each aligned model the fraction of
    prompts where its answer out-scores the SFT model's (ties count half)."""
    from lmlab.engine.params import SamplingParams
    from lmlab.lm import LM
    from lmlab.train.preference import prompt_ids, read_prompts
    from lmlab.train.rl import completion_ids

    prompts = read_prompts(held)
    scores, samples = {}, {}
    for name, folder in models.items():
        lm = LM.load(folder)
        ids = [prompt_ids(p, lm.tokenizer) for p in prompts]
        outs = lm.engine.generate(ids, SamplingParams(temperature=0, max_tokens=max_new_tokens))
        scores[name] = scorer([(p, [completion_ids(o.outputs[0])]) for p, o in zip(ids, outs)])
        samples[name] = [o.outputs[0].text for o in outs[:3]]
    sft = scores.pop("sft")
    rates = {name: sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(s, sft)) / len(sft)
             for name, s in scores.items()}
    means = {name: sum(s) / len(s) for name, s in {**scores, "sft": sft}.items()}
    return {"win_rate_vs_sft": rates, "mean_reward": means, "examples": samples}


def plot_ppo(metrics: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    keys = [("reward", "eval_reward"), ("kl", "eval_kl"), ("length", "eval_length")]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for ax, (rollout, held) in zip(axes, keys):
        for key, style in ((rollout, "-"), (held, "o--")):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=key)
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0].set_title("PPO: rollout (line) and held-out (points) reward, KL, response length")
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main() -> None:
    from lmlab.train import dpo as train_dpo, rl, rm as train_rm, sft as train_sft
    from lmlab.train.reward_model import load as load_reward

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/instructgpt")
    p.add_argument("--pairs", type=int, default=96)
    p.add_argument("--held", type=int, default=32)
    p.add_argument("--ppo-rollouts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    data = make_data(out, args.pairs, args.held, args.seed)
    report = {}

    sft = train_sft.sft(config(data=data["sft"], output=str(out / "sft"), epochs=1, lr=5e-4))
    report["sft_loss"] = sft["loss"]
    rm = train_rm.rm(config(model=sft["final"], data=data["pairs"], eval_data=data["held"], output=str(out / "rm"),
                         epochs=1, lr=5e-4))
    report["rm_held_out_accuracy"] = rm["eval_accuracy"]
    ppo = rl.ppo(config(model=sft["final"], data=data["pairs"], eval_data=data["held"], output=str(out / "ppo"),
                        epochs=args.ppo_rollouts, lr=2e-4, rm={"models": [str(out / "rm")]},
                        ppo={"rollout_size": 8, "max_new_tokens": args.max_new_tokens, "kl_coef": 0.05,
                             "kl_target": 3.0, "kl_horizon": 200, "eval_prompts": args.held}))
    rows = [json.loads(l) for l in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    report["ppo"] = {k: {"start": rows[0].get(k), "end": rows[-1].get(k)} for k in ("eval_reward", "eval_kl", "eval_length")}
    report["ppo_curves"] = str(plot_ppo(out / "ppo" / "metrics.jsonl", out / "ppo_curves.png"))
    dpo = train_dpo.dpo(config(model=sft["final"], data=data["pairs"], eval_data=data["held"], output=str(out / "dpo"),
                           epochs=1, lr=2e-4, batch_size=4))
    report["dpo_held_out_implicit_accuracy"] = dpo["eval_accuracy"]
    scorer = load_reward(out / "rm")
    report.update(win_rates({"sft": sft["final"], "ppo": ppo["final"], "dpo": dpo["final"]}, data["held"], scorer,
                            args.max_new_tokens))
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = ["| measure | value |", "|---|---|",
             f"| reward model held-out pair accuracy | {report['rm_held_out_accuracy']:.3f} |",
             f"| DPO held-out implicit-reward accuracy | {report['dpo_held_out_implicit_accuracy']:.3f} |"]
    for k, v in report["ppo"].items():
        lines.append(f"| PPO {k} start -> end | {v['start']:.3f} -> {v['end']:.3f} |")
    for name, rate in report["win_rate_vs_sft"].items():
        lines.append(f"| {name.upper()} win rate over SFT (reward model) | {rate:.3f} |")
    for name, mean in report["mean_reward"].items():
        lines.append(f"| {name.upper()} mean reward on held-out prompts | {mean:.3f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
