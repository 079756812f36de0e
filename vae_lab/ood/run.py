"""scripts/score.py: per-example scores of a model on its own data and (optionally) on out-of-distribution data,
written as CSV, with histograms, grids of the most and least typical examples, and AUROC / AUPRC / FPR@95TPR."""

import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import ConfigError, DataError
from vae_lab.ood.scores import SCORES, BatchScores, Settings, check_scores

from vae_lab.rules import DATA_SPLITS, DEVICES  # noqa: E402
_OUT_DATA = re.compile(r"^[+~]{0,2}out_data([.=]|$)")


def split_out_data(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without the out_data overrides, those overrides as `dataset...` overrides for loading.data_config).

    out_data=<name> chooses a dataset config; out_data.path=P is short for dataset.options.path=P (with
    dataset=image_folder for a folder, array_file for a file, unless a name is given); out_data.<key>=V sets
    dataset.<key>=V (out_data.options.key=x, out_data.binarize=none, ...).
    """
    rest, data, name, path = [argv[0]], [], None, None
    for arg in argv[1:]:
        if not _OUT_DATA.match(arg):
            rest.append(arg)
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "out_data":
            name = value
        elif key == "out_data.path":
            path = value
        else:
            data.append("dataset" + key.removeprefix("out_data") + "=" + value)
    if path is not None:
        name = name or ("image_folder" if Path(path).expanduser().is_dir() else "array_file")
        data.insert(0, f"dataset.options.path={path}")
    if name is None and data:
        raise ConfigError(f"{data[0].replace('dataset', 'out_data', 1)} needs the out-of-distribution data named: "
                          "out_data=<dataset> or out_data.path=<folder | .npz>")
    return rest, ([f"dataset={name}"] + data if name is not None else [])


def _csv(rows: list[list]) -> bytes:
    import csv
    import io

    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def check(cfg: DictConfig) -> list[str]:
    from vae_lab.rules import Rule, check_rules

    check_rules(cfg, [
        Rule("split", "choice", choices=lambda: DATA_SPLITS), Rule("iwae_samples", "int", lo=1),
        Rule("elbo_samples", "int", lo=1), Rule("batch_size", "int", lo=1),
        Rule("max_examples", "int", lo=1, nullable=True), Rule("seed", "int", lo=0),
        Rule("data_seed", "int", lo=0, nullable=True), Rule("device", "choice", choices=lambda: DEVICES),
        Rule("grid", "int", lo=1), Rule("regret.steps", "int", lo=0), Rule("regret.lr", "float", lo=0, lo_open=True),
        Rule("regret.samples", "int", lo=1), Rule("background_rate", "float", lo=0, hi=1),
    ])
    names = OmegaConf.to_container(cfg.score) if OmegaConf.is_list(cfg.score) else [cfg.score]
    check_scores(names)
    return names


def _batches(datamodule, split: str):
    if split == "train+val":
        import itertools

        return itertools.chain(datamodule.train_dataloader(), datamodule.val_dataloader())
    if split == "test" and not datamodule.spec.has_test:
        raise ConfigError(f"split=test is invalid: dataset {datamodule.hparams.name!r} has no test split; "
                          "use split=val")
    return getattr(datamodule, f"{split}_dataloader")()


def score_source(model, batches, names: list[str], settings: Settings, background=None, levels: int | None = 256,
                 max_examples: int | None = None, device: str = "cpu") -> dict:
    """Every score in `names` for each example: {"x" (N, C, H, W) CPU, "label" (N,), name: (N,) ...}."""
    limit = max_examples if max_examples is not None else float("inf")
    torch.manual_seed(settings.seed)
    out: dict[str, list] = {"x": [], "label": [], **{n: [] for n in names}}
    seen = 0
    for index, (x, y) in enumerate(batches):
        if seen >= limit:
            break
        keep = int(min(len(x), limit - seen))
        x, y = x[:keep].to(device), y[:keep].to(device)
        batch = BatchScores(model, x, model.labels(y), settings, background, levels, index)
        for name in names:
            out[name].append(batch.get(name))
        out["x"].append(x.cpu())
        out["label"].append(y.cpu())
        seen += keep
    if not seen:
        raise DataError("no examples to score")
    return {k: torch.cat(v) for k, v in out.items()}


def _table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    sources = list(report["sources"])
    table = Table(title=f"{report['model']}: " + ", ".join(f"{s} = {v['dataset']} {v['split']} ({v['num_examples']})"
                                                           for s, v in report["sources"].items()))
    table.add_column("score")
    for s in sources:
        table.add_column(f"mean {s}", justify="right")
    has_out = "out" in report["sources"]
    for column in ("AUROC", "AUPRC", "FPR@95TPR") if has_out else ():
        table.add_column(column, justify="right")
    for name, r in report["scores"].items():
        row = [f"{name} ({r['unit']})"] + [f"{r['mean'][s]:.3f}" for s in sources]
        if has_out:
            row += [f"{r['auroc']:.4f}", f"{r['auprc']:.4f}", f"{r['fpr_at_95_tpr']:.4f}"]
        table.add_row(*row)
    Console().print(table)


def write_background_data(cfg: DictConfig, loaded, data_overrides: list[str]) -> Path:
    """The model's training split with pixels perturbed (vae_lab.ood.perturb) as an .npz for dataset=array_file."""
    from vae_lab.io import atomic_write
    from vae_lab.loading import datamodule_for
    from vae_lab.ood.perturb import perturb

    out = Path(cfg.write_background_data).expanduser()
    if out.suffix != ".npz":
        raise ConfigError(f"write_background_data={str(out)!r} is invalid: must name an .npz file")
    datamodule = datamodule_for(loaded, list(data_overrides), stage=None, data_dir=cfg.paths.data_dir,
                                seed=cfg.data_seed, batch_size=cfg.batch_size)
    levels = datamodule.spec.levels
    if levels is None or levels > 256:
        raise DataError("write_background_data perturbs 8-bit (or fewer-level) data; these data are "
                        f"{'continuous' if levels is None else f'{levels}-level'}")
    xs, ys = zip(*((x, y) for x, y in datamodule.train_dataloader()))
    stored = (torch.cat(xs) * (levels - 1)).round().to(torch.uint8)  # back to the stored levels
    x = perturb(stored, cfg.background_rate, levels, cfg.seed)
    arrays = {"x": x.numpy()} | ({"y": torch.cat(ys).numpy()} if datamodule.spec.num_classes else {})
    atomic_write(out, lambda f: np.savez(f, **arrays))
    print(f"wrote {out}: {len(x)} training images with {cfg.background_rate:.0%} of pixels replaced by uniform "
          f"levels; train the background model on it with dataset=array_file dataset.options.path={out}")
    return out


def score_model(cfg: DictConfig, data_overrides: list[str] = (), out_overrides: list[str] = ()) -> dict:
    """Load, score the in-distribution split (and the out-of-distribution data), write and return the report."""
    from vae_lab.io import atomic_write, atomic_write_json
    from vae_lab.loading import datamodule_for, load_model
    from vae_lab.ood import figures
    from vae_lab.ood.separation import separation
    from vae_lab import plots

    started = time.time()
    names = check(cfg)
    loaded = load_model(cfg.model)
    if cfg.write_background_data is not None:
        return {"background_data": str(write_background_data(cfg, loaded, data_overrides))}
    model = loaded.model
    background = None
    if any(SCORES[n].needs_background for n in names):
        if cfg.background is None:
            raise ConfigError("score=likelihood_ratio needs background=<run dir | artifact | .ckpt | Hub id>: a model "
                              "trained on perturbed inputs (write_background_data=bg.npz writes such data)")
        background = load_model(cfg.background).model
        if tuple(background.in_shape) != tuple(model.in_shape):
            raise DataError(f"the background model takes {tuple(background.in_shape)} images but the model takes "
                            f"{tuple(model.in_shape)}: train the background model on data of the model's shape")
    out_dir = Path(cfg.out).expanduser() if cfg.out is not None else loaded.default_output("scores", "x").parent
    common = dict(data_dir=cfg.paths.data_dir, seed=cfg.data_seed, batch_size=cfg.batch_size)
    in_dm = datamodule_for(loaded, list(data_overrides), stage=None, **common)
    sources = {"in": (in_dm, cfg.split)}
    if out_overrides:
        h = in_dm.hparams  # the out-of-distribution data reach the model as the training data did
        same = [f"dataset.binarize={h.binarize}", f"dataset.dequantize={h.dequantize}"]
        try:
            out_dm = datamodule_for(loaded, [out_overrides[0], *same, *out_overrides[1:]], stage=None,
                                    **(common | {"data_dir": cfg.paths.data_dir or h.data_dir}))  # the run's folder
        except DataError as err:
            raise DataError(f"out_data: {err}") from None
        sources["out"] = (out_dm, "test" if out_dm.spec.has_test else "train+val")  # without a test split: all
    batches = {s: _batches(dm, split) for s, (dm, split) in sources.items()}  # every check before any work
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model.to(device).eval()
    if background is not None:
        background.to(device).eval()
    settings = Settings(cfg.iwae_samples, cfg.elbo_samples, cfg.regret.steps, cfg.regret.lr, cfg.regret.samples,
                        cfg.seed)
    results = {s: score_source(model, batches[s], names, settings, background, dm.spec.levels, cfg.max_examples,
                               device) for s, (dm, _) in sources.items()}

    report = {"model": str(cfg.model), "background": cfg.background, "seed": cfg.seed,
              "settings": OmegaConf.to_container(cfg.regret) | {"iwae_samples": cfg.iwae_samples,
                                                                 "elbo_samples": cfg.elbo_samples},
              "sources": {s: {"dataset": dm.hparams.name, "split": split, "num_examples": len(results[s]["label"]),
                              "path": (dm.hparams.options or {}).get("path")}
                          for s, (dm, split) in sources.items()},
              "scores": {}}
    for name in names:
        values = {s: r[name].double().numpy() for s, r in results.items()}
        entry = {"unit": SCORES[name].unit, "description": SCORES[name].description,
                 "mean": {s: float(np.nanmean(v)) for s, v in values.items()}}
        if "out" in values:
            entry |= separation(values["in"], values["out"])
        report["scores"][name] = entry

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [["source", "dataset", "split", "index", "label", *names]]
    for s, r in results.items():
        info, columns = report["sources"][s], [r[name].double().tolist() for name in names]
        rows += [[s, info["dataset"], info["split"], i, int(label), *(repr(c[i]) for c in columns)]
                 for i, label in enumerate(r["label"].tolist())]
    written = [atomic_write(out_dir / "scores.csv", lambda f: f.write(_csv(rows)))]
    for name in names:
        values = {f"{s}: {report['sources'][s]['dataset']}": r[name].numpy() for s, r in results.items()}
        written.append(plots.save_png(figures.score_histogram(values, name, SCORES[name].unit),
                                      out_dir / f"hist_{name}.png"))
        for s, r in results.items():
            grid = figures.extremes_grid(r["x"], r[name], cfg.grid)
            written.append(plots.save_png(grid, out_dir / f"typical_{s}_{name}.png"))
    report["wall_time_s"] = round(time.time() - started, 2)
    report["note"] = ("higher scores: less typical; typical_*.png: top row the lowest scores (most typical), bottom "
                      "row the highest; AUROC etc. take out_data as the positive class")
    written.append(atomic_write_json(out_dir / "ood.json", report))
    _table(report)
    for path in written:
        print(path)
    sys.stdout.flush()
    return report
