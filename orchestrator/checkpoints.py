"""What a search keeps on disk while it runs: a Tune callback on the driver.

Each trial writes a full checkpoint per epoch (weights at the training precision, plus
``trainer.pt``: AdamW's moments, the fp32 masters of a 16-bit run, RNG states). Only a
trial's latest checkpoint is ever resumed from, so:

- when a trial saves a new checkpoint, its older kept ones lose ``trainer.pt``;
- when a trial ends (completed, or stopped by the scheduler), all of its checkpoints lose
  it: weights only. A failed trial keeps its latest whole (``--resume`` may continue it);
- ``--keep-checkpoints N``: a trial keeps its N best checkpoints, and its latest while it
  may still run or resume. The janitor enforces this, not Tune: Tune's own ``num_to_keep``
  forces a full experiment snapshot (every trial as JSON plus the pickled Optuna study)
  every N checkpoints of any trial, which made the driver's cost per trial grow with the
  number of trials (``bench/search_scale.py``). A checkpoint the janitor drops leaves Tune's
  lists at once but its folder is deleted only after the next experiment snapshot, so a
  snapshot never names a folder that is gone, even if the driver dies in between;
- a search-wide budget (``--max-checkpoint-gb``): while the checkpoints on disk exceed it,
  those of the worst ended trials go first (each trial ranked by its best score; within a
  trial, its worse checkpoints first). Never evicted: the best ``protect`` trials' best
  checkpoints and the latest checkpoint of a trial that is running or failed. Evictions are
  tagged on the trial's MLflow run (``orch.evicted``) and dropped from Tune's checkpoint
  list, so nothing later points at a deleted folder.

All file operations go through the checkpoint's own pyarrow filesystem, so a remote
``--storage`` (``s3://``...) is handled like a local folder.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ray.tune import Callback

from orchestrator.disk import GB, PROTECTED_TRIALS
from orchestrator.tracking.runs import EVICTED_TAG

logger = logging.getLogger(__name__)

RESUME_FILE = "trainer.pt"


def _manager(trial):
    """Tune's checkpoint bookkeeping of ``trial`` (Ray 2.60: ``run_metadata``), or None."""
    return getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)


def _latest(trial):
    """The trial's newest checkpoint result (the one it resumes from), or None."""
    manager = _manager(trial)
    return manager.latest_checkpoint_result if manager is not None else None


def _kept(trial) -> list:
    """The ``_TrainingResult``s of the trial's checkpoints Tune keeps (best ones + latest)."""
    manager = _manager(trial)
    if manager is None:
        return []
    kept = list(getattr(manager, "_checkpoint_results", []))
    latest = manager.latest_checkpoint_result
    if latest is not None and latest not in kept:
        kept.append(latest)
    return [r for r in kept if r.checkpoint is not None]


def _drop_from_tune(trial, result) -> None:
    """Take a checkpoint out of Tune's bookkeeping of ``trial`` (kept list and latest)."""
    manager = _manager(trial)
    results = getattr(manager, "_checkpoint_results", None)
    if results is not None and result in results:
        results.remove(result)
    if manager is not None and manager.latest_checkpoint_result is result:
        manager._latest_checkpoint_result = None
    # Tune caches each trial's JSON for its snapshots: make it see the change.
    for owner in (trial, getattr(trial, "run_metadata", None)):
        for name in ("invalidate_json_state", "invalidate_cache"):
            if callable(getattr(owner, name, None)):
                getattr(owner, name)()


TRIAL_LOGS = ("result.json", "progress.csv")  # Tune's JSON and CSV loggers' files


def upload_trial_logs(trial) -> None:
    """Copy the trial's log files from the driver's staging folder to the search's storage."""
    from pyarrow.fs import LocalFileSystem, copy_files

    storage = getattr(trial, "storage", None)
    if storage is None:
        return
    for name in TRIAL_LOGS:
        local = Path(trial.local_path, name)
        remote = f"{storage.trial_fs_path.rstrip('/')}/{name}"
        if not local.is_file() or local.as_posix() == remote:
            continue
        try:
            copy_files(
                local.as_posix(),
                remote,
                source_filesystem=LocalFileSystem(),
                destination_filesystem=storage.storage_filesystem,
            )
        except OSError as error:  # only Ray's own logs are at stake, never the search
            logger.warning("could not upload %s: %s", local, error)


def folder_bytes(checkpoint) -> int:
    """Bytes of the files under a checkpoint folder (0 when it is gone)."""
    from pyarrow.fs import FileSelector, FileType

    try:
        infos = checkpoint.filesystem.get_file_info(
            FileSelector(checkpoint.path, recursive=True, allow_not_found=True)
        )
    except OSError:
        return 0
    return sum(i.size or 0 for i in infos if i.type == FileType.File)


def strip_resume_state(checkpoint) -> bool:
    """Delete the checkpoint's ``trainer.pt``; True when one was there."""
    from pyarrow.fs import FileType

    path = f"{checkpoint.path.rstrip('/')}/{RESUME_FILE}"
    try:
        if checkpoint.filesystem.get_file_info(path).type != FileType.File:
            return False
        checkpoint.filesystem.delete_file(path)
        return True
    except OSError as error:  # a leftover file costs disk, never the search
        logger.warning("could not delete %s: %s", path, error)
        return False


class CheckpointJanitor(Callback):
    """Strips optimizer state nobody will resume from, and holds the search to a disk budget.

    Args:
        metric, mode: how checkpoints and trials are ranked (the search's own).
        budget_bytes: the most the search's checkpoints may hold; None: no budget.
        recorder: the search's ``MlflowSearchCallback`` (evictions are tagged on its runs).
        protect: the best trials whose best checkpoint is never evicted.
        keep: each trial's best checkpoints kept (``--keep-checkpoints``); None: all.
    """

    _strip_ready = 0  # a janitor pickled by an older orch has neither this nor _to_strip

    def __init__(
        self,
        metric: str,
        mode: str,
        budget_bytes: float | None,
        recorder=None,
        protect: int = PROTECTED_TRIALS,
        keep: int | None = None,
    ):
        self.metric, self.mode = metric, mode
        self.budget_bytes = budget_bytes
        self.recorder = recorder
        self.protect = protect
        self.keep = keep
        self.sizes: dict[str, int] = {}  # checkpoint path -> bytes, measured after stripping
        self.evicted: dict[str, list[str]] = {}  # trial id -> evicted checkpoint folders
        self._changed: set = set()  # trials with a new checkpoint or a new status
        self._doomed: list = []  # (filesystem, path) dropped from Tune's lists, still on disk
        self._snapshotted = 0  # how many of _doomed the latest experiment snapshot forgot
        # Checkpoints whose trainer.pt goes, like _doomed's folders, only once a snapshot no
        # longer resumes from them: a driver killed before that snapshot resumes the trial
        # from the one Tune's last snapshot names, which must still be whole.
        self._to_strip: list = []
        self._strip_ready = 0  # how many of _to_strip the latest snapshot no longer resumes
        self._dirty = False
        self._trim_all = False
        self._warned = False

    # -- scores -------------------------------------------------------------------------

    def score(self, result) -> float:
        """Larger is better; NaN and missing scores rank below everything."""
        value = (result.metrics or {}).get(self.metric)
        if not isinstance(value, int | float) or math.isnan(value):
            return -math.inf
        return float(value) if self.mode == "max" else -float(value)

    def trial_score(self, trial) -> float:
        return max((self.score(r) for r in _kept(trial)), default=-math.inf)

    # -- Tune hooks ---------------------------------------------------------------------

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        # Tune calls this before it registers ``checkpoint``: every checkpoint it knows for
        # the trial is now an older one, and only the newest is resumed from.
        for result in _kept(trial):
            if result.checkpoint.path != checkpoint.path:
                self._strips().append(result.checkpoint)
        self._changed.add(trial)
        self._dirty = True

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        # Completed or stopped by the scheduler: nothing resumes it, weights are what's left.
        self._strips().extend(result.checkpoint for result in _kept(trial))
        self._changed.add(trial)
        self._dirty = True

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._dirty = True  # its latest stays whole: --resume may continue it

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # The retry will replace the trial's result.json and progress.csv with the storage's
        # copies, which are only as new as the last experiment snapshot (no longer forced at
        # every checkpoint): upload the driver's own first, so no epoch drops out of them.
        upload_trial_logs(trial)

    def on_step_end(self, iteration, trials, **info) -> None:
        # After Tune registered the step's checkpoints.
        self._delete_snapshotted(trials)
        self._strip_snapshotted()
        if getattr(self, "_trim_all", False):  # restored: the snapshot may predate drops
            self._trim_all = False
            self._changed.update(trials)
            self._queue_unresumable(trials)
        if self._changed:
            changed, self._changed = self._changed, set()
            for trial in changed:
                self.trim(trial)
        if self._dirty:
            self._dirty = False
            self.enforce(trials)

    def on_experiment_end(self, trials, **info) -> None:
        # Tune wrote its last snapshot just before: nothing can name the dropped folders now.
        for trial in self._changed:
            self.trim(trial)
        self._changed.clear()
        self.enforce(trials)
        self._snapshotted = len(self._doomed)
        self._delete_snapshotted(trials)
        self._strip_ready = len(self._strips())
        self._strip_snapshotted()

    # -- keep-N -------------------------------------------------------------------------

    def trim(self, trial) -> int:
        """Drop the trial's checkpoints beyond its ``keep`` best, never its latest while it
        may still run or resume; returns how many were dropped."""
        keep = getattr(self, "keep", None)  # a janitor pickled by an older orch has none
        if keep is None or _manager(trial) is None:
            return 0
        latest = _latest(trial)
        resumable = trial.status != "TERMINATED"
        ranked = sorted(_kept(trial), key=self.score, reverse=True)
        best = {r.checkpoint.path for r in ranked[:keep]}
        dropped = 0
        for result in ranked:
            path = result.checkpoint.path
            if path in best or (resumable and result is latest):
                continue
            self._forget(trial, result)
            dropped += 1
        return dropped

    def _forget(self, trial, result) -> None:
        """Take ``result`` out of Tune's lists now; its folder goes after the next snapshot."""
        _drop_from_tune(trial, result)
        self.sizes.pop(result.checkpoint.path, None)
        self._doomed.append((result.checkpoint.filesystem, result.checkpoint.path))

    def _delete_snapshotted(self, trials=()) -> None:
        done, self._doomed = self._doomed[: self._snapshotted], self._doomed[self._snapshotted :]
        self._snapshotted = 0
        for filesystem, path in done:
            if filesystem is None:  # restored from a snapshot: the search's own storage
                storage = next((t.storage for t in trials if t.storage is not None), None)
                if storage is None:
                    continue
                filesystem = storage.storage_filesystem
            try:
                filesystem.delete_dir(path)
            except FileNotFoundError:
                pass
            except OSError as error:  # a leftover checkpoint costs disk, never the search
                logger.warning("could not delete %s: %s", path, error)

    # -- the budget ---------------------------------------------------------------------

    def _strips(self) -> list:
        return self.__dict__.setdefault("_to_strip", [])

    def _strip_snapshotted(self) -> None:
        queue, ready = self._strips(), self._strip_ready
        self._to_strip, self._strip_ready = queue[ready:], 0
        for checkpoint in queue[:ready]:
            self._strip(checkpoint)

    def _queue_unresumable(self, trials) -> None:
        # Strips queued before the driver died are not in the snapshot: queue again what no
        # restored trial resumes from (all but the latest; all of an ended trial's).
        for trial in trials:
            ended, latest = trial.status == "TERMINATED", _latest(trial)
            self._strips().extend(r.checkpoint for r in _kept(trial) if ended or r is not latest)

    def _strip(self, checkpoint) -> None:
        if strip_resume_state(checkpoint):
            self.sizes.pop(checkpoint.path, None)

    def _size(self, checkpoint) -> int:
        if checkpoint.path not in self.sizes:
            self.sizes[checkpoint.path] = folder_bytes(checkpoint)
        return self.sizes[checkpoint.path]

    def used_bytes(self, trials) -> int:
        return sum(self._size(r.checkpoint) for t in trials for r in _kept(t))

    def protected(self, trials) -> set[str]:
        """Paths never evicted: the best trials' best checkpoints, and the latest of every
        trial still running, pending or failed (the ones a retry or --resume starts from)."""
        keep = set()
        ranked = sorted((t for t in trials if _kept(t)), key=self.trial_score, reverse=True)
        for trial in ranked[: self.protect]:
            keep.add(max(_kept(trial), key=self.score).checkpoint.path)
        for trial in trials:
            latest = _latest(trial)
            if trial.status != "TERMINATED" and latest is not None and latest.checkpoint:
                keep.add(latest.checkpoint.path)
        return keep

    def candidates(self, trials) -> list[tuple[object, object]]:
        """``(trial, result)`` pairs the budget may evict, first to go first: ended trials,
        worst first, each trial's worse checkpoints before its better ones."""
        keep = self.protected(trials)
        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        order = []
        for trial in sorted(ended, key=self.trial_score):
            for result in sorted(_kept(trial), key=self.score):
                if result.checkpoint.path not in keep:
                    order.append((trial, result))
        return order

    def enforce(self, trials) -> list[str]:
        """Evict until the checkpoints fit the budget; returns the evicted folders."""
        if self.budget_bytes is None:
            return []
        used = self.used_bytes(trials)
        gone = []
        if used <= self.budget_bytes:  # the usual case: no ranking of every trial per step
            return gone
        for trial, result in self.candidates(trials):
            if used <= self.budget_bytes:
                break
            used -= self._size(result.checkpoint)
            self._evict(trial, result)
            gone.append(result.checkpoint.path)
        if used > self.budget_bytes and not self._warned:
            self._warned = True  # once: it stays true until a protected trial ends
            logger.warning(
                "checkpoints hold %.2f GB, over --max-checkpoint-gb %.2f, and none left may go "
                "(the best %d trials' best, the running trials' latest)",
                used / GB,
                self.budget_bytes / GB,
                self.protect,
            )
        return gone

    def _evict(self, trial, result) -> None:
        checkpoint = result.checkpoint
        try:
            checkpoint.filesystem.delete_dir(checkpoint.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning("could not evict %s: %s", checkpoint.path, error)
            return
        self.sizes.pop(checkpoint.path, None)
        # Tune's list must forget it too: results, experiment snapshots and the end-of-search
        # report would otherwise name a folder that is gone.
        _drop_from_tune(trial, result)
        folders = self.evicted.setdefault(trial.trial_id, [])
        folders.append(checkpoint.path.rstrip("/").rsplit("/", 1)[-1])
        self._tag(trial, folders)

    def _tag(self, trial, folders: list[str]) -> None:
        if self.recorder is None:
            return
        budget = f"{self.budget_bytes / GB:.3g}"
        text = f"{', '.join(folders)} (over --max-checkpoint-gb {budget})"
        try:
            self.recorder.writer.set_tags(self.recorder.child_run(trial), {EVICTED_TAG: text})
        except Exception as error:  # noqa: BLE001 - a missing tag must not stop the search
            logger.warning("could not tag the eviction of %s: %s", trial.trial_id, error)

    # -- Tune's callback state ----------------------------------------------------------

    def get_state(self) -> dict:
        # Tune asks while it writes an experiment snapshot, after the trials' JSON: the
        # folders dropped so far are named by no snapshot from now on, and the checkpoints
        # superseded so far are resumed from by none.
        self._snapshotted = len(self._doomed)
        self._strip_ready = len(self._strips())
        return {
            "evicted": {k: list(v) for k, v in self.evicted.items()},
            "doomed": [path for _, path in self._doomed],
        }

    def set_state(self, state: dict) -> None:
        self.evicted.update(state.get("evicted", {}))
        # Dropped before that snapshot, so it does not name them: delete them first thing.
        for path in state.get("doomed", []):
            self._doomed.append((None, path))
        self._snapshotted = len(self._doomed)
        self._trim_all = True
