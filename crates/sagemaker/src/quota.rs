//! Room on SageMaker now, for `backend: auto`: the account's quota for the
//! job's instance type in training jobs (Service Quotas' "`<type>` for
//! training job usage"), minus the instances of the account's training jobs
//! in progress. SageMaker refuses a job beyond it (`ResourceLimitExceeded`)
//! rather than queueing it, so a job that does not fit is not placed there.

use aws_sdk_sagemaker::types::TrainingJobStatus;
use aws_sdk_servicequotas::types::ServiceQuota;

use crate::error::{classify, ApiError};

/// How many jobs in progress are described at most (each is one call).
const MAX_DESCRIBED: usize = 200;

/// The quota's name in Service Quotas for training on `instance_type`.
pub fn quota_name(instance_type: &str) -> String {
    format!("{instance_type} for training job usage")
}

/// What the account allows and uses of one instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// The applied quota (else AWS's default); `None`: Service Quotas has no
    /// quota of that name.
    pub quota: Option<f64>,
    /// Instances of that type in training jobs in progress.
    pub in_use: u32,
}

impl Room {
    /// Why a job of `nodes` instances cannot be created now (`None`: it can).
    pub fn refusal(&self, instance_type: &str, nodes: u32) -> Option<String> {
        let quota = self.quota?;
        let name = quota_name(instance_type);
        if f64::from(nodes) > quota {
            return Some(format!(
                "needs {nodes} × {instance_type}; the account's quota \"{name}\" is {quota}: ask for more in Service Quotas"
            ));
        }
        if f64::from(self.in_use + nodes) > quota {
            return Some(format!(
                "needs {nodes} × {instance_type}; the account's quota \"{name}\" is {quota} and {} are in use by training jobs in progress (SageMaker would refuse it: ResourceLimitExceeded)",
                self.in_use
            ));
        }
        None
    }

    /// The quota in words, for a candidate that fits.
    pub fn describe(&self, nodes: u32) -> String {
        match self.quota {
            Some(q) => format!(
                "quota {q} instances, {} in use, {nodes} needed",
                self.in_use
            ),
            None => "no training quota listed for it".to_string(),
        }
    }
}

/// The account's quota for `instance_type` and its use now.
pub async fn room(
    quotas: &aws_sdk_servicequotas::Client,
    sagemaker: &aws_sdk_sagemaker::Client,
    instance_type: &str,
) -> Result<Room, ApiError> {
    let quota = quota(quotas, instance_type).await?;
    let in_use = in_use(sagemaker, instance_type).await?;
    Ok(Room { quota, in_use })
}

/// The applied value of the quota, else AWS's default for it.
async fn quota(
    client: &aws_sdk_servicequotas::Client,
    instance_type: &str,
) -> Result<Option<f64>, ApiError> {
    let name = quota_name(instance_type);
    let applied = find(&name, |token| async move {
        let page = client
            .list_service_quotas()
            .service_code("sagemaker")
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ListServiceQuotas", &e))?;
        Ok((
            page.quotas().to_vec(),
            page.next_token().map(str::to_string),
        ))
    })
    .await?;
    if applied.is_some() {
        return Ok(applied);
    }
    find(&name, |token| async move {
        let page = client
            .list_aws_default_service_quotas()
            .service_code("sagemaker")
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ListAWSDefaultServiceQuotas", &e))?;
        Ok((
            page.quotas().to_vec(),
            page.next_token().map(str::to_string),
        ))
    })
    .await
}

/// The value of the quota called `name` in a paged listing (`page` answers
/// one page and the next token).
async fn find<F, Fut>(name: &str, mut page: F) -> Result<Option<f64>, ApiError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<ServiceQuota>, Option<String>), ApiError>>,
{
    let mut token = None;
    loop {
        let (quotas, next) = page(token).await?;
        if let Some(v) = quotas
            .iter()
            .find(|q| q.quota_name() == Some(name))
            .and_then(|q| q.value())
        {
            return Ok(Some(v));
        }
        token = next;
        if token.is_none() {
            return Ok(None);
        }
    }
}

/// Instances of `instance_type` held by the account's training jobs in
/// progress or stopping (a summary does not say its instances: each is
/// described, eight at a time).
async fn in_use(client: &aws_sdk_sagemaker::Client, instance_type: &str) -> Result<u32, ApiError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let mut names = Vec::new();
    for status in [TrainingJobStatus::InProgress, TrainingJobStatus::Stopping] {
        let mut token = None;
        loop {
            let page = client
                .list_training_jobs()
                .status_equals(status.clone())
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("ListTrainingJobs", &e))?;
            names.extend(
                page.training_job_summaries()
                    .iter()
                    .filter(|s| s.training_job_status() == Some(&status))
                    .filter_map(|s| s.training_job_name().map(str::to_string)),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() || names.len() >= MAX_DESCRIBED {
                break;
            }
        }
    }
    let held: Vec<u32> = stream::iter(names.into_iter().take(MAX_DESCRIBED))
        .map(|name| async move {
            let d = match client
                .describe_training_job()
                .training_job_name(&name)
                .send()
                .await
            {
                Ok(d) => d,
                // Ended and gone meanwhile: it holds nothing.
                Err(e)
                    if classify("DescribeTrainingJob", &e).kind == crate::error::Kind::NotFound =>
                {
                    return Ok(0)
                }
                Err(e) => return Err(classify("DescribeTrainingJob", &e)),
            };
            let holding = matches!(
                d.training_job_status(),
                Some(TrainingJobStatus::InProgress | TrainingJobStatus::Stopping)
            );
            Ok(match d.resource_config() {
                Some(r)
                    if holding && r.instance_type().map(|t| t.as_str()) == Some(instance_type) =>
                {
                    r.instance_count().unwrap_or(0).max(0) as u32
                }
                _ => 0,
            })
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(held.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_fits_the_quota_less_what_jobs_in_progress_hold() {
        let room = Room {
            quota: Some(2.0),
            in_use: 1,
        };
        assert_eq!(room.refusal("ml.m5.xlarge", 1), None);
        assert_eq!(
            room.refusal("ml.m5.xlarge", 2).as_deref(),
            Some("needs 2 × ml.m5.xlarge; the account's quota \"ml.m5.xlarge for training job usage\" is 2 and 1 are in use by training jobs in progress (SageMaker would refuse it: ResourceLimitExceeded)")
        );
        assert!(room
            .refusal("ml.m5.xlarge", 3)
            .is_some_and(|r| r.contains("ask for more in Service Quotas")));
        let unlisted = Room {
            quota: None,
            in_use: 9,
        };
        assert_eq!(unlisted.refusal("ml.x", 100), None);
    }
}
