//! `--push` (and `type=image,push=true`, `type=registry`): the image to the registries its
//! names point at, with the registry client.
//!
//! Layers go up while the build runs: the solver hands each layer it commits to
//! [`SolveOptions::layer_sink`](berth_builder::solver::SolveOptions::layer_sink), and
//! [`EarlyUploads`] uploads it on the async runtime to every destination, in parallel with
//! the later steps. Once the image is written, [`push_image`] pushes it to each name: the
//! client checks every blob with `HEAD` first, so the layers already uploaded are not sent
//! again, and then the config and the manifest follow. A layer whose early upload failed is
//! simply uploaded then; only the final push decides whether `--push` succeeded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use berth_builder::solver::{Built, LayerBlob};
use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::{ContentError, Info, Provider};
use berth_layerstore::image::store::ImageStore;
use berth_layerstore::image::{Descriptor, descriptor_digest};
use berth_registry::client::{BlobOutcome, Client, Progress, ProgressEvent, PushOptions};
use berth_registry::reference::Reference;

use super::progress::Display;
use crate::cli::images::human_size;
use crate::cli::progress::outcome_text;

/// One layer blob, served to the registry client from the file the solver wrote it to.
struct LayerFile {
    descriptor: Descriptor,
    digest: Digest,
    file: Arc<File>,
}

/// Reads `range` of a file with positioned reads, so that readers do not share an offset.
struct RangeReader {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Provider for LayerFile {
    fn info(&self, digest: &Digest) -> Result<Info, ContentError> {
        if digest != &self.digest {
            return Err(ContentError::NotFound(digest.clone()));
        }
        Ok(Info {
            digest: digest.clone(),
            size: self.descriptor.size(),
        })
    }

    fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        let size = self.info(digest)?.size;
        let range = range.unwrap_or(0..size);
        if range.start > size || range.end < range.start {
            return Err(ContentError::InvalidRange {
                digest: digest.clone(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        Ok(Box::new(RangeReader {
            file: self.file.clone(),
            at: range.start,
            end: range.end.min(size),
        }))
    }
}

/// What the early uploads did.
#[derive(Debug, Default)]
pub struct UploadReport {
    /// Blobs uploaded (or found present, or mounted) during the build, per destination.
    pub uploaded: usize,
    /// Uploads that failed; the final push sends those blobs.
    pub failed: usize,
}

/// Where the early uploads go, and what they may start with.
pub struct EarlyPlan {
    /// The repositories the image goes to, one reference each (blobs belong to repositories,
    /// not tags).
    pub destinations: Vec<Reference>,
    /// Layers of the base image the result is built on, read from the store and uploaded
    /// at once: they are in the image whatever the steps do.
    pub base_layers: Vec<Descriptor>,
    /// The store's content, which holds `base_layers`.
    pub content: FsStore,
    /// Images of the same registries the blobs may be mounted from (the base images).
    pub mount_from: Vec<Reference>,
}

/// Blobs uploaded while the build runs, on the async runtime, reported on one vertex of the
/// display that starts with the first blob.
pub struct EarlyUploads {
    thread: JoinHandle<UploadReport>,
}

impl EarlyUploads {
    /// Starts the uploader; the solver gets the returned sender in its options.
    pub fn start(
        runtime: tokio::runtime::Handle,
        client: Client,
        plan: EarlyPlan,
        display: Arc<Display>,
    ) -> (EarlyUploads, Sender<LayerBlob>) {
        let (sender, receiver) = channel();
        let thread = std::thread::Builder::new()
            .name("berth-early-push".into())
            .spawn(move || upload_loop(runtime, client, plan, display, receiver))
            .expect("spawning the upload thread");
        (EarlyUploads { thread }, sender)
    }

    /// Waits for every upload (the solver, and with it the sender, must be gone).
    pub fn finish(self) -> UploadReport {
        self.thread.join().unwrap_or_default()
    }
}

/// Keeps what the client did with the one blob of an early push.
#[derive(Default)]
struct Outcome(Mutex<Option<BlobOutcome>>);

impl Outcome {
    /// `pushed`, `mounted from base`, `layer already exists`...
    fn text(&self) -> String {
        let outcome = self.0.lock().unwrap_or_else(|e| e.into_inner());
        outcome
            .as_ref()
            .map_or_else(|| "pushed".to_owned(), |o| outcome_text(o).to_lowercase())
    }
}

impl Progress for Outcome {
    fn event(&self, event: &ProgressEvent) {
        if let ProgressEvent::BlobDone { outcome, .. } = event {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome.clone());
        }
    }
}

/// One blob to upload, and where to read it.
struct Job {
    descriptor: Descriptor,
    digest: Digest,
    content: Arc<dyn Provider>,
}

fn upload_loop(
    runtime: tokio::runtime::Handle,
    client: Client,
    plan: EarlyPlan,
    display: Arc<Display>,
    receiver: Receiver<LayerBlob>,
) -> UploadReport {
    // The client's push futures are not `Send`, so the uploads run as local tasks of this
    // thread; a second thread moves the layers from the solver's channel onto an async one.
    let (forward, mut layers) = tokio::sync::mpsc::unbounded_channel::<LayerBlob>();
    let bridge = std::thread::Builder::new()
        .name("berth-early-push-in".into())
        .spawn(move || {
            while let Ok(blob) = receiver.recv() {
                if forward.send(blob).is_err() {
                    break;
                }
            }
        });
    let report = Rc::new(RefCell::new(UploadReport::default()));
    let started = Instant::now();
    let mut vertex = None;
    // Starts the uploads of `job`, one per destination.
    let spawn = |job: Job, vertex: &mut Option<usize>| {
        let vertex = *vertex.get_or_insert_with(|| {
            let names: Vec<String> = plan
                .destinations
                .iter()
                .map(|d| format!("{}/{}", d.registry, d.repository))
                .collect();
            display.start(&format!(
                "pushing layers to {} while building",
                names.join(", ")
            ))
        });
        let job = Rc::new(job);
        let mut tasks = Vec::new();
        for destination in &plan.destinations {
            let client = client.clone();
            let job = job.clone();
            let destination = destination.clone();
            let display = display.clone();
            let report = report.clone();
            let mount_from = plan.mount_from.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let t = Instant::now();
                let outcome = Arc::new(Outcome::default());
                let opts = PushOptions {
                    mount_from,
                    progress: outcome.clone(),
                };
                let result = client
                    .push(job.content.as_ref(), &job.descriptor, &destination, &opts)
                    .await;
                let size = human_size(job.descriptor.size());
                let digest = &job.digest;
                let seconds = t.elapsed().as_secs_f64();
                match result {
                    Ok(_) => {
                        report.borrow_mut().uploaded += 1;
                        let how = outcome.text();
                        display.status(
                            vertex,
                            &format!("pushing layer {digest} {size} {how} {seconds:.1}s done"),
                        );
                    }
                    Err(e) => {
                        report.borrow_mut().failed += 1;
                        tracing::debug!(%digest, error = %e, "early upload failed");
                        display.status(
                            vertex,
                            &format!(
                                "pushing layer {digest} failed ({e}); it is sent again with the image"
                            ),
                        );
                    }
                }
            }));
        }
        tasks
    };
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(async {
        let mut tasks = Vec::new();
        let content: Arc<dyn Provider> = Arc::new(plan.content.clone());
        for descriptor in &plan.base_layers {
            if let Ok(digest) = descriptor_digest(descriptor) {
                let job = Job {
                    descriptor: descriptor.clone(),
                    digest,
                    content: content.clone(),
                };
                tasks.extend(spawn(job, &mut vertex));
            }
        }
        while let Some(blob) = layers.recv().await {
            let Ok(digest) = descriptor_digest(&blob.descriptor) else {
                continue;
            };
            let layer = LayerFile {
                descriptor: blob.descriptor.clone(),
                digest: digest.clone(),
                file: Arc::new(blob.file),
            };
            let job = Job {
                descriptor: blob.descriptor,
                digest,
                content: Arc::new(layer),
            };
            tasks.extend(spawn(job, &mut vertex));
        }
        for task in tasks {
            let _ = task.await;
        }
    }));
    if let Ok(bridge) = bridge {
        let _ = bridge.join();
    }
    if let Some(vertex) = vertex {
        display.done(vertex, started.elapsed().as_secs_f64(), None, false);
    }
    report.take()
}

/// Shows the client's events on a vertex of the display: one status line per blob and
/// manifest.
pub struct VertexProgress {
    display: Arc<Display>,
    vertex: usize,
    /// For a push, where to: manifests are then reported as BuildKit reports them,
    /// `pushing manifest for NAME@DIGEST`.
    pushing_to: Option<String>,
    /// Sizes of the blobs in flight, for their lines.
    sizes: Mutex<HashMap<Digest, u64>>,
}

impl VertexProgress {
    pub fn new(
        display: Arc<Display>,
        vertex: usize,
        pushing_to: Option<String>,
    ) -> Arc<VertexProgress> {
        Arc::new(VertexProgress {
            display,
            vertex,
            pushing_to,
            sizes: Mutex::new(HashMap::new()),
        })
    }
}

impl Progress for VertexProgress {
    fn event(&self, event: &ProgressEvent) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::BlobStart { digest, size, .. } => {
                sizes.insert(digest.clone(), *size);
            }
            ProgressEvent::BlobDone { digest, outcome } => {
                let size = sizes.remove(digest).map(human_size).unwrap_or_default();
                let what = match outcome {
                    BlobOutcome::Downloaded => "done".to_owned(),
                    other => outcome_text(other).to_lowercase(),
                };
                self.display
                    .status(self.vertex, &format!("{digest} {size} {what}"));
            }
            ProgressEvent::ManifestDone { digest, target, .. } => {
                let text = match &self.pushing_to {
                    Some(to) => format!("pushing manifest for {to}@{digest} done"),
                    None if *target == digest.to_string() => format!("manifest {digest} done"),
                    None => format!("manifest {digest} as {target} done"),
                };
                self.display.status(self.vertex, &text);
            }
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => self.display.status(
                self.vertex,
                &format!("{what}: try {attempt} failed ({error}); retrying in {delay:?}"),
            ),
            ProgressEvent::BlobAdvance { .. } => {}
        }
    }
}

/// Pushes the built image to `destination`: layers (those uploaded during the build are found
/// present), config, then the manifest under the destination's tag. `mount_from` names other
/// repositories of the same registry that may hold the blobs.
pub fn push_image(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    store: &ImageStore,
    built: &Built,
    destination: &Reference,
    mount_from: Vec<Reference>,
    display: &Arc<Display>,
) -> anyhow::Result<Digest> {
    let vertex = display.start(&format!("pushing {destination}"));
    let t = Instant::now();
    let opts = PushOptions {
        mount_from,
        progress: VertexProgress::new(display.clone(), vertex, Some(destination.to_string())),
    };
    let pushed =
        runtime.block_on(client.push(store.content(), &built.manifest, destination, &opts));
    match pushed {
        Ok(pushed) => {
            let digest = descriptor_digest(&pushed.root)?;
            display.done(vertex, t.elapsed().as_secs_f64(), None, false);
            Ok(digest)
        }
        Err(e) => {
            let message = format!("failed to push {destination}: {e}");
            display.error(vertex, &message);
            Err(anyhow::Error::new(e).context(format!("pushing {destination}")))
        }
    }
}

/// The async runtime for pulls and pushes: two workers, as many as the transfers need.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_files_serve_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let digest = Digest::sha256(b"0123456789");
        let layer = LayerFile {
            descriptor: berth_layerstore::image::new_descriptor(
                "application/vnd.oci.image.layer.v1.tar",
                &digest,
                10,
            ),
            digest: digest.clone(),
            file: Arc::new(File::open(&path).unwrap()),
        };
        let mut text = String::new();
        layer
            .read(&digest, Some(2..5))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "234");
        text.clear();
        layer
            .read(&digest, Some(8..100))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "89");
        assert!(layer.read(&digest, Some(11..12)).is_err());
        assert!(layer.info(&Digest::sha256(b"x")).is_err());
    }
}
