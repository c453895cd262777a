"""Training configuration: one dataclass for every objective, loadable from YAML (recipes/)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmlab.errors import LmlabError
from lmlab.model.config import ModelConfig


@dataclass
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["all-linear"])  # HF names, e.g. q_proj
    int8_base: bool = False  # QLoRA-style: frozen base weights kept in int8


@dataclass
class FlanConfig:
    """`--data flan`: the project's own instruction data (lmlab.train.flan), clusters held out."""
    holdout: list[str] = field(default_factory=lambda: ["classification", "extraction"])
    per_family: int = 40  # training records per family
    eval_per_family: int = 12  # held-out records per family, scored before and after


@dataclass
class AdapterConfig:
    size: int = 64  # bottleneck width
    act: str = "relu"  # relu | gelu | silu | tanh


@dataclass
class PrefixConfig:
    virtual_tokens: int = 16
    hidden: int = 512  # width of the reparameterisation MLP used while training (0: learn the prefix directly)


@dataclass
class PromptConfig:
    virtual_tokens: int = 16  # soft-prompt vectors, initialised from random vocabulary embeddings


@dataclass
class RewardConfig:
    """Reward models: training (`lmlab train rm`) and scoring (ppo, grpo, rsft)."""
    center: float = 0.0  # reward centering: adds center * (r_chosen + r_rejected)^2 to the loss
    models: list[str] = field(default_factory=list)  # trained reward models (run folders) that score
    weights: list[float] = field(default_factory=list)  # one per model for combine=sum (default 1)
    combine: str = "sum"  # sum | gate (Llama 2: the last model is safety, used when below threshold)
    threshold: float = 0.0


@dataclass
class DPOConfig:
    beta: float = 0.1  # strength of the implicit KL constraint to the reference
    loss: str = "sigmoid"  # sigmoid | robust | ipo
    label_smoothing: float = 0.0  # assumed rate of flipped labels (sigmoid: conservative DPO; robust)
    reference: str | None = None  # a separate reference model; default: the starting model
    precompute_ref: bool = False  # reference log-probs once before training, then no reference passes
    # LoRA dropout off while training: the loss compares the policy's log-probs with the
    # reference's, and dropout noise in one side is noise in that difference (TRL's default too)
    disable_dropout: bool = True


@dataclass
class PPOConfig:
    """Rollouts and updates of ppo and grpo; rsft uses the sampling settings."""
    rollout_size: int = 16  # prompts per rollout (one trainer epoch = one rollout and its updates)
    samples: int = 4  # responses per prompt: grpo's group, rsft's best-of-K
    max_new_tokens: int = 48
    temperature: float = 1.0
    ppo_epochs: int = 2  # passes over each rollout
    clip: float = 0.2  # policy ratio clip
    clip_value: float = 0.2  # value prediction clip around the rollout's values
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95  # GAE lambda
    kl_coef: float = 0.05  # per-token KL penalty (ppo) or KL loss weight (grpo)
    kl_estimator: str = "k1"  # k1 (log ratio) | k3 (Schulman's low-variance estimator)
    kl_target: float = 0.0  # > 0: adapt kl_coef towards this KL per response (Ziegler et al.)
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    missing_eos_penalty: float = 0.0  # subtracted from the reward of responses cut at max_new_tokens
    eval_prompts: int = 32  # held-out prompts sampled for eval_reward / eval_kl


@dataclass
class PROConfig:
    sft_weight: float = 0.05  # weight of the SFT term on the best response


@dataclass
class PretrainConfig:
    """`lmlab train pretrain`: the architecture built from scratch, its tokenizer and corpus split.
    The context length is TrainConfig.max_length; `data` is the corpus."""
    family: str = "llama"  # llama (RMSNorm, RoPE, SwiGLU) | gpt2 (LayerNorm, learned positions, GELU)
    n_layers: int = 6
    dim: int = 256
    n_heads: int = 8
    n_kv_heads: int = 0  # 0: = n_heads (no grouped-query attention)
    ffn_dim: int = 0  # 0: 4 * dim for gpt2, about 8/3 * dim for llama's SwiGLU (same parameters)
    tie_embeddings: bool = True
    n_experts: int = 0  # > 0: Mixture-of-Experts FFN in every layer
    experts_per_token: int = 2
    capacity_factor: float = 1.25
    aux_loss_coef: float = 0.01
    tokenizer: str | None = None  # model/tokenizer folder; "bpe:N": train an N-token BPE on the corpus; None: bundled
    # Continued (domain-adaptive) pretraining: start from these weights (bundled name, HF folder, .gguf
    # or hub id) with their tokenizer; `method` (full or lora) says what trains. None: a fresh model.
    init: str | None = None
    val_fraction: float = 0.02  # documents held out for eval_loss
    peak_flops: float = 0.0  # FLOP/s that MFU is measured against; 0: measure a matmul on this machine
    samples: list[str] = field(default_factory=lambda: ["Once upon a time"])  # prompts continued at the end

    def __post_init__(self):
        self.model_config(vocab_size=1, max_seq_len=1)  # impossible shapes fail when the recipe loads
        if not 0 < self.val_fraction < 1:
            raise LmlabError(f"pretrain.val_fraction must be in (0, 1), got {self.val_fraction}")

    def model_config(self, vocab_size: int, max_seq_len: int, **special) -> ModelConfig:
        ffn = self.ffn_dim or (4 * self.dim if self.family == "gpt2" else 64 * -(-8 * self.dim // 3 // 64))
        return ModelConfig(
            family=self.family, model_type="mixtral" if self.n_experts else self.family, vocab_size=vocab_size,
            dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads or self.n_heads,
            ffn_dim=ffn, max_seq_len=max_seq_len, tie_embeddings=self.tie_embeddings or self.family == "gpt2",
            hidden_act="gelu_tanh" if self.family == "gpt2" else "silu", n_experts=self.n_experts,
            experts_per_token=self.experts_per_token, capacity_factor=self.capacity_factor,
            aux_loss_coef=self.aux_loss_coef, **special)


@dataclass
class TrainConfig:
    model: str | None = None  # bundled name, HF folder, .gguf or hub id; None = bundled default
    data: str | None = None
    eval_data: str | None = None
    output: str = "runs/sft"
    method: str = "lora"  # full | head | feature | lora | adapter | prefix | prompt (lmlab.train.run.METHODS)
    chat_template: bool = True  # render records with the model's chat template
    max_length: int = 512
    packing: bool = False  # pack sequences into full rows; else length-bucketed padding
    skip_bad_rows: bool = False
    strict: bool = False  # stop at a preference row that gives no usable pair (else count and skip it)

    max_steps: int = 0  # 0: run `epochs` epochs
    epochs: float = 1.0
    batch_size: int = 4  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    bf16: bool = False  # bf16 autocast (CPU AVX-512 bf16 or GPU)
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    distributed: str = "ddp"  # ddp | fsdp (used under torchrun)

    log_every: int = 1
    eval_every: int = 0  # steps; 0 = only at the end
    save_every: int = 0  # steps; 0 = only at the end
    keep_last: int = 2
    # Divergence guards (stop with the last good checkpoint kept; 0 turns a guard off): a loss more
    # than `divergence_sigma` running standard deviations (and more than max(|mean|, 1)) above its
    # running mean, or one update multiplying the trainable weights' norm by more than `max_weight_growth`.
    divergence_sigma: float = 6.0
    max_weight_growth: float = 100.0
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    resume: bool = False
    progress: bool = True

    lora: LoraConfig = field(default_factory=LoraConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    prefix: PrefixConfig = field(default_factory=PrefixConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    flan: FlanConfig = field(default_factory=FlanConfig)
    rm: RewardConfig = field(default_factory=RewardConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    pro: PROConfig = field(default_factory=PROConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self):
        checks = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}"),
            (self.epochs > 0 or self.max_steps > 0, "give max_steps or epochs > 0"),
            (self.schedule in ("cosine", "linear", "constant"),
             f"schedule must be cosine, linear or constant, got {self.schedule!r}"),
            (self.distributed in ("ddp", "fsdp"), f"distributed must be ddp or fsdp, got {self.distributed!r}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}"),
            (self.divergence_sigma >= 0, f"divergence_sigma must be >= 0, got {self.divergence_sigma}"),
            (self.max_weight_growth == 0 or self.max_weight_growth > 1,
             f"max_weight_growth must be > 1 (or 0: off), got {self.max_weight_growth}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmlabError(message)
