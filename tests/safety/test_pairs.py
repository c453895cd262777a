"""Safety-tuning pairs: refusals chosen on harmful HH-RLHF prompts, compliance chosen on benign
instructions, in the format the DPO trainer reads."""

from __future__ import annotations

from lmlab.safety import pairs, refusal


def test_pairs_prefer_refusing_harm_and_answering_benign_requests(shared_data, tmp_path):
    info = pairs.build(shared_data / "hh_rlhf_harmless_base_test.jsonl", shared_data / "self_instruct_seed_tasks.jsonl",
                       tmp_path / "pairs.jsonl", n_refuse=12, n_comply=6)
    assert (info["refuse"], info["comply"]) == (12, 6)
    from lmlab.train.preference import read_comparisons

    comps = read_comparisons(tmp_path / "pairs.jsonl")
    assert len(comps) == 18
    import json
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    for r in rows:
        chosen_refuses = refusal.is_refusal(r["chosen"])
        assert chosen_refuses == (r["kind"] == "refuse")
        assert refusal.is_refusal(r["rejected"]) == (r["kind"] == "comply")
