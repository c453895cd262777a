"""ModelConfig: the few numbers that define a decoder-only transformer, and HF config.json in/out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from lmlab.errors import LmlabError

# HF model_type -> our family. Mistral and Qwen2 are Llama blocks with small switches.
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "mixtral": "llama", "gpt2": "gpt2"}
# HF activation names -> ours ("gelu_tanh" is GPT-2's tanh approximation).
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


@dataclass
class ModelConfig:
    family: str = "llama"  # "llama" (RMSNorm, RoPE, SwiGLU) or "gpt2" (LayerNorm, learned positions, GELU)
    model_type: str = "llama"  # the HF model_type, kept so that we write back what we read
    vocab_size: int = 32000
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 8
    head_dim: int = 0  # 0 -> dim // n_heads
    ffn_dim: int = 1376
    max_seq_len: int = 2048
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # as in HF configs: {"rope_type": "linear"|"llama3"|..., ...}
    tie_embeddings: bool = False
    hidden_act: str = "silu"  # silu | gelu | gelu_tanh
    qkv_bias: bool = False  # Qwen2 (q, k, v); Llama's attention_bias also sets o_bias
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral: keys further back than this are not attended
    window_from_layer: int = 0  # Qwen2's max_window_layers: layers below this attend to everything
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # Mixture-of-Experts FFN (lmlab.model.moe; Mixtral's layout); 0 experts = a dense FFN.
    n_experts: int = 0
    experts_per_token: int = 2  # top-k routing
    capacity_factor: float = 0.0  # training only: tokens per expert <= factor * fair share; 0 = no limit
    aux_loss_coef: float = 0.01  # weight of the load-balancing loss (transformers' router_aux_loss_coef)
    extra: dict = field(default_factory=dict)  # other config.json keys, written back unchanged

    def __post_init__(self):
        if self.family not in ("llama", "gpt2"):
            raise LmlabError(f"unknown model family {self.family!r}; expected 'llama' or 'gpt2'")
        self._check_shape()
        if not self.head_dim:
            self.head_dim = self.dim // self.n_heads
        self.hidden_act = _activation(self.hidden_act)
        if self.family == "gpt2":  # GPT-2 blocks always carry biases
            self.qkv_bias = self.o_bias = self.mlp_bias = True

    def _check_shape(self) -> None:
        """Impossible shapes fail here, before any weights or data are touched."""
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise LmlabError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.head_dim and self.dim % self.n_heads:
            raise LmlabError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise LmlabError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.n_experts < 0 or self.capacity_factor < 0:
            raise LmlabError("n_experts and capacity_factor must be >= 0")
        if self.n_experts:
            if self.family != "llama":
                raise LmlabError("a Mixture-of-Experts FFN needs the llama family (SwiGLU experts)")
            if not 1 <= self.experts_per_token <= self.n_experts:
                raise LmlabError(f"experts_per_token={self.experts_per_token} must be between 1 and "
                                 f"n_experts={self.n_experts}")

    @property
    def eos_ids(self) -> list[int]:
        e = self.eos_token_id
        return [] if e is None else list(e) if isinstance(e, (list, tuple)) else [e]

    # ---- HF config.json ----------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        mt = hf.get("model_type")
        if mt not in FAMILIES:
            raise LmlabError(
                f"unsupported architecture {mt!r} (architectures={hf.get('architectures')}); "
                f"supported model_type values: {', '.join(sorted(FAMILIES))}")
        if FAMILIES[mt] == "gpt2":
            known = {"n_embd", "n_layer", "n_head", "n_positions", "n_inner", "vocab_size",
                     "layer_norm_epsilon", "bos_token_id", "eos_token_id", "model_type", "activation_function"}
            dim = hf["n_embd"]
            return cls(family="gpt2", model_type=mt, vocab_size=hf["vocab_size"], dim=dim,
                       n_layers=hf["n_layer"], n_heads=hf["n_head"], n_kv_heads=hf["n_head"],
                       ffn_dim=hf.get("n_inner") or 4 * dim, max_seq_len=hf["n_positions"],
                       norm_eps=hf.get("layer_norm_epsilon", 1e-5), tie_embeddings=True,
                       hidden_act=_activation(hf.get("activation_function", "gelu_new")),
                       qkv_bias=True, o_bias=True, mlp_bias=True,
                       bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
                       extra={k: v for k, v in hf.items() if k not in known})
        # transformers >= 5 nests rope settings in `rope_parameters`; older configs use
        # `rope_theta` + `rope_scaling`. Accept both.
        rope = dict(hf.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", None) or hf.get("rope_theta", 10000.0)
        scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling:
            scaling = dict(scaling)
            scaling.setdefault("rope_type", scaling.get("type", "default"))
        window, window_from = hf.get("sliding_window"), 0
        if mt == "qwen2":
            use = hf.get("use_sliding_window", False)
            window, window_from = (window, hf.get("max_window_layers", 0)) if use else (None, 0)
        n_heads = hf["num_attention_heads"]
        known = {"model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
                 "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings",
                 "attention_bias", "mlp_bias", "sliding_window", "use_sliding_window", "max_window_layers",
                 "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id", "num_local_experts",
                 "num_experts_per_tok", "router_aux_loss_coef"}
        attention_bias = bool(hf.get("attention_bias", False))
        return cls(
            family="llama", model_type=mt, vocab_size=hf["vocab_size"], dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"], n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
            ffn_dim=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
            norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=scaling,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            hidden_act=_activation(hf.get("hidden_act", "silu")),
            qkv_bias=mt == "qwen2" or attention_bias, o_bias=attention_bias and mt != "qwen2",
            mlp_bias=bool(hf.get("mlp_bias", False)), sliding_window=window,
            window_from_layer=window_from, bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"), pad_token_id=hf.get("pad_token_id"),
            n_experts=hf.get("num_local_experts", 0) if mt == "mixtral" else 0,
            experts_per_token=hf.get("num_experts_per_tok", 2), aux_loss_coef=hf.get("router_aux_loss_coef", 0.01),
            extra={k: v for k, v in hf.items() if k not in known})

    def to_hf(self) -> dict:
        c = self
        if c.family == "gpt2":
            hf = dict(c.extra)
            hf.update(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size,
                      n_embd=c.dim, n_layer=c.n_layers, n_head=c.n_heads, n_positions=c.max_seq_len,
                      n_inner=c.ffn_dim, layer_norm_epsilon=c.norm_eps,
                      activation_function={"gelu_tanh": "gelu_new"}.get(c.hidden_act, c.hidden_act),
                      bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, tie_word_embeddings=True)
            return hf
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "mixtral": "MixtralForCausalLM"}
        hf = dict(c.extra)
        hf.update(
            model_type=c.model_type, architectures=[arch[c.model_type]], vocab_size=c.vocab_size,
            hidden_size=c.dim, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
            num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, intermediate_size=c.ffn_dim,
            max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
            rope_scaling=c.rope_scaling, tie_word_embeddings=c.tie_embeddings,
            hidden_act={"gelu_tanh": "gelu_pytorch_tanh"}.get(c.hidden_act, c.hidden_act),
            bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
        if c.model_type == "llama":
            hf.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
        if c.model_type in ("mistral", "mixtral"):
            hf["sliding_window"] = c.sliding_window
        if c.model_type == "mixtral":
            hf.update(num_local_experts=c.n_experts, num_experts_per_tok=c.experts_per_token,
                      router_aux_loss_coef=c.aux_loss_coef)
        if c.model_type == "qwen2":
            hf.update(use_sliding_window=c.sliding_window is not None,
                      sliding_window=c.sliding_window, max_window_layers=c.window_from_layer)
        hf.setdefault("torch_dtype", "float32")
        return hf

    def windowed(self, layer: int) -> bool:
        return self.sliding_window is not None and layer >= self.window_from_layer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise LmlabError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise LmlabError(f"unsupported activation {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
