"""Fine-tuning methods (`--method`): each trains, prints its trainable fraction, saves what it
trained and loads back for inference; prefix and prompt tuning leave the base bit-identical and
match peft; adapters and prefixes run in the Engine. A tiny random Llama with a 64-word
tokenizer, on records that continue a count."""

from __future__ import annotations

import json

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.model.io.hf import load_model
from lmlab.tokenizer import Tokenizer
from lmlab.train.config import LoraConfig, TrainConfig
from lmlab.train.objectives import sft as sft_objective
from lmlab.train.run import METHODS, apply_method, export
from lmlab.train.sft import eval_loss, sft_batches
from lmlab.train.trainer import Trainer

LR = {"full": 1e-2, "head": 5e-2, "lora": 5e-2, "adapter": 5e-2, "prefix": 5e-2, "prompt": 0.3}


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def word_model(random_hf, hf_tokenizer, tmp_path_factory):
    """(model folder, data file): a tiny random Llama (N(0, 0.2) weights) with a 64-word tokenizer,
    and records whose completion continues the prompt's counting (w3 w4 w5 -> w6 w7)."""
    folder = tmp_path_factory.mktemp("word_model")
    random_hf(dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=True)).save_pretrained(folder)
    hf_tokenizer.save_pretrained(folder)
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(48):
        s = int(torch.randint(2, 50, (1,), generator=rng))
        lines.append(json.dumps({"prompt": " ".join(f"w{s + i}" for i in range(3)),
                                 "completion": " ".join(f"w{s + 3 + i}" for i in range(2))}))
    data = folder / "count.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return folder, data


def _cfg(method, folder, data, out, **kw):
    return TrainConfig(model=str(folder), data=str(data), output=str(out), method=method, chat_template=False,
                       max_steps=kw.pop("max_steps", 20), batch_size=8, max_length=32, lr=LR.get(method, 1e-2),
                       schedule="constant", progress=False, lora=LoraConfig(r=4, alpha=8, dropout=0.0), **kw)


@pytest.fixture(scope="module")
def trained(word_model, tmp_path_factory):
    """method -> (trained model, its weights before training, cfg, printed text, info, loss over all
    records before and after training)."""
    import contextlib
    import io

    folder, records = word_model
    runs = {}

    def get(method):
        if method not in runs:
            out = tmp_path_factory.mktemp(method)
            cfg = _cfg(method, folder, records, out)
            model = load_model(folder).train()
            base = {k: v.clone() for k, v in model.state_dict().items()}
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                info = apply_method(model, cfg)
            data = sft_batches(cfg, Tokenizer.from_folder(folder), cfg.data)
            loss = eval_loss(sft_objective.loss, data.examples, data.collate)
            with torch.no_grad():
                before = loss(model)["eval_loss"]
            Trainer(model, sft_objective.loss, data, cfg).fit()
            with torch.no_grad():
                after = loss(model.eval())["eval_loss"]
            runs[method] = model, base, cfg, printed.getvalue(), info, (before, after)
        return runs[method]

    return get


def _expected_trainable(method, c, cfg) -> int:
    """Trainable parameters by each method's definition (dim d, layers L, vocabulary V)."""
    d, L, kv, P = c.dim, c.n_layers, c.n_kv_heads * c.head_dim, cfg.prefix.virtual_tokens
    linears = [(d, c.n_heads * c.head_dim), (d, kv), (d, kv), (c.n_heads * c.head_dim, d),
               (d, c.ffn_dim), (d, c.ffn_dim), (c.ffn_dim, d)]  # q k v o gate up down: (in, out)
    h, a = cfg.prefix.hidden, cfg.adapter.size
    return {"full": None, "head": c.vocab_size * d,
            "lora": L * cfg.lora.r * sum(i + o for i, o in linears),
            "adapter": 2 * L * (2 * d * a + a + d),  # down and up with biases, after attention and FFN
            "prefix": P * kv + (kv * h + h) + (h * 2 * L * kv + 2 * L * kv),  # embeddings, MLP
            "prompt": cfg.prompt.virtual_tokens * d}[method]


@pytest.mark.parametrize("method", ["full", "head", "lora", "adapter", "prefix", "prompt"])
def test_method_trains_and_prints_its_trainable_fraction(trained, method):
    model, _, cfg, printed, info, (before, after) = trained(method)
    assert after < before - 0.1, (before, after)
    assert (f"{method}: {info['trainable_params']:,} trainable parameters of {info['total_params']:,} "
            f"({100 * info['trainable_fraction']:.3f}%)") in printed
    expected = _expected_trainable(method, model.config, cfg)
    assert info["trainable_params"] == (expected or info["total_params"])


def test_head_trains_only_an_untied_output_layer(trained):
    model, base, *_ = trained("head")
    assert not model.config.tie_embeddings and model.lm_head.weight is not model.embed.weight
    assert torch.equal(model.embed.weight, base["embed.weight"])  # the input embedding kept its values
    assert not torch.equal(model.lm_head.weight, base["lm_head.weight"])
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items() if k.startswith("layers."))


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_tuning_leave_the_base_bit_identical(trained, method):
    model, base, *_ = trained(method)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())


@pytest.mark.parametrize("method", ["lora", "adapter", "prefix", "prompt"])
def test_saved_adapter_reloads_to_the_same_logits(trained, method):
    model, _, cfg, *_ = trained(method)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        before = model(ids)
    folder = export(model, cfg.model, cfg)
    if method == "lora":  # export merges LoRA into final/; the adapter folder is beside it
        folder = folder.parent / "adapter"
    assert (folder / "adapter_config.json").is_file()
    reloaded = lmlab.load(str(folder), "fp32").model
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["adapter", "prefix", "prompt"])
def test_engine_generates_what_the_forward_pass_predicts(trained, method):
    """Greedy tokens through the Engine (prefix prefilled into its KV cache) equal a greedy loop
    over full forward passes without any cache."""
    model, _, cfg, *_ = trained(method)
    folder = export(model, cfg.model, cfg)
    lm = lmlab.load(str(folder), "fp32")
    prompt = lm.tokenizer.encode("w3 w4 w5")
    out = lm.engine.complete(prompt, lmlab.engine.params.SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(lm.model(torch.tensor([ids]))[0, -1].argmax()))
    assert out.outputs[0].token_ids == ids[len(prompt):]


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_match_peft(trained, method):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    model, _, cfg, *_ = trained(method)
    folder = export(model, cfg.model, cfg)
    hf = transformers.AutoModelForCausalLM.from_pretrained(cfg.model, attn_implementation="eager")
    ref = peft.PeftModel.from_pretrained(hf, folder).eval()
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
        torch.testing.assert_close(model(ids), theirs, atol=1e-4, rtol=1e-4)


def test_folding_the_prefix_mlp_keeps_its_output():
    from lmlab.model.config import ModelConfig
    from lmlab.model.peft.prefix import Prefix

    c = ModelConfig(vocab_size=10, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=8)
    prefix = Prefix(c, length=5, hidden=16)
    kv = prefix.compute(None)
    prefix.fold()
    assert not hasattr(prefix, "transform") and prefix.embedding.weight.shape == (5, 3 * 2 * 16)
    assert all(torch.equal(a, b) for pair, folded in zip(kv, prefix.compute(None)) for a, b in zip(pair, folded))
    assert kv[0][0].shape == (1, 2, 5, 8)  # [1, kv_heads, P, head_dim]


def test_unknown_method_is_refused(word_model, tmp_path):
    from lmlab.train.sft import sft

    with pytest.raises(LmlabError, match="unknown method 'bitfit'; choose one of " + ", ".join(METHODS)):
        sft(_cfg("bitfit", *word_model, tmp_path))


def test_feature_classifier_trains_on_frozen_features_and_reloads(word_model, tmp_path, capsys):
    from lmlab.train.classify import FeatureClassifier
    from lmlab.train.sft import sft

    folder, _ = word_model
    texts = [" ".join(f"w{s + i}" for i in range(3)) for s in range(2, 50)]
    labels = ["low" if s < 26 else "high" for s in range(2, 50)]
    data = tmp_path / "cls.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    cfg = _cfg("feature", folder, data, tmp_path / "run", eval_data=str(data), max_steps=40)
    cfg.lr = 0.05
    result = sft(cfg)  # --method feature goes to lmlab.train.classify
    dim = load_model(folder).config.dim
    assert result["trainable_params"] == 2 * dim + 2  # a 2-way linear classifier
    assert f"feature: {2 * dim + 2:,} trainable parameters" in capsys.readouterr().out
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    assert result["eval_accuracy"] > 0.75
    predicted = FeatureClassifier(result["final"]).predict(texts)
    assert sum(p == y for p, y in zip(predicted, labels)) / len(labels) == pytest.approx(result["eval_accuracy"])


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_give_the_same_gradients_with_gradient_checkpointing(method):
    from lmlab.model.config import ModelConfig
    from lmlab.model.peft.prefix import apply_prefix
    from lmlab.model.peft.prompt import apply_prompt
    from lmlab.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)).train()
    {"prefix": apply_prefix, "prompt": apply_prompt}[method](model, 4)
    ids = torch.randint(0, 50, (2, 7))
    grads = []
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        model(ids).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
