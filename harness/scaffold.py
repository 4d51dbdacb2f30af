"""`langbench new NAME`: a scenario folder and four implementation skeletons.

The templates live in harness/scaffold/; `${name}` in them becomes the
scenario name. The skeleton is a complete, runnable HTTP scenario (GET
/hello) with its checks and wrk script, so that `langbench run NAME` works
at once and each part can then be replaced by the real service.
"""
from __future__ import annotations

import re
import string
from pathlib import Path

from .errors import InputError

TEMPLATES = Path(__file__).parent / "scaffold"
LANGUAGES = ("python", "go", "rust", "scala")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,40}$")


def _copy_tree(src: Path, dst: Path, name: str) -> list[Path]:
    written = []
    for f in sorted(src.rglob("*")):
        if f.is_dir() or "__pycache__" in f.parts:
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(f.read_text()).safe_substitute(name=name))
        written.append(target)
    return written


def scaffold(root: Path, name: str, languages: tuple[str, ...] = LANGUAGES) -> list[Path]:
    if not NAME_RE.match(name):
        raise InputError(f"scenario name '{name}': use lower-case letters, digits and '-' (2 to 41 characters)")
    sdir = root / "scenarios" / name
    idir = root / "implementations" / name
    for d in (sdir, idir):
        if d.exists():
            raise InputError(f"{d}: already exists; choose another name or remove it")
    written = _copy_tree(TEMPLATES / "scenario", sdir, name)
    for lang in languages:
        written += _copy_tree(TEMPLATES / lang, idir / lang, name)
    return written
