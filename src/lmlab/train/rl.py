"""RL from a reward model: `ppo(cfg)`, `grpo(cfg)` and rejection sampling `rsft(cfg)`.

PPO and GRPO run on the one Trainer: a trainer epoch is one rollout. `Rollouts.plan(epoch)`
samples responses to `ppo.rollout_size` prompts with the current policy through the Engine,
scores them with the reward model, computes the rollout policy's and the reference's log-probs
(and PPO's values) once, and returns the micro-batches of `ppo.ppo_epochs` shuffled passes over
them; the trainer's optimizer, schedule, logging and checkpoints do the rest. A resumed run
samples its next rollout afresh.

With LoRA one base model serves every role: the policy is the base plus adapters, the reference
the base with adapters off, the value head sits on the policy's trunk, and a reward model
trained with LoRA on the same base is its adapter swapped in while scoring.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from lmlab.errors import LmlabError
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import grpo as G
from lmlab.train.objectives import ppo as P
from lmlab.train.objectives import responses as R
from lmlab.train.preference import NO_DATA, prompt_ids, read_prompts
from lmlab.train.run import Run, reference_model
from lmlab.train.trainer import Batches, _to


def completion_ids(c) -> list[int]:
    """A completion's tokens as the policy chose them, its stop token included."""
    stopped = c.finish_reason == "stop" and isinstance(c.stop_reason, int)
    return list(c.token_ids) + ([c.stop_reason] if stopped else [])


class Rollouts:
    def __init__(self, cfg: TrainConfig, lm, engine, prompts: list[list[int]], scorer, reference=None,
                 value: P.PolicyValue | None = None):
        c = cfg.ppo
        self.cfg, self.c, self.lm, self.engine, self.prompts = cfg, c, lm, engine, prompts
        self.scorer, self.reference, self.value = scorer, reference, value
        self.k = 1 if value is not None else c.samples  # PPO: one response per prompt; GRPO: a group
        self.kl = P.KLController(c.kl_coef, c.kl_target, c.kl_horizon)
        self.examples: list[P.Rollout] = []  # refilled in place: the trainer holds this list
        self.stats: dict = {}
        self._plans: dict[int, list] = {}
        if c.temperature <= 0:
            raise LmlabError(f"ppo.temperature must be > 0: the policy is the sampling distribution, got {c.temperature}")
        if c.rollout_size % (cfg.batch_size * cfg.grad_accum):
            raise LmlabError(f"ppo.rollout_size ({c.rollout_size}) must be a multiple of batch_size x grad_accum "
                             f"({cfg.batch_size * cfg.grad_accum}), so that updates do not straddle rollouts")

    def batches(self) -> Batches:
        return Batches(self.examples, self.plan, lambda items: {**P.collate(items), "stats": self.stats})

    def plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            self._plans = {epoch: self._rollout(epoch)}
        return self._plans[epoch]

    # ---- sampling, scoring, log-probs ------------------------------------------------------------

    def sample(self, prompts: list[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        """n responses per prompt from the current policy (adapter dropout off)."""
        from lmlab.engine.params import SamplingParams

        was = self.lm.training
        self.lm.eval()
        params = [SamplingParams(n=n, temperature=self.c.temperature, max_tokens=self.c.max_new_tokens,
                                 seed=seed + 7919 * i) for i in range(len(prompts))]
        outs = self.engine.generate(prompts, params)
        self.lm.train(was)
        return [[completion_ids(c) for c in o.outputs] for o in outs]

    @torch.no_grad()
    def logps(self, items) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
        """Per item (flat over its responses' tokens): the policy's and the reference's log-probs,
        and PPO's values."""
        from lmlab.model.peft.lora import lora_disabled

        device, T = next(self.lm.parameters()).device, self.c.temperature
        policy, ref, values = [], [], []
        was = self.lm.training
        self.lm.eval()
        for s in range(0, len(items), self.cfg.batch_size):
            chunk = items[s:s + self.cfg.batch_size]
            batch = _to(R.pack(chunk), device)
            if self.value is not None:
                lp, _, v = self.value(batch, T)
                values += _split(v, chunk)
            else:
                lp = R.token_logps(self.lm, batch, temperature=T)
            policy += _split(lp, chunk)
            if self.reference is not None:
                ref += _split(R.token_logps(self.reference, batch, temperature=T), chunk)
            else:
                with lora_disabled(self.lm):
                    ref += _split(R.token_logps(self.lm, batch, temperature=T), chunk)
        self.lm.train(was)
        return policy, ref, values if self.value is not None else None

    def scores(self, items) -> list[float]:
        """Reward model scores, less the missing-EOS penalty for responses cut at the length limit."""
        stop = self.engine.eos
        out = self.scorer(items)
        responses = [r for _, rs in items for r in rs]
        return [s - (self.c.missing_eos_penalty if r[-1] not in stop else 0.0) for s, r in zip(out, responses)]

    def _rollout(self, epoch: int) -> list[list[int]]:
        c, cfg = self.c, self.cfg
        rng = random.Random(f"{cfg.seed}-rollout-{epoch}")
        prompts = [self.prompts[i] for i in rng.sample(range(len(self.prompts)), c.rollout_size)]
        responses = self.sample(prompts, self.k, cfg.seed * 100_003 + epoch * 1009)
        items = list(zip(prompts, responses))
        scores = self.scores(items)
        policy, ref, values = self.logps(items)
        kls = [P.kl_penalty(lp, r, c.kl_estimator) for lp, r in zip(policy, ref)]
        if self.value is not None:
            self.examples[:] = self._ppo(items, scores, policy, ref, values, kls)
        else:
            self.examples[:] = self._grpo(items, scores, policy, ref)
        n = len(scores)
        kl_mean = sum(float(k.sum()) for k in kls) / n
        self.stats = {"reward": sum(scores) / n, "kl": kl_mean, "kl_coef": self.kl.coef,
                      "length": sum(len(r) for _, rs in items for r in rs) / n}
        self.kl.update(kl_mean, n)
        order = list(range(len(self.examples)))
        plan = []
        for e in range(c.ppo_epochs):
            random.Random(f"{cfg.seed}-{epoch}-{e}").shuffle(order)
            plan += [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        return plan

    def _ppo(self, items, scores, policy, ref, values, kls) -> list[P.Rollout]:
        c, out = self.c, []
        for (p, [r]), score, lp, rf, v, kl in zip(items, scores, policy, ref, values, kls):
            rewards = (-self.kl.coef * kl).tolist()
            rewards[-1] += score
            adv, ret = P.gae(rewards, v.tolist(), c.gamma, c.lam)
            out.append(P.Rollout(p, [r], lp.tolist(), rf.tolist(), adv, v.tolist(), ret))
        if c.whiten_advantages:
            flat = P.whiten(torch.tensor([a for x in out for a in x.advantages])).tolist()
            at = 0
            for x in out:
                x.advantages, at = flat[at:at + len(x.advantages)], at + len(x.advantages)
        return out

    def _grpo(self, items, scores, policy, ref) -> list[P.Rollout]:
        adv = G.group_advantages(scores, self.k)
        out = []
        for g, ((p, rs), lp, rf) in enumerate(zip(items, policy, ref)):
            tokens = [a for a, r in zip(adv[g * self.k:(g + 1) * self.k], rs) for _ in r]
            out.append(P.Rollout(p, rs, lp.tolist(), rf.tolist(), tokens))
        return out

    # ---- held-out evaluation ----------------------------------------------------------------------

    def evaluate(self, prompts: list[list[int]]) -> dict:
        """Mean reward, KL to the reference (k1, per response) and length of one sampled response
        per held-out prompt (fixed seeds, so evaluations compare)."""
        responses = self.sample(prompts, 1, self.cfg.seed + 12345)
        items = [(p, rs) for p, rs in zip(prompts, responses)]
        scores = self.scores(items)
        policy, ref, _ = self.logps(items)
        n = len(items)
        return {"eval_reward": sum(scores) / n,
                "eval_kl": sum(float((lp - r).sum()) for lp, r in zip(policy, ref)) / n,
                "eval_length": sum(len(rs[0]) for rs in responses) / n}


def _split(flat: torch.Tensor, chunk) -> list[torch.Tensor]:
    """Flat per-token values of a packed chunk, one tensor per item (its responses' tokens)."""
    sizes = [sum(len(r) for r in rs) for _, rs in chunk]
    return [t.cpu() for t in flat.split(sizes)]


# ---- runs ------------------------------------------------------------------------------------------

def _start(cfg: TrainConfig, name: str, title: str):
    """Shared by ppo, grpo and rsft: the run's start, the engine, the prompts' encoder and the
    reward scorer."""
    from lmlab.lm import LM
    from lmlab.train.reward_model import load_scorer

    run = Run(cfg, name, title, NO_DATA, check=lambda path: read_prompts(path, cfg.skip_bad_rows, cfg.strict))
    if run.d.world > 1:
        raise LmlabError(f"{name} runs in one process (rollouts are not sharded across ranks)")
    run.model.to(run.d.device)
    scorer = load_scorer(cfg, run.model, run.folder, run.d.device)
    engine = LM(run.model, run.tokenizer, Path(run.folder)).engine
    engine.max_batch = max(engine.max_batch, cfg.ppo.samples)
    encode = lambda path: [prompt_ids(p, run.tokenizer, cfg.chat_template)[-cfg.max_length // 2:]
                           for p in read_prompts(path, cfg.skip_bad_rows, cfg.strict)]
    return run, scorer, engine, encode


def _rl(cfg: TrainConfig, name: str, title: str) -> dict:
    run, scorer, engine, encode = _start(cfg, name, title)
    prompts = encode(cfg.data)
    if len(prompts) < cfg.ppo.rollout_size:
        raise LmlabError(f"{cfg.data}: {len(prompts)} prompts, fewer than ppo.rollout_size={cfg.ppo.rollout_size}")
    value = P.PolicyValue(run.model) if name == "ppo" else None
    reference = reference_model(cfg, run.folder, run.d.device)
    rollouts = Rollouts(cfg, run.model, engine, prompts, scorer, reference, value)
    c = cfg.ppo
    if name == "ppo":
        loss = P.make_loss(c.clip, c.clip_value, c.vf_coef, c.temperature)
    else:
        loss = G.make_loss(c.clip, c.kl_coef, c.temperature)
    held = encode(cfg.eval_data)[:c.eval_prompts] if cfg.eval_data else None
    evaluate = (lambda m: rollouts.evaluate(held)) if held else None
    result = run.fit(loss, rollouts.batches(), evaluate, model=value or run.model,
                     baseline=(lambda: rollouts.evaluate(held)) if held else None)
    return run.finish(result)


def ppo(cfg: TrainConfig) -> dict:
    """RLHF with PPO against cfg.rm.models; eval_reward / eval_kl on held-out prompts."""
    return _rl(cfg, "ppo", "PPO")


def grpo(cfg: TrainConfig) -> dict:
    """GRPO against cfg.rm.models: ppo.samples responses per prompt, no value model."""
    return _rl(cfg, "grpo", "GRPO")


def rsft(cfg: TrainConfig) -> dict:
    """Rejection-sampling fine-tuning (Llama 2): ppo.samples responses per prompt, the best by the
    reward model kept (the engine's best-of-N with the reward model as its scorer), then SFT on
    them. The kept data is DIR/best_of_K.jsonl."""
    from lmlab.engine.params import SamplingParams
    from lmlab.train.objectives import sft as sft_objective
    from lmlab.train.sft import sft_batches

    c = cfg.ppo
    if c.samples < 2:
        raise LmlabError(f"rsft keeps the best of ppo.samples responses; give ppo.samples >= 2, got {c.samples}")
    run, scorer, engine, _ = _start(cfg, "rsft", "rejection sampling SFT")
    model, tokenizer = run.model, run.tokenizer
    conversations = read_prompts(cfg.data, cfg.skip_bad_rows, cfg.strict)
    ids = [prompt_ids(p, tokenizer, cfg.chat_template) for p in conversations]
    seen = []

    def score(prompt, completion) -> float:
        seen.append(scorer([(prompt, [completion_ids(completion)])])[0])
        return seen[-1]

    params = [SamplingParams(n=1, best_of=c.samples, temperature=c.temperature, max_tokens=c.max_new_tokens,
                             seed=cfg.seed + 7919 * i) for i in range(len(ids))]
    model.eval()
    outs = engine.generate(ids, params, scorer=score, progress=cfg.progress and run.d.main)
    model.train()
    k = c.samples  # the engine scores a request's K samples one after another
    best = [max(seen[i:i + k]) for i in range(0, len(seen), k)]
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"best_of_{c.samples}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for conv, o in zip(conversations, outs):
            f.write(json.dumps({"messages": conv + [{"role": "assistant", "content": o.outputs[0].text}]}) + "\n")
    data = sft_batches(cfg, tokenizer, str(path), run.d.world)
    run.info.update(sample_reward=sum(seen) / len(seen), best_reward=sum(best) / len(best))
    return run.finish(run.fit(sft_objective.loss, data))
