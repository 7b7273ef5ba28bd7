//! Base images the local store lacks: pulled before the build starts.
//!
//! The images a build reads are those of `FROM`, `COPY --from=<image>` and `RUN
//! --mount=from=<image>` in the stages the target needs. Each one missing from the local store
//! (every one, with `--pull`) is pulled with the registry client into a staging area and
//! committed under its normalized name, which is the name the solver looks it up by: from an
//! index, the manifest of the stage's platform (`FROM --platform`, else the build's target
//! platform). Registries on loopback addresses are reached over plain HTTP. An image that
//! cannot be pulled fails the build with the Dockerfile line that names it; a `--from` that
//! could have been a stage's name adds that no stage has it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use berth_builder::instructions::{BaseRef, FromRef, Lowered, Platform};
use berth_builder::parser::Span;
use berth_layerstore::image::store::{ImageStore, StoreError};
use berth_layerstore::image::{Descriptor, platform};
use berth_registry::client::{Client, Platforms, PullOptions};

use super::progress::Display;
use super::push::VertexProgress;
use crate::cli::images::{details, normalize, parse_name};

/// An image the build reads, with the first instruction that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// As written (after expansion).
    pub name: String,
    pub span: Span,
    /// The platform to pull for.
    pub platform: Platform,
    /// What an error about it adds: a `--from` naming no stage of the Dockerfile may be a
    /// misspelt stage rather than an image.
    pub hint: Option<String>,
}

/// The images the stages the target needs read, each once, in Dockerfile order.
pub fn image_sources(lowered: &Lowered) -> Vec<ImageSource> {
    let mut sources: Vec<ImageSource> = Vec::new();
    let mut add = |name: &str, span: &Span, platform: &Platform, hint: Option<String>| {
        if !sources.iter().any(|s| s.name == name) {
            sources.push(ImageSource {
                name: name.to_owned(),
                span: span.clone(),
                platform: platform.clone(),
                hint,
            });
        }
    };
    let stages: Vec<&str> = lowered
        .stages
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    for stage in lowered.stages.iter().filter(|s| s.reachable) {
        let platform = stage.platform.as_ref().unwrap_or(&lowered.target_platform);
        if let BaseRef::Image(name) = &stage.base {
            add(name, &stage.span, platform, None);
        }
        for command in stage.steps() {
            for from in command.sources() {
                if let FromRef::Image(name) = from {
                    let hint = not_a_stage(name, &stages);
                    add(name, command.span(), &lowered.target_platform, hint);
                }
            }
        }
    }
    sources
}

/// For a `--from` value that could name a stage (a bare name, no registry, tag or digest),
/// the hint that no stage has that name, so that it was taken as an image.
fn not_a_stage(name: &str, stages: &[&str]) -> Option<String> {
    if name.contains(['/', ':', '@']) {
        return None;
    }
    let known = if stages.is_empty() {
        "the Dockerfile names no stages".to_owned()
    } else {
        format!("the stages are {}", stages.join(", "))
    };
    Some(format!(
        "no stage is named {name:?} ({known}), so --from={name} was taken as an image"
    ))
}

/// The layers of the image the target stage is built on (following `FROM <stage>` back to an
/// image), as the store has them; empty for `FROM scratch` or when the store lacks it.
pub fn base_layers(store: &ImageStore, lowered: &Lowered) -> Vec<Descriptor> {
    let mut index = lowered.target;
    let mut seen = 0;
    let (name, stage) = loop {
        let Some(stage) = lowered.stages.get(index) else {
            return Vec::new();
        };
        match &stage.base {
            BaseRef::Image(name) => break (name, stage),
            BaseRef::Stage(i) if seen < lowered.stages.len() => {
                index = *i;
                seen += 1;
            }
            _ => return Vec::new(),
        }
    };
    let p = stage.platform.as_ref().unwrap_or(&lowered.target_platform);
    let variant = (!p.variant.is_empty()).then_some(p.variant.as_str());
    let want = platform::platform_of(&p.os, &p.architecture, variant);
    store
        .resolve(name, &normalize)
        .ok()
        .and_then(|r| details(store, &r.record.target, &want).ok())
        .map(|d| d.layers)
        .unwrap_or_default()
}

/// Whether the store has `name`.
fn in_store(store: &ImageStore, name: &str) -> anyhow::Result<bool> {
    match store.resolve(name, &normalize) {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("looking up {name}"))),
    }
}

/// `FILE:LINE: INSTRUCTION` for errors about an image source.
fn location(source: &ImageSource, text: &str) -> String {
    let line = text
        .lines()
        .nth(source.span.line.saturating_sub(1))
        .unwrap_or_default()
        .trim();
    format!("{}:{}: {line}", source.span.file, source.span.line)
}

/// The images of `sources` the store lacks (all of them when `force`).
pub fn missing(
    store: &ImageStore,
    sources: &[ImageSource],
    force: bool,
) -> anyhow::Result<Vec<ImageSource>> {
    let mut out = Vec::new();
    for source in sources {
        if force || !in_store(store, &source.name)? {
            out.push(source.clone());
        }
    }
    Ok(out)
}

/// Pulls each of `sources` into the store, one vertex each on the display. `dockerfile` is the
/// Dockerfile's text, for the line an error names.
pub fn pull_all(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    store: &ImageStore,
    sources: &[ImageSource],
    dockerfile: &str,
    display: &Arc<Display>,
) -> anyhow::Result<()> {
    for source in sources {
        let (reference, name) = parse_name(&source.name)
            .map_err(|e| anyhow!("{}: {e:#}", location(source, dockerfile)))?;
        let vertex = display.start(&format!("[internal] pull {name}"));
        let t = Instant::now();
        let p = &source.platform;
        let variant = (!p.variant.is_empty()).then_some(p.variant.as_str());
        let want = platform::platform_of(&p.os, &p.architecture, variant);
        let result = (|| -> anyhow::Result<()> {
            let staging = store.staging()?;
            let opts = PullOptions {
                platforms: Platforms::Only(want),
                progress: VertexProgress::new(display.clone(), vertex, None),
            };
            let pulled = runtime.block_on(client.pull(&reference, &staging, &opts))?;
            let digest = pulled.index.as_ref().unwrap_or(&pulled.root).digest();
            display.status(vertex, &format!("resolve {name}@{digest} done"));
            store.commit(&staging, &[(Some(name.clone()), pulled.root.clone())])?;
            Ok(())
        })();
        match result {
            Ok(()) => display.done(vertex, t.elapsed().as_secs_f64(), None, false),
            Err(e) => {
                let message = format!("failed to resolve source metadata for {name}: {e:#}");
                display.error(vertex, &message);
                let hint = source
                    .hint
                    .as_ref()
                    .map(|h| format!("\n  = hint: {h}"))
                    .unwrap_or_default();
                return Err(anyhow!("{}: {message}{hint}", location(source, dockerfile)));
            }
        }
    }
    Ok(())
}
