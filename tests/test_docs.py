"""The documentation stands on its own.

- No tracked Markdown, Python, TOML or template file points outside the
  repository to the sibling folder of notes the project grew from (a reader
  who clones the repository does not have it).
- Every scenario folder (one with a scenario.toml) has a README.md that is a
  complete contract: it has the sections listed in REQUIRED_SECTIONS.
- The documents README.md lists exist.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECKED_SUFFIXES = (".md", ".py", ".toml", ".j2")

# The sibling notes folder, by relative path (parent dir + "shared") or by its
# absolute path under /work; spelled as a pattern so this file does not match itself.
OUTSIDE_REF = re.compile(r"(?:\.\./|/work/)shared\b")

# Level-2 headings every scenario README must have (a heading may go on
# after the word, e.g. "## Workloads and levels").
REQUIRED_SECTIONS = ("Origin", "Protocol", "Behaviour", "Verification", "Workloads")

SKIP_DIRS = {".git", ".venv", "node_modules", "target", "build", "__pycache__", ".langbench",
             "results", "reports"}


def tracked_files() -> list[Path]:
    """Files under version control, plus new ones git does not ignore (so a
    file is checked before its first commit); outside a git checkout, the
    files on disk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True,
                             timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
        if names:
            return [ROOT / n for n in names]
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        found += [Path(dirpath) / f for f in filenames]
    return found


def checked_files() -> list[Path]:
    return sorted(p for p in tracked_files() if p.name.endswith(CHECKED_SUFFIXES) and p.is_file())


def scenario_dirs() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "scenarios").glob("*/scenario.toml"))


def test_files_are_checked():
    names = {p.relative_to(ROOT).as_posix() for p in checked_files()}
    for expected in ("README.md", "docs/design.md", "harness/cli.py", "pyproject.toml"):
        assert expected in names, f"{expected} is not among the checked files"


def test_no_reference_outside_the_repository():
    offenders = []
    for path in checked_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_REF.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, ("these lines point to files a clone does not have; point them to "
                           "docs/design.md or a scenario README instead:\n" + "\n".join(offenders))


def test_there_are_scenarios():
    assert scenario_dirs(), "no scenarios/<name>/scenario.toml found"


def headings(text: str, level: int) -> list[str]:
    marker = "#" * level + " "
    in_code = False
    out = []
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith(marker):
            out.append(line[len(marker):].strip())
    return out


@pytest.mark.parametrize("scenario", scenario_dirs(), ids=lambda p: p.name)
def test_scenario_readme_is_a_contract(scenario: Path):
    readme = scenario / "README.md"
    assert readme.is_file(), f"{readme.relative_to(ROOT)} is missing: a scenario's README is its contract"
    text = readme.read_text(encoding="utf-8")
    titles = headings(text, 1)
    assert titles and titles[0].startswith(scenario.name), (
        f"{readme.relative_to(ROOT)}: the first heading should be '# {scenario.name}: ...'")
    sections = [h.lower() for h in headings(text, 2)]
    missing = [s for s in REQUIRED_SECTIONS
               if not any(re.match(rf"{re.escape(s.lower())}\b", h) for h in sections)]
    assert not missing, (f"{readme.relative_to(ROOT)}: missing section(s) "
                         + ", ".join(f"'## {s}'" for s in missing))


def test_documentation_list_points_to_existing_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Documentation\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Documentation' section"
    paths = re.findall(r"`([\w./-]+\.md)`", match.group(1))
    assert paths, "README.md's Documentation section names no document"
    for p in paths:
        assert (ROOT / p).is_file(), f"README.md's Documentation section names {p}, which does not exist"
