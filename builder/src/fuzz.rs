//! The whole Dockerfile front end on arbitrary bytes, for the `dockerfile` fuzz target
//! (`fuzz/fuzz_targets/dockerfile.rs`) and its regression test (`tests/fuzz_regressions.rs`).
//!
//! [`fuzz_one`] runs the bytes through every stage the way `berth build` and
//! `berth dockerfile parse` would, and asserts what must hold for any input: nothing panics, the
//! printers' output parses again to the same tree (as dumped), and printing is stable. An `Err`
//! from any stage is a valid outcome; it is rendered, as the command line would render it.

use std::collections::BTreeSet;

use crate::graph::Graph;
use crate::instructions::{BuildOptions, lower};
use crate::lint::{self, Linter, Report};
use crate::parser::{self, Dockerfile};

/// The most stage names tried as `--target` when building the graph of one input.
const MAX_TARGETS: usize = 4;

/// Runs `data` through the parser, the printers, the syntax-tree lint checks, lowering and the
/// graph. Panics only on a bug.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let dockerfile = match parser::parse(&source, "Dockerfile") {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    round_trip(&dockerfile);

    let mut linter = Linter::new(dockerfile.check.clone());
    lint::check(&dockerfile, &source, &mut linter);
    let report = Report::new(linter, source.as_ref());
    for w in report.warnings() {
        let _ = report.render_warning(w);
    }
    let _ = report.summary();

    let mut linter = Linter::new(dockerfile.check.clone());
    let lowered = match lower(&dockerfile, &BuildOptions::default(), &mut linter) {
        Ok(l) => l,
        Err(e) => {
            let _ = e.with_source(&source).to_string();
            return;
        }
    };
    let _ = lowered.base_image_names();

    let mut targets: Vec<Option<&str>> = vec![None];
    targets.extend(
        lowered
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref().map(Some))
            .take(MAX_TARGETS),
    );
    for target in targets {
        match Graph::build(&lowered, target) {
            Ok(graph) => walk(&graph),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// The printed tree parses to the same dump, and printing it again gives the same text.
fn round_trip(dockerfile: &Dockerfile) {
    let dumped = parser::dump(dockerfile);
    let printed = parser::format_dockerfile(dockerfile);
    let again = parser::parse(&printed, "Dockerfile")
        .unwrap_or_else(|e| panic!("the printed Dockerfile does not parse:\n{e}\n{printed}"));
    assert_eq!(
        parser::dump(&again),
        dumped,
        "the printed Dockerfile parses to another tree:\n{printed}"
    );
    assert_eq!(
        parser::format_dockerfile(&again),
        printed,
        "printing is not stable"
    );
}

/// Schedules the graph as a build would: ready sets until every stage is done, and batches.
fn walk(graph: &Graph) {
    let batches = graph.batches();
    let in_batches: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(
        in_batches,
        graph.stages().len(),
        "every stage is in one batch"
    );
    let mut done = BTreeSet::new();
    while done.len() < graph.stages().len() {
        let ready = graph.ready(&done);
        assert!(!ready.is_empty(), "a stage is never ready: {done:?}");
        done.extend(ready);
    }
    for stage in graph.stages() {
        for step in &stage.steps {
            let _ = step.id.hex();
        }
    }
    let _ = graph.target_stage();
    let _ = graph.images();
}
