"""Model artifacts (config.json + model.safetensors + model card) and the Hugging Face Hub: save, load, push.

An artifact holds no code: the VAE's init args as plain JSON, checked against a schema before anything is built,
and its weights as safetensors, loaded strictly. Nothing downloaded is unpickled or `instantiate`d. The token
comes from HF_TOKEN or `hf auth login` and is never printed or written.
"""

import io
import json
import math
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vae_lab.config import MODEL_RULES, Rule
from vae_lab.errors import CheckpointError, ConfigError, VaeLabError
from vae_lab.io import atomic_write_bytes, atomic_write_json
from vae_lab.model import VAE

CONFIG_NAME = "config.json"  # VAE init args
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TRAIN_CONFIG_NAME = "train_config.yaml"  # the run's resolved Hydra config
METRICS_NAME = "metrics.json"
RUN_INFO_NAME = "run_info.json"
SAMPLES_NAME = "samples.png"
ARTIFACT_DIR = "artifact"  # <run dir>/artifact
LOGS_IN_REPO = "tensorboard"  # the Hub shows TensorBoard event files found under this folder
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"


class HubError(VaeLabError):
    """The Hub could not be reached, refused the token, or a push failed."""


# The schema of config.json: one rule per VAE init arg (tests check it matches VAE's signature).
CONFIG_RULES = {rule.key: rule for rule in (*MODEL_RULES, Rule("num_classes", "int", lo=0))}


def _is_image_shape(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)


# The two init args that are not scalars: (check, what they must be).
SHAPED_KEYS = {
    "in_shape": (_is_image_shape, "a list of 3 integers >= 1 (C, H, W)"),
    "net": (lambda value: value is None or isinstance(value, dict), "an object of architecture arguments (or null)"),
}
REQUIRED_KEYS = ("in_shape",)


# ---------------------------------------------------------------- config.json


def check_config(config: Any, where: str) -> dict:
    """`config` if it is a valid VAE config (known keys, right types, known architecture and likelihood)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object of VAE init args, got {type(config).__name__}")
    valid = sorted([*SHAPED_KEYS, *CONFIG_RULES])
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {', '.join(missing)}")
    for key, value in config.items():
        rule = CONFIG_RULES.get(key)
        ok, must = (rule.ok(value), rule.describe()) if rule else (SHAPED_KEYS[key][0](value), SHAPED_KEYS[key][1])
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise CheckpointError(f"{where}: {key}={value!r} is invalid: must be {must}")
    return config


def read_config(path: Path) -> dict:
    """The validated VAE init args in `path` (config.json): plain JSON, nothing executed."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: an artifact is config.json + model.safetensors") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    return check_config(config, str(path))


def build_model(config: dict, where: str) -> VAE:
    """VAE(**config) for a validated config; any refusal of the nets becomes one CheckpointError line."""
    try:
        return VAE(**config)
    except VaeLabError as err:
        raise CheckpointError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot build the model: {str(err).splitlines()[0]}") from None


def model_config(model: VAE) -> dict:
    """The VAE's init args as plain JSON, checked to rebuild a model of exactly the same shapes."""
    config = json.loads(json.dumps(getattr(model, "_hub_mixin_config", None) or {}))
    check_config(config, "model config")
    problem = state_mismatch(_shapes(build_model(config, "model config").state_dict()), _shapes(model.state_dict()))
    if problem:  # PyTorchModelHubMixin drops init args that are not JSON-able (e.g. a DictConfig `net`)
        raise CheckpointError(f"the model's init args do not rebuild it ({problem}); pass plain dicts and lists")
    return config


# ---------------------------------------------------------------- weights


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _names(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def state_mismatch(expected: dict[str, tuple], got: dict[str, tuple]) -> str | None:
    """What differs between two {name: shape} maps (missing, unexpected, wrong shape), or None."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k} {got[k]} (model: {expected[k]})" for k in sorted(set(expected) & set(got)) if got[k] != expected[k]]
    parts = [f"{label} {_names(keys)}" for label, keys in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape:", wrong)) if keys]
    return "; ".join(parts) or None


def _looks_pickled(head: bytes) -> bool:
    """torch.save zip archives start with 'PK'; raw pickles with the PROTO opcode 0x80 and a protocol 2..5."""
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle included) is refused, never unpickled."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")  # parses a JSON header and raw buffers: no code runs
    except Exception as err:  # safetensors raises its own error type for a bad header or truncated data
        with open(path, "rb") as f:
            head = f.read(8)
        if _looks_pickled(head):
            raise CheckpointError(f"{path} is a pickle (torch.save) file, not safetensors: "
                                  "vae_lab never unpickles artifacts") from None
        raise CheckpointError(f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") from None


def load_artifact(path: Path, map_location: str = "cpu") -> VAE:
    """A VAE (eval mode) from a local artifact directory, strict about missing or unexpected weights."""
    path = Path(path)
    config = read_config(path / CONFIG_NAME)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}{hint}; an artifact is config.json + model.safetensors")
    model = build_model(config, str(path / CONFIG_NAME))
    state = read_weights(weights)
    problem = state_mismatch(_shapes(model.state_dict()), _shapes(state))
    if problem:
        raise CheckpointError(f"{weights} does not match its config.json: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


# ---------------------------------------------------------------- the Hub: download


def split_revision(ref: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'): Hub ids never contain '@'."""
    repo_id, sep, revision = ref.partition("@")
    return repo_id, (revision or None) if sep else None


def describe_error(err: BaseException) -> str:
    """One line about a Hub/network failure, with any token value blanked."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, VaeLabError):
        text = str(err)
    elif isinstance(err, OfflineModeIsEnabled):
        text = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif isinstance(err, LocalEntryNotFoundError):
        text = "not in the local cache, and the Hub cannot be reached (offline or no network)"
    elif isinstance(err, RepositoryNotFoundError):
        text = "repository not found (or private/gated: set HF_TOKEN or run `hf auth login`)"
    elif isinstance(err, RevisionNotFoundError):
        text = "revision not found"
    elif isinstance(err, EntryNotFoundError):
        text = "file not in the repository"
    elif isinstance(err, HfHubHTTPError) and status in (401, 403):
        text = f"HTTP {status}: the token was refused or cannot write there"
    else:
        lines = str(err).strip().splitlines()
        text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return redact(text)


def redact(text: str) -> str:
    """`text` with the current token and anything shaped like a Hugging Face token blanked."""
    from huggingface_hub import get_token

    token = get_token()
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def download_artifact(repo_id: str, revision: str | None = None, **download_kwargs) -> Path:
    """The local (cached) folder of a Hub artifact; config.json is checked before the weights are fetched."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    where = repo_id + (f"@{revision}" if revision else "")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CheckpointError(f"{where!r} is not a local run directory, .ckpt file or artifact directory, "
                              "nor a Hub id (owner/name[@revision])") from None

    def fetch(name: str, optional: bool = False) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, **download_kwargs))
        except Exception as err:
            if optional:
                return None  # train_config.yaml helps tools rebuild the data; the model does not need it
            if name == WEIGHTS_NAME and isinstance(err, EntryNotFoundError) and not isinstance(
                    err, LocalEntryNotFoundError):
                raise CheckpointError(f"{where} has no {WEIGHTS_NAME}: vae_lab loads safetensors only and never "
                                      "unpickles pytorch_model.bin") from None
            raise CheckpointError(f"cannot download {name} of {where} (not a local path either): "
                                  f"{describe_error(err)}") from None

    config_file = fetch(CONFIG_NAME)
    read_config(config_file)  # unknown architecture / keys: stop before fetching any weights
    fetch(WEIGHTS_NAME)
    fetch(TRAIN_CONFIG_NAME, optional=True)
    return config_file.parent  # hf_hub_download puts one revision's files in one snapshot folder


def load_pretrained(ref: str | Path, revision: str | None = None, map_location: str = "cpu",
                    **download_kwargs) -> VAE:
    """VAE.from_pretrained: a local artifact directory or a Hub id (revision pinned by `revision` or '@rev')."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if revision:
            raise CheckpointError(f"revision={revision!r} applies to Hub ids, not to the local directory {path}")
        return load_artifact(path, map_location)
    repo_id, pinned = split_revision(str(ref))
    return load_artifact(download_artifact(repo_id, revision or pinned, **download_kwargs), map_location)


def load_from_hub(repo_id: str, revision: str | None = None):
    """A LoadedModel from a Hub id ('owner/name' or 'owner/name@revision'), with its training config if shipped."""
    from vae_lab.loading import LoadedModel

    repo_id, pinned = split_revision(repo_id)
    folder = download_artifact(repo_id, revision or pinned)
    return LoadedModel(load_artifact(folder), artifact_train_config(folder), folder / WEIGHTS_NAME, None)


def artifact_train_config(folder: Path) -> DictConfig | None:
    """The resolved training config shipped in an artifact (train_config.yaml: plain YAML, never instantiated)."""
    path = Path(folder) / TRAIN_CONFIG_NAME
    return OmegaConf.load(path) if path.is_file() else None


def init_weights(model: VAE, ref: str) -> str:
    """Copy the weights of `ref` (Hub id, artifact dir, run dir or .ckpt) into `model`; both must have one shape."""
    from vae_lab.loading import load_model

    source = load_model(ref)
    problem = state_mismatch(_shapes(model.state_dict()), _shapes(source.model.state_dict()))
    if problem:
        raise CheckpointError(f"init_from={ref!r} does not fit this model ({problem}): use the source's "
                              "architecture, model.latent_dim, model.likelihood, model.conditional and data shape")
    model.load_state_dict(source.model.state_dict(), strict=True)
    return str(source.source)


# ---------------------------------------------------------------- saving


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _split_metrics(metrics: dict | None) -> dict[str, dict[str, float]]:
    """{"validation": {"elbo_nats": ...}, "test": {...}} from metrics.json's `val` and `test` sections."""
    out = {}
    for key, split in (("val", "validation"), ("test", "test")):
        section = (metrics or {}).get(key)
        if isinstance(section, dict):
            # every logged number but the (weighted) training loss, which is not a property of the model
            values = {k.split("/", 1)[-1]: float(v) for k, v in section.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      and k.split("/", 1)[-1] != "loss"}
            if values:
                out[split] = values
    return out


def reproduce_command(overrides: list[str], seed: Any = None) -> str:
    """`python train.py <overrides>` without Hub, Hydra and local-path overrides (they do not change the model)."""
    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0]

    kept = [o for o in overrides if key(o).split(".")[0].split("@")[0] not in ("hub", "hydra", "paths")]
    if seed is not None and not any(key(o) == "seed" for o in kept):
        kept.append(f"seed={seed}")
    return " ".join(["python", "train.py", *(shlex.quote(o) for o in kept)])


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows if v is not None)])


FILE_ROLES = {CONFIG_NAME: "VAE init args (JSON)", WEIGHTS_NAME: "weights",
              TRAIN_CONFIG_NAME: "resolved training config", METRICS_NAME: "final metrics",
              RUN_INFO_NAME: "git commit and package versions", SAMPLES_NAME: "sample grid", CARD_NAME: "this card"}


def _training_rows(config: dict, t: dict, metrics: dict | None, run_info: dict | None) -> list[tuple[str, Any]]:
    """The settings table of the card: data, model, objective, optimizer and schedule as the run had them."""
    data, loss, schedule = t.get("dataset") or {}, t.get("loss") or {}, t.get("schedule") or {}
    optimizer = str((schedule.get("optimizer") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    return [
        ("dataset", f"{data['name']} (validation fraction {data.get('val_fraction')}, binarize "
                    f"{data.get('binarize')})" if data.get("name") else None),
        ("image shape (C, H, W)", tuple(config["in_shape"])),
        ("architecture", f"`{config['architecture']}` `{json.dumps(config.get('net') or {})}`"),
        ("latent_dim", config["latent_dim"]),
        ("likelihood", f"`{config['likelihood']}`"),
        ("conditional", f"on {config['num_classes']} classes" if config.get("conditional") else "no"),
        ("objective", f"`{loss.get('name')}`, beta {loss.get('beta', 1.0)}, free bits {loss.get('free_bits', 0.0)}, "
                      f"{loss.get('num_samples', 1)} z sample(s)" if loss else None),
        ("optimizer", f"{optimizer}, lr {schedule.get('lr')}, batch size {schedule.get('batch_size')}"
                      if schedule else None),
        ("schedule", f"max_epochs {schedule.get('max_epochs')}, "
                     f"LR scheduler `{json.dumps(schedule.get('scheduler'))}`, "
                     f"KL warm-up {schedule.get('kl_warmup_steps')} steps / {schedule.get('kl_warmup_epochs')} epochs, "
                     f"gradient clip {schedule.get('gradient_clip_val')}" if schedule else None),
        ("trained", f"{metrics.get('global_step')} steps, {metrics.get('epochs')} epochs" if metrics else None),
        ("seed", t.get("seed")),
        ("git commit", (run_info or {}).get("git_commit")),
    ]


def model_card(config: dict, *, name: str, repo_id: str | None = None, train_cfg: dict | None = None,
               metrics: dict | None = None, run_info: dict | None = None, overrides: list[str] = (),
               samples_caption: str | None = None, files: list[str] = ()):
    """The README.md model card: what was trained on what, how, its numbers (model-index metadata) and usage."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    t = train_cfg or {}
    dataset = (t.get("dataset") or {}).get("name")
    splits = _split_metrics(metrics)
    results = [
        EvalResult(task_type="unconditional-image-generation", task_name="Density estimation",
                   dataset_type=dataset or "unknown", dataset_name=dataset or "unknown", dataset_split=split,
                   metric_type=metric, metric_name=metric, metric_value=value)
        for split, values in splits.items() for metric, value in values.items()
    ]
    tags = {"vae", "vae_lab", "variational-autoencoder", "pytorch", "safetensors", config["architecture"],
            config["likelihood"], *([dataset] if dataset else [])}
    data = ModelCardData(model_name=name, library_name="vae_lab", pipeline_tag="unconditional-image-generation",
                         tags=sorted(tags), eval_results=results or None)
    ref = repo_id or "path/to/artifact"
    shape = ", ".join(str(s) for s in config["in_shape"])
    labels = f", y=torch.arange(16) % {config['num_classes']}" if config.get("conditional") else ""
    sections = [
        f"# {name}",
        "A variational autoencoder trained with [vae_lab](https://github.com/vae-lab/vae_lab)"
        + (f" on **{dataset}**" if dataset else "") + f": `{config['architecture']}` encoder/decoder, "
        f"latent_dim {config['latent_dim']}, `{config['likelihood']}` likelihood p(x|z).",
    ]
    if samples_caption:
        sections.append(f"![samples]({SAMPLES_NAME})\n\n{samples_caption}")
    if splits:
        sections += [
            "## Results",
            "\n".join(["| split | metric | value |", "| --- | --- | --- |",
                       *(f"| {s} | `{m}` | {v:.6g} |" for s, vals in splits.items() for m, v in vals.items())]),
            "Log-likelihoods are per example in nats with every normalising constant included: `elbo_nats` = "
            "-(`distortion_nats` + `rate_nats`); bits/dim = -bound / (D ln 2), plus ln 256 per dim for densities on "
            "8-bit pixels. Numbers of the best validation checkpoint, whose weights these are.",
        ]
    sections += ["## Training", _table(_training_rows(config, t, metrics, run_info))]
    if t:
        sections += ["Reproduce (the full resolved config is in `train_config.yaml`):",
                     f"```bash\n{reproduce_command(list(overrides), t.get('seed'))}\n```"]
    sections += [
        "## Use",
        "No pickle and no code in this artifact: `config.json` (the model's init args, checked against a schema "
        "before anything is built) and `model.safetensors`, loaded strictly.",
        f"```python\nimport torch\nfrom vae_lab.model import VAE\n\n"
        f"model = VAE.from_pretrained(\"{ref}\")  # eval mode\n"
        f"images = model.sample(16{labels})  # (16, {shape}), values in [0, 1]\n```",
        f"```bash\npython scripts/evaluate.py model={ref}\npython scripts/sample.py model={ref}\n"
        f"python train.py init_from={ref} ...   # fine-tune from these weights\n```",
    ]
    if files:
        sections += ["## Files", "\n".join(f"- `{f}`: {FILE_ROLES.get(f, '')}" for f in sorted(files))
                     + f"\n- `{LOGS_IN_REPO}/`: TensorBoard event files, when pushed with them"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


@torch.no_grad()
def render_samples(model: VAE, n: int = 64, seed: int = 0) -> bytes:
    """A PNG grid of n samples (means of p(x|z), z ~ p(z)) under a fixed seed; labels cycle for a conditional VAE."""
    from torchvision.utils import save_image

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y = torch.arange(n) % model.num_classes if model.conditional else None
        images = model.eval().sample(n, y=y)  # (n, C, H, W) in [0, 1]
    buffer = io.BytesIO()
    save_image(images.float().cpu(), buffer, nrow=int(math.sqrt(n)) or 1, format="png")
    return buffer.getvalue()


def save_artifact(out_dir: Path, model: VAE, *, name: str | None = None, repo_id: str | None = None,
                  train_cfg: dict | None = None, metrics: dict | None = None, run_info: dict | None = None,
                  overrides: list[str] = (), samples_png: Path | None = None) -> Path:
    """Write the artifact directory (replacing any previous one whole): config, weights, card and run records."""
    out_dir = Path(out_dir)
    config = model_config(model)
    name = name or (repo_id or out_dir.resolve().parent.name).split("/")[-1]
    tmp = out_dir.parent / f".{out_dir.name}.tmp"  # built aside, then swapped in: never a half-written artifact
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_artifact_files(tmp, model, config, name=name, repo_id=repo_id, train_cfg=train_cfg, metrics=metrics,
                              run_info=run_info, overrides=overrides, samples_png=samples_png)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _write_artifact_files(tmp: Path, model: VAE, config: dict, *, name: str, repo_id: str | None,
                          train_cfg: dict | None, metrics: dict | None, run_info: dict | None,
                          overrides: list[str], samples_png: Path | None) -> None:
    from safetensors.torch import save as safetensors_bytes

    from vae_lab.run_info import run_info as current_run_info

    atomic_write_json(tmp / CONFIG_NAME, config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(tmp / WEIGHTS_NAME, safetensors_bytes(state, metadata={"format": "pt"}))
    if train_cfg is not None:
        atomic_write_bytes(tmp / TRAIN_CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(train_cfg)).encode())
    if metrics is not None:
        atomic_write_json(tmp / METRICS_NAME, metrics)
    run_info = run_info or current_run_info()
    atomic_write_json(tmp / RUN_INFO_NAME, run_info)
    if samples_png is not None:
        atomic_write_bytes(tmp / SAMPLES_NAME, Path(samples_png).read_bytes())
        caption = f"Samples from the model during training (`{Path(samples_png).name}`)."
    else:
        atomic_write_bytes(tmp / SAMPLES_NAME, render_samples(model))
        caption = "64 samples from these weights: z ~ N(0, I), mean of p(x|z) (seed 0)."
    card = model_card(config, name=name, repo_id=repo_id, train_cfg=train_cfg, metrics=metrics, run_info=run_info,
                      overrides=list(overrides), samples_caption=caption,
                      files=[p.name for p in tmp.iterdir()] + [CARD_NAME])
    atomic_write_bytes(tmp / CARD_NAME, str(card).encode())


def _train_config(run_dir: Path, cfg: DictConfig | None) -> dict | None:
    """The run's config as plain data, resolved when possible (a saved one needs its output_dir filled in)."""
    if cfg is None:
        saved = run_dir / ".hydra" / "config.yaml"
        if not saved.is_file():
            return None
        cfg = OmegaConf.load(saved)
        if OmegaConf.select(cfg, "paths.output_dir", default=None) is not None:
            cfg.paths.output_dir = str(run_dir.resolve())
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only Hydra's runtime can resolve
        return OmegaConf.to_container(cfg, resolve=False)


def _newest_samples(run_dir: Path) -> Path | None:
    """The latest sample grid the image callback wrote (<run dir>/images/samples_*.png), if any."""
    found = sorted((run_dir / "images").glob("samples*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def save_run_artifact(run_dir: Path, cfg: DictConfig | None = None, model: VAE | None = None,
                      repo_id: str | None = None) -> Path:
    """<run dir>/artifact from the run's best checkpoint (else `model`), config, metrics, run info and images."""
    from vae_lab.loading import _best_checkpoint, model_from_checkpoint

    run_dir = Path(run_dir)
    try:
        model = model_from_checkpoint(_best_checkpoint(run_dir))  # the weights metrics.json describes
    except CheckpointError:
        if model is None:
            raise
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return save_artifact(run_dir / ARTIFACT_DIR, model, repo_id=repo_id, name=(repo_id or run_dir.name).split("/")[-1],
                         train_cfg=_train_config(run_dir, cfg), metrics=_read_json(run_dir / METRICS_NAME),
                         run_info=_read_json(run_dir / RUN_INFO_NAME), overrides=overrides,
                         samples_png=_newest_samples(run_dir))


# ---------------------------------------------------------------- the Hub: push


def check_repo_id(repo_id: Any, key: str = "hub.repo_id") -> str:
    """`repo_id` if it is a valid Hub repo id; ConfigError naming `key` otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except (HFValidationError, TypeError) as err:
        raise ConfigError(f"{key}={repo_id!r} is invalid: must be a Hub repo id like me/vae-mnist "
                          f"({str(err).splitlines()[0]})") from None
    return repo_id


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


def default_commit_message(artifact_dir: Path) -> str:
    """'vae_lab: <architecture> VAE on <dataset> (latent_dim 16, bernoulli), val ELBO -98.10 nats'."""
    config = read_config(artifact_dir / CONFIG_NAME)
    train_cfg = artifact_dir / TRAIN_CONFIG_NAME
    dataset = OmegaConf.select(OmegaConf.load(train_cfg), "dataset.name", default="?") if train_cfg.is_file() else "?"
    val = _split_metrics(_read_json(artifact_dir / METRICS_NAME)).get("validation", {})
    elbo = f", val ELBO {val['elbo_nats']:.2f} nats" if "elbo_nats" in val else ""
    return (f"vae_lab: {config['architecture']} VAE on {dataset} "
            f"(latent_dim {config['latent_dim']}, {config['likelihood']}){elbo}")


def push_artifact(artifact_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                  commit_message: str | None = None, log_files: list[tuple[str, Path]] = (), api=None):
    """Upload the artifact (and TensorBoard files) in one commit; returns huggingface_hub's CommitInfo."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    api = api or HfApi()
    if not (api.token or get_token()):
        raise HubError(NO_TOKEN)
    files = [(p.relative_to(artifact_dir).as_posix(), p) for p in sorted(Path(artifact_dir).rglob("*")) if p.is_file()]
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p in [*files, *log_files]]
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.create_commit(repo_id, operations, commit_message=commit_message or default_commit_message(artifact_dir),
                             revision=revision)


def resolve_artifact(path: Path) -> tuple[Path, Path | None]:
    """(artifact dir, run dir or None) for a run directory or an artifact directory; builds a missing artifact."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        run_dir = path.parent if path.name == ARTIFACT_DIR else None
        return path, run_dir
    if (path / ARTIFACT_DIR / CONFIG_NAME).is_file():
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
    for rule in HUB_RULES:
        value = OmegaConf.select(cfg, rule.key)
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is invalid: must be {rule.describe()}")
    if not get_token():
        print(f"warning: {NO_TOKEN}; the model is saved in <run dir>/{ARTIFACT_DIR} and can be pushed later "
              "with scripts/push_to_hub.py", file=sys.stderr, flush=True)


def hub_callbacks(cfg: DictConfig) -> list:
    """The log-sync callback when hub.sync_logs is true (empty otherwise)."""
    hub = cfg.get("hub")
    if not hub or not hub.get("sync_logs"):
        return []
    from vae_lab.callbacks.hub_sync import HubLogSync

    return [HubLogSync(repo_id=hub.repo_id, every_minutes=float(hub.sync_every_minutes),
                       private=bool(hub.private), revision=hub.revision)]


def finish_run(cfg: DictConfig, run_dir: Path, model: VAE) -> Path | None:
    """End of training (rank zero): write <run dir>/artifact; push it when hub.push. A failed push only warns."""
    hub = cfg.get("hub")
    push = bool(hub and hub.get("push"))
    repo_id = hub.repo_id if push else None
    run_dir = Path(run_dir)
    try:
        artifact = save_run_artifact(run_dir, cfg, model, repo_id=repo_id)
    except VaeLabError as err:  # training itself succeeded: its checkpoints and metrics.json stay
        print(f"warning: no artifact written ({err})", file=sys.stderr, flush=True)
        return None
    print(f"Artifact: {artifact.resolve()} ({CONFIG_NAME} + {WEIGHTS_NAME} + {CARD_NAME})")
    if not push:
        return artifact
    settings = dict(private=bool(hub.private), revision=hub.revision, commit_message=hub.commit_message)
    logs = tensorboard_files(run_dir) if hub.push_logs else []
    try:
        info = push_artifact(artifact, repo_id, log_files=logs, **settings)
        print(f"Pushed to the Hub: {info.commit_url}", flush=True)
    except Exception as err:  # the run and its local artifact stay; the user pushes later
        print(f"warning: not pushed to {repo_id} ({describe_error(err)}); the artifact is kept in "
              f"{artifact.resolve()}; push it later with: {retry_command(run_dir, repo_id, **settings)}",
              file=sys.stderr, flush=True)
    return artifact
