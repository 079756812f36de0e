"""The project's own tools as a user runs them: the layering contracts (lint-imports), the docs site built
strictly (mkdocs), and a built wheel's installed commands from an empty directory."""

import shutil
import sys
import sysconfig
from pathlib import Path

import driver
import pytest

ROOT = driver.ROOT


def installed(name: str) -> str:
    """A console script of this environment (on PATH, or beside the interpreter)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def test_layering_contracts_hold():
    """import-linter's contracts in pyproject.toml (the same check `make test` runs)."""
    proc = driver.execute([installed("lint-imports")], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and proc.stdout.count("KEPT") >= 3


def test_site_builds_strictly(tmp_path):
    proc = driver.execute([installed("mkdocs"), "build", "--strict", "-d", tmp_path / "site"], timeout=300,
                          env={**driver.ENV, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # every page of the nav was written, the API reference with the interface's members in it
    assert (tmp_path / "site" / "adding-a-family" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "model" / "index.html").read_text()
    assert all(f'id="vae_lab.model.interface.ModelFamily.{name}"' in api
               for name in ("latent_groups", "terms", "sample", "reconstruct", "log_weights", "log_weights_bounded"))


@pytest.mark.slow
def test_installed_wheel_commands_run_from_an_empty_directory(tmp_path):
    """`pip install` of a built wheel (not editable) gives train and evaluate commands that work anywhere."""
    wheels = tmp_path / "wheels"
    driver.execute([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels,
                    ROOT], ok=True)
    wheel = next(wheels.glob("vae_lab-*.whl"))
    venv = tmp_path / "venv"
    driver.execute([sys.executable, "-m", "venv", "--without-pip", venv], ok=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    # reuse this environment's torch, lightning ... (appended after the venv's own site-packages, whose vae_lab wins)
    (site / "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    driver.execute([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], ok=True)
    work = tmp_path / "empty"
    work.mkdir()
    bare = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = lambda *cmd: driver.execute([venv / "bin" / cmd[0], *cmd[1:]], cwd=work, env=bare, timeout=900)  # noqa
    located = driver.execute([python, "-c", "import vae_lab.configs as c; print(c.__file__, c.CONFIG_DIR)"],
                             cwd=work, timeout=120)
    assert str(site) in located.stdout and located.stdout.strip().endswith("vae_lab/configs"), located.stdout
    train = run("vae-lab-train", "trainer.max_steps=5", "trainer.max_epochs=1", "hydra.run.dir=run",
                "trainer.enable_progress_bar=false", "callbacks=no_images", "print_config=false")
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "run" / "metrics.json").is_file() and (work / "run" / "artifact" / "model.safetensors").is_file()
    evaluate = run("vae-lab-evaluate", "model=run", "split=val", "iwae_samples=3", "max_examples=20", "progress=false")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert (work / "run" / "evaluation.json").is_file()
    for command in ("vae-lab-sample", "vae-lab-push", "vae-lab-sweep-report", "vae-lab-benchmark",
                    "vae-lab-disentanglement-table"):
        assert run(command, "--help").returncode == 0, command
