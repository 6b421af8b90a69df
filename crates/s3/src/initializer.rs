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
    #[error("STORAGE_URI {uri}: Switchyard's initializer fetches s3:// only (it has no Hugging Face client); copy the files to S3 and give s3://bucket/prefix, or use a runtime with an initializer image that reaches Hugging Face")]
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
#[derive(Clone, Default, PartialEq)]
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

/// The secret key never reaches a log.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("region", &self.region)
            .field("role_arn", &self.role_arn)
            .field("ignore_patterns", &self.ignore_patterns)
            .finish()
    }
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
        if uri.starts_with("hf://") {
            return Err(InitError::HuggingFace { uri });
        }
        let Some((bucket, prefix)) = switchyard_training::parse_s3_uri(&uri) else {
            return Err(InitError::Scheme { uri });
        };
        Ok(Some(Source {
            bucket,
            prefix,
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
        // ENDPOINT is S3's only: assuming ROLE_ARN still asks STS itself.
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if let Some(e) = &self.endpoint {
            builder = builder.endpoint_url(e).force_path_style(true);
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
    for obj in crate::list_objects(&client, bucket, prefix)
        .await
        .map_err(InitError::S3)?
    {
        let key = obj.key.as_str();
        if key.ends_with('/') {
            continue;
        }
        if ignore.is_match(key) {
            tracing::info!(key, "ignored (IGNORE_PATTERNS)");
            done.ignored.push(obj.key);
            continue;
        }
        let rel = relative(key, prefix).ok_or_else(|| {
            InitError::S3(format!(
                "s3://{bucket}/{key}: the key does not map to a path inside {}",
                dest.display()
            ))
        })?;
        wanted.push((obj.key.clone(), dest.join(rel), obj.size));
    }
    let wanted = one_per_file(wanted, dest)?;
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
    if key == prefix {
        let name = key.rsplit('/').next()?;
        return crate::relative_key(name, "").map(String::from);
    }
    crate::relative_key(key, prefix).map(String::from)
}

/// Keys that land on the same file (`d/a` and `da` under `d`) are written
/// once, the last listed winning as in Trainer's one-by-one download; a
/// file that is also another's folder (`a` and `a/b`) is refused.
fn one_per_file(
    wanted: Vec<(String, PathBuf, u64)>,
    dest: &Path,
) -> Result<Vec<(String, PathBuf, u64)>, InitError> {
    let mut last = std::collections::HashMap::new();
    for (i, (_, target, _)) in wanted.iter().enumerate() {
        last.insert(target.clone(), i);
    }
    let kept: Vec<(String, PathBuf, u64)> = wanted
        .into_iter()
        .enumerate()
        .filter(|(i, (_, target, _))| last.get(target) == Some(i))
        .map(|(_, w)| w)
        .collect();
    for (key, target, _) in &kept {
        let folder_too = target
            .ancestors()
            .skip(1)
            .take_while(|a| *a != dest)
            .find(|a| last.contains_key(*a));
        if let Some(a) = folder_too {
            let other = kept
                .iter()
                .find(|(_, t, _)| t == a)
                .map(|(k, _, _)| k.as_str())
                .unwrap_or_default();
            return Err(InitError::S3(format!(
                "keys {other:?} and {key:?} need {} as a file and as a folder: rename one",
                a.display()
            )));
        }
    }
    Ok(kept)
}

/// Python's `fnmatch` patterns, as one regular expression: `*` (which
/// crosses `/`), `?`, `[seq]`, `[!seq]`; everything else literal, an
/// unclosed `[` too.
fn patterns(raw: &[String]) -> Result<regex::Regex, InitError> {
    let alternatives: Vec<String> = raw.iter().map(|p| fnmatch_regex(p)).collect();
    let joined = if alternatives.is_empty() {
        // Matches nothing.
        r"[^\s\S]".to_string()
    } else {
        alternatives.join("|")
    };
    regex::Regex::new(&format!("^(?s:{joined})$")).map_err(|e| InitError::Pattern {
        pattern: raw.join(","),
        why: e.to_string(),
    })
}

/// One pattern as `fnmatch.translate` reads it.
fn fnmatch_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("(?:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                // The closing `]`: a `!`, then a `]`, right after `[` belong to the set.
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                    continue;
                }
                let set: String = chars[i..j].iter().collect();
                i = j + 1;
                let (negated, body) = match set.strip_prefix('!') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, set),
                };
                out.push_str(if negated { "[^" } else { "[" });
                for ch in body.chars() {
                    // Literal in a set (the regex crate reads these as operators).
                    if matches!(ch, '\\' | '[' | ']' | '&' | '~' | '^') {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push(']');
            }
            _ => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push(')');
    out
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
        assert_eq!(relative("..", "..").as_deref(), None);
    }

    #[test]
    fn patterns_match_as_fnmatch_does() {
        let set = patterns(&["*.pt".into(), "cache/*".into(), "file?.txt".into()]).unwrap();
        assert!(set.is_match("model/weights.pt"), "* crosses /");
        assert!(set.is_match("cache/a/b"));
        assert!(set.is_match("file1.txt"));
        assert!(!set.is_match("model/config.json"));
        assert!(!set.is_match("x/cache/a"), "anchored at the start");
        // What fnmatch reads literally: an unclosed `[`, braces, regex characters.
        let odd = patterns(&["[".into(), "{a,b}".into(), "a+b(1).txt".into()]).unwrap();
        assert!(odd.is_match("["));
        assert!(odd.is_match("{a,b}") && !odd.is_match("a"));
        assert!(odd.is_match("a+b(1).txt"));
        let sets = patterns(&[
            "data[0-9].csv".into(),
            "[!a]x".into(),
            "[]]y".into(),
            "[&~]z".into(),
        ])
        .unwrap();
        assert!(sets.is_match("data7.csv") && !sets.is_match("dataX.csv"));
        assert!(sets.is_match("bx") && !sets.is_match("ax"));
        assert!(sets.is_match("]y"));
        assert!(sets.is_match("&z") && sets.is_match("~z"));
        assert!(!patterns(&[]).unwrap().is_match("anything"));
    }

    #[test]
    fn keys_on_one_file_are_written_once_and_a_file_folder_clash_is_refused() {
        let dest = Path::new("/ws/dataset");
        let w = |k: &str, rel: &str| (k.to_string(), dest.join(rel), 1u64);
        let kept = one_per_file(vec![w("d/a", "a"), w("d/b", "b"), w("da", "a")], dest).unwrap();
        let keys: Vec<&str> = kept.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["d/b", "da"], "the last listed wins");
        let e = one_per_file(vec![w("d/a", "a"), w("d/a/b", "a/b")], dest).unwrap_err();
        assert!(e.to_string().contains("as a file and as a folder"), "{e}");
    }

    #[test]
    fn the_secret_key_is_not_in_debug_output() {
        let s = Source {
            secret_access_key: Some("hunter2".into()),
            ..Source::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
