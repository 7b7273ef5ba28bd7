//! A container's health check, run inside it as Docker runs it for ECS.
//!
//! The first check runs `interval` after the container starts, the next `interval` after the
//! end of the previous. A check passes when its process exits 0; it fails when it exits
//! otherwise, cannot be started, or runs longer than `timeout` (it is then killed). The
//! container is HEALTHY after a pass and UNHEALTHY after `retries` failures in a row; failures
//! within `startPeriod` of the start do not count, until the first pass. The checks end when
//! the container does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Phase, TaskShared};
use crate::ecs::Timestamp;
use crate::ecs::status::HealthStatus;
use crate::ecs::taskdef::HealthCheck;
use crate::sandbox::{ContainerControl, Error as SandboxError};

/// The most output of a check that is kept, as Docker keeps it.
const MAX_OUTPUT: usize = 4096;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass(String),
    Fail(String),
}

/// Counts a container's check results into its health.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    failures: u32,
}

impl Counter {
    /// The container's health after `verdict`, given the health before it, whether the
    /// check ran within the start period and how many failures make it UNHEALTHY. `None`
    /// when it does not change.
    pub(crate) fn record(
        &mut self,
        verdict: &Verdict,
        before: HealthStatus,
        ever_healthy: bool,
        in_start_period: bool,
        retries: u32,
    ) -> Option<HealthStatus> {
        let after = match verdict {
            Verdict::Pass(_) => {
                self.failures = 0;
                HealthStatus::Healthy
            }
            Verdict::Fail(_) if in_start_period && !ever_healthy => return None,
            Verdict::Fail(_) => {
                self.failures += 1;
                if self.failures >= retries.max(1) {
                    HealthStatus::Unhealthy
                } else {
                    return None;
                }
            }
        };
        (after != before).then_some(after)
    }
}

/// Starts the checks of container `index` on a thread of their own.
pub(crate) fn spawn(
    shared: Arc<TaskShared>,
    index: usize,
    check: HealthCheck,
    control: ContainerControl,
    started: Instant,
) {
    let Some(argv) = check.argv() else {
        tracing::warn!(task = %shared.arn, container = index,
            command = ?check.command, "health check command is neither CMD nor CMD-SHELL; not checked");
        return;
    };
    let name = format!("health-{}", &shared.id[..shared.id.len().min(8)]);
    let result = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&shared, index, &check, &argv, &control, started));
    if let Err(err) = result {
        tracing::warn!(%err, "cannot start a health check thread");
    }
}

fn run(
    shared: &TaskShared,
    index: usize,
    check: &HealthCheck,
    argv: &[String],
    control: &ContainerControl,
    started: Instant,
) {
    let interval = Duration::from_secs(u64::from(check.interval().max(1)));
    let timeout = Duration::from_secs(u64::from(check.timeout().max(1)));
    let start_period = Duration::from_secs(u64::from(check.start_period()));
    let mut counter = Counter::default();
    loop {
        // Sleeps an interval, or until the container is no longer running.
        let deadline = Instant::now() + interval;
        let mut state = shared.lock();
        loop {
            if state.containers[index].phase != Phase::Running {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared.wait(state, left);
        }
        drop(state);

        let verdict = match control.exec(argv.iter().cloned(), &[], timeout) {
            Ok(output) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                truncate(&mut text);
                if output.status.success() {
                    Verdict::Pass(text)
                } else {
                    Verdict::Fail(text)
                }
            }
            Err(SandboxError::NotRunning { .. }) => return,
            Err(SandboxError::ExecTimeout { .. }) => Verdict::Fail(format!(
                "Health check exceeded timeout ({}s)",
                timeout.as_secs()
            )),
            Err(err) => Verdict::Fail(err.to_string()),
        };

        let mut state = shared.lock();
        if state.containers[index].phase != Phase::Running {
            return;
        }
        let runtime = &mut state.containers[index];
        let in_start_period = started.elapsed() < start_period;
        let changed = counter.record(
            &verdict,
            runtime.health.status,
            runtime.health.ever_healthy,
            in_start_period,
            check.retries(),
        );
        runtime.health.output = match &verdict {
            Verdict::Pass(text) | Verdict::Fail(text) => text.clone(),
        };
        if matches!(verdict, Verdict::Pass(_)) {
            runtime.health.ever_healthy = true;
        }
        if let Some(status) = changed {
            runtime.health.status = status;
            runtime.health.since = Some(Timestamp::now());
            state.task.containers[index].health_status = status;
            super::supervisor::update_task_health(&mut state, &shared.assignment);
            tracing::info!(task = %shared.arn, container = %state.task.containers[index].name,
                health = %status, "health changed");
            state.task.version += 1;
            drop(state);
            shared.notify();
        }
    }
}

fn truncate(text: &mut String) {
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_failures_in_a_row_make_a_container_unhealthy() {
        let mut c = Counter::default();
        let fail = Verdict::Fail("exit 1".into());
        let pass = Verdict::Pass(String::new());
        assert_eq!(
            c.record(&fail, HealthStatus::Unknown, false, false, 3),
            None
        );
        assert_eq!(
            c.record(&fail, HealthStatus::Unknown, false, false, 3),
            None
        );
        assert_eq!(
            c.record(&fail, HealthStatus::Unknown, false, false, 3),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(
            c.record(&pass, HealthStatus::Unhealthy, false, false, 3),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(c.record(&pass, HealthStatus::Healthy, true, false, 3), None);
        assert_eq!(c.record(&fail, HealthStatus::Healthy, true, false, 3), None);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_pass() {
        let mut c = Counter::default();
        let fail = Verdict::Fail(String::new());
        for _ in 0..5 {
            assert_eq!(c.record(&fail, HealthStatus::Unknown, false, true, 1), None);
        }
        assert_eq!(
            c.record(
                &Verdict::Pass(String::new()),
                HealthStatus::Unknown,
                false,
                true,
                1
            ),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(
            c.record(&fail, HealthStatus::Healthy, true, true, 1),
            Some(HealthStatus::Unhealthy),
            "after the first pass, failures count even in the start period"
        );
    }

    #[test]
    fn output_is_cut_on_a_character_boundary() {
        let mut text = "é".repeat(MAX_OUTPUT);
        truncate(&mut text);
        assert!(text.len() <= MAX_OUTPUT);
        assert!(text.chars().all(|c| c == 'é'));
    }
}
