"""Every command a newcomer would paste from README.md and docs/ runs, as written, in a temporary copy of a fresh
clone (the files git tracks, nothing else: no data/, no predictions/ runs, no released models).

Each command runs in this process (the script run as `__main__` with its argv, in the copy as working folder), to
spare an interpreter start per command. What the test adds, and only that: training commands get `--set` of a few
steps and no metrics appended (the full runs are what the lifecycle tests check in small); the metrics run on the
small sample counts of tests/small.py (conftest.py); the placeholders a reader fills (`<run>`, `<sweep>`,
`my_run.yaml`, `my_sweep.yaml`) are filled with runs and files of the copy, and shell globs are expanded.
Commands that need a download, GPUs or a cluster, and blocks another test runs as written, are marked in NOT_RUN
with the reason."""
import contextlib
import glob
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)

# A pattern of the command (or "file:python" for a document's Python blocks) -> why it is not run here.
NOT_RUN = {
    r"^pip install": "installs packages: the README's test command does, in CI's fresh environment",
    r"data\.py download|traverse\.py --download|released/": "needs a download",
    r"shapes3d|mpi3d|celeba": "needs a download (the dataset's files)",
    r"^torchrun|^srun": "needs GPUs or a cluster",
    r"^docs/api\.md:python$": "tests/test_api.py runs these blocks as written, from outside the clone",
    r"^docs/objectives\.md:python$": "tests/test_objective_contract.py runs this example as written",
}
TRAIN = ["--set", "steps=4", "log_every=2", "sample_every=4", "checkpoint_every=4", "eval_every=4", "metrics=none",
         "traverse_samples=16", "factor_samples=1", "val_images=64"]
BENCH = ["--steps", "2", "--windows", "1", "--warmup", "1", "--batch-size", "8", "--images", "64"]


def commands() -> list[tuple[str, str, str]]:
    """(document, kind, text) for every command line of a bash block and every python block, in reading order."""
    found = []
    for document in DOCUMENTS:
        with open(os.path.join(ROOT, document), encoding="utf-8") as f:
            text = f.read()
        for kind, body in BLOCK.findall(text):
            if kind == "python":
                found.append((document, "python", body))
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].split(" # ")[0].strip()
                if line:
                    found.append((document, "bash", line))
    return found


def why_not_run(document: str, kind: str, text: str) -> str:
    subject = f"{document}:python" if kind == "python" else text
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, subject)), "")


def smoke(line: str) -> str:
    """The line as written, plus the few-steps arguments of the test (see the module's docstring)."""
    if re.match(r"python (main|sweep)\.py", line) and not re.search(r"--resume|--report|--list-params|--help", line):
        return f"{line} {' '.join(TRAIN)}"
    if line.startswith("python bench.py"):
        return f"{line} {' '.join(BENCH)}" + (" --disk 256" if "--disk" in line else "")
    return line


def fill(line: str, copy: str) -> str:
    """Placeholders filled with the first run of the copy and a sweep with beta=4 points, made by commands before."""
    runs = sorted(glob.glob(os.path.join(copy, "predictions", "*", "checkpoint.pt")), key=os.path.getctime)  # the first
    sweeps = sorted(glob.glob(os.path.join(copy, "predictions", "*", "sweep.yaml")),
                    key=lambda p: not os.path.isdir(os.path.join(os.path.dirname(p), "beta=4,seed=0")))
    for placeholder, made in (("predictions/<run>", runs), ("predictions/<sweep>", sweeps)):
        if placeholder in line:
            if not made:
                raise LookupError(placeholder)  # made by a command further on: run it after that one
            line = line.replace(placeholder, os.path.relpath(os.path.dirname(made[0]), copy))
    return line


def run(line: str, kind: str, copy: str) -> tuple[int, str]:
    """(exit code, what it wrote to stderr, with the traceback if one was raised) of one command or Python block,
    run in `copy`; a script runs as `__main__` with its argv, shell globs expanded."""
    err, here, argv = io.StringIO(), os.getcwd(), sys.argv
    os.chdir(copy)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            if kind == "python":
                exec(compile(line, "<block>", "exec"), {"__name__": "__main__"})
            else:
                words = [w for word in shlex.split(line)
                         for w in ((sorted(glob.glob(word)) or [word]) if "*" in word else [word])]
                assert words[0] == "python" and words[1].endswith(".py"), f"not a python script: {line}"
                sys.argv = words[1:]
                runpy.run_path(os.path.join(copy, words[1]), run_name="__main__")
        return 0, err.getvalue()
    except SystemExit as exit_:
        code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1  # as the shell sees it
        return code, err.getvalue()
    except Exception:  # a traceback is a failure of the command, reported with the others
        return 1, err.getvalue() + traceback.format_exc()
    finally:
        sys.argv = argv
        os.chdir(here)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The files git tracks, copied, and the two files the docs ask the reader to write."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    copy = str(tmp_path_factory.mktemp("clone"))
    for name in filter(None, tracked.decode().split("\0")):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(os.path.join(copy, name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(copy, name))
    with open(os.path.join(copy, "my_run.yaml"), "w", encoding="utf-8") as f:
        f.write("beta: 8.0\nlatent_dim: 6\n")
    with open(os.path.join(copy, "my_sweep.yaml"), "w", encoding="utf-8") as f:
        f.write("preset: demo\ngrid: {seed: [0, 1]}\n")
    return copy


def test_every_pasted_command_runs_in_a_fresh_clone(clone):
    failed, ran, done = [], 0, set()
    waiting = [entry for entry in commands() if not why_not_run(*entry)]
    while waiting:
        later = []
        for document, kind, text in waiting:
            try:
                line = fill(smoke(text), clone) if kind == "bash" else text
            except LookupError:  # its run or sweep is made by a command further on
                later.append((document, kind, text))
                continue
            if line in done:
                continue
            done.add(line)
            start = time.perf_counter()
            code, err = run(line, kind, clone)
            print(f"{time.perf_counter() - start:5.1f} s  {document}: {line[:100]}")  # shown by pytest -s
            ran += 1
            if code != 0:
                failed.append(f"{document}: {line}\n    exit {code}: {err.strip()[-600:]}")
        assert len(later) < len(waiting), f"nothing makes the run or sweep of: {later}"
        waiting = later
    assert failed == [] and ran >= 30, "\n".join(failed)


def test_the_commands_not_run_are_only_the_marked_ones():
    """Every mark is used (a stale one fails), and the README's first commands are run."""
    marks = [why_not_run(document, kind, text) for document, kind, text in commands()]
    assert set(filter(None, marks)) == set(NOT_RUN.values())
    assert not any(why_not_run("README.md", "bash", line) for line in ("python main.py --preset demo", "python main.py"))
