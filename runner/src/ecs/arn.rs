//! The ARNs berth gives its ECS resources.
//!
//! They follow ECS's formats (the "new" long ARN format for tasks, container instances and
//! services, which include the cluster name), in region [`REGION`] and account [`ACCOUNT_ID`]:
//!
//! | resource | ARN |
//! |---|---|
//! | cluster | `arn:aws:ecs:local:000000000000:cluster/<name>` |
//! | task definition | `arn:aws:ecs:local:000000000000:task-definition/<family>:<revision>` |
//! | task | `arn:aws:ecs:local:000000000000:task/<cluster>/<id>` |
//! | container instance | `arn:aws:ecs:local:000000000000:container-instance/<cluster>/<id>` |
//! | service | `arn:aws:ecs:local:000000000000:service/<cluster>/<name>` |
//! | container | `arn:aws:ecs:local:000000000000:container/<cluster>/<task id>/<id>` |

use std::fmt;
use std::str::FromStr;

/// The region in every ARN berth makes.
pub const REGION: &str = "local";
/// The account in every ARN berth makes.
pub const ACCOUNT_ID: &str = "000000000000";

fn make(resource: fmt::Arguments<'_>) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT_ID}:{resource}")
}

/// `arn:aws:ecs:local:000000000000:cluster/<name>`.
pub fn cluster(name: &str) -> String {
    make(format_args!("cluster/{name}"))
}

/// `arn:aws:ecs:local:000000000000:task-definition/<family>:<revision>`.
pub fn task_definition(family: &str, revision: u32) -> String {
    make(format_args!("task-definition/{family}:{revision}"))
}

/// `arn:aws:ecs:local:000000000000:task/<cluster>/<id>`.
pub fn task(cluster: &str, id: &str) -> String {
    make(format_args!("task/{cluster}/{id}"))
}

/// `arn:aws:ecs:local:000000000000:container-instance/<cluster>/<id>`.
pub fn container_instance(cluster: &str, id: &str) -> String {
    make(format_args!("container-instance/{cluster}/{id}"))
}

/// `arn:aws:ecs:local:000000000000:service/<cluster>/<name>`.
pub fn service(cluster: &str, name: &str) -> String {
    make(format_args!("service/{cluster}/{name}"))
}

/// `arn:aws:ecs:local:000000000000:container/<cluster>/<task id>/<id>`.
pub fn container(cluster: &str, task_id: &str, id: &str) -> String {
    make(format_args!("container/{cluster}/{task_id}/{id}"))
}

/// An ECS ARN taken apart: `arn:<partition>:ecs:<region>:<account>:<type>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    /// `aws`, or another partition.
    pub partition: String,
    /// The region (`local` for berth's own).
    pub region: String,
    /// The account.
    pub account: String,
    /// `cluster`, `task`, `task-definition`, `container-instance`, `service`, ...
    pub resource_type: String,
    /// Everything after `<type>/`: `my-cluster/0123abcd` for a task.
    pub resource: String,
}

impl Arn {
    /// The last `/`-separated part of the resource: the task id of a task ARN, the service name
    /// of a service ARN, `family:revision` of a task definition ARN.
    pub fn id(&self) -> &str {
        self.resource.rsplit('/').next().unwrap_or(&self.resource)
    }

    /// For resources scoped to a cluster (tasks, container instances, services, containers), the
    /// cluster's name: the first part of the resource path, when the path has several.
    pub fn cluster_name(&self) -> Option<&str> {
        match self.resource_type.as_str() {
            "task" | "container-instance" | "service" | "container" => {
                self.resource.split_once('/').map(|(cluster, _)| cluster)
            }
            "cluster" => Some(&self.resource),
            _ => None,
        }
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:ecs:{}:{}:{}/{}",
            self.partition, self.region, self.account, self.resource_type, self.resource
        )
    }
}

/// A string that is not an ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ECS ARN '{arn}': {problem}")]
pub struct ArnError {
    /// The text as given.
    pub arn: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for Arn {
    type Err = ArnError;

    fn from_str(text: &str) -> Result<Arn, ArnError> {
        let fail = |problem| ArnError {
            arn: text.to_owned(),
            problem,
        };
        let mut parts = text.splitn(6, ':');
        if parts.next() != Some("arn") {
            return Err(fail("it does not start with 'arn:'"));
        }
        let partition = parts.next().ok_or_else(|| fail("it has no partition"))?;
        if parts.next() != Some("ecs") {
            return Err(fail("its service is not 'ecs'"));
        }
        let region = parts.next().ok_or_else(|| fail("it has no region"))?;
        let account = parts.next().ok_or_else(|| fail("it has no account"))?;
        let rest = parts.next().ok_or_else(|| fail("it names no resource"))?;
        let (resource_type, resource) = rest
            .split_once('/')
            .ok_or_else(|| fail("its resource is not '<type>/<id>'"))?;
        if resource_type.is_empty() || resource.is_empty() {
            return Err(fail("its resource is not '<type>/<id>'"));
        }
        Ok(Arn {
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource_type: resource_type.to_owned(),
            resource: resource.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_use_ecs_formats_in_the_local_region() {
        assert_eq!(
            task_definition("web", 3),
            "arn:aws:ecs:local:000000000000:task-definition/web:3"
        );
        assert_eq!(
            cluster("default"),
            "arn:aws:ecs:local:000000000000:cluster/default"
        );
        assert_eq!(
            task("default", "abc"),
            "arn:aws:ecs:local:000000000000:task/default/abc"
        );
        assert_eq!(
            container_instance("default", "i1"),
            "arn:aws:ecs:local:000000000000:container-instance/default/i1"
        );
        assert_eq!(
            service("default", "api"),
            "arn:aws:ecs:local:000000000000:service/default/api"
        );
    }

    #[test]
    fn parse_takes_arns_apart() {
        let arn: Arn = task("prod", "0f1e2d").parse().unwrap();
        assert_eq!(arn.resource_type, "task");
        assert_eq!(arn.id(), "0f1e2d");
        assert_eq!(arn.cluster_name(), Some("prod"));
        assert_eq!(arn.to_string(), task("prod", "0f1e2d"));

        let td: Arn = task_definition("web", 12).parse().unwrap();
        assert_eq!(td.id(), "web:12");
        assert_eq!(td.cluster_name(), None);

        let real: Arn = "arn:aws:ecs:us-east-1:123456789012:service/c/s"
            .parse()
            .unwrap();
        assert_eq!((real.region.as_str(), real.id()), ("us-east-1", "s"));
    }

    #[test]
    fn parse_names_what_is_wrong() {
        let err = "arn:aws:s3:::bucket/key".parse::<Arn>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ECS ARN 'arn:aws:s3:::bucket/key': its service is not 'ecs'"
        );
        let err = "arn:aws:ecs:local:0:cluster".parse::<Arn>().unwrap_err();
        assert_eq!(err.problem, "its resource is not '<type>/<id>'");
        assert!("web:3".parse::<Arn>().is_err());
    }
}
