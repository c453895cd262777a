"""SFT: the loss against transformers, labels, packing, outputs, and bad input."""

import json

import pytest
import torch

from lmlab.errors import LmlabError
from lmlab.model.io.hf import load_model
from lmlab.tokenizer import Tokenizer
from lmlab.train import checkpoint, data as D
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import sft


@pytest.fixture(scope="module")
def examples(tiny_folder, tiny_data):
    tok = Tokenizer.from_folder(tiny_folder)
    return D.tokenize_records(D.read_records(tiny_data), tok, max_length=64)


def test_loss_equals_transformers_on_a_padded_batch(tiny_folder, examples):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_folder, attn_implementation="eager").eval()
    ours = load_model(tiny_folder)
    batch = sft.collate(examples[:6], pad_id=0)
    assert len({len(e.ids) for e in examples[:6]}) > 1  # really padded
    total, n, _ = sft.loss(ours, batch)
    mask = torch.zeros_like(batch["ids"])
    for i, e in enumerate(examples[:6]):
        mask[i, :len(e.ids)] = 1
    with torch.no_grad():
        ref = hf(input_ids=batch["ids"], attention_mask=mask, labels=batch["labels"]).loss
    torch.testing.assert_close(total / n, ref, atol=1e-5, rtol=1e-5)


def test_packed_rows_give_the_padded_loss(tiny_folder, examples):
    model = load_model(tiny_folder)
    padded = sft.loss(model, sft.collate(examples[:8], 0))
    packed_batch = sft.collate(examples[:8], 0, packing=True, row_length=128)
    assert packed_batch["ids"].shape[0] < 8  # sequences really share rows
    packed = sft.loss(model, packed_batch)
    assert packed[1] == padded[1]
    torch.testing.assert_close(packed[0], padded[0], atol=1e-4, rtol=1e-5)


def test_lora_loss_and_gradients_are_the_same_with_the_frozen_head_through_onednn(tiny_folder, examples,
                                                                               monkeypatch):
    """Under LoRA the output layer is frozen, so where oneDNN is preferred it goes through
    lmlab.cpu.onednn; neither the loss nor the adapters' gradients may change."""
    from lmlab.cpu import features, optimize
    from lmlab.model.peft.lora import apply_lora

    model = load_model(tiny_folder)
    apply_lora(model, r=4, alpha=8)
    batch = sft.collate(examples[:4], 0)
    results = []
    for onednn in (False, True):
        if onednn:  # the plain layers first, then the speed layer applied as a Trainer applies it
            monkeypatch.setattr(features, "onednn_preferred", lambda: True)
            optimize(model, "cpu", "train")
        model.zero_grad()
        total, _, _ = sft.loss(model, batch)
        total.backward()
        assert ("_onednn" in model.lm_head.__dict__) == onednn
        results.append((total.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (loss0, grads0), (loss1, grads1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads0)
    for g0, g1 in zip(grads0, grads1):
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-5)


def test_only_assistant_turns_are_labelled(tiny_folder):
    tok = Tokenizer.from_folder(tiny_folder)
    msgs = [{"role": "user", "content": "Say A."}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Now B."}, {"role": "assistant", "content": "B then C"}]
    ex = D.tokenize_chat(msgs, tok, max_length=512)
    assert ex.ids == tok.encode_chat(msgs, add_generation_prompt=False)  # same ids as the whole render
    labelled = tok.decode([t for t in ex.labels if t != D.IGNORE], skip_special_tokens=False)
    assert labelled == "A<|im_end|>\nB then C<|im_end|>\n"


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n{"prompt": "c", "completion": "d"}\n')
    with pytest.raises(LmlabError, match=r"bad\.jsonl:2: malformed JSON"):
        D.read_records(path)
    stats = {}
    assert len(D.read_records(path, skip_bad_rows=True, stats=stats)) == 2 and stats["skipped_rows"] == 1


@pytest.mark.parametrize("rec, message", [
    ({"text": "x"}, "unknown record format"),
    ({"prompt": "a", "completion": ""}, "non-empty"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
])
def test_unusable_records_are_named(rec, message):
    with pytest.raises(LmlabError, match=message):
        D.to_messages({**rec, "_where": "f.jsonl:7"})


def test_cli_run_writes_metrics_curve_and_a_loadable_model(tiny_folder, tiny_data, tmp_path):
    from lmlab.cli.main import main
    from lmlab.model.peft.lora import load_adapter

    out = tmp_path / "run"
    assert main(["train", "sft", "--model", str(tiny_folder), "--data", str(tiny_data), "--output", str(out),
                 "--max-steps", "4", "--batch-size", "4", "--lr", "1e-2", "--lora-r", "4", "--no-progress",
                 "lora.dropout=0"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("loss" in r for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (out / "loss.png").stat().st_size > 1000
    # final/ is the adapter merged into the base: same function as base + adapter.
    ids = torch.tensor([[1, 400, 500, 600, 700]])
    merged = load_model(out / "final")
    with_adapter = load_adapter(load_model(tiny_folder), out / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), with_adapter(ids), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(merged(ids), load_model(tiny_folder)(ids), atol=1e-4)


def test_int8_base_lora_trains_only_the_adapters(tiny_folder, tiny_data, tmp_path):
    from lmlab.train.sft import sft as run_sft

    cfg = TrainConfig(model=str(tiny_folder), data=str(tiny_data), output=str(tmp_path / "q"), max_steps=3,
                      batch_size=4, lr=1e-2, progress=False)
    cfg.lora.int8_base, cfg.lora.dropout = True, 0.0
    result = run_sft(cfg)
    assert result["trainable_fraction"] < 0.2 and torch.isfinite(torch.tensor(result["loss"]))
    rows = [json.loads(l) for l in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "q" / "final" / "config.json").is_file()


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_folder, tiny_data, tmp_path):
    from lmlab.train.sft import sft as run_sft

    # An absurd learning rate overflows the weights after the first update (the weight-growth guard,
    # which would stop it at once, is off: this is the non-finite guard's test).
    cfg = TrainConfig(model=str(tiny_folder), data=str(tiny_data), output=str(tmp_path / "nan"), method="full",
                      max_steps=5, batch_size=4, lr=1e30, max_grad_norm=0, save_every=1, progress=False,
                      max_weight_growth=0)
    with pytest.raises(LmlabError, match=r"became (nan|inf|non-finite).*Last good checkpoint") as err:
        run_sft(cfg)
    saved = sorted((tmp_path / "nan" / "checkpoints").glob("step-*"))
    assert saved and str(saved[-1]) in str(err.value)  # the message points at the checkpoint kept
    assert all(torch.isfinite(t).all() for t in checkpoint.weights(saved[-1]).values())


def test_config_from_yaml_with_overrides(tmp_path):
    from lmlab.config import load_config

    path = tmp_path / "r.yaml"
    path.write_text("lr: 0.001\nlora:\n  r: 8\n  targets: [q_proj, v_proj]\n")
    cfg = load_config(TrainConfig, path, ["lora.r=4", "bf16=true"], max_steps=7)
    assert (cfg.lr, cfg.lora.r, cfg.lora.targets, cfg.bf16, cfg.max_steps) == (0.001, 4, ["q_proj", "v_proj"], True, 7)
    with pytest.raises(LmlabError, match="unknown key"):
        load_config(TrainConfig, path, ["lorra.r=4"])
    with pytest.raises(LmlabError, match="lr must be float"):
        load_config(TrainConfig, path, ["lr=fast"])
