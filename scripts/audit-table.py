#!/usr/bin/env python3
"""Prints audit events (JSON lines on stdin) as a table: event, tenant/doc, version, chunks, ms."""
import json
import sys

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    event = json.loads(line)
    durations = event.get("durations_ms", {})
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
