"""Dataset API, data location (offline), MELD on the real CSVs and on small corrupted copies."""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from trainable.datasets import DATASETS, DataError, find_data_dir, load_dataset, locate
from trainable.datasets.meld import EMOTIONS, SENTIMENTS, SPLIT_FILES

REAL_MELD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meld"
HEADER = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]
# From data/README.md: rows, dialogues, emotion counts (neutral/joy/surprise/anger/sadness/
# disgust/fear) and sentiment counts (neutral/positive/negative).
EXPECTED = {
    "train": (9989, 1038, (4710, 1743, 1205, 1109, 683, 271, 268), (4710, 2334, 2945)),
    "dev": (1109, 114, (470, 163, 150, 153, 111, 22, 40), (470, 233, 406)),
    "test": (2610, 280, (1256, 402, 281, 345, 208, 68, 50), (1256, 521, 833)),
}
README_ORDER = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network, and a private cache and data root for every test."""
    monkeypatch.setenv("ORCH_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ORCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("ORCH_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def real_meld():
    if not (REAL_MELD / "train_sent_emo.csv").exists():
        pytest.skip(f"real MELD CSVs not found at {REAL_MELD}")
    return load_dataset("meld", REAL_MELD)


def row(d, u, text="hi", speaker="Ross", emotion="neutral", sentiment="neutral", sr=1):
    return [sr, text, speaker, emotion, sentiment, d, u, 1, 1, "00:00:01,000", "00:00:02,000"]


def write_csv(path: Path, rows, header=HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # MELD's own CRLF + RFC-4180 quoting
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return path


def write_meld(folder: Path, splits: dict | None = None) -> Path:
    """A tiny MELD folder; ``splits`` maps split -> rows (default: 2 dialogues per split)."""
    folder.mkdir(parents=True, exist_ok=True)
    default = [row(0, 0), row(0, 1, "what?", "Monica", "surprise"), row(1, 0, "no", "Joey")]
    for split, filename in SPLIT_FILES.items():
        write_csv(folder / filename, (splits or {}).get(split, default))
    return folder


def one_line_error(folder, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset("meld", folder, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# --- API -------------------------------------------------------------------------------------


def test_dataset_names_and_unknown_name():
    assert list(DATASETS) == ["meld", "iemocap", "avec", "synthetic"]
    assert "meld" in DATASETS and "imdb" not in DATASETS
    with pytest.raises(DataError, match="expected one of meld, iemocap, avec, synthetic"):
        load_dataset("imdb")
    assert issubclass(DataError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_dialogues": 0}, "max_dialogues must be an integer >= 1"),
        ({"label": "valence"}, "label must be one of emotion, sentiment"),
        ({"name": "iemocap", "label": "sentiment"}, "only for meld"),
        ({"name": "meld", "size": 2.0}, "synthetic dataset only"),
    ],
)
def test_bad_options(kwargs, match):
    name = kwargs.pop("name", "synthetic")
    with pytest.raises(DataError, match=match):
        load_dataset(name, **kwargs)


# --- locating data ---------------------------------------------------------------------------


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"data directory .*nowhere does not exist"):
        find_data_dir("meld", tmp_path / "nowhere")


def test_orch_data_dir_then_cache(tmp_path, monkeypatch):
    cached = write_meld(tmp_path / "xdg" / "orch" / "meld")
    assert find_data_dir("meld") == cached  # XDG_CACHE_HOME respected
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path / "data"))
    assert find_data_dir("meld") == cached  # no data/meld folder: fall through to the cache
    (tmp_path / "data" / "meld").mkdir(parents=True)
    assert find_data_dir("meld") == tmp_path / "data" / "meld"
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ORCH_DATA_DIR")
    (tmp_path / "cache" / "iemocap").mkdir(parents=True)
    assert find_data_dir("iemocap") == tmp_path / "cache" / "iemocap"


def test_offline_meld_error_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("meld")
    message = str(info.value)
    assert "\n" not in message
    for part in (*SPLIT_FILES.values(), str(tmp_path / "xdg" / "orch" / "meld"), "--data-dir"):
        assert part in message
    assert "ORCH_DATA_DIR" in message and "ORCH_OFFLINE" in message


def test_no_iemocap_anywhere():
    with pytest.raises(DataError, match=r"no iemocap data found: put IEMOCAP_features_raw\.pkl"):
        load_dataset("iemocap")


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_checksums_and_writes_atomically(tmp_path, monkeypatch):
    bodies = {name: f"{name} body\r\n".encode() for name in SPLIT_FILES.values()}
    sums = {name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}
    monkeypatch.delenv("ORCH_OFFLINE")
    monkeypatch.setattr(locate, "MELD_SHA256", sums)
    urls = []

    def fake_urlopen(url, timeout):
        urls.append((url, timeout))
        return _Response(bodies[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(locate.urllib.request, "urlopen", fake_urlopen)
    folder = find_data_dir("meld")
    assert folder == tmp_path / "xdg" / "orch" / "meld"
    assert sorted(p.name for p in folder.iterdir()) == sorted(bodies)  # no temp files left
    assert all((folder / n).read_bytes() == b for n, b in bodies.items())
    assert urls[0][0].startswith("https://raw.githubusercontent.com/declare-lab/MELD/master/")
    assert all(timeout <= 10 for _, timeout in urls)

    (folder / "dev_sent_emo.csv").unlink()
    sums["dev_sent_emo.csv"] = "0" * 64
    with pytest.raises(DataError, match="checksum mismatch for dev_sent_emo.csv") as info:
        find_data_dir("meld")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == ["test_sent_emo.csv", "train_sent_emo.csv"]


def test_download_failure_is_one_line(monkeypatch):
    monkeypatch.delenv("ORCH_OFFLINE")

    def no_network(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(locate.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError, match="download failed .*name resolution.*put train_sent_emo"):
        load_dataset("meld")


# --- real MELD ---------------------------------------------------------------------------------


def test_real_meld_counts(real_meld):
    splits = real_meld
    assert splits.name == "meld" and splits.task == "categorical"
    assert splits.label_names == list(EMOTIONS)
    assert EMOTIONS == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert (splits.audio_dim, splits.visual_dim) == (0, 0)
    for split, (rows, dialogues, emotions, _) in EXPECTED.items():
        part = splits.splits()[split]
        assert len(part) == dialogues
        assert sum(len(d) for d in part) == rows
        counts = Counter(splits.label_names[y] for d in part for y in d.labels)
        assert tuple(counts[name] for name in README_ORDER) == emotions
        assert all(d.audio is None and d.visual is None for d in part)
        assert all(len(d.speakers) == len(d.labels) == len(d) for d in part)
    ids = [d.id for d in splits.train]
    assert ids[:3] == ["train/0", "train/1", "train/2"] and "train/60" not in ids
    assert splits.source["sha256"]["train_sent_emo.csv"] == locate.MELD_SHA256["train_sent_emo.csv"]


def test_real_meld_orders_turns_by_utterance_id(real_meld):
    splits = real_meld
    with open(REAL_MELD / "train_sent_emo.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Dialogue_ID"] == "1"]
    ids = sorted(int(r["Utterance_ID"]) for r in rows)
    assert ids == [0, 1, 2, 3, 4, 5, 8]  # a dialogue with a gap (README: 72 such in train)
    by_id = {int(r["Utterance_ID"]): r for r in rows}
    dialogue = next(d for d in splits.train if d.id == "train/1")
    assert dialogue.utterances == [by_id[i]["Utterance"] for i in ids]
    assert dialogue.speakers == [by_id[i]["Speaker"] for i in ids]
    assert "’" in splits.train[0].utterances[0]  # UTF-8 kept as is


def test_real_meld_sentiment_and_max_dialogues():
    if not (REAL_MELD / "train_sent_emo.csv").exists():
        pytest.skip(f"real MELD CSVs not found at {REAL_MELD}")
    splits = load_dataset("meld", REAL_MELD, label="sentiment", max_dialogues=3)
    assert splits.label_names == list(SENTIMENTS)
    assert [len(p) for p in splits.splits().values()] == [3, 3, 3]
    assert [d.id for d in splits.dev] == ["dev/0", "dev/1", "dev/2"]


def test_real_meld_sentiment_counts():
    if not (REAL_MELD / "train_sent_emo.csv").exists():
        pytest.skip(f"real MELD CSVs not found at {REAL_MELD}")
    splits = load_dataset("meld", REAL_MELD, label="sentiment")
    for split, (*_, sentiments) in EXPECTED.items():
        counts = Counter(y for d in splits.splits()[split] for y in d.labels)
        assert tuple(counts[i] for i in range(3)) == sentiments


# --- small MELD files ------------------------------------------------------------------------


def test_small_meld_groups_and_orders(tmp_path):
    shuffled = [
        row(3, 5, "third", "Ross", "anger"),
        row(0, 0, "only", "Rachel", "joy"),
        row(3, 0, "first", "Ross", "fear"),
        row(3, 2, "second", "Chandler", "disgust", sr=1),  # Sr No. repeats: ignored
    ]
    folder = write_meld(tmp_path / "meld", {"train": shuffled})
    before = sorted(p.name for p in folder.iterdir())
    splits = load_dataset("meld", folder)
    assert [d.id for d in splits.train] == ["train/0", "train/3"]
    third = splits.train[1]
    assert third.utterances == ["first", "second", "third"]
    assert third.speakers == ["Ross", "Chandler", "Ross"]
    assert [EMOTIONS[y] for y in third.labels] == ["fear", "disgust", "anger"]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside the data
    assert [d.id for d in load_dataset("meld", folder, max_dialogues=1).train] == ["train/0"]


def test_quoting_and_strings_kept(tmp_path):
    rows = [row(0, 0, 'He said "NA", then, well… null'), row(0, 1, "NA", "NA")]
    splits = load_dataset("meld", write_meld(tmp_path / "m", {"dev": rows}))
    assert splits.dev[0].utterances == ['He said "NA", then, well… null', "NA"]
    assert splits.dev[0].speakers == ["Ross", "NA"]


def test_missing_file(tmp_path):
    folder = write_meld(tmp_path / "m")
    (folder / "test_sent_emo.csv").unlink()
    message = one_line_error(folder)
    assert message.startswith(f"missing file {folder / 'test_sent_emo.csv'}")


def test_missing_column(tmp_path):
    folder = write_meld(tmp_path / "m")
    header = [h for h in HEADER if h != "Emotion"]
    write_csv(folder / "dev_sent_emo.csv", [r[:3] + r[4:] for r in [row(0, 0)]], header)
    message = one_line_error(folder)
    assert "dev_sent_emo.csv: missing column 'Emotion'" in message


def test_unknown_emotion_names_file_row_and_value(tmp_path):
    rows = [row(0, 0), row(0, 1), row(1, 0, emotion="happy")]
    folder = write_meld(tmp_path / "m", {"train": rows})
    message = one_line_error(folder)
    assert "train_sent_emo.csv row 4: unknown Emotion 'happy'; expected one of neutral" in message


def test_empty_split(tmp_path):
    folder = write_meld(tmp_path / "m", {"test": []})
    assert "test_sent_emo.csv: no rows" in one_line_error(folder)
    (folder / "test_sent_emo.csv").write_bytes(b"")
    assert "test_sent_emo.csv: empty file" in one_line_error(folder)


def test_invalid_utf8(tmp_path):
    folder = write_meld(tmp_path / "m")
    path = folder / "dev_sent_emo.csv"
    path.write_bytes(path.read_bytes().replace(b"what?", b"what\x92"))  # a cp1252 quote
    assert "dev_sent_emo.csv: invalid UTF-8 at line 3" in one_line_error(folder)


def test_duplicate_key(tmp_path):
    rows = [row(0, 0), row(0, 1, sr=2), row(0, 1, "again", sr=3)]
    folder = write_meld(tmp_path / "m", {"train": rows})
    message = one_line_error(folder)
    assert "train_sent_emo.csv row 4: duplicate key (Dialogue_ID 0, Utterance_ID 1)" in message
    assert "first seen at row 3" in message


def test_bad_integer_and_malformed_row(tmp_path):
    folder = write_meld(tmp_path / "m", {"train": [row("x1", 0)]})
    assert "train_sent_emo.csv row 2: Dialogue_ID 'x1' is not" in one_line_error(folder)
    folder = write_meld(tmp_path / "n", {"train": [row(0, 0), row(0, 1) + ["extra", "fields"]]})
    assert "train_sent_emo.csv row 3: 13 fields, expected 11" in one_line_error(folder)
    folder = write_meld(tmp_path / "o", {"train": [row(0, 0)[:5]]})
    assert "train_sent_emo.csv row 2: 5 fields, expected 11" in one_line_error(folder)
