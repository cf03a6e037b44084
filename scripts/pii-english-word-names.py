#!/usr/bin/env python3
"""Writes the census names that the name lists leave out because they are also English words.

    python3 scripts/pii-english-word-names.py [--names-src PATH]

Writes crates/pii/src/data/english_word_first_names.txt and english_word_surnames.txt: the names
of the 1990 US Census top 3000 first names / top 8000 surnames (PyPI `names` 0.3.0, public domain)
that `scripts/pii-labeled-set.py` drops from first_names.txt / surnames.txt because COMMON_WORDS
has them (`mark`, `grace`, `brown`, `young`). Alone such a word says nothing, but beside a listed
name it completes it (`Catherine Brown`, `Mark Cunningham`). Deterministic; same census files,
same selection as the main lists.
"""
import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates" / "pii" / "src" / "data"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names-src", help="names-0.3.0.tar.gz, a folder holding it, or the unpacked sdist")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("labeled", ROOT / "scripts" / "pii-labeled-set.py")
    labeled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(labeled)
    census = labeled.locate_census_files(args.names_src)
    _, _, first_removed, last_removed = labeled.build_name_lists(census)

    def words(names):
        return sorted({n for n in names if len(n) >= 2 and n.isascii() and n.isalpha()})

    labeled.write_list(DATA / "english_word_first_names.txt", words(first_removed))
    labeled.write_list(DATA / "english_word_surnames.txt", words(last_removed))
    print(f"{len(words(first_removed))} first names, {len(words(last_removed))} surnames")


if __name__ == "__main__":
    main()
