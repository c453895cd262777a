"""Exact and near dedup on planted duplicates: recall at FineWeb's threshold, the S-curve of
14 bands x 8 rows, and the cluster each removed document belonged to."""

import random

import numpy as np

from lmlab.data.dedup import MinHashConfig, MinHasher, band_pairs, clusters, exact_key, shingles

from .corpora import document, near_copy


def jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a, 5).tolist()), set(shingles(b, 5).tolist())
    return len(x & y) / len(x | y)


def near_dups(texts: list[str]) -> dict[int, tuple[int, int]]:
    h = MinHasher(MinHashConfig())
    bands = np.stack([h.band_hashes(t) for t in texts])
    ids = np.arange(len(texts))
    return clusters([band_pairs(bands[:, b], ids) for b in range(bands.shape[1])])


def test_exact_key_ignores_case_and_whitespace_runs():
    assert exact_key("Hello   world\n") == exact_key("hello world")
    assert exact_key("Hello world", lowercase=False) != exact_key("hello world", lowercase=False)
    assert exact_key("hello world") != exact_key("hello world!")


def test_minhash_signature_estimates_jaccard():
    rng = random.Random(1)
    a = document(rng, 30)
    b = near_copy(rng, a, 0.05)
    h = MinHasher(MinHashConfig(bands=64, rows=4))  # 256 hashes: a tight estimate
    est = float(np.mean(h.signature(a) == h.signature(b)))
    assert abs(est - jaccard(a, b)) < 0.08


def test_near_duplicates_found_with_the_expected_recall():
    rng = random.Random(2)
    bases = [document(rng, 30) for _ in range(60)]
    close = [near_copy(rng, t, 0.01) for t in bases[:30]]  # Jaccard about 0.9: P(candidate) > 0.99
    far = [near_copy(rng, t, 0.2) for t in bases[30:]]  # Jaccard about 0.2: P(candidate) < 0.001
    texts = bases + close + far
    s_close = [jaccard(a, b) for a, b in zip(bases[:30], close)]
    s_far = [jaccard(a, b) for a, b in zip(bases[30:], far)]
    assert min(s_close) > 0.8 and max(s_far) < 0.5
    found = near_dups(texts)
    recall = sum(60 + i in found for i in range(30)) / 30
    expected = np.mean([1 - (1 - s ** 8) ** 14 for s in s_close])
    assert recall >= expected - 0.1 and recall >= 0.9
    assert not any(90 + i in found for i in range(30))
    assert all(found[60 + i] == (i, 2) for i in range(30) if 60 + i in found)  # cluster = the kept original
    assert not any(i in found for i in range(60))  # originals are kept


def test_clusters_join_chains_and_keep_the_first():
    pairs = [np.array([[5, 7], [3, 5]]), np.array([[7, 9]])]
    assert clusters(pairs) == {5: (3, 4), 7: (3, 4), 9: (3, 4)}


def test_band_pairs_links_each_member_to_its_buckets_first():
    band = np.array([10, 20, 10, 0, 10, 20], dtype=np.uint64)
    got = band_pairs(band, np.arange(6))
    assert sorted(map(tuple, got.tolist())) == [(0, 2), (0, 4), (1, 5)]  # 0 = no words: never a candidate


def test_datasketch_agrees_on_the_planted_pairs():
    datasketch = __import__("pytest").importorskip("datasketch")
    from lmlab.data.dedup import simplify

    rng = random.Random(3)
    bases = [document(rng) for _ in range(30)]
    texts = bases + [near_copy(rng, t, 0.02) for t in bases[:15]]
    lsh = datasketch.MinHashLSH(num_perm=112, params=(14, 8))
    sketches = []
    for i, t in enumerate(texts):
        ws = simplify(t)
        m = datasketch.MinHash(num_perm=112, seed=1)
        m.update_batch([" ".join(ws[j:j + 5]).encode() for j in range(len(ws) - 4)])
        lsh.insert(str(i), m)
        sketches.append(m)
    theirs = {i for i in range(30, 45) if str(i - 30) in lsh.query(sketches[i])}
    ours = set(near_dups(texts))
    assert ours == theirs == set(range(30, 45))
