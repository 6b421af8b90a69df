//! docs/iam/switchyard-policy.json must allow every AWS operation the backend
//! (and the S3 store it uploads and downloads with) calls: a new call without a
//! policy update fails here, not in someone's account.

use std::collections::BTreeSet;

/// SDK operation → the IAM action that authorises it.
const ACTIONS: &[(&str, &str)] = &[
    ("create_training_job", "sagemaker:CreateTrainingJob"),
    ("describe_training_job", "sagemaker:DescribeTrainingJob"),
    ("stop_training_job", "sagemaker:StopTrainingJob"),
    ("list_training_jobs", "sagemaker:ListTrainingJobs"),
    ("list_service_quotas", "servicequotas:ListServiceQuotas"),
    (
        "list_aws_default_service_quotas",
        "servicequotas:ListAWSDefaultServiceQuotas",
    ),
    ("describe_log_streams", "logs:DescribeLogStreams"),
    ("get_log_events", "logs:GetLogEvents"),
    ("head_object", "s3:GetObject"),
    ("get_object", "s3:GetObject"),
    ("put_object", "s3:PutObject"),
    ("delete_object", "s3:DeleteObject"),
    ("list_objects_v2", "s3:ListBucket"),
];

fn sources() -> Vec<String> {
    let root = std::path::PathBuf::from(manifest_dir());
    // The Rust sources (the launcher's shell and Python files call no AWS API).
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.push(root.join("../s3/src/lib.rs"));
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

#[test]
fn the_documented_policy_covers_every_call() {
    let re = regex_lite_calls();
    let mut called = BTreeSet::new();
    for text in sources() {
        for name in re(&text) {
            called.insert(name);
        }
    }
    assert!(called.contains("create_training_job"), "{called:?}");
    let path = format!("{}/../../docs/iam/switchyard-policy.json", manifest_dir());
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut allowed = BTreeSet::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                allowed.insert(a.clone());
            }
            serde_json::Value::Array(a) => {
                allowed.extend(a.iter().map(|v| v.as_str().unwrap().to_string()))
            }
            other => panic!("Action {other}"),
        }
    }
    for op in &called {
        let action = ACTIONS
            .iter()
            .find(|(o, _)| o == op)
            .unwrap_or_else(|| panic!("the backend calls {op}: add its IAM action to ACTIONS and docs/iam/switchyard-policy.json"))
            .1;
        assert!(
            allowed.contains(action),
            "{action} (for {op}) is missing from {path}"
        );
    }
    assert!(allowed.contains("iam:PassRole"));
    assert!(
        allowed.contains("sagemaker:AddTags"),
        "tags on create need AddTags"
    );
}

/// SDK operation calls: `.verb_noun()` with no arguments, the fluent builders' shape.
fn regex_lite_calls() -> impl Fn(&str) -> Vec<String> {
    |text: &str| {
        let verbs = [
            "create_",
            "describe_",
            "stop_",
            "list_",
            "get_",
            "put_",
            "head_",
            "delete_",
            "update_",
            "add_",
        ];
        let mut out = Vec::new();
        for (i, _) in text.match_indices("()") {
            let before = &text[..i];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(|p| p + 1)
                .unwrap_or(0);
            let name = &before[start..];
            if start > 0
                && before.as_bytes()[start - 1] == b'.'
                && verbs.iter().any(|v| name.starts_with(v))
            {
                out.push(name.to_string());
            }
        }
        out
    }
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
