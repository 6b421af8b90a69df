//! Managed virtual environments for KFP Python components.
//!
//! The SDK compiles a lightweight component to
//! `sh -c "<pip install kfp==X ...> && \"$0\" \"$@\"" sh -ec <launcher> <module> args...`.
//! We keep the pip lines as the recipe of an environment, build that environment
//! once (keyed by interpreter and recipe), and run only the part after the
//! preamble with the environment's `bin` first on PATH. A second run with the
//! same recipe reuses the environment and installs nothing.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use switchyard_backend::LogSink;

use crate::LocalConfig;

/// A recognised KFP Python component.
#[derive(Debug, Clone, PartialEq)]
pub struct KfpPythonComponent {
    /// Each `pip install` of the preamble, as its arguments (options and requirements).
    pub pip_installs: Vec<Vec<String>>,
    /// The command to run once the environment exists.
    pub program_argv: Vec<String>,
}

const DROP_OPTS: &[&str] = &["--quiet", "-q", "--no-warn-script-location", "--user"];

impl KfpPythonComponent {
    /// Recognises the SDK's preamble; anything else is not touched.
    pub fn detect(argv: &[String]) -> Option<Self> {
        if argv.len() < 4 || argv[0] != "sh" || argv[1] != "-c" {
            return None;
        }
        let script = argv[2].trim_end();
        if !script.contains("pip install") || !script.ends_with("\"$0\" \"$@\"") {
            return None;
        }
        let mut installs = Vec::new();
        for segment in script.split("&&") {
            let Some(at) = segment.find("pip install") else {
                continue;
            };
            let words = shlex::split(&segment[at + "pip install".len()..])?;
            let args: Vec<String> = words
                .into_iter()
                .filter(|w| !DROP_OPTS.contains(&w.as_str()))
                .collect();
            if !args.is_empty() {
                installs.push(args);
            }
        }
        Some(KfpPythonComponent {
            pip_installs: installs,
            program_argv: argv[3..].to_vec(),
        })
    }

    /// The cache key: interpreter plus the exact install recipe.
    pub fn key(&self, python: &str) -> String {
        let mut h = Sha256::new();
        h.update(python.as_bytes());
        for install in &self.pip_installs {
            h.update(b"\x00install");
            for a in install {
                h.update(b"\x00");
                h.update(a.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..12])
    }
}

fn run_logged(cmd: &mut Command, what: &str, logs: &LogSink) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    for line in text
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        logs(line);
    }
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        text.lines().last().unwrap_or("").trim()
    ))
}

/// Returns the `bin` directory of the environment for this component, creating it
/// under a file lock if it does not exist yet (so concurrent tasks and processes
/// build it once).
pub async fn ensure(
    config: &LocalConfig,
    comp: &KfpPythonComponent,
    logs: LogSink,
) -> Result<PathBuf, String> {
    let (config, comp) = (config.clone(), comp.clone());
    tokio::task::spawn_blocking(move || ensure_blocking(&config, &comp, &logs))
        .await
        .map_err(|e| format!("environment setup panicked: {e}"))?
}

fn ensure_blocking(
    config: &LocalConfig,
    comp: &KfpPythonComponent,
    logs: &LogSink,
) -> Result<PathBuf, String> {
    let key = comp.key(&config.python);
    let dir = config.venv_dir.join(&key);
    let marker = dir.join(".switchyard-complete");
    let bin = dir.join("bin");
    if marker.exists() {
        return Ok(bin);
    }
    fs::create_dir_all(&config.venv_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.venv_dir.display()))?;
    let lock_path = config.venv_dir.join(format!("{key}.lock"));
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if marker.exists() {
        return Ok(bin);
    }
    build(config, comp, &dir, logs).inspect_err(|_| {
        let _ = fs::remove_dir_all(&dir);
    })?;
    fs::write(
        &marker,
        comp.pip_installs
            .iter()
            .map(|i| i.join(" "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(bin)
}

fn build(
    config: &LocalConfig,
    comp: &KfpPythonComponent,
    dir: &Path,
    logs: &LogSink,
) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot clear half-built environment {}: {e}", dir.display()))?;
    }
    logs(&format!(
        "[switchyard] creating Python environment {} (once per package set)",
        dir.display()
    ));
    if let Some(uv) = &config.uv {
        match build_with_uv(uv, config, comp, dir, logs) {
            Ok(()) => return Ok(()),
            Err(e) => {
                logs(&format!(
                    "[switchyard] uv could not build it ({e}); building it with pip"
                ));
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
    build_with_pip(config, comp, dir, logs)
}

/// The same recipe through `uv` (a PyPI package, one static binary): the
/// environment is the same (pip seeded in it, as `python -m venv` does), the
/// resolution and downloads several times faster.
fn build_with_uv(
    uv: &Path,
    config: &LocalConfig,
    comp: &KfpPythonComponent,
    dir: &Path,
    logs: &LogSink,
) -> Result<(), String> {
    let mut create = Command::new(uv);
    create
        .args(["venv", "--quiet", "--seed", "--python", &config.python])
        .arg(dir);
    let install = |py: &Path| {
        let mut c = Command::new(uv);
        c.args(["pip", "install", "--quiet", "--python"]).arg(py);
        c
    };
    build_with("uv", create, install, comp, dir, logs)
}

fn build_with_pip(
    config: &LocalConfig,
    comp: &KfpPythonComponent,
    dir: &Path,
    logs: &LogSink,
) -> Result<(), String> {
    let mut create = Command::new(&config.python);
    create.args(["-m", "venv"]).arg(dir);
    let install = |py: &Path| {
        let mut c = Command::new(py);
        c.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        c
    };
    build_with("pip", create, install, comp, dir, logs)
}

/// Creates the environment, then runs each `pip install` of the recipe in it
/// (`install` gives the command for the environment's interpreter).
fn build_with(
    tool: &str,
    mut create: Command,
    install: impl Fn(&Path) -> Command,
    comp: &KfpPythonComponent,
    dir: &Path,
    logs: &LogSink,
) -> Result<(), String> {
    run_logged(
        &mut create,
        &format!("creating a virtual environment ({tool})"),
        logs,
    )?;
    let py = dir.join("bin").join("python");
    for args in &comp.pip_installs {
        let label = if tool == "pip" { "pip" } else { "uv pip" };
        logs(&format!("[switchyard] {label} install {}", args.join(" ")));
        run_logged(
            install(&py).args(args),
            &format!("installing the component's packages ({tool})"),
            logs,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_sdk_preamble() {
        let script = "\nif ! [ -x \"$(command -v pip)\" ]; then\n    python3 -m ensurepip\nfi\n\nPIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet --no-warn-script-location 'kfp==2.17.3' '--no-deps' 'typing-extensions>=3.7.4,<5; python_version<\"3.9\"'  &&  python3 -m pip install --quiet --no-warn-script-location 'numpy' && \"$0\" \"$@\"\n";
        let argv: Vec<String> = [
            "sh",
            "-c",
            script,
            "sh",
            "-ec",
            "prog",
            "src",
            "--executor_input",
            "{}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = KfpPythonComponent::detect(&argv).unwrap();
        assert_eq!(
            c.pip_installs,
            vec![
                vec![
                    "kfp==2.17.3".to_string(),
                    "--no-deps".into(),
                    "typing-extensions>=3.7.4,<5; python_version<\"3.9\"".into()
                ],
                vec!["numpy".to_string()],
            ]
        );
        assert_eq!(c.program_argv[0], "sh");
        assert_eq!(c.program_argv.len(), 6);
        assert_ne!(
            c.key("python3"),
            KfpPythonComponent {
                pip_installs: vec![],
                ..c.clone()
            }
            .key("python3")
        );
    }

    #[test]
    fn leaves_other_commands_alone() {
        let argv: Vec<String> = ["sh", "-c", "echo hi", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(KfpPythonComponent::detect(&argv).is_none());
    }
}
