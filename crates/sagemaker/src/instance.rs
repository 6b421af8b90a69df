//! Instance types: the table that turns `resources` into an `InstanceType` when
//! the job names none, and that catches a job which cannot fit its type before
//! SageMaker bills a minute of it. docs/sagemaker.md prints the same table.

/// One SageMaker training instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub gpus: u32,
}

const fn t(name: &'static str, vcpus: u32, memory_gib: u32, gpus: u32) -> InstanceType {
    InstanceType {
        name,
        vcpus,
        memory_gib,
        gpus,
    }
}

/// Known types, smallest first within each family; derivation picks the first
/// that fits, CPU families for CPU jobs and GPU families for GPU jobs.
pub const TABLE: &[InstanceType] = &[
    t("ml.m5.large", 2, 8, 0),
    t("ml.m5.xlarge", 4, 16, 0),
    t("ml.m5.2xlarge", 8, 32, 0),
    t("ml.m5.4xlarge", 16, 64, 0),
    t("ml.m5.12xlarge", 48, 192, 0),
    t("ml.m5.24xlarge", 96, 384, 0),
    t("ml.c5.xlarge", 4, 8, 0),
    t("ml.c5.2xlarge", 8, 16, 0),
    t("ml.c5.4xlarge", 16, 32, 0),
    t("ml.c5.9xlarge", 36, 72, 0),
    t("ml.c5.18xlarge", 72, 144, 0),
    t("ml.g5.xlarge", 4, 16, 1),
    t("ml.g5.2xlarge", 8, 32, 1),
    t("ml.g5.4xlarge", 16, 64, 1),
    t("ml.g5.8xlarge", 32, 128, 1),
    t("ml.g5.12xlarge", 48, 192, 4),
    t("ml.g5.24xlarge", 96, 384, 4),
    t("ml.g5.48xlarge", 192, 768, 8),
    t("ml.p3.2xlarge", 8, 61, 1),
    t("ml.p3.8xlarge", 32, 244, 4),
    t("ml.p3.16xlarge", 64, 488, 8),
    t("ml.p4d.24xlarge", 96, 1152, 8),
    t("ml.p5.48xlarge", 192, 2048, 8),
];

/// Instances of one type a single job may use unless configured otherwise
/// (`SWITCHYARD_SAGEMAKER_INSTANCE_LIMITS`). New accounts usually have lower
/// quotas for GPU types; set the real ones there.
pub const DEFAULT_LIMIT: u32 = 20;

pub fn lookup(name: &str) -> Option<&'static InstanceType> {
    TABLE.iter().find(|t| t.name == name)
}

/// The smallest known type with at least `cpu` vCPUs, `memory_gib` and `gpus`
/// (m5 for CPU jobs, g5 then p4d/p5 for GPU jobs).
pub fn derive(cpu: f64, memory_gib: f64, gpus: u32) -> Option<&'static InstanceType> {
    TABLE
        .iter()
        .filter(|t| (gpus == 0) == t.name.starts_with("ml.m5"))
        .filter(|t| gpus == 0 || !t.name.starts_with("ml.p3"))
        .find(|t| t.vcpus as f64 >= cpu && t.memory_gib as f64 >= memory_gib && t.gpus >= gpus)
}

/// `ml.<family>.<size>`, the shape SageMaker accepts.
pub fn well_formed(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 3
        && parts[0] == "ml"
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_smallest_fit() {
        assert_eq!(derive(1.0, 0.0, 0).unwrap().name, "ml.m5.large");
        assert_eq!(derive(3.0, 10.0, 0).unwrap().name, "ml.m5.xlarge");
        assert_eq!(derive(2.0, 0.0, 1).unwrap().name, "ml.g5.xlarge");
        assert_eq!(derive(8.0, 0.0, 4).unwrap().name, "ml.g5.12xlarge");
        assert_eq!(derive(8.0, 1000.0, 8).unwrap().name, "ml.p4d.24xlarge");
        assert!(derive(500.0, 0.0, 0).is_none());
        assert!(well_formed("ml.trn1.32xlarge"));
        assert!(!well_formed("m5.large"));
    }
}
