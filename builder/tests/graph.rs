//! The stage DAG: pruning, cycles, ready sets and step identities.

use std::collections::BTreeSet;

use berth_builder::graph::{Graph, GraphError, StepId, StepOrigin};
use berth_builder::instructions::{BaseRef, BuildOptions, Lowered, lower};
use berth_builder::lint::Linter;
use berth_builder::parser::{self, Instruction};

fn lowered_with(source: &str, options: &BuildOptions) -> Lowered {
    let dockerfile = parser::parse(source, "Dockerfile").expect("test Dockerfile parses");
    let mut linter = Linter::new(dockerfile.check.clone());
    lower(&dockerfile, options, &mut linter).unwrap_or_else(|e| panic!("lowering failed:\n{e}"))
}

fn lowered(source: &str) -> Lowered {
    lowered_with(source, &BuildOptions::default())
}

fn graph(source: &str, target: Option<&str>) -> Graph {
    Graph::build(&lowered(source), target).unwrap_or_else(|e| panic!("graph failed:\n{e}"))
}

fn graph_with(source: &str, options: &BuildOptions) -> Graph {
    Graph::build(&lowered_with(source, options), None)
        .unwrap_or_else(|e| panic!("graph failed:\n{e}"))
}

fn indices(g: &Graph) -> Vec<usize> {
    g.stages().iter().map(|s| s.index).collect()
}

/// The step identities of the stage called `name`.
fn ids(g: &Graph, lowered_source: &str, name: &str) -> Vec<StepId> {
    let l = lowered(lowered_source);
    let index = l.stage_by_name(name).expect("stage exists").index;
    g.stage(index)
        .expect("stage in graph")
        .steps
        .iter()
        .map(|s| s.id)
        .collect()
}

const PRUNE: &str = "\
FROM alpine AS base
RUN apk add gcc

FROM base AS unrelated
RUN sleep 100

FROM golang AS tools
RUN go install example.com/tool@latest

FROM base AS app
COPY --from=tools /go/bin/tool /usr/bin/tool
RUN --mount=from=base,target=/b make

FROM scratch AS last
COPY --from=app /app /app
";

#[test]
fn pruned_to_the_target() {
    let g = graph(PRUNE, None);
    assert_eq!(g.target(), 4);
    assert_eq!(indices(&g), [0, 2, 3, 4]);
    assert!(!g.contains(1), "nothing needs the unrelated stage");

    let g = graph(PRUNE, Some("APP"));
    assert_eq!(g.target(), 3);
    assert_eq!(indices(&g), [0, 2, 3]);
    let app = g.target_stage().unwrap();
    assert_eq!(app.deps, [0, 2]);
    assert_eq!(app.steps[0].deps, [2]);
    assert_eq!(app.steps[1].deps, [0]);

    let g = graph(PRUNE, Some("unrelated"));
    assert_eq!(indices(&g), [0, 1]);

    let e = Graph::build(&lowered(PRUNE), Some("nope")).unwrap_err();
    assert_eq!(
        e,
        GraphError::UnknownTarget {
            name: "nope".into()
        }
    );

    // Lowering already knows its target: the unreachable stage is marked.
    let l = lowered(PRUNE);
    let reachable: Vec<bool> = l.stages.iter().map(|s| s.reachable).collect();
    assert_eq!(reachable, [true, false, true, true, true]);
}

#[test]
fn images_are_external_inputs() {
    let g = graph(PRUNE, None);
    let images: Vec<(&str, Vec<usize>)> = g
        .images()
        .iter()
        .map(|i| (i.reference.as_str(), i.stages.clone()))
        .collect();
    assert_eq!(images, [("alpine", vec![0]), ("golang", vec![2])]);

    let g = graph(
        "FROM scratch\nCOPY --from=nginx:latest /etc/nginx /etc/nginx\n\
         RUN --mount=type=cache,from=redis,target=/c true\n",
        None,
    );
    let images: Vec<&str> = g.images().iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(images, ["nginx:latest", "redis"]);
    assert_eq!(g.stages()[0].base, BaseRef::Scratch);
}

#[test]
fn cycles_through_copy_from_are_detected() {
    let source = "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n";
    let e = Graph::build(&lowered(source), None).unwrap_err();
    let GraphError::Cycle { links } = &e else {
        panic!("not a cycle: {e}")
    };
    let shape: Vec<(&str, &str, usize)> = links
        .iter()
        .map(|l| (l.stage.as_str(), l.needs.as_str(), l.span.line))
        .collect();
    assert_eq!(shape, [("a", "b", 2), ("b", "a", 4)]);
    assert_eq!(
        e.to_string(),
        "circular dependency detected on stage: a\n  Dockerfile:2:1: a needs b\n  \
         Dockerfile:4:1: b needs a"
    );

    // A stage that copies from itself.
    let e = Graph::build(&lowered("FROM alpine AS a\nCOPY --from=a /x /y\n"), None).unwrap_err();
    assert!(matches!(e, GraphError::Cycle { ref links } if links.len() == 1));

    // Cycles are found in stages the target does not need too, as BuildKit does.
    let source = "FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n\
                  FROM scratch AS target\n";
    assert!(matches!(
        Graph::build(&lowered(source), None),
        Err(GraphError::Cycle { .. })
    ));
}

#[test]
fn cycles_through_from_are_detected() {
    // `b` is built on `a`, and `a` copies from `b`.
    let source = "FROM alpine AS a\nCOPY --from=b /x /x\nFROM a AS b\n";
    let e = Graph::build(&lowered(source), None).unwrap_err();
    let GraphError::Cycle { links } = &e else {
        panic!("not a cycle: {e}")
    };
    let shape: Vec<(&str, &str, usize)> = links
        .iter()
        .map(|l| (l.stage.as_str(), l.needs.as_str(), l.span.line))
        .collect();
    assert_eq!(shape, [("a", "b", 2), ("b", "a", 3)]);

    // FROM looks back only: `FROM b AS a` before any stage `b` is the image `b`, so
    // `FROM b AS a` / `FROM a AS b` is a chain, not a cycle.
    let g = graph("FROM b AS a\nFROM a AS b\n", None);
    assert_eq!(g.stage(0).unwrap().base, BaseRef::Image("b".into()));
    assert_eq!(g.stage(1).unwrap().base, BaseRef::Stage(0));
}

#[test]
fn reading_a_later_stage_is_refused() {
    let source = "FROM alpine AS first\nCOPY --from=second /x /x\nFROM alpine AS second\n\
                  FROM first\n";
    let e = Graph::build(&lowered(source), None).unwrap_err();
    assert!(
        matches!(&e, GraphError::ForwardReference { stage, needs, span }
            if stage == "first" && needs == "second" && span.line == 2),
        "{e}"
    );
}

#[test]
fn stages_that_failed_to_lower_cannot_be_built() {
    let source = "FROM scratch AS broken\nWORKDIR ${X:?must be set}\nFROM scratch AS ok\n";
    let l = lowered(source);
    assert!(Graph::build(&l, None).is_ok());
    let e = Graph::build(&l, Some("broken")).unwrap_err();
    assert!(matches!(e, GraphError::Stage(_)), "{e}");
    assert!(e.to_string().contains("X: must be set"), "{e}");
}

const DIAMOND: &str = "\
FROM alpine AS base
RUN echo base

FROM base AS left
RUN echo left

FROM base AS right
RUN echo right

FROM scratch AS final
COPY --from=left /l /l
COPY --from=right /r /r
";

#[test]
fn ready_sets_of_a_diamond() {
    let g = graph(DIAMOND, None);
    assert_eq!(g.batches(), [vec![0], vec![1, 2], vec![3]]);
    let done = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
    assert_eq!(g.ready(&done(&[])), [0]);
    assert_eq!(g.ready(&done(&[0])), [1, 2]);
    assert_eq!(g.ready(&done(&[0, 1])), [2]);
    assert_eq!(g.ready(&done(&[0, 1, 2])), [3]);
    assert!(g.ready(&done(&[0, 1, 2, 3])).is_empty());
    // Every stage comes after what it needs.
    let order = indices(&g);
    for stage in g.stages() {
        let at = order.iter().position(|i| *i == stage.index).unwrap();
        for dep in &stage.deps {
            assert!(order.iter().position(|i| i == dep).unwrap() < at);
        }
    }
}

#[test]
fn steps_chain_their_identities() {
    let g = graph(DIAMOND, None);
    let base = g.stage(0).unwrap();
    let left = g.stage(1).unwrap();
    assert_eq!(base.steps.len(), 1);
    assert_eq!(base.steps[0].parent, base.base_id);
    assert_eq!(base.id, base.steps[0].id);
    assert_eq!(left.base_id, {
        // A stage's base identity follows from its base stage's result.
        let again = graph(DIAMOND, None);
        again.stage(1).unwrap().base_id
    });
    assert_ne!(
        left.base_id, base.id,
        "the base identity also covers the platform"
    );
    assert_eq!(left.steps[0].origin, StepOrigin::Command(0));
    assert_eq!(left.steps[0].instruction, Instruction::Run);
    let id = left.steps[0].id;
    assert_eq!(id.hex().len(), 64);
    assert!(id.to_string().starts_with("sha256:"));
    // Same text, different stages: different identities.
    assert_ne!(g.stage(1).unwrap().id, g.stage(2).unwrap().id);
}

#[test]
fn identities_ignore_comments_layout_and_case() {
    let edited = "\
# A comment at the top
from alpine as base
# Explain the step
run echo base


FROM base AS left
RUN echo left
FROM base AS right
# another comment
RUN echo right
FROM scratch AS final
COPY --from=left \\
     /l /l
copy --from=right /r /r
";
    let a = graph(DIAMOND, None);
    let b = graph(edited, None);
    for (x, y) in a.stages().iter().zip(b.stages()) {
        let xs: Vec<StepId> = x.steps.iter().map(|s| s.id).collect();
        let ys: Vec<StepId> = y.steps.iter().map(|s| s.id).collect();
        assert_eq!(xs, ys, "stage {}", x.index);
    }
    assert_eq!(a.target_stage().unwrap().id, b.target_stage().unwrap().id);
}

#[test]
fn identities_ignore_unrelated_stages() {
    let before = "\
FROM alpine AS a
RUN make a
FROM alpine AS b
RUN make b
FROM scratch AS c
COPY --from=a /out /out
";
    let edited = "\
FROM debian AS inserted
RUN anything
FROM alpine AS a
RUN make a
FROM alpine AS b
RUN make b && make more
ENV B=1
FROM scratch AS c
COPY --from=a /out /out
";
    let g1 = graph(before, None);
    let g2 = graph(edited, None);
    assert_eq!(ids(&g1, before, "a"), ids(&g2, edited, "a"));
    assert_eq!(ids(&g1, before, "c"), ids(&g2, edited, "c"));
    // Changing what `c` copies from changes `c`.
    let changed = before.replace("RUN make a", "RUN make a2");
    let g3 = graph(&changed, None);
    assert_ne!(ids(&g1, before, "c"), ids(&g3, &changed, "c"));
    // Copying by index or by name is the same step.
    let by_index = before.replace("--from=a", "--from=0");
    let g4 = graph(&by_index, None);
    assert_eq!(ids(&g1, before, "c"), ids(&g4, &by_index, "c"));
}

#[test]
fn identities_follow_the_build_args_a_step_sees() {
    let source = "\
FROM alpine AS other
RUN make other
FROM alpine AS main
RUN apk add curl
ARG VERSION=1
RUN echo building
COPY app /app
";
    let with = |version: Option<&str>| {
        let mut options = BuildOptions {
            target: None,
            ..BuildOptions::default()
        };
        if let Some(v) = version {
            options.build_args.insert("VERSION".into(), v.into());
        }
        let g = graph_with(source, &options);
        let main: Vec<StepId> = g.stage(1).unwrap().steps.iter().map(|s| s.id).collect();
        let l = lowered_with(source, &options);
        let other = Graph::build(&l, Some("other"))
            .unwrap()
            .stage(0)
            .unwrap()
            .id;
        (main, other)
    };
    let (default, other1) = with(None);
    let (same, _) = with(Some("1"));
    let (two, other2) = with(Some("2"));
    assert_eq!(
        default, same,
        "the default and an equal build argument are the same"
    );
    assert_eq!(
        default[0], two[0],
        "the step before the ARG does not see it"
    );
    for i in 1..default.len() {
        assert_ne!(default[i], two[i], "step {i} sees VERSION");
    }
    assert_eq!(other1, other2, "a stage without the ARG does not see it");

    // The target platform is part of every identity.
    let arm = BuildOptions {
        target_platform: Some("linux/arm64".parse().unwrap()),
        ..BuildOptions::default()
    };
    let amd = BuildOptions {
        target_platform: Some("linux/amd64".parse().unwrap()),
        ..BuildOptions::default()
    };
    assert_ne!(
        graph_with(source, &arm).target_stage().unwrap().id,
        graph_with(source, &amd).target_stage().unwrap().id
    );
}

#[test]
fn identities_are_deterministic() {
    let a = graph(PRUNE, None);
    let b = graph(PRUNE, None);
    assert_eq!(a, b);
    let ids: BTreeSet<StepId> = a
        .stages()
        .iter()
        .flat_map(|s| s.steps.iter().map(|x| x.id))
        .collect();
    let steps: usize = a.stages().iter().map(|s| s.steps.len()).sum();
    assert_eq!(ids.len(), steps, "no two steps share an identity");
}
