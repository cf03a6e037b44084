#!/usr/bin/env python3
"""Writes crates/pii/src/data/world_first_names.txt and world_surnames.txt (first names and
surnames from outside the US Census lists) and english_words.txt (the 25,000 most frequent English
words), for the PII detector (crates/pii/src/data/README.md).

Sources (PyPI, versions pinned, fetched with `pip download` into a temporary folder):
- names-dataset 3.3.1 (package metadata MIT, LICENSE file Apache-2.0; first and last names with a
  popularity rank per country, 105 countries): the names ranked in the top TOP_PER_COUNTRY of any
  country.
- gender-guesser 0.4.0 (nam_dict.txt, Joerg Michael's name list, GNU FDL): curated first names of
  about 50 countries.
- wordfreq 3.1.1 (English word frequencies, Apache-2.0 code / CC-BY-SA data): names that are
  also frequent English words are dropped ("will", "grant", "young"), unless a curated list
  (gender-guesser) vouches for a first name and the word is not very frequent.

Neither Faker nor Mimesis is used: they generate the independent evaluation set.
Run: python3 scripts/pii-name-lists.py   (deterministic: the same bytes every run)
"""
import gzip
import os
import pickle
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/pii/src/data"
TOP_PER_COUNTRY = 1000
ENGLISH_WORDS = 25_000
# zipf frequency (log10 per billion words): 3.3 ≈ once in 500k words ("hilda"), 4.8 ≈ "grant".
COMMON = 3.3
VERY_COMMON = 4.5
# Words that are names somewhere but places, brands or business words in support text.
NOT_NAMES = set(
    """
    london paris berlin madrid rome vienna prague warsaw dublin amsterdam brussels lisbon athens moscow
    tokyo beijing delhi mumbai sydney toronto chicago boston austin dallas houston denver phoenix jordan
    victoria lincoln madison charlotte florence georgia india china japan france germany spain italy
    brazil chile peru cuba israel egypt kenya ghana nigeria asia africa europe america canada mexico
    york jersey orlando camden chelsea kensington brooklyn bronx manhattan sydney perth adelaide
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july
    august september october november december support admin team order invoice service cloud server
    data user account billing sales finance payroll manager customer client office desk help portal
    mail email phone mobile office home status ticket update release version build online digital
    apple google amazon microsoft oracle tesla dell sony nokia samsung canon toyota honda ford mercedes
    visa master amex paypal stripe slack zoom teams jira excel word outlook windows linux android chrome
    north south east west central street road avenue lane park square hill
    """.split()
)


def fetch(workdir):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir),
         "names-dataset==3.3.1", "gender-guesser==0.4.0"],
        check=True,
    )
    for wheel in workdir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(workdir / "unpacked")
    return workdir / "unpacked"


def latin_name(name):
    """Letters of the Latin script (apostrophe and hyphen inside), at most a third of them
    outside ASCII (the source has noise such as 'ābđïńhø')."""
    letters = [c for c in name if c.isalpha()]
    if len(letters) < 2 or not all(c.isalpha() or c in "'-" for c in name):
        return False
    if name[0] in "'-" or name[-1] in "'-":
        return False
    if not all("LATIN" in unicodedata.name(c, "") for c in letters):
        return False
    return sum(not c.isascii() for c in letters) * 3 <= len(letters)


def ranked(pickled):
    names = pickle.load(gzip.open(pickled))
    for name, info in names.items():
        ranks = [r for r in (info.get("rank") or {}).values() if r is not None]
        if ranks and min(ranks) <= TOP_PER_COUNTRY and " " not in name:
            yield unicodedata.normalize("NFC", name).lower()


def curated_first_names(nam_dict):
    names = set()
    for line in nam_dict.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or len(line) < 30 or line[:2].strip() not in {"M", "F", "?", "1M", "1F", "?M", "?F"}:
            continue
        name = line[3:29].strip()
        if "+" in name or "<" in name:
            continue
        names.add(unicodedata.normalize("NFC", name).lower())
    return names


def main():
    try:
        import wordfreq
    except ImportError:
        venv = Path(tempfile.mkdtemp()) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "-q", "install", "wordfreq==3.1.1"], check=True)
        os.execv(str(venv / "bin/python"), [str(venv / "bin/python"), *sys.argv])
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = fetch(Path(tmp))
        curated = curated_first_names(unpacked / "gender_guesser/data/nam_dict.txt")
        first = set(ranked(unpacked / "names_dataset/v3/first_names.pkl.gz")) | curated
        last = set(ranked(unpacked / "names_dataset/v3/last_names.pkl.gz"))

    def keep(name, vouched):
        if not latin_name(name) or name in NOT_NAMES:
            return False
        frequency = wordfreq.zipf_frequency(name, "en")
        return frequency < COMMON or (vouched and frequency < VERY_COMMON)

    first_names = sorted(n for n in first if keep(n, n in curated))
    surnames = sorted(n for n in last if keep(n, False))
    # A capitalised word on this list is an ordinary word, not a name, unless a name list has it.
    # Apostrophes only in contractions (`don't`): `o'connell` is a name, not a word.
    contraction = ("n't", "'s", "'re", "'ll", "'ve", "'d", "'m")
    english = sorted(
        {
            w
            for w in wordfreq.top_n_list("en", ENGLISH_WORDS)
            if w.replace("'", "").isalpha() and w.isascii() and ("'" not in w or w.endswith(contraction))
        }
    )
    lists = [("world_first_names.txt", first_names), ("world_surnames.txt", surnames), ("english_words.txt", english)]
    for path, names in lists:
        (DATA / path).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        print(f"{path}: {len(names)} entries, {(DATA / path).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
