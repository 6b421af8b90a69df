//! The training backends, built here: the binary is the one place that links
//! the AWS and Kubernetes SDKs and reads their configuration; the job runner
//! and the server see only [`switchyard_runner::Backends`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_local::admission::{Admission, Capacity};
use switchyard_local::training::{LocalTraining, LocalTrainingConfig};
use switchyard_runner::{Backends, RunnerError};
use switchyard_training::{BackendKind, ChannelSource, TrainingBackend, TrainingJob};

/// Where jobs live on this machine and how local gangs run.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub jobs_dir: PathBuf,
    pub admission_file: PathBuf,
    pub python: String,
    pub efs_mounts: BTreeMap<String, PathBuf>,
    pub kill_grace: Duration,
    pub s3_cache: PathBuf,
}

/// Local gangs, SageMaker and Kubernetes, each configured from the environment
/// when a job asks for it.
pub struct ConfiguredBackends {
    pub config: BackendConfig,
}

#[async_trait::async_trait]
impl Backends for ConfiguredBackends {
    async fn backend_for(
        &self,
        job: &TrainingJob,
    ) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
        let c = &self.config;
        match job.spec.backend {
            BackendKind::Local => {
                let config = LocalTrainingConfig {
                    jobs_dir: c.jobs_dir.clone(),
                    python: c.python.clone(),
                    efs_mounts: c.efs_mounts.clone(),
                    kill_grace: c.kill_grace,
                };
                let mut local = LocalTraining::new(
                    config,
                    Admission::new(c.admission_file.clone(), Capacity::detect()),
                );
                let s3_location = [&job.spec.output, &job.spec.checkpoint]
                    .iter()
                    .any(|o| o.as_deref().is_some_and(|o| o.starts_with("s3://")));
                if s3_location
                    || job
                        .channels
                        .iter()
                        .any(|ch| matches!(ch.source, ChannelSource::S3 { .. }))
                {
                    local = local.with_s3(Arc::new(
                        switchyard_s3::S3Store::from_env(c.s3_cache.clone()).await,
                    ));
                }
                Ok(Arc::new(local))
            }
            BackendKind::Sagemaker => {
                let config = switchyard_sagemaker::SageMakerConfig::from_env(c.jobs_dir.clone())
                    .map_err(|e| RunnerError::Refused(e.to_string()))?;
                // A job that cannot resolve is refused before the AWS SDK
                // looks for credentials and a region (no call leaves here);
                // a local checkpoint is resolved where a job placed here
                // would keep it (a job that names sagemaker itself is still
                // refused it, by the backend's preflight).
                let mut probe = job.clone();
                if let Some(home) = switchyard_sagemaker::render::checkpoint_home(job, &config) {
                    probe.spec.checkpoint = Some(home);
                }
                switchyard_sagemaker::render::resolve(&probe, &config)
                    .map_err(|e| RunnerError::Refused(e.to_string()))?;
                Ok(Arc::new(
                    switchyard_sagemaker::SageMakerBackend::from_env(config).await,
                ))
            }
            BackendKind::Auto => Err(RunnerError::Refused(
                "spec.backend: auto is placed on a backend before it runs".into(),
            )),
            BackendKind::Kubernetes => {
                let config =
                    switchyard_kubernetes::training::KubernetesConfig::from_env(c.jobs_dir.clone())
                        .map_err(RunnerError::Refused)?;
                Ok(Arc::new(
                    switchyard_kubernetes::training::KubernetesBackend::new(config),
                ))
            }
        }
    }

    async fn fetch_model(
        &self,
        job: &TrainingJob,
        model: &str,
        dest: &Path,
    ) -> Result<(), RunnerError> {
        if model.starts_with("s3://") {
            let config =
                switchyard_sagemaker::SageMakerConfig::from_env(self.config.jobs_dir.clone())
                    .map_err(|e| RunnerError::Refused(e.to_string()))?;
            let region = job
                .spec
                .sagemaker
                .region
                .clone()
                .or_else(|| config.region.clone());
            let backend = switchyard_sagemaker::SageMakerBackend::from_env(config).await;
            switchyard_sagemaker::fetch_model(&backend.s3(region.as_deref()), model, dest)
                .await
                .map_err(|e| RunnerError::Refused(format!("cannot fetch the model: {e}")))?;
            return Ok(());
        }
        switchyard_engine::io::copy_tree(Path::new(model), dest, &mut Vec::new()).map_err(|e| {
            RunnerError::Refused(format!(
                "cannot copy the model {model} to {}: {e}",
                dest.display()
            ))
        })
    }
}
