//! Progress of image transfers (`berth copy`, `pull`, `push`) on stderr, the way `docker push`
//! and `docker pull` show it: a live bar per blob on a terminal, one line per finished blob and
//! manifest otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use berth_layerstore::Digest;
use berth_registry::client::{BlobOutcome, NoProgress, Progress, ProgressEvent, UploadMethod};
use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Plain,
    Tty,
    Quiet,
}

/// The display for `mode`; `auto` is a live view on a terminal and plain lines otherwise.
pub(crate) fn make_progress(mode: ProgressMode) -> Arc<dyn Progress> {
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    };
    match mode {
        ProgressMode::Quiet => Arc::new(NoProgress),
        ProgressMode::Tty => Arc::new(TtyProgress::new()),
        _ => Arc::new(PlainProgress),
    }
}

/// The first 12 hex digits, as docker shows layer ids.
pub(crate) fn short(digest: &Digest) -> &str {
    let hex = digest.hex();
    &hex[..hex.len().min(12)]
}

pub(crate) fn outcome_text(outcome: &BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Downloaded => "Pull complete".into(),
        BlobOutcome::AlreadyPresent => "Already exists".into(),
        BlobOutcome::Exists => "Layer already exists".into(),
        BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
        BlobOutcome::Uploaded(UploadMethod::Monolithic) => "Pushed".into(),
        BlobOutcome::Uploaded(UploadMethod::Chunked { chunks }) => {
            format!("Pushed ({chunks} chunks)")
        }
    }
}

pub(crate) fn manifest_text(digest: &Digest, size: u64, target: &str) -> String {
    if target == digest.to_string() {
        format!("{}: manifest {digest} size: {size}", short(digest))
    } else {
        format!("{target}: digest: {digest} size: {size}")
    }
}

/// One line per finished blob and manifest, for logs and pipes.
struct PlainProgress;

impl Progress for PlainProgress {
    fn event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::BlobDone { digest, outcome } => {
                eprintln!("{}: {}", short(digest), outcome_text(outcome));
            }
            ProgressEvent::ManifestDone {
                digest,
                size,
                target,
                ..
            } => eprintln!("{}", manifest_text(digest, *size, target)),
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => eprintln!("{what}: try {attempt} failed ({error}); retrying in {delay:?}"),
            ProgressEvent::BlobStart { .. } | ProgressEvent::BlobAdvance { .. } => {}
        }
    }
}

/// A live bar per blob on a terminal.
struct TtyProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    style: ProgressStyle,
}

impl TtyProgress {
    fn new() -> TtyProgress {
        let style = ProgressStyle::with_template(
            "{prefix}: {msg:<14} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        TtyProgress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            style,
        }
    }
}

impl Progress for TtyProgress {
    fn event(&self, event: &ProgressEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            ProgressEvent::BlobStart { digest, size, .. } => {
                let bar = self.multi.add(ProgressBar::new(*size));
                bar.set_style(self.style.clone());
                bar.set_prefix(short(digest).to_owned());
                bar.set_message("Waiting");
                bars.insert(digest.clone(), bar);
            }
            ProgressEvent::BlobAdvance { digest, bytes } => {
                if let Some(bar) = bars.get(digest) {
                    if bar.position() == 0 {
                        bar.set_message("Transferring");
                    }
                    bar.inc(*bytes);
                }
            }
            ProgressEvent::BlobDone { digest, outcome } => {
                if let Some(bar) = bars.get(digest) {
                    bar.set_position(bar.length().unwrap_or(0));
                    bar.finish_with_message(outcome_text(outcome));
                }
            }
            ProgressEvent::ManifestDone {
                digest,
                size,
                target,
                ..
            } => {
                let _ = self.multi.println(manifest_text(digest, *size, target));
            }
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => {
                let _ = self.multi.println(format!(
                    "{what}: try {attempt} failed ({error}); retrying in {delay:?}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let d = Digest::sha256(b"x");
        assert_eq!(short(&d).len(), 12);
        assert_eq!(
            outcome_text(&BlobOutcome::Mounted { from: "a/b".into() }),
            "Mounted from a/b"
        );
        assert!(manifest_text(&d, 12, "v1").starts_with("v1: digest: sha256:"));
    }
}
