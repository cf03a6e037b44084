//! Every benchmark of the project, in one binary so that it is compiled and linked once (CI
//! builds and lints it with the tests; six binaries of this size took minutes to link). Each
//! prints figures and asserts nothing:
//!
//!     cargo bench --bench figures -- embed            # one benchmark, release build
//!     cargo bench --bench figures -- embed cost       # several, in this order
//!
//! Figures reported as performance come from this release build (`cargo bench`). `cargo bench
//! --profile dev` reuses the test suite's build, whose LanceDB and DataFusion are unoptimised:
//! for checking that a benchmark runs, never for its figures. The benchmarks: `passthrough`,
//! `embed`, `index`, `answering`, `cost`, `retrieval`; each module's documentation says what it
//! measures and which settings it reads. PII masking has its own: `cargo bench -p ragstream-pii`.

#[path = "../../tests/integration/common/mod.rs"]
mod common;

mod answering;
mod cache_workload;
mod cost;
mod embed;
mod index;
mod passthrough;
mod retrieval;

const BENCHMARKS: [&str; 6] = ["passthrough", "embed", "index", "answering", "cost", "retrieval"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run these.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let unknown: Vec<&&str> = chosen.iter().filter(|name| !BENCHMARKS.contains(name)).collect();
    if chosen.is_empty() || !unknown.is_empty() {
        eprintln!(
            "name the benchmarks to run after `--`, from: {} (e.g. `cargo bench --bench figures -- embed`){}",
            BENCHMARKS.join(", "),
            if unknown.is_empty() {
                String::new()
            } else {
                format!("; unknown: {unknown:?}")
            }
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    for name in chosen {
        println!("== {name}");
        match name {
            "passthrough" => runtime.block_on(passthrough::run()),
            "embed" => embed::run(),
            "index" => runtime.block_on(index::run()),
            "answering" => runtime.block_on(answering::run()),
            "cost" => runtime.block_on(cost::run()),
            "retrieval" => runtime.block_on(retrieval::run()),
            _ => unreachable!("checked above"),
        }
    }
}
