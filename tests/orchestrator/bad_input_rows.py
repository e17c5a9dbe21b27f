"""What the bad-input table (test_bad_input.py) is built from: small valid MELD CSVs, rows,
and the stores some rows need. Builders take the row's tmp folder and return the arguments."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime,EndTime"
)
MELD_ROWS = [
    '1,"Oh my God, he is lost it.",Phoebe,sadness,negative,0,0,4,7,"00:20:57,256","00:21:00,049"',
    '2,What?,Monica,surprise,negative,0,1,4,7,"00:21:01,927","00:21:03,261"',
    '3,Hi.,Joey,neutral,neutral,1,0,4,7,"00:21:04,000","00:21:05,000"',
]
SPLITS = ("train", "dev", "test")


def meld_folder(tmp: Path, **contents: bytes) -> Path:
    """Three small valid MELD CSVs under ``tmp/meld``; ``contents`` replaces a split's bytes."""
    folder = tmp / "meld"
    folder.mkdir()
    good = "\n".join([MELD_HEADER, *MELD_ROWS]) + "\n"
    for split in SPLITS:
        data = contents.get(split, good.encode())
        (folder / f"{split}_sent_emo.csv").write_bytes(data)
    return folder


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released), so connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unwritable_path(tmp: Path) -> Path:
    """A storage path no one can create, root included: its parent is a regular file, so
    mkdir fails with NotADirectoryError whatever the permissions (chmod does not stop root)."""
    blocker = tmp / "not-a-folder.txt"
    blocker.write_text("a file, not a folder\n")
    return blocker / "ray"


@dataclass(frozen=True)
class Row:
    """One bad invocation: ``build(tmp)`` writes what it needs and returns the arguments."""

    build: Callable[[Path], list[str]]
    code: int
    mentions: tuple[str, ...]  # what the error line must name (option, file, field)
    storage: bool = True  # append --storage <tmp>/storage (search only)


def search(*args: str):
    return lambda tmp: ["search", *args]


def meld(command: str, **contents: bytes):
    """``orch <command> --dataset meld`` on small CSVs, one split replaced by ``contents``."""
    return lambda tmp: [
        command,
        "--dataset",
        "meld",
        "--data-dir",
        str(meld_folder(tmp, **contents)),
    ]


def lines(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def space_file(name: str, text: str):
    def build(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(text)
        return ["search", "--dataset", "synthetic", "--space", str(path)]

    return build


def seed_search(name: str) -> None:
    """A finished search ``name`` in ./mlruns: a parent run tagged the way `orch search` does."""
    from orchestrator.tracking.runs import DEFAULT_EXPERIMENT, KIND_TAG, SEARCH_TAG
    from orchestrator.tracking.store import client_for, default_tracking_uri, experiment_id

    uri = default_tracking_uri()
    client = client_for(uri)
    exp = experiment_id(client, uri, DEFAULT_EXPERIMENT)
    run = client.create_run(exp, run_name=name, tags={KIND_TAG: "search", SEARCH_TAG: name})
    client.set_terminated(run.info.run_id, "FINISHED")


def count_runs() -> int:
    """Runs of every experiment in ./mlruns (0 when there is no store)."""
    from orchestrator.tracking.store import client_for, default_root, default_tracking_uri

    if not default_root().exists():
        return 0
    client = client_for(default_tracking_uri())
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=1000)) if ids else 0


def seeded(*args: str):
    """``args`` run against a store that already holds a search named ``taken``."""

    def build(tmp: Path) -> list[str]:
        seed_search("taken")
        return list(args)

    return build
