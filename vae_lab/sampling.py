"""Pictures of a trained VAE on demand (`scripts/sample.py`): check the request, load the model (and its data for
the data modes), draw one mode with vae_lab.pictures, write PNGs where asked and print their paths.

Modes: sample (prior samples, at one or several temperatures), reconstruct (originals above reconstructions), and
for models with latent groups keep_groups (reconstructions keeping the top k groups) and group_kl (KL per group);
for one flat code interpolate (strips between pairs), traverse (one latent dimension per row, ordered by KL),
latent_scatter (coloured by class; PCA beyond 2-D), manifold (latent_dim 2). The keys are those of
configs/sample.yaml.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vae_lab import group_pictures, pictures, plots
from vae_lab.config import Rule
from vae_lab.errors import ConfigError
from vae_lab.model import ModelFamily
from vae_lab.model.interface import check_temperature

from vae_lab.rules import DEVICES, EVAL_SPLITS  # noqa: E402 (the tools' shared choices)


@dataclass
class Job:
    """What one mode needs: the command's config, the model on its device, and the data when the mode uses it."""

    cfg: DictConfig
    model: ModelFamily  # eval mode
    n: int
    steps: int | None
    label: int | None  # class=
    datamodule: object | None = None

    def batches(self):
        return getattr(self.datamodule, f"{self.cfg.split}_dataloader")()

    @property
    def class_names(self):
        return self.datamodule.spec.class_names if self.datamodule is not None else None

    def class_name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names else str(label)

    def examples(self, n: int, only_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n (x, y) examples of the split (of one class, if given), on the model's device."""
        x, y = pictures.first_examples(self.batches(), n, only_class, self.cfg.split)
        device = pictures.device_of(self.model)
        return x.to(device), y.to(device)

    def suffix(self) -> str:
        return "" if self.label is None else f"_class{self.label}"


def temperatures(cfg: DictConfig) -> list[float]:
    """temperature= as a list of numbers > 0 (one number, or a list such as [0.6,0.8,1.0])."""
    value = OmegaConf.to_container(cfg.temperature) if OmegaConf.is_list(cfg.temperature) else cfg.temperature
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError("temperature=[] is invalid: give a number > 0 or a list of them, e.g. [0.6,0.8,1.0]")
    return [check_temperature(t) for t in values]


def _sample(job: Job) -> dict:
    out = {}
    temps = temperatures(job.cfg)
    for temperature in temps:
        grid, note = pictures.sample_grid(job.model, job.n, job.cfg.seed, job.cfg.nrow or 8, job.label,
                                          by_class=job.cfg.nrow is None, min_image_size=job.cfg.min_image_size,
                                          temperature=temperature)
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
        suffix = "" if temps == [1.0] else f"_t{temperature:g}"
        out[f"samples{job.suffix()}{suffix}"] = grid
    return out


def _keep_groups(job: Job) -> dict:
    x, y = job.examples(job.n, job.label)
    temps = temperatures(job.cfg)
    return {f"keep_groups{job.suffix()}" + ("" if temps == [1.0] else f"_t{t:g}"): group_pictures.keep_groups_grid(
        job.model, x, y, job.cfg.seed, t, job.cfg.min_image_size) for t in temps}


def _group_kl(job: Job) -> dict:
    names, rates = group_pictures.group_rates(job.model, job.batches(), job.cfg.kl_examples)
    title = f"KL(q||p) per latent group, {job.cfg.split} split"
    return {f"kl_per_group_{job.cfg.split}": group_pictures.group_rate_figure(names, rates, title)}


def _reconstruct(job: Job) -> dict:
    x, y = job.examples(job.n, job.label)
    grid = pictures.reconstruction_grid(job.model, x, y, job.cfg.nrow or 8, job.cfg.min_image_size)
    return {f"reconstructions{job.suffix()}": grid}


def _interpolate(job: Job) -> dict:
    pair = OmegaConf.to_container(job.cfg.pair) if job.cfg.pair is not None else None
    if pair is not None and job.label is not None:
        raise ConfigError(f"class={job.label} and pair={pair} both choose the classes: give one of them")
    if pair is not None:
        for end in pair:
            _check_label(job, end, "pair")
        if job.model.conditional and pair[0] != pair[1]:
            raise ConfigError(f"pair={pair} is invalid for a conditional model, which interpolates within one "
                              f"class: use pair=[{pair[0]},{pair[0]}] or class={pair[0]}")
    class_pairs = [tuple(pair)] if pair is not None else None if job.label is None else [(job.label, job.label)]
    x, y = job.examples(pictures.PAIR_POOL)
    if class_pairs is not None and (y < 0).any():
        raise ConfigError("class= / pair= need labelled data; this dataset is unlabelled")
    a, b = pictures.pick_pairs(y, job.n, same_class=job.model.conditional, class_pairs=class_pairs)
    grid = pictures.interpolation_grid(job.model, x[a], x[b], job.steps, y[a], job.cfg.min_image_size)
    suffix = "" if class_pairs is None else f"_{class_pairs[0][0]}to{class_pairs[0][1]}"
    return {f"interpolations{suffix}": grid}


def _traverse(job: Job) -> dict:
    codes = pictures.encode_codes(job.model, job.batches(), job.cfg.kl_examples)  # the KL that orders the rows
    x, y = job.examples(1, job.label)  # the base image: the first of the split (of class=, if given)
    with pictures.evaluating(job.model):
        base = job.model.encode(x, job.model.labels(y)).mean[0]  # (D,)
    label = int(y[0])
    named = f" of class {job.class_name(label)}" if label >= 0 else ""
    figure = pictures.traversal_figure(job.model, base, codes.kl_per_dim, min(job.n, job.model.latent_dim),
                                       job.steps, job.cfg.traversal_range, job.model.labels(label),
                                       title=f"Latent traversals around the first {job.cfg.split} image{named}")
    return {f"traversals{job.suffix()}": figure}


def _latent_scatter(job: Job) -> dict:
    codes = pictures.encode_codes(job.model, job.batches(), job.n, only_class=job.label)
    title = f"Latent space of the {job.cfg.split} split"
    if job.cfg.method == "tsne":  # t-SNE beside PCA: vae_lab.projection
        from vae_lab.projection import tsne_scatter

        return {f"latent_tsne_{job.cfg.split}{job.suffix()}": tsne_scatter(codes, job.class_names, title,
                                                                            job.cfg.seed, job.cfg.perplexity)}
    figure = pictures.scatter_figure(codes, job.class_names, title)
    return {f"latent_scatter_{job.cfg.split}{job.suffix()}": figure}


def _manifold(job: Job) -> dict:
    if job.model.conditional and job.label is None:
        raise ConfigError(f"mode=manifold of a conditional model needs class=<0..{job.model.num_classes - 1}>")
    quantiles = tuple(OmegaConf.to_container(job.cfg.quantiles))
    title = "Decoded 2-D latent manifold" + ("" if job.label is None else f" (class {job.label})")
    return {f"manifold{job.suffix()}": pictures.manifold_figure(job.model, job.n, quantiles, job.label, title=title)}


@dataclass(frozen=True)
class Mode:
    draw: Callable[[Job], dict]
    n: int  # default of n=
    steps: int | None  # default of steps= (None: the mode has no steps)
    needs_data: bool
    flat_code: bool = False  # drawn in one flat latent vector (model.family=vae only)
    groups: bool = False  # about latent groups (families with several)


MODES = {
    "sample": Mode(_sample, 64, None, False),
    "reconstruct": Mode(_reconstruct, 32, None, True),
    "interpolate": Mode(_interpolate, 8, 8, True, flat_code=True),
    "traverse": Mode(_traverse, 10, 9, True, flat_code=True),
    "latent_scatter": Mode(_latent_scatter, 5000, None, True, flat_code=True),
    "manifold": Mode(_manifold, 20, None, False, flat_code=True),
    "keep_groups": Mode(_keep_groups, 8, None, True, groups=True),
    "group_kl": Mode(_group_kl, 0, None, True, groups=True),
    "export": Mode(None, 64, None, False),  # vae_lab.export: an .npz or an image folder, not a picture
}

RULES = [
    Rule("mode", "choice", choices=lambda: MODES),
    Rule("n", "int", lo=1, nullable=True),
    Rule("class", "int", lo=0, nullable=True),
    Rule("steps", "int", lo=2, nullable=True),
    Rule("traversal_range", "float", lo=0, lo_open=True),
    Rule("nrow", "int", lo=1, nullable=True),
    Rule("split", "choice", choices=lambda: EVAL_SPLITS),
    Rule("kl_examples", "int", lo=1),
    Rule("min_image_size", "int", lo=1),
    Rule("seed", "int", lo=0),
    Rule("device", "choice", choices=lambda: DEVICES),
    Rule("method", "choice", choices=lambda: ("pca", "tsne")),
    Rule("perplexity", "float", lo=1),
]


def check(cfg: DictConfig) -> None:
    """One clear ConfigError for the first bad value."""
    for rule in RULES:
        value = cfg[rule.key]
        if rule.key == "class" and value == "all" and cfg.mode == "export":  # n of every class
            continue
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is invalid: must be {rule.describe()}")
    pair = OmegaConf.to_container(cfg.pair) if OmegaConf.is_list(cfg.pair) else cfg.pair
    if pair is not None and not (isinstance(pair, list) and len(pair) == 2
                                 and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in pair)):
        raise ConfigError(f"pair={pair!r} is invalid: must be [start class, end class], e.g. pair=[7,9]")
    q = OmegaConf.to_container(cfg.quantiles) if OmegaConf.is_list(cfg.quantiles) else cfg.quantiles
    numbers = isinstance(q, list) and len(q) == 2 and all(isinstance(v, (int, float)) for v in q)
    if not (numbers and 0 < q[0] < q[1] < 1):
        raise ConfigError(f"quantiles={q!r} is invalid: must be [low, high] with 0 < low < high < 1")


def _check_label(job: Job, label: int | None, key: str = "class") -> None:
    """A class index must exist in the model (conditional) or in the data (data modes)."""
    if label is None:
        return
    if job.datamodule is not None:
        count = job.datamodule.spec.num_classes
        if not count:
            raise ConfigError(f"{key}={label} needs labelled data; this dataset is unlabelled")
    else:
        count = job.model.num_classes
    if label >= count:
        raise ConfigError(f"{key}={label} is invalid: must be an integer in [0, {count - 1}]")


def run_datamodule(cfg: DictConfig, loaded, data_overrides: list[str] = ()):
    """The model's data (its run's config with the `dataset.*` overrides; see loading.datamodule_for), set up."""
    from vae_lab.loading import datamodule_for

    datamodule = datamodule_for(loaded, list(data_overrides), stage=None, data_dir=cfg.paths.data_dir)
    if cfg.split == "test" and not datamodule.spec.has_test:
        raise ConfigError(f"split=test is invalid: dataset {datamodule.hparams.name!r} has no test split; "
                          "use split=val")
    return datamodule


def output_path(cfg: DictConfig, loaded, name: str, count: int) -> Path:
    """`out=` (a .png file, or a folder), else the training run's images/ folder, else the current directory."""
    if cfg.out is not None:
        out = Path(cfg.out).expanduser()
        if out.suffix.lower() == ".png":
            return out if count == 1 else out.with_name(f"{out.stem}_{name}.png")
        return out / f"{name}.png"
    run_dir = loaded.run_dir  # a training run's directory (not an artifact's or the Hub cache's) takes the pictures
    is_run = run_dir is not None and (run_dir / ".hydra").is_dir() and Path(str(cfg.model)).expanduser().exists()
    if not is_run:
        return Path.cwd() / f"{name}.png"
    return loaded.default_output("images", f"{name}.png")  # refused if images/ links out of the run dir


def run_sample(cfg: DictConfig, data_overrides: list[str] = ()) -> list[Path]:
    """Draw what `cfg.mode` asks for; print and return the PNG paths written."""
    from vae_lab.loading import load_model

    check(cfg)
    mode = MODES[cfg.mode]
    loaded = load_model(cfg.model)
    if cfg.mode == "export":
        from vae_lab.export import export_samples

        return [export_samples(cfg, loaded)]
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model
    if mode.flat_code and not model.flat_code:
        groups = ", ".join(g.name for g in model.latent_groups())
        raise ConfigError(f"mode={cfg.mode} needs one flat latent code (model.family=vae); this {type(model).__name__} "
                          f"has latent groups {groups}: use mode=sample, reconstruct, keep_groups or group_kl")
    if mode.groups and len(model.latent_groups()) < 2:
        raise ConfigError(f"mode={cfg.mode} is for models with several latent groups; this {type(model).__name__} "
                          "has one: use mode=traverse or latent_scatter")
    job = Job(cfg, model.to(device).eval(), cfg.n or mode.n, cfg.steps or mode.steps, cfg["class"])
    if mode.needs_data:
        job.datamodule = run_datamodule(cfg, loaded, data_overrides)
    elif job.label is not None and not job.model.conditional:  # class= conditions generation
        raise ConfigError(f"class={job.label} needs a conditional model (trained with model.conditional=true); "
                          f"this model is unconditional: drop class=")
    _check_label(job, job.label)
    drawn = mode.draw(job)
    paths = []
    for name, picture in drawn.items():
        paths.append(plots.save_png(picture, output_path(cfg, loaded, name, len(drawn))))
        print(paths[-1])
    return paths
