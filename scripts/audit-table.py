#!/usr/bin/env python3
"""Prints audit events (JSON lines on stdin) as a table.

--documents: document events (event, tenant/doc, version, chunks, ms per stage).
--questions: question events (request, status, model, chunks cited/retrieved, PII counts, ms).
"""
import json
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "--documents"

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    event = json.loads(line)
    durations = event.get("durations_ms", {})
    if event["event"] == "question_answered":
        if mode != "--questions":
            continue
        cited = sum(1 for c in event["chunks"] if c["cited"])
        pii = ",".join(f"{k}={v}" for k, v in sorted(event["pii_counts"].items())) or "-"
        print(
            "{:26} {:10} {:14} cited={}/{} attempts={} pii={:28} generate={:8.1f} total={:8.1f}".format(
                event["tenant"] + "/" + event["request_id"],
                event["status"],
                event.get("model", "-"),
                cited,
                len(event["chunks"]),
                len(event["attempts"]),
                pii,
                durations.get("generate", 0.0),
                durations.get("total", 0.0),
            )
        )
        continue
    if mode != "--documents":
        continue
    document = "{}/{}".format(event.get("tenant", "-"), event.get("doc_id", "-"))
    print(
        "{:17} {:44} v{:<14} chunks={:<4} embed={:8.1f} index={:7.1f} total={:8.1f} {}".format(
            event["event"],
            document,
            event.get("version", "-"),
            str(event.get("chunk_count", "-")),
            durations.get("embed", 0.0),
            durations.get("index", 0.0),
            durations.get("total", 0.0),
            event.get("reason", ""),
        )
    )
