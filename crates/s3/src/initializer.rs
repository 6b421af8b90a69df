//! Kubeflow Trainer's S3 dataset and model initializers, with the AWS SDK:
//! the same contract as Trainer v2.3's initializer images (`STORAGE_URI`
//! `s3://bucket/prefix`, and `ENDPOINT`, `ACCESS_KEY_ID`,
//! `SECRET_ACCESS_KEY`, `REGION`, `ROLE_ARN`, `IGNORE_PATTERNS` as the
//! Kubeflow SDK's `S3DatasetInitializer`/`S3ModelInitializer` set them),
//! writing every object under the prefix to `/workspace/dataset` or
//! `/workspace/model` by its key relative to the prefix.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::Client;
use futures::StreamExt;

/// Objects downloaded at once.
const PARALLEL: usize = 8;

/// Why an initializer cannot run; each names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("STORAGE_URI {uri}: Hugging Face is not reachable from this machine and Switchyard's initializer fetches s3:// only; copy the files to S3 and give s3://bucket/prefix")]
    HuggingFace { uri: String },
    #[error("STORAGE_URI {uri:?} is not s3://bucket/prefix, the one source Switchyard's initializer fetches")]
    Scheme { uri: String },
    #[error("IGNORE_PATTERNS: {pattern:?} is not a valid pattern: {why}")]
    Pattern { pattern: String, why: String },
    #[error("{0}")]
    S3(String),
    #[error("cannot write {path}: {why}")]
    Write { path: PathBuf, why: String },
}

/// Where to fetch from, read from the initializer's environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    /// Shell patterns (Python's `fnmatch`) on the whole key.
    pub ignore_patterns: Vec<String>,
}

impl Source {
    /// From variables (`get("STORAGE_URI")`, …). Empty values count as
    /// unset, as Trainer's do; no `STORAGE_URI` is `None`: the TrainJob asks
    /// for nothing from this step (a runtime runs both initializers, a job
    /// may want only a dataset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Source>, InitError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let Some(uri) = var("STORAGE_URI") else {
            return Ok(None);
        };
        let (scheme, rest) = uri.split_once("://").unwrap_or(("", ""));
        match scheme {
            "s3" => {}
            "hf" => return Err(InitError::HuggingFace { uri }),
            _ => return Err(InitError::Scheme { uri }),
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(InitError::Scheme { uri });
        }
        Ok(Some(Source {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: var("ENDPOINT"),
            access_key_id: var("ACCESS_KEY_ID"),
            secret_access_key: var("SECRET_ACCESS_KEY"),
            region: var("REGION"),
            role_arn: var("ROLE_ARN"),
            ignore_patterns: var("IGNORE_PATTERNS")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    /// An S3 client from the given values, the standard AWS chain for the rest.
    async fn client(&self) -> Client {
        // REGION, else the AWS variables, else us-east-1 (never the instance
        // metadata service: a pod off EC2 would wait on it).
        let region = self
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        let mut loader = aws_config::from_env().region(Region::new(region));
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "initializer",
            ));
        }
        let mut config = loader.load().await;
        if let Some(arn) = &self.role_arn {
            let role = aws_config::sts::AssumeRoleProvider::builder(arn.clone())
                .session_name("kubeflow-trainer-initializer")
                .configure(&config)
                .build()
                .await;
            config = config
                .into_builder()
                .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(role))
                .build();
        }
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if self.endpoint.is_some() {
            builder = builder.force_path_style(true);
        }
        Client::from_conf(builder.build())
    }
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fetched {
    pub files: u64,
    pub bytes: u64,
    /// Keys left out by `IGNORE_PATTERNS`.
    pub ignored: Vec<String>,
}

/// Every object under the source's prefix into `dest`, at its key relative
/// to the prefix (the object itself, by its file name, when the prefix is a
/// whole key). A key that would leave `dest` is refused.
pub async fn fetch(source: &Source, dest: &Path) -> Result<Fetched, InitError> {
    let ignore = patterns(&source.ignore_patterns)?;
    let client = source.client().await;
    let (bucket, prefix) = (&source.bucket, &source.prefix);
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|e| InitError::Write {
            path: dest.into(),
            why: e.to_string(),
        })?;
    // Every key first: a key that cannot be written is refused before any
    // file is, so a refused dataset leaves nothing half there.
    let mut done = Fetched::default();
    let mut wanted = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            InitError::S3(format!(
                "cannot list s3://{bucket}/{prefix}: {}",
                crate::describe(&e)
            ))
        })?;
        for obj in page.contents() {
            let Some(key) = obj.key() else { continue };
            if key.ends_with('/') {
                continue;
            }
            if ignore.is_match(key) {
                tracing::info!(key, "ignored (IGNORE_PATTERNS)");
                done.ignored.push(key.to_string());
                continue;
            }
            let rel = relative(key, prefix).ok_or_else(|| {
                InitError::S3(format!(
                    "s3://{bucket}/{key}: the key does not map to a path inside {}",
                    dest.display()
                ))
            })?;
            wanted.push((
                key.to_string(),
                dest.join(rel),
                obj.size().unwrap_or(0).max(0) as u64,
            ));
        }
    }
    // Several objects at a time: a dataset is many small files.
    let mut downloads = futures::stream::iter(wanted.iter().map(|(key, target, _)| {
        tracing::info!(key, to = %target.display(), "downloading");
        crate::download(&client, bucket, key, target)
    }))
    .buffer_unordered(PARALLEL);
    while let Some(result) = downloads.next().await {
        result.map_err(InitError::S3)?;
    }
    done.files = wanted.len() as u64;
    done.bytes = wanted.iter().map(|(_, _, size)| size).sum();
    // As Trainer's initializer: nothing under the prefix is not an error
    // (the trainer meets an empty folder), but it is said.
    if done.files == 0 && done.ignored.is_empty() {
        tracing::warn!("s3://{bucket}/{prefix} has no objects: check STORAGE_URI (and ENDPOINT)");
    }
    Ok(done)
}

/// The key below the prefix (Trainer's rule: the rest of the key without a
/// leading `/`, or the file name when the prefix is the whole key), kept
/// inside the destination.
fn relative(key: &str, prefix: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.trim_start_matches('/');
    let rel = if rest.is_empty() {
        key.rsplit('/').next()?
    } else {
        rest
    };
    let safe = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != ".");
    safe.then(|| rel.to_string())
}

/// `fnmatch` patterns: `*` crosses `/`, as in Python.
fn patterns(raw: &[String]) -> Result<globset::GlobSet, InitError> {
    let mut set = globset::GlobSetBuilder::new();
    for p in raw {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(false)
            .build()
            .map_err(|e| InitError::Pattern {
                pattern: p.clone(),
                why: e.to_string(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| InitError::Pattern {
        pattern: raw.join(","),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_the_sdk_variables() {
        let s = Source::from_vars(vars(&[
            ("STORAGE_URI", "s3://data/digits/v1"),
            ("ENDPOINT", "http://10.0.0.1:9000"),
            ("ACCESS_KEY_ID", "k"),
            ("SECRET_ACCESS_KEY", "s"),
            ("REGION", ""),
            ("IGNORE_PATTERNS", "*.pt, *.bin,"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.bucket, "data");
        assert_eq!(s.prefix, "digits/v1");
        assert_eq!(s.endpoint.as_deref(), Some("http://10.0.0.1:9000"));
        assert_eq!(s.region, None, "empty is unset");
        assert_eq!(s.ignore_patterns, vec!["*.pt", "*.bin"]);
    }

    #[test]
    fn refuses_what_it_cannot_fetch_by_name() {
        assert_eq!(
            Source::from_vars(vars(&[("STORAGE_URI", "")])).unwrap(),
            None
        );
        let e = Source::from_vars(vars(&[("STORAGE_URI", "hf://tatsu-lab/alpaca")])).unwrap_err();
        assert!(matches!(e, InitError::HuggingFace { .. }), "{e}");
        assert!(e.to_string().contains("s3://"));
        for bad in ["gs://b/p", "s3://", "/data", "cache://a/b"] {
            let e = Source::from_vars(vars(&[("STORAGE_URI", bad)])).unwrap_err();
            assert!(matches!(e, InitError::Scheme { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_map_below_the_prefix_and_stay_inside() {
        assert_eq!(
            relative("digits/train.csv", "digits").as_deref(),
            Some("train.csv")
        );
        assert_eq!(
            relative("digits/a/b.csv", "digits/").as_deref(),
            Some("a/b.csv")
        );
        assert_eq!(
            relative("digits/train.csv", "digits/train.csv").as_deref(),
            Some("train.csv")
        );
        assert_eq!(relative("x/../../etc/passwd", "x").as_deref(), None);
        assert_eq!(relative("x//a", "x").as_deref(), Some("a"));
        assert_eq!(relative("x/a//b", "x").as_deref(), None);
    }

    #[test]
    fn patterns_match_as_fnmatch_does() {
        let set = patterns(&["*.pt".into(), "cache/*".into(), "file?.txt".into()]).unwrap();
        assert!(set.is_match("model/weights.pt"), "* crosses /");
        assert!(set.is_match("cache/a/b"));
        assert!(set.is_match("file1.txt"));
        assert!(!set.is_match("model/config.json"));
        assert!(patterns(&["[".into()]).is_err());
    }
}
