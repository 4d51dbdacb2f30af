"""Rendering the flat results table as CSV, JSON or Markdown."""
from __future__ import annotations

import json


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """CSV through pandas (empty cells for missing values)."""
    import pandas as pd
    return pd.DataFrame([{k: r.get(k) for k in columns} for r in rows], columns=columns).to_csv(
        index=False, lineterminator="\n")


def to_json(rows: list[dict], columns: list[str]) -> str:
    return json.dumps([{k: r.get(k) for k in columns} for r in rows], indent=1) + "\n"


def _md_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[dict], columns: list[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_md_cell(r.get(k)) for k in columns) + " |")
    return "\n".join(out) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "markdown": to_markdown}
