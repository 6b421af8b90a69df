//! S3 through the official AWS SDK for Rust, kept in its own crate so the rest
//! of the workspace never rebuilds it.
//!
//! [`S3Store`] implements [`switchyard_training::ObjectStore`]: it mirrors an
//! `s3://bucket/prefix` into a local cache folder, downloading only objects
//! whose ETag changed since the last time, and uploads models and checkpoints. Credentials, region and endpoint come
//! from the standard AWS chain and variables (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_S3`), so it works against S3, VPC endpoints and emulators;
//! with a custom endpoint, path-style addressing is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use switchyard_training::{DownloadStats, ObjectStore};
use tokio::io::AsyncWriteExt;

pub mod initializer;

/// S3 for channels, models and checkpoints.
pub struct S3Store {
    client: Client,
    cache: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Key (relative to the prefix) to ETag.
    etags: BTreeMap<String, String>,
}

/// One object under a prefix.
struct Listed {
    key: String,
    rel: String,
    etag: String,
    size: u64,
}

impl S3Store {
    /// Every object under `prefix` whose key maps to a safe relative path.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, String> {
        Ok(list_objects(&self.client, bucket, prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rel = relative_key(&o.key, prefix)?.to_string();
                Some(Listed {
                    rel,
                    key: o.key,
                    etag: o.etag,
                    size: o.size,
                })
            })
            .collect())
    }

    /// Builds a client from the environment (the standard AWS configuration chain).
    pub async fn from_env(cache: PathBuf) -> Self {
        let config = aws_config::load_from_env().await;
        let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if config.region().is_none() {
            builder = builder.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        if custom_endpoint {
            builder = builder.force_path_style(true);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            cache,
        }
    }

    /// A store over a client built elsewhere (another region, a test's HTTP client).
    pub fn new(client: Client, cache: PathBuf) -> Self {
        S3Store { client, cache }
    }

    /// Uploads `bytes` to `s3://bucket/key` unless an object is already there
    /// (content-addressed keys make that the same content). True if uploaded.
    pub async fn put_once(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<bool, String> {
        if self.head(bucket, key).await? {
            return Ok(false);
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| format!("cannot upload to s3://{bucket}/{key}: {}", describe(&e)))?;
        Ok(true)
    }

    /// The whole object at `s3://bucket/key`.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("cannot read s3://{bucket}/{key}: {}", describe(&e)))?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| format!("cannot read s3://{bucket}/{key}: {e}"))?;
        Ok(data.into_bytes().to_vec())
    }

    /// Copies the artifact at `s3://bucket/key` to `dest`: the object `key`
    /// as a file, else every object under `key/` as a folder (KFP's layout
    /// for file and directory artifacts). Written beside `dest` first and
    /// renamed, so a reader never sees half an artifact.
    pub async fn download_artifact(
        &self,
        bucket: &str,
        key: &str,
        dest: &Path,
    ) -> Result<(), String> {
        let key = key.trim_end_matches('/');
        let folder = format!("{key}/");
        let objects = self.list(bucket, &folder).await?;
        let single = if objects.is_empty() {
            self.head(bucket, key).await?
        } else {
            false
        };
        if objects.is_empty() && !single {
            return Err(format!("nothing is stored at s3://{bucket}/{key}"));
        }
        let parent = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.partial-{}-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            unique()
        ));
        let fetched = async {
            if single {
                download(&self.client, bucket, key, &tmp).await
            } else {
                for obj in &objects {
                    download(&self.client, bucket, &obj.key, &tmp.join(&obj.rel)).await?;
                }
                Ok(())
            }
        }
        .await;
        if let Err(e) = fetched {
            remove_any(&tmp).await;
            return Err(e);
        }
        if let Err(e) = tokio::fs::rename(&tmp, dest).await {
            remove_any(&tmp).await;
            // Another task staged the same artifact meanwhile.
            if !dest.exists() {
                return Err(format!("cannot write {}: {e}", dest.display()));
            }
        }
        Ok(())
    }

    /// Uploads a file as the object `s3://bucket/key`, or a folder's files as
    /// `key/<relative path>`; objects left there by an earlier upload that
    /// this one did not write are deleted.
    pub async fn upload_artifact(&self, src: &Path, bucket: &str, key: &str) -> Result<(), String> {
        let key = key.trim_end_matches('/');
        let meta = tokio::fs::metadata(src)
            .await
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let mut written = std::collections::BTreeSet::new();
        if meta.is_file() {
            self.put_file(src, bucket, key).await?;
            written.insert(key.to_string());
        } else {
            let mut files = Vec::new();
            collect_files(src, src, &mut files)
                .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
            for (path, rel) in &files {
                let k = format!("{key}/{rel}");
                self.put_file(path, bucket, &k).await?;
                written.insert(k);
            }
        }
        let mut stale: Vec<String> = self
            .list(bucket, &format!("{key}/"))
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !written.contains(k))
            .collect();
        if !written.contains(key) && self.head(bucket, key).await? {
            stale.push(key.to_string());
        }
        for k in stale {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(&k)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot delete the stale object s3://{bucket}/{k}: {}",
                        describe(&e)
                    )
                })?;
        }
        Ok(())
    }

    /// Whether `s3://bucket/key` holds an artifact (the object, or objects under `key/`).
    pub async fn artifact_exists(&self, bucket: &str, key: &str) -> Result<bool, String> {
        let key = key.trim_end_matches('/');
        if self.head(bucket, key).await? {
            return Ok(true);
        }
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{key}/"))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| format!("cannot list s3://{bucket}/{key}/: {}", describe(&e)))?;
        Ok(!page.contents().is_empty())
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<bool, String> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(format!(
                "cannot look up s3://{bucket}/{key}: {}",
                describe(&e)
            )),
        }
    }

    async fn put_file(&self, path: &Path, bucket: &str, key: &str) -> Result<(), String> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot upload to s3://{bucket}/{key}: {}", describe(&e)))?;
        Ok(())
    }

    fn cache_dir(&self, bucket: &str, prefix: &str) -> PathBuf {
        let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(prefix.as_bytes())[..8]);
        self.cache.join(bucket).join(digest)
    }
}

/// One object as a listing gives it.
struct Object {
    key: String,
    etag: String,
    size: u64,
}

/// Every object under `prefix`, every page of the listing.
async fn list_objects(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| format!("cannot list s3://{bucket}/{prefix}: {}", describe(&e)))?;
        out.extend(page.contents().iter().filter_map(|o| {
            Some(Object {
                key: o.key()?.to_string(),
                etag: o.e_tag().unwrap_or_default().to_string(),
                size: o.size().unwrap_or(0).max(0) as u64,
            })
        }));
    }
    Ok(out)
}

/// Removes a file or a folder, whichever `path` is (a half-done download).
async fn remove_any(path: &Path) {
    if tokio::fs::remove_dir_all(path).await.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
}

/// A number that differs between calls in this process (temporary names).
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn describe<E>(e: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("")
        ),
        None => format!(
            "{e}: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    }
}

/// `prefix/` + `a/b.csv` → `a/b.csv`; keys are checked to stay inside the folder.
fn relative_key<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let rel = key.strip_prefix(prefix)?.trim_start_matches('/');
    let safe = !rel.is_empty()
        && !rel.ends_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != ".");
    safe.then_some(rel)
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn download_prefix(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(PathBuf, DownloadStats), String> {
        let dir = self.cache_dir(bucket, prefix);
        let data = dir.join("data");
        tokio::fs::create_dir_all(&data)
            .await
            .map_err(|e| format!("cannot create {}: {e}", data.display()))?;
        let manifest_path = dir.join("manifest.json");
        let mut manifest: Manifest = tokio::fs::read(&manifest_path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut stats = DownloadStats::default();
        let mut seen = BTreeMap::new();
        for obj in self.list(bucket, prefix).await? {
            let target = data.join(&obj.rel);
            seen.insert(obj.rel.clone(), obj.etag.clone());
            if manifest.etags.get(&obj.rel) == Some(&obj.etag) && target.exists() {
                stats.cached += 1;
                continue;
            }
            download(&self.client, bucket, &obj.key, &target).await?;
            stats.downloaded += 1;
            stats.bytes += obj.size;
        }
        if seen.is_empty() {
            return Err(format!("s3://{bucket}/{prefix} has no objects"));
        }
        // Objects deleted upstream leave the cache too.
        for (rel, _) in manifest
            .etags
            .iter()
            .filter(|(k, _)| !seen.contains_key(*k))
        {
            let _ = tokio::fs::remove_file(data.join(rel)).await;
        }
        manifest.etags = seen;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        tokio::fs::write(&manifest_path, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
        Ok((data, stats))
    }

    async fn download_into(
        &self,
        bucket: &str,
        prefix: &str,
        dest: &Path,
    ) -> Result<DownloadStats, String> {
        let mut stats = DownloadStats::default();
        for obj in self.list(bucket, prefix).await? {
            download(&self.client, bucket, &obj.key, &dest.join(&obj.rel)).await?;
            stats.downloaded += 1;
            stats.bytes += obj.size;
        }
        Ok(stats)
    }

    async fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) -> Result<u64, String> {
        let mut files = Vec::new();
        if dir.is_file() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            files.push((dir.to_path_buf(), name.unwrap_or_else(|| "data".into())));
        } else {
            collect_files(dir, dir, &mut files)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        }
        let base = prefix.trim_end_matches('/');
        for (path, rel) in &files {
            let key = if base.is_empty() {
                rel.clone()
            } else {
                format!("{base}/{rel}")
            };
            self.put_file(path, bucket, &key).await?;
        }
        Ok(files.len() as u64)
    }
}

/// Every regular file under `dir` (following symlinked directories once), with
/// its path relative to `root` using `/`.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((path, rel));
        }
    }
    Ok(())
}

async fn download(client: &Client, bucket: &str, key: &str, target: &Path) -> Result<(), String> {
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("cannot download s3://{bucket}/{key}: {}", describe(&e)))?;
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // Beside the target, named after all of it and this download: downloads
    // running at once into one folder (`a.csv`, `a.json`) never share a
    // partial file, nor meet a key that is called like one.
    let mut partial = target.as_os_str().to_owned();
    partial.push(format!(".{}.switchyard-partial", unique()));
    let tmp = PathBuf::from(partial);
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut body = resp.body;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?
    {
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, target)
        .await
        .map_err(|e| format!("cannot write {}: {e}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::relative_key;

    #[test]
    fn keys_stay_inside_the_prefix() {
        assert_eq!(relative_key("train/a.csv", "train"), Some("a.csv"));
        assert_eq!(relative_key("train/x/b.csv", "train/"), Some("x/b.csv"));
        assert_eq!(relative_key("train/../etc/passwd", "train"), None);
        assert_eq!(relative_key("train/dir/", "train"), None);
        assert_eq!(relative_key("other/a", "train"), None);
    }
}
