"""`lmlab detect ...` and `lmlab safety eval ...`: argument parsing only; the work is done by
lmlab.safety."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub, common) -> None:
    from lmlab.config import add_flags
    from lmlab.safety.evaluate import SafetyEvalConfig

    d = sub.add_parser("detect", parents=[common], help="is this text machine-written? (zero-shot, or a watermark)",
                       description="Score texts with Fast-DetectGPT (analytic, one model), log-likelihood or "
                                   "log-rank; or test them for the green-list watermark. Each INPUT is a text, "
                                   "a .txt file (one text) or a .jsonl file ({'text': ...} per line).")
    d.add_argument("inputs", nargs="*", metavar="TEXT|FILE")
    d.add_argument("--model", "-m", default=None, help="scoring model (default: bundled smollm2)")
    d.add_argument("--weights", default="auto", help="inference weight format (auto: fp32 for scoring)")
    d.add_argument("--method", default="fast-detectgpt", choices=["fast-detectgpt", "likelihood", "logrank"])
    d.add_argument("--threshold", type=float, default=None,
                   help="score above which a text is machine-generated (default: the method's, or --thresholds)")
    d.add_argument("--thresholds", default=None, metavar="FILE", help="a JSON file written by --calibrate")
    d.add_argument("--calibrate", default=None, metavar="FILE",
                   help="fit thresholds on labelled JSONL ({'text', 'label': 0|1|human|machine}) and print them")
    d.add_argument("--out", default=None, help="with --calibrate: write the thresholds JSON here")
    d.add_argument("--html", default=None, metavar="PATH", help="write the GLTR rank view of the first text here")
    d.add_argument("--watermark", action="store_true", help="test for the green-list watermark (z-test) instead")
    d.add_argument("--gamma", type=float, default=0.25, help="--watermark: green share the text was written with")
    d.add_argument("--key", type=int, default=None, help="--watermark: the hashing key (default transformers')")
    d.add_argument("--z-threshold", type=float, default=4.0, help="--watermark: z above which text is watermarked")
    d.add_argument("--json", action="store_true", help="one JSON object per text")
    d.set_defaults(func=cmd_detect)

    s = sub.add_parser("safety", parents=[common], help="jailbreak and over-refusal evaluation")
    ssub = s.add_subparsers(dest="safety_command", metavar="WHAT", required=True)
    e = ssub.add_parser("eval", parents=[common], help="attack success per jailbreak template, XSTest over-refusal",
                        description="Harmful behaviours asked directly and through jailbreak templates; keyword "
                                    "refusal detector and (with --judge) StrongREJECT scores; XSTest over-refusal.")
    add_flags(e, SafetyEvalConfig)
    e.set_defaults(func=cmd_safety_eval)


def read_texts(inputs: list[str]) -> list[str]:
    from lmlab.errors import LmlabError

    texts = []
    for item in inputs:
        p = Path(item)
        if len(item) < 4096 and p.suffix in (".txt", ".jsonl", ".md") and p.is_file():
            if p.suffix == ".jsonl":
                for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                    if line.strip():
                        try:
                            texts.append(json.loads(line)["text"])
                        except (json.JSONDecodeError, KeyError, TypeError) as err:
                            raise LmlabError(f"{p}:{n}: expected {{\"text\": ...}} ({err})") from None
            else:
                texts.append(p.read_text(encoding="utf-8"))
        else:
            texts.append(item)
    if not texts:
        raise LmlabError("no text given: pass TEXT or FILE (or --calibrate FILE)")
    return texts


def cmd_detect(args) -> int:
    from lmlab.lm import load
    from lmlab.report.table import print_table
    from lmlab.safety import detect, watermark

    if args.watermark:
        w = watermark.parse({"gamma": args.gamma, **({"key": args.key} if args.key is not None else {})})
        texts = read_texts(args.inputs)
        from lmlab.model.config import ModelConfig
        from lmlab.model.io.resolve import resolve
        from lmlab.tokenizer import Tokenizer

        # the green lists need only the vocabulary: no weights are loaded
        folder = resolve(args.model)
        vocab = ModelConfig.from_hf(json.loads((folder / "config.json").read_text())).vocab_size
        tok = Tokenizer.from_folder(folder)
        results = [watermark.detect(tok.encode(t) if t.strip() else [], vocab, w, args.z_threshold,
                                    tok.bos_token_id).to_dict() for t in texts]
        _show(results, args.json, "watermark")
        return 0
    lm = load(args.model, args.weights, workload="scoring")  # detection reads log-probabilities
    if args.calibrate:
        summary = detect.calibrate(lm, args.calibrate, progress=True)
        print_table([{"method": m, **{k: round(v, 4) for k, v in s.items()}} for m, s in summary.items()],
                    title=f"calibration on {args.calibrate}")
        if args.out:
            Path(args.out).write_text(json.dumps({m: s["threshold"] for m, s in summary.items()}, indent=2))
            print(f"wrote {args.out}")
        return 0
    texts = read_texts(args.inputs)
    threshold = args.threshold
    if threshold is None and args.thresholds:
        threshold = json.loads(Path(args.thresholds).read_text()).get(args.method)
    results = detect.score(lm, texts, args.method, threshold, progress=len(texts) > 8)
    if args.html:
        Path(args.html).write_text(detect.gltr_html(lm, texts[0]), encoding="utf-8")
    _show(results, args.json, "detection")
    if args.html:
        print(f"GLTR view: {args.html}")
    return 0


def _show(results: list[dict], as_json: bool, title: str) -> None:
    from lmlab.report.table import print_table

    if as_json:
        for r in results:
            print(json.dumps(r))
    else:
        print_table([{"text": i + 1, **r} for i, r in enumerate(results)], title=title)


def cmd_safety_eval(args) -> int:
    from lmlab.config import from_args
    from lmlab.report.table import print_kv, print_table
    from lmlab.safety.evaluate import SafetyEvalConfig, run, table_rows

    config = from_args(SafetyEvalConfig, args)
    result = run(config)
    if config.json:
        keep = ("templates", "overall", "refusal_rate", "agreement", "xstest", "behaviors", "responses", "png")
        print(json.dumps({k: result[k] for k in keep if k in result}))
        return 0
    print_table(table_rows(result), title="attack success rate per template (95% CI)")
    summary = {"refusal rate (keyword)": round(result["refusal_rate"], 3),
               "any-template ASR": round(result["overall"]["any_template_asr"], 3)}
    if result.get("xstest"):
        summary["XSTest over-refusal (safe refused)"] = result["xstest"]["over_refusal"]
        summary["XSTest unsafe refused"] = result["xstest"]["unsafe_refusal"]
    if result.get("agreement"):
        summary.update({f"judge/keyword {k}": v for k, v in result["agreement"].items()})
    print_kv(summary, title="summary")
    if "png" in result:
        print(f"plot: {result['png']}")
    return 0
