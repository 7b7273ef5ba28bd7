//! Resource limits of a container: the cgroup limits of [`Resources`] and the rlimits of
//! [`Rlimit`], in the units of ECS task definitions.
//!
//! ECS's container `cpu` is a relative weight (cgroup `cpu.shares`); a task size, as Fargate
//! has, is a hard cap (CFS quota over a period), 1024 units being one vCPU; `memory` is a hard
//! limit and `memoryReservation` a soft one, both in MiB; `ulimits` name rlimits by their short
//! names (`nofile`, `nproc`, ...). The conversions here are the ones the ECS agent makes when it
//! hands a container to Docker.

use oci_spec::runtime::PosixRlimitType;

/// The smallest `cpu.shares` the kernel takes. ECS gives it to a container whose `cpu` is
/// missing, 0 or 1.
pub const MIN_CPU_SHARES: u64 = 2;
/// The largest `cpu.shares` the kernel takes: 256 vCPUs.
pub const MAX_CPU_SHARES: u64 = 262_144;
/// ECS cpu units per vCPU.
pub const CPU_UNITS_PER_VCPU: u64 = 1024;
/// The CFS period a cpu quota is measured against, in microseconds: the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota and period the kernel takes, in microseconds (1 ms).
const MIN_CFS_US: u64 = 1_000;
/// The largest CFS period the kernel takes, in microseconds (1 s).
const MAX_CFS_PERIOD_US: u64 = 1_000_000;
/// The smallest memory limit, in bytes: Docker's (and so ECS's) 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * MIB;
/// Bytes in a MiB, the unit of ECS's `memory` and `memoryReservation`.
pub const MIB: u64 = 1024 * 1024;
/// An rlimit value meaning "unlimited" (`RLIM_INFINITY`); ECS and Docker write it `-1`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// The cgroup limits of a container, or of a task's parent cgroup
/// ([`super::Sandbox::create_cgroup`]). Every field is optional; `None` leaves the kernel's
/// default (no limit, or the parent's).
///
/// In `config.json` they are `linux.resources`; on cgroup v1 hierarchies the runtime writes
/// `cpu.shares`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `memory.limit_in_bytes`,
/// `memory.soft_limit_in_bytes` and `pids.max`; on cgroup v2, `cpu.weight`, `cpu.max`,
/// `memory.max`, `memory.low` and `pids.max`. Swap is not limited beyond what the host
/// allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// The relative cpu weight, [`MIN_CPU_SHARES`] to [`MAX_CPU_SHARES`]; 1024 is the default
    /// weight. ECS's container `cpu`, through [`Resources::cpu_shares_for_units`].
    pub cpu_shares: Option<u64>,
    /// The hard cpu cap: microseconds of cpu time per [`Resources::cpu_period`], at least
    /// 1000. Twice the period is two whole cpus. A task size, through
    /// [`Resources::cpu_quota_for_units`].
    pub cpu_quota: Option<u64>,
    /// The period of the quota, 1000 to 1000000 microseconds; default [`CPU_PERIOD_US`] when a
    /// quota is given.
    pub cpu_period: Option<u64>,
    /// The hard memory limit in bytes, at least [`MIN_MEMORY_BYTES`]: the container is
    /// OOM-killed above it. ECS's `memory`.
    pub memory_limit: Option<u64>,
    /// The soft memory limit in bytes: the kernel reclaims the container's memory down to it
    /// first under pressure. At most [`Resources::memory_limit`]. ECS's `memoryReservation`.
    pub memory_reservation: Option<u64>,
    /// The most processes and threads the container may have at once.
    pub pids_limit: Option<u64>,
}

impl Resources {
    /// The `cpu.shares` for an ECS container's `cpu` units, as the ECS agent (1.84 and later)
    /// gives them: none, 0 and 1 become [`MIN_CPU_SHARES`], more than 256 vCPUs become
    /// [`MAX_CPU_SHARES`], anything else is taken as it is.
    pub fn cpu_shares_for_units(units: Option<u64>) -> u64 {
        units.unwrap_or(0).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
    }

    /// The CFS quota and period that cap a container or task at `units` cpu units:
    /// `units / 1024` cpus over a [`CPU_PERIOD_US`] period, so 1024 units (one vCPU) is
    /// 100000/100000 and 256 is 25000/100000. `None` for fewer than 11 units, whose quota would
    /// be under the kernel's 1 ms minimum.
    pub fn cpu_quota_for_units(units: u64) -> Option<(u64, u64)> {
        let quota = units.checked_mul(CPU_PERIOD_US)? / CPU_UNITS_PER_VCPU;
        (quota >= MIN_CFS_US).then_some((quota, CPU_PERIOD_US))
    }

    /// The limits ECS gives one container: `cpu` units as shares, `memory` and
    /// `memoryReservation` (MiB) as the hard and soft memory limits.
    pub fn ecs_container(
        cpu: Option<u64>,
        memory_mib: Option<u64>,
        memory_reservation_mib: Option<u64>,
    ) -> Resources {
        Resources {
            cpu_shares: Some(Resources::cpu_shares_for_units(cpu)),
            memory_limit: memory_mib.map(|m| m.saturating_mul(MIB)),
            memory_reservation: memory_reservation_mib.map(|m| m.saturating_mul(MIB)),
            ..Resources::default()
        }
    }

    /// The limits of a task size (Fargate's, or a task-level `cpu` and `memory` on EC2): a
    /// hard cpu cap of `cpu_units` and a hard memory limit of `memory_mib`. Meant for the
    /// task's parent cgroup, so that its containers share them. `None` when the cpu is too
    /// small to cap (see [`Resources::cpu_quota_for_units`]).
    pub fn task_size(cpu_units: u64, memory_mib: u64) -> Option<Resources> {
        let (quota, period) = Resources::cpu_quota_for_units(cpu_units)?;
        Some(Resources {
            cpu_quota: Some(quota),
            cpu_period: Some(period),
            memory_limit: Some(memory_mib.saturating_mul(MIB)),
            ..Resources::default()
        })
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// The period that goes with the quota: the given one, or [`CPU_PERIOD_US`] when only a
    /// quota is given.
    pub(crate) fn effective_cpu_period(&self) -> Option<u64> {
        match (self.cpu_quota, self.cpu_period) {
            (_, Some(period)) => Some(period),
            (Some(_), None) => Some(CPU_PERIOD_US),
            (None, None) => None,
        }
    }

    /// Checks every value against what the kernel (and Docker) accept; the message names the
    /// field and the value.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(shares) = self.cpu_shares {
            if !(MIN_CPU_SHARES..=MAX_CPU_SHARES).contains(&shares) {
                return Err(format!(
                    "cpu shares {shares} are outside {MIN_CPU_SHARES}..={MAX_CPU_SHARES}"
                ));
            }
        }
        if let Some(quota) = self.cpu_quota {
            if quota < MIN_CFS_US {
                return Err(format!(
                    "cpu quota {quota}us is under the kernel's minimum of {MIN_CFS_US}us"
                ));
            }
            if quota > i64::MAX as u64 {
                return Err(format!("cpu quota {quota}us is too large"));
            }
        }
        if let Some(period) = self.cpu_period {
            if !(MIN_CFS_US..=MAX_CFS_PERIOD_US).contains(&period) {
                return Err(format!(
                    "cpu period {period}us is outside {MIN_CFS_US}..={MAX_CFS_PERIOD_US}us"
                ));
            }
        }
        if let Some(limit) = self.memory_limit {
            if limit < MIN_MEMORY_BYTES {
                return Err(format!(
                    "memory limit {limit} bytes is under the minimum of {MIN_MEMORY_BYTES} bytes (6 MiB)"
                ));
            }
            if limit > i64::MAX as u64 {
                return Err(format!("memory limit {limit} bytes is too large"));
            }
        }
        if let Some(reservation) = self.memory_reservation {
            if reservation == 0 || reservation > i64::MAX as u64 {
                return Err(format!(
                    "memory reservation {reservation} bytes is not a usable size"
                ));
            }
            if let Some(limit) = self.memory_limit {
                if reservation > limit {
                    return Err(format!(
                        "memory reservation {reservation} bytes is above the memory limit of {limit} bytes"
                    ));
                }
            }
        }
        if let Some(pids) = self.pids_limit {
            if pids == 0 || pids > i64::MAX as u64 {
                return Err(format!("pids limit {pids} is not a usable count"));
            }
        }
        Ok(())
    }
}

/// `cpu.weight` (cgroup v2, 1 to 10000) for `cpu.shares` (v1, 2 to 262144): the mapping runc
/// and crun use, so that the default 1024 shares is weight 39 and the ends map to the ends.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES) - MIN_CPU_SHARES) * 9999 / 262_142
}

/// The rlimit names ECS's `ulimits` take, which are the `RLIMIT_*` names in lower case without
/// the prefix.
pub const RLIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One rlimit of a container's process, as ECS's `ulimits` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// The short name: one of [`RLIMIT_NAMES`] (`nofile` is `RLIMIT_NOFILE`).
    pub name: String,
    /// The soft limit, at most the hard one; [`RLIM_INFINITY`] for none.
    pub soft: u64,
    /// The hard limit; [`RLIM_INFINITY`] for none.
    pub hard: u64,
}

impl Rlimit {
    /// The limit `name` at `soft` and `hard`.
    pub fn new(name: impl Into<String>, soft: u64, hard: u64) -> Self {
        Rlimit {
            name: name.into(),
            soft,
            hard,
        }
    }

    /// The runtime's type for this limit; an error naming the valid names for an unknown one.
    pub(crate) fn kind(&self) -> Result<PosixRlimitType, String> {
        rlimit_type(&self.name).ok_or_else(|| {
            format!(
                "unknown ulimit {:?}: expected one of {}",
                self.name,
                RLIMIT_NAMES.join(", ")
            )
        })
    }
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    Some(match name {
        "core" => PosixRlimitType::RlimitCore,
        "cpu" => PosixRlimitType::RlimitCpu,
        "data" => PosixRlimitType::RlimitData,
        "fsize" => PosixRlimitType::RlimitFsize,
        "locks" => PosixRlimitType::RlimitLocks,
        "memlock" => PosixRlimitType::RlimitMemlock,
        "msgqueue" => PosixRlimitType::RlimitMsgqueue,
        "nice" => PosixRlimitType::RlimitNice,
        "nofile" => PosixRlimitType::RlimitNofile,
        "nproc" => PosixRlimitType::RlimitNproc,
        "rss" => PosixRlimitType::RlimitRss,
        "rtprio" => PosixRlimitType::RlimitRtprio,
        "rttime" => PosixRlimitType::RlimitRttime,
        "sigpending" => PosixRlimitType::RlimitSigpending,
        "stack" => PosixRlimitType::RlimitStack,
        _ => return None,
    })
}

/// Checks a list of rlimits: known names, each once, soft at most hard.
pub(crate) fn validate_rlimits(rlimits: &[Rlimit]) -> Result<(), String> {
    for (i, limit) in rlimits.iter().enumerate() {
        limit.kind()?;
        if limit.soft > limit.hard {
            return Err(format!(
                "ulimit {}: the soft limit {} is above the hard limit {}",
                limit.name, limit.soft, limit.hard
            ));
        }
        if rlimits[..i].iter().any(|l| l.name == limit.name) {
            return Err(format!("ulimit {} is given more than once", limit.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_cpu_units_become_shares_as_the_agent_passes_them() {
        assert_eq!(Resources::cpu_shares_for_units(None), 2);
        assert_eq!(Resources::cpu_shares_for_units(Some(0)), 2);
        assert_eq!(Resources::cpu_shares_for_units(Some(1)), 2);
        assert_eq!(Resources::cpu_shares_for_units(Some(2)), 2);
        assert_eq!(Resources::cpu_shares_for_units(Some(512)), 512);
        assert_eq!(Resources::cpu_shares_for_units(Some(10 * 1024)), 10240);
        assert_eq!(Resources::cpu_shares_for_units(Some(300 * 1024)), 262_144);
    }

    #[test]
    fn task_sizes_become_cfs_quotas() {
        assert_eq!(
            Resources::cpu_quota_for_units(1024),
            Some((100_000, 100_000))
        );
        assert_eq!(Resources::cpu_quota_for_units(256), Some((25_000, 100_000)));
        assert_eq!(Resources::cpu_quota_for_units(512), Some((50_000, 100_000)));
        assert_eq!(
            Resources::cpu_quota_for_units(16384),
            Some((1_600_000, 100_000))
        );
        assert_eq!(Resources::cpu_quota_for_units(11), Some((1074, 100_000)));
        assert_eq!(Resources::cpu_quota_for_units(10), None);
        assert_eq!(Resources::cpu_quota_for_units(0), None);

        let fargate = Resources::task_size(256, 512).unwrap();
        assert_eq!(fargate.cpu_quota, Some(25_000));
        assert_eq!(fargate.cpu_period, Some(100_000));
        assert_eq!(fargate.memory_limit, Some(512 * MIB));
        assert_eq!(fargate.cpu_shares, None);
        assert!(fargate.validate().is_ok());
    }

    #[test]
    fn ecs_container_limits() {
        let r = Resources::ecs_container(Some(128), Some(256), Some(128));
        assert_eq!(
            r,
            Resources {
                cpu_shares: Some(128),
                memory_limit: Some(256 * MIB),
                memory_reservation: Some(128 * MIB),
                ..Resources::default()
            }
        );
        assert!(r.validate().is_ok());
        assert!(!r.is_empty());
        assert!(Resources::default().is_empty());
        assert_eq!(Resources::default().effective_cpu_period(), None);
        let quota_only = Resources {
            cpu_quota: Some(50_000),
            ..Resources::default()
        };
        assert_eq!(quota_only.effective_cpu_period(), Some(CPU_PERIOD_US));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let check = |r: Resources, want: &str| {
            let err = r.validate().unwrap_err();
            assert!(err.contains(want), "{err}");
        };
        check(
            Resources {
                cpu_shares: Some(1),
                ..Resources::default()
            },
            "cpu shares 1",
        );
        check(
            Resources {
                cpu_quota: Some(999),
                ..Resources::default()
            },
            "cpu quota 999us",
        );
        check(
            Resources {
                cpu_period: Some(2_000_000),
                ..Resources::default()
            },
            "cpu period 2000000us",
        );
        check(
            Resources {
                memory_limit: Some(4 * MIB),
                ..Resources::default()
            },
            "under the minimum",
        );
        check(
            Resources {
                memory_limit: Some(64 * MIB),
                memory_reservation: Some(128 * MIB),
                ..Resources::default()
            },
            "above the memory limit",
        );
        check(
            Resources {
                pids_limit: Some(0),
                ..Resources::default()
            },
            "pids limit 0",
        );
    }

    #[test]
    fn shares_map_to_weights_as_runc_maps_them() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn rlimit_names_and_checks() {
        for name in RLIMIT_NAMES {
            assert!(Rlimit::new(name, 1, 2).kind().is_ok(), "{name}");
        }
        assert_eq!(
            Rlimit::new("nofile", 1, 1).kind().unwrap(),
            PosixRlimitType::RlimitNofile
        );
        let err = Rlimit::new("NOFILE", 1, 1).kind().unwrap_err();
        assert!(err.contains("unknown ulimit \"NOFILE\""), "{err}");
        assert!(err.contains("nofile"), "{err}");

        assert!(validate_rlimits(&[Rlimit::new("nofile", 1024, 4096)]).is_ok());
        assert!(validate_rlimits(&[Rlimit::new("core", RLIM_INFINITY, RLIM_INFINITY)]).is_ok());
        let err = validate_rlimits(&[Rlimit::new("nofile", 4096, 1024)]).unwrap_err();
        assert!(
            err.contains("soft limit 4096 is above the hard limit 1024"),
            "{err}"
        );
        let err = validate_rlimits(&[Rlimit::new("nproc", 10, 10), Rlimit::new("nproc", 20, 20)])
            .unwrap_err();
        assert!(err.contains("more than once"), "{err}");
    }
}
