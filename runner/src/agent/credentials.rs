//! Task role credentials, as the ECS agent serves them to a task whose definition names a
//! `taskRoleArn`.
//!
//! The control plane mints the credentials ([`RoleCredentials`]) and sends them with the
//! task's assignment. The agent gives the task a credentials id and an authorization token of
//! its own; its containers find them in `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! (`http://<agent>/v2/credentials/<id>`) and `AWS_CONTAINER_AUTHORIZATION_TOKEN`, which the
//! AWS SDKs send back in the `Authorization` header. The endpoint answers with
//! `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}`. Before they
//! expire (once less than [`REFRESH_BEFORE`], or a quarter of their lifetime, is left) the
//! agent asks the control plane for new ones in its next poll, as STS credentials are
//! refreshed. Credentials end with their task: the id is forgotten when the task is
//! deprovisioned, and they are never written to disk.
//!
//! The `Token` is a credential for berth registries that trust the control plane's key: the
//! password of Basic auth at their token endpoint (see `berth_registry::auth`).

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::agent::protocol::RoleCredentials;
use crate::ecs::Timestamp;

/// How long before their expiration credentials are replaced, at most.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);

/// The credentials of one task's role, and the secrets that give access to them.
#[derive(Clone)]
pub(crate) struct TaskCredentials {
    /// The id in the endpoint's path.
    pub(crate) id: String,
    /// What a request must carry in `Authorization`.
    pub(crate) authorization: String,
    current: RoleCredentials,
    received_at: Timestamp,
}

impl std::fmt::Debug for TaskCredentials {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCredentials")
            .field("id", &self.id)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
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
}

impl TaskCredentials {
    /// Serves `credentials`, received at `now`, under a new id.
    pub(crate) fn new(credentials: RoleCredentials, now: Timestamp) -> TaskCredentials {
        TaskCredentials {
            id: random_hex(32),
            authorization: random_hex(64),
            current: credentials,
            received_at: now,
        }
    }

    /// Replaces the credentials with newer ones, under the same id.
    pub(crate) fn renew(&mut self, credentials: RoleCredentials, now: Timestamp) {
        if credentials.expiration > self.current.expiration {
            self.current = credentials;
            self.received_at = now;
        }
    }

    /// Whether it is time to ask for new credentials.
    pub(crate) fn due(&self, now: Timestamp) -> bool {
        let lifetime = self
            .current
            .expiration
            .saturating_duration_since(self.received_at);
        let margin = REFRESH_BEFORE.min(lifetime / 4);
        now.saturating_add(margin) >= self.current.expiration
    }

    /// What the endpoint serves.
    pub(crate) fn current(&self) -> Credentials {
        Credentials {
            access_key_id: self.current.access_key_id.clone(),
            secret_access_key: self.current.secret_access_key.clone(),
            token: self.current.session_token.clone(),
            expiration: self.current.expiration.to_rfc3339(),
            role_arn: self.current.role_arn.clone(),
        }
    }
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
    use crate::agent::protocol::RoleType;

    fn issued(expiration: Timestamp, key: &str) -> RoleCredentials {
        RoleCredentials {
            task_arn: "arn:aws:ecs:local:000000000000:task/default/t".into(),
            role_type: RoleType::TaskApplication,
            role_arn: "arn:aws:iam::000000000000:role/app".into(),
            access_key_id: key.into(),
            secret_access_key: "s".repeat(40),
            session_token: "token".into(),
            expiration,
            registries: Vec::new(),
        }
    }

    #[test]
    fn credentials_are_served_in_ecs_shape_and_renewed_before_expiring() {
        let start = Timestamp::from_secs(1_700_000_000);
        let hour = Duration::from_secs(3600);
        let mut task = TaskCredentials::new(issued(start.saturating_add(hour), "ASIAFIRST"), start);
        assert_eq!(task.id.len(), 32);
        let json = serde_json::to_value(task.current()).unwrap();
        assert_eq!(json["AccessKeyId"], "ASIAFIRST");
        assert_eq!(json["Token"], "token");
        assert_eq!(json["Expiration"], "2023-11-14T23:13:20.000Z");
        assert_eq!(json["RoleArn"], "arn:aws:iam::000000000000:role/app");
        assert!(!task.due(start.saturating_add(Duration::from_secs(30 * 60))));
        assert!(task.due(start.saturating_add(Duration::from_secs(50 * 60))));

        let id = task.id.clone();
        let later = start.saturating_add(Duration::from_secs(50 * 60));
        task.renew(issued(later.saturating_add(hour), "ASIASECOND"), later);
        assert_eq!(task.id, id, "same endpoint");
        assert_eq!(task.current().access_key_id, "ASIASECOND");
        assert!(!task.due(later));
        task.renew(issued(start, "ASIAOLD"), later);
        assert_eq!(
            task.current().access_key_id,
            "ASIASECOND",
            "older ones are ignored"
        );

        // Short-lived credentials are renewed with a quarter of their life left.
        let short = TaskCredentials::new(
            issued(start.saturating_add(Duration::from_secs(80)), "A"),
            start,
        );
        assert!(!short.due(start.saturating_add(Duration::from_secs(50))));
        assert!(short.due(start.saturating_add(Duration::from_secs(61))));
    }
}
