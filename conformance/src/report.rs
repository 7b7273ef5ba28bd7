//! The outcome of a run: one result per named check, printed as a report that ends with the line
//! `N passed, N failed, N skipped`.

use std::fmt;

use crate::suite::Workflow;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The registry did what the spec requires. `notes` record SHOULD-level departures and
    /// choices among alternatives the spec allows.
    Passed {
        /// Observations that did not fail the check.
        notes: Vec<String>,
    },
    /// The registry broke a requirement; `reason` names it and shows the exchange.
    Failed {
        /// What was expected and what came back.
        reason: String,
    },
    /// The check did not run to a verdict: its workflow is disabled, the registry does not
    /// offer an optional feature, or a prerequisite failed.
    Skipped {
        /// Why it did not run.
        reason: String,
    },
}

/// The result of one named check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// A stable identifier such as `push.chunked-out-of-order`.
    pub id: &'static str,
    /// The spec workflow the check belongs to.
    pub workflow: Workflow,
    /// What the check verifies, in a sentence.
    pub title: &'static str,
    /// The part of the distribution spec it enforces (endpoint ids and section anchors).
    pub spec: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

impl CaseResult {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Passed { .. })
    }

    /// Whether the check failed.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    /// Whether the check was skipped.
    pub fn skipped(&self) -> bool {
        matches!(self.outcome, Outcome::Skipped { .. })
    }

    /// The failure or skip reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Passed { .. } => None,
            Outcome::Failed { reason } | Outcome::Skipped { reason } => Some(reason),
        }
    }
}

/// Everything a run found, in the order the checks ran.
#[derive(Debug, Clone)]
pub struct Report {
    /// The registry's root URL.
    pub root_url: String,
    /// The repository the checks used.
    pub namespace: String,
    /// The second repository, target of cross-repository mounts.
    pub crossmount_namespace: String,
    /// One result per check.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.failed()).count()
    }

    /// How many checks were skipped.
    pub fn skipped(&self) -> usize {
        self.results.iter().filter(|r| r.skipped()).count()
    }

    /// Whether no check failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// The result of the check with this id.
    pub fn get(&self, id: &str) -> Option<&CaseResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| r.failed())
    }

    /// The closing line: `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "OCI distribution-spec conformance against {} (repository {}, cross-mount {})",
            self.root_url, self.namespace, self.crossmount_namespace
        )?;
        let mut current = None;
        for result in &self.results {
            if current != Some(result.workflow) {
                current = Some(result.workflow);
                writeln!(f, "\n{}", result.workflow.title())?;
            }
            let (label, detail): (&str, Vec<&str>) = match &result.outcome {
                Outcome::Passed { notes } => ("PASS", notes.iter().map(|n| n.as_str()).collect()),
                Outcome::Failed { reason } => ("FAIL", vec![reason.as_str()]),
                Outcome::Skipped { reason } => ("SKIP", vec![reason.as_str()]),
            };
            writeln!(
                f,
                "  {label}  {:<40} {}  [{}]",
                result.id, result.title, result.spec
            )?;
            for line in detail {
                let prefix = if result.passed() { "note: " } else { "" };
                writeln!(f, "        {prefix}{line}")?;
            }
        }
        writeln!(f)?;
        writeln!(f, "{}", self.summary())
    }
}
