"""The Hugging Face Hub, the network only: download an artifact, push files in one commit, errors in one line.

The token comes from HF_TOKEN or `hf auth login` and is never printed or written: every message that could
echo it goes through `redact`.
"""

import re
from pathlib import Path
from typing import Any

from vae_lab.artifact import CONFIG_NAME, TRAIN_CONFIG_NAME, WEIGHTS_NAME, read_config
from vae_lab.errors import CheckpointError, ConfigError, VaeLabError

NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"


class HubError(VaeLabError):
    """The Hub could not be reached, refused the token, or a push failed."""


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


def push_files(repo_id: str, files: list[tuple[str, Path]], *, commit_message: str, private: bool = False,
               revision: str | None = None, api=None):
    """Upload (path in repo, local file) pairs in one commit, creating the repo (and branch); returns CommitInfo."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    api = api or HfApi()
    if not (api.token or get_token()):
        raise HubError(NO_TOKEN)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p in files]
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
