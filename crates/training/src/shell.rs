//! A host's variables as a file a POSIX shell sources before it starts the
//! script: `set -- 'NAME=VALUE'… "$@"`, then `exec env "$@"` (names keep
//! characters `export` refuses, such as a channel's `-`). Values only the
//! host knows (its CPU and GPU counts, the master its operator names, the
//! platform's job name) stand as a marker when the file is made, and the
//! shell splices its own value in: where a variable's whole value is the
//! marker, and where a JSON value holds it under its field's name
//! (`"num_cpus": 4000000007`). Nowhere else, so a job's own value that
//! happens to hold the marker's digits is left alone.

/// A value the host fills in.
#[derive(Debug, Clone, Copy)]
pub struct Splice {
    /// Digits no real count, port or address reaches.
    pub marker: &'static str,
    /// The shell variable with the host's value.
    pub var: &'static str,
    /// The JSON field that holds it inside a value (`SM_TRAINING_ENV`).
    pub field: &'static str,
}

impl Splice {
    /// The marker as the number it stands for.
    pub fn number(&self) -> u32 {
        self.marker.parse().unwrap_or(u32::MAX)
    }

    /// The texts the marker stands in inside JSON, and where in them it is.
    fn anchors(&self) -> [(String, usize); 4] {
        let (f, m) = (self.field, self.marker);
        [
            (format!("\"{f}\": {m}"), f.len() + 4),
            (format!("\"{f}\":{m}"), f.len() + 3),
            (format!("\"{f}\": \"{m}\""), f.len() + 5),
            (format!("\"{f}\":\"{m}\""), f.len() + 4),
        ]
    }
}

/// The host's CPU count (the launcher sets `SM_NUM_CPUS` before sourcing).
pub const CPUS: Splice = Splice {
    marker: "4000000007",
    var: "SM_NUM_CPUS",
    field: "num_cpus",
};
/// The host's GPU count (the launcher sets `SM_NUM_GPUS` before sourcing).
pub const GPUS: Splice = Splice {
    marker: "4000000009",
    var: "SM_NUM_GPUS",
    field: "num_gpus",
};
/// The job's name as the platform gives it (SageMaker's `TRAINING_JOB_NAME`).
pub const JOB_NAME: Splice = Splice {
    marker: "4000000015",
    var: "TRAINING_JOB_NAME",
    field: "job_name",
};
/// The master's address and port as the pod's operator gives them.
pub const MASTER_ADDR: Splice = Splice {
    marker: "4000000011",
    var: "MASTER_ADDR",
    field: "master_addr",
};
pub const MASTER_PORT: Splice = Splice {
    marker: "4000000013",
    var: "MASTER_PORT",
    field: "master_port",
};

/// `'…'` for the shell, with `'` spelled `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A piece of a value: text as it is, or a shell variable.
enum Piece {
    Text(String),
    Var(&'static str),
}

/// `value` cut where the splices' markers are.
fn pieces(value: &str, splices: &[Splice]) -> Vec<Piece> {
    if let Some(s) = splices.iter().find(|s| s.marker == value) {
        return vec![Piece::Var(s.var)];
    }
    let mut out = vec![Piece::Text(value.to_string())];
    for s in splices {
        for (anchor, at) in s.anchors() {
            out = out
                .into_iter()
                .flat_map(|p| match p {
                    Piece::Text(t) if t.contains(&anchor) => {
                        let mut cut = Vec::new();
                        let parts: Vec<&str> = t.split(anchor.as_str()).collect();
                        for (i, part) in parts.iter().enumerate() {
                            cut.push(Piece::Text(part.to_string()));
                            if i + 1 < parts.len() {
                                cut.push(Piece::Text(anchor[..at].to_string()));
                                cut.push(Piece::Var(s.var));
                                cut.push(Piece::Text(anchor[at + s.marker.len()..].to_string()));
                            }
                        }
                        cut
                    }
                    other => vec![other],
                })
                .collect();
        }
    }
    out
}

/// One `NAME=VALUE` word, with the splices' markers replaced by their variables.
pub fn assignment(name: &str, value: &str, splices: &[Splice]) -> String {
    let mut word = String::new();
    let mut text = format!("{name}=");
    for p in pieces(value, splices) {
        match p {
            Piece::Text(t) => text.push_str(&t),
            Piece::Var(v) => {
                if !text.is_empty() {
                    word.push_str(&quote(&std::mem::take(&mut text)));
                }
                word.push_str(&format!("\"${v}\""));
            }
        }
    }
    if !text.is_empty() {
        word.push_str(&quote(&text));
    }
    word
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
                // A job's own value with the marker's digits stays as it is.
                ("SM_HP_SEED".to_string(), format!("{}1", CPUS.marker)),
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
            "SM_CHANNEL_VAL-DATA=/opt/ml/input/data/val-data\nSM_HP_SEED=40000000071\nSM_NUM_CPUS=7\nSM_TRAINING_ENV={\"a\":\"it's\",\"num_cpus\":7,\"num_gpus\": 2}\n",
            "{file}"
        );
    }
}
