//! Credentials for tasks' IAM roles (`taskRoleArn`, `executionRoleArn`), as ECS's control plane
//! hands them to its agents.
//!
//! [`Roles`] holds what IAM would: each role's policy, as an IAM policy document (see
//! [`Policy`] for what it may say about registries), and the key that signs credentials. A
//! task's credentials are minted when its assignment is delivered to its agent, and again when
//! the agent asks before they expire; they are never stored. Their session token is a berth
//! registry credential ([`berth_registry::auth`]) carrying the role's policy, so a registry
//! configured with the same key lets the task, or the agent pulling for it, do exactly what
//! the role allows. A role that no policy names gets credentials that allow nothing, as an IAM
//! role without policies would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_registry::auth::{Policy, TokenKey};
use rand::Rng;
use rand::distributions::{Alphanumeric, DistString};

use crate::agent::protocol::{RoleCredentials, RoleType};
use crate::ecs::Timestamp;

/// How long credentials are valid, as STS's default session.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The roles the control plane can hand out credentials for.
#[derive(Debug, Clone)]
pub struct Roles {
    key: TokenKey,
    policies: BTreeMap<String, Policy>,
    registries: Vec<String>,
    lifetime: Duration,
}

/// Why a roles file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("roles in {}: {reason}", path.display())]
pub struct RolesError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl Roles {
    /// Roles whose credentials `key` signs; no policies yet.
    pub fn new(key: TokenKey) -> Roles {
        Roles {
            key,
            policies: BTreeMap::new(),
            registries: Vec::new(),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Gives role `role_arn` `policy`, replacing what it had.
    pub fn policy(mut self, role_arn: impl Into<String>, policy: Policy) -> Roles {
        self.policies.insert(role_arn.into(), policy);
        self
    }

    /// The registries (`host[:port]`) that trust the key: agents use execution role
    /// credentials with these only, and send them nowhere else.
    pub fn registries(mut self, registries: Vec<String>) -> Roles {
        self.registries = registries;
        self
    }

    /// How long credentials are valid ([`DEFAULT_LIFETIME`] unless set; at least a minute).
    pub fn lifetime(mut self, lifetime: Duration) -> Roles {
        self.lifetime = lifetime.max(Duration::from_secs(60));
        self
    }

    /// Reads a roles file: a JSON object from role ARN to IAM policy document,
    /// `{"arn:aws:iam::123456789012:role/web": {"Version": "2012-10-17", "Statement": [...]}}`.
    pub fn load_policies(mut self, path: &Path) -> Result<Roles, RolesError> {
        let error = |reason: String| RolesError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let document: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&text)
            .map_err(|e| error(format!("expected an object from role ARN to policy: {e}")))?;
        for (role, policy) in document {
            if !role.starts_with("arn:") || !role.contains(":role/") {
                return Err(error(format!(
                    "{role:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                )));
            }
            let policy =
                Policy::from_document(&policy).map_err(|e| error(format!("{role}: {e}")))?;
            self.policies.insert(role, policy);
        }
        Ok(self)
    }

    /// Credentials of `role_arn` for task `task_arn`.
    pub fn issue(&self, task_arn: &str, role_type: RoleType, role_arn: &str) -> RoleCredentials {
        let policy = match self.policies.get(role_arn) {
            Some(policy) => policy.clone(),
            None => {
                tracing::warn!(
                    role = role_arn,
                    task = task_arn,
                    "no policy for this role: its credentials allow nothing"
                );
                Policy::default()
            }
        };
        let issued = self.key.issue_credential(role_arn, &policy, self.lifetime);
        let mut rng = rand::thread_rng();
        RoleCredentials {
            task_arn: task_arn.to_owned(),
            role_type,
            role_arn: role_arn.to_owned(),
            access_key_id: format!("ASIA{}", upper_base32(&mut rng, 16)),
            secret_access_key: Alphanumeric.sample_string(&mut rng, 40),
            session_token: issued.token,
            expiration: Timestamp::from_secs(
                i64::try_from(issued.expires_at).unwrap_or(i64::MAX / 1000),
            ),
            registries: match role_type {
                RoleType::TaskExecution => self.registries.clone(),
                RoleType::TaskApplication => Vec::new(),
            },
        }
    }
}

/// Characters of STS access key ids.
fn upper_base32(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_carry_the_roles_policy_and_look_like_sts() {
        let key = TokenKey::from_bytes(vec![3; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roles.json");
        std::fs::write(
            &file,
            r#"{"arn:aws:iam::000000000000:role/web": {"Statement": [
                {"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "app/*"}]}}"#,
        )
        .unwrap();
        let roles = Roles::new(key.clone())
            .registries(vec!["127.0.0.1:5000".into()])
            .load_policies(&file)
            .unwrap();
        let task = "arn:aws:ecs:local:000000000000:task/default/abc";
        let web = roles.issue(
            task,
            RoleType::TaskApplication,
            "arn:aws:iam::000000000000:role/web",
        );
        assert!(web.access_key_id.starts_with("ASIA") && web.access_key_id.len() == 20);
        assert_eq!(web.secret_access_key.len(), 40);
        assert!(
            web.registries.is_empty(),
            "only execution credentials name registries"
        );
        let claims = key.verify_credential(&web.session_token).unwrap();
        assert_eq!(claims.registered.sub, "arn:aws:iam::000000000000:role/web");
        assert!(claims.policy.allows("app/x", "pull"));
        assert!(!claims.policy.allows("app/x", "push"));
        let left = web.expiration.saturating_duration_since(Timestamp::now());
        assert!(
            left > Duration::from_secs(3500) && left <= DEFAULT_LIFETIME,
            "{left:?}"
        );

        let unknown = roles.issue(
            task,
            RoleType::TaskExecution,
            "arn:aws:iam::000000000000:role/x",
        );
        assert_eq!(unknown.registries, ["127.0.0.1:5000"]);
        let claims = key.verify_credential(&unknown.session_token).unwrap();
        assert!(
            !claims.policy.allows("app/x", "pull"),
            "an unknown role allows nothing"
        );
    }

    #[test]
    fn bad_roles_files_name_the_file_and_the_role() {
        let key = TokenKey::from_bytes(vec![3; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roles.json");
        for (content, expected) in [
            ("[]", "expected an object"),
            (r#"{"web": {"Statement": []}}"#, "not a role ARN"),
            (
                r#"{"arn:aws:iam::1:role/web": {"Statement": [{"Effect": "Allow"}]}}"#,
                "role/web: policy statement 0: Action is missing",
            ),
        ] {
            std::fs::write(&file, content).unwrap();
            let err = Roles::new(key.clone())
                .load_policies(&file)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("roles.json") && err.contains(expected),
                "{err}"
            );
        }
    }
}
