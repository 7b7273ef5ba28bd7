//! Content digests as the OCI image spec writes them (`algorithm:encoded`), computed here so the
//! suite never trusts the registry's arithmetic.

use sha2::{Digest as _, Sha256, Sha512};

/// The `sha256:<hex>` digest of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The `sha512:<hex>` digest of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{:x}", Sha512::digest(data))
}

/// Whether `digest` names `data`, for the algorithms this suite can compute (sha256, sha512).
/// A digest in another algorithm, or malformed, never matches.
pub fn matches(digest: &str, data: &[u8]) -> bool {
    match digest.split_once(':') {
        Some(("sha256", _)) => sha256(data) == digest,
        Some(("sha512", _)) => sha512(data) == digest,
        _ => false,
    }
}

/// Whether `digest` follows the OCI grammar: `algorithm ":" encoded`, where the algorithm is
/// lower-case components joined by `+ . _ -` and the encoded part is `[a-zA-Z0-9=_-]+`; for the
/// registered algorithms sha256 and sha512 the encoded part must be lower-case hex of the right
/// length.
pub fn is_well_formed(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    let hex = |len: usize| {
        encoded.len() == len
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    algorithm_ok
        && encoded_ok
        && match algorithm {
            "sha256" => hex(64),
            "sha512" => hex(128),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha512(b"abc").starts_with("sha512:ddaf35a193617aba"));
    }

    #[test]
    fn matching() {
        assert!(matches(&sha256(b"x"), b"x"));
        assert!(!matches(&sha256(b"x"), b"y"));
        assert!(matches(&sha512(b"x"), b"x"));
        assert!(!matches("md5:abc", b"x"));
        assert!(!matches("garbage", b"x"));
    }

    #[test]
    fn grammar() {
        assert!(is_well_formed(&sha256(b"x")));
        assert!(is_well_formed(&sha512(b"x")));
        assert!(is_well_formed(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
        ));
        assert!(!is_well_formed("sha256:ABC"));
        assert!(!is_well_formed("sha256:abc"));
        assert!(!is_well_formed("sha256"));
        assert!(!is_well_formed(":abc"));
        assert!(!is_well_formed("SHA256:abc"));
        assert!(!is_well_formed("sha256:"));
    }
}
