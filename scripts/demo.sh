#!/usr/bin/env bash
# The demo: starts the local broker and ragstream on the embedded default topology, loads the
# sample corpus (corpus/, two tenants) with `ragstream ingest`, feeds updates, a delete and a few
# deliberately malformed documents, then answers the sample questions end to end offline (the
# default topology answers with the documents' best sentence and its source, no model), one of them
# full of personal data that is masked before retrieval and restored in the answer. Shows the answers, the audit events, tenant-scoped searches, the dead-letter topics and
# /metrics. Ctrl-C stops early; everything it started is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ragstream/target}
export PATH="$HOME/.cargo/bin:$PATH"
TOPOLOGY=topologies/default.yaml
BROKER=127.0.0.1:9092
TELEMETRY=127.0.0.1:9898
KCAT=deploy/local/kcat.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

deploy/local/deps.sh
deploy/local/models.sh
started_broker=false
if ! deploy/local/broker.sh status; then
  deploy/local/broker.sh start
  started_broker=true
fi
# The default topology's cost control keeps budgets and the response cache in Redis.
started_redis=false
if ! deploy/local/redis.sh status; then
  deploy/local/redis.sh start
  started_redis=true
fi
ragstream_pid=""
cleanup() {
  if [[ -n $ragstream_pid ]] && kill -0 "$ragstream_pid" 2>/dev/null; then
    kill -TERM "$ragstream_pid"; wait "$ragstream_pid" || true
  fi
  if $started_broker; then deploy/local/broker.sh stop; fi
  if $started_redis; then deploy/local/redis.sh stop; fi
}
trap cleanup EXIT

say "building ragstream"
cargo build --quiet --bin ragstream
BIN=$CARGO_TARGET_DIR/debug/ragstream

say "validating $TOPOLOGY and creating its topics"
$BIN validate "$TOPOLOGY"
RAGSTREAM_BROKERS=$BROKER $BIN topics create --topology "$TOPOLOGY"

say "starting ragstream run --topology $TOPOLOGY"
mkdir -p .run
RAGSTREAM_BROKERS=$BROKER RAGSTREAM_TELEMETRY_LISTEN=$TELEMETRY $BIN run --topology "$TOPOLOGY" 2>.run/ragstream.log &
ragstream_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://$TELEMETRY/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://$TELEMETRY/readyz"

say "ragstream ingest: the sample corpus, one tenant per folder"
$BIN ingest corpus/acme --tenant acme --brokers $BROKER
$BIN ingest corpus/globex --tenant globex --brokers $BROKER

say "producing demo/documents.jsonl (an update, a delete, malformed documents)"
$KCAT -P -b $BROKER -t documents -K '|' -l demo/documents.jsonl

say "waiting until every document is chunked, embedded and indexed"
expected=$(( $(find corpus/acme corpus/globex -type f | wc -l) + 4 ))
for _ in $(seq 1 600); do
  handled=$(curl -fs "http://$TELEMETRY/metrics" | awk '/^ragstream_index_documents_total/ {s += $2} END {print s + 0}')
  [[ $handled -ge $expected ]] && break
  sleep 0.5
done
echo "$handled document versions handled by the index"

say "audit (event, tenant/doc, version, chunks, ms per stage)"
$KCAT -C -b $BROKER -t audit -o beginning -e -q -f '%s\n' | scripts/audit-table.py --documents

say "search: acme, 'How many weeks of parental leave does the primary caregiver get?'"
$BIN search --tenant acme "How many weeks of parental leave does the primary caregiver get?" --top-k 3
say "search: globex, the same question (tenants never see each other's chunks)"
$BIN search --tenant globex "How many weeks of parental leave does the primary caregiver get?" --top-k 2
say "hybrid search: globex, 'rate limit Pro plan requests per minute'"
$BIN search --tenant globex --hybrid "rate limit Pro plan requests per minute" --top-k 3

say "ragstream ask: sample questions from corpus/questions.jsonl, answered offline from the passages (the default; add a model to the topology's generate stage for answers in its own words)"
python3 - <<'PY' > .run/questions.tsv
import json
for line in list(open("corpus/questions.jsonl"))[:6]:
    q = json.loads(line)
    print(f"{q['tenant']}\t{q['question']}\t{q['expected_answer_contains']}")
PY
while IFS=$'\t' read -r tenant question expected; do
  printf '\n\033[1m%s asks:\033[0m %s  (the documents say: %s)\n' "$tenant" "$question" "$expected"
  $BIN ask --tenant "$tenant" "$question" --timeout 300 --brokers $BROKER --partials-topic answers.partial || true
done < .run/questions.tsv

say "ragstream ask with personal data: the model sees placeholders, the answer has the values back"
$BIN ask --tenant acme --brokers $BROKER --timeout 300 \
  "I am Maria Jensen (maria.jensen@example.com, +44 20 7946 0958). How many weeks of parental leave does a primary caregiver get?" || true

say "demo/questions.jsonl: a question, a summary and a malformed question (dead-lettered)"
$KCAT -P -b $BROKER -t questions -K '|' -l demo/questions.jsonl
for _ in $(seq 1 600); do
  answered=$(curl -fs "http://$TELEMETRY/metrics" | awk '/^ragstream_answers_total/ {s += $2} END {print s + 0}')
  [[ $answered -ge 9 ]] && break
  sleep 0.5
done
$KCAT -C -b $BROKER -t answers -o beginning -e -q -f '%k  %s\n' | scripts/answers-table.py

say "audit: question events (status, model, chunks cited, PII masked; never the values)"
$KCAT -C -b $BROKER -t audit -o beginning -e -q -f '%s\n' | scripts/audit-table.py --questions

for topic in documents.dlq questions.dlq; do
  say "$topic (original bytes; reason in headers)"
  $KCAT -C -b $BROKER -t $topic -o beginning -e -q -f '%k  %s\n   %h\n'
done

say "metrics"
curl -fs "http://$TELEMETRY/metrics" | grep -E '^ragstream_(messages|in_flight|committed|assigned|index_documents|index_chunks|answers|llm|pii)' || true

say "stopping ragstream with SIGTERM (drains, commits, exits 0)"
kill -TERM "$ragstream_pid"
wait "$ragstream_pid" && echo "ragstream exited with status 0"
ragstream_pid=""
echo "log: .run/ragstream.log"
