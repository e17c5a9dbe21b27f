"""The synthetic dataset: deterministic, declared shapes, and built so context and fusion help."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from trainable.datasets import DataError, load_dataset
from trainable.datasets.synthetic import AUDIO_DIM, LABELS, VISUAL_DIM


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", seed=0)


def _same(a, b) -> bool:
    return all(
        x.id == y.id
        and x.utterances == y.utterances
        and x.speakers == y.speakers
        and x.labels == y.labels
        and np.array_equal(x.audio, y.audio)
        and np.array_equal(x.visual, y.visual)
        for p, q in zip(a.splits().values(), b.splits().values(), strict=True)
        for x, y in zip(p, q, strict=True)
    )


def test_shapes_and_sizes(synthetic):
    s = synthetic
    assert (s.name, s.task, s.label_names) == ("synthetic", "categorical", list(LABELS))
    assert 4 <= len(LABELS) <= 6
    assert (s.audio_dim, s.visual_dim) == (AUDIO_DIM, VISUAL_DIM) == (16, 32)
    assert [len(p) for p in s.splits().values()] == [600, 80, 80]
    for d in s.train + s.dev + s.test:
        assert 6 <= len(d) <= 16 and 2 <= len(set(d.speakers)) <= 3
        assert d.audio.dtype == d.visual.dtype == np.float32
        assert d.audio.shape == (len(d), 16) and d.visual.shape == (len(d), 32)
        assert all(0 <= y < len(LABELS) for y in d.labels)
    assert s.train[0].id == "train/0" and s.test[-1].id == "test/79"
    vocabulary = {w for d in s.train for u in d.utterances for w in u.split()}
    assert 50 < len(vocabulary) < 400
    assert all(Counter(y for d in s.train for y in d.labels)[k] > 300 for k in range(len(LABELS)))


def test_deterministic_and_scalable(synthetic):
    small = load_dataset("synthetic", seed=0, max_dialogues=5)
    assert [len(p) for p in small.splits().values()] == [5, 5, 5]
    first = load_dataset("synthetic", seed=0, size=0.1)
    assert [len(p) for p in first.splits().values()] == [60, 8, 8]
    assert _same(first, load_dataset("synthetic", seed=0, size=0.1))
    assert not _same(first, load_dataset("synthetic", seed=1, size=0.1))
    # max_dialogues keeps a prefix of the full data set; split streams are independent.
    for full, part in zip(synthetic.splits().values(), small.splits().values(), strict=True):
        assert [d.utterances for d in full[:5]] == [d.utterances for d in part]
        assert all(np.array_equal(a.audio, b.audio) for a, b in zip(full, part, strict=False))
    assert [d.labels for d in first.dev] == [d.labels for d in synthetic.dev[:8]]


def test_sentiment_is_refused():
    with pytest.raises(DataError, match="only for meld"):
        load_dataset("synthetic", label="sentiment")


def _text_lookup(train):
    """The best exact-text classifier: majority label per utterance text, fit on train."""
    by_text = defaultdict(Counter)
    for d in train:
        for text, label in zip(d.utterances, d.labels, strict=True):
            by_text[text][label] += 1
    fallback = Counter(y for d in train for y in d.labels).most_common(1)[0][0]
    return by_text, fallback


def test_context_decides_what_text_alone_cannot(synthetic):
    by_text, fallback = _text_lookup(synthetic.train)

    def text_only(text):
        counts = by_text.get(text)
        return counts.most_common(1)[0][0] if counts else fallback

    def cause(text):
        """The emotion a text states outright (>90 % one non-neutral label in train), or None."""
        counts = by_text.get(text)
        if not counts:
            return None
        label, n = counts.most_common(1)[0]
        return label if label != 0 and n / counts.total() > 0.9 else None

    def with_context(d, i):
        """Text if it states an emotion, else the speaker's own last stated emotion (3 turns)."""
        if cause(d.utterances[i]) is not None:
            return cause(d.utterances[i])
        own = [j for j in range(i) if d.speakers[j] == d.speakers[i]][-3:]
        stated = [cause(d.utterances[j]) for j in reversed(own)]
        return next((c for c in stated if c is not None), 0)

    turns = [(d, i) for d in synthetic.dev for i in range(len(d))]
    text_acc = np.mean([text_only(d.utterances[i]) == d.labels[i] for d, i in turns])
    context_acc = np.mean([with_context(d, i) == d.labels[i] for d, i in turns])
    ambiguous = [(d, i) for d, i in turns if cause(d.utterances[i]) is None and d.labels[i] != 0]
    ambiguous_text_acc = np.mean([text_only(d.utterances[i]) == d.labels[i] for d, i in ambiguous])
    assert text_acc < 0.7
    assert ambiguous_text_acc < 0.1  # emotional turns with ambiguous words: text says neutral
    assert context_acc > text_acc + 0.12


def _matrix(dialogues, modalities):
    x = np.concatenate([np.concatenate([getattr(d, m) for m in modalities], 1) for d in dialogues])
    return x, np.concatenate([d.labels for d in dialogues])


def test_audio_and_visual_carry_a_noisy_signal(synthetic):
    def nearest_centroid(modalities):
        x, y = _matrix(synthetic.train, modalities)
        centroids = np.stack([x[y == k].mean(0) for k in range(len(LABELS))])
        xd, yd = _matrix(synthetic.dev, modalities)
        predicted = ((xd[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        return (predicted == yd).mean(), (yd == 0).mean()

    audio, majority = nearest_centroid(["audio"])
    visual, _ = nearest_centroid(["visual"])
    both, _ = nearest_centroid(["audio", "visual"])
    assert majority + 0.05 < audio < 0.8 and majority + 0.03 < visual < 0.8  # weak cues alone
    assert both > max(audio, visual) + 0.05  # fusion helps
