"""The one way tests start vae_lab's real processes.

- `run(tool, *args)` / `start(tool, *args)`: one command-line tool (`train`, `evaluate`, `sample`, `score`,
  `encode`, `push`, `sweep_report`, `benchmark`, `disentanglement_table`, or a path) in its own process, as a user
  starts it: cwd the repository root, one torch thread, the Hub offline.
- `run_many(tool, cases)`: many invocations of one tool's entry point in ONE interpreter (Hydra's command-line
  parsing included); each case gets its exit code, its stderr, its stdout and whether the folder `watch` stayed
  byte-identical.
  This is how the bad-input cases stay cheap: one interpreter start (~3 s of imports) instead of one per case.
- `one_error_line(proc, *fragments)`: the contract of every tool for bad input: exit 2, no traceback, exactly one
  `error: ...` line on stderr holding every fragment.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
TOOLS = {"train": "train.py", "evaluate": "scripts/evaluate.py", "sample": "scripts/sample.py",
         "score": "scripts/score.py", "encode": "scripts/encode.py", "push": "scripts/push_to_hub.py",
         "sweep_report": "scripts/sweep_report.py", "benchmark": "scripts/benchmark.py",
         "disentanglement_table": "scripts/disentanglement_table.py"}
ENTRY_POINTS = {"train": "vae_lab.cli.train", "evaluate": "vae_lab.cli.evaluate", "sample": "vae_lab.cli.sample",
                "score": "vae_lab.cli.score", "encode": "vae_lab.cli.encode", "push": "vae_lab.cli.push",
                "sweep_report": "vae_lab.cli.sweep_report", "benchmark": "vae_lab.cli.benchmark",
                "disentanglement_table": "vae_lab.cli.disentanglement_table"}


def environment(env: dict | None = None) -> dict:
    """ENV with `env` on top; a variable given as None is left out (e.g. a user's HF_TOKEN a test must not see)."""
    return {k: v for k, v in {**ENV, **(env or {})}.items() if v is not None}


def command(tool: str, *args: str) -> list[str]:
    """argv of `tool` (a name of TOOLS or a script path relative to the repository root)."""
    return [sys.executable, TOOLS.get(tool, tool), *map(str, args)]


def run(tool: str, *args, env: dict | None = None, timeout: int = 600, ok: bool | None = None,
        cwd: Path = ROOT, wrap=None, **run_kwargs) -> subprocess.CompletedProcess:
    """Run a tool to its end. ok=True: assert exit 0; ok=False: assert a non-zero exit (stderr shown if not).

    wrap: argv -> argv, to start the tool inside something (`bash -c "ulimit -v ...; exec ..."`, a private tmpfs of
    tests/tiny_fs.py); run_kwargs go to subprocess.run (e.g. preexec_fn for a resource limit).
    """
    argv = command(tool, *args)
    proc = subprocess.run(wrap(argv) if wrap else argv, cwd=cwd, env=environment(env), capture_output=True,
                          text=True, timeout=timeout, **run_kwargs)
    if ok is True:
        assert proc.returncode == 0, proc.stderr[-3000:]
    elif ok is False:
        assert proc.returncode != 0, proc.stdout[-2000:]
    return proc


def start(tool: str, *args, env: dict | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start a tool and return at once (signals, locks, concurrent runs): stdout dropped, stderr piped."""
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True, **popen_kwargs}
    return subprocess.Popen(command(tool, *args), cwd=ROOT, env=environment(env), **options)


def python(code: str, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh interpreter (what a fresh process sees: imports, environment, memory limits)."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=environment(env),
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc, *fragments: str, code: int = 2) -> str:
    """Assert the bad-input contract on a finished process (or a `run_many` result) and return the error line."""
    returncode = proc["code"] if isinstance(proc, dict) else proc.returncode
    stderr = proc["stderr"] if isinstance(proc, dict) else proc.stderr
    assert returncode == code, f"exit {returncode}, expected {code}: {stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


_MANY = r"""
import contextlib, hashlib, importlib, io, json, sys, traceback
from pathlib import Path
from hydra.core.global_hydra import GlobalHydra

def digest(folder):
    if not folder or not Path(folder).exists():
        return None
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()

tool, script, cases, watch, out = sys.argv[1:6]
main = importlib.import_module(tool).main
results = {}
for name, argv in json.loads(cases):
    before = digest(watch)
    sys.argv = [script, *argv]
    err, out_, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out_):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # a crash: recorded as this case's failure, not the driver's
            err.write("Traceback (driver)\n" + traceback.format_exc())
            code = "crash"
    GlobalHydra.instance().clear()
    results[name] = {"code": code, "stderr": err.getvalue(), "stdout": out_.getvalue(),
                     "unchanged": digest(watch) == before}
    Path(out).write_text(json.dumps(results))
"""


def run_many(tool: str, cases: list[tuple[str, list[str]]], out: Path, watch: Path | None = None,
             timeout: int = 900) -> dict[str, dict]:
    """Each (name, argv) case through `tool`'s entry point in one interpreter, in order.

    Returns name -> {"code", "stderr", "stdout", "unchanged"} where unchanged says the folder `watch` (e.g. an existing
    run that no bad input may touch) is byte-identical after the case; None when not watched. `out` is a JSON file the
    driver writes after each case, so a driver killed mid-way still shows how far it came.
    """
    proc = subprocess.run([sys.executable, "-c", _MANY, ENTRY_POINTS[tool], TOOLS[tool],
                           json.dumps([[name, [str(a) for a in argv]] for name, argv in cases]),
                           str(watch or ""), str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 and Path(out).is_file(), proc.stderr[-3000:]
    results = json.loads(Path(out).read_text())
    assert sorted(results) == sorted(name for name, _ in cases), proc.stderr[-3000:]
    return results


def execute(argv: list, *, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600,
            ok: bool | None = None) -> subprocess.CompletedProcess:
    """Any other program (lint-imports, mkdocs, pip, an installed command, a shell line): like `run`, but `argv`
    is the whole command line and `env`, when given, replaces the environment (an empty directory's user)."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=ENV if env is None else env, capture_output=True,
                          text=True, timeout=timeout)
    if ok is True:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    elif ok is False:
        assert proc.returncode != 0, proc.stdout[-2000:]
    return proc
