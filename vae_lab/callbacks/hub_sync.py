"""Push the TensorBoard event files to the Hub repo's tensorboard/ folder every few minutes while training.

Seed 000's HFSummaryWriter behaviour with huggingface_hub's own mechanism (CommitScheduler: a background thread
that commits changed files). Rank zero only. Nothing here blocks the training loop or fails the run: the repo
is created from a background thread, and network errors only print a warning (and are retried next interval).
"""

import sys
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from vae_lab.errors import ConfigError


class HubLogSync(L.Callback):
    """Commit the TensorBoard logger's folder to `<repo_id>/<path_in_repo>/` every `every_minutes`.

    Args:
        api: an `huggingface_hub.HfApi` (endpoint, token); None: the default one (HF_TOKEN or `hf auth login`).
        final_wait_s: at the end of fit, how long to wait for a commit still in flight before moving on.
    """

    def __init__(self, repo_id: str, every_minutes: float = 5.0, private: bool = False, revision: str | None = None,
                 path_in_repo: str = "tensorboard", api=None, final_wait_s: float = 30.0):
        if not every_minutes > 0:
            raise ConfigError(f"hub.sync_every_minutes={every_minutes!r} is invalid: must be a number > 0")
        self.repo_id = repo_id
        self.every_minutes = every_minutes
        self.private = private
        self.revision = revision
        self.path_in_repo = path_in_repo
        self.api = api
        self.final_wait_s = final_wait_s
        self.log_dir: Path | None = None
        self.scheduler = None  # huggingface_hub.CommitScheduler, once the repo could be reached
        self.failures: list[str] = []  # one line per failed attempt to start syncing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def setup(self, trainer: "L.Trainer", pl_module: "L.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        dirs = [lg.log_dir for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not dirs:
            raise ConfigError("hub.sync_logs=true needs a TensorBoard logger: use logger=tensorboard or logger=all")
        self.log_dir = Path(dirs[0])

    @rank_zero_only
    def on_fit_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        from vae_lab import log_redaction

        log_redaction.install()  # huggingface_hub logs commit errors, whose text may echo the Authorization header
        self._stop.clear()
        self._thread = threading.Thread(target=self._start, name="hub-log-sync", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        """Create the scheduler (it creates the repo over the network); retry each interval until it works."""
        from huggingface_hub import CommitScheduler

        from vae_lab.hub import describe_error

        while not self._stop.is_set():
            try:
                # the repo must exist before a branch can be made; CommitScheduler creates it otherwise
                if self.revision:
                    self._api().create_repo(self.repo_id, private=self.private, exist_ok=True)
                    self._api().create_branch(self.repo_id, branch=self.revision, exist_ok=True)
                scheduler = CommitScheduler(
                    repo_id=self.repo_id, folder_path=self.log_dir, every=self.every_minutes,
                    path_in_repo=self.path_in_repo, revision=self.revision, private=self.private, hf_api=self._api())
                if self._stop.is_set():  # fit ended while the repo was being created: no syncing after it
                    scheduler.stop()
                self.scheduler = scheduler
                return
            except Exception as err:  # no network, no token, Hub down: the run goes on
                self.failures.append(describe_error(err))
                if len(self.failures) == 1:
                    print(f"warning: hub log sync to {self.repo_id} is not running ({self.failures[0]}); "
                          f"retrying every {self.every_minutes:g} min, training continues", file=sys.stderr, flush=True)
            self._stop.wait(self.every_minutes * 60)

    def _api(self):
        if self.api is None:
            from huggingface_hub import HfApi

            self.api = HfApi()
        return self.api

    def close(self) -> None:
        """Stop syncing; wait (bounded) for a start or a commit in flight, so neither races the final push."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.final_wait_s)
        scheduler = self.scheduler
        if scheduler is None:
            return
        scheduler.stop()
        future = getattr(scheduler, "last_future", None)
        if future is not None:
            try:
                future.result(timeout=self.final_wait_s)
            except Exception:  # already reported by huggingface_hub's logger; the run goes on
                pass

    @rank_zero_only
    def on_fit_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self.close()

    @rank_zero_only
    def on_exception(self, trainer: "L.Trainer", pl_module: "L.LightningModule", exception: BaseException) -> None:
        self.close()
