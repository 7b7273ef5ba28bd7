//! `GET /berth/v1/clusters/{cluster}/cost`: what a cluster has cost, from
//! [`crate::ecs::metering`].
//!
//! - One EC2 line per container instance the cluster ever had: instance-seconds from its
//!   registration to its deregistration (or now), however full it was, at its instance type's
//!   hourly rate.
//! - One FARGATE line per FARGATE task that started pulling its image: vCPU-seconds and
//!   GB-seconds of its size from `pullStartedAt` to `stoppedAt` (or now), with the one-minute
//!   minimum.
//!
//! ```json
//! {"cluster": "default", "at": 1718012345,
//!  "items": [{"pool": "EC2", "what": "arn:...:container-instance/default/...", "seconds": 3600,
//!             "usage": "m5.large", "usd": 0.096}, ...],
//!  "totalUsd": 0.0971, "ec2InstanceSeconds": 3600, "fargateVcpuSeconds": 15.0,
//!  "fargateGbSeconds": 30.0, "rates": {...}}
//! ```

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::ecs::metering::{CostReport, LineItem};
use crate::ecs::status::LaunchType;

use super::scheduler::fargate_size;
use super::store::TaskFilter;
use super::{ApiError, ControlState};

/// The route.
pub(crate) async fn route(
    State(state): State<ControlState>,
    Path(cluster): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(cost(&state, cluster).await?))
}

/// "0.25 vCPU, 0.5 GB".
fn usage(vcpu: f64, gb: f64) -> String {
    format!("{vcpu} vCPU, {gb} GB")
}

pub(crate) async fn cost(state: &ControlState, cluster: String) -> Result<Value, ApiError> {
    state
        .read(move |db, now, inner| {
            let found = db
                .cluster(&cluster)?
                .ok_or_else(ApiError::cluster_not_found)?;
            let rates = &inner.rates;
            let mut report = CostReport::default();
            for record in db.instances(&found.cluster_name)? {
                let instance = &record.instance;
                let kind = instance.instance_type().unwrap_or_default();
                let until = record.deregistered_at.unwrap_or(now);
                report.add_ec2(
                    instance.container_instance_arn.clone(),
                    rates.ec2_cost(kind, instance.registered_at, until),
                );
            }
            let tasks = db.tasks(&TaskFilter {
                cluster: Some(&found.cluster_name),
                launch_type: Some(LaunchType::Fargate),
                ..TaskFilter::default()
            })?;
            for record in tasks {
                let task = &record.task;
                let (Some(start), Some(size)) = (task.pull_started_at, fargate_size(task)) else {
                    continue;
                };
                let stop = task.stopped_at.unwrap_or(now);
                report.add_fargate(
                    task.task_arn.clone(),
                    rates.fargate_cost(size.cpu, size.memory, start, stop),
                );
            }
            let items: Vec<Value> = report
                .line_items
                .iter()
                .map(|item| match item {
                    LineItem::Ec2 {
                        container_instance_arn,
                        charge,
                    } => json!({
                        "pool": "EC2",
                        "what": container_instance_arn,
                        "seconds": charge.billed_seconds,
                        "usage": if charge.instance_type.is_empty() {
                            "unknown instance type".to_owned()
                        } else {
                            charge.instance_type.clone()
                        },
                        "usd": charge.dollars,
                    }),
                    LineItem::Fargate { task_arn, charge } => json!({
                        "pool": "FARGATE",
                        "what": task_arn,
                        "seconds": charge.billed_seconds,
                        "usage": usage(
                            f64::from(charge.cpu) / 1024.0,
                            f64::from(charge.memory) / 1024.0,
                        ),
                        "usd": charge.dollars,
                    }),
                })
                .collect();
            Ok(json!({
                "cluster": found.cluster_name,
                "at": now,
                "items": items,
                "totalUsd": report.total_dollars,
                "ec2InstanceSeconds": report.ec2_instance_seconds,
                "ec2Usd": report.ec2_dollars,
                "fargateVcpuSeconds": report.fargate_vcpu_seconds,
                "fargateGbSeconds": report.fargate_gb_seconds,
                "fargateUsd": report.fargate_dollars,
                "rates": rates,
            }))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_as_fargate_sizes() {
        assert_eq!(usage(0.25, 0.5), "0.25 vCPU, 0.5 GB");
        assert_eq!(usage(1.0, 2.0), "1 vCPU, 2 GB");
    }
}
