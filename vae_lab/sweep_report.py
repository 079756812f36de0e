"""The report of a sweep: every job's overrides, status and final metrics (CSV + Markdown), heatmaps, the best job.

A sweep directory (hydra.sweep.dir) holds one directory per job with `.hydra/overrides.yaml`, and `metrics.json`
when the job finished or `failure.json` (written by vae_lab.cli.hydra_callbacks.multirun_job) when it failed.
"""

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from vae_lab.errors import ConfigError, choices_error
from vae_lab.io import atomic_write_bytes

REPORT_CSV = "report.csv"
REPORT_MD = "report.md"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of the sweep: its config, sweeper params and overrides
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
NOT_STARTED = "not started"  # a job of the sweep's plan with no directory yet
FAILURE_FILE = "failure.json"  # {"error": one line, "type", "traceback", "overrides", "wall_time_s"}
METRICS_FILE = "metrics.json"
# metrics.json sections whose scalars go into the table; `disentanglement` (data with ground-truth factors) holds
# unprefixed names (mig, dci_disentanglement, ...), shown as disentanglement/<name>
SECTIONS = ("val", "test", "disentanglement")
TOP_LEVEL = ("wall_time_s", "global_step", "epochs")  # top-level scalars of metrics.json in the table
# Column order of the metrics (by the name after the stage's "/"); others follow alphabetically.
TERM_ORDER = ("elbo_nats", "iwae_nats", "distortion_nats", "rate_nats", "bits_per_dim", "ssim", "psnr_db",
              "active_units")
# `*/loss` is left out: beta weights it, so it does not compare across a beta sweep (the ELBO does).
EXCLUDED_TERMS = ("loss", "seed", "num_train", "num_test")  # and the disentanglement scores' settings
# Which way is better, by the metric's last name component; `mode=max|min` decides for any other metric.
DIRECTIONS = {
    **dict.fromkeys(("mig", "sap", "beta_vae_score", "factor_vae_score", "dci_disentanglement", "dci_completeness",
                     "dci_informativeness"), "max"),
    "elbo_nats": "max",
    "iwae_nats": "max",
    "ssim": "max",
    "psnr_db": "max",
    "active_units": "max",
    "distortion_nats": "min",
    "bits_per_dim": "min",
    "mse": "min",
    "wall_time_s": "min",
}
MODES = ("auto", "max", "min")


@dataclass
class Job:
    """One job of the sweep."""

    name: str  # its directory relative to the sweep directory ("0", "1", ...)
    path: Path
    overrides: dict[str, str]  # key (with +/~ prefix) -> value as typed on the command line
    values: dict[str, object]  # key -> parsed value (numbers as numbers), for sorting the heatmap axes
    status: str  # ok | failed | incomplete (started, then killed or still running) | not started
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # "val/elbo_nats", ..., "wall_time_s": as in the JSON


@dataclass
class Report:
    """What write_report found and wrote."""

    jobs: list[Job]
    axes: list[str]  # the swept override keys (values differ between jobs)
    metric: str
    mode: str  # max | min
    best: Job | None
    best_line: str
    files: list[Path]


def _parse_overrides(lines: list[str]) -> tuple[dict[str, str], dict[str, object]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts, values = {}, {}
    for override in OverridesParser.create().parse_overrides([str(line) for line in lines]):
        key = override.get_key_element()
        texts[key] = override.get_value_element_as_str()
        values[key] = override.value()
    return texts, values


def _flatten(metrics: dict) -> dict[str, float]:
    """The table's scalars of a metrics.json: its val/test sections and a few top-level numbers."""
    flat = {}
    for section in SECTIONS:
        for key, value in (metrics.get(section) or {}).items():
            if key.rsplit("/", 1)[-1] not in EXCLUDED_TERMS and _is_number(value):
                flat[key if "/" in key else f"{section}/{key}"] = value
    for key in TOP_LEVEL:
        if _is_number(metrics.get(key)):
            flat[key] = metrics[key]
    return flat


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _read_json(path: Path) -> tuple[dict | None, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as err:
        return None, f"unreadable {path.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def read_job(sweep_dir: Path, job_dir: Path) -> Job:
    """A job's overrides, status and metrics from its directory."""
    from omegaconf import OmegaConf

    texts, values = _parse_overrides(list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")))
    name = job_dir.relative_to(sweep_dir).as_posix()
    job = Job(name=name, path=job_dir, overrides=texts, values=values, status="incomplete")
    if (job_dir / FAILURE_FILE).is_file():
        failure, problem = _read_json(job_dir / FAILURE_FILE)
        job.status, job.error = "failed", (failure or {}).get("error", problem) or "unknown error"
        if _is_number((failure or {}).get("wall_time_s")):
            job.metrics["wall_time_s"] = failure["wall_time_s"]  # the price of a failure counts too
    elif (job_dir / METRICS_FILE).is_file():
        metrics, problem = _read_json(job_dir / METRICS_FILE)
        if metrics is None:
            job.error = problem
        else:
            job.status, job.metrics = "ok", _flatten(metrics)
    else:
        job.error = f"neither {METRICS_FILE} nor {FAILURE_FILE}: the job was killed or is still running"
    return job


def collect_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of the sweep, in job order: each job directory under `sweep_dir` (any depth, so custom
    hydra.sweep.subdir layouts work), then the jobs of the sweep's plan (multirun.yaml) that never started."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir={str(sweep_dir)!r} is not a directory: give a multirun directory "
                          "(hydra.sweep.dir, e.g. outputs/multiruns/<date>_<time>)")
    job_dirs = sorted({p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")},
                      key=lambda d: _natural_key(d.relative_to(sweep_dir).as_posix()))
    jobs = [read_job(sweep_dir, d) for d in job_dirs]
    started = [job.overrides for job in jobs]
    for number, overrides in enumerate(planned_jobs(sweep_dir) or []):
        texts, values = _parse_overrides(overrides)
        if texts not in started:
            jobs.append(Job(name=str(number), path=sweep_dir / str(number), overrides=texts, values=values,
                            status=NOT_STARTED, error="never started (the sweep was stopped before it, or is "
                            "still running)"))
    if not jobs:
        raise ConfigError(f"sweep_dir={str(sweep_dir)!r} holds no job directory (<job>/.hydra/overrides.yaml): "
                          "is it the directory of a multirun (python train.py -m ...)?")
    return sorted(jobs, key=lambda job: _natural_key(job.name))


def planned_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """Each job's overrides as the basic sweeper expands them from multirun.yaml (written before the first job
    starts); None when there is no plan to read (no multirun.yaml, another sweeper, or a sweep it cannot expand)."""
    import yaml
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra_cfg = (yaml.safe_load((Path(sweep_dir) / MULTIRUN_FILE).read_text()) or {}).get("hydra") or {}
        sweeper = hydra_cfg.get("sweeper") or {}
        if sweeper.get("_target_") != BASIC_SWEEPER:
            return None
        lines = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        lines += [str(o) for o in (hydra_cfg.get("overrides") or {}).get("task") or []]
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    except Exception:  # noqa: BLE001 - a plan we cannot read: report the job directories alone
        return None
    return [job for batch in batches for job in batch]


def swept_axes(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs, in command-line order."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({job.overrides.get(k, "") for job in jobs}) > 1]


def metric_columns(jobs: list[Job]) -> list[str]:
    """The metrics of the table: val first, then test, then the top-level numbers; ELBO terms first."""
    names = {k for job in jobs for k in job.metrics}

    def order(name: str):
        stage, _, term = name.rpartition("/")
        if stage not in SECTIONS:
            return len(SECTIONS), TOP_LEVEL.index(name), name
        return SECTIONS.index(stage), TERM_ORDER.index(term) if term in TERM_ORDER else len(TERM_ORDER), name

    return sorted(names, key=order)


def direction(metric: str, mode: str = "auto") -> str:
    """max or min: `mode`, or for auto the registered direction of the metric's name."""
    if mode not in MODES:
        raise choices_error("mode", mode, MODES)
    if mode != "auto":
        return mode
    term = metric.rsplit("/", 1)[-1]
    if term not in DIRECTIONS:
        raise ConfigError(f"no known direction for metric={metric!r}: set mode=max or mode=min "
                          f"(known: {', '.join(sorted(DIRECTIONS))})")
    return DIRECTIONS[term]


def best_job(jobs: list[Job], metric: str, mode: str) -> Job | None:
    """The finished job with the best finite value of `metric` (first in job order on ties)."""
    scored = [j for j in jobs if j.status == "ok" and math.isfinite(j.metrics.get(metric, math.nan))]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda j: j.metrics[metric])


def _axis_values(jobs: list[Job], key: str) -> list[str]:
    """The distinct values of an axis, numeric order when they are all numbers, else first-seen order."""
    seen = {}
    for job in jobs:
        seen.setdefault(job.overrides.get(key, ""), job.values.get(key))
    if all(_is_number(v) for v in seen.values()):
        return sorted(seen, key=lambda text: seen[text])
    return list(seen)


def _label(job: Job, keys: list[str]) -> str:
    return " ".join(f"{k}={job.overrides.get(k, '')}" for k in keys)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def heatmap_png(jobs: list[Job], rows: str, cols: str | None, metric: str, mode: str, title: str,
                best: Job | None) -> bytes:
    """A heatmap of `metric` over two axes (or one row over `rows` alone) as PNG bytes; failed cells say so."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend needed
    from matplotlib.patches import Rectangle

    row_values = _axis_values(jobs, rows)
    col_values = _axis_values(jobs, cols) if cols else [""]
    grid = np.full((len(row_values), len(col_values)), np.nan)  # (rows, cols)
    text = [["" for _ in col_values] for _ in row_values]
    best_cell = None
    for job in jobs:
        i = row_values.index(job.overrides.get(rows, ""))
        j = col_values.index(job.overrides.get(cols, "")) if cols else 0
        if job.status == "ok" and metric in job.metrics:
            grid[i, j] = job.metrics[metric]
            text[i][j] = _fmt(job.metrics[metric])
        else:
            text[i][j] = job.status
        if job is best:
            best_cell = (i, j)

    fig = Figure(figsize=(1.6 + 1.3 * len(col_values), 1.4 + 0.7 * len(row_values)), layout="constrained")
    ax = fig.add_subplot()
    # bright = better whichever the direction; failed or missing cells grey
    cmap = matplotlib.colormaps["viridis" if mode == "max" else "viridis_r"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, j in product(range(len(row_values)), range(len(col_values))):
        bright = np.isfinite(grid[i, j]) and ((grid[i, j] > middle) == (mode == "max"))
        ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9,
                color="black" if bright or not np.isfinite(grid[i, j]) else "white")
    if best_cell is not None:
        ax.add_patch(Rectangle((best_cell[1] - 0.5, best_cell[0] - 0.5), 1, 1, fill=False, edgecolor="red",
                               linewidth=2.5))
    ax.set_xticks(range(len(col_values)), col_values)
    ax.set_yticks(range(len(row_values)), row_values)
    ax.set_xlabel(cols or "")
    ax.set_ylabel(rows)
    ax.set_title(title, fontsize=9)
    if finite.size:
        fig.colorbar(image, ax=ax, label=f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _heatmaps(sweep_dir: Path, jobs: list[Job], axes: list[str], metric: str, mode: str,
              best: Job | None) -> list[Path]:
    """One heatmap over axes[0] x axes[1] per combination of any further swept axes."""
    if not axes:
        return []
    rows, cols, rest = axes[0], (axes[1] if len(axes) > 1 else None), axes[2:]
    written = []
    for combo in product(*[_axis_values(jobs, k) for k in rest]):
        subset = [j for j in jobs if all(j.overrides.get(k, "") == v for k, v in zip(rest, combo))]
        if not subset:
            continue
        fixed = " ".join(f"{k}={v}" for k, v in zip(rest, combo))
        title = f"{metric} over {rows} x {cols}" if cols else f"{metric} over {rows}"
        png = heatmap_png(subset, rows, cols, metric, mode, title + (f"\n{fixed}" if fixed else ""), best)
        name = "heatmap_" + _slug(metric) + ("__" + _slug(fixed.replace(" ", "__")) if fixed else "") + ".png"
        written.append(atomic_write_bytes(sweep_dir / name, png))
    return written


def _csv_bytes(jobs: list[Job], columns: list[str]) -> bytes:
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", *keys, *columns, "error", "path"])
    for job in jobs:
        # repr of a float round-trips exactly: the CSV holds metrics.json's numbers, not rounded ones
        numbers = [repr(job.metrics[c]) if c in job.metrics else "" for c in columns]
        writer.writerow([job.name, job.status, *[job.overrides.get(k, "") for k in keys], *numbers, job.error,
                         str(job.path)])
    return buffer.getvalue().encode()


def _markdown(sweep_dir: Path, jobs: list[Job], axes: list[str], columns: list[str], best_line: str,
              heatmaps: list[Path]) -> bytes:
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete", NOT_STARTED)}
    common = [k for k in dict.fromkeys(k for j in jobs for k in j.overrides) if k not in axes]
    lines = [f"# Sweep report: {sweep_dir}", ""]
    lines.append(f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ". "
                 + (f"Swept: {', '.join(axes)}." if axes else "Nothing swept."))
    if common:
        lines.append("Common to every job: " + " ".join(f"`{k}={jobs[0].overrides.get(k, '')}`" for k in common))
    lines += ["", f"**{best_line}**", ""]
    lines += [f"![{p.stem}]({p.name})" for p in heatmaps]
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    header = ["job", "status", *axes, *columns, "error"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        cells = [job.name, job.status, *[job.overrides.get(k, "") for k in axes],
                 *[_fmt(job.metrics[c]) if c in job.metrics else "" for c in columns], job.error]
        lines.append("| " + " | ".join(escape(c) for c in cells) + " |")
    lines.append("")
    return "\n".join(lines).encode()


def write_report(sweep_dir: str | Path, metric: str = "val/elbo_nats", mode: str = "auto",
                 axes: list[str] | None = None) -> Report:
    """Write report.csv, report.md and heatmap_<metric>*.png into `sweep_dir`; returns what it found."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    columns = metric_columns(jobs)
    if any(j.status == "ok" for j in jobs) and metric not in columns:
        raise ConfigError(f"metric={metric!r} is in no job's {METRICS_FILE}; available: {', '.join(columns)}")
    mode = direction(metric, mode)
    swept = swept_axes(jobs)
    if axes:
        unknown = [k for k in axes if k not in swept]
        if unknown:
            raise ConfigError(f"axes={list(axes)} names {unknown[0]!r}, which this sweep does not vary; "
                              f"swept keys: {', '.join(swept) or 'none'}")
        swept = list(axes) + [k for k in swept if k not in axes]
    best = best_job(jobs, metric, mode)
    better = "higher" if mode == "max" else "lower"
    if best is None:
        best_line = f"No finished job has {metric}: no best job."
    else:
        best_line = (f"Best job by {metric} ({better} is better): {best.name} ({_label(best, swept) or 'no overrides'})"
                     f" with {_fmt(best.metrics[metric])}, in {best.path}")
    heatmaps = _heatmaps(sweep_dir, jobs, swept, metric, mode, best) if best is not None else []
    table = atomic_write_bytes(sweep_dir / REPORT_CSV, _csv_bytes(jobs, columns))
    page = atomic_write_bytes(sweep_dir / REPORT_MD, _markdown(sweep_dir, jobs, swept, columns, best_line, heatmaps))
    return Report(jobs=jobs, axes=swept, metric=metric, mode=mode, best=best, best_line=best_line,
                  files=[table, page, *heatmaps])
