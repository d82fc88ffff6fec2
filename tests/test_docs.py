"""The documentation holds together: links resolve, README commands name real scripts and flags, sizes and sources."""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
README_MAX_BYTES = 14_000
# Working notes outside the repository; "seeds/" as a folder of its own (assets/demo_seeds/ is fine).
FORBIDDEN = (re.compile(re.escape("../shared")), re.compile(re.escape("REFERENCE.md")),
             re.compile(r"(?<![\w-])seeds/"))

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SOURCE = re.compile(r"""<(?:img|a)\b[^>]*?(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")


def markdown_files() -> list[str]:
    docs = sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")) \
        if os.path.isdir(DOCS) else []
    return [README, *docs]


def link_targets(text: str) -> list[str]:
    """Targets of every Markdown link and image, and of HTML img/a tags, outside code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.findall(prose) + HTML_SOURCE.findall(prose)


def broken_links(path: str) -> list[str]:
    """The relative links and images of the Markdown file at `path` that name no existing file or folder
    (web and mail links and pure #anchors are skipped; a #fragment is stripped)."""
    with open(path, encoding="utf-8") as f:
        targets = link_targets(f.read())
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s), mailto and anchors within the page
        relative = target.split("#", 1)[0]
        if not os.path.exists(os.path.join(os.path.dirname(path), relative)):
            broken.append(target)
    return broken


def readme_commands(text: str) -> list[str]:
    """Every command line in a ```bash block that starts with `python <script>.py` (comments dropped)."""
    commands = []
    for block in BASH_BLOCK.findall(text):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"^python\s+\S+\.py\b", line):
                commands.append(line)
    return commands


@functools.lru_cache(maxsize=None)
def help_text(script: str, subcommand: str | None = None) -> str:
    arguments = [sys.executable, os.path.join(ROOT, script), *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(arguments, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(arguments[1:])} failed: {result.stderr[-2000:]}"
    return result.stdout


def unknown_flags(command: str, help_for) -> list[str]:
    """The --flags of `command` that its script's --help does not list. `help_for(script, subcommand)` gives the
    help text; a first argument that the top-level help lists as a subcommand ({a,b}) adds its own help."""
    words = shlex.split(command.replace("<", "").replace(">", ""))
    script = words[1]
    text = help_for(script, None)
    choices = re.search(r"\{([\w,-]+)\}", text)
    if len(words) > 2 and choices and words[2] in choices.group(1).split(","):
        text += help_for(script, words[2])
    return [flag for flag in FLAG.findall(command) if not re.search(re.escape(flag) + r"(?![\w-])", text)]


# ---------------------------------------------------------------- the helpers catch what they should

def test_broken_link_helper_reports_missing_targets(tmp_path):
    (tmp_path / "present.md").write_text("x")
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "shown.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text("[fine](present.md#section) ![fine](pictures/shown.png) [web](https://example.org/x.md)\n"
                    "[anchor](#top) [gone](missing.md) ![gone](pictures/absent.png) [gone too](present.md/x#y)\n"
                    '<img src="pictures/nowhere.gif">\n'
                    "```\n[in code](not-a-link.md)\n```\n`[inline](also-not.md)`\n")
    assert broken_links(str(page)) == ["missing.md", "pictures/absent.png", "present.md/x#y", "pictures/nowhere.gif"]


def test_flag_helper_reports_flags_the_help_does_not_list():
    helps = {("tool.py", None): "usage: tool.py [-h] [--preset PRESET] {go,stop} ...",
             ("tool.py", "go"): "usage: tool.py go [--fast]", ("tool.py", "stop"): "usage: tool.py stop"}
    help_for = lambda script, sub: helps[(script, sub)]  # noqa: E731
    assert unknown_flags("python tool.py --preset demo --pre", help_for) == ["--pre"]
    assert unknown_flags("python tool.py go --fast --preset x", help_for) == []
    assert unknown_flags("python tool.py stop --fast", help_for) == ["--fast"]
    assert readme_commands("```bash\npython a.py --x   # note --y\npip install\n```\n```\npython b.py\n```") \
        == ["python a.py --x"]


# ---------------------------------------------------------------- the repository's documentation

@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    assert broken_links(path) == [], f"{os.path.relpath(path, ROOT)} links to files that do not exist"


def tracked_text_files() -> list[str]:
    """Every file git tracks that is text (code, docs, the assets' reports), this test file aside."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the docs alone
        return markdown_files()
    paths = [os.path.join(ROOT, name) for name in names.splitlines()
             if name.endswith((".py", ".md", ".html", ".yaml", ".cff", ".txt", ".csv")) and name != "tests/test_docs.py"]
    return [path for path in paths if os.path.isfile(path)]


@pytest.mark.parametrize("path", tracked_text_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_pointers_outside_the_repository(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert [p.pattern for p in FORBIDDEN if p.search(text)] == []


def test_forbidden_patterns_match_pointers_only():
    found = lambda text: [p.pattern for p in FORBIDDEN if p.search(text)]  # noqa: E731
    assert len(found("see ../shared/REFERENCE.md and seeds/002_x.txt")) == 3
    assert found("[summary](assets/demo_seeds/summary.md)") == []


def test_readme_size():
    assert os.path.getsize(README) <= README_MAX_BYTES


def test_readme_test_command_block():
    """.ci/run executes the second line after the marker."""
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    marker = lines.index("<!-- test command -->")
    assert lines[marker + 1] == "```bash"
    assert lines[marker + 2] == "pip install -r requirements.txt && python -m pytest -q"


def test_readme_commands_name_real_scripts_and_flags():
    with open(README, encoding="utf-8") as f:
        commands = readme_commands(f.read())
    assert commands, "README has no python commands in its bash blocks"
    missing = sorted({c.split()[1] for c in commands if not os.path.isfile(os.path.join(ROOT, c.split()[1]))})
    assert missing == [], f"README names scripts that are not in the repository root: {missing}"
    problems = {c: bad for c in commands if (bad := unknown_flags(c, help_text))}
    assert problems == {}, f"flags their script's --help does not list: {problems}"


def code_map_rows() -> dict[str, str]:
    """README's code map: the path in each row's first cell → the row's text."""
    with open(README, encoding="utf-8") as f:
        rows = [line for line in f.read().splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([^`]+)`", row).group(1): row for row in rows}


def test_the_code_map_names_every_module_of_the_package():
    rows, missing = code_map_rows(), []
    for folder, _, files in os.walk(os.path.join(ROOT, "betavae")):
        relative = os.path.relpath(folder, ROOT).replace(os.sep, "/")
        for name in sorted(f for f in files if f.endswith(".py") and f != "__init__.py"):
            parts = relative.split("/")
            if len(parts) == 1:                                   # betavae/<name>.py has a row of its own
                found = f"betavae/{name}" in rows
            else:                                                 # betavae/<sub>/[<deeper>/]<name>.py: named in <sub>'s row
                row = rows.get(f"betavae/{parts[1]}/", "")
                found = f"`{name}`" in row or (len(parts) > 2 and f"`{parts[2]}/`" in row)
            if not found:
                missing.append(f"{relative}/{name}")
    assert missing == []


def test_the_readme_names_every_run_preset():
    """By name, or as `betaH_<dataset>` for the presets made from the registry's datasets with factors, which
    docs/data.md's table lists."""
    from betavae.sources.interface import REGISTRY
    from params import PRESETS

    with open(README, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(ROOT, "docs", "data.md"), encoding="utf-8") as f:
        table = f.read().split("## Downloading")[0]
    by_dataset = {f"betaH_{name}" for name, entry in REGISTRY.items() if entry.factors}
    assert "`betaH_<dataset>`" in text and by_dataset <= set(PRESETS)
    assert [name for name in PRESETS if f"`{name}`" not in text and name not in by_dataset] == []
    assert [name for name in REGISTRY if f"`{name}`" not in table] == []
