#!/usr/bin/env bash
# The demo: starts the local broker and ragstream on the embedded default topology, loads the
# sample corpus (corpus/, two tenants) with `ragstream ingest`, feeds updates, a delete and a few
# deliberately malformed documents, then answers the sample questions end to end offline (the
# default topology answers with the documents' best sentence and its source, no model), one of them
# full of personal data that is masked before retrieval and restored in the answer, and an order's
# status looked up by a tool the model calls (a scripted stand-in for the model: SmolLM2 cannot call
# tools). Shows the answers, the audit events, tenant-scoped searches, the dead-letter topics and
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
orders_pid=""
demo_servers=()
cleanup() {
  for pid in "$ragstream_pid" "$orders_pid"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"; wait "$pid" || true
    fi
  done
  for pid in "${demo_servers[@]}"; do kill "$pid" 2>/dev/null || true; done
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
  $BIN ask --tenant "$tenant" "$question" --timeout 300 --brokers $BROKER --partials-topic answers.partial \
    --status-topic questions.status || true
done < .run/questions.tsv

say "ragstream ask with personal data: the model sees placeholders, the answer has the values back"
$BIN ask --tenant acme --brokers $BROKER --timeout 300 \
  "I am Maria Jensen (maria.jensen@example.com, +44 20 7946 0958). How many weeks of parental leave does a primary caregiver get?" || true

say "function calling: an order's status from a tool, the customer's e-mail masked from the model"
# topologies/order-status.yaml: a second pipeline whose model may call get_order_status. SmolLM2
# cannot call tools, so its model is a scripted stand-in (scripts/demo/tool_model.py, not a language
# model) and the tool a small order service (scripts/demo/order_service.py), both started here.
ORDERS_TOPOLOGY=topologies/order-status.yaml
ORDERS_TELEMETRY=127.0.0.1:9899
rm -f .run/order-calls.log .run/model-requests.log
python3 scripts/demo/order_service.py --port 8081 --log .run/order-calls.log &
demo_servers+=($!)
python3 scripts/demo/tool_model.py --port 8082 --log .run/model-requests.log &
demo_servers+=($!)
$BIN validate "$ORDERS_TOPOLOGY"
RAGSTREAM_BROKERS=$BROKER $BIN topics create --topology "$ORDERS_TOPOLOGY"
RAGSTREAM_BROKERS=$BROKER RAGSTREAM_TELEMETRY_LISTEN=$ORDERS_TELEMETRY $BIN run --topology "$ORDERS_TOPOLOGY" 2>.run/ragstream-orders.log &
orders_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://$ORDERS_TELEMETRY/readyz" >/dev/null 2>&1 && curl -fs http://127.0.0.1:8081/health >/dev/null 2>&1 \
    && curl -fs http://127.0.0.1:8082/health >/dev/null 2>&1 && break
  sleep 0.2
done
$BIN ask --tenant acme --brokers $BROKER --timeout 120 \
  --questions-topic orders.questions --answers-topic orders.answers --partials-topic orders.answers.partial \
  --status-topic orders.status \
  "What is the status of my order number 123? I am maria.jensen@example.com." || true
echo "the order service was called with:"
sed 's/^/  /' .run/order-calls.log
if grep -q "maria.jensen@example.com" .run/model-requests.log; then
  echo "the model saw the real e-mail (it should not have)"; exit 1
else
  echo "the model's $(wc -l < .run/model-requests.log) requests (.run/model-requests.log) hold placeholders only, never the e-mail"
fi
kill -TERM "$orders_pid"; wait "$orders_pid" || true
orders_pid=""

say "ragstream serve: the same pipeline over HTTP, a question followed as Server-Sent Events"
# A key per tenant; the server keeps only its SHA-256.
DEMO_KEY=demo-key-acme
printf 'keys:\n  - tenant: acme\n    sha256: %s\n' "$(printf %s "$DEMO_KEY" | sha256sum | cut -d' ' -f1)" > .run/demo-keys.yaml
SERVE=127.0.0.1:8088
$BIN serve --listen $SERVE --keys .run/demo-keys.yaml --brokers $BROKER \
  --status-topic questions.status --partials-topic answers.partial 2>.run/serve.log &
serve_pid=$!
demo_servers+=("$serve_pid")
for _ in $(seq 1 100); do
  curl -fs "http://$SERVE/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "POST /v1/questions"
created=$(curl -fs -X POST "http://$SERVE/v1/questions" -H "Authorization: Bearer $DEMO_KEY" \
  -H 'content-type: application/json' \
  -d '{"question": "How many days of annual leave do employees get?", "user": "demo"}')
echo "  $created"
request_id=$(printf '%s' "$created" | python3 -c 'import json, sys; print(json.load(sys.stdin)["request_id"])')
echo "GET /v1/questions/$request_id/events"
curl -fsN --max-time 120 "http://$SERVE/v1/questions/$request_id/events" -H "Authorization: Bearer $DEMO_KEY" \
  | sed -n 's/^event: /  event: /p; s/^data: \(.\{0,150\}\).*/    \1…/p'
echo "the same request without an API key: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://$SERVE/v1/questions/$request_id")"
kill -TERM "$serve_pid"; wait "$serve_pid" || true

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

say "ragstream sql: the built-in reports over the audit table (Parquet in data/audit), this run's last hour"
for report in spend-by-tenant-model cache-hit-rate no-context-questions slowest-stages; do
  echo "--report $report"
  $BIN sql --report $report --since 1h
done
