//! The closure of an image: every blob a set of manifests and indexes reaches.

use std::collections::HashSet;

use oci_spec::image::Descriptor;

use crate::content::{ContentError, Provider};
use crate::digest::Digest;
use crate::image::manifest::{Manifest, is_manifest_media_type};
use crate::image::{ImageError, Result, descriptor_digest};
use crate::media;

/// Every blob reachable from `roots`: the roots themselves and, for manifests and indexes,
/// everything they reference (configs, layers, index entries), recursively. Each blob appears
/// once, parents before their children, in reference order.
///
/// A missing blob is an error naming the blob and what references it, except a
/// non-distributable layer, which may legitimately be absent and is left out. A blob whose
/// stored size differs from its descriptor is an error too. Blobs of unknown media types are
/// included but not looked into.
pub fn reachable<S: Provider + ?Sized>(store: &S, roots: &[Descriptor]) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    // A stack of (descriptor, what references it), reversed so that pops follow list order.
    let mut stack: Vec<(Descriptor, String)> = roots
        .iter()
        .rev()
        .map(|d| (d.clone(), "the image list".to_owned()))
        .collect();
    while let Some((desc, referenced_by)) = stack.pop() {
        let digest = descriptor_digest(&desc)?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let media_type = desc.media_type().to_string();
        let info = match store.info(&digest) {
            Ok(info) => info,
            Err(ContentError::NotFound(_)) if media::is_non_distributable(&media_type) => continue,
            Err(ContentError::NotFound(_)) => {
                return Err(ImageError::MissingBlob {
                    digest,
                    referenced_by,
                });
            }
            Err(e) => return Err(ImageError::content(&digest, e)),
        };
        if info.size != desc.size() {
            return Err(ImageError::SizeMismatch {
                what: digest.to_string(),
                expected: desc.size(),
                actual: info.size,
            });
        }
        if is_manifest_media_type(&media_type) {
            let (manifest, _) = Manifest::read(store, &desc)?;
            let parent = format!("{media_type} {digest}");
            for child in manifest.references().into_iter().rev() {
                stack.push((child, parent.clone()));
            }
        }
        out.push(desc);
    }
    Ok(out)
}
