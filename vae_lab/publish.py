"""The end of a run: the artifact (weights + card + records) in <run dir>/artifact, the push, the retry command."""

import io
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from vae_lab.saved_yaml import train_config
from vae_lab import artifact as fmt
from vae_lab.rules import Rule, check_rules
from vae_lab.errors import CheckpointError, ConfigError, VaeLabError
from vae_lab.hub import NO_TOKEN, HubError, check_repo_id, describe_error, push_files
from vae_lab.loading import load_artifact, model_from_checkpoint
from vae_lab.model_card import LOGS_IN_REPO, model_card, split_metrics
from vae_lab.run_dir import ARTIFACT_DIR, IMAGES_DIR, METRICS_NAME, RUN_INFO_NAME, best_checkpoint, read_metrics, \
    run_config, run_overrides


def render_samples(model: torch.nn.Module, n: int = 64, seed: int = 0) -> bytes:
    """A PNG grid of n samples (means of p(x|z), z ~ p(z)) under a fixed seed; labels cycle for a conditional VAE."""
    from torchvision.utils import save_image

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y = torch.arange(n) % model.num_classes if model.conditional else None
        images = model.eval().sample(n, y=y)  # (n, C, H, W) in [0, 1]
    buffer = io.BytesIO()
    save_image(images.float().cpu(), buffer, nrow=int(math.sqrt(n)) or 1, format="png")
    return buffer.getvalue()


def save_artifact(out_dir: Path, model: torch.nn.Module, *, name: str | None = None, repo_id: str | None = None,
                  train_cfg: dict | None = None, metrics: dict | None = None, run_info: dict | None = None,
                  overrides: list[str] = (), samples_png: Path | None = None) -> Path:
    """Write the artifact directory (replacing any previous one whole): config, weights, card and run records."""
    from vae_lab.run_info import run_info as current_run_info

    out_dir = Path(out_dir)
    config = fmt.model_config(model)
    name = name or (repo_id or out_dir.resolve().parent.name).split("/")[-1]
    run_info = run_info or current_run_info()
    files = {fmt.CONFIG_NAME: _json(config), fmt.WEIGHTS_NAME: fmt.weights_bytes(model)}
    if train_cfg is not None:
        files[fmt.TRAIN_CONFIG_NAME] = OmegaConf.to_yaml(OmegaConf.create(train_cfg)).encode()
    if metrics is not None:
        files[METRICS_NAME] = _json(metrics)
    files[RUN_INFO_NAME] = _json(run_info)
    if samples_png is not None:
        files[fmt.SAMPLES_NAME] = Path(samples_png).read_bytes()
        caption = f"Samples from the model during training (`{Path(samples_png).name}`)."
    else:
        files[fmt.SAMPLES_NAME] = render_samples(model)
        caption = "64 samples from these weights: z ~ p(z), the mean of p(x|z) (seed 0)."
    card = model_card(config, name=name, repo_id=repo_id, train_cfg=train_cfg, metrics=metrics, run_info=run_info,
                      overrides=list(overrides), samples_caption=caption, files=[*files, fmt.CARD_NAME])
    files[fmt.CARD_NAME] = str(card).encode()
    return fmt.write_artifact(out_dir, files)


def _json(obj: Any) -> bytes:
    """JSON as vae_lab writes it everywhere (vae_lab.io.atomic_write_json): sorted keys, indented."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def _train_config(run_dir: Path, cfg: DictConfig | None) -> dict | None:
    """The run's config as plain data, resolved when possible (a saved one needs its output_dir filled in)."""
    if cfg is None:
        cfg = run_config(run_dir)
        if cfg is None:
            return None
        if OmegaConf.select(cfg, "paths.output_dir", default=None) is not None:
            cfg.paths.output_dir = str(run_dir.resolve())
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only Hydra's runtime can resolve
        return OmegaConf.to_container(cfg, resolve=False)


def _newest_samples(run_dir: Path) -> Path | None:
    """The latest sample grid the image callback wrote (<run dir>/images/samples_*.png), if any."""
    found = sorted((run_dir / IMAGES_DIR).glob("samples*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def save_run_artifact(run_dir: Path, cfg: DictConfig | None = None, model: torch.nn.Module | None = None,
                      repo_id: str | None = None) -> Path:
    """<run dir>/artifact from the run's best checkpoint (else `model`), config, metrics, run info and images."""
    run_dir = Path(run_dir)
    try:
        model = model_from_checkpoint(best_checkpoint(run_dir))  # the weights metrics.json describes
    except CheckpointError:
        if model is None:
            raise
    info = run_dir / RUN_INFO_NAME
    return save_artifact(run_dir / ARTIFACT_DIR, model, repo_id=repo_id, name=(repo_id or run_dir.name).split("/")[-1],
                         train_cfg=_train_config(run_dir, cfg), metrics=read_metrics(run_dir),
                         run_info=json.loads(info.read_text()) if info.is_file() else None,
                         overrides=run_overrides(run_dir), samples_png=_newest_samples(run_dir))


def tensorboard_files(run_dir: Path) -> list[tuple[str, Path]]:
    """(path in repo, local file) for the run's TensorBoard files, under tensorboard/ in the repo."""
    out = []
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] == ARTIFACT_DIR:
            continue
        parts = rel.parts[1:] if rel.parts[0] == LOGS_IN_REPO else rel.parts
        out.append(("/".join((LOGS_IN_REPO, *parts)), path))
    return out


def type_name(artifact_dir: Path) -> str:
    """The model family's class an artifact holds (config.json's `_class_name`; none: VAE)."""
    return fmt.read_config(artifact_dir / fmt.CONFIG_NAME, with_records=True).get(fmt.CLASS_KEY, "VAE")


def default_commit_message(artifact_dir: Path) -> str:
    """'vae_lab: <architecture> VAE on <dataset> (latent_dim 16, bernoulli), val ELBO -98.10 nats'."""
    config = fmt.read_config(artifact_dir / fmt.CONFIG_NAME)
    train_cfg = train_config(artifact_dir)
    dataset = OmegaConf.select(train_cfg, "dataset.name", default="?") if train_cfg is not None else "?"
    val = split_metrics(read_metrics(artifact_dir)).get("validation", {})
    elbo = f", val ELBO {val['elbo_nats']:.2f} nats" if "elbo_nats" in val else ""
    family = type_name(artifact_dir)
    latent = f"latent_dim {config['latent_dim']}" if "latent_dim" in config else family
    return f"vae_lab: {config.get('architecture') or family} VAE on {dataset} ({latent}, {config['likelihood']}){elbo}"


def push_artifact(artifact_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                  commit_message: str | None = None, log_files: list[tuple[str, Path]] = (), api=None):
    """Upload the artifact (and TensorBoard files) in one commit; returns huggingface_hub's CommitInfo."""
    files = [(p.relative_to(artifact_dir).as_posix(), p) for p in sorted(Path(artifact_dir).rglob("*")) if p.is_file()]
    return push_files(repo_id, [*files, *log_files], private=private, revision=revision, api=api,
                      commit_message=commit_message or default_commit_message(artifact_dir))


def resolve_artifact(path: Path) -> tuple[Path, Path | None]:
    """(artifact dir, run dir or None) for a run directory or an artifact directory; builds a missing artifact."""
    path = Path(path)
    if (path / fmt.CONFIG_NAME).is_file():
        run_dir = path.parent if path.name == ARTIFACT_DIR else None
        return path, run_dir
    if (path / ARTIFACT_DIR / fmt.CONFIG_NAME).is_file():
        return path / ARTIFACT_DIR, path
    if (path / "checkpoints").is_dir():
        return save_run_artifact(path), path
    raise CheckpointError(f"{path} is neither a run directory (with checkpoints/ or artifact/) "
                          "nor an artifact directory")


def retry_command(run_dir: Path, repo_id: str, private: bool = False, revision: str | None = None,
                  commit_message: str | None = None) -> str:
    """The scripts/push_to_hub.py command line that uploads this run later."""
    args = [str(run_dir.resolve()), f"repo_id={repo_id}"]
    args += ["private=true"] if private else []
    args += [f"revision={revision}"] if revision else []
    args += [f"commit_message={json.dumps(commit_message)}"] if commit_message else []
    return " ".join(["python", "scripts/push_to_hub.py", *(shlex.quote(a) for a in args)])


def push_run(path: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
             commit_message: str | None = None, push_logs: bool = True, api=None):
    """Check the artifact of a run (or an artifact dir) loads, then push it; HubError with one line on failure."""
    artifact, run_dir = resolve_artifact(path)
    load_artifact(artifact)  # never publish an artifact that does not load
    logs = tensorboard_files(run_dir) if (push_logs and run_dir is not None) else []
    try:
        return push_artifact(artifact, check_repo_id(repo_id, "repo_id"), private=private, revision=revision,
                             commit_message=commit_message, log_files=logs, api=api)
    except VaeLabError:
        raise
    except Exception as err:
        raise HubError(f"could not push {artifact} to {repo_id}: {describe_error(err)}") from None


HUB_RULES = (Rule("hub.private", "bool"), Rule("hub.push_logs", "bool"), Rule("hub.sync_logs", "bool"),
             Rule("hub.sync_every_minutes", "float", lo=0, lo_open=True))


def check_hub_config(cfg: DictConfig) -> None:
    """At start of training: hub.* and init_from are usable; warn early (not fail) when no token is set."""
    for resume_key in ("ckpt_path", "resume"):
        if cfg.get("init_from") and cfg.get(resume_key):
            raise ConfigError(f"init_from and {resume_key} are both set: {resume_key} continues a run (weights, "
                              "optimizer, step), init_from starts a new one from weights; keep one")
    hub = cfg.get("hub")
    if not hub or not (hub.get("push") or hub.get("sync_logs")):
        return
    from huggingface_hub import get_token

    check_repo_id(hub.repo_id)
    check_rules(cfg, HUB_RULES)
    if not get_token():
        print(f"warning: {NO_TOKEN}; the model is saved in <run dir>/{ARTIFACT_DIR} and can be pushed later "
              "with scripts/push_to_hub.py", file=sys.stderr, flush=True)


def finish_run(cfg: DictConfig, run_dir: Path, model: torch.nn.Module,
               on_phase: Callable[[str], None] = lambda phase: None) -> Path | None:
    """End of training (rank zero): write <run dir>/artifact; push it when hub.push. A failed push only warns.

    `on_phase("artifact")` and `on_phase("push")` mark the two steps (the training CLI's signal handling)."""
    hub = cfg.get("hub")
    push = bool(hub and hub.get("push"))
    repo_id = hub.repo_id if push else None
    run_dir = Path(run_dir)
    on_phase("artifact")
    try:
        artifact = save_run_artifact(run_dir, cfg, model, repo_id=repo_id)
    except VaeLabError as err:  # training itself succeeded: its checkpoints and metrics.json stay
        print(f"warning: no artifact written ({err})", file=sys.stderr, flush=True)
        return None
    print(f"Artifact: {artifact.resolve()} ({fmt.CONFIG_NAME} + {fmt.WEIGHTS_NAME} + {fmt.CARD_NAME})")
    if not push:
        return artifact
    settings = dict(private=bool(hub.private), revision=hub.revision, commit_message=hub.commit_message)
    on_phase("push")
    logs = tensorboard_files(run_dir) if hub.push_logs else []
    try:
        info = push_artifact(artifact, repo_id, log_files=logs, **settings)
        print(f"Pushed to the Hub: {info.commit_url}", flush=True)
    except Exception as err:  # the run and its local artifact stay; the user pushes later
        print(f"warning: not pushed to {repo_id} ({describe_error(err)}); the artifact is kept in "
              f"{artifact.resolve()}; push it later with: {retry_command(run_dir, repo_id, **settings)}",
              file=sys.stderr, flush=True)
    return artifact
