//! Fargate task sizes: the published cpu/memory combinations, the nearest valid size for a
//! request, and the cgroup limits a size gives a task's sandbox.
//!
//! CPU is in CPU units (1024 = one vCPU) and memory in MiB. The combinations are ECS's table for
//! Linux tasks:
//!
//! | cpu | memory |
//! |---|---|
//! | 256 (.25 vCPU) | 512 MiB, 1 GB, 2 GB |
//! | 512 (.5 vCPU) | 1 GB to 4 GB, in 1 GB steps |
//! | 1024 (1 vCPU) | 2 GB to 8 GB, in 1 GB steps |
//! | 2048 (2 vCPU) | 4 GB to 16 GB, in 1 GB steps |
//! | 4096 (4 vCPU) | 8 GB to 30 GB, in 1 GB steps |
//! | 8192 (8 vCPU) | 16 GB to 60 GB, in 4 GB steps |
//! | 16384 (16 vCPU) | 32 GB to 120 GB, in 8 GB steps |

use serde::{Deserialize, Serialize};

use super::metering::Rates;

/// CPU units in one vCPU.
pub const UNITS_PER_VCPU: u32 = 1024;
/// The CFS period berth gives sandboxes, in microseconds (the kernel's and Docker's default).
pub const CPU_PERIOD_MICROS: u64 = 100_000;

/// One row of the table: a CPU size and the memory sizes that go with it.
struct Row {
    cpu: u32,
    /// The smallest and largest memory, MiB, and the step between sizes.
    first: u32,
    last: u32,
    step: u32,
}

const GB: u32 = 1024;

const TABLE: [Row; 7] = [
    // 256 is the one irregular row: 512 MiB, then 1 GB and 2 GB.
    Row {
        cpu: 256,
        first: 512,
        last: 2 * GB,
        step: 0,
    },
    Row {
        cpu: 512,
        first: GB,
        last: 4 * GB,
        step: GB,
    },
    Row {
        cpu: 1024,
        first: 2 * GB,
        last: 8 * GB,
        step: GB,
    },
    Row {
        cpu: 2048,
        first: 4 * GB,
        last: 16 * GB,
        step: GB,
    },
    Row {
        cpu: 4096,
        first: 8 * GB,
        last: 30 * GB,
        step: GB,
    },
    Row {
        cpu: 8192,
        first: 16 * GB,
        last: 60 * GB,
        step: 4 * GB,
    },
    Row {
        cpu: 16384,
        first: 32 * GB,
        last: 120 * GB,
        step: 8 * GB,
    },
];

impl Row {
    fn memory_sizes(&self) -> Vec<u32> {
        if self.step == 0 {
            return vec![512, GB, 2 * GB];
        }
        (self.first..=self.last)
            .step_by(self.step as usize)
            .collect()
    }
}

/// A Fargate task size: CPU units and MiB of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateSize {
    /// CPU units (1024 per vCPU).
    pub cpu: u32,
    /// Memory in MiB.
    pub memory: u32,
}

impl FargateSize {
    /// The size `cpu`/`memory` if it is a published combination.
    pub fn new(cpu: u32, memory: u32) -> Option<FargateSize> {
        is_valid(cpu, memory).then_some(FargateSize { cpu, memory })
    }

    /// vCPUs.
    pub fn vcpu(self) -> f64 {
        f64::from(self.cpu) / f64::from(UNITS_PER_VCPU)
    }

    /// Memory in GB (GiB, as Fargate counts them: 1 GB = 1024 MiB).
    pub fn memory_gb(self) -> f64 {
        f64::from(self.memory) / f64::from(GB)
    }

    /// The cgroup limits of a sandbox of this size.
    pub fn cgroup_limits(self) -> CgroupLimits {
        CgroupLimits::new(self.cpu, self.memory)
    }
}

/// Every published size, by CPU then memory.
pub fn sizes() -> Vec<FargateSize> {
    TABLE
        .iter()
        .flat_map(|row| {
            row.memory_sizes().into_iter().map(|memory| FargateSize {
                cpu: row.cpu,
                memory,
            })
        })
        .collect()
}

/// The memory sizes, in MiB, that go with `cpu` units; `None` when `cpu` is not a Fargate size.
pub fn memory_options(cpu: u32) -> Option<Vec<u32>> {
    TABLE
        .iter()
        .find(|row| row.cpu == cpu)
        .map(Row::memory_sizes)
}

/// Whether `cpu` units with `memory` MiB is a published Fargate size.
pub fn is_valid(cpu: u32, memory: u32) -> bool {
    memory_options(cpu).is_some_and(|sizes| sizes.contains(&memory))
}

/// The cheapest published size with at least `cpu` units and `memory` MiB, priced with `rates`
/// (on a tie, the one with less CPU); `None` when the request is above the largest size.
///
/// This is what a task without a valid size would be given: `nearest(300, 600)` is 512 CPU with
/// 1 GB, and `nearest(256, 3 * 1024)` is 512 CPU with 3 GB, since 256 CPU stops at 2 GB.
pub fn nearest(cpu: u32, memory: u32, rates: &Rates) -> Option<FargateSize> {
    let price = |size: &FargateSize| rates.fargate_hourly(size.cpu, size.memory);
    sizes()
        .into_iter()
        .filter(|size| size.cpu >= cpu && size.memory >= memory)
        .min_by(|a, b| price(a).total_cmp(&price(b)).then(a.cpu.cmp(&b.cpu)))
}

/// The cgroup settings for CPU units and MiB: a CFS quota that caps the sandbox at its vCPUs,
/// CPU shares equal to the units (as ECS passes container `cpu` to Docker), and a hard memory
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupLimits {
    /// `cpu.cfs_quota_us` (cgroup v1) or the first field of `cpu.max` (v2), in microseconds.
    pub cpu_quota: i64,
    /// `cpu.cfs_period_us`, or the second field of `cpu.max`, in microseconds.
    pub cpu_period: u64,
    /// `cpu.shares` (v1): the CPU units, at least 2, the kernel's minimum.
    pub cpu_shares: u64,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub memory_bytes: i64,
}

impl CgroupLimits {
    /// The limits for `cpu` units and `memory` MiB. 1024 units is one CPU: a quota of one full
    /// period.
    pub fn new(cpu: u32, memory: u32) -> CgroupLimits {
        CgroupLimits {
            cpu_quota: (u64::from(cpu) * CPU_PERIOD_MICROS / u64::from(UNITS_PER_VCPU)) as i64,
            cpu_period: CPU_PERIOD_MICROS,
            cpu_shares: u64::from(cpu).max(2),
            memory_bytes: i64::from(memory) * 1024 * 1024,
        }
    }

    /// `cpu.weight` for cgroup v2, converted from the shares as runc converts them
    /// (`1 + ((shares - 2) * 9999) / 262142`).
    pub fn cpu_weight(&self) -> u64 {
        1 + ((self.cpu_shares.clamp(2, 262_144) - 2) * 9999) / 262_142
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_table() {
        assert_eq!(memory_options(256).unwrap(), [512, 1024, 2048]);
        assert_eq!(memory_options(512).unwrap(), [1024, 2048, 3072, 4096]);
        assert_eq!(memory_options(1024).unwrap().len(), 7);
        assert_eq!(memory_options(2048).unwrap().first(), Some(&4096));
        assert_eq!(memory_options(2048).unwrap().last(), Some(&16384));
        assert_eq!(memory_options(4096).unwrap().last(), Some(&30720));
        assert_eq!(memory_options(4096).unwrap().len(), 23);
        assert_eq!(
            memory_options(8192).unwrap(),
            (16..=60).step_by(4).map(|g| g * 1024).collect::<Vec<_>>()
        );
        assert_eq!(
            memory_options(16384).unwrap(),
            (32..=120).step_by(8).map(|g| g * 1024).collect::<Vec<_>>()
        );
        assert_eq!(memory_options(128), None);
        assert_eq!(memory_options(3072), None);
        assert_eq!(sizes().len(), 3 + 4 + 7 + 13 + 23 + 12 + 12);
    }

    #[test]
    fn validity() {
        assert!(is_valid(256, 512));
        assert!(is_valid(512, 4096));
        assert!(is_valid(8192, 20 * 1024));
        assert!(!is_valid(256, 3072));
        assert!(!is_valid(512, 512));
        assert!(!is_valid(8192, 18 * 1024), "8 vCPU goes in 4 GB steps");
        assert!(!is_valid(1024, 1024));
        assert_eq!(
            FargateSize::new(1024, 2048),
            Some(FargateSize {
                cpu: 1024,
                memory: 2048
            })
        );
        assert_eq!(FargateSize::new(1024, 1024), None);
    }

    #[test]
    fn nearest_is_the_cheapest_size_that_covers_the_request() {
        let rates = Rates::default();
        assert_eq!(nearest(256, 512, &rates), FargateSize::new(256, 512));
        assert_eq!(nearest(1, 1, &rates), FargateSize::new(256, 512));
        assert_eq!(nearest(300, 600, &rates), FargateSize::new(512, 1024));
        assert_eq!(nearest(256, 3 * 1024, &rates), FargateSize::new(512, 3072));
        assert_eq!(
            nearest(1024, 9 * 1024, &rates),
            FargateSize::new(2048, 9216)
        );
        assert_eq!(
            nearest(4096, 31 * 1024, &rates),
            FargateSize::new(8192, 32768)
        );
        assert_eq!(nearest(16384, 121 * 1024, &rates), None);
        assert_eq!(nearest(20000, 512, &rates), None);
    }

    #[test]
    fn cgroup_limits_follow_cpu_units() {
        let quarter = FargateSize::new(256, 512).unwrap().cgroup_limits();
        assert_eq!(quarter.cpu_quota, 25_000);
        assert_eq!(quarter.cpu_period, 100_000);
        assert_eq!(quarter.cpu_shares, 256);
        assert_eq!(quarter.memory_bytes, 512 * 1024 * 1024);
        let four = FargateSize::new(4096, 8192).unwrap().cgroup_limits();
        assert_eq!(four.cpu_quota, 400_000);
        assert_eq!(four.memory_bytes, 8 << 30);
        assert_eq!(CgroupLimits::new(0, 6).cpu_shares, 2);
        assert_eq!(CgroupLimits::new(1024, 512).cpu_weight(), 39);
        assert_eq!(CgroupLimits::new(2, 512).cpu_weight(), 1);
    }

    #[test]
    fn sizes_in_vcpu_and_gb() {
        let size = FargateSize::new(512, 3072).unwrap();
        assert_eq!((size.vcpu(), size.memory_gb()), (0.5, 3.0));
    }
}
