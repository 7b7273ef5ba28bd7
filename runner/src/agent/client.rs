//! The agent's side of the agent protocol: registration and polls, over HTTP.

use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::protocol::{
    MAX_POLL_WAIT_SECS, PollRequest, PollResponse, REGISTER_PATH, RegisterRequest,
    RegisterResponse, poll_path,
};

/// How a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// It could not be reached or failed on its side (5xx): try again later.
    #[error("{0}")]
    Unavailable(String),
    /// It does not know this agent (404 on a poll): register again.
    #[error("the control plane does not know this agent")]
    UnknownAgent,
    /// It refused the request (4xx): retrying the same request will not help.
    #[error("{0}")]
    Refused(String),
}

/// A client of one control plane.
#[derive(Debug, Clone)]
pub(crate) struct ControlPlane {
    base: Url,
    http: reqwest::Client,
}

impl ControlPlane {
    pub(crate) fn new(base: Url) -> Result<ControlPlane, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("berth-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(ControlPlane { base, http })
    }

    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base
            .join(path)
            .map_err(|e| CallError::Refused(format!("{}{path}: {e}", self.base)))
    }

    pub(crate) async fn register(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, CallError> {
        let url = self.url(REGISTER_PATH)?;
        let response = self
            .http
            .post(url.clone())
            .timeout(Duration::from_secs(30))
            .json(request)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(format!("POST {url}: {e}")))?;
        read(url, response, false).await
    }

    /// Reports `tasks` and waits (at most `wait`, held by the control plane) for work.
    pub(crate) async fn poll(
        &self,
        agent_id: &str,
        wait: Duration,
        request: &PollRequest,
    ) -> Result<PollResponse, CallError> {
        let wait_secs = wait.as_secs().min(MAX_POLL_WAIT_SECS);
        let mut url = self.url(&poll_path(agent_id))?;
        url.query_pairs_mut()
            .append_pair("wait", &wait_secs.to_string());
        let response = self
            .http
            .post(url.clone())
            .timeout(Duration::from_secs(wait_secs + 15))
            .json(request)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(format!("POST {url}: {e}")))?;
        read(url, response, true).await
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    url: Url,
    response: reqwest::Response,
    poll: bool,
) -> Result<T, CallError> {
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|e| CallError::Unavailable(format!("POST {url}: unreadable answer: {e}")));
    }
    let body = response.text().await.unwrap_or_default();
    let message = error_message(&body);
    if poll && (status == StatusCode::NOT_FOUND || status == StatusCode::GONE) {
        return Err(CallError::UnknownAgent);
    }
    let text = format!("POST {url}: {status}: {message}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(CallError::Unavailable(text))
    } else {
        Err(CallError::Refused(text))
    }
}

/// The `message` of an ECS-style error body (`{"__type", "message"}`), else the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let message = v.get("message").and_then(|m| m.as_str())?.to_owned();
            Some(match v.get("__type").and_then(|t| t.as_str()) {
                Some(kind) => format!("{kind}: {message}"),
                None => message,
            })
        })
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

/// Exponential backoff between attempts: 0.5 s, 1 s, 2 s, 4 s, then 5 s, so that an agent is
/// back within a few seconds of the control plane, inside its three-heartbeat grace.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..6).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }

    #[test]
    fn ecs_error_bodies_are_read() {
        assert_eq!(
            error_message(
                r#"{"__type": "ClusterNotFoundException", "message": "Cluster not found."}"#
            ),
            "ClusterNotFoundException: Cluster not found."
        );
        assert_eq!(error_message("plain failure\n"), "plain failure");
    }
}
