"""Generate the notes-grpc data files deterministically.

    python scenarios/notes-grpc/gen_data.py

Writes data/notes.json (the notes every server loads at start-up) and the
load-generator inputs data/titles.json and data/authors.json. The output is
committed; re-running the script reproduces it byte for byte.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261123
N_AUTHORS = 60
N_NOTES = 1200

WORDS = (
    "alpha bravo cedar delta ember fjord gamma harbor iris juniper kestrel lumen "
    "meadow nectar orbit prism quartz raven sierra tundra umber vortex willow "
    "xenon yarrow zephyr anchor beacon canyon drift echo falcon glacier hollow"
).split()


def main() -> None:
    rng = random.Random(SEED)
    # The three notes of the original write-up come first, in this order.
    notes = [
        {"title": "Hello", "content": "Hello, world of notes.",
         "author": {"nickname": "Hans", "mail": "hans@gmail.com"}},
        {"title": "Goodbye", "content": "Goodbye, and thanks for all the notes.",
         "author": {"nickname": "Hans", "mail": "hans@gmail.com"}},
        {"title": "What up", "content": "What is up, noticeboard?",
         "author": {"nickname": "Lisa", "mail": "lisa@gmail.com"}},
    ]
    authors = [
        {"nickname": f"user{i:02d}", "mail": f"user{i:02d}@example.org"}
        for i in range(N_AUTHORS)
    ]
    for i in range(N_NOTES):
        author = authors[rng.randrange(N_AUTHORS)]
        words = rng.choices(WORDS, k=rng.randint(20, 80))
        notes.append({
            "title": f"Note {i:04d}: {' '.join(rng.choices(WORDS, k=3))}",
            "content": " ".join(words).capitalize() + ".",
            "author": dict(author),
        })
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    (data / "notes.json").write_text(json.dumps(notes, indent=1, ensure_ascii=False) + "\n")
    # Load inputs: ghz sends array elements round-robin. 200 titles spread over
    # the file (hits) plus 10 unknown titles (NOT_FOUND answers are part of a
    # real lookup mix, and cheap for every server alike).
    titles = [{"title": n["title"]} for n in rng.sample(notes, 200)]
    titles += [{"title": f"missing {i}"} for i in range(10)]
    rng.shuffle(titles)
    (data / "titles.json").write_text(json.dumps(titles, indent=1) + "\n")
    mails = sorted({n["author"]["mail"] for n in notes})
    (data / "authors.json").write_text(
        json.dumps([{"mail": m} for m in mails], indent=1) + "\n")


if __name__ == "__main__":
    main()
