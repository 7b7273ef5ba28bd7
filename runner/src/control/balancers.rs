//! Services' load balancers: one [`crate::lb::LoadBalancer`] per `loadBalancers` entry of a
//! service, listening on the entry's `listenerPort`.
//!
//! ECS points a service at an ELB target group; berth runs the load balancer itself, so a
//! service names the port it listens on (`listenerPort`). It binds on the control plane's load
//! balancer address ([`super::Builder::load_balancer_address`]: `0.0.0.0` by default, like an
//! internet-facing ELB; `127.0.0.1` keeps services local). A task is a target once it is
//! RUNNING and healthy (RUNNING, for a task without container health checks), at:
//! - its ENI's address and the container port, in `awsvpc` mode;
//! - the host port bound to the container port, on its agent's host address, in `bridge` and
//!   `host` modes (the binding's own address when the agent bound a specific one).
//!
//! A task leaves the rotation, with connection draining, before its agent is told to stop it
//! (the task is DEACTIVATING meanwhile), and as soon as it is no longer healthy.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::ecs::task::Task;
use crate::ecs::taskdef::{NetworkMode, TaskDefinition, TransportProtocol};
use crate::lb::{HealthState, LoadBalancer, TargetState};

/// A service's load balancer, as `CreateService` takes it and `DescribeServices` gives it:
/// ECS's `loadBalancers` entry, with berth's `listenerPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLoadBalancer {
    /// ECS's target group; kept as given, berth routes by `listenerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// A classic load balancer's name; kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
    /// The container that receives the connections.
    pub container_name: String,
    /// Its port.
    pub container_port: u16,
    /// The port berth's load balancer listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_port: Option<u16>,
}

/// A service: its cluster's name and its own.
pub(crate) type ServiceKey = (String, String);

/// One running listener of a service.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// The `loadBalancers` entry it serves.
    pub spec: ServiceLoadBalancer,
    /// The load balancer.
    pub lb: Arc<LoadBalancer>,
}

impl Listener {
    /// How events name it: `(listener 0.0.0.0:8080)`.
    pub fn describe(&self) -> String {
        format!("(listener {})", self.lb.local_addr())
    }
}

/// The running listeners, by service.
#[derive(Debug, Default)]
pub(crate) struct Balancers {
    map: Mutex<HashMap<ServiceKey, Vec<Listener>>>,
}

impl Balancers {
    fn lock(&self) -> MutexGuard<'_, HashMap<ServiceKey, Vec<Listener>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listeners of a service (none when it has no load balancer or it is not bound).
    pub fn of(&self, key: &ServiceKey) -> Vec<Listener> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    /// Whether the service's listeners are bound.
    pub fn has(&self, key: &ServiceKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Records a service's listeners.
    pub fn insert(&self, key: ServiceKey, listeners: Vec<Listener>) {
        self.lock().insert(key, listeners);
    }

    /// Forgets a service's listeners, giving them back to be shut down.
    pub fn remove(&self, key: &ServiceKey) -> Vec<Listener> {
        self.lock().remove(key).unwrap_or_default()
    }

    /// Every listener.
    pub fn all(&self) -> Vec<Listener> {
        self.lock().values().flatten().cloned().collect()
    }

    /// Whether task `task_id` is in the rotation of one of the service's listeners (registered
    /// and not draining).
    pub fn in_rotation(&self, key: &ServiceKey, task_id: &str) -> bool {
        self.of(key).iter().any(|listener| {
            listener
                .lb
                .targets()
                .iter()
                .any(|t| t.id == task_id && !matches!(t.state, HealthState::Draining { .. }))
        })
    }
}

/// What a service's listener shows: where it listens and its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerState {
    /// The container and port it sends to.
    pub spec: ServiceLoadBalancer,
    /// Where it listens.
    pub listener: SocketAddr,
    /// Its targets, draining ones included.
    pub targets: Vec<TargetState>,
}

/// The host address of an agent's `http://HOST:PORT` address.
pub(crate) fn agent_host(address: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(address).ok()?;
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .next()
        .map(|addr| addr.ip())
}

/// Where a listener for `spec` sends connections for `task`, if the task has published the
/// port yet.
pub(crate) fn target_address(
    task: &Task,
    definition: &TaskDefinition,
    agent_host: Option<IpAddr>,
    spec: &ServiceLoadBalancer,
) -> Option<SocketAddr> {
    match definition.network_mode {
        NetworkMode::Awsvpc => {
            let ip = task.private_ipv4().or_else(|| {
                task.container(&spec.container_name)?
                    .network_interfaces
                    .iter()
                    .find_map(|i| i.private_ipv4_address.as_deref())
            })?;
            Some(SocketAddr::new(ip.parse().ok()?, spec.container_port))
        }
        NetworkMode::Bridge | NetworkMode::Host => {
            let container = task.container(&spec.container_name)?;
            let binding = container.network_bindings.iter().find(|b| {
                b.container_port == spec.container_port && b.protocol == TransportProtocol::Tcp
            });
            let port = match binding {
                Some(binding) => binding.host_port,
                // Host mode publishes the container's own port.
                None if definition.network_mode == NetworkMode::Host => spec.container_port,
                None => return None,
            };
            let bound = binding.and_then(|b| b.bind_ip.parse::<IpAddr>().ok());
            let ip = match bound {
                Some(ip) if !ip.is_unspecified() => ip,
                _ => agent_host?,
            };
            Some(SocketAddr::new(ip, port))
        }
        NetworkMode::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::Timestamp;
    use crate::ecs::arn;
    use crate::ecs::status::LaunchType;
    use crate::ecs::task::NetworkBinding;
    use crate::ecs::taskdef::RegisterTaskDefinition;

    fn spec() -> ServiceLoadBalancer {
        ServiceLoadBalancer {
            target_group_arn: None,
            load_balancer_name: None,
            container_name: "app".into(),
            container_port: 80,
            listener_port: Some(8080),
        }
    }

    #[test]
    fn bridge_targets_use_the_host_port_on_the_agent() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "containerDefinitions": [{"name": "app", "image": "nginx",
                "memory": 64, "portMappings": [{"containerPort": 80}]}]}"#,
        )
        .unwrap();
        let definition = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        let mut task = Task::new(
            arn::task("default", "t"),
            arn::cluster("default"),
            &definition,
            LaunchType::Ec2,
            None,
            Timestamp::EPOCH,
        );
        let host = agent_host("http://10.0.0.7:5401");
        assert_eq!(target_address(&task, &definition, host, &spec()), None);
        task.containers[0].network_bindings.push(NetworkBinding {
            bind_ip: "0.0.0.0".into(),
            container_port: 80,
            host_port: 32768,
            protocol: TransportProtocol::Tcp,
        });
        assert_eq!(
            target_address(&task, &definition, host, &spec()),
            Some("10.0.0.7:32768".parse().unwrap())
        );
        task.containers[0].network_bindings[0].bind_ip = "127.0.0.1".into();
        assert_eq!(
            target_address(&task, &definition, host, &spec()),
            Some("127.0.0.1:32768".parse().unwrap())
        );
        assert_eq!(
            agent_host("http://localhost:1"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }
}
