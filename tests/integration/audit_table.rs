//! The audit table through the real broker: the answering pipeline writes its audit events; a
//! second process, a pipeline of one `audit_table` stage on the audit topic, writes them as
//! Parquet and is killed with `kill -9` while it keeps writing files. After its restarts every
//! audit event is in the table, every file is readable, `ragstream sql` adds tokens and cost up
//! per tenant and model exactly as the answers do, and DuckDB reads the same files as they are.

use crate::answering::{answers_for, question, start, Setup};
use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripted_llm::{always_answer, ScriptedLlm};
use common::*;
use ragstream::analytics::location::TableLocation;
use ragstream::analytics::query::{render, run, session, OutputFormat};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const QUESTIONS: usize = 300;

/// Two priced models behind the scripted server, one per tier; a question's `model_tier` picks.
fn two_models(url: &str) -> Setup {
    Setup {
        models: format!(
            "[{{ name: small, provider: openai, base_url: \"{url}\", model: scripted-small, timeout_ms: 5000, \
               price: {{ input_per_million: 0.5, output_per_million: 1.5 }} }}, \
              {{ name: large, provider: openai, base_url: \"{url}\", model: scripted-large, timeout_ms: 5000, \
               price: {{ input_per_million: 5, output_per_million: 15 }} }}]"
        ),
        generate_extra: ", tiers: { cheap: [small], best: [large] }".to_owned(),
        ..Setup::openai(url)
    }
}

/// Files under `dir` whose names end in `suffix`, at any depth.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|entry| entry.path().display().to_string())
        .filter(|path| path.ends_with(suffix))
        .collect()
}

/// Waits until at least `count` Parquet files exist under `dir`.
async fn wait_for_files(dir: &Path, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while files_ending(dir, ".parquet").len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} audit table files after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The event ids in the table (repeats dropped); fails at once on an unreadable file.
async fn table_event_ids(dir: &Path) -> HashSet<String> {
    let location = TableLocation::open(dir.to_str().unwrap(), &BTreeMap::new()).unwrap();
    let context = session(&location, None)
        .await
        .expect("every file of the table is readable");
    let batches = run(&context, "SELECT event_id FROM audit_events").await.unwrap();
    render(&batches, OutputFormat::Csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// (tenant, model) → (input tokens, output tokens, cost) from CSV lines with those columns.
type Sums = BTreeMap<(String, String), (u64, u64, f64)>;

fn sums_from_csv(csv: &str) -> Sums {
    csv.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (
                (fields[0].to_owned(), fields[1].to_owned()),
                (
                    fields[2].parse().unwrap(),
                    fields[3].parse().unwrap(),
                    fields[4].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// The Python of the deployment checks' tools, which has DuckDB (`scripts/check-deploy.sh
/// --install` puts it there; `scripts/test.sh` runs that first).
fn duckdb_python() -> std::path::PathBuf {
    let cache = std::env::var("RAGSTREAM_CACHE_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/ragstream", std::env::var("HOME").unwrap()));
    Path::new(&cache).join("deploy-tools/venv/bin/python")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_audit_event_reaches_the_table_through_kill_9_and_its_sums_match_the_answers() {
    let llm = ScriptedLlm::start(
        always_answer(),
        Arc::new(|_| "Refunds are accepted within 30 days [1].".into()),
    )
    .await;
    let running = start("audit-table", two_models(&llm.url)).await;

    let table = tempfile::tempdir().unwrap();
    let mut sink = TestTopology::new("audit-table-sink");
    sink.input = running.audit_topic.clone();
    sink.max_in_flight = 64;
    // Small files, cut often: the kills below land among many writes.
    sink.stages = format!(
        "[{{ type: audit_table, uri: \"{}\", flush: {{ max_rows: 16, max_wait_ms: 200 }} }}]",
        table.path().display()
    );
    create_topics(&[&sink.output, &sink.dead_letter], 3).await;
    let mut writer = Ragstream::start(&sink);
    writer.wait_ready(Duration::from_secs(60)).await;
    // The answers table beside it, written by a third process from the answers topic.
    let mut answers_sink = TestTopology::new("answers-table-sink");
    answers_sink.input = running.topology.output.clone();
    answers_sink.max_in_flight = 64;
    answers_sink.stages = format!(
        "[{{ type: audit_table, table: answers, uri: \"{}\", flush: {{ max_rows: 64, max_wait_ms: 200 }} }}]",
        table.path().display()
    );
    create_topics(&[&answers_sink.output, &answers_sink.dead_letter], 3).await;
    let answers_writer = Ragstream::start(&answers_sink);

    let mut ids = HashSet::new();
    let mut messages = Vec::new();
    for i in 0..QUESTIONS {
        let request_id = unique(&format!("audit-{i}"));
        let tier = if i % 2 == 0 { "cheap" } else { "best" };
        messages.push(question(
            &request_id,
            TENANTS[i % TENANTS.len()],
            &format!("What is the refund policy? (case {i})"),
            "qa",
            serde_json::json!({ "model_tier": tier }),
        ));
        ids.insert(request_id);
    }
    produce_all(&running.topology.input, messages).await;

    // kill -9 while the writer is busy, twice: its uncommitted events are read again on restart.
    for files_before_kill in [2, 8] {
        wait_for_files(table.path(), files_before_kill, Duration::from_secs(180)).await;
        writer.kill9();
        writer = Ragstream::start(&sink);
        writer.wait_ready(Duration::from_secs(60)).await;
    }
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(300)).await;

    // Every audit event of the run, as the topic has it.
    let mut audit = TopicReader::new(&running.audit_topic);
    audit
        .read_until_count(
            |m| String::from_utf8_lossy(&m.payload).contains("\"question_answered\""),
            QUESTIONS,
            Duration::from_secs(60),
        )
        .await;
    let on_topic: HashSet<String> = audit
        .received
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let in_table = loop {
        let in_table = table_event_ids(table.path()).await;
        if on_topic.is_subset(&in_table) || Instant::now() > deadline {
            break in_table;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<&String> = on_topic.difference(&in_table).collect();
    assert!(
        missing.is_empty(),
        "{} audit events never reached the table, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let staged = files_ending(table.path(), "#1").len() + files_ending(table.path(), "#2").len();
    println!(
        "{} events on the topic, {} in the table, {} files, {} staging files left by the kills",
        on_topic.len(),
        in_table.len(),
        files_ending(table.path(), ".parquet").len(),
        staged
    );

    // Tokens and cost per tenant and model: `ragstream sql` over the table against the answers.
    let sql = |query: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_ragstream"))
            .args([
                "sql",
                "--format",
                "csv",
                "--table",
                table.path().to_str().unwrap(),
                query,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let query = r#"SELECT tenant, "gen_ai.request.model" AS model, sum("gen_ai.usage.input_tokens") AS input_tokens,
                          sum("gen_ai.usage.output_tokens") AS output_tokens, sum(cost_usd) AS cost_usd
                   FROM audit_events WHERE event = 'question_answered' GROUP BY 1, 2 ORDER BY 1, 2"#;
    let mut from_answers = Sums::new();
    for answer in answers.values() {
        let model = answer.provenance.model.clone().expect("a model answered");
        let sums = from_answers.entry((answer.tenant.clone(), model)).or_default();
        sums.0 += answer.provenance.usage.prompt_tokens;
        sums.1 += answer.provenance.usage.completion_tokens;
        sums.2 += answer.provenance.cost_usd;
    }
    let assert_sums = |table_sums: Sums| {
        assert_eq!(
            table_sums.len(),
            TENANTS.len() * 2,
            "3 tenants × 2 models: {table_sums:?}"
        );
        for (key, (input, output, cost)) in &from_answers {
            let (table_input, table_output, table_cost) = table_sums[key];
            assert_eq!((table_input, table_output), (*input, *output), "{key:?}");
            assert!(
                (table_cost - cost).abs() <= 1e-9 * cost.max(1.0),
                "{key:?}: {table_cost} vs {cost}"
            );
        }
    };
    assert_sums(sums_from_csv(&sql(query)));

    // The answers table: one row per answer (repeats dropped), the same sums, and the same user
    // pseudonym as the audit event of the question.
    let deadline = Instant::now() + Duration::from_secs(120);
    while sql("SELECT count(*) AS n FROM answers") != format!("n\n{QUESTIONS}\n") {
        assert!(Instant::now() < deadline, "the answers table never held every answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_sums(sums_from_csv(&sql(&query.replace(
        "FROM audit_events WHERE event = 'question_answered'",
        "FROM answers",
    ))));
    let joined = sql("SELECT count(*) AS n FROM answers a JOIN audit_events e \
         ON a.request_id = e.request_id AND a.user_ref = e.user_ref WHERE e.event = 'question_answered'");
    assert_eq!(
        joined,
        format!("n\n{QUESTIONS}\n"),
        "answers join their audit events by user_ref"
    );
    assert_eq!(
        sql("SELECT count(*) AS n FROM answers WHERE answer IS NOT NULL OR user_ref LIKE 'user-%'"),
        "n\n0\n",
        "no answer text without answer_text, and users as pseudonyms"
    );
    drop(answers_writer);

    // DuckDB reads the same files, without conversion.
    let python = duckdb_python();
    assert!(
        python.exists(),
        "{} missing: run scripts/check-deploy.sh --install",
        python.display()
    );
    let script = format!(
        r#"import duckdb
rows = duckdb.sql("""SELECT count(*), sum(t) FROM (
    SELECT DISTINCT ON (event_id) event_id, "gen_ai.usage.output_tokens" AS t
    FROM read_parquet('{}/audit_events/**/*.parquet', hive_partitioning = true)
    WHERE event = 'question_answered')""").fetchall()
print(rows[0][0], rows[0][1])"#,
        table.path().display()
    );
    let output = Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let duckdb = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let output_tokens: u64 = from_answers.values().map(|sums| sums.1).sum();
    assert_eq!(duckdb, format!("{QUESTIONS} {output_tokens}"));
    writer.sigterm();
    assert!(writer
        .wait_exit(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
}
