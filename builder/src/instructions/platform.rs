//! Platforms (`linux/amd64`, `linux/arm/v7`, ...), parsed and normalised as containerd's
//! `platforms.Parse` and `platforms.Normalize` do, which is what BuildKit uses for
//! `FROM --platform` and `--platform`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An operating system, a CPU architecture and an optional variant.
///
/// Always normalised: `x86_64` is `amd64`, `aarch64` is `arm64`, `arm` has variant `v7` unless
/// another is given, `arm64/v8` is plain `arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// The operating system, e.g. `linux`.
    pub os: String,
    /// The architecture, e.g. `amd64`.
    pub architecture: String,
    /// The variant, e.g. `v7`, or empty.
    pub variant: String,
}

/// A platform string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlatformError {
    /// A component with characters other than letters, digits, `_`, `.` and `-`.
    #[error(
        "{component:?} is an invalid component of {specifier:?}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\""
    )]
    InvalidComponent {
        /// The component.
        component: String,
        /// The whole string.
        specifier: String,
    },
    /// A single component that is neither a known OS nor a known architecture.
    #[error("{0:?}: unknown operating system or architecture")]
    Unknown(String),
    /// More than three components.
    #[error("{0:?}: cannot parse platform specifier")]
    TooManyComponents(String),
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
        }
    }

    /// The Linux platform of this machine's CPU: what builds run on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "powerpc" => "ppc",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "mips" if cfg!(target_endian = "little") => "mipsle",
            other => other,
        };
        Platform::new("linux", arch, "")
    }

    /// Parses `os[/arch[/variant]]`, or a lone OS or architecture (the other part is taken from
    /// [`Platform::host`]).
    pub fn parse(specifier: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = specifier.split('/').collect();
        for part in &parts {
            let ok = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(PlatformError::InvalidComponent {
                    component: part.to_string(),
                    specifier: specifier.to_string(),
                });
            }
        }
        match parts.as_slice() {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    let host = Platform::host();
                    return Ok(Platform::new(&os, &host.architecture, &host.variant));
                }
                let (arch, variant) = normalize_arch(one, "");
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Platform::new("linux", &arch, &variant));
                }
                Err(PlatformError::Unknown(specifier.to_string()))
            }
            [os, arch] => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            _ => Err(PlatformError::TooManyComponents(specifier.to_string())),
        }
    }

    /// The variant, if there is one.
    pub fn variant(&self) -> Option<&str> {
        (!self.variant.is_empty()).then_some(self.variant.as_str())
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, PlatformError> {
        Platform::parse(s)
    }
}

impl fmt::Display for Platform {
    /// `os/arch` or `os/arch/variant`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_string()
    } else {
        os
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let p = |s: &str| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("Linux/AARCH64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("windows/amd64"), "windows/amd64");
        assert_eq!(p("macos/arm64"), "darwin/arm64");
        assert_eq!(Platform::parse("linux").unwrap().os, "linux");
    }

    #[test]
    fn rejects() {
        assert!(Platform::parse("").is_err());
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("nonsense").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("linux/am d64").is_err());
        assert!(Platform::parse("linux/*").is_err());
    }
}
