"""The Hugging Face Hub, offline, for the tests of every tier (tests/unit/test_hub.py, tests/integration/
test_hub_training.py, tests/cli/test_hub_cli.py): a local Hub endpoint that records commits (`FakeHub`, fixture
`fake_hub`: import it into a test module to use it), small models, a prepared Hub cache, a CLI process's environment."""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load

from vae_lab.model import VAE

TOKEN = "hf_TestTokenThatMustNeverLeak0123456789"
SMALL_NETS = {"mlp": {"hidden_dims": [16]}, "conv": {"channels": [4, 8]},
              "conv_deep": {"channels": [4, 8], "fc_dim": 16}, "resnet": {"channels": [4, 8]}}
ARTIFACT_FILES = {"config.json", "model.safetensors", "README.md", "train_config.yaml", "metrics.json",
                  "run_info.json", "samples.png"}


class FakeHub:
    """The Hub endpoints HfApi.create_repo / create_branch / create_commit call, recording what they receive.

    Every file is declared "regular" at preupload, so its bytes travel inside the commit payload (no LFS).
    `fail_commits(summary) -> bool` answers 503 to the commits it selects (a Hub outage).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.fail_commits = lambda summary: False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = owner.handle(self.path, dict(self.headers), body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        path = path.split("?")[0]
        auth = headers.get("Authorization") or headers.get("authorization")
        self.requests.append({"path": path, "authorization": auth, "body": body})
        if path == "/api/repos/create":
            payload = json.loads(body)
            return 200, {"url": f"{self.url}/{payload['organization']}/{payload['name']}"}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path):
            return 200, {}
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            summary = next(item["value"]["summary"] for item in lines if item["key"] == "header")
            if self.fail_commits(summary):
                return 503, {"error": "Service Unavailable"}
            files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                     for item in lines if item["key"] == "file"}
            self.commits.append({"repo_id": match[1], "revision": match[2], "summary": summary, "files": files})
            oid = f"{len(self.commits):040x}"
            return 200, {"commitUrl": f"{self.url}/{match[1]}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        return 404, {"error": f"no route {path}"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    """A FakeHub with this process allowed to reach it (tests run with HF_HUB_OFFLINE=1)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = FakeHub()
    yield server
    server.close()


def hub_env(url: str | None, **extra) -> dict:
    """Environment of a CLI subprocess: online against `url` (or offline when None), token set, no other HF_*
    variable of this one. With tests/driver.py: `driver.run(..., env=only(hub_env(...)))`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_TOKEN=TOKEN, HF_HOME=str(extra.pop("home")), **extra)
    env.update({"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"} if url else {"HF_HUB_OFFLINE": "1"})
    return env


def only(env: dict) -> dict:
    """`env=` of a driver.run whose process gets exactly `env`: every other variable of driver.ENV unset (None)."""
    import driver

    return {**{k: None for k in driver.ENV}, **env}


def small_vae(architecture: str, likelihood: str, conditional: bool = False, in_shape=(1, 8, 8)) -> VAE:
    model = VAE(in_shape=list(in_shape), latent_dim=3, architecture=architecture, net=SMALL_NETS.get(architecture),
                likelihood=likelihood, conditional=conditional, num_classes=3 if conditional else 0)
    x, y = torch.rand(6, *in_shape), torch.arange(6) % 3
    model.train()(x, y if conditional else None)  # moves BatchNorm running statistics away from their init
    return model.eval()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors copied into memory (load_file maps the file, which must not be rewritten while mapped)."""
    return load(Path(path).read_bytes())


def stage_in_cache(cache: Path, repo_id: str, folder: Path, commit: str, ref: str | None = "main") -> None:
    """Lay `folder`'s files out as huggingface_hub's cache holds a downloaded revision of `repo_id`."""
    import shutil

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def put_nan_in_first_tensor(folder: Path) -> str:
    """Set the first element of the artifact's first tensor (sorted by name) to NaN, as a diverged run would leave
    it; returns that tensor's name."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return name
