"""The reward model (InstructGPT, Llama 2): the LM's trunk with a scalar head on each response's
last token (trained by `lmlab train rm`, lmlab.train.rm, with lmlab.train.objectives.reward);
saving its head and LoRA state, loading a trained one as a scorer (on the policy's own trunk
where it can), and several combined into one score (`Combined`, e.g. Llama 2's helpfulness and
safety models).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from lmlab.errors import LmlabError
from lmlab.train.objectives import responses as R
from lmlab.train.trainer import _to

HEAD_FILE = "reward_head.safetensors"  # holds "score.weight", the name transformers' *ForSequenceClassification uses


class RewardModel(R.OnTrunk):
    def __init__(self, lm: nn.Module, head: nn.Linear | None = None):
        super().__init__()
        self.lm = lm
        self.config = lm.config
        if head is None:  # transformers' init for a new score head: N(0, initializer_range)
            head = nn.Linear(lm.config.dim, 1, bias=False)
            nn.init.normal_(head.weight, 0.0, 0.02)
        self.head = head.to(next(lm.parameters()).device)

    def forward(self, batch: dict) -> torch.Tensor:
        """One reward per response of a packed batch (see responses.pack): [S]."""
        h = R.hidden_states(self.lm, batch)
        return self.head(h[batch["last"]]).squeeze(-1).float()

    @torch.no_grad()
    def score(self, items: list[tuple[list[int], list[list[int]]]], batch_size: int = 8,
              context=nullcontext) -> list[float]:
        """Rewards for (prompt ids, [response ids, ...]) items, flattened in order. `context` is
        entered around the forward passes (an adapter swap when the trunk is shared)."""
        was = self.lm.training  # a shared trunk (the policy's) goes back to its own mode
        self.eval()
        device = next(self.parameters()).device
        out = []
        with context():
            for s in range(0, len(items), batch_size):
                batch = _to(R.pack(items[s:s + batch_size]), device)
                out += self(batch).tolist()
        self.train(was)
        return out

    def save_head(self, folder) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({"score.weight": self.head.weight.detach().float().contiguous()}, str(Path(folder) / HEAD_FILE))


def load_head(folder) -> nn.Linear:
    from safetensors.torch import load_file

    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise LmlabError(f"{folder}: not a reward model (no {HEAD_FILE}); train one with `lmlab train rm`")
    w = load_file(str(path))["score.weight"]
    head = nn.Linear(w.shape[1], 1, bias=False)
    head.weight.data.copy_(w)
    return head


class Combined:
    """Several reward models as one score. how="sum": sum of weight * reward. how="gate"
    (Llama 2): the last model judges safety; below `threshold` its reward is the score,
    otherwise the first model's (helpfulness)."""

    def __init__(self, scorers: list, weights: list[float] | None = None, how: str = "sum",
                 threshold: float = 0.0):
        if how not in ("sum", "gate"):
            raise LmlabError(f"reward combination must be sum or gate, got {how!r}")
        if how == "gate" and len(scorers) < 2:
            raise LmlabError("gate needs two reward models: helpfulness first, safety last")
        self.scorers, self.how, self.threshold = scorers, how, threshold
        self.weights = weights or [1.0] * len(scorers)
        if len(self.weights) != len(scorers):
            raise LmlabError(f"{len(self.weights)} reward weights for {len(scorers)} reward models")

    def __call__(self, items) -> list[float]:
        scores = [s(items) for s in self.scorers]
        if self.how == "sum":
            return [sum(w * x for w, x in zip(self.weights, xs)) for xs in zip(*scores)]
        return [xs[-1] if xs[-1] < self.threshold else xs[0] for xs in zip(*scores)]


# ---- loading a trained reward model, sharing the policy's base where possible -------------------

LORA_FILE = "lora_state.safetensors"  # the adapter by our module names, for swapping into a policy


def save_lora_state(lm, folder) -> None:
    """The trunk's LoRA weights by parameter name, with their scaling: what `load` swaps into a
    policy built on the same base."""
    from safetensors.torch import save_file

    from lmlab.model.peft.lora import lora_modules

    mods = lora_modules(lm)
    state = {n: p.detach().float().contiguous() for n, p in lm.named_parameters() if ".lora_" in n}
    scaling = {m.scaling for m in mods.values()}
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file(state, str(Path(folder) / LORA_FILE), metadata={"scaling": str(scaling.pop())})


@contextmanager
def swapped(model, state: dict[str, torch.Tensor]):
    """Run the model with other LoRA weights of the same shapes (outside autograd only): the
    parameters' storage is exchanged, not copied, and exchanged back afterwards."""
    params = dict(model.named_parameters())
    for n, t in state.items():
        params[n].data, state[n] = t, params[n].data
    try:
        yield
    finally:
        for n, t in state.items():
            params[n].data, state[n] = t, params[n].data


def load(path, policy=None, policy_folder=None, device="cpu"):
    """A trained reward model as a scorer: items -> rewards. `path` is a run folder of
    `lmlab train rm` (or its final/). With a LoRA policy built on the reward model's own base
    folder, the reward model runs on the policy's trunk, so no second model is in memory: a LoRA
    reward model has its adapter swapped in, a probe (method feature: trunk untouched) has the
    adapters switched off."""
    from lmlab.model.io.hf import load_model

    run = Path(path)
    final = run / "final" if (run / "final").is_dir() else run
    shared = _on_policy(run, policy, policy_folder) if policy is not None and policy_folder is not None else None
    if shared is not None:
        return shared
    rm = RewardModel(load_model(final).to(device), load_head(final)).eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    return rm.score


def _on_policy(run: Path, policy, policy_folder):
    """The reward model as the policy's trunk in another state, or None when it cannot be."""
    import yaml
    from safetensors import safe_open

    from lmlab.model.io.resolve import resolve
    from lmlab.model.peft.lora import lora_disabled, lora_modules

    mods = lora_modules(policy)
    if not mods or not (run / "config.yaml").is_file():
        return None
    trained = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    same_base = Path(resolve(trained.get("model"))).resolve() == Path(policy_folder).resolve()
    if trained.get("method") == "feature" and same_base:
        rm = RewardModel(policy, load_head(run / "final"))
        return lambda items: rm.score(items, context=lambda: lora_disabled(policy))
    adapter = run / "adapter"
    if not (same_base and (adapter / LORA_FILE).is_file()):
        return None
    with safe_open(str(adapter / LORA_FILE), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        scaling = float(f.metadata()["scaling"])
    params = dict(policy.named_parameters())
    if not (all(k in params and params[k].shape == v.shape for k, v in state.items())
            and len(state) == sum(1 for k in params if ".lora_" in k)
            and {m.scaling for m in mods.values()} == {scaling}):
        return None
    state = {k: v.to(device=params[k].device, dtype=params[k].dtype) for k, v in state.items()}
    rm = RewardModel(policy, load_head(adapter))
    return lambda items: rm.score(items, context=lambda: swapped(policy, state))


def load_scorer(cfg, policy=None, policy_folder=None, device="cpu"):
    """cfg.rm.models combined (cfg.rm.combine) into one scorer."""
    if not cfg.rm.models:
        raise LmlabError("no reward model: give rm.models (--reward-model RUN_DIR), trained with `lmlab train rm`")
    scorers = [load(p, policy, policy_folder, device) for p in cfg.rm.models]
    if len(scorers) == 1:
        return scorers[0]
    return Combined(scorers, cfg.rm.weights or None, cfg.rm.combine, cfg.rm.threshold)
