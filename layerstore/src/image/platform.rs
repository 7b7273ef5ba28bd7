//! Platforms: parsing `os/architecture[/variant]`, normalizing names, and choosing the entry of
//! an index or manifest list that fits a platform.
//!
//! Names follow Go's `GOOS`/`GOARCH`, normalized as containerd does: `x86_64` is `amd64`,
//! `aarch64` is `arm64`, `armhf` is `arm/v7`, a bare `arm` is `arm/v7`, and `arm64/v8` is plain
//! `arm64`. Matching compares normalized os, architecture and variant. Where variants are CPU
//! levels (`arm`, `amd64`), a host also runs the lower levels (`arm/v7` runs `v6` and `v5`), and
//! [`select`] prefers the closest one. `os.version` is not compared.
//!
//! `oci-spec` 0.10 (de)serializes `Platform`'s `os.version` and `os.features` under the names
//! `os_version` and `os_features`, so berth never sets those two on platforms it writes.

use oci_spec::image::{Arch, Descriptor, Os, Platform};

use crate::image::{ImageError, Result};

/// Builds an `oci-spec` platform from its parts.
pub fn platform_of(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    let mut p = Platform::default();
    p.set_os(Os::from(os));
    p.set_architecture(Arch::from(architecture));
    p.set_variant(variant.filter(|v| !v.is_empty()).map(str::to_owned));
    p
}

/// Parses `os/architecture[/variant]` (as `docker --platform` takes it), normalizing the names.
pub fn parse(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(ImageError::BadPlatform(s.to_owned()));
    }
    let os = parts[0].to_ascii_lowercase();
    let (arch, variant) = normalize_arch(parts[1], parts.get(2).copied());
    Ok(platform_of(&os, &arch, variant.as_deref()))
}

/// Formats a platform as `os/architecture[/variant]`.
pub fn format(p: &Platform) -> String {
    match p.variant() {
        Some(v) if !v.is_empty() => format!("{}/{}/{}", p.os(), p.architecture(), v),
        _ => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// The platform of the running host, in Go's terms.
pub fn host() -> Platform {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let (arch, variant) = normalize_arch(std::env::consts::ARCH, None);
    platform_of(os, &arch, variant.as_deref())
}

/// Normalizes an architecture name and its variant the way containerd does.
pub fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(str::to_ascii_lowercase)
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "i386" | "x86" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = variant.filter(|v| v != "8" && v != "v8");
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") => "v7".to_owned(),
                Some("5") | Some("6") | Some("8") => format!("v{}", variant.unwrap_or_default()),
                Some(v) => v.to_owned(),
            };
            ("arm".into(), Some(v))
        }
        _ => (arch, variant),
    }
}

fn normalized(p: &Platform) -> (String, String, Option<String>) {
    let (arch, variant) = normalize_arch(&p.architecture().to_string(), p.variant().as_deref());
    (p.os().to_string().to_ascii_lowercase(), arch, variant)
}

/// Numeric part of a `vN` variant.
fn variant_number(v: Option<&str>) -> Option<u32> {
    v?.strip_prefix('v')?.parse().ok()
}

/// How well an image built for `have` fits a host of platform `want`: `Some(0)` is exact, a
/// larger number is an older compatible variant, `None` does not run.
pub fn rank(want: &Platform, have: &Platform) -> Option<u32> {
    let (want_os, want_arch, want_variant) = normalized(want);
    let (have_os, have_arch, have_variant) = normalized(have);
    if want_os != have_os || want_arch != have_arch {
        return None;
    }
    if want_variant == have_variant {
        return Some(0);
    }
    match want_arch.as_str() {
        // Variants that are CPU levels: a host runs its own level and the ones below.
        "arm" | "amd64" => {
            let w = if want_arch == "amd64" {
                variant_number(want_variant.as_deref()).unwrap_or(1)
            } else {
                variant_number(want_variant.as_deref())?
            };
            let h = if have_arch == "amd64" {
                variant_number(have_variant.as_deref()).unwrap_or(1)
            } else {
                variant_number(have_variant.as_deref())?
            };
            w.checked_sub(h)
        }
        // A host that did not ask for a variant takes any.
        _ if want_variant.is_none() => Some(1),
        _ => None,
    }
}

/// Whether an image for `have` runs on `want`.
pub fn matches(want: &Platform, have: &Platform) -> bool {
    rank(want, have).is_some()
}

/// The entry of `manifests` (an index's or manifest list's) that best fits `want`: an exact
/// match first, then the closest compatible variant; on a tie, the first in the list. Entries
/// without a platform never match.
pub fn select<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .filter_map(|d| Some((rank(want, d.platform().as_ref()?)?, d)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

/// Like [`select`], but an error naming `what` and the platform when nothing fits.
pub fn select_or_err<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    select(manifests, want).ok_or_else(|| ImageError::NoMatchingPlatform {
        what: what.to_owned(),
        platform: format(want),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::new_descriptor;
    use crate::media;

    fn entry(p: &str) -> Descriptor {
        let mut d = new_descriptor(media::OCI_MANIFEST, &Digest::sha256(p.as_bytes()), 1);
        // As written in an index, not normalized.
        let parts: Vec<&str> = p.split('/').collect();
        d.set_platform(Some(platform_of(parts[0], parts[1], parts.get(2).copied())));
        d
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(format(&parse("linux/amd64").unwrap()), "linux/amd64");
        assert_eq!(format(&parse("linux/x86_64").unwrap()), "linux/amd64");
        assert_eq!(format(&parse("linux/aarch64/v8").unwrap()), "linux/arm64");
        assert_eq!(format(&parse("linux/arm").unwrap()), "linux/arm/v7");
        assert_eq!(format(&parse("Linux/armhf").unwrap()), "linux/arm/v7");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selects_best_entry() {
        let list = [
            entry("linux/amd64"),
            entry("linux/arm/v6"),
            entry("linux/arm/v7"),
            entry("linux/arm64/v8"),
            entry("windows/amd64"),
        ];
        let pick = |p: &str| {
            select(&list, &parse(p).unwrap()).map(|d| format(d.platform().as_ref().unwrap()))
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm/v8").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64").as_deref(), Some("windows/amd64"));
        assert_eq!(pick("linux/amd64/v3").as_deref(), Some("linux/amd64"));
        assert!(select_or_err(&list, &parse("linux/ppc64le").unwrap(), "index").is_err());
    }
}
