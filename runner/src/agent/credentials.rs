//! Task role credentials, as the ECS agent serves them to a task whose definition names a
//! `taskRoleArn`.
//!
//! Each such task gets a credentials id and an authorization token when it is provisioned.
//! Its containers find them in `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! (`http://<agent>/v2/credentials/<id>`) and `AWS_CONTAINER_AUTHORIZATION_TOKEN`, which the
//! AWS SDKs send back in the `Authorization` header. The endpoint answers with
//! `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}`: temporary
//! credentials valid for [`LIFETIME`], replaced by new ones once less than [`REFRESH_BEFORE`]
//! of that is left, as STS credentials are refreshed before they expire. Credentials end with
//! their task: the id is forgotten when the task is deprovisioned.
//!
//! The keys are random, in the shape of STS's (`ASIA` and 16 characters, a 40-character
//! secret, a session token): a berth registry or any other service that accepts them has to
//! be told about them; nothing here signs requests.

use rand::Rng;
use rand::distributions::{Alphanumeric, DistString};
use serde::Serialize;

use crate::ecs::Timestamp;

/// How long one set of credentials is valid.
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(60 * 60);
/// How long before their expiration credentials are replaced.
pub const REFRESH_BEFORE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The credentials of one task's role, and the secrets that give access to them.
#[derive(Debug, Clone)]
pub(crate) struct TaskCredentials {
    /// The id in the endpoint's path.
    pub(crate) id: String,
    /// What a request must carry in `Authorization`.
    pub(crate) authorization: String,
    /// The role.
    pub(crate) role_arn: String,
    current: Credentials,
}

/// The endpoint's answer, with ECS's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) token: String,
    /// RFC 3339.
    pub(crate) expiration: String,
    pub(crate) role_arn: String,
    #[serde(skip)]
    expires_at: Timestamp,
}

impl TaskCredentials {
    /// New credentials for `role_arn`, valid from `now`.
    pub(crate) fn issue(role_arn: &str, now: Timestamp) -> TaskCredentials {
        TaskCredentials {
            id: random_hex(32),
            authorization: random_hex(64),
            role_arn: role_arn.to_owned(),
            current: Credentials::new(role_arn, now),
        }
    }

    /// The credentials to hand out at `now`: the current ones, or new ones when the current
    /// ones are about to expire.
    pub(crate) fn current(&mut self, now: Timestamp) -> Credentials {
        if now.saturating_add(REFRESH_BEFORE) >= self.current.expires_at {
            self.current = Credentials::new(&self.role_arn, now);
        }
        self.current.clone()
    }
}

impl Credentials {
    fn new(role_arn: &str, now: Timestamp) -> Credentials {
        let mut rng = rand::thread_rng();
        let expires_at = now.saturating_add(LIFETIME);
        Credentials {
            access_key_id: format!("ASIA{}", upper_alnum(&mut rng, 16)),
            secret_access_key: Alphanumeric.sample_string(&mut rng, 40),
            token: Alphanumeric.sample_string(&mut rng, 128),
            expiration: expires_at.to_rfc3339(),
            role_arn: role_arn.to_owned(),
            expires_at,
        }
    }
}

fn upper_alnum(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// `len` random lowercase hex digits.
pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("a hex digit"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_look_like_sts_and_rotate_before_expiring() {
        let start = Timestamp::from_secs(1_700_000_000);
        let mut task = TaskCredentials::issue("arn:aws:iam::000000000000:role/app", start);
        assert_eq!(task.id.len(), 32);
        let first = task.current(start);
        assert!(first.access_key_id.starts_with("ASIA"));
        assert_eq!(first.access_key_id.len(), 20);
        assert_eq!(first.secret_access_key.len(), 40);
        assert_eq!(first.expiration, "2023-11-14T23:13:20.000Z");
        let json = serde_json::to_value(&first).unwrap();
        for field in [
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration",
            "RoleArn",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        let later = start.saturating_add(std::time::Duration::from_secs(30 * 60));
        assert_eq!(task.current(later), first, "still valid for 30 minutes");
        let near_expiry = start.saturating_add(std::time::Duration::from_secs(50 * 60));
        let rotated = task.current(near_expiry);
        assert_ne!(rotated.access_key_id, first.access_key_id);
        assert_eq!(rotated.role_arn, "arn:aws:iam::000000000000:role/app");
    }
}
