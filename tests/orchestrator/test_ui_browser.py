"""The links `orch ui` and `orch best` print, opened in a real browser (headless Chromium).

MLflow 3.17's UI is a JavaScript app that opens in a GenAI mode (traces overview, "Detect
Issues") unless told otherwise; only a browser running that JavaScript shows what a user
sees. One real search (3 trials of the quick space on synthetic), `orch ui` on a free port
of 127.0.0.1, `orch best` pointed at it; each printed link is rendered with a fresh browser
profile (nothing remembered between pages) and the rendered text is checked.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile

import pytest

from orchestrator.tracking.runs import KIND_TAG, SEARCH_TAG, TRIAL_TAG
from orchestrator.tracking.store import client_for
from tests.orchestrator.processes import orch
from tests.orchestrator.test_ui import start_ui, stop_everything

NAME = "browsed"
TRIALS = 3
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# What MLflow's GenAI pages show and its classic runs pages do not.
GENAI = ("Detect Issues", "Token Usage", "Observability")
URL = re.compile(r"https?://\S+")

pytestmark = pytest.mark.slow  # a real search and a browser: about two minutes


def browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip("chromium not installed: apt-get install chromium")


def render(chromium: str, url: str) -> str:
    """The text of ``url`` once its JavaScript ran (up to 20 s of the page's own time)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                f"--user-data-dir={profile}", "--window-size=1440,900",
                "--virtual-time-budget=20000", "--dump-dom", url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def links(text: str) -> dict[str, str]:
    """``label: URL`` lines of a command's output, by label (UI pages only)."""
    found = {}
    for line in text.splitlines():
        match = URL.search(line)
        if match and "/#/" in match.group(0):  # a page of the UI, not the server's address
            found[line[: match.start()].strip().rstrip(":").strip()] = match.group(0)
    return found


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    chromium = browser()
    root = tmp_path_factory.mktemp("browsed")
    done = orch(
        "search", "--dataset", "synthetic", "--quick", "--trials", TRIALS,
        "--max-concurrent", "2", "--name", NAME,
        cwd=root, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = client_for(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("orch-search")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{SEARCH_TAG}` = '{NAME}'")
    parent = next(r for r in runs if r.data.tags[KIND_TAG] == "search")
    trials = sorted(r.data.tags[TRIAL_TAG] for r in runs if r.data.tags[KIND_TAG] == "trial")
    assert len(trials) == TRIALS
    return chromium, root, client, experiment, parent, trials


@pytest.fixture(scope="module")
def ui(searched, tmp_path_factory):
    """`orch ui` on the search's store, and what `orch ui` and `orch best` printed."""
    _, root, *_ = searched
    log_dir = tmp_path_factory.mktemp("ui")
    proc, port, log = start_ui(log_dir, f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    try:
        base = f"http://127.0.0.1:{port}"
        best = orch("best", cwd=root, env={"ORCH_UI_URL": base}, timeout=120)
        assert best.returncode == 0, best.stderr[-2000:]
        yield base, log.read_text(errors="replace"), best.stdout
    finally:
        stop_everything(proc)


@pytest.mark.timeout(900)
def test_links_open_the_runs_table_with_the_metric_columns(searched, ui):
    chromium, _, _, experiment, parent, trials = searched
    base, ui_out, best_out = ui
    printed = {**links(ui_out), **{f"best {k}": v for k, v in links(best_out).items()}}
    assert all(url.startswith(base + "/#/") for url in printed.values()), printed
    # orch ui stays quiet: its links are not buried in the server's request log.
    assert "GET /" not in ui_out and "DeprecationWarning" not in ui_out, ui_out[-3000:]

    # The search's trials, best first, with its metric, best epoch and state as columns.
    table = render(chromium, printed[f"latest search {NAME}, trials best first"])
    assert "Run Name" in table and all(t in table for t in trials), table[:3000]
    for column in ("best_dev_weighted_f1", "best_epoch", "orch.state"):
        assert column in table, (column, table[:3000])
    assert "Sort: best_dev_weighted_f1" in table, table[:3000]
    assert f"{TRIALS} matching runs" in table, table[:3000]  # the trials, not the parent
    assert not [g for g in GENAI if g in table], table[:3000]
    assert printed["best trials, best first"] == printed[f"latest search {NAME}, trials best first"]

    # Every run of the experiment: the search's parent run is there.
    everything = render(chromium, printed["searches"])
    assert "Run Name" in everything and NAME in everything, everything[:3000]
    assert not [g for g in GENAI if g in everything], everything[:3000]

    # The search's run page: its description says what was searched and what won.
    search_page = render(chromium, printed["search run"])
    best_id = parent.data.tags["orch.best_trial_id"]
    assert f"orch search {NAME} on synthetic" in search_page, search_page[:3000]
    assert f"Best trial {best_id}" in search_page, search_page[:3000]
    assert "sampler: bohb; scheduler: asha" in search_page, search_page[:3000]
    assert not [g for g in GENAI if g in search_page], search_page[:3000]

    # orch best's and orch ui's best trial: that trial's run page, with its metrics.
    assert printed["best best trial"] == printed["best trial"]
    trial_page = render(chromium, printed["best trial"])
    assert best_id in trial_page and "dev_weighted_f1" in trial_page, trial_page[:3000]
    assert not [g for g in GENAI if g in trial_page], trial_page[:3000]


def test_experiment_is_tagged_as_training(searched):
    _, _, client, experiment, *_ = searched
    kind = client.get_experiment(experiment.experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
