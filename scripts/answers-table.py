#!/usr/bin/env python3
"""Prints answers (lines `key  json` on stdin, as kcat -f '%k  %s\n' writes them) as a table."""
import json
import sys

for line in sys.stdin:
    key, _, body = line.strip().partition("  ")
    if not body:
        continue
    answer = json.loads(body)
    text = (answer.get("answer") or answer.get("reason") or "").replace("\n", " ")
    print("{:22} {:10} {:14} {}".format(key, answer["status"], answer.get("model", "-"), text[:110]))
