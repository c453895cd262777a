"""Machine-text detection and watermarking on the bundled model, with transformers as the peer.

Human text: SQuAD dev passages and HellaSwag contexts. Machine text: the bundled model's sampled
continuation (T=1) of each human text's opening, cut to the human text's token count, so both
sides have the same lengths and openings. "Paraphrased" machine text has a share of its words
swapped with their neighbours (a light, meaning-keeping edit an evader would make).

Prints:
1. AUROC and TPR at 1% FPR of fast-detectgpt / likelihood / logrank, as written and paraphrased;
2. detection throughput (tokens/s): lmlab's batched scoring against transformers scoring the
   same texts one at a time (the Fast-DetectGPT reference's loop), and the largest difference
   between the two statistics;
3. watermark: detection rate at z > 4 by token count, false positives on human text,
   perplexity (under the unmarked model) with and without the mark, detection after a share of
   tokens is replaced at random;
4. watermark decode overhead: tok/s with and without the mark at 1 and 32 streams.

    .venv/bin/python benchmarks/detect.py --quick     # a few minutes on 2 cores
    .venv/bin/python benchmarks/detect.py --texts 100 --new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def human_texts(n: int, max_words: int) -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / "squad_dev_passages.jsonl").read_text().splitlines()[:n]:
        rows.append(("squad", " ".join(json.loads(line)["text"].split()[:max_words])))
    for line in (DATA / "hellaswag_val_dev500.jsonl").read_text().splitlines()[:n]:
        rec = json.loads(line)
        rows.append(("hellaswag", " ".join((rec["ctx"] + " " + rec["endings"][rec["label"]]).split()[:max_words])))
    return rows


def paraphrase(text: str, share: float, rng: random.Random) -> str:
    words = text.split()
    for i in range(1, len(words) - 1):
        if rng.random() < share / 2:
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def machine_texts(lm, humans: list[str], opening: int, seed: int) -> list[str]:
    """The model's continuation of each human text's first `opening` tokens, to the same length."""
    from lmlab.engine.params import SamplingParams

    tok = lm.tokenizer
    ids = [tok.encode(h) for h in humans]
    prompts = [i[:opening] for i in ids]
    params = [SamplingParams(max_tokens=max(8, len(i) - opening), temperature=1.0, seed=seed + k, ignore_eos=True)
              for k, i in enumerate(ids)]
    outs = lm.engine.generate(prompts, params, progress=True)
    return [tok.decode(p + o.outputs[0].token_ids) for p, o in zip(prompts, outs)]


def transformers_scores(folder, texts: list[str], tok) -> tuple[list[float], float, int]:
    """Fast-DetectGPT's reference loop: one text at a time, the full logits, the analytic statistic."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    scores, tokens = [], 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t)])
            logits = model(ids).logits[:, :-1]
            labels = ids[:, 1:]
            lprobs = torch.log_softmax(logits, -1)
            probs = lprobs.exp()
            ll = lprobs.gather(-1, labels[..., None])[..., 0].sum()
            mean = (probs * lprobs).sum(-1)
            var = (probs * lprobs.square()).sum(-1) - mean.square()
            scores.append(float((ll - mean.sum()) / var.sum().sqrt()))
            tokens += ids.shape[1]
    return scores, time.perf_counter() - t0, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=40, help="human texts per source (SQuAD, HellaSwag)")
    ap.add_argument("--words", type=int, default=80, help="words kept of each human text")
    ap.add_argument("--opening", type=int, default=12, help="tokens of the human text the model continues")
    ap.add_argument("--paraphrase", type=float, default=0.2, help="share of words moved in the paraphrase")
    ap.add_argument("--wm-prompts", type=int, default=16, help="prompts for the watermark figures")
    ap.add_argument("--new-tokens", type=int, default=128, help="watermarked tokens per prompt")
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--delta", type=float, default=2.0)
    ap.add_argument("--bench-tokens", type=int, default=48, help="tokens per stream in the overhead runs")
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.texts, args.words, args.wm_prompts, args.new_tokens, args.bench_tokens = 8, 48, 6, 64, 12

    import numpy as np

    from lmlab.engine.params import SamplingParams
    from lmlab.lm import LM
    from lmlab.model.io.resolve import resolve
    from lmlab.report.table import print_table
    from lmlab.safety import detect, watermark
    from lmlab.safety.watermark import Watermark

    folder = resolve("smollm2")
    lm = LM.load(str(folder), workload="scoring")  # detection reads log-probabilities
    rng = random.Random(args.seed)

    # ---- 1. zero-shot detection -----------------------------------------------------------------
    humans = human_texts(args.texts, args.words)
    machines = machine_texts(lm, [h for _, h in humans], args.opening, args.seed)
    para = [paraphrase(m, args.paraphrase, rng) for m in machines]
    all_texts = [h for _, h in humans] + machines + para
    t0 = time.perf_counter()
    stats = detect.token_stats(lm, all_texts, progress=True)
    ours_s = time.perf_counter() - t0
    H, M = stats[:len(humans)], stats[len(humans):2 * len(humans)]
    P = stats[2 * len(humans):]
    rows = []
    for method in detect.METHODS:
        for source in ("squad", "hellaswag", "all"):
            idx = [i for i, (s, _) in enumerate(humans) if source in (s, "all")]
            for name, side in (("as written", M), ("paraphrased", P)):
                labels = [0] * len(idx) + [1] * len(idx)
                scores = [H[i].score(method) for i in idx] + [side[i].score(method) for i in idx]
                r = detect.roc_summary(labels, scores)
                rows.append({"method": method, "human text": source, "machine text": name, "n": len(labels),
                             "AUROC": round(r["auroc"], 3), "TPR@1%FPR": round(r["tpr_at_1pct_fpr"], 3),
                             "best threshold": round(r["threshold"], 3)})
    print_table(rows, title="zero-shot detection: human vs the bundled model's continuations")

    # ---- 2. throughput against transformers --------------------------------------------------------
    if not args.skip_speed:
        tokens = sum(len(s.ids) for s in stats)
        theirs, their_s, their_tokens = transformers_scores(folder, all_texts, lm.tokenizer)
        diff = max(abs(a - s.score("fast-detectgpt")) for a, s in zip(theirs, stats))
        print_table([{"scorer": "lmlab detect (batched)", "texts": len(all_texts), "tokens": tokens,
                      "seconds": round(ours_s, 2), "tok/s": round(tokens / ours_s, 1)},
                     {"scorer": "transformers, one text at a time", "texts": len(all_texts), "tokens": their_tokens,
                      "seconds": round(their_s, 2), "tok/s": round(their_tokens / their_s, 1)},
                     {"scorer": "ratio (lmlab / transformers)", "tok/s": round((tokens / ours_s) / (their_tokens / their_s), 2),
                      "max |statistic difference|": f"{diff:.2e}"}],
                    title="detection throughput (fast-detectgpt statistic, fp32)")

    # ---- 3. watermark ------------------------------------------------------------------------------
    w = Watermark(gamma=args.gamma, delta=args.delta)
    V = lm.config.vocab_size
    prompts = [lm.tokenizer.encode(" ".join(h.split()[:8])) for _, h in humans[:args.wm_prompts]]
    def gen(mark):
        return lm.engine.generate(prompts, [SamplingParams(max_tokens=args.new_tokens, temperature=1.0, seed=args.seed + i,
                                                           ignore_eos=True, watermark=mark) for i in range(len(prompts))],
                                  progress=True)
    marked, plain = gen(w), gen(None)
    lengths = [n for n in (16, 32, 64, 128, 256) if n <= args.new_tokens]
    rows = []
    for n in lengths:
        z_m = [watermark.detect(o.outputs[0].token_ids[:n], V, w).z for o in marked]
        z_p = [watermark.detect(o.outputs[0].token_ids[:n], V, w).z for o in plain]
        z_h = [watermark.detect(s.ids[:n], V, w).z for s in H if len(s.ids) >= n]
        rows.append({"tokens": n, "detected (z>4), marked": round(np.mean([z > 4 for z in z_m]), 3),
                     "mean z marked": round(float(np.mean(z_m)), 2),
                     "false positives, unmarked model text": round(np.mean([z > 4 for z in z_p]), 3),
                     "false positives, human text": (round(np.mean([z > 4 for z in z_h]), 3) if z_h else "-"),
                     "human texts": len(z_h)})
    print_table(rows, title=f"watermark detection (gamma={w.gamma}, delta={w.delta}, T=1)")

    def ppl(outs):
        return math.exp(-sum(o.outputs[0].cumulative_logprob for o in outs) /
                        sum(len(o.outputs[0].token_ids) for o in outs))
    print_table([{"text": "unmarked", "perplexity (unmarked model)": round(ppl(plain), 2)},
                 {"text": "watermarked", "perplexity (unmarked model)": round(ppl(marked), 2)},
                 {"text": "ratio", "perplexity (unmarked model)": round(ppl(marked) / ppl(plain), 3)}],
                title="perplexity cost of the watermark")
    rows = []
    for share in (0.0, 0.1, 0.2, 0.3, 0.5):
        zs = []
        for o in marked:
            ids = list(o.outputs[0].token_ids)
            for i in range(len(ids)):
                if rng.random() < share:
                    ids[i] = rng.randrange(V)
            zs.append(watermark.detect(ids, V, w).z)
        rows.append({"tokens replaced": share, "detected (z>4)": round(np.mean([z > 4 for z in zs]), 3),
                     "mean z": round(float(np.mean(zs)), 2)})
    print_table(rows, title=f"watermark after random token replacement ({args.new_tokens} tokens)")

    # ---- 4. decode overhead ------------------------------------------------------------------------
    if not args.skip_speed:
        from lmlab.engine.bench import synthetic_prompt

        rows = []
        for streams in (1, 32):
            ps = [synthetic_prompt(lm.tokenizer, 40, i) for i in range(streams)]
            times = {"off": [], "on": []}
            for rep in range(3):  # alternate to spread the machine's noise over both
                for name, mark in (("off", None), ("on", w)):
                    sp = [SamplingParams(max_tokens=args.bench_tokens, temperature=1.0, seed=i, ignore_eos=True,
                                         watermark=mark) for i in range(streams)]
                    watermark._lists.clear()  # a cold green-list cache each run: the worst case
                    t0 = time.perf_counter()
                    lm.engine.generate(ps, sp)
                    times[name].append(time.perf_counter() - t0)
            off, on = min(times["off"]), min(times["on"])
            n = streams * args.bench_tokens
            rows.append({"streams": streams, "tok/s off": round(n / off, 1), "tok/s watermark": round(n / on, 1),
                         "overhead %": round(100 * (on / off - 1), 1)})
        print_table(rows, title="watermark overhead on decode (T=1 sampling both ways, best of 3, cold cache)")
    return 0


if __name__ == "__main__":
    sys.exit(_results.run(main))
