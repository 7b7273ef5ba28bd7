//! Checked content digests, following the grammar of the OCI image spec (`descriptor.md`):
//!
//! ```text
//! digest    ::= algorithm ":" encoded
//! algorithm ::= algorithm-component (algorithm-separator algorithm-component)*
//! algorithm-component ::= [a-z0-9]+
//! algorithm-separator ::= [+._-]
//! encoded   ::= [a-zA-Z0-9=_-]+
//! ```
//!
//! berth computes and verifies `sha256` (64 lowercase hex) and `sha512` (128 lowercase hex). Any
//! other algorithm that matches the grammar is refused as unsupported, which is what the spec asks
//! of an implementation that cannot verify it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A digest algorithm that berth can compute and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears before the `:` of a digest.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of a digest of this algorithm.
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        }
    }
}

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} does not match the grammar algorithm:encoded")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error("{algorithm} digest must be {expected} lowercase hex characters, got {got:?}")]
    BadEncoding {
        algorithm: Algorithm,
        expected: usize,
        got: String,
    },
}

/// A checked digest: a supported algorithm and its lowercase hex encoding.
///
/// Construct it by parsing (`"sha256:…".parse()`), from a finished [`Hasher`], or with
/// [`Digest::of`]. Every constructor checks the encoding, so a `Digest` is always safe to use as
/// a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// Builds a digest from an algorithm and its hex encoding, checking the encoding.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding {
                algorithm,
                expected: algorithm.hex_len(),
                got: hex.to_owned(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part, after the `:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

fn is_algorithm_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks `algorithm` against the OCI grammar (components of `[a-z0-9]+` joined by `[+._-]`).
fn is_algorithm_grammar(s: &str) -> bool {
    s.split(['+', '.', '_', '-']).all(is_algorithm_component)
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        if !is_algorithm_grammar(alg)
            || enc.is_empty()
            || !enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        let algorithm: Algorithm = alg.parse()?;
        Digest::from_parts(algorithm, enc)
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // A checked digest always satisfies oci-spec's (looser) grammar.
        oci_spec::image::Digest::from_str(&d.to_string())
            .expect("a checked digest is a valid oci-spec digest")
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        d.to_string().parse()
    }
}

/// A streaming hasher for one of the supported algorithms.
///
/// sha256 goes through the `sha2` crate, which picks its SHA-NI implementation at run time when
/// the CPU has the `sha`, `sse2`, `ssse3` and `sse4.1` features; see [`sha_ni_available`].
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: hex::encode(bytes),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm())
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether this CPU offers what the `sha2` crate needs to take its SHA-NI path for sha256.
///
/// `sha2` 0.10 checks exactly these features at run time (through `cpufeatures`) and falls back
/// to its portable code when one is missing; the `sha256_throughput` bench shows which path ran.
pub fn sha_ni_available() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256(b""), d);
    }

    #[test]
    fn computes_sha512() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(
            d.to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha256+:abc",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn unknown_but_grammatical_algorithm_is_unsupported() {
        assert_eq!(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("multihash+base58".into()))
        );
    }

    #[test]
    fn serde_round_trip() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:nope\"").is_err());
    }

    #[test]
    fn converts_to_and_from_oci_spec() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        let o: oci_spec::image::Digest = (&d).into();
        assert_eq!(Digest::try_from(&o).unwrap(), d);
    }
}
