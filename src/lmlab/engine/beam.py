"""Beam search for one prompt, token for token what transformers' `generate(num_beams=W,
do_sample=False, length_penalty=..., early_stopping=...)` returns.

Each step scores every (beam, next token) pair by its summed log-probability and keeps the best
K = max(2, 1 + number of EOS ids) * W candidates: enough that W of them can go on even if every
beam's best continuations are EOS tokens.
- Among the best W candidates, those that end here (an EOS token, or the token budget spent)
  become finished hypotheses scored sum_logprobs / generated_len ** length_penalty (the EOS
  token counts in both). The W best hypotheses found so far are kept.
- The best W candidates that do not end become the running beams of the next step.
The search stops when the budget is spent, or earlier, once W hypotheses are kept and
- early_stopping=True: at once;
- early_stopping=False: the best running beam, scored at its current length, cannot beat the
  worst kept hypothesis;
- early_stopping="never": the same, but scored at the full budget when length_penalty > 0
  (where longer can only score higher), which rarely stops before the budget is spent.
The result is the n best hypotheses, best first.

Scores are float32 and "impossible" is -1e9 rather than -inf, as in transformers, so that the
same candidates win the same ties.

Not carried over from transformers: batches of prompts, sampling (do_sample beam search) and
logits processors. Unlike transformers, the search also ends (finish_reason "length") where the
sequence would outgrow the model's context.

Output constraints (guided_json / regex / choice / grammar, structured_outputs) are refused with
an LmlabError, here as in the CLI (`lmlab generate --beam`) and the server (`use_beam_search`):
the search has no grammar mask (each beam would need its own grammar state, forked and reordered
with the cache). Constrained output is the engine's (greedy or sampled SamplingParams with guided_*).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lmlab.engine.kv_cache import KVCache
from lmlab.errors import LmlabError

IMPOSSIBLE = -1.0e9


@dataclass
class BeamParams:
    num_beams: int = 4
    max_tokens: int = 64
    length_penalty: float = 1.0  # > 0 favours longer hypotheses, < 0 shorter ones
    early_stopping: bool | str = False  # True, False or "never"
    n: int = 1  # hypotheses returned (transformers' num_return_sequences)
    stop_token_ids: list[int] = field(default_factory=list)  # EOS ids
    # SamplingParams' constraint keywords, accepted only to be refused by name (see above)
    guided_json: object = None
    guided_json_object: bool = False
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    structured_outputs: dict | None = None

    def __post_init__(self):
        refuse_constraint([f for f in CONSTRAINT_FIELDS if getattr(self, f) not in (None, False)])
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise LmlabError(f"num_beams must be >= 1, got {self.num_beams!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise LmlabError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if not isinstance(self.n, int) or self.n < 1:
            raise LmlabError(f"n must be in [1, num_beams={self.num_beams}], got {self.n!r}")
        if self.n > self.num_beams:
            raise LmlabError(f"n larger than num_beams: n must be in [1, num_beams={self.num_beams}], got {self.n}")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise LmlabError(f"early_stopping must be True, False or \"never\", got {self.early_stopping!r}")
        if not all(isinstance(t, int) for t in self.stop_token_ids):
            raise LmlabError(f"stop_token_ids must be a list of ints, got {self.stop_token_ids!r}")
        self.length_penalty = float(self.length_penalty)
        self.stop_token_ids = list(dict.fromkeys(self.stop_token_ids))


CONSTRAINT_FIELDS = ("guided_json", "guided_json_object", "guided_regex", "guided_choice", "guided_grammar",
                     "structured_outputs")


def refuse_constraint(given: list[str], where: str = "beam search") -> None:
    """LmlabError naming the constraint(s) `given` to beam search; nothing when none is."""
    if given:
        raise LmlabError(f"{where} does not support output constraints (got {', '.join(given)}): it has no "
                         "grammar mask; use greedy decoding (temperature 0) or sampling with the constraint instead")


@dataclass
class Beam:
    token_ids: list[int]  # generated ids, the final EOS excluded
    score: float  # cumulative_logprob / generated_len ** length_penalty (transformers' sequences_scores)
    cumulative_logprob: float  # summed log-probs of the generated tokens, the final EOS included
    finish_reason: str  # "stop" (an EOS id) or "length" (max_tokens or the model's context)


@torch.inference_mode()
def beam_search(model, prompt_ids: list[int], params: BeamParams) -> list[Beam]:
    """The `params.n` best hypotheses continuing `prompt_ids`, best first."""
    if not isinstance(params, BeamParams):  # e.g. a SamplingParams, perhaps with a constraint
        grammar = getattr(params, "grammar", None)
        refuse_constraint([f"{type(params).__name__} with guided_{grammar.kind}"] if grammar is not None else [])
        raise LmlabError(f"beam_search takes BeamParams, got {type(params).__name__}")
    W, lp, stopping = params.num_beams, params.length_penalty, params.early_stopping
    ctx = model.config.max_seq_len
    if not prompt_ids:
        raise LmlabError("empty prompt: nothing to continue")
    if len(prompt_ids) >= ctx:
        raise LmlabError(f"prompt has {len(prompt_ids)} tokens; the model's context is {ctx} tokens")
    budget = min(params.max_tokens, ctx - len(prompt_ids))
    weight = next(model.parameters())
    device = weight.device
    eos = torch.tensor(params.stop_token_ids, dtype=torch.long, device=device)
    K = max(2, 1 + len(eos)) * W
    in_top_w = torch.arange(K, device=device) < W

    # Prefill once; every beam starts as a copy of that one row. Only beam 0's candidates count at
    # the first step (the others start at IMPOSSIBLE), so the W beams do not pick the same tokens.
    cache = KVCache(model.config, 1, len(prompt_ids) + budget, weight.dtype, device)
    logits = model(torch.tensor([prompt_ids], device=device), cache=cache, last_only=True)[:, -1]
    cache.reorder(torch.zeros(W, dtype=torch.long, device=device))
    logits = logits.expand(W, -1)

    # Running beams: generated tokens [W, t-1] and summed log-probs [W].
    tokens = torch.empty(W, 0, dtype=torch.long, device=device)
    sums = torch.full((W,), IMPOSSIBLE, device=device)
    sums[0] = 0.0
    # The W best finished hypotheses, best first (tokens padded to the budget); slots not yet
    # filled have score IMPOSSIBLE and filled=False.
    kept = dict(tokens=torch.zeros(W, budget, dtype=torch.long, device=device),
                length=torch.zeros(W, dtype=torch.long, device=device),
                score=torch.full((W,), IMPOSSIBLE, device=device),
                logprob=torch.zeros(W, device=device),
                eos=torch.zeros(W, dtype=torch.bool, device=device),
                filled=torch.zeros(W, dtype=torch.bool, device=device))

    for t in range(1, budget + 1):  # t: generated length once this step's token is added
        logprobs = F.log_softmax(logits.float(), dim=-1)
        vocab = logprobs.shape[-1]
        cand_sum, flat = (sums[:, None] + logprobs).view(-1).topk(K)
        parent, token = flat // vocab, flat % vocab
        is_eos = torch.isin(token, eos)
        ends = is_eos | (t == budget)

        # Candidates that end here and rank in the top W compete with the kept hypotheses.
        finished = ends & in_top_w
        cand_tokens = torch.zeros(K, budget, dtype=torch.long, device=device)
        cand_tokens[:, :t - 1] = tokens[parent]
        cand_tokens[:, t - 1] = token
        cand = dict(tokens=cand_tokens, length=torch.full((K,), t, device=device),
                    score=torch.where(finished, cand_sum / t ** lp, IMPOSSIBLE),
                    logprob=cand_sum, eos=is_eos, filled=finished)
        best = torch.cat([kept["score"], cand["score"]]).topk(W).indices
        kept = {key: torch.cat([kept[key], cand[key]])[best] for key in kept}
        if t == budget:
            break

        # The best W candidates that go on become the running beams.
        go_on = (cand_sum + IMPOSSIBLE * ends).topk(W).indices
        sums = cand_sum[go_on]
        tokens = torch.cat([tokens[parent[go_on]], token[go_on, None]], dim=1)

        if kept["filled"].all():
            if stopping is True:
                break
            # Could the best running beam still beat the worst kept hypothesis?
            best_len = budget if stopping == "never" and lp > 0 else t
            if not (sums[:1] / best_len ** lp > kept["score"].min()).item():
                break

        cache.reorder(parent[go_on])
        logits = model(tokens[:, -1:], cache=cache)[:, -1]

    out = []
    for i in range(params.n):
        stop = bool(kept["eos"][i])
        out.append(Beam(token_ids=kept["tokens"][i, :int(kept["length"][i]) - stop].tolist(),
                        score=float(kept["score"][i]), cumulative_logprob=float(kept["logprob"][i]),
                        finish_reason="stop" if stop else "length"))
    return out
