//! A task's network, per its network mode: what PROVISIONING makes and DEPROVISIONING removes.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::ecs::arn;
use crate::ecs::task::{Attachment, AttachmentStatus, Eni, NetworkBinding};
use crate::ecs::taskdef::{NetworkMode, TaskDefinition, TransportProtocol};
use crate::net::{self, Network, PortMapping, Protocol, Published, Publisher};

/// A task's network as containers and the metadata endpoint see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    /// The mode the task runs with (awsvpc for every FARGATE task).
    pub mode: NetworkMode,
    /// The task's address, on the bridge (awsvpc and bridge modes).
    pub ipv4: Option<Ipv4Addr>,
    /// Its interface's MAC address.
    pub mac: Option<String>,
    /// The subnet, `10.89.0.0/16`.
    pub subnet: Option<String>,
    /// The subnet's gateway: the bridge's address.
    pub gateway: Option<Ipv4Addr>,
    /// The private DNS name of the address (`ip-10-89-0-2.local.compute.internal`), the
    /// hostname of an awsvpc task's containers.
    pub private_dns_name: Option<String>,
}

/// What a task's network is made of, to release at the end.
#[derive(Debug)]
pub(crate) enum TaskNetwork {
    /// The host's namespace: nothing made.
    Host,
    /// A namespace on the bridge, and each container's published ports (bridge mode).
    Attached {
        attachment: net::Attachment,
        published: Vec<Published>,
    },
    /// A namespace with loopback only.
    Isolated(net::Isolated),
}

/// What provisioning gives the task: its network, the ECS view of it, and each container's
/// bindings.
pub(crate) struct Provisioned {
    pub(crate) network: TaskNetwork,
    pub(crate) info: NetworkInfo,
    /// The ENI attachment (awsvpc).
    pub(crate) eni: Option<Attachment>,
    /// Per container, its `networkBindings`.
    pub(crate) bindings: Vec<Vec<NetworkBinding>>,
}

impl TaskNetwork {
    /// The network the sandbox runs the task's containers in.
    pub(crate) fn sandbox_network(&self) -> crate::sandbox::Network {
        match self {
            TaskNetwork::Host => crate::sandbox::Network::Host,
            TaskNetwork::Attached { attachment, .. } => {
                crate::sandbox::Network::Join(attachment.netns_path.clone())
            }
            TaskNetwork::Isolated(isolated) => {
                crate::sandbox::Network::Join(isolated.netns_path.clone())
            }
        }
    }
}

/// Makes task `id`'s network for `mode`. The error is the reason, for
/// `ResourceInitializationError`.
pub(crate) fn provision(
    network: Option<&Network>,
    publisher: &Publisher,
    id: &str,
    mode: NetworkMode,
    definition: &TaskDefinition,
) -> Result<Provisioned, String> {
    let containers = definition.container_definitions.len();
    let need = || {
        network.ok_or_else(|| {
            format!("network mode {mode} needs the task network, and this agent has none")
        })
    };
    match mode {
        NetworkMode::Host => Ok(Provisioned {
            network: TaskNetwork::Host,
            info: NetworkInfo {
                mode,
                ipv4: None,
                mac: None,
                subnet: None,
                gateway: None,
                private_dns_name: None,
            },
            eni: None,
            bindings: definition
                .container_definitions
                .iter()
                .map(|c| {
                    c.port_mappings
                        .iter()
                        .filter_map(|m| {
                            let port = m.static_host_port(NetworkMode::Host)?;
                            Some(NetworkBinding {
                                bind_ip: Ipv4Addr::UNSPECIFIED.to_string(),
                                container_port: u16::try_from(m.container_port).ok()?,
                                host_port: port,
                                protocol: m.protocol(),
                            })
                        })
                        .collect()
                })
                .collect(),
        }),
        NetworkMode::None => {
            let isolated = need()?
                .isolate(id)
                .map_err(|e| format!("cannot make the task's network namespace: {e}"))?;
            Ok(Provisioned {
                network: TaskNetwork::Isolated(isolated),
                info: NetworkInfo {
                    mode,
                    ipv4: None,
                    mac: None,
                    subnet: None,
                    gateway: None,
                    private_dns_name: None,
                },
                eni: None,
                bindings: vec![Vec::new(); containers],
            })
        }
        NetworkMode::Awsvpc | NetworkMode::Bridge => {
            let network = need()?;
            let attachment = network
                .attach(id)
                .map_err(|e| format!("cannot attach the task's network interface: {e}"))?;
            let info = NetworkInfo {
                mode,
                ipv4: Some(attachment.ip),
                mac: Some(attachment.mac.to_string()),
                subnet: Some(attachment.subnet.to_string()),
                gateway: Some(attachment.gateway),
                private_dns_name: Some(private_dns_name(attachment.ip)),
            };
            let mut provisioned = Provisioned {
                eni: (mode == NetworkMode::Awsvpc).then(|| eni(network, &attachment)),
                network: TaskNetwork::Attached {
                    attachment,
                    published: Vec::new(),
                },
                info,
                bindings: vec![Vec::new(); containers],
            };
            if mode == NetworkMode::Bridge {
                if let Err(reason) = publish(publisher, definition, &mut provisioned) {
                    release(Some(network), id, provisioned.network);
                    return Err(reason);
                }
            }
            Ok(provisioned)
        }
    }
}

/// Publishes each container's port mappings on the host (bridge mode).
fn publish(
    publisher: &Publisher,
    definition: &TaskDefinition,
    provisioned: &mut Provisioned,
) -> Result<(), String> {
    let TaskNetwork::Attached {
        attachment,
        published,
    } = &mut provisioned.network
    else {
        return Ok(());
    };
    for (i, container) in definition.container_definitions.iter().enumerate() {
        let mut mappings = Vec::new();
        for mapping in &container.port_mappings {
            let container_port = u16::try_from(mapping.container_port).map_err(|_| {
                format!(
                    "container {}: containerPort {} is not a port",
                    container.name, mapping.container_port
                )
            })?;
            let host_port = match mapping.host_port {
                Some(port) => Some(u16::try_from(port).map_err(|_| {
                    format!(
                        "container {}: hostPort {port} is not a port",
                        container.name
                    )
                })?),
                None => None,
            };
            mappings.push(PortMapping {
                container_port,
                host_port,
                protocol: match mapping.protocol() {
                    TransportProtocol::Tcp => Protocol::Tcp,
                    TransportProtocol::Udp => Protocol::Udp,
                },
            });
        }
        if mappings.is_empty() {
            continue;
        }
        let ports = publisher
            .publish(IpAddr::V4(attachment.ip), &mappings)
            .map_err(|e| {
                format!(
                    "container {}: cannot publish its ports: {e}",
                    container.name
                )
            })?;
        provisioned.bindings[i] = ports
            .bindings()
            .iter()
            .map(|b| NetworkBinding {
                bind_ip: b.bind_ip.to_string(),
                container_port: b.container_port,
                host_port: b.host_port,
                protocol: match b.protocol {
                    Protocol::Tcp => TransportProtocol::Tcp,
                    Protocol::Udp => TransportProtocol::Udp,
                },
            })
            .collect();
        published.push(ports);
    }
    Ok(())
}

/// Removes what [`provision`] made; failures are logged.
pub(crate) fn release(network: Option<&Network>, id: &str, made: TaskNetwork) {
    match made {
        TaskNetwork::Host => {}
        TaskNetwork::Attached { published, .. } => {
            for ports in published {
                ports.close();
            }
            if let Some(network) = network {
                if let Err(err) = network.release(id) {
                    tracing::warn!(task = id, %err, "cannot release the task's network");
                }
            }
        }
        TaskNetwork::Isolated(_) => {
            if let Some(network) = network {
                if let Err(err) = network.release(id) {
                    tracing::warn!(task = id, %err, "cannot release the task's network");
                }
            }
        }
    }
}

/// ECS's private DNS name for an address: `ip-10-89-0-2.<region>.compute.internal`.
pub(crate) fn private_dns_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}.{}.compute.internal", arn::REGION)
}

/// The ENI attachment of an awsvpc task, with ECS's detail names.
fn eni(network: &Network, attachment: &net::Attachment) -> Attachment {
    let mac = attachment.mac.to_string();
    let id = crate::agent::credentials::random_hex(32);
    Attachment::eni(
        format!(
            "{}-{}-{}-{}-{}",
            &id[..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..]
        ),
        AttachmentStatus::Attached,
        Eni {
            subnet_id: format!("subnet-{}", network.bridge()),
            network_interface_id: format!("eni-{}", mac.replace(':', "")),
            mac_address: mac,
            private_ipv4_address: attachment.ip.to_string(),
            private_dns_name: Some(private_dns_name(attachment.ip)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_ecs() {
        assert_eq!(
            private_dns_name(Ipv4Addr::new(10, 89, 0, 2)),
            "ip-10-89-0-2.local.compute.internal"
        );
    }
}
