"""The benchmark's clock: optimizer steps counted into images/s, per-step times and time to the first step.

Only the standard library at the top: every benchmark child imports this, and its start-up time is measured.
"""

import os
import resource
import statistics
import time

LAUNCH_ENV = "VAE_LAB_BENCH_LAUNCH"  # wall-clock time at which the parent launched this process


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def since_launch() -> float:
    """Seconds since the parent launched this process (LAUNCH_ENV), 0 when it was not launched by one."""
    return time.time() - float(os.environ.get(LAUNCH_ENV, time.time()))


def sync(device: str) -> None:
    """Wait for queued GPU work before a clock reads: twice per timed run, never per step."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def now() -> tuple[float, float]:
    """(wall, process CPU) seconds."""
    return time.perf_counter(), time.process_time()


class StepClock:
    """Counts optimizer steps: time from launch to the first one, then images/s over `steps` steps after `warmup`.

    Wall time is what the issue's targets use; the process's CPU time is kept too (see `report`).
    """

    def __init__(self, warmup: int, steps: int, device: str = "cpu"):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.count = 0
        self.images = 0
        self.first_step_s: float | None = None
        self.started: tuple[float, float] | None = None  # (wall, process CPU) when the clock started
        self.elapsed: tuple[float, float] | None = None  # (wall, CPU) seconds of the timed steps
        self.paused = (0.0, 0.0)
        self._pause_at: tuple[float, float] | None = None
        self.step_s: list[float] = []  # each timed step's wall time (a step spanning a pause is left out)
        self._last: float | None = None
        self._started_at = 0  # steps counted when the clock started (warmup, or the first call end past it)
        self.timed_steps = 0

    @property
    def done(self) -> bool:
        return self.elapsed is not None

    def stepped(self, num_images: int, steps: int = 1) -> None:
        """Call after every optimizer step with the batch's number of images, or after a call of `steps` optimizer
        steps (schedule.steps_per_call): the clock then starts and stops at call ends, its time shared equally."""
        before, self.count = self.count, self.count + steps
        if before == 0:
            self.first_step_s = since_launch()
        if self.started is None:
            if self.count >= self.warmup:
                sync(self.device)
                self.started = now()
                self._last, self._started_at = self.started[0], self.count
            return
        if self.done:
            return
        self.images += num_images * steps
        step_end = time.perf_counter()
        # Per-step times on the CPU only, which runs synchronously: on a GPU they would need a sync per step.
        if self._last is not None and self.device == "cpu":
            self.step_s += [(step_end - self._last) / steps] * steps
        self._last = step_end
        if self.count >= self.warmup + self.steps:
            sync(self.device)
            self.elapsed = tuple(t - start - paused for t, start, paused in zip(now(), self.started, self.paused))
            self.timed_steps = self.count - self._started_at

    def pause(self) -> None:
        """Stop counting time (side a's validation: work the other sides do not do)."""
        if self.started is not None and not self.done:
            self._pause_at = now()
            self._last = None

    def resume(self) -> None:
        if self._pause_at is not None:
            self.paused = tuple(p + t - at for p, t, at in zip(self.paused, now(), self._pause_at))
            self._pause_at = None

    def report(self, **extra) -> dict:
        if not self.done:
            raise RuntimeError(f"only {self.count} of {self.warmup + self.steps} optimizer steps ran")
        import torch

        wall, cpu = self.elapsed
        return {
            "images_per_s": self.images / wall,
            # per CPU second of the whole process: on a machine shared with other jobs, less sensitive to their load
            "images_per_cpu_s": self.images / cpu,
            "first_step_s": self.first_step_s,
            "peak_rss_mb": peak_rss_mb(),
            "timed_steps": self.timed_steps,  # `steps`, or up to a call fewer with several steps per call
            "timed_images": self.images,
            "timed_s": wall,
            "median_step_s": statistics.median(self.step_s) if self.step_s else None,
            "torch_threads": torch.get_num_threads(),
            **extra,
        }


def weights_fingerprint(model) -> dict:
    """A fingerprint of the initial weights: every side must start from the same model."""
    params = list(model.parameters())
    return {
        "num_params": sum(p.numel() for p in params),
        "weights_checksum": float(sum(p.detach().double().sum().item() for p in params)),
    }


def write_report(path: str, obj: dict) -> None:
    from vae_lab.io import atomic_write_json

    atomic_write_json(path, obj)


def step_timer(report: str, warmup: int, steps: int, device: str = "cpu", side: str = "a"):
    """Side a's (or s's) timing callback (Hydra `_target_` of `+callbacks.benchmark_timer`); Lightning imported lazily."""
    from lightning.pytorch import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.clock = StepClock(warmup, steps, device)
            self.extra: dict = {}
            self.global_step = 0

        def on_fit_start(self, trainer, pl_module):
            self.extra = weights_fingerprint(pl_module.model)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # optimizer steps of this call (schedule.steps_per_call), each counted with the size of its last batch
            steps, self.global_step = trainer.global_step - self.global_step, trainer.global_step
            self.clock.stepped(len(batch[0]), steps)

        def on_validation_start(self, trainer, pl_module):
            self.clock.pause()

        def on_validation_end(self, trainer, pl_module):
            self.clock.resume()

        def on_train_end(self, trainer, pl_module):
            write_report(report, self.clock.report(side=side, steps_per_call=getattr(pl_module, "steps_per_call", 1),
                                                   **self.extra))

    return StepTimer()
