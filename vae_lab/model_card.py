"""The model card (README.md of an artifact): what was trained on what, how, its numbers, and how to use it."""

import json
import math
import shlex
from typing import Any

from vae_lab.artifact import CARD_NAME, CONFIG_NAME, SAMPLES_NAME, TRAIN_CONFIG_NAME, WEIGHTS_NAME
from vae_lab.run_dir import METRICS_NAME, RUN_INFO_NAME

LOGS_IN_REPO = "tensorboard"  # the Hub shows TensorBoard event files found under this folder


def split_metrics(metrics: dict | None) -> dict[str, dict[str, float]]:
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


FILE_ROLES = {CONFIG_NAME: "the model's init args (JSON)", WEIGHTS_NAME: "weights",
              TRAIN_CONFIG_NAME: "resolved training config", METRICS_NAME: "final metrics",
              RUN_INFO_NAME: "git commit and package versions", SAMPLES_NAME: "sample grid", CARD_NAME: "this card"}


def _latent_words(config: dict) -> str:
    """How the card names the model's latent: `latent_dim 16` for the VAE, the family's class otherwise."""
    if "latent_dim" in config:
        return f"latent_dim {config['latent_dim']}"
    return f"{config.get('_class_name', 'VAE')} latent groups (see config.json)"


def _architecture(config: dict) -> str:
    return config.get("architecture") or config.get("_class_name", "VAE")


def _training_rows(config: dict, t: dict, metrics: dict | None, run_info: dict | None) -> list[tuple[str, Any]]:
    """The settings table of the card: data, model, objective, optimizer and schedule as the run had them."""
    data, loss, schedule = t.get("dataset") or {}, t.get("loss") or {}, t.get("schedule") or {}
    optimizer = str((schedule.get("optimizer") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    return [
        ("dataset", f"{data['name']} (validation fraction {data.get('val_fraction')}, binarize "
                    f"{data.get('binarize')})" if data.get("name") else None),
        ("image shape (C, H, W)", tuple(config["in_shape"])),
        ("model family", f"`{config.get('_class_name', 'VAE')}`"),
        ("architecture", f"`{_architecture(config)}` `{json.dumps(config.get('net') or {})}`"),
        ("latent", _latent_words(config)),
        ("likelihood", f"`{config['likelihood']}`"),
        ("prior, posterior", f"`{config.get('prior', 'standard_normal')}`, `{config.get('posterior', 'gaussian')}`"
                             + (f"; rate by {metrics['rate_estimator']}" if (metrics or {}).get("rate_estimator")
                                else "")),
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
        ("weights", f"`{metrics['weights']}` (ema: the moving average of the weights)"
                    if str((metrics or {}).get("weights", "raw")).startswith("ema") else None),
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
    splits = split_metrics(metrics)
    status = (metrics or {}).get("log_likelihood") or {}
    normalised = status.get("normalised", True)  # metrics.json written before the status existed: as it claimed
    results = [] if not normalised else [
        EvalResult(task_type="unconditional-image-generation", task_name="Density estimation",
                   dataset_type=dataset or "unknown", dataset_name=dataset or "unknown", dataset_split=split,
                   metric_type=metric, metric_name=metric, metric_value=value)
        for split, values in splits.items() for metric, value in values.items()
    ]
    tags = {"vae", "vae_lab", "variational-autoencoder", "pytorch", "safetensors", _architecture(config),
            config["likelihood"], *([dataset] if dataset else [])}
    data = ModelCardData(model_name=name, library_name="vae_lab", pipeline_tag="unconditional-image-generation",
                         tags=sorted(tags), eval_results=results or None)
    ref = repo_id or "path/to/artifact"
    shape = ", ".join(str(s) for s in config["in_shape"])
    labels = f", y=torch.arange(16) % {config['num_classes']}" if config.get("conditional") else ""
    sections = [
        f"# {name}",
        "A variational autoencoder trained with [vae_lab](https://github.com/vae-lab/vae_lab)"
        + (f" on **{dataset}**" if dataset else "") + f": `{_architecture(config)}` encoder/decoder, "
        f"{_latent_words(config)}, `{config['likelihood']}` likelihood p(x|z).",
    ]
    if samples_caption:
        sections.append(f"![samples]({SAMPLES_NAME})\n\n{samples_caption}")
    if splits:
        sections += [
            "## Results",
            "\n".join(["| split | metric | value |", "| --- | --- | --- |",
                       *(f"| {s} | `{m}` | {v:.6g} |" for s, vals in splits.items() for m, v in vals.items())]),
            ("Log-likelihoods are per example in nats with every normalising constant included: `elbo_nats` = "
             "-(`distortion_nats` + `rate_nats`); bits/dim = -bound / (D ln 2) on the data's own bins"
             + (f" ({status['note']})" if status.get("note") else "") + "." if normalised else
             f"**Not a normalised log-likelihood**: {status.get('note', '')}. `elbo_nats` = -(`distortion_nats` + "
             "`rate_nats`) is the training objective's value, not a bound on log p(x); do not compare it with "
             "published log-likelihoods.")
            + " Numbers of the best validation checkpoint, whose weights these are.",
        ]
    sections += ["## Training", _table(_training_rows(config, t, metrics, run_info))]
    if t:
        sections += ["Reproduce (the full resolved config is in `train_config.yaml`):",
                     f"```bash\n{reproduce_command(list(overrides), t.get('seed'))}\n```"]
    sections += [
        "## Use",
        "No pickle and no code in this artifact: `config.json` (the model's init args, checked against a schema "
        "before anything is built) and `model.safetensors`, loaded strictly.",
        f"```python\nimport torch\nfrom vae_lab.model import {config.get('_class_name', 'VAE')}\n\n"
        f"model = {config.get('_class_name', 'VAE')}.from_pretrained(\"{ref}\")  # eval mode\n"
        f"images = model.sample(16{labels})  # (16, {shape}), values in [0, 1]\n```",
        f"```bash\npython scripts/evaluate.py model={ref}\npython scripts/sample.py model={ref}\n"
        f"python train.py init_from={ref} ...   # fine-tune from these weights\n```",
    ]
    if files:
        sections += ["## Files", "\n".join(f"- `{f}`: {FILE_ROLES.get(f, '')}" for f in sorted(files))
                     + f"\n- `{LOGS_IN_REPO}/`: TensorBoard event files, when pushed with them"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")

