//! Where SageMaker settings come from: the job's `spec.sagemaker` block first,
//! then Switchyard's configuration (`SWITCHYARD_SAGEMAKER_*` variables), so one
//! job file runs in several accounts and a platform team can set defaults once.
//! Credentials and endpoints are never configured here: they come from the
//! standard AWS chain (`AWS_PROFILE`, `AWS_ENDPOINT_URL_SAGEMAKER`, web identity…).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What to do with a channel that is a local path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalChannels {
    /// Upload it under the staging bucket first.
    #[default]
    Upload,
    /// Refuse the job (data must already be in S3 or EFS).
    Refuse,
}

/// Defaults for every SageMaker job this process submits.
#[derive(Debug, Clone)]
pub struct SageMakerConfig {
    pub role_arn: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub subnets: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub local_channels: LocalChannels,
    /// Per instance type, the most instances one job may ask for (on top of the
    /// table's default); an account's quotas are often lower than SageMaker's maximum.
    pub instance_limits: BTreeMap<String, u32>,
    /// How often DescribeTrainingJob and the logs are read.
    pub poll_interval: Duration,
    /// The longest wait between polls when SageMaker throttles.
    pub max_poll_interval: Duration,
    /// Where per-host log files are written (`<jobs_dir>/<job id>/logs`).
    pub jobs_dir: PathBuf,
}

/// A configuration variable that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl SageMakerConfig {
    /// Defaults with nothing configured (tests and embedders start here).
    pub fn new(jobs_dir: PathBuf) -> Self {
        SageMakerConfig {
            role_arn: None,
            region: None,
            bucket: None,
            prefix: "switchyard".into(),
            subnets: Vec::new(),
            security_group_ids: Vec::new(),
            local_channels: LocalChannels::Upload,
            instance_limits: BTreeMap::new(),
            poll_interval: Duration::from_secs(15),
            max_poll_interval: Duration::from_secs(120),
            jobs_dir,
        }
    }

    /// Reads `SWITCHYARD_SAGEMAKER_{ROLE_ARN,REGION,BUCKET,PREFIX,SUBNETS,
    /// SECURITY_GROUPS,LOCAL_CHANNELS,INSTANCE_LIMITS,POLL_SECONDS}`.
    pub fn from_env(jobs_dir: PathBuf) -> Result<Self, ConfigError> {
        Self::from_vars(jobs_dir, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_vars(
        jobs_dir: PathBuf,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = SageMakerConfig::new(jobs_dir);
        c.role_arn = var("SWITCHYARD_SAGEMAKER_ROLE_ARN");
        c.region = var("SWITCHYARD_SAGEMAKER_REGION");
        c.bucket = var("SWITCHYARD_SAGEMAKER_BUCKET");
        if let Some(p) = var("SWITCHYARD_SAGEMAKER_PREFIX") {
            c.prefix = p.trim_matches('/').to_string();
        }
        c.subnets = var("SWITCHYARD_SAGEMAKER_SUBNETS")
            .map(|v| list(&v))
            .unwrap_or_default();
        c.security_group_ids = var("SWITCHYARD_SAGEMAKER_SECURITY_GROUPS")
            .map(|v| list(&v))
            .unwrap_or_default();
        if let Some(v) = var("SWITCHYARD_SAGEMAKER_LOCAL_CHANNELS") {
            c.local_channels = match v.as_str() {
                "upload" => LocalChannels::Upload,
                "refuse" => LocalChannels::Refuse,
                other => {
                    return Err(ConfigError {
                        variable: "SWITCHYARD_SAGEMAKER_LOCAL_CHANNELS",
                        message: format!("'{other}' must be upload or refuse"),
                    })
                }
            };
        }
        if let Some(v) = var("SWITCHYARD_SAGEMAKER_INSTANCE_LIMITS") {
            for item in list(&v) {
                let parsed = item
                    .split_once('=')
                    .and_then(|(t, n)| Some((t.trim().to_string(), n.trim().parse::<u32>().ok()?)));
                let (t, n) = parsed.ok_or_else(|| ConfigError {
                    variable: "SWITCHYARD_SAGEMAKER_INSTANCE_LIMITS",
                    message: format!("'{item}' is not TYPE=COUNT (e.g. ml.p4d.24xlarge=2)"),
                })?;
                c.instance_limits.insert(t, n);
            }
        }
        if let Some(v) = var("SWITCHYARD_SAGEMAKER_POLL_SECONDS") {
            let secs: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .ok_or_else(|| ConfigError {
                    variable: "SWITCHYARD_SAGEMAKER_POLL_SECONDS",
                    message: format!("'{v}' is not a positive number of seconds"),
                })?;
            c.poll_interval = Duration::from_secs_f64(secs);
            c.max_poll_interval = c.max_poll_interval.max(c.poll_interval);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_variables_and_names_the_bad_one() {
        let vars = |k: &str| match k {
            "SWITCHYARD_SAGEMAKER_SUBNETS" => Some("subnet-1, subnet-2".to_string()),
            "SWITCHYARD_SAGEMAKER_INSTANCE_LIMITS" => Some("ml.p4d.24xlarge=2".to_string()),
            "SWITCHYARD_SAGEMAKER_PREFIX" => Some("/team/ml/".to_string()),
            _ => None,
        };
        let c = SageMakerConfig::from_vars(PathBuf::from("/j"), vars).unwrap();
        assert_eq!(c.subnets, vec!["subnet-1", "subnet-2"]);
        assert_eq!(c.instance_limits["ml.p4d.24xlarge"], 2);
        assert_eq!(c.prefix, "team/ml");
        let bad =
            |k: &str| (k == "SWITCHYARD_SAGEMAKER_LOCAL_CHANNELS").then(|| "maybe".to_string());
        let e = SageMakerConfig::from_vars(PathBuf::from("/j"), bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SWITCHYARD_SAGEMAKER_LOCAL_CHANNELS"),
            "{e}"
        );
    }
}
