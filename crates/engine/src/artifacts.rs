//! Artifacts under an object-store pipeline root (`s3://bucket/prefix`).
//!
//! KFP's launcher downloads a task's input artifacts to the paths the
//! component reads (`s3://b/k` is `/s3/b/k`) and uploads its outputs after it
//! ran. Switchyard does the same around every task, on the engine's side, into
//! the run's staging folder (`<run folder>/.s3/b/k`, see [`Staging`]); the
//! component sees the same `s3://` URIs as on a KFP cluster. The engine talks
//! to storage only through [`ArtifactStore`]; the binary plugs in the AWS SDK.

use std::path::{Path, PathBuf};

/// Object storage for artifacts, by URI (`s3://bucket/key`).
#[async_trait::async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Copies the artifact at `uri` to `dest`: the object `key` as a file, or
    /// every object under `key/` as a folder. Nothing there is an error.
    async fn download(&self, uri: &str, dest: &Path) -> Result<(), String>;
    /// Uploads `src` to `uri` (a file as the object itself, a folder's files
    /// as `key/<relative path>`), replacing what was there.
    async fn upload(&self, src: &Path, uri: &str) -> Result<(), String>;
    /// Whether anything is stored at `uri` (the object or a folder under it).
    async fn exists(&self, uri: &str) -> Result<bool, String>;
}

/// What a pipeline root names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineRoot {
    /// A folder on this machine (or on the claim the task pods share).
    Local(PathBuf),
    /// `s3://bucket[/prefix]`: artifacts go to S3, staged locally around each task.
    S3(String),
}

impl PipelineRoot {
    /// Reads a `--pipeline-root`, a run's `pipeline_root` or a pipeline's
    /// `defaultPipelineRoot`: `s3://bucket[/prefix]` or a local path; other
    /// schemes are refused with what is supported.
    pub fn parse(text: &str) -> Result<PipelineRoot, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("s3://") {
            let rest = rest.trim_end_matches('/');
            let bucket = rest.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(format!(
                    "pipeline root '{text}': name a bucket (s3://bucket or s3://bucket/prefix)"
                ));
            }
            if rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(format!(
                    "pipeline root '{text}': empty, '.' or '..' parts are not allowed in an S3 key prefix"
                ));
            }
            return Ok(PipelineRoot::S3(format!("s3://{rest}")));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "pipeline root '{text}': {scheme}:// is not supported; use a local folder or s3://bucket/prefix"
            ));
        }
        if text.is_empty() {
            return Err("the pipeline root is empty".into());
        }
        Ok(PipelineRoot::Local(PathBuf::from(text)))
    }

    /// The local folder the run's tasks work in and its remote root, if any:
    /// a remote root's tasks work in `work`.
    pub fn into_parts(self, work: PathBuf) -> (PathBuf, Option<String>) {
        match self {
            PipelineRoot::Local(dir) => (dir, None),
            PipelineRoot::S3(uri) => (work, Some(uri)),
        }
    }
}

/// Refuses a remote URI whose key could leave the staging folder when mapped
/// to a path (`..`, `.` or empty parts, as in `s3://b/../../etc`).
pub fn check_remote(uri: &str) -> Result<(), String> {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    if rest
        .trim_end_matches('/')
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "artifact URI '{uri}' has an empty, '.' or '..' part; such keys are refused"
        ));
    }
    Ok(())
}

/// True for the URIs an [`ArtifactStore`] holds.
pub fn is_remote(uri: &str) -> bool {
    uri.starts_with("s3://")
}

/// The local path of `uri` for a task (such as the training-job step): under
/// the staging folder the engine gave it in [`S3_MOUNT_ENV`] (`s3_mount`: the
/// task's, read from its environment), else KFP's own mapping.
pub fn path_in_task(uri: &str, s3_mount: Option<&str>) -> String {
    match s3_mount {
        Some(mount) if !mount.is_empty() => Staging {
            dir: PathBuf::from(mount),
            hook_dir: PathBuf::new(),
        }
        .local_path(uri),
        _ => crate::io::uri_to_path(uri),
    }
}

/// Where a run's tasks see remote artifacts: `s3://b/k` is `<dir>/b/k`, the
/// run's stand-in for KFP's `/s3/` mount. Components that use kfp's SDK get
/// the same mapping through a small startup hook ([`Staging::python_env`]).
#[derive(Debug, Clone, Default)]
pub struct Staging {
    dir: PathBuf,
    hook_dir: PathBuf,
}

/// The environment variable the Python hook reads: the folder that stands in
/// for `/s3/`.
pub const S3_MOUNT_ENV: &str = "SWITCHYARD_S3_MOUNT";

/// Maps kfp's `/s3/` mount prefix to [`S3_MOUNT_ENV`] when kfp's artifact
/// module is imported; chains to the next `sitecustomize` on the path.
const PYTHON_HOOK: &str = include_str!("artifacts_hook.py");

impl Staging {
    /// The staging of the run whose folder is `run_dir`.
    pub fn new(run_dir: &Path) -> Staging {
        Staging {
            dir: run_dir.join(".s3"),
            hook_dir: run_dir.join(".switchyard-python"),
        }
    }

    /// The local path a component reads or writes for `uri`.
    pub fn local_path(&self, uri: &str) -> String {
        match uri.strip_prefix("s3://") {
            Some(rest) => self.dir.join(rest).to_string_lossy().into_owned(),
            None => crate::io::uri_to_path(uri),
        }
    }

    /// The environment a task needs so that kfp's SDK maps `s3://` URIs to
    /// this staging folder (`PYTHONPATH` keeps what the container set after
    /// the hook). Writes the hook the first time.
    pub fn python_env(
        &self,
        container_pythonpath: Option<&str>,
    ) -> Result<[(String, String); 2], String> {
        let hook = self.hook_dir.join("sitecustomize.py");
        if std::fs::read_to_string(&hook).ok().as_deref() != Some(PYTHON_HOOK) {
            std::fs::create_dir_all(&self.hook_dir)
                .and_then(|_| std::fs::write(&hook, PYTHON_HOOK))
                .map_err(|e| format!("cannot write {}: {e}", hook.display()))?;
        }
        let mut path = self.hook_dir.to_string_lossy().into_owned();
        if let Some(p) = container_pythonpath.filter(|p| !p.is_empty()) {
            path = format!("{path}:{p}");
        }
        Ok([
            ("PYTHONPATH".into(), path),
            (
                S3_MOUNT_ENV.into(),
                format!("{}/", self.dir.to_string_lossy()),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_local_folders_or_s3() {
        assert_eq!(
            PipelineRoot::parse("s3://bucket/a/b/").unwrap(),
            PipelineRoot::S3("s3://bucket/a/b".into())
        );
        assert_eq!(
            PipelineRoot::parse("s3://bucket").unwrap(),
            PipelineRoot::S3("s3://bucket".into())
        );
        assert_eq!(
            PipelineRoot::parse("/tmp/x").unwrap(),
            PipelineRoot::Local("/tmp/x".into())
        );
        let gs = PipelineRoot::parse("gs://b/p").unwrap_err();
        assert!(gs.contains("gs:// is not supported"), "{gs}");
        assert!(PipelineRoot::parse("s3://")
            .unwrap_err()
            .contains("name a bucket"));
        assert!(PipelineRoot::parse("s3://b/../x")
            .unwrap_err()
            .contains("'..'"));
    }

    #[test]
    fn keys_that_would_leave_the_staging_folder_are_refused() {
        assert!(check_remote("s3://b/k/model").is_ok());
        assert!(check_remote("s3://b/k/dir/").is_ok());
        for bad in [
            "s3://b/../../etc/passwd",
            "s3://b/./k",
            "s3://b//k",
            "s3://",
        ] {
            assert!(check_remote(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_uris_map_into_the_runs_staging_folder() {
        let s = Staging::new(Path::new("/data/p/run-1"));
        assert_eq!(
            s.local_path("s3://b/root/p/run-1/train/model"),
            "/data/p/run-1/.s3/b/root/p/run-1/train/model"
        );
        assert_eq!(s.local_path("/local/x"), "/local/x");
        assert_eq!(s.local_path("file:///local/x"), "/local/x");
    }

    #[test]
    fn the_python_hook_keeps_the_containers_pythonpath() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::new(dir.path());
        let [(k, v), (mk, mv)] = s.python_env(Some("/app/lib")).unwrap();
        assert_eq!(k, "PYTHONPATH");
        assert!(v.ends_with(".switchyard-python:/app/lib"), "{v}");
        assert_eq!(mk, S3_MOUNT_ENV);
        assert!(mv.ends_with("/.s3/"), "{mv}");
        assert!(dir
            .path()
            .join(".switchyard-python/sitecustomize.py")
            .exists());
    }
}
