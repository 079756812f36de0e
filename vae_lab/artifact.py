"""The shareable artifact folder: config.json (the model's init args) + model.safetensors + README.md and records.

An artifact holds no code: init args as plain JSON, checked against a schema before anything is built, and
weights as safetensors, loaded strictly. Nothing is unpickled or `instantiate`d. This module knows the format
only: it is handed the model class, and never imports the VAE, the Hub or the run directory.
"""

import json
import math
import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import torch

from vae_lab.model_args import DEFAULT_FAMILY, FAMILIES, family_of_class
from vae_lab.rules import Rule
from vae_lab.errors import CheckpointError, VaeLabError
from vae_lab.io import _fsync_dir, atomic_write_bytes

CONFIG_NAME = "config.json"  # the model's init args
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TRAIN_CONFIG_NAME = "train_config.yaml"  # the run's resolved Hydra config
SAMPLES_NAME = "samples.png"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 1 << 20  # config.json and train_config.yaml: a few KB when vae_lab writes them
MAX_HEADER_BYTES = 100 << 20  # a safetensors JSON header (safetensors' own limit); ~100 bytes per tensor in practice

# The schema of config.json: one rule per init arg of each family (tests check it matches the class's signature),
# and two records: the family's class (as diffusers' `_class_name`) and the vae_lab version that wrote it.
CLASS_KEY, VERSION_KEY = "_class_name", "_vae_lab_version"
FAMILY_CONFIG_RULES = {spec.class_name: {rule.key: rule for rule in (*spec.rules, Rule("num_classes", "int", lo=0))}
                       for spec in FAMILIES.values()}
CONFIG_RULES = FAMILY_CONFIG_RULES[FAMILIES[DEFAULT_FAMILY].class_name]  # the VAE's


def _is_image_shape(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)


# The two init args that are not scalars: (check, what they must be).
SHAPED_KEYS = {
    "in_shape": (_is_image_shape, "a list of 3 integers >= 1 (C, H, W)"),
    "net": (lambda value: value is None or isinstance(value, dict), "an object of architecture arguments (or null)"),
}
REQUIRED_KEYS = ("in_shape",)


def check_config(config: Any, where: str) -> dict:
    """`config` if it is a valid model config (known keys, right types, known architecture and likelihood)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object of model init args, got {type(config).__name__}")
    class_name = config.get(CLASS_KEY, FAMILIES[DEFAULT_FAMILY].class_name)
    if not isinstance(class_name, str) or family_of_class(class_name) is None:
        known = ", ".join(FAMILY_CONFIG_RULES)
        raise CheckpointError(f"{where}: {CLASS_KEY}={class_name!r} is not a vae_lab model family (known: {known})")
    if not isinstance(config.get(VERSION_KEY, ""), str):
        raise CheckpointError(f"{where}: {VERSION_KEY}={config[VERSION_KEY]!r} is invalid: must be a string")
    rules = FAMILY_CONFIG_RULES[class_name]
    config = {k: v for k, v in config.items() if k not in (CLASS_KEY, VERSION_KEY)}
    valid = sorted([*SHAPED_KEYS, *rules])
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {', '.join(missing)}")
    for key, value in config.items():
        rule = rules.get(key)
        ok, must = (_rule_ok(rule, value), rule.describe()) if rule else (SHAPED_KEYS[key][0](value),
                                                                         SHAPED_KEYS[key][1])
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise CheckpointError(f"{where}: {key}={value!r} is invalid: must be {must}")
    return config  # the init args (without the records)


def _rule_ok(rule: Rule, value: Any) -> bool:
    try:
        return rule.ok(value)
    except TypeError:  # a list or object where a name is expected (`value in choices` cannot hash it)
        return False


def artifact_root(folder: Path) -> Path:
    """What an artifact's files may resolve into: the folder itself, or for a huggingface_hub cache snapshot
    (<repo>/snapshots/<commit>/, files linked to <repo>/blobs/) the repo's cache folder."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        return folder.parent.parent
    return folder


def _open_regular(path: Path, root: Path, limit: int | None):
    """`path` opened for reading (binary) if it resolves inside `root` to a regular file of at most `limit` bytes.

    A downloaded artifact is data: a link out of it (/dev/zero, ~/.ssh/...), a FIFO (blocks forever) or a device
    is refused before it is read.
    """
    path = Path(path)
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: an artifact is config.json + model.safetensors") from None
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise CheckpointError(f"{path} cannot be resolved: {err}") from None
    if not real.is_relative_to(Path(root).resolve()):
        raise CheckpointError(f"{path} links outside the artifact folder (to {real}): refused")
    if not stat.S_ISREG(os.stat(real).st_mode):  # before open: opening a FIFO waits for a writer
        raise CheckpointError(f"{path} is not a regular file (a device, FIFO or socket): refused")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking, in case it was swapped for a FIFO meanwhile
    f = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (limit is not None and info.st_size > limit):
        f.close()
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"{info.st_size} bytes (limit {limit})"
        raise CheckpointError(f"{path} is {what}: refused")
    return f


def read_bounded(path: Path, root: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a small artifact file, checked by _open_regular (inside `root`, regular, <= `limit` bytes)."""
    with _open_regular(path, root, limit) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew after the check
        raise CheckpointError(f"{path} is more than {limit} bytes: refused")
    return data


def read_config(path: Path, root: Path | None = None, with_records: bool = False) -> dict:
    """The validated init args in `path` (config.json): bounded plain JSON, nothing executed; with_records: the
    `_class_name` / `_vae_lab_version` records kept beside them."""
    path = Path(path)
    data = read_bounded(path, root or artifact_root(path.parent))
    try:
        config = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {str(err).splitlines()[0][:200]}") from None
    args = check_config(config, str(path))
    return {**args, **{k: config[k] for k in (CLASS_KEY, VERSION_KEY) if k in config}} if with_records else args


def build_model(cls: type, config: dict, where: str):
    """cls(**config) for a validated config; any refusal of the nets becomes one CheckpointError line."""
    try:
        return cls(**config)
    except VaeLabError as err:
        raise CheckpointError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot build the model: {str(err).splitlines()[0]}") from None


def expected_shapes(cls: type, config: dict, where: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the state cls(**config) would have, from a build on the `meta` device (no memory used)."""
    with torch.device("meta"):
        return shapes(build_model(cls, config, where).state_dict())


def model_config(model: torch.nn.Module, records: bool = True) -> dict:
    """The model's init args as plain JSON, checked to rebuild a model of exactly the same shapes; records: with
    config.json's `_class_name` (the family's class) and `_vae_lab_version`."""
    from vae_lab import __version__

    config = json.loads(json.dumps(getattr(model, "_hub_mixin_config", None) or {}))
    config = {k: v for k, v in config.items() if k not in (CLASS_KEY, VERSION_KEY)}
    check_config({**config, CLASS_KEY: type(model).__name__}, "model config")
    rebuilt = build_model(type(model), config, "model config")
    problem = state_mismatch(shapes(rebuilt.state_dict()), shapes(model.state_dict()))
    if problem:  # PyTorchModelHubMixin drops init args that are not JSON-able (e.g. a DictConfig `net`)
        raise CheckpointError(f"the model's init args do not rebuild it ({problem}); pass plain dicts and lists")
    return {CLASS_KEY: type(model).__name__, VERSION_KEY: __version__, **config} if records else config


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
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


ALLOW_NONFINITE_ENV = "VAE_LAB_ALLOW_NONFINITE_WEIGHTS"  # =1: load NaN/inf weights anyway (debugging)


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or inf: such a model can still report finite, meaningless numbers (a NaN in a
    parameter that a masked or clamped path hides), so it is stopped at load, naming the tensor."""
    if os.environ.get(ALLOW_NONFINITE_ENV) == "1":
        return
    for name, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{where}: tensor {name} holds {bad} non-finite value(s) (NaN or inf) of "
                                  f"{value.numel()}: a diverged or damaged model is refused (set "
                                  f"{ALLOW_NONFINITE_ENV}=1 to load it anyway, for debugging)")


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy `state` into `model` strictly; a one-line CheckpointError naming what differs otherwise."""
    problem = state_mismatch(shapes(model.state_dict()), shapes(state))
    if problem:
        raise CheckpointError(f"{where} does not match its model config: {problem}")
    check_finite(state, where)
    model.load_state_dict(state, strict=True)


def _looks_pickled(head: bytes) -> bool:
    """torch.save zip archives start with 'PK'; raw pickles with the PROTO opcode 0x80 and a protocol 2..5."""
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _not_safetensors(path: Path, head: bytes, why: str) -> CheckpointError:
    if _looks_pickled(head):
        return CheckpointError(f"{path} is a pickle (torch.save) file, not safetensors: "
                               "vae_lab never unpickles artifacts")
    return CheckpointError(f"{path} is not a valid safetensors file: {why}")


def header_shapes(path: Path, root: Path | None = None) -> dict[str, tuple[int, ...]]:
    """{name: shape} from a safetensors file's header alone: an 8-byte little-endian length, then that much JSON."""
    path = Path(path)
    with _open_regular(path, root or artifact_root(path.parent), None) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or length > min(MAX_HEADER_BYTES, size - 8):
            raise _not_safetensors(path, head, f"its header claims {length} bytes; the file has {size}"
                                   if length is not None else "shorter than 8 bytes")
        text = f.read(length)
    try:
        header = json.loads(text)
        return {name: tuple(_shape(entry["shape"])) for name, entry in header.items() if name != "__metadata__"}
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError, KeyError, AttributeError) as err:
        raise _not_safetensors(path, head, f"bad header ({type(err).__name__})") from None


def _shape(value: Any) -> list[int]:
    if not (isinstance(value, list) and all(isinstance(n, int) and n >= 0 for n in value)):
        raise TypeError("a shape is a list of integers >= 0")
    return value


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle included) is refused, never unpickled."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")  # parses a JSON header and raw buffers: no code runs
    except Exception as err:  # safetensors raises its own error type for a bad header or truncated data
        with open(path, "rb") as f:
            head = f.read(8)
        raise _not_safetensors(path, head, str(err).splitlines()[0]) from None


def weights_bytes(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save as safetensors_bytes

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return safetensors_bytes(state, metadata={"format": "pt"})


def load_artifact(path: Path, resolve, map_location: str = "cpu"):
    """A model (eval mode) from a local artifact directory, strict about its weights. resolve(config) -> the class
    (a class itself is taken as it is: vae_lab.model.family_class reads config.json's `_class_name`)."""
    path = Path(path)
    root = artifact_root(path)
    records = read_config(path / CONFIG_NAME, root, with_records=True)
    cls = resolve if isinstance(resolve, type) else resolve(records)
    config = {k: v for k, v in records.items() if k not in (CLASS_KEY, VERSION_KEY)}
    weights = path / WEIGHTS_NAME
    if not os.path.lexists(weights):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}{hint}; an artifact is config.json + model.safetensors")
    # shapes first, from the header and a `meta` build: a tampered config cannot make us allocate a huge model
    problem = state_mismatch(expected_shapes(cls, config, str(path / CONFIG_NAME)), header_shapes(weights, root))
    if problem:
        raise CheckpointError(f"{weights} does not match its config.json: {problem}")
    model = build_model(cls, config, str(path / CONFIG_NAME))
    state = read_weights(weights)
    load_state(model, state, str(weights))
    return model.to(map_location).eval()


def _swap_names(out_dir: Path) -> tuple[Path, Path, Path]:
    """(being written, complete and waiting to be swapped in, the previous one being swapped out) beside out_dir."""
    return tuple(out_dir.parent / f".{out_dir.name}.{tag}" for tag in ("tmp", "new", "old"))


def write_artifact(out_dir: Path, files: dict[str, bytes]) -> Path:
    """Write `files` as the artifact directory `out_dir`, replacing any previous one whole.

    Built in `.<name>.tmp` (each file fsync'ed), renamed to `.<name>.new` once complete (the rename is the mark of
    completeness), then swapped in: readers never see a half-written artifact, and a crash at any point leaves
    a state `recover_artifact` completes.
    """
    out_dir = Path(out_dir)
    recover_artifact(out_dir)
    tmp, new, old = _swap_names(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(new)
    _fsync_dir(out_dir.parent)
    return _swap_in(out_dir)


def _swap_in(out_dir: Path) -> Path:
    """Replace out_dir by the complete `.<name>.new` (out_dir -> .old, .new -> out_dir), then drop the .old."""
    _, new, old = _swap_names(out_dir)
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    new.rename(out_dir)
    _fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def recover_artifact(out_dir: Path) -> Path | None:
    """Finish a swap a crash interrupted; returns out_dir if it exists afterwards.

    `.<name>.new` is complete (renamed only after every file was fsync'ed): it is swapped in. Without it, a lone
    `.<name>.old` (out_dir missing) is the previous complete artifact and is put back. A `.tmp` is a half-written
    copy and is removed.
    """
    out_dir = Path(out_dir)
    tmp, new, old = _swap_names(out_dir)
    if new.is_dir():
        _swap_in(out_dir)
    elif old.is_dir():
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return out_dir if out_dir.is_dir() else None
