//! From text to a checked [`TrainingJob`]: parse, apply `--set` overrides,
//! resolve relative paths against the spec file's folder, and refuse anything
//! that would fail later, naming the field.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

use crate::job::{Channel, ChannelSource, TrainingJob};
use crate::spec::{BackendKind, Contract, TrainingJobDoc, TrainingJobSpec};
use crate::JobSpecError;

fn invalid(field: &str, message: impl Into<String>) -> JobSpecError {
    JobSpecError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Applies `path.to.field=value` to the raw document. The value is read as YAML
/// (so `3` is a number, `true` a boolean, `[1, 2]` a list).
pub fn apply_set(doc: &mut Value, assignment: &str) -> Result<(), JobSpecError> {
    let (path, raw) = assignment.split_once('=').ok_or_else(|| {
        invalid(
            "--set",
            format!("'{assignment}' is not PATH=VALUE (e.g. spec.hyperparameters.epochs=3)"),
        )
    })?;
    let value: Value = if raw.is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid("--set", format!("'{path}' is not a field path")));
    }
    let mut cur = doc;
    for (i, part) in parts.iter().enumerate() {
        let obj = cur.as_object_mut().ok_or_else(|| {
            invalid(
                &parts[..i].join("."),
                "is not a mapping, cannot --set inside it",
            )
        })?;
        if i == parts.len() - 1 {
            obj.insert(part.to_string(), value);
            return Ok(());
        }
        cur = obj
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Parses, overrides and validates a TrainingJob. `base` is the folder relative
/// paths are taken from (the spec file's folder).
pub fn load(
    text: &str,
    base: &Path,
    sets: &[String],
    backend: Option<&str>,
) -> Result<TrainingJob, JobSpecError> {
    let mut doc: Value =
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
            .map_err(|e| JobSpecError::Yaml(e.to_string()))?;
    if !doc.is_object() {
        return Err(invalid(
            ".",
            "expected a TrainingJob mapping with apiVersion, kind, metadata and spec",
        ));
    }
    for s in sets {
        apply_set(&mut doc, s)?;
    }
    if let Some(b) = backend {
        apply_set(&mut doc, &format!("spec.backend={b}"))?;
        // `--backend B` overrides an `auto` file's choice, placement and all.
        if b != "auto" {
            if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("placement");
            }
        }
    }
    let doc: TrainingJobDoc =
        serde_path_to_error::deserialize(doc).map_err(|e| JobSpecError::Invalid {
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    check(doc, base)
}

/// `p` against `base`, without `.` components (paths are shown in messages).
fn absolute(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn check_name(name: &str) -> Result<(), JobSpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "metadata.name",
            format!("'{name}' must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit (it names Pods and SageMaker jobs)"),
        ))
    }
}

fn check(doc: TrainingJobDoc, base: &Path) -> Result<TrainingJob, JobSpecError> {
    if doc.api_version != crate::API_VERSION {
        return Err(invalid(
            "apiVersion",
            format!(
                "'{}' is not supported; use {}",
                doc.api_version,
                crate::API_VERSION
            ),
        ));
    }
    if doc.kind != "TrainingJob" {
        return Err(invalid(
            "kind",
            format!("'{}' is not supported; use TrainingJob", doc.kind),
        ));
    }
    check_name(&doc.metadata.name)?;
    let mut spec = doc.spec;
    check_numbers(&spec)?;
    check_code(&mut spec, base)?;
    let channels = check_channels(&mut spec, base)?;
    check_locations(&mut spec, base)?;
    let metrics = check_metrics(&spec)?;
    check_contract(&spec)?;
    check_placement(&spec)?;
    for k in spec.env.keys() {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(
                &format!("spec.env.{k}"),
                "is not a valid variable name",
            ));
        }
    }
    Ok(TrainingJob {
        name: doc.metadata.name,
        labels: doc.metadata.labels,
        spec,
        channels,
        metrics,
    })
}

/// Counts, resources and times.
fn check_numbers(spec: &TrainingJobSpec) -> Result<(), JobSpecError> {
    if spec.nodes == 0 {
        return Err(invalid("spec.nodes", "must be at least 1"));
    }
    if spec.procs_per_node == 0 {
        return Err(invalid("spec.procsPerNode", "must be at least 1"));
    }
    if !(spec.resources.cpu > 0.0 && spec.resources.cpu.is_finite()) {
        return Err(invalid(
            "spec.resources.cpu",
            "must be a positive number of CPUs",
        ));
    }
    if let Some(m) = &spec.resources.memory {
        parse_quantity(m).ok_or_else(|| {
            invalid(
                "spec.resources.memory",
                format!("'{m}' is not a quantity such as 2Gi or 512Mi"),
            )
        })?;
    }
    if spec.max_runtime_seconds == Some(0) {
        return Err(invalid("spec.maxRuntimeSeconds", "must be positive"));
    }
    if spec.use_spot_instances && spec.max_wait_seconds.is_none() {
        return Err(invalid(
            "spec.maxWaitSeconds",
            "is required with useSpotInstances",
        ));
    }
    if let (Some(wait), Some(run)) = (spec.max_wait_seconds, spec.max_runtime_seconds) {
        if wait < run {
            return Err(invalid(
                "spec.maxWaitSeconds",
                "must be at least maxRuntimeSeconds",
            ));
        }
    }
    if let Some(mode) = &spec.input_mode {
        if !matches!(mode.as_str(), "File" | "FastFile" | "Pipe") {
            return Err(invalid(
                "spec.inputMode",
                format!("'{mode}' must be File, FastFile or Pipe"),
            ));
        }
    }

    Ok(())
}

/// The code: a script in a shipped directory, or a command; an image for
/// every backend but the local one.
fn check_code(spec: &mut TrainingJobSpec, base: &Path) -> Result<(), JobSpecError> {
    // Empty means not given.
    spec.entry_point = spec.entry_point.take().filter(|e| !e.is_empty());
    spec.source_dir = spec.source_dir.take().filter(|d| !d.is_empty());
    if let Some(dir) = &spec.source_dir {
        let abs = absolute(base, dir);
        if !abs.is_dir() {
            return Err(invalid(
                "spec.sourceDir",
                format!("{} is not a directory", abs.display()),
            ));
        }
        spec.source_dir = Some(abs.to_string_lossy().into_owned());
    }
    match (&spec.entry_point, &spec.command) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.entryPoint",
                "give either entryPoint or command, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "spec.entryPoint",
                "missing: name the script to run (entryPoint: train.py) or give a command",
            ))
        }
        (Some(ep), None) => {
            let dir = spec.source_dir.as_ref().ok_or_else(|| {
                invalid(
                    "spec.sourceDir",
                    "is required with entryPoint (the folder that holds the script)",
                )
            })?;
            if Path::new(ep).is_absolute() || ep.split('/').any(|c| c == "..") {
                return Err(invalid(
                    "spec.entryPoint",
                    format!("'{ep}' must be a path inside sourceDir"),
                ));
            }
            if !Path::new(dir).join(ep).is_file() {
                return Err(invalid(
                    "spec.entryPoint",
                    format!("'{ep}' does not exist in sourceDir {dir}"),
                ));
            }
        }
        (None, Some(cmd)) => {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(invalid("spec.command", "must not be empty"));
            }
        }
    }
    // An `auto` job's image is each candidate's to need (placement says so).
    if !matches!(spec.backend, BackendKind::Local | BackendKind::Auto)
        && spec.image.as_deref().unwrap_or("").is_empty()
    {
        return Err(invalid(
            "spec.image",
            format!("is required for the {} backend", spec.backend.as_str()),
        ));
    }

    Ok(())
}

/// Each channel's name and source; local ones are made absolute.
fn check_channels(spec: &mut TrainingJobSpec, base: &Path) -> Result<Vec<Channel>, JobSpecError> {
    let mut channels = Vec::new();
    for (name, uri) in &spec.channels {
        let field = format!("spec.channels.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                &field,
                "channel names are letters, digits, '_' and '-'",
            ));
        }
        channels.push(Channel {
            name: name.clone(),
            uri: uri.clone(),
            source: parse_channel(&field, uri, base)?,
        });
    }
    for ch in &channels {
        if let ChannelSource::Local(p) = &ch.source {
            spec.channels
                .insert(ch.name.clone(), p.to_string_lossy().into_owned());
        }
    }
    Ok(channels)
}

/// `placement` belongs to `backend: auto`, and names real backends once each.
fn check_placement(spec: &TrainingJobSpec) -> Result<(), JobSpecError> {
    let Some(p) = &spec.placement else {
        return Ok(());
    };
    if spec.backend != BackendKind::Auto {
        return Err(invalid(
            "spec.placement",
            format!(
                "is read with backend: auto (this job names backend {})",
                spec.backend.as_str()
            ),
        ));
    }
    for (i, c) in p.candidates.iter().enumerate() {
        if *c == BackendKind::Auto || p.candidates[..i].contains(c) {
            return Err(invalid(
                "spec.placement.candidates",
                format!("'{}' is not a backend to place on, or is named twice (use local, kubernetes, sagemaker)", c.as_str()),
            ));
        }
    }
    if p.max_cost_usd.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        return Err(invalid(
            "spec.placement.maxCostUSD",
            "must be a positive number of dollars",
        ));
    }
    if p.max_start_seconds == Some(0) {
        return Err(invalid(
            "spec.placement.maxStartSeconds",
            "must be positive",
        ));
    }
    Ok(())
}

/// What a ModelTrainer-style job cannot be: its launcher exports every
/// channel and hyperparameter as a shell variable, keeps two channel names
/// for itself, runs a script only through Python (or `sh` on one process),
/// and starts a command once per host.
fn check_contract(spec: &TrainingJobSpec) -> Result<(), JobSpecError> {
    if spec.contract != Contract::ModelTrainer {
        if spec.requirements.is_some() {
            return Err(invalid(
                "spec.requirements",
                "is read with contract: modeltrainer (the toolkit's containers install a requirements.txt in sourceDir themselves)",
            ));
        }
        return Ok(());
    }
    let shell_name = |n: &str| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for name in spec.channels.keys() {
        if [
            crate::modeltrainer::CODE_CHANNEL,
            crate::modeltrainer::DRIVERS_CHANNEL,
        ]
        .contains(&name.as_str())
        {
            return Err(invalid(
                &format!("spec.channels.{name}"),
                "is the name of a channel ModelTrainer keeps for itself (code, sm_drivers); rename the channel",
            ));
        }
        if !shell_name(name) {
            return Err(invalid(
                &format!("spec.channels.{name}"),
                "under contract: modeltrainer a channel name is letters, digits and '_' (its launcher exports SM_CHANNEL_<NAME>, which a shell refuses with '-')",
            ));
        }
    }
    for (name, value) in &spec.hyperparameters {
        let field = format!("spec.hyperparameters.{name}");
        if name.is_empty() || !shell_name(&name.replace('-', "_")) {
            return Err(invalid(
                &field,
                "under contract: modeltrainer a hyperparameter name is letters, digits, '_' and '-' (its launcher exports SM_HP_<NAME>)",
            ));
        }
        if let Some(why) = crate::modeltrainer::unrepresentable(value) {
            return Err(invalid(&field, why));
        }
    }
    let world = spec.nodes * spec.procs_per_node;
    if let Some(ep) = &spec.entry_point {
        if !(ep.ends_with(".py") || ep.ends_with(".sh")) {
            return Err(invalid(
                "spec.entryPoint",
                format!("'{ep}': ModelTrainer runs .py and .sh scripts only"),
            ));
        }
        if ep.ends_with(".sh") && world > 1 {
            return Err(invalid(
                "spec.entryPoint",
                format!("'{ep}': a job of more than one process runs its script under torchrun, which needs a .py script"),
            ));
        }
    }
    if spec.command.is_some() && spec.procs_per_node > 1 {
        return Err(invalid(
            "spec.procsPerNode",
            "under contract: modeltrainer a command runs once per host (ModelTrainer's SourceCode.command); use entryPoint for more processes per host",
        ));
    }
    if let Some(req) = &spec.requirements {
        let dir = spec.source_dir.as_deref().ok_or_else(|| {
            invalid(
                "spec.sourceDir",
                "is required with requirements (the file is in sourceDir)",
            )
        })?;
        if Path::new(req).is_absolute()
            || req.split('/').any(|c| c == "..")
            || !Path::new(dir).join(req).is_file()
        {
            return Err(invalid(
                "spec.requirements",
                format!("'{req}' is not a file in sourceDir {dir}"),
            ));
        }
    }
    Ok(())
}

/// `output` and `checkpoint`: a local path (made absolute) or `s3://`.
fn check_locations(spec: &mut TrainingJobSpec, base: &Path) -> Result<(), JobSpecError> {
    for (field, value) in [
        ("spec.output", &mut spec.output),
        ("spec.checkpoint", &mut spec.checkpoint),
    ] {
        if let Some(v) = value {
            if v.contains("://") {
                if !v.starts_with("s3://") {
                    return Err(invalid(
                        field,
                        format!("'{v}': use a local path or an s3:// URI"),
                    ));
                }
            } else {
                *v = absolute(base, v).to_string_lossy().into_owned();
            }
        }
    }
    Ok(())
}

/// Each metric's regex, compiled, with the capture group around the number.
fn check_metrics(spec: &TrainingJobSpec) -> Result<Vec<(String, Regex)>, JobSpecError> {
    let mut metrics = Vec::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let re = Regex::new(&m.regex)
            .map_err(|e| invalid(&format!("spec.metrics[{i}].regex"), e.to_string()))?;
        if re.captures_len() < 2 {
            return Err(invalid(
                &format!("spec.metrics[{i}].regex"),
                "needs a capture group around the number, e.g. 'loss=([0-9.]+)'",
            ));
        }
        metrics.push((m.name.clone(), re));
    }
    Ok(metrics)
}

fn parse_channel(field: &str, uri: &str, base: &Path) -> Result<ChannelSource, JobSpecError> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(field, format!("'{uri}' has no bucket")));
        }
        return Ok(ChannelSource::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        });
    }
    if let Some(rest) = uri.strip_prefix("efs://") {
        let (fs, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !fs.starts_with("fs-") {
            return Err(invalid(
                field,
                format!("'{uri}': expected efs://fs-<id>/path"),
            ));
        }
        return Ok(ChannelSource::Efs {
            file_system_id: fs.into(),
            path: format!("/{path}"),
        });
    }
    if uri.contains("://") {
        return Err(invalid(
            field,
            format!("'{uri}': channels are local paths, s3:// or efs:// URIs"),
        ));
    }
    let p = absolute(base, uri);
    if !p.exists() {
        return Err(invalid(field, format!("{} does not exist", p.display())));
    }
    Ok(ChannelSource::Local(p))
}

/// A Kubernetes quantity as a number (`500m` → 0.5, `2Gi` → 2147483648, `1k` → 1000).
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let units: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0f64.powi(4)),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.trim().parse::<f64>().ok().map(|v| v * mult);
        }
    }
    q.parse::<f64>().ok()
}

/// Bytes in a Kubernetes quantity (`2Gi`, `500M`, `1024`); negative is no quantity.
pub fn parse_quantity(q: &str) -> Option<u64> {
    quantity(q)
        .filter(|v| *v >= 0.0 && v.is_finite())
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("2Gi"), Some(2147483648.0));
        assert_eq!(quantity("1k"), Some(1000.0));
        assert_eq!(quantity("x"), None);
        assert_eq!(parse_quantity("512Mi"), Some(512 << 20));
        assert_eq!(parse_quantity("-1Gi"), None);
    }
}
