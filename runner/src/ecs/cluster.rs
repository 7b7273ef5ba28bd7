//! Clusters as `DescribeClusters` returns them.
//!
//! A berth cluster always has two capacity pools: its registered EC2 container instances and
//! FARGATE, which needs no instances. The counts are the control plane's to keep up to date.

use serde::{Deserialize, Serialize};

use super::arn;

/// ACTIVE or INACTIVE (deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterStatus {
    /// In use.
    #[default]
    Active,
    /// Deleted.
    Inactive,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `arn:aws:ecs:local:000000000000:cluster/<name>`.
    pub cluster_arn: String,
    /// The name: up to 255 letters, numbers, hyphens and underscores.
    pub cluster_name: String,
    /// ACTIVE or INACTIVE.
    pub status: ClusterStatus,
    /// ACTIVE and DRAINING container instances.
    #[serde(default)]
    pub registered_container_instances_count: u32,
    /// RUNNING tasks.
    #[serde(default)]
    pub running_tasks_count: u32,
    /// Tasks not yet RUNNING.
    #[serde(default)]
    pub pending_tasks_count: u32,
    /// ACTIVE services.
    #[serde(default)]
    pub active_services_count: u32,
    /// The capacity providers: always `FARGATE`, and the EC2 pool.
    #[serde(default)]
    pub capacity_providers: Vec<String>,
}

impl Cluster {
    /// The name of the EC2 pool's capacity provider.
    pub const EC2_CAPACITY_PROVIDER: &'static str = "EC2";
    /// The name of the Fargate pool's capacity provider.
    pub const FARGATE_CAPACITY_PROVIDER: &'static str = "FARGATE";

    /// A new, empty, ACTIVE cluster with both pools.
    pub fn new(name: &str) -> Cluster {
        Cluster {
            cluster_arn: arn::cluster(name),
            cluster_name: name.to_owned(),
            status: ClusterStatus::Active,
            registered_container_instances_count: 0,
            running_tasks_count: 0,
            pending_tasks_count: 0,
            active_services_count: 0,
            capacity_providers: vec![
                Self::EC2_CAPACITY_PROVIDER.to_owned(),
                Self::FARGATE_CAPACITY_PROVIDER.to_owned(),
            ],
        }
    }
}

/// A cluster name ECS would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid cluster name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, \
     underscores, and hyphens are allowed."
)]
pub struct InvalidClusterName {
    /// The name as given.
    pub name: String,
}

/// Checks a cluster name: 1 to 255 letters, numbers, hyphens and underscores.
pub fn check_name(name: &str) -> Result<(), InvalidClusterName> {
    if super::validate::is_valid_family(name) {
        Ok(())
    } else {
        Err(InvalidClusterName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_cluster_has_both_pools_and_ecs_json() {
        let cluster = Cluster::new("default");
        let json = serde_json::to_value(&cluster).unwrap();
        assert_eq!(
            json["clusterArn"],
            "arn:aws:ecs:local:000000000000:cluster/default"
        );
        assert_eq!(json["clusterName"], "default");
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["registeredContainerInstancesCount"], 0);
        assert_eq!(
            json["capacityProviders"],
            serde_json::json!(["EC2", "FARGATE"])
        );
        assert_eq!(serde_json::from_value::<Cluster>(json).unwrap(), cluster);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("prod_eu-1").is_ok());
        assert_eq!(
            check_name("my cluster").unwrap_err().to_string(),
            "Invalid cluster name 'my cluster'. Up to 255 letters (uppercase and lowercase), \
             numbers, underscores, and hyphens are allowed."
        );
        assert!(check_name("").is_err());
    }
}
