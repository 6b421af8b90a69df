//! The engine's artifact storage for `s3://` pipeline roots, over the AWS SDK
//! (`switchyard-s3`). The client is built on first use, so a run that never
//! touches `s3://` never reads AWS configuration.

use std::path::{Path, PathBuf};

use switchyard_engine::ArtifactStore;
use switchyard_s3::S3Store;

pub struct S3Artifacts {
    cache: PathBuf,
    store: tokio::sync::OnceCell<S3Store>,
}

impl S3Artifacts {
    pub fn new(cache: PathBuf) -> Self {
        S3Artifacts {
            cache,
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn store(&self) -> &S3Store {
        self.store
            .get_or_init(|| S3Store::from_env(self.cache.clone()))
            .await
    }
}

/// `s3://bucket/key` → (bucket, key); a URI without a key names no artifact.
fn split(uri: &str) -> Result<(String, String), String> {
    switchyard_training::parse_s3_uri(uri)
        .filter(|(_, key)| !key.trim_matches('/').is_empty())
        .ok_or_else(|| format!("'{uri}' is not an S3 artifact URI (s3://bucket/key)"))
}

#[async_trait::async_trait]
impl ArtifactStore for S3Artifacts {
    async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
        let (bucket, key) = split(uri)?;
        self.store()
            .await
            .download_artifact(&bucket, &key, dest)
            .await
    }

    async fn upload(&self, src: &Path, uri: &str) -> Result<(), String> {
        let (bucket, key) = split(uri)?;
        self.store().await.upload_artifact(src, &bucket, &key).await
    }

    async fn exists(&self, uri: &str) -> Result<bool, String> {
        let (bucket, key) = split(uri)?;
        self.store().await.artifact_exists(&bucket, &key).await
    }
}
