#!/usr/bin/env python3
"""Grounded-QA benchmark: asks every question of the question files through the real pipeline
(broker, ragstream run, `ragstream ask --json`) once per candidate answerer and prints accuracy.

Called by scripts/qa-benchmark.sh, which starts the broker, builds ragstream and loads the corpus;
this script writes one topology per candidate (the embedded default with the candidate's
`generate` models, its own topics and index, no response cache), runs it, asks, scores.

Per candidate:
- answered: share of answerable questions whose answer contains `expected_answer_contains`
  (case-insensitive) and whose status is ok or extractive;
- cited: share of those answers that cite the question's `source` document;
- refused: share of unanswerable questions (`expected_answer_contains: null`) answered
  `no_context` or `low_confidence`, or without any of the corpus' facts being claimed as `ok`;
- statuses, latency p50/p95 (ms, as the answer reports it), completion tokens per second.
"""
import argparse
import copy
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

CANDIDATES = {
    # The shipped default: SmolLM2-135M in-process; a non-answer falls back to the passages.
    "smollm2-135m": [
        {
            "name": "smollm2-135m",
            "provider": "local",
            "model_path": "${RAGSTREAM_MODELS_DIR:-models}/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            "context_tokens": 8192,
        }
    ],
    # No model: the best-supported sentence of the passages.
    "extractive": [],
}


def topology(base, candidate, prefix, lancedb, stage_settings):
    """The default topology with `candidate`'s models, topics under `prefix`, index at `lancedb`,
    and `stage_settings` (`{"retrieve": {"top_k": 8}}`) on the stages of those types."""
    doc = copy.deepcopy(base)
    doc["telemetry"] = {"listen": os.environ.get("QA_TELEMETRY", "127.0.0.1:9899")}
    for pipeline in doc["pipelines"]:
        pipeline["source"]["topic"] = prefix + pipeline["source"]["topic"]
        pipeline["source"]["group"] = prefix + pipeline["source"]["group"]
        for sink in pipeline.get("sinks", []):
            sink["topic"] = prefix + sink["topic"]
        if "dead_letter" in pipeline:
            pipeline["dead_letter"]["topic"] = prefix + pipeline["dead_letter"]["topic"]
        for stage in pipeline["stages"]:
            if stage["type"] in ("index", "retrieve"):
                stage["uri"] = str(lancedb)
            stage.update(stage_settings.get(stage["type"], {}))
            if stage["type"] == "generate":
                stage["models"] = copy.deepcopy(CANDIDATES[candidate])
                # Every candidate answers every question itself: no cached answers.
                stage.pop("cost_control", None)
    return doc


def metric(telemetry, name):
    try:
        with urllib.request.urlopen(f"http://{telemetry}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def wait_ready(telemetry, process, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"ragstream exited with {process.returncode}; see its log")
        try:
            urllib.request.urlopen(f"http://{telemetry}/readyz", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    sys.exit("ragstream did not become ready")


def percentile(values, share):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--brokers", default=os.environ.get("RAGSTREAM_BROKERS", "127.0.0.1:9092"))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--questions", nargs="+", default=["corpus/questions.jsonl", "corpus/qa-benchmark.jsonl"])
    parser.add_argument("--out", default=".run/qa-benchmark")
    parser.add_argument("--show-answers", action="store_true")
    parser.add_argument("--stage", action="append", default=[], metavar="TYPE.KEY=VALUE",
                        help="a stage setting for every candidate, e.g. --stage retrieve.hybrid=false --stage retrieve.top_k=4")
    args = parser.parse_args()

    stage_settings = {}
    for setting in args.stage:
        name, _, value = setting.partition("=")
        stage_type, _, key = name.partition(".")
        stage_settings.setdefault(stage_type, {})[key] = yaml.safe_load(value)
    questions = []
    for path in args.questions:
        for number, line in enumerate(open(ROOT / path, encoding="utf-8"), 1):
            if line.strip():
                q = json.loads(line)
                q.setdefault("kind", "fact")
                q["where"] = f"{path}:{number}"
                questions.append(q)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(open(ROOT / "topologies/default.yaml", encoding="utf-8"))
    prefix = f"qa{random.randrange(16**6):06x}."
    lancedb = out / f"lancedb-{prefix.rstrip('.')}"
    telemetry = os.environ.get("QA_TELEMETRY", "127.0.0.1:9899")
    env = dict(os.environ, RAGSTREAM_BROKERS=args.brokers)
    documents = sum(1 for tenant in ("acme", "globex") for f in (ROOT / "corpus" / tenant).iterdir() if f.is_file())
    results = {}
    for index, candidate in enumerate(args.candidates.split(",")):
        path = out / f"{candidate}.yaml"
        path.write_text(yaml.safe_dump(topology(base, candidate, prefix, lancedb, stage_settings), sort_keys=False))
        if index == 0:
            subprocess.run([args.bin, "topics", "create", "--topology", str(path)], check=True, env=env)
        log = open(out / f"{candidate}.log", "w")
        process = subprocess.Popen([args.bin, "run", "--topology", str(path)], stderr=log, env=env)
        try:
            wait_ready(telemetry, process)
            if index == 0:
                for tenant in ("acme", "globex"):
                    subprocess.run(
                        [args.bin, "ingest", f"corpus/{tenant}", "--tenant", tenant, "--brokers", args.brokers,
                         "--topic", prefix + "documents"],
                        check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                    )
                deadline = time.time() + 900
                while (metric(telemetry, "ragstream_index_documents_total") or 0) < documents:
                    if time.time() > deadline:
                        sys.exit("the corpus was not indexed in 15 minutes")
                    time.sleep(0.5)
            answers = []
            for q in questions:
                started = time.time()
                run = subprocess.run(
                    [args.bin, "ask", "--json", "--tenant", q["tenant"], q["question"], "--timeout", "600",
                     "--brokers", args.brokers, "--questions-topic", prefix + "questions",
                     "--answers-topic", prefix + "answers"],
                    capture_output=True, text=True, env=env,
                )
                try:
                    answer = json.loads(run.stdout)
                except json.JSONDecodeError:
                    answer = {"status": "error", "answer": run.stderr.strip()[-300:], "citations": []}
                answer["wall_ms"] = 1000 * (time.time() - started)
                answers.append(answer)
                if args.show_answers:
                    print(f"[{candidate}] {q['question']}\n    -> {answer.get('status')}: {answer.get('answer')!r}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait()
            log.close()
        results[candidate] = score(questions, answers)
        (out / f"{candidate}.answers.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(questions, answers))
        )
    print_table(results, questions)


def score(questions, answers):
    answerable = [(q, a) for q, a in zip(questions, answers) if q.get("expected_answer_contains")]
    unanswerable = [(q, a) for q, a in zip(questions, answers) if not q.get("expected_answer_contains")]

    def right(q, a):
        text = (a.get("answer") or "").lower()
        return a.get("status") in ("ok", "extractive") and q["expected_answer_contains"].lower() in text

    def cites_source(q, a):
        source = q.get("source")
        docs = {c.get("doc_id", "") for c in a.get("citations", [])}
        return any(source and (d == source or d.endswith(source.split("/", 1)[-1])) for d in docs) if source else bool(docs)

    correct = [(q, a) for q, a in answerable if right(q, a)]
    with_source = [q for q in questions if q.get("source")]
    statuses = {}
    for a in answers:
        statuses[a.get("status")] = statuses.get(a.get("status"), 0) + 1
    latencies = [a["latency_ms"] for a in answers if isinstance(a.get("latency_ms"), (int, float))]
    tokens = sum(a.get("usage", {}).get("completion_tokens", 0) for a in answers)
    seconds = sum(a["latency_ms"] for a in answers if a.get("usage", {}).get("completion_tokens")) / 1000
    pii = [(q, a) for q, a in answerable if q.get("kind") == "pii"]
    return {
        "answered": len(correct) / max(1, len(answerable)),
        "answered_n": f"{len(correct)}/{len(answerable)}",
        "sample": sum(1 for q, a in correct if "source" not in q),
        "cited": sum(1 for q, a in correct if cites_source(q, a)) / max(1, len(correct)),
        "pii": f"{sum(1 for q, a in pii if right(q, a))}/{len(pii)}",
        "refused": sum(1 for q, a in unanswerable if a.get("status") in ("no_context", "low_confidence")),
        "refused_n": len(unanswerable),
        "statuses": statuses,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "tokens_per_s": tokens / seconds if seconds else float("nan"),
        "with_source": len(with_source),
    }


def print_table(results, questions):
    sample = sum(1 for q in questions if "source" not in q and q.get("expected_answer_contains"))
    print(f"\n{len(questions)} questions ({sample} from corpus/questions.jsonl)")
    print(f"{'candidate':<14} {'answered':>9} {'n':>7} {'sample':>7} {'pii':>5} {'cited':>6} {'refused':>8} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'tok/s':>6}  statuses")
    for name, r in results.items():
        print(f"{name:<14} {r['answered']:>9.1%} {r['answered_n']:>7} {r['sample']:>4}/{sample:<2} {r['pii']:>5} "
              f"{r['cited']:>6.0%} {r['refused']:>4}/{r['refused_n']:<3} {r['p50']:>8.0f} {r['p95']:>8.0f} "
              f"{r['tokens_per_s']:>6.1f}  {json.dumps(r['statuses'])}")


if __name__ == "__main__":
    main()
