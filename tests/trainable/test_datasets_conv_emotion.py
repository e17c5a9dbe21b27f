"""IEMOCAP/AVEC loaders and MELD audio, on small pickles in conv-emotion's layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.trainable.test_datasets import row, write_meld
from trainable.datasets import DataError, load_dataset
from trainable.datasets.conv_emotion import AVEC_DIMENSIONS, IEMOCAP_LABELS


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCH_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ORCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("ORCH_DATA_DIR", raising=False)


def conv_tables(n_train=6, n_test=3, seed=0, audio=100, visual=512, real=False):
    """The 9 fields of an IEMOCAP-like pickle with a few random dialogues."""
    rng = np.random.default_rng(seed)
    train = [f"Ses0{1 + i % 4}F_impro{i:02d}" for i in range(n_train)]
    test = [f"Ses05M_script{i:02d}" for i in range(n_test)]
    t = {name: {} for name in ("ids", "spk", "lab", "text", "audio", "visual", "sent")}
    for key in train + test:
        n = int(rng.integers(2, 7))
        t["ids"][key] = [f"{key}_{j:03d}" for j in range(n)]
        t["spk"][key] = [str(s) for s in rng.choice(["M", "F"], n)]
        t["lab"][key] = rng.normal(size=n).tolist() if real else rng.integers(0, 6, n).tolist()
        t["text"][key] = rng.normal(size=(n, 100)).tolist()
        t["audio"][key] = [rng.normal(size=audio) for _ in range(n)]  # a list of arrays, as stored
        t["visual"][key] = rng.normal(size=(n, visual)).tolist()
        t["sent"][key] = [f"line {j} of {key}" for j in range(n)]
    values = [t[k] for k in ("ids", "spk", "lab", "text", "audio", "visual", "sent")]
    return [*values, set(train), set(test)]  # conv-emotion keeps trainVid/testVid as sets


def dump(path: Path, fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(tuple(fields), f, protocol=2)
    return path


def error_of(name, folder, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(name, folder, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- IEMOCAP ---------------------------------------------------------------------------------


def test_iemocap_loads(tmp_path):
    fields = conv_tables(n_train=20, n_test=3)
    fields[6]["Ses05M_script01"][0] = "I don\x92t know\x85"  # cp1252 bytes read as latin-1
    dump(tmp_path / "IEMOCAP_features_raw.pkl", fields)
    splits = load_dataset("iemocap", tmp_path, seed=3)
    assert (
        splits.label_names
        == list(IEMOCAP_LABELS)
        == [*("happy", "sad", "neutral", "angry", "excited", "frustrated")]
    )
    assert (splits.task, splits.audio_dim, splits.visual_dim) == ("categorical", 100, 512)
    assert [len(p) for p in splits.splits().values()] == [18, 2, 3]
    train_ids = {d.id.split("/", 1)[1] for d in splits.train + splits.dev}
    assert train_ids == fields[7]
    assert [d.id for d in splits.test] == [f"test/Ses05M_script{i:02d}" for i in range(3)]
    for d in splits.train + splits.dev + splits.test:
        key = d.id.split("/", 1)[1]
        assert d.audio.dtype == d.visual.dtype == np.float32
        assert d.audio.shape == (len(d), 100) and d.visual.shape == (len(d), 512)
        assert d.labels == fields[2][key] and d.speakers == fields[1][key]
        np.testing.assert_allclose(d.visual, np.asarray(fields[5][key]), rtol=1e-6)
    assert splits.test[1].id == "test/Ses05M_script01"
    assert splits.test[1].utterances[0] == "I don’t know…"


def test_iemocap_dev_split_is_seeded(tmp_path):
    dump(tmp_path / "IEMOCAP_features_raw.pkl", conv_tables(n_train=20, n_test=2))

    def dev(seed):
        return [d.id for d in load_dataset("iemocap", tmp_path, seed=seed).dev]

    assert dev(0) == dev(0)
    assert len({tuple(dev(s)) for s in range(4)}) > 1
    small = load_dataset("iemocap", tmp_path, seed=0, max_dialogues=1)
    assert [d.id for d in small.dev] == dev(0)[:1]  # dev drawn before max_dialogues
    assert [len(p) for p in small.splits().values()] == [1, 1, 1]


def test_iemocap_bad_files(tmp_path):
    path = tmp_path / "IEMOCAP_features_raw.pkl"
    assert "missing file" in error_of("iemocap", tmp_path)
    dump(path, conv_tables()[:8])
    assert "expected a 9-tuple (videoIDs, videoSpeakers" in error_of("iemocap", tmp_path)
    path.write_bytes(b"not a pickle")
    assert "not a readable pickle" in error_of("iemocap", tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda f, k: f[4].pop(k), "dialogue 'Ses05M_script01' is missing from videoAudio"),
        (
            lambda f, k: f[5].__setitem__(k, [[0.0] * 511] * len(f[2][k])),
            "videoVisual['Ses05M_script01']: features have width 511, but videoVisual[",
        ),
        (
            lambda f, k: f[4][k].__setitem__(1, np.zeros(99)),
            "videoAudio['Ses05M_script01']: utterance 1 has 99 features, expected 100",
        ),
        (
            lambda f, k: f[6][k].append("one more line"),
            "dialogue 'Ses05M_script01' has 3 sentences, 2 speakers, 2 labels",
        ),
        (
            lambda f, k: f[2][k].__setitem__(0, 6),
            "videoLabels['Ses05M_script01'] turn 0 is 6; expected an integer 0..5",
        ),
        (lambda f, k: f[7].add(k), "'Ses05M_script01' is in both trainVid and testVid"),
    ],
)
def test_iemocap_bad_dialogue(tmp_path, corrupt, expected):
    fields = conv_tables(n_train=3, n_test=2, seed=1)
    key = "Ses05M_script01"
    # The corrupted dialogue is loaded last (test split) and has 2 turns.
    for table in fields[:7]:
        table[key] = table[key][:2]
    fields[3][key], fields[5][key] = fields[3][key][:2], fields[5][key][:2]
    corrupt(fields, key)
    dump(tmp_path / "IEMOCAP_features_raw.pkl", fields)
    message = error_of("iemocap", tmp_path)
    assert "IEMOCAP_features_raw.pkl" in message and expected in message


# --- AVEC ------------------------------------------------------------------------------------


def write_avec(folder: Path, n_train=10, n_test=2) -> list[list]:
    base = conv_tables(n_train, n_test, seed=5, audio=8, visual=12, real=True)
    files = []
    for i in range(4):
        fields = [dict(t) if isinstance(t, dict) else set(t) for t in base]
        rng = np.random.default_rng(i)
        fields[2] = {k: rng.normal(size=len(v)).tolist() for k, v in base[2].items()}
        files.append(fields)
        dump(folder / f"AVEC_features_{i + 1}.pkl", fields)
    return files


def test_avec_combines_four_attributes(tmp_path):
    files = write_avec(tmp_path)
    splits = load_dataset("avec", tmp_path, seed=0)
    assert splits.task == "dimensional"
    assert splits.label_names == list(AVEC_DIMENSIONS)
    assert AVEC_DIMENSIONS == ("valence", "arousal", "expectancy", "power")
    assert (splits.audio_dim, splits.visual_dim) == (8, 12)
    assert [len(p) for p in splits.splits().values()] == [9, 1, 2]
    for d in splits.train + splits.dev + splits.test:
        key = d.id.split("/", 1)[1]
        expected = [[files[a][2][key][t] for a in range(4)] for t in range(len(d))]
        np.testing.assert_allclose(d.labels, expected)
        assert d.utterances == files[0][6][key] and d.audio.shape == (len(d), 8)


def test_avec_files_must_agree(tmp_path):
    files = write_avec(tmp_path)
    key = sorted(files[0][7])[0]
    files[2][2][key] = files[2][2][key][:-1]
    dump(tmp_path / "AVEC_features_3.pkl", files[2])
    message = error_of("avec", tmp_path)
    assert (
        f"AVEC_features_3.pkl: dialogue {key!r} has" in message and "AVEC_features_1.pkl" in message
    )

    files[2][2][key] = files[1][2][key]
    files[2][8] = files[2][8] | {"Ses05M_extra"}
    dump(tmp_path / "AVEC_features_3.pkl", files[2])
    assert "AVEC_features_3.pkl: testVid differs" in error_of("avec", tmp_path)

    (tmp_path / "AVEC_features_4.pkl").unlink()
    assert "missing file" in error_of("avec", tmp_path)
    assert "AVEC_features_4.pkl" in error_of("avec", tmp_path)


# --- MELD audio ------------------------------------------------------------------------------


def write_meld_with_audio(folder: Path, width=300):
    """Tiny MELD CSVs (with an Utterance_ID gap) and a matching MELD_features_raw.pkl."""
    splits = {
        "train": [row(0, 0), row(0, 1), row(0, 3, "gap", "Joey"), row(2, 0)],
        "dev": [row(0, 0), row(0, 1), row(1, 0)],
        "test": [row(0, 0), row(1, 0), row(1, 1)],
    }
    write_meld(folder, splits)
    offsets = {"train": 0, "dev": 1039, "test": 1153}
    ids, audio = {}, {}
    for split, rows in splits.items():
        for r in rows:
            key = offsets[split] + r[5]
            ids.setdefault(key, []).insert(0, r[6])  # stored in reverse: matching is by id
            # A recognisable vector: [key, utterance id, 0, 0, ...].
            audio.setdefault(key, []).insert(0, [key, r[6]] + [0.0] * (width - 2))
    empty = {k: [] for k in ids}
    fields = [
        ids,
        empty,
        empty,
        empty,
        audio,
        empty,
        [0, 2, *range(1039, 1041)],
        [1153, 1154],
        empty,
    ]
    dump(folder / "MELD_features_raw.pkl", fields)
    return fields


def test_meld_audio_matched_by_dialogue_and_utterance(tmp_path):
    write_meld_with_audio(tmp_path)
    splits = load_dataset("meld", tmp_path)
    assert (splits.audio_dim, splits.visual_dim) == (300, 0)
    for split, offset in (("train", 0), ("dev", 1039), ("test", 1153)):
        for d in splits.splits()[split]:
            key = offset + int(d.id.split("/")[1])
            assert d.audio.dtype == np.float32 and d.audio.shape == (len(d), 300)
            assert (d.audio[:, 0] == key).all()
    assert splits.train[0].audio[:, 1].tolist() == [0, 1, 3]
    assert splits.train[0].utterances[-1] == "gap"
    assert load_dataset("meld", tmp_path, max_dialogues=1).dev[0].audio.shape == (2, 300)


def test_meld_audio_mismatches(tmp_path):
    fields = write_meld_with_audio(tmp_path)
    del fields[0][1040], fields[4][1040]
    dump(tmp_path / "MELD_features_raw.pkl", fields)
    message = error_of("meld", tmp_path)
    assert "MELD_features_raw.pkl: dialogue key 1040 (dev Dialogue_ID 1) is missing" in message
    assert load_dataset("meld", tmp_path, max_dialogues=1).audio_dim == 300  # key 1040 not needed

    fields = write_meld_with_audio(tmp_path)
    fields[0][1153].append(7)
    fields[4][1153].append([0.0] * 300)
    dump(tmp_path / "MELD_features_raw.pkl", fields)
    assert "dialogue key 1153 (test Dialogue_ID 0): the pickle has utterances [0, 7]" in error_of(
        "meld", tmp_path
    )

    fields = write_meld_with_audio(tmp_path)
    fields[4][1154] = [[0.0] * 299, [0.0] * 299]
    dump(tmp_path / "MELD_features_raw.pkl", fields)
    assert "key 1154 (test Dialogue_ID 1): features have width 299, but dialogue key 0 has 300" in (
        error_of("meld", tmp_path)
    )
