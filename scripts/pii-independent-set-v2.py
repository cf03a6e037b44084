#!/usr/bin/env python3
"""Generates an independent labeled PII evaluation set from Faker. Deterministic.

    python3 scripts/pii-independent-set-v2.py [--out DIR]

Writes (DIR defaults to tests/fixtures/pii-independent-v2)
  DIR/dev.jsonl    for looking at failures while tuning
  DIR/test.jsonl   for reporting only
  DIR/README.md    provenance, conventions and counts

The set shares no code, templates or name lists with scripts/pii-labeled-set.py (which also writes
the detector's census name lists). Names, addresses, companies, e-mail domains, phone numbers,
IBANs, card numbers, SSNs and IPs come from the PyPI package Faker (MIT licence), pinned below;
phone numbers are checked with phonenumbers (Apache-2.0), also pinned. If either is missing or has
another version, the script makes a venv in a temporary folder, installs the pinned versions there
and re-runs itself, so the output is identical on every machine.
"""

import atexit
import datetime
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "pii-independent-v2"
SCRIPT = Path(__file__).resolve().relative_to(ROOT).as_posix() if Path(__file__).resolve().is_relative_to(ROOT) else Path(__file__).name

FAKER_VERSION = "40.54.0"
PHONENUMBERS_VERSION = "9.0.43"
PINNED = [f"faker=={FAKER_VERSION}", f"phonenumbers=={PHONENUMBERS_VERSION}"]
SPLITS = [("dev", 410_771), ("test", 902_113), ("holdout", 517_203)]  # (name, seed), drawn in this order
# `holdout` was added on 2026-12-06 after the test split's mistakes had been read once: only its totals
# are ever looked at.
N_TEXTS = 1000
N_NEGATIVE = 150  # texts without any PII (15 %)
GENRES = ["support_email", "chat", "hr_note", "invoice", "it_ticket"]
TYPES = ["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "URL_CREDENTIALS", "URL", "DOB", "PERSON", "ADDRESS"]
BOOT_ENV = "PII_INDEPENDENT_SET_VENV"


# ----------------------------------------------------------------------------------------------
# bootstrap: faker + phonenumbers at the pinned versions
# ----------------------------------------------------------------------------------------------


def ensure_hash_seed():
    """Some Faker providers draw from sets of strings, whose order depends on the hash seed: pin it."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def ensure_deps():
    try:
        import faker
        import phonenumbers

        if faker.VERSION == FAKER_VERSION and phonenumbers.__version__ == PHONENUMBERS_VERSION:
            return
    except ImportError:
        pass
    if os.environ.get(BOOT_ENV):
        sys.exit(f"{' and '.join(PINNED)} still not importable after bootstrapping a venv")
    venv = Path(tempfile.mkdtemp(prefix="pii-independent-venv-"))  # removed by the re-run
    print(f"installing {' '.join(PINNED)} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PINNED], check=True)
    env = dict(os.environ, **{BOOT_ENV: str(venv)})
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ----------------------------------------------------------------------------------------------
# pieces: a text is built from plain strings and entity pieces, so offsets are exact
# ----------------------------------------------------------------------------------------------


class E:
    """An entity mention inside a text being built."""

    __slots__ = ("type", "value")

    def __init__(self, etype, value):
        assert etype in TYPES, etype
        assert value and value == value.strip(), (etype, value)
        self.type, self.value = etype, value


SLOT = re.compile(r"\{(\w+)\}")


def F(fmt, **slots):
    """Splits fmt at {name} slots; each slot is a str, an E or a (nested) list of pieces."""
    out, pos = [], 0
    for m in SLOT.finditer(fmt):
        out.append(fmt[pos:m.start()])
        out.append(slots[m.group(1)])
        pos = m.end()
    out.append(fmt[pos:])
    return out


def render(pieces):
    text, ents = [], []
    n = 0

    def walk(p):
        nonlocal n
        if p is None:
            return
        if isinstance(p, str):
            text.append(p)
            n += len(p)
        elif isinstance(p, E):
            ents.append({"type": p.type, "value": p.value, "start": n, "end": n + len(p.value)})
            text.append(p.value)
            n += len(p.value)
        else:
            for q in p:
                walk(q)

    walk(pieces)
    return "".join(text), ents


def lines(*parts):
    """Joins pieces with newlines, dropping None parts."""
    out = []
    for p in parts:
        if p is None:
            continue
        if out:
            out.append("\n")
        out.append(p)
    return out


# ----------------------------------------------------------------------------------------------
# validity checks
# ----------------------------------------------------------------------------------------------


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN length and BBAN shape per country (IBAN registry): n digits, a upper-case letters, c alnum
IBAN_SPECS = {
    "AT": "5n11n", "BE": "3n7n2n", "CH": "5n12c", "CZ": "4n6n10n", "DE": "8n10n", "DK": "4n9n1n",
    "ES": "4n4n1n1n10n", "FI": "3n11n", "FR": "5n5n11c2n", "GB": "4a6n8n", "GR": "3n4n16c",
    "IE": "4a6n8n", "IT": "1a5n5n12c", "NL": "4a10n", "NO": "4n6n1n", "PL": "8n16n", "PT": "4n4n11n2n",
    "RO": "4a16c", "SK": "4n6n10n", "TR": "5n1n16c", "BR": "8n5n10n1a1c",
}


def iban_shape_re(cc):
    cls = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}
    return re.compile("^" + cc + "[0-9]{2}" + "".join(f"{cls[k]}{{{n}}}" for n, k in
                                                    re.findall(r"(\d+)([nac])", IBAN_SPECS[cc])) + "$")


def iban_mod97(compact):
    s = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in s)) % 97 == 1


def iban_valid(value):
    compact = value.replace(" ", "")
    cc = compact[:2]
    return cc in IBAN_SPECS and bool(iban_shape_re(cc).match(compact)) and iban_mod97(compact)


def ssn_valid(digits):
    a, g, s = digits[:3], digits[3:5], digits[5:]
    return len(digits) == 9 and a not in ("000", "666") and a[0] != "9" and g != "00" and s != "0000"


def phone_valid(value, region):
    import phonenumbers as pn

    try:
        num = pn.parse(value, region)
    except pn.NumberParseException:
        return False
    return pn.is_valid_number(num) and pn.region_code_for_number(num) == region


# ----------------------------------------------------------------------------------------------
# locales
# ----------------------------------------------------------------------------------------------

# (locale, weight) for person names. All give Latin-script names (ja_JP/zh_CN/zh_TW via Faker's
# romanized providers). Faker has no Latin forms for ru_RU, uk_UA, he_IL, ar_*, el_GR: not used.
NAME_LOCALES = [
    ("en_US", 7), ("en_GB", 5), ("en_AU", 2), ("en_CA", 1), ("en_IN", 5), ("en_IE", 1), ("ga_IE", 2), ("en_NG", 1), ("ig_NG", 1),
    ("yo_NG", 1), ("ha_NG", 1), ("en_KE", 1), ("zu_ZA", 1), ("de_DE", 5), ("de_AT", 2), ("de_CH", 2),
    ("fr_FR", 5), ("fr_CA", 1), ("es_ES", 4), ("es_MX", 3), ("es_AR", 1), ("es_CO", 1), ("it_IT", 4),
    ("pt_BR", 4), ("pt_PT", 2), ("nl_NL", 4), ("pl_PL", 4), ("sv_SE", 3), ("da_DK", 3), ("no_NO", 2),
    ("fi_FI", 3), ("is_IS", 1), ("tr_TR", 4), ("az_AZ", 1), ("cs_CZ", 3), ("sk_SK", 2), ("hu_HU", 3),
    ("ro_RO", 3), ("hr_HR", 2), ("sl_SI", 1), ("lt_LT", 1), ("lv_LV", 1), ("et_EE", 1), ("vi_VN", 3),
    ("id_ID", 3), ("ja_JP", 3), ("zh_CN", 3), ("zh_TW", 1),
]

# (ISO region, Faker locale) for phone numbers
PHONE_COUNTRIES = [
    ("US", "en_US"), ("GB", "en_GB"), ("DE", "de_DE"), ("FR", "fr_FR"), ("ES", "es_ES"), ("IT", "it_IT"),
    ("NL", "nl_NL"), ("IN", "en_IN"), ("BR", "pt_BR"), ("AU", "en_AU"), ("PL", "pl_PL"), ("SE", "sv_SE"),
    ("JP", "ja_JP"), ("MX", "es_MX"), ("CA", "en_CA"), ("CH", "de_CH"), ("AT", "de_AT"), ("DK", "da_DK"),
    ("FI", "fi_FI"), ("NO", "no_NO"), ("CZ", "cs_CZ"), ("RO", "ro_RO"), ("PT", "pt_PT"), ("ID", "id_ID"),
    ("TR", "tr_TR"), ("CN", "zh_CN"), ("HU", "hu_HU"), ("VN", "vi_VN"),
]
PHONE_REGIONS = [r for r, _ in PHONE_COUNTRIES]
LOCALE_PHONE = {loc: r for r, loc in PHONE_COUNTRIES}
LOCALE_PHONE.update({"en_IE": None, "de_AT": "AT", "de_CH": "CH", "es_AR": None, "fr_CA": "CA"})
EXT_REGIONS = {"US", "CA", "GB", "AU", "IN", "MX", "DE", "NL"}

# address styles: locale -> country names that may follow the address
ADDRESS_LOCALES = {
    "en_US": ["USA", "United States"], "en_GB": ["United Kingdom", "UK"], "de_DE": ["Germany", "Deutschland"],
    "fr_FR": ["France"], "es_ES": ["Spain", "España"], "it_IT": ["Italy", "Italia"],
    "nl_NL": ["Netherlands", "The Netherlands", "Nederland"], "pl_PL": ["Poland", "Polska"],
    "en_AU": ["Australia"], "en_CA": ["Canada"],
}
NAME_TO_ADDRESS = {"en_US": "en_US", "en_GB": "en_GB", "de_DE": "de_DE", "de_AT": "de_DE", "fr_FR": "fr_FR",
                   "es_ES": "es_ES", "it_IT": "it_IT", "nl_NL": "nl_NL", "pl_PL": "pl_PL", "fr_CA": "en_CA"}

IBAN_LOCALES = ["de_DE", "en_GB", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT", "de_AT", "de_CH",
                "fi_FI", "da_DK", "no_NO", "cs_CZ", "ro_RO", "tr_TR", "en_IE", "nl_BE", "sk_SK", "el_GR"]
COMPANY_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "sv_SE",
                   "da_DK", "fi_FI", "cs_CZ", "en_AU", "es_MX"]
CITY_LOCALES = ["de_DE", "fr_FR", "it_IT", "pl_PL", "es_ES", "nl_NL", "pt_BR", "cs_CZ", "hu_HU", "ro_RO"]
STREET_LOCALES = ["de_DE", "en_GB", "fr_FR", "pl_PL", "nl_NL", "it_IT", "es_ES"]

TITLES_EN = {"m": ["Mr", "Mr."], "f": ["Ms", "Ms.", "Mrs", "Mrs."], "x": ["Dr", "Dr.", "Prof.", "Mx"]}
TITLES_LOCAL = {
    "de": {"m": ["Herr"], "f": ["Frau"], "x": ["Dr.", "Herr Dr.", "Frau Dr."]},
    "fr": {"m": ["M.", "Monsieur"], "f": ["Mme", "Madame"], "x": ["Dr"]},
    "es": {"m": ["Sr.", "Señor"], "f": ["Sra.", "Señora"], "x": ["Dr."]},
    "it": {"m": ["Sig.", "Signor"], "f": ["Sig.ra", "Signora"], "x": ["Dott.", "Avv."]},
    "pt": {"m": ["Sr."], "f": ["Sra."], "x": ["Dr."]},
    "nl": {"m": ["dhr.", "meneer"], "f": ["mevr.", "mevrouw"], "x": ["dr."]},
    "pl": {"m": ["Pan"], "f": ["Pani"], "x": ["dr"]},
}
LATIN_EXTRA = set(" -'’.")


def is_latin_name(s):
    if not s or not s[0].isalpha():
        return False
    for ch in s:
        if ch in LATIN_EXTRA:
            continue
        if not ch.isalpha() or "LATIN" not in unicodedata.name(ch, ""):
            return False
    return "." not in s and "  " not in s


FOLD = str.maketrans({"ø": "o", "Ø": "O", "ß": "ss", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i",
                      "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D",
                      "ə": "e", "Ə": "E"})


def ascii_fold(s):
    s = unicodedata.normalize("NFKD", s.translate(FOLD))
    return "".join(ch for ch in s if not unicodedata.combining(ch)).encode("ascii", "ignore").decode()


def slug(s, sep="-"):
    return re.sub(r"[^a-z0-9]+", sep, ascii_fold(s).lower()).strip(sep)


CURRENCIES = ["$", "€", "£", "EUR", "USD", "CHF", "zł", "SEK"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(d):
    return f"{d}{'th' if 11 <= d % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def fmt_date(r, y, m, d, style=None):
    styles = ["d Month yyyy", "Month d, yyyy", "Mon d, yyyy", "dth Month yyyy", "yyyy-mm-dd", "mm/dd/yyyy",
              "dd/mm/yyyy", "dd.mm.yyyy", "d.m.yyyy", "dd-Mon-yyyy", "d Mon yyyy"]
    style = style or r.choice(styles)
    mon = MONTHS[m - 1]
    return {
        "d Month yyyy": f"{d} {mon} {y}", "Month d, yyyy": f"{mon} {d}, {y}", "Mon d, yyyy": f"{mon[:3]} {d}, {y}",
        "dth Month yyyy": f"{ordinal(d)} {mon} {y}", "yyyy-mm-dd": f"{y}-{m:02d}-{d:02d}",
        "mm/dd/yyyy": f"{m:02d}/{d:02d}/{y}", "dd/mm/yyyy": f"{d:02d}/{m:02d}/{y}",
        "dd.mm.yyyy": f"{d:02d}.{m:02d}.{y}", "d.m.yyyy": f"{d}.{m}.{y}", "dd-Mon-yyyy": f"{d:02d}-{mon[:3]}-{y}",
        "d Mon yyyy": f"{d} {mon[:3]} {y}",
    }[style]


class Person:
    def __init__(self, first, last, full, loc, gender):
        self.first, self.last, self.full, self.loc, self.gender = first, last, full, loc, gender

    @property
    def lang(self):
        return self.loc.split("_")[0]


# ----------------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------------


class Gen:
    def __init__(self, seed):
        from faker import Faker

        self.seed = seed
        self.r = random.Random(seed)
        self._fakers = {}
        self.Faker = Faker
        self.neg = Counter()  # hard-negative kinds in the record being built
        self.phone_info = []  # (region, form, cue) of the record being built
        self.name_locales = [loc for loc, w in NAME_LOCALES for _ in range(w)]

    def fk(self, loc):
        f = self._fakers.get(loc)
        if f is None:
            f = self.Faker(loc)
            f.seed_instance(zlib.crc32(f"{self.seed}:{loc}".encode()))
            self._fakers[loc] = f
        return f

    def begin(self):
        self.neg = Counter()
        self.phone_info = []

    def ch(self, seq):
        return self.r.choice(seq)

    def pick(self, *alts):
        """Chooses one alternative; callables are called only when chosen (so only used values count)."""
        a = self.r.choice(alts)
        return a() if callable(a) else a

    def p(self, prob):
        return self.r.random() < prob

    def digits(self, n):
        return "".join(self.ch("0123456789") for _ in range(n))

    # ---- people ------------------------------------------------------------------------------

    def person(self, loc=None):
        loc = loc or self.ch(self.name_locales)
        f = self.fk(loc)
        for _ in range(50):
            gender = self.ch("mf")
            if loc == "ja_JP":
                first = f.first_romanized_name_male() if gender == "m" else f.first_romanized_name_female()
                last = f.last_romanized_name()
            elif loc == "zh_TW":
                first = f.first_romanized_name_male() if gender == "m" else f.first_romanized_name_female()
                first, last = first.title(), f.last_romanized_name().title()
            elif loc == "zh_CN":
                first, last = f.first_romanized_name(), f.last_romanized_name()
            else:
                first = (f.first_name_male() if gender == "m" else f.first_name_female()).strip()
                last = f.last_name().strip()
            if not (is_latin_name(first) and is_latin_name(last)) or first == last:
                continue
            if len(first) < 2 or len(last) < 2:
                continue
            full = f"{first} {last}"
            if loc == "vi_VN":
                mid = f.middle_name()
                full = f"{last} {mid} {first}" if self.p(0.7) else f"{last} {first}"
            elif loc == "zh_CN" and self.p(0.5):
                full = f"{last} {first}"
            elif loc == "hu_HU" and self.p(0.4):
                full = f"{last} {first}"
            elif loc in ("es_ES", "es_MX", "es_CO") and self.p(0.4):
                last2 = f.last_name().strip()
                if is_latin_name(last2) and last2 != last:
                    last = f"{last} {last2}"
                    full = f"{first} {last}"
            if not is_latin_name(full):
                continue
            return Person(first, last, full, loc, gender)
        raise RuntimeError(f"no usable name from {loc}")

    def surname_form(self, p):
        last = p.last
        if p.loc.startswith("nl_") and last[0].islower():  # "van Vliet" -> "mevrouw Van Vliet"
            last = last[0].upper() + last[1:]
        return last

    def titled(self, p, english=None):
        """Title + surname; the value excludes the title."""
        if p.loc == "tr_TR" and self.p(0.5):
            return [E("PERSON", p.first), " Bey" if p.gender == "m" else " Hanım"]
        if p.loc == "ja_JP" and self.p(0.5):
            return [E("PERSON", p.last), "-san"]
        if english is None:
            english = not self.p(0.6)
        english = english or p.lang not in TITLES_LOCAL
        table = TITLES_EN if english else TITLES_LOCAL[p.lang]
        title = self.ch(table[p.gender] if self.p(0.85) else table["x"])
        return [title + " ", E("PERSON", self.surname_form(p))]

    def name(self, p, form=None):
        """A mention: full name, first name, or title + surname."""
        form = form or self.ch(["full", "full", "first", "titled"])
        if form == "full":
            return E("PERSON", p.full)
        if form == "first":
            return E("PERSON", p.first)
        return self.titled(p)

    def poss(self, p, form="full"):
        return [self.name(p, form), "'s"]

    # ---- contact data -----------------------------------------------------------------------

    def email_for(self, p=None, domain=None):
        f = self.fk(p.loc if p and p.loc in ("de_DE", "fr_FR", "pl_PL", "it_IT", "es_ES", "nl_NL", "pt_BR",
                                               "cs_CZ", "en_GB", "en_IN") else "en_US")
        if p is None or self.p(0.2):
            addr = self.ch([f.email, f.free_email, f.company_email, f.ascii_email])()
        else:
            fi, la = slug(p.first, ""), slug(p.last.split()[-1] if " " in p.last else p.last, "")
            la = la or slug(p.last, "")
            local = self.ch([f"{fi}.{la}", f"{fi[0]}.{la}", f"{fi}{la[0]}", f"{fi}_{la}", f"{la}.{fi}",
                             f"{fi}{self.r.randint(1, 99)}", f"{fi[0]}{la}{self.r.randint(10, 1999)}",
                             f"{fi}.{la}+{self.ch(['orders', 'billing', 'shop', 'news', 'work'])}"])
            domain = domain or self.ch([f.free_email_domain(), f.free_email_domain(), f.domain_name()])
            addr = f"{local}@{domain}"
        addr = addr.lower()
        assert re.fullmatch(r"[a-z0-9._+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+", addr), addr
        return E("EMAIL", addr)

    def phone_value(self, region=None, form=None, ext=None):
        import phonenumbers as pn

        region = region or self.ch(PHONE_REGIONS)
        loc = dict(PHONE_COUNTRIES)[region]
        f = self.fk(loc)
        form = form or self.ch(["national"] * 5 + ["intl"] * 4 + ["e164"])
        for _ in range(400):
            raw = f.phone_number().strip()
            if not phone_valid(raw, region):
                continue
            is_intl = bool(re.match(r"^\(?(\+|00)", raw))
            num = pn.parse(raw, region)
            if form == "national":
                if is_intl:
                    continue
                value = raw
            elif form == "intl":
                if is_intl and "x" not in raw:
                    value = raw
                elif not is_intl and self.p(0.5):
                    value = pn.format_number(num, pn.PhoneNumberFormat.INTERNATIONAL)
                else:
                    continue
            else:
                num.extension = None
                value = pn.format_number(num, pn.PhoneNumberFormat.E164)
            break
        else:
            if form == "national":  # some locales (es_ES, cs_CZ) only give international forms
                return self.phone_value(region, "intl", ext)
            raise RuntimeError(f"no valid {form} phone for {region}")
        has_ext = bool(re.search(r"(?i)(x|ext)", value))
        if ext is None:
            ext = region in EXT_REGIONS and self.p(0.2)
        if ext and not has_ext:
            value += self.ch([" ext. ", " ext ", " x", " x", " extension ", ", ext. "]) + str(self.r.randint(2, 9999))
            has_ext = True
        assert phone_valid(value, region), (value, region)
        if has_ext:
            assert pn.parse(value, region).extension, value
        self.phone_info.append([region, "intl" if value.startswith(("+", "00", "(+")) else "national", has_ext, None])
        return E("PHONE", value)

    def phone_for(self, p=None, **kw):
        region = None
        if p is not None and self.p(0.65):
            region = LOCALE_PHONE.get(p.loc)
        return self.phone_value(region, **kw)

    def phone_cued(self, e, style="inline"):
        """Wraps a phone entity; 65 % with a cue word right before it."""
        cue = self.p(0.65)
        self.phone_info[-1][3] = cue
        if style == "sig":
            if cue:
                return [self.ch(["Tel: ", "Tel. ", "Mobile: ", "M: ", "T: ", "Phone: ", "Direct line: ", "Cell: ",
                                 "Mob. "]), e]
            return [e]
        if style == "field":
            if cue:
                return [self.ch(["phone ", "mobile ", "tel. ", "cell ", "phone: "]), e]
            return [e]
        if cue:
            return F(self.ch(["call me at {p}", "you can reach me on {p}", "my mobile is {p}", "my phone number is {p}",
                              "please ring {p}", "text me at {p}", "phone: {p}", "WhatsApp {p}", "call {p}",
                              "my cell is {p}", "tel. {p}"]), p=e)
        return F(self.ch(["I'm on {p} all day", "{p} works until 6 pm", "I'm usually at {p} in the mornings",
                          "{p} is the best way to get me", "I'm at {p} until Friday"]), p=e)

    def address(self, loc=None, multiline=None, country=None):
        loc = loc or self.ch(list(ADDRESS_LOCALES))
        f = self.fk(loc)
        for _ in range(50):
            parts = [ln.strip() for ln in f.address().split("\n") if ln.strip()]
            if not re.search(r"\d", parts[0]) and not (loc == "en_GB" and len(parts) > 1 and re.search(r"\d", parts[1])):
                continue
            if re.match(r"^(USNS|USS|USNV|USCGC|PSC|Unit \d+ Box)\b", parts[0]):
                continue
            if loc == "nl_NL" and len(parts) == 3:  # "5907JO" / "Hasselt" -> "5907 JO Hasselt"
                pc = parts[1] if " " in parts[1] else parts[1][:4] + " " + parts[1][4:]
                parts = [parts[0], f"{pc} {parts[2]}"]
            break
        else:
            raise RuntimeError(f"no address for {loc}")
        multiline = self.p(0.5) if multiline is None else multiline
        if country is None:
            country = self.p(0.35)
        if country:
            parts.append(self.ch(ADDRESS_LOCALES[loc]))
        value = ("\n" if multiline else ", ").join(parts)
        return E("ADDRESS", value)

    def address_for(self, p, **kw):
        loc = NAME_TO_ADDRESS.get(p.loc) if p is not None and self.p(0.6) else None
        return self.address(loc, **kw)

    # ---- other PII -------------------------------------------------------------------------

    def card(self):
        f = self.fk("en_US")
        while True:
            kind = self.ch(["visa16", "visa16", "visa13", "visa19", "mastercard", "mastercard", "amex", "discover",
                            "jcb16", "jcb15", "diners"])
            d = f.credit_card_number(kind)
            if d.isdigit() and 13 <= len(d) <= 19 and luhn_ok(d):
                break
        style = self.ch(["compact", "space", "space", "dash"])
        if style == "compact":
            v = d
        elif len(d) == 15 and d[:2] in ("34", "37"):
            v = " ".join([d[:4], d[4:10], d[10:]]) if style == "space" else "-".join([d[:4], d[4:10], d[10:]])
        else:
            v = (" " if style == "space" else "-").join(d[i:i + 4] for i in range(0, len(d), 4))
        return E("CARD", v)

    def iban(self, loc=None):
        loc = loc or self.ch(IBAN_LOCALES)
        f = self.fk(loc)
        for _ in range(50):
            v = f.iban()
            if iban_valid(v) and v[:2] != "GB" or loc in ("en_GB",) and iban_valid(v):
                break
        else:
            raise RuntimeError(f"no valid IBAN for {loc}")
        if self.p(0.5):
            v = " ".join(v[i:i + 4] for i in range(0, len(v), 4))
        return E("IBAN", v)

    def ssn(self):
        f = self.fk("en_US")
        while True:
            v = f.ssn()
            d = v.replace("-", "")
            if ssn_valid(d):
                break
        style = self.ch(["dash", "dash", "space", "compact"])
        v = {"dash": f"{d[:3]}-{d[3:5]}-{d[5:]}", "space": f"{d[:3]} {d[3:5]} {d[5:]}", "compact": d}[style]
        cue = self.ch(["SSN ", "SSN: ", "SSN# ", "social security number ", "Social Security No. ",
                       "social security number: ", "SSN is "])
        return [cue, E("SSN", v)]

    def ip(self, kind=None):
        f = self.fk("en_US")
        kind = kind or self.ch(["public", "public", "private", "private", "v6"])
        if kind == "public":
            v = f.ipv4_public()
        elif kind == "private":
            v = f.ipv4_private()
        else:
            v = f.ipv6()
            if self.p(0.6):
                v = str(ipaddress.IPv6Address(v))
        return E("IP", v)

    def password(self):
        f = self.fk("en_US")
        pw = f.password(length=self.r.randint(8, 16), special_chars=False)
        if self.p(0.5):
            i = self.r.randint(1, len(pw) - 1)
            pw = pw[:i] + self.ch("!_-.~*$") + pw[i:]
        return pw

    def hostname(self):
        f = self.fk(self.ch(["en_US", "de_DE", "en_GB"]))
        return self.ch([f.hostname(), f.hostname(),
                        f"{self.ch(['db', 'api', 'web', 'cache', 'mq', 'build', 'vpn', 'mail'])}-"
                        f"{self.ch(['prod', 'stg', 'dev', 'eu', 'us'])}-{self.r.randint(1, 24):02d}."
                        f"{self.ch(['internal', 'corp.local', 'lan', 'int.' + f.domain_name()])}"])

    def url_credentials(self):
        f = self.fk("en_US")
        scheme, port, path = self.ch([
            ("https", "", "/api/v1/export"), ("http", ":8080", "/admin"), ("ftp", "", "/outgoing/"),
            ("sftp", ":22", "/home/reports"), ("postgres", ":5432", "/orders"), ("postgresql", ":5432", "/crm"),
            ("mysql", ":3306", "/billing"), ("mongodb", ":27017", "/events?authSource=admin"),
            ("redis", ":6379", "/0"), ("amqp", ":5672", "/vhost"), ("smtp", ":587", ""),
            ("https", "", "/repo/private.git"), ("https", ":8443", "/nexus/repository/releases/")])
        user = self.ch([f.user_name(), f.user_name(), "svc_" + f.word(), "admin", "deploy", "backup", "root",
                        "readonly"])
        host = self.ch([self.hostname(), self.hostname(), f.ipv4_private()])
        return E("URL_CREDENTIALS", f"{scheme}://{user}:{self.password()}@{host}{port}{path}")

    def url_person(self, p=None, site=None):
        f = self.fk("en_US")
        p = p or self.person()
        fi, la = slug(p.first), slug(p.last)
        un = self.ch([f.user_name(), f"{fi}{la}", f"{fi}.{la}".replace("-", ""), f"{fi[:1]}{la}{self.r.randint(1, 99)}",
                      f"{fi}_{la}"]).replace("-", "")
        uid = self.r.randint(1000, 9_999_999)
        dom = f.domain_name()
        if site == "linkedin":
            return E("URL", self.ch([f"https://www.linkedin.com/in/{fi}-{la}-{self.r.getrandbits(24):06x}",
                                     f"https://www.linkedin.com/in/{fi}-{la}/", f"https://linkedin.com/in/{un}"]))
        v = self.ch([
            f"https://www.linkedin.com/in/{fi}-{la}-{self.r.getrandbits(24):06x}",
            f"https://www.linkedin.com/in/{fi}-{la}/", f"https://linkedin.com/in/{un}",
            f"https://github.com/{un}", f"https://gitlab.com/{un}", f"https://twitter.com/{un}",
            f"https://x.com/{un}", f"https://www.instagram.com/{un}/", f"https://www.facebook.com/{fi}.{la}.{uid}",
            f"https://{dom}/users/{uid}", f"https://crm.{dom}/contacts?id={uid}&name={fi}.{la}",
            f"https://admin.{dom}/customers/{uid}/edit", f"https://mastodon.social/@{un}",
            f"https://medium.com/@{un}", f"https://stackoverflow.com/users/{uid}/{fi}-{la}",
            f"https://calendly.com/{fi}-{la}/30min", f"https://www.{dom}/team/{fi}-{la}",
            f"https://portal.{dom}/account?user_id={uid}", f"https://www.xing.com/profile/{ascii_fold(p.first).replace(' ', '_')}_{ascii_fold(p.last).replace(' ', '_')}",
            f"https://{dom}/profile.php?uid={uid}", f"https://helpdesk.{dom}/agents/{uid}",
        ])
        return E("URL", v)

    def dob(self):
        y, m, d = self.r.randint(1944, 2006), self.r.randint(1, 12), self.r.randint(1, 28)
        return E("DOB", fmt_date(self.r, y, m, d))

    def dob_cued(self):
        return F(self.ch(["born on {d}", "date of birth {d}", "DOB: {d}", "DOB {d}", "D.O.B. {d}", "born {d}",
                          "birth date {d}", "date of birth is {d}", "birthdate: {d}"]), d=self.dob())

    # ---- hard negatives (never labeled) ----------------------------------------------------

    def n(self, kind, value):
        self.neg[kind] += 1
        return value

    def company(self):
        f = self.fk(self.ch(COMPANY_LOCALES))
        return self.n("company name", f.company())

    def domain(self):
        return self.fk(self.ch(["en_US", "de_DE", "fr_FR", "en_GB", "nl_NL"])).domain_name()

    def product(self):
        return self.n("product name", self.ch([
            "Nimbus X3 router", "Kestrel 14 laptop", "Aurora Pro headset", "Lumen desk lamp", "Fjord backpack",
            "Pulse smartwatch", "Orbit webcam", "Cirrus Cloud Backup", "Halcyon espresso machine", "Vega 2 tablet",
            "Strata standing desk", "Quill e-reader", "Tundra sleeping bag", "Boreal air purifier", "Mistral fan",
            "Sable office chair", "Polaris dashcam", "Zenith monitor arm", "Harbor Suite licence",
            "Atlas Premium plan", "Morgan leather bag", "Victoria sofa bed", "Jordan 4 sneakers"]))

    def day(self, after=None, lo=1, hi=60):
        """A calendar day in 2022-2026, or lo..hi days after `after`."""
        if after is not None:
            return after + datetime.timedelta(days=self.r.randint(lo, hi))
        return datetime.date(2022, 1, 1) + datetime.timedelta(days=self.r.randint(0, 5 * 365))

    def date(self, style=None, day=None):
        day = day or self.day()
        return self.n("date (not a birth date)", fmt_date(self.r, day.year, day.month, day.day, style))

    def weekday_of(self, day):
        return self.n("month or weekday", WEEKDAYS[day.weekday()])

    def month(self):
        return self.n("month or weekday", self.ch(MONTHS))

    def weekday(self):
        return self.n("month or weekday", self.ch(WEEKDAYS))

    def city(self):
        return self.n("city alone", self.fk(self.ch(CITY_LOCALES)).city())

    def street(self):
        return self.n("street name without number", self.fk(self.ch(STREET_LOCALES)).street_name())

    def money(self, amt=None, cur=None):
        if amt is None:
            amt = self.r.randint(5, 4000) + self.r.randint(0, 99) / 100
        cur = cur or self.ch(CURRENCIES)
        s = f"{amt:,.2f}"
        v = {"$": f"${s}", "€": f"€{s}", "£": f"£{s}", "EUR": f"{s.replace(',', ' ').replace('.', ',')} EUR",
             "USD": f"USD {s}", "CHF": f"CHF {s}", "zł": f"{s.replace(',', ' ').replace('.', ',')} zł",
             "SEK": f"{s.replace(',', ' ').replace('.', ',')} SEK"}[cur]
        return self.n("amount", v)

    def order_id(self):
        y = self.r.randint(2022, 2026)
        return self.n("order/invoice/ticket id", self.ch([
            f"ORD-{y}-{self.digits(6)}", f"#{self.r.randint(10_000, 999_999)}", f"A{self.digits(2)}-{self.digits(5)}",
            f"{self.digits(3)}-{self.digits(7)}-{self.digits(7)}", f"SO{self.digits(8)}", f"WEB-{self.digits(5)}"]))

    def invoice_id(self):
        y = self.r.randint(2022, 2026)
        return self.n("order/invoice/ticket id", self.ch([
            f"INV-{y}-{self.digits(5)}", f"{y}/{self.digits(4)}", f"RE-{self.digits(6)}", f"F{self.digits(7)}",
            f"INV{y}{self.digits(4)}"]))

    def ticket_id(self):
        return self.n("order/invoice/ticket id", self.ch([
            f"INC{self.digits(7)}", f"SR-{self.digits(5)}", f"HD-{self.digits(4)}", f"OPS-{self.digits(4)}",
            f"REQ{self.digits(6)}", f"CASE-{self.digits(6)}"]))

    def employee_id(self):
        return self.n("employee id", self.ch([f"E-{self.digits(5)}", f"EMP{self.digits(6)}", f"HR-{self.digits(4)}",
                                                 f"P{self.digits(5)}"]))

    def version(self):
        a, b, c = self.r.randint(1, 24), self.r.randint(0, 40), self.r.randint(0, 300)
        return self.n("version number", self.ch([
            f"v{a}.{b}.{c}", f"{a}.{b}.{c}", f"5.15.0-{self.r.randint(50, 130)}-generic",
            f"10.0.{self.r.randint(17000, 26100)}.{self.r.randint(1000, 4000)}",
            f"Chrome/{self.r.randint(110, 131)}.0.{self.r.randint(5000, 6999)}.{self.r.randint(10, 250)}",
            f"build {self.r.randint(2022, 2026)}.{self.r.randint(1, 12):02d}.{self.r.randint(1, 9)}",
            f"{a}.{b}.{c}-rc{self.r.randint(1, 5)}", f"OpenSSL 3.{self.r.randint(0, 3)}.{self.r.randint(0, 15)}"]))

    def doc_url(self, kind=None):
        dom = self.domain()
        kinds = {
            "docs": lambda: f"https://docs.{dom}/api/v{self.r.randint(1, 4)}/"
                            f"{self.ch(['errors', 'authentication', 'webhooks', 'rate-limits'])}",
            "status": lambda: self.ch([f"https://status.{dom}/", f"https://status.{dom}/incidents/{self.digits(6)}"]),
            "article": lambda: f"https://support.{dom}/hc/en-us/articles/{self.digits(9)}-"
                               f"{self.ch(['Resetting-your-device', 'Returns-policy', 'Updating-billing-details'])}",
            "blog": lambda: f"https://{dom}/blog/{self.r.randint(2022, 2026)}/{self.r.randint(1, 12):02d}/"
                            f"{self.ch(['release-notes', 'new-pricing', 'security-update'])}",
            "download": lambda: f"https://downloads.{dom}/agent/{self.r.randint(1, 9)}.{self.r.randint(0, 20)}/setup.exe",
            "home": lambda: self.ch([f"https://www.{dom}/", f"www.{dom}", f"https://{dom}/contact"]),
            "pricing": lambda: f"https://www.{dom}/pricing",
            "terms": lambda: f"https://www.{dom}/terms",
            "careers": lambda: f"https://www.{dom}/careers/jobs/{self.digits(5)}-data-engineer",
            "intranet": lambda: f"https://intranet.{dom}/hr/policies/{self.ch(['parental-leave', 'expenses', 'remote-work'])}",
            "runbook": lambda: f"https://wiki.{dom}/ops/runbooks/{self.ch(['tls-renewal', 'db-failover', 'disk-full'])}",
        }
        kind = kind or self.ch(list(kinds))
        return self.n("URL without personal data", kinds[kind]())

    def part_number(self):
        """SSN-shaped but never issued: area 000/666/9xx, group 00 or serial 0000."""
        a = self.ch(["9" + self.digits(2), "666", "000", f"{self.r.randint(1, 899):03d}"])
        g = f"{self.r.randint(1, 99):02d}"
        s = f"{self.r.randint(1, 9999):04d}"
        if a[0] != "9" and a not in ("666", "000"):
            if self.p(0.5):
                g = "00"
            else:
                s = "0000"
        v = f"{a}-{g}-{s}"
        assert not ssn_valid(v.replace("-", ""))
        return self.n("SSN-shaped part/serial number (never-issued)", v)

    def loyalty_number(self):
        while True:
            d = self.ch("3456") + self.digits(15)
            if not luhn_ok(d):
                return self.n("card-like number failing Luhn", " ".join(d[i:i + 4] for i in range(0, 16, 4)) if self.p(0.5) else d)

    def card_tail(self):
        return self.n("card ending / expiry", self.ch([f"card ending in {self.digits(4)}", f"card ending {self.digits(4)}",
                                                         f"Visa •••• {self.digits(4)}", f"Mastercard ending {self.digits(4)}"]))

    def expiry(self):
        return self.n("card ending / expiry", f"{self.r.randint(1, 12):02d}/{self.r.randint(25, 31)}")

    def creditor_id(self):
        cc = self.ch(["DE", "NL", "AT", "FR"])
        nat = self.digits(11)
        chk = 98 - int("".join(str(int(c, 36)) for c in nat + cc + "00")) % 97
        v = f"{cc}{chk:02d}ZZZ{nat}"
        return self.n("SEPA creditor id / BIC / VAT id", v)

    def bic(self):
        f = self.fk(self.ch(["de_DE", "fr_FR", "nl_NL", "en_GB"]))
        return self.n("SEPA creditor id / BIC / VAT id", self.ch([f.swift8(), f.swift11()]))

    def vat_id(self):
        return self.n("SEPA creditor id / BIC / VAT id", self.ch([
            f"DE{self.digits(9)}", f"FR{self.digits(2)}{self.digits(9)}", f"GB{self.digits(9)}", f"NL{self.digits(9)}B01",
            f"IT{self.digits(11)}", f"ESB{self.digits(8)}", f"PL{self.digits(10)}"]))

    def timestamp(self):
        return self.n("timestamp", f"{self.r.randint(2023, 2026)}-{self.r.randint(1, 12):02d}-{self.r.randint(1, 28):02d} "
                                   f"{self.r.randint(0, 23):02d}:{self.r.randint(0, 59):02d}:{self.r.randint(0, 59):02d}")

    def capword(self):
        """A sentence starting with a word that is a given name elsewhere."""
        return self.n("capitalised word that is a name elsewhere", self.ch([
            "Grace period is 14 days.", "Will do.", "May we close this request?", "Frank feedback is welcome.",
            "Bill me later is not available for this order.", "Hope that helps!", "Chase the courier if nothing arrives.",
            "Rich text is not supported in this field.", "Summer sale prices still apply.",
            "Mark this as resolved once confirmed.", "Art prints ship in a tube.", "Joy of the week: zero open tickets."]))


# ----------------------------------------------------------------------------------------------
# genres
# ----------------------------------------------------------------------------------------------

SIGNOFFS = ["Best regards,", "Kind regards,", "Thanks,", "Many thanks,", "Cheers,", "Best,", "Regards,",
            "Thank you,", "Warm regards,", "All the best,", "Viele Grüße,", "Cordialement,", "Saludos,"]
JOB_TITLES = ["Customer Success Manager", "Support Engineer", "Accounts Payable", "Office Manager",
              "Head of Operations", "Billing Specialist", "Senior Buyer", "Team Lead, Customer Care"]


def email_greeting(g, p):
    if p is None:
        return g.ch(["Hi team,", "Hello,", "Dear Sir or Madam,", "Dear Customer Support,", "Hi there,", "Good morning,"])
    return g.ch([
        F("Hi {n},", n=E("PERSON", p.first)), F("Hello {n},", n=E("PERSON", p.first)),
        F("Dear {n},", n=g.titled(p)), F("Dear {n},", n=E("PERSON", p.full)),
        F("Good morning {n},", n=E("PERSON", p.first)), F("Hi {n},", n=g.titled(p, english=True)),
        F("Hallo {n},", n=E("PERSON", p.first)) if p.lang == "de" else F("Hey {n},", n=E("PERSON", p.first)),
    ])


def signature(g, p, company=True, rich=None):
    """Sign-off + sender name on its own line, maybe with title/phone/company/url lines."""
    rich = g.p(0.5) if rich is None else rich
    if g.p(0.15):
        return [F("Thanks, {n}", n=E("PERSON", p.first))]
    out = [g.ch(SIGNOFFS), E("PERSON", p.full if g.p(0.7) else p.first)]
    if rich:
        if g.p(0.6):
            out.append(g.ch(JOB_TITLES))
        if company and g.p(0.7):
            out.append(g.company())
        if g.p(0.7):
            out.append(g.phone_cued(g.phone_for(p), "sig"))
        if g.p(0.3):
            out.append(g.email_for(p))
        if g.p(0.25):
            out.append(g.url_person(p))
        elif g.p(0.2):
            out.append(g.doc_url("home"))
    return out


def body_snippets_customer(g, me, agent):
    """Paragraphs a customer writes; each returns pieces."""
    s = [
        lambda: F("I ordered the {prod} on {d} (order {o}) and it still hasn't arrived. Could you check where it is?",
                  prod=g.product(), d=g.date(), o=g.order_id()),
        lambda: F("Please send the replacement to my new address instead:\n{a}\nThe old one is no longer valid.",
                  a=g.address_for(me, multiline=True)),
        lambda: F("Could you update the delivery address on my account to {a}? I moved last {m}.",
                  a=g.address_for(me, multiline=False), m=g.month()),
        lambda: F("For the refund, my bank account is {i} (account holder {n}).", i=g.iban(), n=E("PERSON", me.full)),
        lambda: F("I was charged twice on my card {c} for invoice {inv}. Please reverse one of the payments.",
                  c=g.card(), inv=g.invoice_id()),
        lambda: F("To verify my identity: {n}, {d}, registered e-mail {e}.", n=E("PERSON", me.full), d=g.dob_cued(),
                  e=g.email_for(me)),
        lambda: F("If it's easier to talk it through, {ph}.", ph=g.phone_cued(g.phone_for(me))),
        lambda: F("My colleague {c} will handle this while I'm away until {w}; you can write to {e}.",
                  c=g.name(g_tmp := g.person(), "full"), w=g.weekday(), e=g.email_for(g_tmp)),
        lambda: F("The courier left a note saying nobody was home, but I was in all {w}.", w=g.weekday()),
        lambda: F("I also noticed that the {prod} manual ({u}) mentions a different charger.", prod=g.product(),
                  u=g.doc_url(g.ch(["docs", "article"]))),
        lambda: F("You can see my reviews on my profile: {u}", u=g.url_person(me)),
        lambda: F("{agent} said on the phone last {w} that a credit note would follow, but I haven't received it.",
                  agent=g.name(agent, "first") if agent else "Your colleague", w=g.weekday()),
        lambda: F("Our accounts team at {co} pays by bank transfer only, to {i}.", co=g.company(), i=g.iban()),
        lambda: F("I don't want my card {c} stored any more, please delete it from my profile.", c=g.card()),
        lambda: F("The store on {st} in {city} told me to contact you directly.", st=g.street(), city=g.city()),
        lambda: F("If I'm out, my neighbour {n} ({ph}) has a key and can sign for it.", n=E("PERSON", (nb := g.person()).full),
                  ph=g.phone_for(nb)),
    ]
    return s


def body_snippets_agent(g, cust, me):
    return [
        lambda: F("Thank you for contacting us about order {o}. I'm sorry the {prod} arrived damaged.", o=g.order_id(),
                  prod=g.product()),
        lambda: F("I've updated the shipping address to {a} as requested.", a=g.address_for(cust, multiline=False)),
        lambda: F("We have refunded {amt} to the account ending in {t}; it should show within 3–5 business days.",
                  amt=g.money(), t=g.n("card ending / expiry", g.digits(4))),
        lambda: F("Before I can make changes, could you confirm the date of birth on the account? We have {d} on file.",
                  d=g.dob()),
        lambda: F("I have passed your request to {c} in our billing team, who will call you on {ph}.",
                  c=g.titled(g.person()), ph=g.phone_for(cust)),
        lambda: F("Our records show the e-mail address {e}. Is that still correct?", e=g.email_for(cust)),
        lambda: F("You can follow the status of the outage at {u}.", u=g.doc_url("status")),
        lambda: F("Your gift card {l} has a remaining balance of {amt}.", l=g.loyalty_number(), amt=g.money()),
        lambda: F("The {prod} is covered until {d}, so the repair is free of charge.", prod=g.product(), d=g.date()),
        lambda: F("{cap} The refund for invoice {inv} has been approved.", cap=g.capword(), inv=g.invoice_id()),
        lambda: F("Please don't send full card numbers by e-mail. I've removed {c} from our ticket for your safety.",
                  c=g.card()),
        lambda: F("I can see the account was opened by {n}, so I'll need their consent first.", n=g.name(g.person(), "full")),
    ]


def gen_support_email(g, positive=True):
    if not positive:
        return gen_support_email_neg(g)
    customer, agent = g.person(), g.person()
    if g.p(0.5):  # customer writes to support
        greet = email_greeting(g, agent if g.p(0.5) else None)
        pool = body_snippets_customer(g, customer, agent)
        sig = signature(g, customer, company=g.p(0.4))
    else:  # agent writes to customer
        greet = email_greeting(g, customer)
        pool = body_snippets_agent(g, customer, agent)
        sig = signature(g, agent, company=True, rich=g.p(0.6))
    k = g.r.randint(1, 3)
    paras = [fn() for fn in g.r.sample(pool, k)]
    subj = None
    if g.p(0.4):
        subj = F("Subject: {s}", s=g.pick(lambda: F("Re: Order {o}", o=g.order_id()),
                                          lambda: F("Invoice {i}", i=g.invoice_id()), "Question about my account",
                                          lambda: F("Your request {t}", t=g.ticket_id()), "Refund", "Change of address"))
    closing = g.ch([None, "Thanks in advance.", "Looking forward to hearing from you.", "Let me know if you need anything else."])
    body = []
    for para in paras:
        body += [para, "\n\n"]
    if closing:
        body += [closing, "\n\n"]
    return lines(subj, "" if subj else None, greet, "", body[:-1] if body else None, "", lines(*sig))


def gen_support_email_neg(g):
    prod = g.product()
    greet = g.ch(["Dear Customer,", "Hello,", "Hi there,", "Dear valued customer,"])
    paras = [fn() for fn in g.r.sample([
        lambda: F("Thank you for your order {o} placed on {d}. Your {p} will ship from our {city} warehouse within two "
                  "working days.", o=g.order_id(), d=g.date(), p=prod, city=g.city()),
        lambda: F("Invoice {i} for {amt} is attached. Payment is due by {d}.", i=g.invoice_id(), amt=g.money(), d=g.date()),
        lambda: F("The firmware update {v} fixes the pairing issue; release notes are at {u}.", v=g.version(),
                  u=g.doc_url(g.ch(["blog", "docs"]))),
        lambda: F("Loyalty number {l} has been credited with {n} points.", l=g.loyalty_number(),
                  n=str(g.r.randint(50, 900))),
        lambda: F("Our {st} store will be closed every {w} in {m} for refurbishment.", st=g.street(), w=g.weekday(),
                  m=g.month()),
        lambda: F("{cap} If the parcel has not arrived by {w}, reply to this message and quote {t}.", cap=g.capword(),
                  w=g.weekday(), t=g.ticket_id()),
        lambda: F("We only store the {c} for recurring payments.", c=g.card_tail()),
        lambda: F("This product is sold by {co} and fulfilled by us.", co=g.company()),
    ], g.r.randint(2, 3))]
    body = []
    for para in paras:
        body += [para, "\n\n"]
    team = g.pick("The Customer Care Team", "Support team", "Your Returns Team",
                  lambda: F("{co} Customer Service", co=g.company()))
    return lines(greet, "", body[:-1], "", g.ch(SIGNOFFS[:8]), team)


def gen_chat(g, positive=True):
    h, mnt = g.r.randint(7, 21), g.r.randint(0, 50)

    def ts():
        nonlocal h, mnt
        mnt += g.r.randint(0, 3)
        if mnt >= 60:
            h, mnt = h + 1, mnt - 60
        return f"[{h:02d}:{mnt:02d}]"

    out = []
    if g.p(0.4):
        day = g.day()
        out.append(F("Chat transcript {t} — {w} {d}", t=g.ticket_id(), w=g.weekday_of(day), d=g.date(day=day)))
    if not positive:
        def say(who, fmt, **kw):
            out.append([ts(), " ", who, ": ", F(fmt, **kw)])

        agent = g.ch(["Agent", "Support", "Agent (Returns)"])
        say("Bot", "Hi! I'm the virtual assistant. What can I help you with?")
        story = g.r.randint(0, 2)
        if story == 0:
            say("Customer", "my {p} keeps restarting since the update to {v}", p=g.product(), v=g.version())
            say(agent, "Sorry to hear that. Which order is it? I see {o} from {d}.", o=g.order_id(), d=g.date())
            if g.p(0.4):
                say("Customer", "the serial number on the box is {pn}", pn=g.part_number())
            say("Customer", "yes that one, bought at the {city} shop", city=g.city())
            say(agent, "Thanks. Please follow the reset steps at {u} — if it still fails by {w}, we'll swap it.",
                u=g.doc_url("article"), w=g.weekday())
        elif story == 1:
            say("Customer", "where is order {o}? it said delivery on {w}", o=g.order_id(), w=g.weekday())
            say(agent, "It left our {city} depot on {d} and is now with the local courier.", city=g.city(), d=g.date())
            say("Customer", "can I pick it up at the {st} store instead?", st=g.street())
            say(agent, "{cap} I've added a note to the shipment; tracking updates at {u}.", cap=g.capword(),
                u=g.doc_url("status"))
        else:
            say("Customer", "why was I charged {amt} in {m}?", amt=g.money(), m=g.month())
            say(agent, "That is the annual renewal of the {p} (invoice {i}), paid with your {c}.", p=g.product(),
                i=g.invoice_id(), c=g.card_tail())
            if g.p(0.5):
                say("Customer", "my gift card {l} should have covered part of it", l=g.loyalty_number())
            say(agent, "I've refunded {amt}; the plan now ends on {d}. Pricing is at {u}.", amt=g.money(), d=g.date(),
                u=g.doc_url("pricing"))
        say("Customer", "{cap}, thanks", cap=g.ch(["ok", "great", "perfect", "will do", "cool"]))
        return lines(*out)
    cust, agent = g.person(), g.person()
    a_label = g.ch([F("Agent {n}", n=E("PERSON", agent.first)), F("{n} (Support)", n=E("PERSON", agent.first)),
                    F("{n}", n=E("PERSON", agent.full)), F("Agent {n}", n=E("PERSON", agent.first))])
    c_label = g.ch(["Customer", "Customer", "Visitor", F("{n}", n=E("PERSON", cust.full)),
                    F("{n}", n=E("PERSON", cust.first))])

    def A(fmt, **kw):
        return [ts(), " ", a_label, ": ", F(fmt, **kw)]

    def C(fmt, **kw):
        return [ts(), " ", c_label, ": ", F(fmt, **kw)]

    out.append(A(g.ch(["Hi, my name is {n}. How can I help you today?", "Hello and welcome! You're chatting with {n}.",
                       "Good afternoon, {n} here. What can I do for you?"]), n=E("PERSON", agent.first)))
    turns = [
        lambda: [C("hi, I'm {n}, I can't log in to my account", n=g.name(cust, "full")),
                 A("Sorry about that, {n}. Which e-mail address is the account under?", n=E("PERSON", cust.first)),
                 C("{e}", e=g.email_for(cust))],
        lambda: [A("Could you give me a phone number in case we get disconnected?"),
                 C("{ph}", ph=g.phone_cued(g.phone_for(cust), "field"))],
        lambda: [C("the parcel should go to {a} please", a=g.address_for(cust, multiline=False)),
                 A("Got it, I've updated the address on order {o}.", o=g.order_id())],
        lambda: [C("can I just pay with my card? it's {c}", c=g.card()),
                 A("Please don't share full card numbers in chat — I'll send you a secure payment link instead.")],
        lambda: [A("For security, can you confirm your date of birth?"), C("{d}", d=g.dob())],
        lambda: [A("To verify you, can you confirm your date of birth?"),
                 C("sure, {d}", d=g.dob_cued())],
        lambda: [C("the {p} I bought on {d} stopped charging", p=g.product(), d=g.date()),
                 A("I'm sorry to hear that. Is it still under warranty until {d}?", d=g.date())],
        lambda: [A("I need the last four digits of your SSN, not the full number."),
                 C("oh sorry, I already typed it: {s}", s=g.ssn())],
        lambda: [C("my {s} and I was born {d}, the loan application is under my name", s=g.ssn(), d=g.dob())],
        lambda: [C("for the refund please use {i}", i=g.iban()),
                 A("Thank you, the refund of {amt} is on its way.", amt=g.money())],
        lambda: [C("my husband {n} also has an account, can you merge them?", n=g.name(g.person(), "full")),
                 A("I'll need {n} to confirm by e-mail first.", n=g.ch(["him", "your husband"]))],
        lambda: [C("here's my seller profile so you can see the listing: {u}", u=g.url_person(cust))],
        lambda: [A("I'll transfer you to my colleague {n} in billing.", n=g.name(g.person(), g.ch(["first", "titled"])))],
        lambda: [C("{ph}", ph=g.phone_cued(g.phone_for(cust)))],
        lambda: [C("did the {p} ship? my neighbour at {a} can take it", p=g.product(), a=g.address(multiline=False))],
    ]
    for fn in g.r.sample(turns, g.r.randint(2, 4)):
        out += fn()
    out.append(g.pick(lambda: A("Is there anything else I can help with?"),
                      lambda: A("Thanks for chatting with us, {n}!", n=E("PERSON", cust.first)),
                      lambda: A("Have a nice {w}!", w=g.ch(["day", "evening", "weekend"]))))
    return lines(*out)


def gen_hr_note(g, positive=True):
    if not positive:
        return g.ch([
            lambda: lines(F("HR update — {m} payroll", m=g.month()), "",
                          F("Payslips for {m} will be available on {d}. The {cap} for expense claims ends on {w}.",
                            m=g.month(), d=g.date(), cap=g.ch(["grace period", "window"]), w=g.weekday()),
                          F("The summer party takes place at the {st} venue in {city}; the budget is {amt} per team.",
                            st=g.street(), city=g.city(), amt=g.money()),
                          F("Reminder: reference {e} on all reimbursement forms.", e=g.employee_id())),
            lambda: lines("Policy note: parental leave", "",
                          F("From {d}, parental leave is extended to 20 weeks. Requests go through the HR portal ({u}).",
                            d=g.date(), u=g.doc_url("intranet")),
                          F("Questions are handled in the Monday drop-in session; see ticket {t}.", t=g.ticket_id())),
            lambda: lines(F("Headcount report {d}", d=g.date()), "",
                          F("Engineering hired 4 people in {m}; two start on {d}. Open roles are listed at {u}.",
                            m=g.month(), d=g.date(), u=g.doc_url("careers")),
                          F("Training budget remaining: {amt}. Next review cycle opens {w} {d}.", amt=g.money(),
                            w=g.weekday_of(dd := g.day()), d=g.date(day=dd))),
        ])()
    emp, mgr = g.person(), g.person()
    form = g.r.randint(0, 3)
    if form == 0:  # structured record
        fields = [F("Employee: {n}", n=E("PERSON", emp.full)), F("Employee ID: {e}", e=g.employee_id()),
                  F("Department: {d}", d=g.ch(["Finance", "Engineering", "Customer Care", "Logistics", "Sales"])),
                  F("Start date: {d}", d=g.date())]
        opts = [
            lambda: F("Date of birth: {d}", d=g.dob()),
            lambda: F("DOB: {d}", d=g.dob()),
            lambda: g.ssn(),
            lambda: F("Home address: {a}", a=g.address_for(emp, multiline=g.p(0.3))),
            lambda: F("Private e-mail: {e}", e=g.email_for(emp)),
            lambda: F("Phone: {ph}", ph=g.phone_for(emp)),
            lambda: F("Salary account: {i}", i=g.iban()),
            lambda: F("Emergency contact: {n}, {ph}", n=E("PERSON", g.person(emp.loc).full),
                      ph=g.phone_cued(g.phone_for(emp), "field")),
            lambda: F("Manager: {n}", n=g.name(mgr, g.ch(["full", "titled"]))),
            lambda: F("LinkedIn: {u}", u=g.url_person(emp, "linkedin")),
            lambda: F("Profile: {u}", u=g.url_person(emp)),
        ]
        chosen = [fn() for fn in g.r.sample(opts, g.r.randint(2, 5))]
        note = g.pick(None, lambda: F("Notes: {n} asked to move to a 4-day week from {m}.", n=E("PERSON", emp.first),
                                      m=g.month()),
                      lambda: F("Notes: probation review with {n} on {d}.", n=g.titled(mgr), d=g.date()))
        return lines(*fields, *chosen, note)
    if form == 1:  # 1:1 / meeting note
        return lines(
            F("1:1 notes — {n} / {m} — {d}", n=E("PERSON", emp.full), m=E("PERSON", mgr.full), d=g.date()), "",
            F("- {n} raised concerns about workload since the {p} launch.", n=E("PERSON", emp.first), p=g.product()),
            g.pick(lambda: F("- Agreed: {n} will cover on-call every second {w}.", n=E("PERSON", emp.first),
                             w=g.weekday()),
                   lambda: F("- New home address for payroll: {a}.", a=g.address_for(emp, multiline=False)),
                   lambda: F("- {n}'s bank details changed to {i}; forwarded to payroll.", n=E("PERSON", emp.first),
                             i=g.iban())),
            g.pick(lambda: F("- Follow-up with {t} from HR next {w}.", t=g.titled(g.person()), w=g.weekday()),
                   lambda: F("- Reachable during leave: {ph}", ph=g.phone_cued(g.phone_for(emp), "field")),
                   lambda: F("- {cap}", cap=g.capword())))
    if form == 2:  # onboarding checklist
        return lines(
            F("Onboarding: {n} ({e})", n=E("PERSON", emp.full), e=g.employee_id()), "",
            F("Background check completed for {n}, {d}, {s}.", n=g.name(emp, "titled"), d=g.dob_cued(), s=g.ssn()),
            F("Laptop ({p}) to be shipped to {a}.", p=g.n("product name", g.ch(["Kestrel 14", "Kestrel 16 Pro", "Vega 2 tablet"])),
              a=g.address_for(emp, multiline=g.p(0.3))),
            F("Buddy: {b}. First day: {w} {d}.", b=E("PERSON", g.person().full), w=g.weekday_of(dd := g.day()),
              d=g.date(day=dd)))
    # free-text incident / leave note
    other = g.person()
    return lines(
        F("Leave request {t}", t=g.ticket_id()),
        F("{n} requested unpaid leave from {d1} to {d2} to care for a relative. {m} approved it on {d3}.",
          n=E("PERSON", emp.full), d1=g.date(day=(d1 := g.day())), d2=g.date(day=g.day(d1, 3, 90)),
          m=g.name(mgr, g.ch(["titled", "full"])), d3=g.date(day=d1 - datetime.timedelta(days=g.r.randint(2, 30)))),
        g.pick(lambda: F("Contact during leave: {e}", e=g.email_for(emp)),
               lambda: F("{n} can be reached on {ph} for urgent questions.", n=E("PERSON", emp.first),
                         ph=g.phone_for(emp)),
               lambda: F("Payroll note: {n} record, {d}, paid from {co}.", n=g.poss(emp, "first"), d=g.dob_cued(),
                         co=g.company())),
        g.pick(None, lambda: F("Cover: {o} ({e}).", o=E("PERSON", other.full), e=g.email_for(other)),
               lambda: F("Cover: {o}.", o=g.titled(other))))


def invoice_items(g, cur, vat=True):
    """Item lines and totals in one currency; the totals add up."""
    rows, subtotal = [], 0.0
    for _ in range(g.r.randint(1, 4)):
        q, unit = g.r.randint(1, 5), g.r.randint(5, 900) + g.r.randint(0, 99) / 100
        subtotal += q * unit
        if g.p(0.15):
            rows.append(F("{q} x Replacement fan, P/N {pn}  {amt}", q=str(q), pn=g.part_number(), amt=g.money(q * unit, cur)))
        else:
            rows.append(F("{q} x {p}  {amt}", q=str(q), p=g.product(), amt=g.money(q * unit, cur)))
    if not vat:
        return rows + [F("Total: {a}", a=g.money(subtotal, cur))]
    rate = g.ch([19, 20, 21, 23, 25, 8.1])
    tax = round(subtotal * rate / 100, 2)
    return rows + [F("Subtotal: {a}", a=g.money(subtotal, cur)), F("VAT {r}%: {a}", r=str(rate), a=g.money(tax, cur)),
                   F("Total due: {a}", a=g.money(subtotal + tax, cur))]


def gen_invoice(g, positive=True):
    inv, seller = g.invoice_id(), g.company()
    style, cur = g.ch(["d Month yyyy", "yyyy-mm-dd", "dd.mm.yyyy", "dd/mm/yyyy", "Month d, yyyy"]), g.ch(CURRENCIES)
    head = lines(g.ch(["INVOICE", "Invoice", "TAX INVOICE", "Rechnung / Invoice"]),
                 F("Invoice no.: {i}", i=inv),
                 F("Invoice date: {d}   Due date: {d2}", d=g.date(style, day=(d0 := g.day())),
                   d2=g.date(style, day=g.day(d0, 14, 30))))
    if not positive and g.p(0.35):
        return lines(g.ch(["CREDIT NOTE", "Credit note"]), F("Credit note no.: {i}", i=g.invoice_id()),
                     F("Refers to invoice {i} of {d}", i=g.invoice_id(), d=g.date(style)), "",
                     F("Issued by: {s}, {city}", s=seller, city=g.city()), F("Customer: {c}", c=g.company()), "",
                     *invoice_items(g, cur, vat=False), "",
                     F("The amount will be refunded to the {c} within 10 days.", c=g.card_tail()))
    if not positive:
        return lines(head, "", F("From: {s} · VAT ID {v}", s=seller, v=g.vat_id()),
                     F("Bill to: {c}", c=g.company()), F("Customer no. {c}", c=g.order_id()), "",
                     *invoice_items(g, cur, vat=g.p(0.5)), "",
                     g.pick(lambda: F("Paid by {c} on {d}.", c=g.card_tail(), d=g.date()),
                            lambda: F("Direct debit under creditor ID {c}, first collection {w} {d}.", c=g.creditor_id(),
                                      w=g.weekday(), d=g.date()),
                            lambda: F("Payment terms: 30 days. Terms and conditions: {u}", u=g.doc_url("terms"))))
    cust = g.person()
    seller_line = g.pick(lambda: F("From: {s} · VAT ID {v}", s=seller, v=g.vat_id()),
                         lambda: F("{s}\n{a}", s=seller, a=g.address(multiline=True, country=False)),
                         lambda: F("Seller: {s}, {city}", s=seller, city=g.city()))
    who = g.pick(E("PERSON", cust.full), E("PERSON", cust.full), lambda: F("Attn: {n}", n=g.titled(cust)))
    bill = ["Bill to:" if g.p(0.7) else "Invoice to:", "\n", who, "\n",
            g.address_for(cust, multiline=True, country=g.p(0.5))]
    contact = []
    if g.p(0.5):
        contact.append(F("Email: {e}", e=g.email_for(cust)))
    if g.p(0.4):
        contact.append(g.phone_cued(g.phone_for(cust), "sig"))
    ship = None
    if g.p(0.25):
        ship = F("Ship to:\n{a}", a=g.address(multiline=True, country=g.p(0.3)))
    pay = g.pick(
        lambda: F("Please pay by bank transfer to IBAN {i} (BIC {b}), reference {r}.", i=g.iban(), b=g.bic(), r=inv),
        lambda: F("Bank: {i}\nReference: {r}", i=g.iban(), r=inv),
        lambda: F("Paid by {c} on {d}. Thank you!", c=g.card_tail(), d=g.date(style)),
        lambda: F("Charged to card {c} (exp. {x}) on {d}.", c=g.card(), x=g.expiry(), d=g.date(style)),
        lambda: F("Payment due within 14 days. Questions? {e}", e=g.email_for(None)),
    )
    return lines(head, "", seller_line, "", bill, *contact, ship, "",
                 *invoice_items(g, cur), "", pay)


ERRORS = ["connection refused", "TLS handshake timeout", "HTTP 502 Bad Gateway", "ORA-12541: TNS:no listener",
          "java.net.SocketTimeoutException: Read timed out", "permission denied (publickey)", "disk quota exceeded",
          "certificate has expired", "too many open files", "401 Unauthorized"]


def gen_it_ticket(g, positive=True):
    tid = g.ticket_id()
    head = lines(F("Ticket {t}  |  Priority: {p}  |  Status: {s}", t=tid, p=g.ch(["P1", "P2", "P3", "Low", "High"]),
                   s=g.ch(["Open", "In progress", "Waiting for customer", "New"])))
    host = g.n("hostname", g.hostname())
    err = g.ch(ERRORS)
    if not positive and g.p(0.4):
        return lines(head, F("Change request for {h}", h=host), "",
                     F("Upgrade {p} from {v1} to {v2} during the {w} maintenance window ({d}, 22:00–23:00 CET).",
                       p=g.ch(["PostgreSQL", "nginx", "the billing service", "Kubernetes nodes", "the VPN gateway"]),
                       v1=g.version(), v2=g.version(), w=g.weekday_of(dd := g.day()), d=g.date(day=dd)),
                     F("Rollback plan: {u}", u=g.doc_url("runbook")),
                     F("Depends on {t}; approved by the CAB on {d}.", t=g.ticket_id(), d=g.date()))
    if not positive:
        return lines(head, F("Reporter: {r}", r=g.ch(["Monitoring", "Nagios", "automated alert", "Service Desk"])),
                     F("Summary: {h} — {e} after upgrade to {v}", h=host, e=err, v=g.version()), "",
                     F("First seen {ts} UTC. Affected component: {p}.", ts=g.timestamp(), p=g.product()),
                     F("Runbook: {u}", u=g.doc_url("runbook")),
                     F("Vendor status page: {u}. Last change window was {w} {d}.", u=g.doc_url("status"),
                       w=g.weekday_of(dd := g.day()), d=g.date(day=dd)),
                     g.pick(lambda: F("Note: {cap}", cap=g.capword()), lambda: F("Related: {t}", t=g.ticket_id()),
                            lambda: F("Swapped PSU, part no. {pn}.", pn=g.part_number())))
    rep, tech = g.person(), g.person()
    rep_line = g.pick(lambda: F("Reporter: {n} <{e}>", n=E("PERSON", rep.full), e=g.email_for(rep)),
                      lambda: F("Reporter: {n}", n=E("PERSON", rep.full)),
                      lambda: F("Reported by {n} ({e})", n=E("PERSON", rep.full), e=g.email_for(rep)),
                      lambda: F("Requester: {n}, {ph}", n=E("PERSON", rep.full),
                                ph=g.phone_cued(g.phone_for(rep), "field")))
    ip1 = g.ip()
    port = g.ch(["", f":{g.r.choice([22, 443, 5432, 8080, 3389, 6379])}"])
    if not port:
        ipmention = [ip1]
    elif ":" in ip1.value:  # IPv6 with a port: [addr]:port, brackets and port outside the value
        ipmention = ["[", ip1, "]", port]
    else:
        ipmention = [ip1, port]
    desc = g.r.sample([
        lambda: F("Since {ts} the app on {h} ({ip}) returns \"{e}\".", ts=g.timestamp(), h=host, ip=ipmention, e=err),
        lambda: F("Failed logins for {e} from {ip}; user says it wasn't them.", e=g.email_for(rep), ip=g.ip("public")),
        lambda: F("The cron job still uses {u} — please rotate that password.", u=g.url_credentials()),
        lambda: F("Found this in the config repo: DATABASE_URL={u}", u=g.url_credentials()),
        lambda: F("User record: {u}", u=g.url_person(rep)),
        lambda: F("Affected account: {u} (see audit log).", u=g.url_person()),
        lambda: F("VPN assigns {ip} but DNS still points {h} to {ip2}.", ip=g.ip("private"), h=host, ip2=g.ip()),
        lambda: F("Client version {v}, docs say this is fixed: {u}", v=g.version(), u=g.doc_url("docs")),
        lambda: F("Replaced the SSD (part no. {pn}) but the error persists.", pn=g.part_number()),
        lambda: F("Please call {n} back at {ph} once it's fixed.", n=E("PERSON", rep.first), ph=g.phone_for(rep)),
        lambda: F("IPv6 traffic from {ip} is dropped at the edge firewall.", ip=g.ip("v6")),
        lambda: F("Same issue as {n}'s laptop last {w} ({t}).", n=E("PERSON", g.person().full), w=g.weekday(), t=g.ticket_id()),
    ], g.r.randint(2, 4))
    desc = [fn() for fn in desc]
    comment = g.pick(
        lambda: F("Comment ({n}, {d}): restarted the service, monitoring.", n=E("PERSON", tech.first), d=g.date()),
        lambda: F("Comment: assigned to {n}.", n=g.name(tech, g.ch(["full", "titled"]))),
        lambda: F("Update from {n}: root cause was an expired certificate on {h}.", n=E("PERSON", tech.full),
                  h=g.n("hostname", g.hostname())),
        None)
    return lines(head, rep_line, F("Summary: {e} on {h}", e=err, h=host), "", "Description:", *desc, comment)


GENERATORS = {"support_email": gen_support_email, "chat": gen_chat, "hr_note": gen_hr_note, "invoice": gen_invoice,
              "it_ticket": gen_it_ticket}


# ----------------------------------------------------------------------------------------------
# record checks
# ----------------------------------------------------------------------------------------------

DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{4}")
PHONE_CUE = re.compile(r"(?i)(call|phone|tel\b|tel\.|mobile|mob\.|cell|ring|text me|whatsapp|reached on|number|"
                       r"\b[MT]:|direct line)[^\n]{0,30}$")
BIRTH_CUE = re.compile(r"(?i)\b(born|birth|DOB|D\.O\.B)\b")
PROFILE_HINT = re.compile(r"(?i)(linkedin|github|gitlab|twitter|(?<![\w.-])x\.com|instagram|facebook|mastodon|medium\.com|"
                          r"calendly|xing|/users?/|/profile|/team/|/@|user_id|uid=|/customers/|/agents/|/contacts)")


def accidental_pii(text, spans, regions):
    """Describes the first thing outside the labeled spans that a correct detector should flag, or None."""
    import phonenumbers as pn

    def outside(a, b):
        return all(b <= s or a >= e for s, e in spans)

    for m in re.finditer(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])", text):
        if outside(*m.span()) and luhn_ok(re.sub(r"\D", "", m.group())):
            return "luhn " + m.group()
    for m in re.finditer(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", text):
        if outside(*m.span()) and iban_valid(m.group()):
            return "iban " + m.group()
    for m in re.finditer(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d])", text):
        if outside(*m.span()) and all(int(x) <= 255 for x in m.groups()) and not re.match(r"\.\d", text[m.end():m.end() + 2]):
            return "ipv4 " + m.group()
    for m in re.finditer(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])", text):
        if outside(*m.span()):
            try:
                ipaddress.IPv6Address(m.group())
                return "ipv6 " + m.group()
            except ValueError:
                pass
    for m in re.finditer(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text):
        if outside(*m.span()):
            return "email " + m.group()
    for m in re.finditer(r"://[^\s/:@]+:[^\s/@]+@", text):
        if outside(*m.span()):
            return "url creds " + m.group()
    for m in re.finditer(r"(?<![\d-])(\d{3})[- ]?(\d{2})[- ]?(\d{4})(?![\d-])", text):
        if outside(*m.span()) and ssn_valid("".join(m.groups())) and re.search(
                r"(?i)(ssn|social security)", text[max(0, m.start() - 40):m.start()]):
            return "ssn " + m.group()
    for m in re.finditer(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])", text):
        if outside(*m.span()) and ssn_valid("".join(m.groups())):
            return "ssn " + m.group()
    for m in re.finditer(r"https?://\S+", text):
        if outside(*m.span()) and PROFILE_HINT.search(m.group()):
            return "person url " + m.group()
    for m in BIRTH_CUE.finditer(text):
        if outside(*m.span()):
            window = text[m.end():m.end() + 30]
            if re.search(r"\d{4}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", window):
                ahead = m.end() + re.search(r"\d", window).start()
                if outside(ahead, ahead + 1):
                    return "dob " + window
    for region in regions:
        for m in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID):
            if DATE_LIKE.fullmatch(m.raw_string):  # a date that also parses as a phone is a wanted negative
                continue
            if outside(m.start, m.end):
                return f"phone({region}) {m.raw_string}"
    return None


def name_leak(text, ents):
    """A PERSON token that also occurs outside every labeled span (an unlabeled mention)."""
    spans = [(e["start"], e["end"]) for e in ents]
    for e in ents:
        if e["type"] != "PERSON":
            continue
        for tok in re.findall(r"[^\W\d_][\w'’-]*", e["value"]):
            if len(tok) < 3:
                continue
            for m in re.finditer(r"(?<![\w])" + re.escape(tok) + r"(?![\w])", text):
                if all(m.end() <= s or m.start() >= t for s, t in spans):
                    return tok
    return None


def check_record(rec):
    """Raises AssertionError if the record breaks a convention."""
    import phonenumbers as pn

    text, ents = rec["text"], rec["entities"]
    prev_end = 0
    for e in ents:
        assert e["type"] in TYPES, e
        assert text[e["start"]:e["end"]] == e["value"], e
        assert e["start"] >= prev_end, ("overlap or order", e)
        prev_end = e["end"]
        v, t = e["value"], e["type"]
        assert v == v.strip() and v[-1] not in ".,;:" or t in ("PERSON", "ADDRESS"), e
        if t == "PHONE":
            assert any(phone_valid(v, r) for r in PHONE_REGIONS), v
            if re.search(r"x|ext", v):
                assert any(pn.parse(v, r).extension for r in PHONE_REGIONS if phone_valid(v, r)), v
        elif t == "CARD":
            d = re.sub(r"[ -]", "", v)
            assert d.isdigit() and 13 <= len(d) <= 19 and luhn_ok(d), v
        elif t == "IBAN":
            assert iban_valid(v), v
        elif t == "SSN":
            assert re.fullmatch(r"\d{3}([- ]?)\d{2}\1\d{4}", v) and ssn_valid(re.sub(r"\D", "", v)), v
            assert re.search(r"(?i)(ssn|social security)", text[max(0, e["start"] - 40):e["start"]]), v
        elif t == "IP":
            ipaddress.ip_address(v)
        elif t == "URL_CREDENTIALS":
            assert re.fullmatch(r"[a-z]+://[^:/@\s]+:[^@\s/]+@[^\s@]+", v), v
        elif t == "URL":
            assert re.fullmatch(r"https://\S+", v) and PROFILE_HINT.search(v), v
        elif t == "EMAIL":
            assert re.fullmatch(r"[a-z0-9._+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+", v), v
        elif t == "DOB":
            assert BIRTH_CUE.search(text[max(0, e["start"] - 120):e["start"]]), (v, text)
        elif t == "PERSON":
            assert is_latin_name(v), v
        elif t == "ADDRESS":
            assert re.search(r"\d", v), v
    spans = [(e["start"], e["end"]) for e in ents]
    bad = accidental_pii(text, spans, PHONE_REGIONS)
    assert bad is None, bad
    leak = name_leak(text, ents)
    assert leak is None, ("unlabeled name token", leak)


# ----------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------


def generate_split(seed, taken):
    """taken: values (non-first-name) and texts already used by an earlier split; updated in place."""
    g = Gen(seed)
    plan = []
    per_genre = N_TEXTS // len(GENRES)
    neg_per_genre = N_NEGATIVE // len(GENRES)
    for genre in GENRES:
        plan += [(genre, False)] * neg_per_genre + [(genre, True)] * (per_genre - neg_per_genre)
    g.r.shuffle(plan)
    records, neg_counts, phone_infos, rejects = [], Counter(), [], Counter()
    for i, (genre, positive) in enumerate(plan, start=1):
        for attempt in range(300):
            g.begin()
            text, ents = render(GENERATORS[genre](g, positive))
            rec = {"id": i, "genre": genre, "text": text, "entities": ents}
            if positive != bool(ents):
                rejects["positive/negative mismatch"] += 1
                continue
            try:
                check_record(rec)
            except AssertionError as err:
                reason = err.args[0] if err.args else "assertion"
                rejects[str(reason[0] if isinstance(reason, tuple) else reason)[:40]] += 1
                continue
            keys = {text} | {e["value"] for e in ents if not (e["type"] == "PERSON" and " " not in e["value"])}
            if keys & taken:
                rejects["shared with an earlier split"] += 1
                continue
            break
        else:
            raise RuntimeError(f"could not generate record {i} ({genre})")
        taken |= keys
        records.append(rec)
        neg_counts.update(g.neg)
        phone_infos += g.phone_info
    return records, neg_counts, phone_infos, rejects


def stats(records, phone_infos):
    counts = Counter(e["type"] for r in records for e in r["entities"])
    ipv6 = sum(1 for r in records for e in r["entities"] if e["type"] == "IP" and ":" in e["value"])
    nonascii = sum(1 for r in records if any(e["type"] == "PERSON" and not e["value"].isascii() for e in r["entities"]))
    no_pii = sum(1 for r in records if not r["entities"])
    genres = Counter(r["genre"] for r in records)
    regions = Counter(pi[0] for pi in phone_infos)
    forms = Counter(pi[1] for pi in phone_infos)
    ext = sum(1 for pi in phone_infos if pi[2])
    cued = Counter("cue" if PHONE_CUE.search(r["text"][max(0, e["start"] - 40):e["start"]]) else "no cue"
                   for r in records for e in r["entities"] if e["type"] == "PHONE")
    multiline_addr = sum(1 for r in records for e in r["entities"] if e["type"] == "ADDRESS" and "\n" in e["value"])
    return {"counts": counts, "ipv6": ipv6, "nonascii": nonascii, "no_pii": no_pii, "genres": genres,
            "regions": regions, "forms": forms, "ext": ext, "cued": cued, "multiline_addr": multiline_addr,
            "n": len(records), "total": sum(counts.values())}


def print_stats(name, s, neg_counts, rejects):
    print(f"== {name}: {s['n']} texts, {s['total']} entities, {s['no_pii']} without PII, "
          f"{s['nonascii']} with a non-ASCII name")
    print("   " + ", ".join(f"{t} {s['counts'][t]}" for t in TYPES))
    print(f"   IPv6 {s['ipv6']}; multi-line addresses {s['multiline_addr']}; genres {dict(sorted(s['genres'].items()))}")
    print(f"   phones: {dict(s['forms'])}, with extension {s['ext']}, {dict(s['cued'])}")
    print(f"   phone countries ({len(s['regions'])}): {' '.join(f'{k}:{v}' for k, v in sorted(s['regions'].items()))}")
    print(f"   hard negatives: {dict(sorted(neg_counts.items()))}")
    print(f"   redraws: {dict(rejects.most_common(8))}")


README = """# Independent labeled PII set

`dev.jsonl` and `test.jsonl` are two labeled sets of {n_dev} and {n_test} synthetic texts for measuring the PII
masking stage. They were made **independently of the detector**: by `{script}`, which
shares no code, templates, sentences or name lists with `scripts/pii-labeled-set.py` (the script that writes
`crates/pii/src/data/first_names.txt`, `surnames.txt` from the US Census lists and the older `tests/fixtures/pii/labeled.jsonl`). Names,
addresses, companies, e-mail domains, phone numbers, IBANs, card numbers, SSNs and IP addresses all come from
[Faker](https://pypi.org/project/Faker/) {faker_version}; phone numbers are validated with
[phonenumbers](https://pypi.org/project/phonenumbers/) {pn_version}.

- **dev** (seed {seed_dev}) is for looking at failures while tuning the detector.
- **test** (seed {seed_test}) is for reporting only. Don't read its failures while tuning, or it stops being a
  held-out set.
- **holdout** (seed {seed_holdout}, same generator) was drawn on 2026-12-06, after the test split's missed
  values had been read once while phone rules were written: only its totals are reported.

The splits are disjoint: no text is in both, and neither is any entity value except one-word names (a
given name alone, or a surname after a title).

**All data is fake**, but it is drawn at random by Faker: a phone number, card number, IBAN or address may
happen to exist. Don't dial, charge or write to any of them.

## Provenance and licence

- Faker {faker_version} (MIT licence, © Daniele Faraglia and contributors), from PyPI. Used for person names in
  {n_name_locales} locales, addresses, company names, domains, e-mail addresses, phone numbers, IBANs, card
  numbers, SSNs, IPv4/IPv6 addresses, user names, passwords, BIC codes, hostnames and city/street names.
- phonenumbers {pn_version} (Apache-2.0), from PyPI, is used to validate phones.
- The sentence templates, product names and the rest of the glue text were written for this set. The
  generated data is released with the project.

## Regenerate

```
python3 {script}{out_arg}
```

The script is deterministic: running it twice gives identical bytes. Faker and phonenumbers are pinned
(`faker=={faker_version}`, `phonenumbers=={pn_version}`). If they are not importable at those versions,
the script creates a venv in a temporary folder, installs them there and re-runs itself. Dates are drawn
from the script's seeded RNG, never from "today". The script writes this README too, counts included.

Before writing a record, the script checks that:

- every `value` equals `text[start:end]` and every span is valid for its type (see below);
- spans are in order and don't overlap;
- the text outside the spans has no Luhn-valid 13–19 digit run, no IBAN with a valid checksum, no valid
  IPv4 or IPv6 address, no e-mail address, no URL with userinfo, no valid dashed SSN (or undashed one
  after an SSN cue), no profile-style URL, no date after a birth cue, and no string that
  `phonenumbers.PhoneNumberMatcher` (leniency VALID) finds as a valid number for any of the {n_regions} phone
  regions used;
- no token of a labeled PERSON value also occurs outside every labeled span. This keeps out unlabeled
  mentions, for example a customer whose surname is also in the company name;
- a record planned without PII has no entity, and the other way round.

A draw that fails any check is thrown away and drawn again.

## Format

One JSON object per line, with keys in this order:

```json
{example}
```

- `genre`: one of `support_email`, `chat`, `hr_note`, `invoice`, `it_ticket`.
- `entities`: in order of appearance, one per mention. A value that occurs twice (a name in the greeting
  and the signature) has two entries. Spans never overlap.
- `start`/`end` are **Unicode code point offsets** into `text`, as Python string indices (not bytes and not
  UTF-16 units): `text[start:end] == value`. Texts contain non-ASCII letters (ł, ø, ğ, ệ, …) and the
  characters `—`, `–`, `•`, `€`, `£`, so byte offsets differ from these. Score by span.
- Labels: {types}.

## Conventions per type

- **EMAIL**: `local@domain`, lower case, as Faker gives it or built from the person's ASCII-folded name
  (`first.last`, `f.last`, `first_last`, `last.first`, with digits or `+tag`). The value never includes `<>`,
  brackets or trailing punctuation. A name inside the local part is not labeled separately.
- **PHONE**: any number that passes `phonenumbers.is_valid_number` when parsed with the region of the Faker
  locale that produced it, and whose region is that region. Forms are (a) the **national format as the
  locale's `phone_number()` gives it, without `+`** (`07631 706690`, `(0306) 999 0074`, `06 27 63 17 06`,
  `79 7631-7066`, `080-3740-6812`, `22 669 07 43`); (b) international forms with `+` or `00` as Faker gives
  them (`+44(0)306 999 0317`, `+33 (0)1 48 08 06 36`, `00420 601 743 915`) or as phonenumbers formats them
  (`+48 577 763 170`); and (c) E.164 (`+4930123456`). Faker's national output is used as is,
  including its odd spacing. Invalid draws are discarded. **Extensions are part of the value**: Faker's own
  `x0743` and appended ` ext. 204`, ` ext 31`, ` x204`, ` extension 4410`, `, ext. 12`. Around 75 % of phones
  have a cue word right before them (`Tel:`, `Mobile:`, `M:`, `call me at`, `my number is`, `phone`,
  `WhatsApp` …). The rest are bare: on a signature line of their own, in parentheses after a name, as a chat
  answer, or in a sentence like "or try … after 6 pm". Some appear without a cue in a context that
  implies a phone ("call … back at", "bill … who will call you on").
- **CARD**: Faker `credit_card_number` (Visa 13/16/19, Mastercard incl. 2-series, Amex, Discover, JCB 15/16,
  Diners), 13–19 digits, Luhn-valid. The number is written compact, in groups of 4 with spaces or dashes,
  or as Amex 4-6-5. "card ending in 1234", `Visa •••• 1234` and expiry dates are not CARD.
- **IBAN**: Faker `iban()` for {iban_countries}. The mod-97 check digits are valid, and the length and
  BBAN shape fit the IBAN registry. Faker draws the BBAN at random, so **national check digits (FR RIB key,
  ES DC, IT CIN, BE, PT, NO, FI …) are generally not valid**. A detector that checks them will miss these
  IBANs. The IBAN is written compact or in groups of 4.
- **SSN**: Faker `en_US` `ssn()` with area 001–899 except 666, group ≠ 00 and serial ≠ 0000, written
  `123-45-6789`, `123 45 6789` or `123456789`. **Every SSN has a cue right before it** (`SSN`, `SSN:`, `SSN#`,
  `SSN is`, `social security number`, `Social Security No.`). The cue is not part of the value.
- **IP**: Faker `ipv4_public`, `ipv4_private` and `ipv6` (full or compressed with `::`). A port (`:5432`) and
  the brackets around an IPv6 address (`[…]:443`) are not part of the value. An IP inside a URL with
  credentials is part of that URL only.
- **URL_CREDENTIALS**: `scheme://user:password@host[:port][/path]`, the whole URL from the scheme to the
  end of the path or query. Schemes are https, http, ftp, sftp, postgres(ql), mysql, mongodb, redis, amqp
  and smtp. The user comes from Faker `user_name` or a service account. The password is Faker `password`
  with maybe one of `!_-.~*$` added. The host is a Faker hostname, an internal name or a private IPv4.
- **URL**: a URL that identifies a person. Profile links (`linkedin.com/in/…`, `github.com/…`,
  `gitlab.com/…`, `twitter.com/…`, `x.com/…`, `instagram.com/…/`, `facebook.com/first.last.123`,
  `mastodon.social/@…`, `medium.com/@…`, `stackoverflow.com/users/ID/name`, `calendly.com/first-last/30min`,
  `xing.com/profile/First_Last`). Company URLs with a user id or a name in the path or query
  (`/users/48213`, `/customers/ID/edit`, `/agents/ID`, `/team/first-last`, `?id=…&name=first.last`,
  `?user_id=…`, `profile.php?uid=…`). The value is the whole URL. A name inside it is not labeled
  separately. Documentation, status, pricing, blog, download, careers and help-centre article links are
  negatives, even when the domain is a Faker surname domain (`https://docs.holmes-moreno.com/api/v2/errors`).
- **DOB**: a date after a birth cue: `born on`, `born`, `date of birth (is)`, `Date of birth:`, `DOB`,
  `DOB:`, `D.O.B.`, `birth date`, `birthdate:`. In chats and HR records the cue can be the question or
  field label one line before the date. The value is the date alone, as `4 March 1985`, `March 4, 1985`,
  `Mar 4, 1985`, `4th March 1985`, `1985-03-04`, `03/04/1985`, `04/03/1985`, `04.03.1985`, `4.3.1985`,
  `04-Mar-1985` or `4 Mar 1985`. Years are 1944–2006. Every other date (invoice, due, meeting, start,
  leave, warranty, timestamps) is a negative.
- **PERSON**: a private individual's name, in Latin script, from Faker `first_name_male/female` +
  `last_name` of one of the locales listed below. Japanese and Chinese names use Faker's romanised
  providers, zh_TW title-cased (`Li-Chen Tang`). Forms:
  - full name. Locale order is used where it differs: Vietnamese `Nguyễn Văn Hùng`, some Hungarian
    `Kovács Anna`, some Chinese `Zhao Jing`. Spanish names sometimes have two surnames;
  - a given name alone in greetings, chat speaker labels and sign-offs (`Hi Priya,`, `Agent Tom:`,
    `Thanks, Lukas`);
  - a title + surname, with the **title left out of the value**. The titles are English (`Mr`, `Mr.`, `Ms`,
    `Mrs`, `Dr`, `Prof.`, `Mx`), German (`Herr`, `Frau`, `Dr.`, `Herr Dr.`, `Frau Dr.`), French (`M.`,
    `Monsieur`, `Mme`, `Madame`), Spanish (`Sr.`, `Sra.`, `Señor`, `Señora`), Italian (`Sig.`, `Sig.ra`,
    `Dott.`, `Avv.`), Portuguese (`Sr.`, `Sra.`), Dutch (`dhr.`, `mevr.`, `meneer`, `mevrouw`, with `Van Vliet`
    capitalised after a title) and Polish (`Pan`, `Pani`, `dr`). There are also Turkish `Ahmet Bey` /
    `Ayşe Hanım` → `Ahmet`/`Ayşe` and Japanese `Suzuki-san` → `Suzuki`;
  - the sender's name on its own line under the sign-off, `Employee: …` / `Reporter: …` / `Buddy: …` fields,
    the recipient under `Bill to:` / `Attn:` in invoices.
  A possessive `'s` is excluded (`Lukas's` → `Lukas`).
- **ADDRESS**: Faker `address()` in {address_locales} style. Lines are stripped. Dutch postcodes get their
  space and share the city line (`1012 TX Baard`). Faker's military addresses (APO/FPO) are skipped.
  An address is written either **multi-line** (lines joined by `\\n` exactly as they appear in the text) or
  **single-line** (the same lines joined by `, `), and is sometimes followed by a country (`, Germany` or
  a last line `Polska`). The value runs from the first character of the unit/street to the end of the last
  component (postcode, city, state, province or country), newlines included. A recipient name before the
  address is a separate PERSON. Seller addresses on invoices are labeled too: ADDRESS, EMAIL, PHONE, IBAN,
  CARD and IP are labeled whoever they belong to. Only PERSON and URL are about individuals.

## Genres

| genre | what it looks like |
|---|---|
| `support_email` | Optional `Subject:` line, a greeting (`Hi Priya,`, `Dear Mr. Okafor,`, `Dear Frau Schneider,`, `Hi team,`), 1–3 paragraphs, and a sign-off with the sender's name on its own line, sometimes followed by job title, company, phone, e-mail and a profile or company URL. It is written either by the customer or by the agent. |
| `chat` | `[10:42] Agent Tom: …` / `[10:43] Customer: …` lines, sometimes under a `Chat transcript …` header. The speaker is the agent's given or full name, or `Customer`/`Visitor`, or the customer's name. |
| `hr_note` | Employee records (`Employee:`, `Employee ID:`, `Date of birth:`, SSN, home address, salary IBAN, emergency contact, manager), 1:1 notes, onboarding checklists and leave requests. |
| `invoice` | Multi-line: invoice number, dates, a seller (company, VAT id or address), `Bill to:`/`Invoice to:`/`Attn:` with the name and a 2–4 line address (optionally with a country line), contact lines, an optional `Ship to:`, item lines with amounts, totals and a payment line (IBAN + BIC, card, or card ending). |
| `it_ticket` | Ticket header, reporter (name, e-mail, phone), summary, description (IPs with and without ports, hostnames, error text, URLs with credentials, person URLs in admin tools, version numbers, docs links) and a technician comment. |

## Locales

- Person names ({n_name_locales}): {name_locales}. Faker offers no Latin-script names for ru_RU, uk_UA,
  he_IL, ar_* or el_GR, so those are not used.
- Phone numbers ({n_regions} regions): {phone_regions}. es_ES and cs_CZ give only international forms; the others
  give national ones as well.
- Addresses: {address_locales}.
- IBANs: {iban_countries}.

## Negatives (never labeled)

{n_neg_texts_dev} dev texts and {n_neg_texts_test} test texts (15 %) have no PII at all. The hard negatives below
appear both in those texts and mixed into texts with PII. The table counts occurrences:

{neg_table}

Other unlabeled things: role senders (`The Customer Care Team`), `Customer`/`Visitor`/`Agent`/`Bot` speaker
labels, chat timestamps (`[10:42]`), job titles, department names, item quantities, VAT rates, ports, error
messages and hostnames built from Faker surname domains (`web-75.holmes-moreno.com`). Company names from
Faker `company()` often contain surnames (`Garcia, Rios and Schultz`, `Schmidt GmbH`, `Dufour S.A.R.L.`); they
are never PERSON.

## Counts

{counts_table}

Phone forms (dev / test): {phone_forms}.

Phone numbers per region (dev / test): {phone_regions_counts}.
"""


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    args = ap.parse_args()
    ensure_hash_seed()
    ensure_deps()
    OUT_DIR = Path(args.out).resolve()
    venv = os.environ.get(BOOT_ENV)
    if venv and Path(venv).name.startswith("pii-independent-venv-"):
        atexit.register(shutil.rmtree, venv, ignore_errors=True)
    import faker
    import phonenumbers

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    taken = set()
    results = {}
    for name, seed in SPLITS:
        records, neg_counts, phone_infos, rejects = generate_split(seed, taken)
        for rec in records:
            check_record(rec)
        s = stats(records, phone_infos)
        print_stats(name, s, neg_counts, rejects)
        results[name] = (records, neg_counts, s)
        with open(OUT_DIR / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    dev_texts = {r["text"] for r in results["dev"][0]}
    assert not dev_texts & {r["text"] for r in results["test"][0]}
    assert not (dev_texts | {r["text"] for r in results["test"][0]}) & {r["text"] for r in results["holdout"][0]}

    sd, st = results["dev"][2], results["test"][2]
    rows = ["| type | dev | test | of which (dev / test) |", "|---|---|---|---|"]
    for t in TYPES:
        extra = ""
        if t == "IP":
            extra = f"IPv6: {sd['ipv6']} / {st['ipv6']}"
        if t == "ADDRESS":
            extra = f"multi-line: {sd['multiline_addr']} / {st['multiline_addr']}"
        if t == "PHONE":
            extra = f"with extension: {sd['ext']} / {st['ext']}"
        rows.append(f"| {t} | {sd['counts'][t]} | {st['counts'][t]} | {extra} |")
    rows.append(f"| **total entities** | {sd['total']} | {st['total']} | |")
    rows.append(f"| texts | {sd['n']} | {st['n']} | |")
    rows.append(f"| texts without PII | {sd['no_pii']} | {st['no_pii']} | |")
    rows.append(f"| texts with a non-ASCII name | {sd['nonascii']} ({100 * sd['nonascii'] // sd['n']} %) | "
                f"{st['nonascii']} ({100 * st['nonascii'] // st['n']} %) | |")
    for gname in GENRES:
        rows.append(f"| genre `{gname}` | {sd['genres'][gname]} | {st['genres'][gname]} | |")
    nd, nt = results["dev"][1], results["test"][1]
    neg_rows = ["| negative | dev | test |", "|---|---|---|"]
    for k in sorted(set(nd) | set(nt)):
        neg_rows.append(f"| {k} | {nd[k]} | {nt[k]} |")
    example = dict(results["dev"][0][0])
    example = min((r for r in results["dev"][0] if 2 <= len(r["entities"]) <= 4),
                  key=lambda r: (len(r["text"]), r["id"]))
    iban_countries = sorted({e["value"][:2] for r in results["dev"][0] + results["test"][0]
                             for e in r["entities"] if e["type"] == "IBAN"})
    out_rel = OUT_DIR.relative_to(ROOT).as_posix() if OUT_DIR.is_relative_to(ROOT) else str(OUT_DIR)
    readme = README.format(
        script=SCRIPT, out_arg="" if OUT_DIR == DEFAULT_OUT.resolve() else f" --out {out_rel}",
        n_dev=sd["n"], n_test=st["n"], faker_version=faker.VERSION, pn_version=phonenumbers.__version__,
        seed_dev=SPLITS[0][1], seed_test=SPLITS[1][1], seed_holdout=SPLITS[2][1], n_name_locales=len(NAME_LOCALES),
        name_locales=", ".join(loc for loc, _ in NAME_LOCALES), n_regions=len(PHONE_REGIONS),
        phone_regions=", ".join(f"{r} ({loc})" for r, loc in PHONE_COUNTRIES),
        address_locales=", ".join(ADDRESS_LOCALES), iban_countries=", ".join(iban_countries),
        types=", ".join(f"`{t}`" for t in TYPES), example=json.dumps(example, ensure_ascii=False),
        n_neg_texts_dev=sd["no_pii"], n_neg_texts_test=st["no_pii"], neg_table="\n".join(neg_rows),
        counts_table="\n".join(rows),
        phone_forms=", ".join(f"{k} {sd['forms'][k]} / {st['forms'][k]}" for k in ("national", "intl")) +
        f"; with a cue word in the 40 characters before it on the same line {sd['cued']['cue']} / {st['cued']['cue']}, "
        f"without {sd['cued']['no cue']} / {st['cued']['no cue']}",
        phone_regions_counts=", ".join(f"{r} {sd['regions'][r]} / {st['regions'][r]}" for r in PHONE_REGIONS),
    )
    (OUT_DIR / "README.md").write_text(readme, encoding="utf-8")
    print(f"wrote {OUT_DIR}/dev.jsonl, test.jsonl, holdout.jsonl, README.md")


if __name__ == "__main__":
    main()
