#!/usr/bin/env python3
"""Writes the independent PII evaluation set: tests/fixtures/pii-independent/{dev,test}.jsonl.

Independent of the detector: generated with Faker (MIT; many locales, its own name, address and
phone data), not with the census / names-dataset / gender-guesser lists the detector uses, and
with templates written for this set only (not those of scripts/pii-labeled-set.py). `dev` is for
reading failures while working on the rules; `test` is for reporting only. See the README there.

Run: python3 scripts/pii-independent-set.py  (installs faker==40.54.0 and phonenumbers==9.0.43
into a temporary venv if missing). Deterministic: the same bytes every run.
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/pii-independent"
SPLITS = {"dev": (11, 1000), "test": (29, 1000)}

NAME_LOCALES = ["en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "es_MX", "it_IT", "pt_BR", "nl_NL", "pl_PL",
                "sv_SE", "da_DK", "fi_FI", "tr_TR", "cs_CZ", "hu_HU", "ro_RO", "vi_VN", "id_ID", "ja_JP", "zh_CN",
                "en_AU", "en_CA", "no_NO", "pt_PT", "hr_HR", "sk_SK", "en_IE", "fr_CA"]
PHONE_LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES", "it_IT": "IT",
                 "nl_NL": "NL", "en_IN": "IN", "pt_BR": "BR", "en_AU": "AU", "pl_PL": "PL", "sv_SE": "SE",
                 "ja_JP": "JP", "es_MX": "MX", "cs_CZ": "CZ", "da_DK": "DK", "ro_RO": "RO", "en_CA": "CA"}
ADDRESS_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "en_AU", "en_CA",
                   "sv_SE", "cs_CZ", "da_DK"]
GENRES = ["email", "chat", "hr_note", "invoice", "it_ticket"]


def ensure_packages():
    try:
        import faker  # noqa: F401
        import phonenumbers  # noqa: F401
    except ImportError:
        venv = Path(tempfile.mkdtemp()) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "-q", "install", "faker==40.54.0", "phonenumbers==9.0.43"], check=True)
        os.execv(str(venv / "bin/python"), [str(venv / "bin/python"), *sys.argv])


class Text:
    """A text built piece by piece, remembering where each labelled value lands."""

    def __init__(self):
        self.parts = []
        self.entities = []
        self.length = 0

    def add(self, text):
        self.parts.append(text)
        self.length += len(text)
        return self

    def pii(self, kind, value):
        self.entities.append({"type": kind, "value": value, "start": self.length, "end": self.length + len(value)})
        return self.add(value)

    def record(self, rid, genre):
        text = "".join(self.parts)
        for e in self.entities:
            assert text[e["start"]:e["end"]] == e["value"], e
        return {"id": rid, "genre": genre, "text": text, "entities": self.entities}


class Gen:
    def __init__(self, seed):
        from faker import Faker
        import phonenumbers
        self.pn = phonenumbers
        self.r = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(sorted(set(NAME_LOCALES) | set(PHONE_LOCALES) | set(ADDRESS_LOCALES))):
            f = Faker(loc)
            f.seed_instance(seed * 1000 + i)
            self.fakers[loc] = f
        self.en = self.fakers["en_US"]

    def pick(self, items):
        return self.r.choice(items)

    # --- people -------------------------------------------------------------------------------
    def person(self):
        """(first, last, full) in Latin script, in the order the locale writes names."""
        loc = self.pick(NAME_LOCALES)
        f = self.fakers[loc]
        if loc in ("ja_JP", "zh_CN"):
            first, last = f.first_romanized_name(), f.last_romanized_name()
        else:
            first, last = f.first_name(), f.last_name()
        full = f"{last} {first}" if loc in ("vi_VN", "hu_HU") else f"{first} {last}"
        if loc in ("vi_VN", "hu_HU"):
            first = first.split()[-1]
        return first, last, full, loc

    def title(self, loc):
        return {"de_DE": ["Herr", "Frau", "Dr."], "fr_FR": ["M.", "Mme", "Dr"], "es_ES": ["Sr.", "Sra."],
                "es_MX": ["Sr.", "Sra."], "it_IT": ["Sig.", "Dott."], "nl_NL": ["Dhr.", "Mevr."],
                "pl_PL": ["Pan", "Pani"]}.get(loc, ["Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mr", "Ms"])

    # --- formats ------------------------------------------------------------------------------
    def phone(self):
        loc = self.pick(list(PHONE_LOCALES))
        region = PHONE_LOCALES[loc]
        for _ in range(40):
            value = self.fakers[loc].phone_number().strip()
            try:
                number = self.pn.parse(value, region)
            except self.pn.NumberParseException:
                continue
            if self.pn.is_valid_number(number):
                if self.r.random() < 0.12 and "x" not in value and "ext" not in value:
                    value += self.pick([" ext. ", " x", " ext ", " extension "]) + str(self.r.randint(10, 9999))
                return value
        return self.fakers["en_GB"].phone_number()  # rarely reached; en_GB numbers validate

    def email(self, first, last):
        user = self.pick([f"{first}.{last}", f"{first[0]}{last}", f"{first}{self.r.randint(1, 99)}", f"{last}.{first}"])
        user = re.sub(r"[^a-z0-9.]", "", user.lower().encode("ascii", "ignore").decode()) or "user"
        return f"{user}@{self.en.free_email_domain() if self.r.random() < 0.5 else self.en.domain_name()}"

    def address(self):
        loc = self.pick(ADDRESS_LOCALES)
        lines = [line.strip() for line in self.fakers[loc].address().split("\n") if line.strip()]
        if self.r.random() < 0.3 and loc in ("en_US", "en_GB", "en_CA", "en_AU", "de_DE", "fr_FR"):
            country = {"en_US": "USA", "en_GB": "United Kingdom", "en_CA": "Canada", "en_AU": "Australia",
                       "de_DE": "Germany", "fr_FR": "France"}[loc]
            lines.append(country)
        return ", ".join(lines) if self.r.random() < 0.4 else "\n".join(lines)

    def ssn(self):
        digits = self.en.ssn().replace("-", "")
        a, g, s = digits[:3], digits[3:5], digits[5:]
        return self.pick([f"{a}-{g}-{s}", f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}{g}{s}"])

    def dob(self):
        d = self.en.date_of_birth(minimum_age=18, maximum_age=90)
        return self.pick([d.strftime("%d/%m/%Y"), d.strftime("%m/%d/%Y"), d.strftime("%Y-%m-%d"), d.strftime("%d.%m.%Y"),
                          f"{d.day} {d.strftime('%B %Y')}", d.strftime("%B %d, %Y"), d.strftime("%b %d, %Y")])

    def date(self):
        d = self.en.date_between(start_date="-2y", end_date="+1y")
        return self.pick([d.strftime("%d/%m/%Y"), d.strftime("%Y-%m-%d"), f"{d.day} {d.strftime('%B %Y')}",
                          d.strftime("%B %d"), d.strftime("%A, %d %B")])

    def person_url(self, first, last):
        slug = re.sub(r"[^a-z0-9-]", "", f"{first}-{last}".lower().encode("ascii", "ignore").decode())
        user = self.en.user_name()
        domain = self.en.domain_name()
        return self.pick([
            f"https://www.linkedin.com/in/{slug}-{self.r.randint(100, 999)}a{self.r.randint(10, 99)}",
            f"https://github.com/{user}", f"https://twitter.com/{user}", f"https://www.facebook.com/{user}",
            f"https://instagram.com/{user}", f"https://medium.com/@{user}",
            f"https://{domain}/users/{self.r.randint(1000, 99999)}",
            f"https://{domain}/profile/{user}", f"https://{domain}/people/{slug}",
            f"https://crm.{domain}/contacts?id={self.r.randint(1000, 99999)}&name={slug.replace('-', '.')}",
            f"https://portal.{domain}/account?uid={self.r.randint(10000, 999999)}",
            f"https://{domain}/~{user}",
        ])

    def credential_url(self):
        return self.pick(["postgres", "mysql", "https", "ftp", "redis", "amqp"]) + \
            f"://{self.en.user_name()}:{self.en.password(length=10, special_chars=False)}@{self.en.hostname()}/{self.en.word()}"

    def card(self):
        return self.en.credit_card_number(card_type=self.pick(["visa16", "mastercard", "amex", "discover"]))

    def iban(self):
        return self.fakers[self.pick(["de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_GB", "pl_PL"])].iban()

    # --- negatives ----------------------------------------------------------------------------
    def negative_phrase(self):
        f = self.fakers[self.pick(ADDRESS_LOCALES)]
        return self.pick([
            f"Order {self.r.randint(1000000, 9999999999)} shipped on {self.date()}.",
            f"Invoice INV-{self.r.randint(2019, 2026)}-{self.r.randint(1000, 99999)} is due {self.date()}.",
            f"The contract with {f.company()} renews in {self.en.month_name()}.",
            f"Our {f.city()} office is closed on {self.en.day_of_week()}.",
            f"The {f.street_name()} store has the new stock.",
            f"Version {self.r.randint(1, 12)}.{self.r.randint(0, 30)}.{self.r.randint(0, 99)} fixed the sync bug.",
            f"See https://docs.{self.en.domain_name()}/guide/{self.en.word()} for the steps.",
            f"Ticket INC{self.r.randint(100000, 9999999)} was merged into PRB{self.r.randint(1000, 99999)}.",
            f"The meeting moved to {self.en.day_of_week()} {self.date()} at {self.r.randint(8, 17)}:00.",
            f"{f.company()} sent {self.r.randint(2, 40)} units of the {self.en.word().title()} {self.pick(['Pro', 'Max', 'Lite'])}.",
            f"Total: {self.r.randint(10, 9000)}.{self.r.randint(10, 99)} EUR, VAT {self.r.randint(5, 25)}%.",
            f"Status page: https://status.{self.en.domain_name()} shows no incident.",
            f"We ship from {f.city()} to {self.fakers['en_US'].city()} within {self.r.randint(2, 9)} days.",
        ])


SIGNOFFS = ["Best regards", "Kind regards", "Regards", "Thanks", "Many thanks", "Cheers", "Best", "Sincerely",
            "Thank you", "Warm regards"]
GREETINGS = ["Hi", "Hello", "Dear", "Hey", "Good morning"]


def email(g, with_pii):
    t = Text()
    sender = g.person()
    recipient = g.person()
    if with_pii:
        if g.r.random() < 0.3:
            title = g.pick(g.title(recipient[3]))
            t.add(f"Dear {title} ").pii("PERSON", recipient[1]).add(",\n\n")
        else:
            t.add(f"{g.pick(GREETINGS)} ").pii("PERSON", recipient[0]).add(",\n\n")
    else:
        t.add(g.pick(["Hi team,", "Hello all,", "Dear Customer,", "Hi there,", "Good morning everyone,"]) + "\n\n")
    t.add(g.negative_phrase() + " ")
    if with_pii:
        for kind in g.r.sample(["PHONE", "EMAIL", "ADDRESS", "CARD", "IBAN", "URL", "DOB", "COLLEAGUE"], g.r.randint(1, 3)):
            if kind == "PHONE":
                t.add(g.pick(["You can call me on ", "My mobile is ", "Phone: ", "Reach me at ", "The number we have is "])) \
                    .pii("PHONE", g.phone()).add(". ")
            elif kind == "EMAIL":
                t.add("Please reply to ").pii("EMAIL", g.email(sender[0], sender[1])).add(" instead. ")
            elif kind == "ADDRESS":
                t.add(g.pick(["My new address is:\n", "Please send the replacement to\n", "Shipping address: "])) \
                    .pii("ADDRESS", g.address()).add("\n")
            elif kind == "CARD":
                t.add("The charge went to my card ").pii("CARD", g.card()).add(". ")
            elif kind == "IBAN":
                t.add("Refund to ").pii("IBAN", g.iban()).add(" please. ")
            elif kind == "URL":
                t.add("My profile: ").pii("URL", g.person_url(sender[0], sender[1])).add(" ")
            elif kind == "DOB":
                t.add("For verification, my date of birth is ").pii("DOB", g.dob()).add(". ")
            elif kind == "COLLEAGUE":
                other = g.person()
                t.add(g.pick(["My colleague ", "I spoke with ", "Your agent ", "Please copy "])).pii("PERSON", other[2]) \
                    .add(g.pick([" about this.", " last week.", " on the thread."]) + " ")
    t.add(g.negative_phrase())
    t.add(f"\n\n{g.pick(SIGNOFFS)},\n")
    if with_pii:
        t.pii("PERSON", sender[2] if g.r.random() < 0.7 else sender[0])
        if g.r.random() < 0.3:
            t.add("\n" + g.pick(["Account Manager", "Operations", "Customer Success"]) + " | " + g.fakers[sender[3] if sender[3] in ADDRESS_LOCALES else "en_US"].company())
    else:
        t.add(g.pick(["The Support Team", "Customer Care", "Billing Department", "IT Service Desk"]))
    return t


def chat(g, with_pii):
    t = Text()
    agent, customer = g.person(), g.person()
    h, m = g.r.randint(8, 18), g.r.randint(0, 50)

    def stamp():
        nonlocal m
        m += g.r.randint(0, 3)
        return f"[{h:02d}:{m % 60:02d}] "

    if with_pii:
        t.add(stamp() + "Agent ").pii("PERSON", agent[0]).add(": Hello, how can I help?\n")
        t.add(stamp()).pii("PERSON", customer[2]).add(": Hi ").pii("PERSON", agent[0]).add(", " + g.negative_phrase() + "\n")
        kind = g.pick(["PHONE", "EMAIL", "CARD", "SSN", "ADDRESS", "DOB"])
        t.add(stamp() + "Agent ").pii("PERSON", agent[0]).add(": Can you confirm your details?\n")
        t.add(stamp()).pii("PERSON", customer[2]).add(": ")
        if kind == "PHONE":
            t.add("sure, my number is ").pii("PHONE", g.phone())
        elif kind == "EMAIL":
            t.add("my email is ").pii("EMAIL", g.email(customer[0], customer[1]))
        elif kind == "CARD":
            t.add("card number ").pii("CARD", g.card())
        elif kind == "SSN":
            t.add(g.pick(["SSN ", "my social security number is ", "ssn: "])).pii("SSN", g.ssn())
        elif kind == "ADDRESS":
            t.add("I live at ").pii("ADDRESS", g.address().replace("\n", ", "))
        else:
            t.add("born ").pii("DOB", g.dob())
        t.add("\n" + stamp() + "Agent ").pii("PERSON", agent[0]).add(f": Thanks, {g.negative_phrase()}\n")
    else:
        t.add(stamp() + "Agent: Hello, how can I help?\n")
        t.add(stamp() + "Customer: " + g.negative_phrase() + "\n")
        t.add(stamp() + "Agent: " + g.negative_phrase() + "\n")
    return t


def hr_note(g, with_pii):
    t = Text()
    employee, manager = g.person(), g.person()
    if with_pii:
        t.add("HR note, " + g.date() + "\nEmployee: ").pii("PERSON", employee[2]).add("\nManager: ").pii("PERSON", manager[2])
        if g.r.random() < 0.5:
            t.add("\nDate of birth: ").pii("DOB", g.dob())
        if g.r.random() < 0.4:
            t.add("\nSSN: ").pii("SSN", g.ssn())
        if g.r.random() < 0.4:
            t.add("\nHome address:\n").pii("ADDRESS", g.address())
        t.add(f"\n\n").pii("PERSON", employee[0]).add(f" asked for parental leave starting {g.date()}. ")
        t.add(g.pick(["Mr. ", "Ms. ", "Dr. "])).pii("PERSON", manager[1]).add(" approved it. ")
        t.add(g.negative_phrase())
    else:
        t.add(f"HR note, {g.date()}\nTopic: {g.pick(['summer hours', 'payroll calendar', 'training budget'])}\n\n")
        t.add(g.negative_phrase() + " " + g.negative_phrase())
    return t


def invoice(g, with_pii):
    t = Text()
    t.add(f"INVOICE INV-{g.r.randint(2020, 2026)}-{g.r.randint(100, 99999)}\nDate: {g.date()}\n")
    f = g.fakers[g.pick(ADDRESS_LOCALES)]
    if with_pii:
        customer = g.person()
        t.add("Bill to:\n").pii("PERSON", customer[2]).add("\n").pii("ADDRESS", g.address().replace(", ", "\n"))
        t.add(f"\n\nFrom: {f.company()}\n")
    else:
        t.add(f"Bill to:\n{f.company()}\nAccounts Payable\n\nFrom: {g.fakers['en_US'].company()}\n")
    for _ in range(g.r.randint(1, 3)):
        t.add(f"{g.en.word().title()} service, {g.r.randint(1, 20)} x {g.r.randint(5, 500)}.00\n")
    t.add(f"Total: {g.r.randint(100, 9999)}.{g.r.randint(10, 99)} EUR, due {g.date()}\n")
    if with_pii:
        t.add("Pay to IBAN ").pii("IBAN", g.iban()).add("\nQuestions: ")
        seller = g.person()
        t.pii("EMAIL", g.email(seller[0], seller[1])).add(" or ").pii("PHONE", g.phone())
    else:
        t.add(f"Pay within 30 days quoting the invoice number. {g.negative_phrase()}")
    return t


def it_ticket(g, with_pii):
    t = Text()
    t.add(f"Ticket INC{g.r.randint(100000, 9999999)} | Priority {g.pick(['P1', 'P2', 'P3'])}\n")
    if with_pii:
        reporter = g.person()
        t.add("Reporter: ").pii("PERSON", reporter[2]).add(" (").pii("EMAIL", g.email(reporter[0], reporter[1])).add(")\n")
        t.add(f"Host {g.en.hostname()} (").pii("IP", g.pick([g.en.ipv4_public(), g.en.ipv4_private(), g.en.ipv6()])) \
            .add(f") cannot reach the database since {g.date()}.\n")
        if g.r.random() < 0.5:
            t.add("Connection string in the config: ").pii("URL_CREDENTIALS", g.credential_url()).add("\n")
        if g.r.random() < 0.5:
            t.add("User profile: ").pii("URL", g.person_url(reporter[0], reporter[1])).add("\n")
        if g.r.random() < 0.3:
            t.add("Call back on ").pii("PHONE", g.phone()).add("\n")
        t.add(g.negative_phrase())
    else:
        t.add(f"Host {g.en.hostname()} reports error 0x{g.r.randint(4096, 65535):04X} after update {g.r.randint(1, 9)}.{g.r.randint(0, 20)}.{g.r.randint(0, 999)}.\n")
        t.add(g.negative_phrase())
    return t


BUILDERS = {"email": email, "chat": chat, "hr_note": hr_note, "invoice": invoice, "it_ticket": it_ticket}


def main():
    ensure_packages()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {}
    for split, (seed, count) in SPLITS.items():
        g = Gen(seed)
        records = []
        for i in range(count):
            genre = GENRES[i % len(GENRES)]
            with_pii = g.r.random() >= 0.15
            records.append(BUILDERS[genre](g, with_pii).record(i + 1, genre))
        (OUT / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        counts = {}
        for r in records:
            for e in r["entities"]:
                counts[e["type"]] = counts.get(e["type"], 0) + 1
        non_ascii = sum(any(not c.isascii() for e in r["entities"] if e["type"] == "PERSON" for c in e["value"]) for r in records)
        clean = sum(not r["entities"] for r in records)
        summary[split] = (counts, non_ascii, clean, len(records))
        print(split, len(records), "texts;", sum(counts.values()), "values;", dict(sorted(counts.items())),
              f"; non-ASCII names in {non_ascii} texts; {clean} texts without personal data")


if __name__ == "__main__":
    main()
