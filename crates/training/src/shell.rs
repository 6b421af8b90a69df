//! A host's variables as a file a POSIX shell sources before it starts the
//! script: `set -- 'NAME=VALUE'… "$@"`, then `exec env "$@"` (names keep
//! characters `export` refuses, such as a channel's `-`). Values only the
//! host knows (its CPU and GPU counts) stand as a marker number when the file
//! is made, and the shell splices its own count in.

/// A value the host fills in: every occurrence of `marker` (digits no real
/// count, port or address reaches) becomes the shell variable `var`.
#[derive(Debug, Clone, Copy)]
pub struct Splice {
    pub marker: &'static str,
    pub var: &'static str,
}

impl Splice {
    /// The marker as the number it stands for.
    pub fn number(&self) -> u32 {
        self.marker.parse().unwrap_or(u32::MAX)
    }
}

/// The host's CPU count (the launcher sets `SM_NUM_CPUS` before sourcing).
pub const CPUS: Splice = Splice {
    marker: "4000000007",
    var: "SM_NUM_CPUS",
};
/// The host's GPU count (the launcher sets `SM_NUM_GPUS` before sourcing).
pub const GPUS: Splice = Splice {
    marker: "4000000009",
    var: "SM_NUM_GPUS",
};
/// The job's name as the platform gives it (SageMaker's `TRAINING_JOB_NAME`).
pub const JOB_NAME: Splice = Splice {
    marker: "4000000015",
    var: "TRAINING_JOB_NAME",
};
/// The master's address and port as the pod's operator gives them.
pub const MASTER_ADDR: Splice = Splice {
    marker: "4000000011",
    var: "MASTER_ADDR",
};
pub const MASTER_PORT: Splice = Splice {
    marker: "4000000013",
    var: "MASTER_PORT",
};

/// `'…'` for the shell, with `'` spelled `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One `NAME=VALUE` word, with each splice's marker replaced by its variable.
pub fn assignment(name: &str, value: &str, splices: &[Splice]) -> String {
    let mut parts: Vec<(String, Option<&'static str>)> = vec![(format!("{name}={value}"), None)];
    for s in splices {
        let marker = s.marker;
        parts = parts
            .into_iter()
            .flat_map(|(text, var)| {
                let pieces: Vec<String> = text.split(marker).map(str::to_string).collect();
                let n = pieces.len();
                pieces.into_iter().enumerate().map(move |(i, p)| {
                    // Each piece but the last is followed by the variable.
                    (p, if i + 1 < n { Some(s.var) } else { var })
                })
            })
            .collect();
    }
    parts
        .into_iter()
        .map(|(text, var)| match var {
            Some(v) => format!("{}\"${v}\"", quote(&text)),
            None => quote(&text),
        })
        .collect()
}

/// The file: `set --` with every assignment, then the arguments it had.
pub fn env_file(vars: impl Iterator<Item = (String, String)>, splices: &[Splice]) -> String {
    let mut out = String::from("set --");
    for (k, v) in vars {
        out.push_str(" \\\n  ");
        out.push_str(&assignment(&k, &v, splices));
    }
    out.push_str(" \\\n  \"$@\"\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_reach_the_command_with_the_counts_spliced_in() {
        let training = format!(
            "{{\"a\":\"it's\",\"num_cpus\":{},\"num_gpus\": {}}}",
            CPUS.marker, GPUS.marker
        );
        let file = env_file(
            [
                ("SM_TRAINING_ENV".to_string(), training),
                ("SM_NUM_CPUS".to_string(), CPUS.marker.to_string()),
                (
                    "SM_CHANNEL_VAL-DATA".to_string(),
                    "/opt/ml/input/data/val-data".to_string(),
                ),
            ]
            .into_iter(),
            &[CPUS, GPUS],
        );
        // Through a real shell, as the launchers run it.
        let script = format!("SM_NUM_CPUS=7\nSM_NUM_GPUS=2\n{file}exec env \"$@\"",);
        let out = std::process::Command::new("sh")
            .args(["-c", &script, "sh", "env"])
            .output()
            .unwrap();
        let mut seen: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("SM_"))
            .collect();
        seen.sort();
        assert_eq!(
            seen.join("\n") + "\n",
            "SM_CHANNEL_VAL-DATA=/opt/ml/input/data/val-data\nSM_NUM_CPUS=7\nSM_TRAINING_ENV={\"a\":\"it's\",\"num_cpus\":7,\"num_gpus\": 2}\n",
            "{file}"
        );
    }
}
