//! What tasks and instances cost, as `berth cluster cost` reports it.
//!
//! Two pools, billed as AWS bills them:
//! - **Fargate**: per task, vCPU-seconds and GB-seconds from the start of the image pull
//!   (`pullStartedAt`) to the task's stop, rounded up to the whole second, with a one-minute
//!   minimum. Memory is counted in GB of 1024 MiB.
//! - **EC2**: per container instance, instance-seconds from registration to deregistration (or
//!   now), however full or empty the instance is, rounded up to the whole second with EC2's
//!   60-second minimum.
//!
//! [`Rates::default`] holds the public us-east-1 Linux/x86 on-demand prices: $0.04048 per
//! vCPU-hour and $0.004445 per GB-hour on Fargate, and per-hour prices for common instance
//! types. An instance type the table does not know (such as the local host's) is billed at
//! [`DEFAULT_INSTANCE_HOURLY`], an m5.large's $0.096 per hour (2 vCPU, 8 GiB).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Fargate's us-east-1 Linux/x86 price per vCPU-hour, in dollars.
pub const FARGATE_VCPU_HOURLY: f64 = 0.04048;
/// Fargate's us-east-1 Linux/x86 price per GB-hour, in dollars.
pub const FARGATE_GB_HOURLY: f64 = 0.004445;
/// The hourly price of an instance type the rate table does not list: an m5.large in us-east-1.
pub const DEFAULT_INSTANCE_HOURLY: f64 = 0.096;
/// Fargate bills at least this many seconds per task.
pub const FARGATE_MINIMUM_SECONDS: u64 = 60;
/// EC2 bills at least this many seconds per instance.
pub const EC2_MINIMUM_SECONDS: u64 = 60;

/// us-east-1 Linux on-demand hourly prices of common instance types.
const INSTANCE_PRICES: [(&str, f64); 14] = [
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("r5.2xlarge", 0.504),
];

/// Prices, in dollars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// Fargate, per vCPU-hour.
    pub fargate_vcpu_hourly: f64,
    /// Fargate, per GB-hour.
    pub fargate_gb_hourly: f64,
    /// EC2, per instance-hour, by instance type (`ecs.instance-type`).
    pub instance_hourly: BTreeMap<String, f64>,
    /// EC2, per instance-hour, for types `instance_hourly` does not list.
    pub default_instance_hourly: f64,
}

impl Default for Rates {
    /// The public us-east-1 Linux/x86 prices.
    fn default() -> Rates {
        Rates {
            fargate_vcpu_hourly: FARGATE_VCPU_HOURLY,
            fargate_gb_hourly: FARGATE_GB_HOURLY,
            instance_hourly: INSTANCE_PRICES
                .iter()
                .map(|&(kind, price)| (kind.to_owned(), price))
                .collect(),
            default_instance_hourly: DEFAULT_INSTANCE_HOURLY,
        }
    }
}

impl Rates {
    /// The hourly price of an instance type.
    pub fn instance_rate(&self, instance_type: &str) -> f64 {
        self.instance_hourly
            .get(instance_type)
            .copied()
            .unwrap_or(self.default_instance_hourly)
    }

    /// What an hour of a Fargate task of `cpu_units` and `memory_mib` costs.
    pub fn fargate_hourly(&self, cpu_units: u32, memory_mib: u32) -> f64 {
        vcpus(cpu_units) * self.fargate_vcpu_hourly + gbs(memory_mib) * self.fargate_gb_hourly
    }

    /// The charge for a Fargate task of `cpu_units` and `memory_mib` that started pulling its
    /// image at `start` and stopped at `stop` (now, for a task still running).
    pub fn fargate_cost(
        &self,
        cpu_units: u32,
        memory_mib: u32,
        start: Timestamp,
        stop: Timestamp,
    ) -> FargateCharge {
        let ran = stop.saturating_duration_since(start);
        let billed_seconds = whole_seconds(ran).max(FARGATE_MINIMUM_SECONDS);
        let vcpu_seconds = vcpus(cpu_units) * billed_seconds as f64;
        let gb_seconds = gbs(memory_mib) * billed_seconds as f64;
        let vcpu_dollars = vcpu_seconds / 3600.0 * self.fargate_vcpu_hourly;
        let gb_dollars = gb_seconds / 3600.0 * self.fargate_gb_hourly;
        FargateCharge {
            cpu: cpu_units,
            memory: memory_mib,
            run_seconds: ran.as_secs_f64(),
            billed_seconds,
            vcpu_seconds,
            gb_seconds,
            vcpu_dollars,
            gb_dollars,
            dollars: vcpu_dollars + gb_dollars,
        }
    }

    /// The charge for an instance of `instance_type` registered from `registered_at` to `until`
    /// (its deregistration, or now).
    pub fn ec2_cost(
        &self,
        instance_type: &str,
        registered_at: Timestamp,
        until: Timestamp,
    ) -> Ec2Charge {
        let ran = until.saturating_duration_since(registered_at);
        let billed_seconds = whole_seconds(ran).max(EC2_MINIMUM_SECONDS);
        let hourly = self.instance_rate(instance_type);
        Ec2Charge {
            instance_type: instance_type.to_owned(),
            run_seconds: ran.as_secs_f64(),
            billed_seconds,
            instance_seconds: billed_seconds,
            hourly,
            dollars: billed_seconds as f64 / 3600.0 * hourly,
        }
    }
}

fn vcpus(cpu_units: u32) -> f64 {
    f64::from(cpu_units) / 1024.0
}

fn gbs(memory_mib: u32) -> f64 {
    f64::from(memory_mib) / 1024.0
}

/// A duration rounded up to the whole second.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// What one Fargate task costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateCharge {
    /// The task's CPU units.
    pub cpu: u32,
    /// The task's memory, MiB.
    pub memory: u32,
    /// Seconds from the image pull to the stop.
    pub run_seconds: f64,
    /// Seconds billed: the run rounded up, at least 60.
    pub billed_seconds: u64,
    /// vCPUs times billed seconds.
    pub vcpu_seconds: f64,
    /// GB times billed seconds.
    pub gb_seconds: f64,
    /// The CPU part, dollars.
    pub vcpu_dollars: f64,
    /// The memory part, dollars.
    pub gb_dollars: f64,
    /// The total, dollars.
    pub dollars: f64,
}

/// What one EC2 container instance costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Charge {
    /// The instance type the rate came from.
    pub instance_type: String,
    /// Seconds from registration to deregistration (or now).
    pub run_seconds: f64,
    /// Seconds billed: the run rounded up, at least 60.
    pub billed_seconds: u64,
    /// Instance-seconds billed (one instance: the billed seconds).
    pub instance_seconds: u64,
    /// The hourly price used.
    pub hourly: f64,
    /// The total, dollars.
    pub dollars: f64,
}

/// One line of a cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "launchType")]
pub enum LineItem {
    /// A Fargate task.
    #[serde(rename = "FARGATE")]
    Fargate {
        /// The task's ARN.
        #[serde(rename = "taskArn")]
        task_arn: String,
        /// Its charge.
        #[serde(flatten)]
        charge: FargateCharge,
    },
    /// An EC2 container instance.
    #[serde(rename = "EC2")]
    Ec2 {
        /// The container instance's ARN.
        #[serde(rename = "containerInstanceArn")]
        container_instance_arn: String,
        /// Its charge.
        #[serde(flatten)]
        charge: Ec2Charge,
    },
}

impl LineItem {
    /// The line's dollars.
    pub fn dollars(&self) -> f64 {
        match self {
            LineItem::Fargate { charge, .. } => charge.dollars,
            LineItem::Ec2 { charge, .. } => charge.dollars,
        }
    }
}

/// A cluster's costs: one line per Fargate task and per EC2 instance, with the totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    /// The lines, in the order they were added.
    pub line_items: Vec<LineItem>,
    /// vCPU-seconds over the Fargate lines.
    pub fargate_vcpu_seconds: f64,
    /// GB-seconds over the Fargate lines.
    pub fargate_gb_seconds: f64,
    /// Dollars over the Fargate lines.
    pub fargate_dollars: f64,
    /// Instance-seconds over the EC2 lines.
    pub ec2_instance_seconds: u64,
    /// Dollars over the EC2 lines.
    pub ec2_dollars: f64,
    /// Dollars over every line.
    pub total_dollars: f64,
}

impl CostReport {
    /// Adds a Fargate task's line.
    pub fn add_fargate(&mut self, task_arn: impl Into<String>, charge: FargateCharge) {
        self.fargate_vcpu_seconds += charge.vcpu_seconds;
        self.fargate_gb_seconds += charge.gb_seconds;
        self.fargate_dollars += charge.dollars;
        self.total_dollars += charge.dollars;
        self.line_items.push(LineItem::Fargate {
            task_arn: task_arn.into(),
            charge,
        });
    }

    /// Adds an EC2 instance's line.
    pub fn add_ec2(&mut self, container_instance_arn: impl Into<String>, charge: Ec2Charge) {
        self.ec2_instance_seconds += charge.instance_seconds;
        self.ec2_dollars += charge.dollars;
        self.total_dollars += charge.dollars;
        self.line_items.push(LineItem::Ec2 {
            container_instance_arn: container_instance_arn.into(),
            charge,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn a_short_fargate_task_bills_the_one_minute_minimum() {
        let rates = Rates::default();
        let start = Timestamp::from_secs(1_000);
        let charge = rates.fargate_cost(256, 512, start, Timestamp::from_secs(1_030));
        assert_eq!(charge.billed_seconds, 60);
        assert_eq!(charge.run_seconds, 30.0);
        assert_eq!((charge.vcpu_seconds, charge.gb_seconds), (15.0, 30.0));
        let expected = 0.25 * 60.0 / 3600.0 * 0.04048 + 0.5 * 60.0 / 3600.0 * 0.004445;
        assert!(
            close(charge.dollars, expected),
            "{} != {expected}",
            charge.dollars
        );
        assert!(close(charge.vcpu_dollars, 0.25 * 60.0 / 3600.0 * 0.04048));
    }

    #[test]
    fn fargate_rounds_up_to_the_second() {
        let rates = Rates::default();
        let start = Timestamp::from_millis(0);
        let charge = rates.fargate_cost(1024, 2048, start, Timestamp::from_millis(3_600_000 + 1));
        assert_eq!(charge.billed_seconds, 3601);
        let expected = 3601.0 / 3600.0 * (0.04048 + 2.0 * 0.004445);
        assert!(close(charge.dollars, expected));
        // One vCPU and 2 GB for exactly one hour.
        let hour = rates.fargate_cost(1024, 2048, start, Timestamp::from_secs(3600));
        assert!(close(hour.dollars, 0.04048 + 0.00889));
        assert!(close(rates.fargate_hourly(1024, 2048), hour.dollars));
    }

    #[test]
    fn a_stop_before_the_start_bills_the_minimum() {
        let charge = Rates::default().fargate_cost(
            512,
            1024,
            Timestamp::from_secs(100),
            Timestamp::from_secs(50),
        );
        assert_eq!(charge.billed_seconds, 60);
    }

    #[test]
    fn ec2_bills_whole_instance_seconds() {
        let rates = Rates::default();
        let charge = rates.ec2_cost(
            "m5.xlarge",
            Timestamp::from_secs(0),
            Timestamp::from_secs(7200),
        );
        assert_eq!(
            (charge.billed_seconds, charge.instance_seconds),
            (7200, 7200)
        );
        assert!(close(charge.dollars, 2.0 * 0.192));
        let unknown = rates.ec2_cost(
            "berth.local",
            Timestamp::from_secs(0),
            Timestamp::from_secs(10),
        );
        assert_eq!(unknown.billed_seconds, 60);
        assert_eq!(unknown.hourly, DEFAULT_INSTANCE_HOURLY);
        assert!(close(unknown.dollars, 60.0 / 3600.0 * 0.096));
    }

    #[test]
    fn rates_are_configurable() {
        let mut rates = Rates {
            fargate_vcpu_hourly: 1.0,
            fargate_gb_hourly: 0.0,
            ..Rates::default()
        };
        rates.instance_hourly.insert("local".into(), 3.6);
        let charge = rates.fargate_cost(2048, 4096, Timestamp::EPOCH, Timestamp::from_secs(1800));
        assert!(close(charge.dollars, 1.0));
        let ec2 = rates.ec2_cost("local", Timestamp::EPOCH, Timestamp::from_secs(100));
        assert!(close(ec2.dollars, 0.1));
        let json = serde_json::to_string(&rates).unwrap();
        assert_eq!(serde_json::from_str::<Rates>(&json).unwrap(), rates);
    }

    #[test]
    fn report_totals_the_lines() {
        let rates = Rates::default();
        let mut report = CostReport::default();
        let task = rates.fargate_cost(256, 512, Timestamp::EPOCH, Timestamp::from_secs(30));
        let instance = rates.ec2_cost("t3.small", Timestamp::EPOCH, Timestamp::from_secs(3600));
        report.add_fargate("arn:task", task.clone());
        report.add_ec2("arn:instance", instance.clone());
        assert!(close(report.total_dollars, task.dollars + 0.0208));
        assert_eq!(report.ec2_instance_seconds, 3600);
        assert_eq!(
            (report.fargate_vcpu_seconds, report.fargate_gb_seconds),
            (15.0, 30.0)
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lineItems"][0]["launchType"], "FARGATE");
        assert_eq!(json["lineItems"][0]["taskArn"], "arn:task");
        assert_eq!(json["lineItems"][0]["billedSeconds"], 60);
        assert_eq!(json["lineItems"][1]["launchType"], "EC2");
        assert_eq!(json["lineItems"][1]["instanceSeconds"], 3600);
        let back: CostReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert!(close(back.line_items[1].dollars(), 0.0208));
    }
}
