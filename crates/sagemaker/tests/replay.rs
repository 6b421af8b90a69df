//! The SageMaker backend against replayed HTTP responses: the real AWS SDK
//! builds, signs and parses every call; an in-process HTTP client answers from
//! responses shaped exactly like SageMaker's and CloudWatch Logs' (awsJson1.1
//! documents and error bodies, see tests/responses/). This covers what the moto
//! server cannot produce: InProgress → Stopping → Stopped, Failed with a reason,
//! MaxRuntimeExceeded, throttling, 5xx errors, and the full request body.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_http_client::test_util::infallible_client_fn;
use aws_smithy_types::body::SdkBody;
use serde_json::{json, Value};
use switchyard_sagemaker::{SageMakerBackend, SageMakerConfig};
use switchyard_training::{JobEvent, JobState, TrainingBackend, TrainingJob, TrainingOutcome};
use tokio_util::sync::CancellationToken;

const NAME_PREFIX: &str = "digits";

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: 200,
        body: body.to_string(),
    }
}

fn aws_error(status: u16, code: &str, message: &str) -> Reply {
    Reply {
        status,
        body: json!({"__type": code, "message": message}).to_string(),
    }
}

fn not_found_job() -> Reply {
    aws_error(400, "ValidationException", "Requested resource not found.")
}

/// A recorded response from tests/responses/, with `name` substituted.
fn recorded(file: &str, name: &str) -> Reply {
    let path = format!("{}/tests/responses/{file}", manifest_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ok(serde_json::from_str(&text.replace("{{name}}", name)).unwrap())
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    op: String,
    body: Vec<u8>,
}

/// Answers each operation from its own queue (the last answer repeats), and
/// can swap a queue when another operation arrives (a stop changes what
/// describe says next).
#[derive(Default)]
struct Fake {
    queues: Mutex<HashMap<String, VecDeque<Reply>>>,
    switches: Mutex<HashMap<String, (String, VecDeque<Reply>)>>,
    seen: Mutex<Vec<Seen>>,
}

impl Fake {
    fn script(&self, op: &str, replies: Vec<Reply>) -> &Self {
        self.queues
            .lock()
            .unwrap()
            .insert(op.to_string(), replies.into());
        self
    }

    fn on(&self, trigger: &str, op: &str, replies: Vec<Reply>) -> &Self {
        self.switches
            .lock()
            .unwrap()
            .insert(trigger.to_string(), (op.to_string(), replies.into()));
        self
    }

    fn ops(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.op.clone())
            .collect()
    }

    fn count(&self, op: &str) -> usize {
        self.ops().iter().filter(|o| *o == op).count()
    }

    fn body_of(&self, op: &str) -> Value {
        let seen = self.seen.lock().unwrap();
        let s = seen.iter().find(|s| s.op == op).expect(op);
        serde_json::from_slice(&s.body).unwrap()
    }

    fn answer(&self, req: http::Request<SdkBody>) -> http::Response<SdkBody> {
        let op = match req.headers().get("x-amz-target") {
            Some(t) => t.to_str().unwrap().rsplit('.').next().unwrap().to_string(),
            None => format!("S3 {} {}", req.method(), req.uri().path()),
        };
        let body = req.body().bytes().unwrap_or_default().to_vec();
        // Log events are scripted per stream (per host).
        let op = if op == "GetLogEvents" {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let stream = v["logStreamName"].as_str().unwrap();
            let host = stream
                .rsplit('/')
                .next()
                .unwrap()
                .rsplit_once('-')
                .unwrap()
                .0;
            format!("GetLogEvents {host}")
        } else {
            op
        };
        self.seen.lock().unwrap().push(Seen {
            op: op.clone(),
            body,
        });
        if let Some((target, replies)) = self.switches.lock().unwrap().remove(&op) {
            self.queues.lock().unwrap().insert(target, replies);
        }
        let reply = {
            let mut q = self.queues.lock().unwrap();
            match q.get_mut(&op) {
                Some(queue) if queue.len() > 1 => queue.pop_front(),
                Some(queue) => queue.front().cloned(),
                None => None,
            }
        };
        let reply = reply.unwrap_or_else(|| {
            if op.starts_with("S3 HEAD") {
                Reply {
                    status: 404,
                    body: String::new(),
                }
            } else if op.starts_with("S3 PUT") {
                Reply {
                    status: 200,
                    body: String::new(),
                }
            } else if op.contains("Log") {
                aws_error(
                    400,
                    "ResourceNotFoundException",
                    "The specified log group does not exist.",
                )
            } else {
                aws_error(
                    500,
                    "InternalFailure",
                    &format!("no scripted answer for {op}"),
                )
            }
        });
        let mut r = http::Response::builder()
            .status(reply.status)
            .header("content-type", "application/x-amz-json-1.1");
        if op.starts_with("S3 PUT") {
            r = r.header("ETag", "\"0123\"");
        }
        r.body(SdkBody::from(reply.body)).unwrap()
    }
}

fn sdk(fake: Arc<Fake>) -> SdkConfig {
    let http = infallible_client_fn(move |req| fake.answer(req));
    SdkConfig::builder()
        .http_client(http)
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::for_tests()))
        .behavior_version(BehaviorVersion::latest())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        // The backend's own backoff handles throttling here, not the SDK's.
        .retry_config(RetryConfig::disabled())
        .build()
}

struct Setup {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    config: SageMakerConfig,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/train.py"), "print('test_accuracy=0.9')\n").unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/train.csv"), "x,y\n1,2\n").unwrap();
    let mut config = SageMakerConfig::new(root.join("jobs"));
    config.poll_interval = Duration::from_millis(20);
    config.max_poll_interval = Duration::from_millis(200);
    config.role_arn = Some("arn:aws:iam::123456789012:role/SwitchyardTraining".into());
    config.bucket = Some("staging".into());
    Setup {
        _dir: dir,
        root,
        config,
    }
}

fn job(s: &Setup, spec_yaml: &str) -> TrainingJob {
    let text = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: {NAME_PREFIX}}}\nspec:\n  backend: sagemaker\n  image: 763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311\n{spec_yaml}"
    );
    switchyard_training::load(&text, &s.root, &[], None).unwrap()
}

const SIMPLE: &str = "  sourceDir: src\n  entryPoint: train.py\n";

struct Ran {
    result: Result<TrainingOutcome, switchyard_training::BackendError>,
    events: Vec<JobEvent>,
}

impl Ran {
    fn statuses(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Status { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
    fn outcome(&self) -> &TrainingOutcome {
        self.result.as_ref().expect("the job ran")
    }
}

/// Runs `job` as job `id`; cancels once the job is reported running when asked.
async fn run(
    backend: &SageMakerBackend,
    job: &TrainingJob,
    id: &str,
    cancel_when_running: bool,
) -> Ran {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = rx.recv().await {
                if cancel_when_running && matches!(e, JobEvent::Running { .. }) {
                    cancel.cancel();
                }
                events.push(e);
            }
            events
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(30), backend.run(job, id, tx, cancel))
        .await
        .expect("the backend returned within 30 s");
    Ran {
        result,
        events: watcher.await.unwrap(),
    }
}

fn name_for(id: &str) -> String {
    switchyard_sagemaker::render::training_job_name(NAME_PREFIX, id)
}

#[tokio::test]
async fn in_progress_then_stop_on_cancel_ends_stopped_and_canceled() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-stop");
    fake.script(
        "DescribeTrainingJob",
        vec![
            not_found_job(),
            recorded("describe-starting.json", &name),
            recorded("describe-downloading.json", &name),
            aws_error(400, "ThrottlingException", "Rate exceeded"),
            recorded("describe-training.json", &name),
        ],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)])
    .script("StopTrainingJob", vec![ok(json!({}))])
    .on(
        "StopTrainingJob",
        "DescribeTrainingJob",
        vec![
            recorded("describe-stopping.json", &name),
            recorded("describe-stopped.json", &name),
        ],
    );
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-stop", true).await;
    let out = ran.outcome();
    assert_eq!(out.state, JobState::Canceled, "{out:?}");
    assert_eq!(fake.count("CreateTrainingJob"), 1);
    assert_eq!(fake.count("StopTrainingJob"), 1);
    let statuses = ran.statuses().join("\n");
    for expected in [
        "SageMaker: Starting — Launching requested ML instances",
        "SageMaker: Downloading — Downloading input data",
        "SageMaker: Training — Training image download completed. Training in progress.",
        "SageMaker: Stopping — Stopping the training job",
        "SageMaker: Stopped — Training job stopped",
        "SageMaker is throttling",
        "stopping SageMaker training job",
    ] {
        assert!(
            statuses.contains(expected),
            "missing '{expected}' in:\n{statuses}"
        );
    }
    // The stop came after the job was seen training, and describe went on after it.
    let ops = fake.ops();
    let stop = ops.iter().position(|o| o == "StopTrainingJob").unwrap();
    assert!(
        ops[stop + 1..].iter().any(|o| o == "DescribeTrainingJob"),
        "{ops:?}"
    );
}

#[tokio::test]
async fn failed_job_reports_sagemakers_failure_reason() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-fail");
    fake.script(
        "DescribeTrainingJob",
        vec![
            not_found_job(),
            recorded("describe-training.json", &name),
            recorded("describe-failed.json", &name),
        ],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-fail", false).await;
    let out = ran.outcome();
    assert_eq!(out.state, JobState::Failed);
    assert_eq!(
        out.failure_reason.as_deref(),
        Some("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"ValueError: learning rate must be positive\"")
    );
    assert_eq!(out.model, None);
    assert!(ran
        .events
        .iter()
        .any(|e| matches!(e, JobEvent::Running { .. })));
}

#[tokio::test]
async fn max_runtime_exceeded_is_a_failure_not_a_cancel() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-slow");
    fake.script(
        "DescribeTrainingJob",
        vec![
            not_found_job(),
            recorded("describe-max-runtime.json", &name),
        ],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let out = run(&backend, &job(&s, SIMPLE), "job-slow", false).await;
    let out = out.outcome();
    assert_eq!(out.state, JobState::Failed);
    assert!(
        out.failure_reason
            .as_deref()
            .unwrap()
            .contains("MaxRuntimeExceeded"),
        "{out:?}"
    );
}

#[tokio::test]
async fn completed_job_gives_the_model_metrics_and_logs_per_host() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-done");
    fake.script(
        "DescribeTrainingJob",
        vec![
            not_found_job(),
            recorded("describe-training.json", &name),
            recorded("describe-completed.json", &name),
        ],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)])
    // The log group does not exist until the first instance starts.
    .script(
        "DescribeLogStreams",
        vec![
            aws_error(
                400,
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            ),
            recorded("log-streams.json", &name),
        ],
    )
    .script(
        "GetLogEvents algo-1",
        vec![
            recorded("log-events-1.json", &name),
            recorded("log-events-end.json", &name),
        ],
    )
    .script(
        "GetLogEvents algo-2",
        vec![
            recorded("log-events-2.json", &name),
            recorded("log-events-end.json", &name),
        ],
    );
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let spec = format!("{SIMPLE}  metrics:\n  - {{name: test_accuracy, regex: 'test_accuracy=([0-9.]+)'}}\n  - {{name: loss, regex: 'loss=([0-9.]+)'}}\n");
    let ran = run(&backend, &job(&s, &spec), "job-done", false).await;
    let out = ran.outcome();
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    assert_eq!(
        out.model.as_deref(),
        Some(format!("s3://staging/switchyard/output/{name}/output/model.tar.gz").as_str())
    );
    // FinalMetricDataList wins over what the logs said; loss came only from the logs.
    assert!(
        (out.metrics["test_accuracy"] - 0.96).abs() < 1e-6,
        "{:?}",
        out.metrics
    );
    assert!(
        (out.metrics["loss"] - 0.21).abs() < 1e-9,
        "{:?}",
        out.metrics
    );
    let log = std::fs::read_to_string(s.root.join("jobs/job-done/logs/algo-1-rank-0.log")).unwrap();
    assert!(
        log.contains("epoch 1 loss=0.21 test_accuracy=0.94"),
        "{log}"
    );
    let log2 =
        std::fs::read_to_string(s.root.join("jobs/job-done/logs/algo-2-rank-1.log")).unwrap();
    assert!(log2.contains("rank 1 ready"), "{log2}");
    let lines: Vec<&str> = ran
        .events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Log { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 3, "each line once: {lines:?}");
}

#[tokio::test]
async fn resubmitting_the_same_job_follows_the_existing_one() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-again");
    fake.script(
        "DescribeTrainingJob",
        vec![recorded("describe-completed.json", &name)],
    );
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-again", false).await;
    assert_eq!(ran.outcome().state, JobState::Succeeded);
    assert_eq!(fake.count("CreateTrainingJob"), 0, "{:?}", fake.ops());
    assert!(
        fake.ops().iter().all(|o| !o.starts_with("S3 PUT")),
        "nothing uploaded again"
    );
    assert!(ran.statuses().iter().any(|m| m.contains("exists already")));
}

#[tokio::test]
async fn the_request_carries_every_field() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-full");
    fake.script(
        "DescribeTrainingJob",
        vec![not_found_job(), recorded("describe-completed.json", &name)],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let spec = r#"  sourceDir: src
  entryPoint: train.py
  nodes: 2
  procsPerNode: 1
  instanceType: ml.g5.2xlarge
  volumeSizeGb: 100
  hyperparameters: {epochs: 3, optimizer: adam, lr: 0.05}
  channels:
    train: s3://datasets/digits/train
    shared: efs://fs-0123456789abcdef0/datasets/digits
    local: data
  output: s3://models/digits
  checkpoint: s3://ckpt/digits
  env: {NCCL_DEBUG: INFO}
  restartPolicy: OnFailure
  backoffLimit: 2
  maxRuntimeSeconds: 3600
  useSpotInstances: true
  maxWaitSeconds: 7200
  inputMode: FastFile
  metrics:
  - {name: test_accuracy, regex: 'test_accuracy=([0-9.]+)'}
  tags: {team: ml}
  sagemaker:
    bucket: stage-bucket
    prefix: /team/
    subnets: [subnet-0a1b2c3d]
    securityGroupIds: [sg-0a1b2c3d]
    enableNetworkIsolation: true
    enableInterContainerTrafficEncryption: true
"#;
    let j = job(&s, spec);
    let ran = run(&backend, &j, "job-full", false).await;
    assert_eq!(ran.outcome().state, JobState::Succeeded, "{:?}", ran.result);

    // sourcedir.tar.gz went to the bucket under its content hash, after a HEAD found nothing there.
    let archive = switchyard_sagemaker::sourcedir::pack(&s.root.join("src")).unwrap();
    let key = format!(
        "/stage-bucket/team/sourcedir/{}/sourcedir.tar.gz",
        archive.sha256
    );
    let ops = fake.ops();
    let head = ops
        .iter()
        .position(|o| *o == format!("S3 HEAD {key}"))
        .expect("HEAD sourcedir");
    let put = ops
        .iter()
        .position(|o| *o == format!("S3 PUT {key}"))
        .expect("PUT sourcedir");
    assert!(head < put);
    assert!(
        ops.contains(&format!(
            "S3 PUT /stage-bucket/team/inputs/{name}/local/train.csv"
        )),
        "{ops:?}"
    );

    let b = fake.body_of("CreateTrainingJob");
    assert_eq!(b["TrainingJobName"], json!(name));
    assert_eq!(
        b["RoleArn"],
        "arn:aws:iam::123456789012:role/SwitchyardTraining"
    );
    let algo = &b["AlgorithmSpecification"];
    assert_eq!(
        algo["TrainingImage"],
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
    );
    assert_eq!(algo["TrainingInputMode"], "FastFile");
    assert_eq!(
        algo["MetricDefinitions"],
        json!([{"Name": "test_accuracy", "Regex": "test_accuracy=([0-9.]+)"}])
    );
    let hp = &b["HyperParameters"];
    assert_eq!(hp["epochs"], "3");
    assert_eq!(hp["lr"], "0.05");
    assert_eq!(hp["optimizer"], "\"adam\"");
    assert_eq!(hp["sagemaker_program"], "\"train.py\"");
    assert_eq!(
        hp["sagemaker_submit_directory"],
        json!(format!(
            "\"s3://stage-bucket/team/sourcedir/{}/sourcedir.tar.gz\"",
            archive.sha256
        ))
    );
    assert_eq!(hp["sagemaker_torch_distributed_enabled"], "true");
    // procsPerNode reaches the container's torchrun (--nproc_per_node).
    assert_eq!(hp["sagemaker_mpi_num_of_processes_per_host"], "1");
    assert_eq!(hp["sagemaker_job_name"], json!(format!("\"{name}\"")));
    let channels: BTreeMap<String, Value> = b["InputDataConfig"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["ChannelName"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert_eq!(
        channels["train"]["DataSource"]["S3DataSource"],
        json!({"S3Uri": "s3://datasets/digits/train", "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated"})
    );
    assert_eq!(channels["train"]["InputMode"], "FastFile");
    assert_eq!(
        channels["shared"]["DataSource"]["FileSystemDataSource"],
        json!({"FileSystemId": "fs-0123456789abcdef0", "FileSystemType": "EFS", "FileSystemAccessMode": "ro", "DirectoryPath": "/datasets/digits"})
    );
    assert_eq!(channels["shared"]["InputMode"], "File");
    assert_eq!(
        channels["local"]["DataSource"]["S3DataSource"]["S3Uri"],
        json!(format!("s3://stage-bucket/team/inputs/{name}/local/"))
    );
    assert_eq!(
        b["OutputDataConfig"],
        json!({"S3OutputPath": "s3://models/digits"})
    );
    assert_eq!(
        b["CheckpointConfig"],
        json!({"S3Uri": "s3://ckpt/digits", "LocalPath": "/opt/ml/checkpoints"})
    );
    assert_eq!(
        b["ResourceConfig"],
        json!({"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100})
    );
    assert_eq!(
        b["StoppingCondition"],
        json!({"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200})
    );
    assert_eq!(b["EnableManagedSpotTraining"], true);
    assert_eq!(b["EnableNetworkIsolation"], true);
    assert_eq!(b["EnableInterContainerTrafficEncryption"], true);
    assert_eq!(b["RetryStrategy"], json!({"MaximumRetryAttempts": 2}));
    assert_eq!(
        b["Environment"],
        json!({"SAGEMAKER_BASE_DIR": "/opt/ml", "NCCL_DEBUG": "INFO"})
    );
    assert_eq!(
        b["VpcConfig"],
        json!({"SecurityGroupIds": ["sg-0a1b2c3d"], "Subnets": ["subnet-0a1b2c3d"]})
    );
    let tags: BTreeMap<String, String> = b["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().into(),
                t["Value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(tags["team"], "ml");
    assert_eq!(tags["switchyard:job-id"], "job-full");
    assert_eq!(tags["switchyard:job-name"], "digits");
}

/// The request played through SageMaker's real PyTorch container entry
/// (`sagemaker_pytorch_container.training.main()`, from PyPI) on host algo-1 of
/// 2, with a stub `torchrun` that records its argv: procsPerNode becomes
/// `--nproc_per_node`, and the script gets exactly the arguments every other
/// backend gives it. Only the code's S3 download is replaced by the folder.
#[tokio::test]
#[ignore = "needs the SageMaker toolkits in the torch venv (scripts/setup --torch)"]
async fn the_pytorch_container_runs_procs_per_node_with_the_same_arguments() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-container");
    fake.script(
        "DescribeTrainingJob",
        vec![not_found_job(), recorded("describe-completed.json", &name)],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let spec = "  sourceDir: src\n  entryPoint: train.py\n  nodes: 2\n  procsPerNode: 2\n  instanceType: ml.c5.xlarge\n  hyperparameters: {epochs: 3, e: 1, amp: true, opts: {b: 2, a: x}, tiny: 1e-05, layers: [64, 32]}\n";
    let j = job(&s, spec);
    let ran = run(&backend, &j, "job-container", false).await;
    assert_eq!(ran.outcome().state, JobState::Succeeded, "{:?}", ran.result);
    let b = fake.body_of("CreateTrainingJob");

    // What SageMaker would put in the container of algo-1.
    let base = s.root.join("opt-ml");
    let config = base.join("input/config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(base.join("code")).unwrap();
    let mut hps: serde_json::Map<String, Value> =
        serde_json::from_value(b["HyperParameters"].clone()).unwrap();
    hps.insert(
        "sagemaker_submit_directory".into(),
        json!(json!(s.root.join("src").to_string_lossy()).to_string()),
    );
    std::fs::write(
        config.join("hyperparameters.json"),
        Value::Object(hps).to_string(),
    )
    .unwrap();
    std::fs::write(
        config.join("resourceconfig.json"),
        json!({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "current_group_name": "homogeneousCluster",
               "current_instance_type": "ml.c5.xlarge", "network_interface_name": "eth0",
               "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1", "algo-2"]}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(config.join("inputdataconfig.json"), "{}").unwrap();
    let bin = s.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = s.root.join("torchrun-argv.json");
    std::fs::write(
        bin.join("torchrun"),
        format!(
            "#!/bin/sh\nexec python3 -c 'import json, sys; json.dump(sys.argv[1:], open(\"{}\", \"w\"))' \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("torchrun"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let python = std::env::var("SWITCHYARD_TEST_TORCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchyard/torch-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "from sagemaker_pytorch_container import training; training.main()",
        ])
        .env("SAGEMAKER_BASE_DIR", &base)
        .env("SM_STUDIO_LOCAL_MODE", "true")
        .env("PATH", path)
        .current_dir(&s.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let argv: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let mut want: Vec<String> = [
        "--nnodes",
        "2",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "algo-1",
        "--master_port",
        "7777",
        "--node_rank",
        "0",
        "train.py",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The local and Kubernetes backends call the entry point with these.
    want.extend(switchyard_training::contract::user_args(&j));
    assert_eq!(argv, want);
    assert_eq!(
        &argv[11..],
        [
            "--amp", "True", "-e", "1", "--epochs", "3", "--layers", "[64, 32]", "--opts",
            "a=x,b=2", "--tiny", "1e-05"
        ]
    );
}

/// `contract: modeltrainer`: the request has ModelTrainer's shape (its
/// container command, the code and the launcher as channels after the job's,
/// hyperparameters as it encodes them, no `sagemaker_*` ones), the launcher
/// is uploaded once per content, and the job's env is the whole Environment.
#[tokio::test]
async fn a_modeltrainer_job_is_submitted_the_way_modeltrainer_submits_it() {
    let s = setup();
    let spec = "  contract: modeltrainer\n  sourceDir: src\n  entryPoint: train.py\n  nodes: 2\n  procsPerNode: 2\n  instanceType: ml.c5.xlarge\n  hyperparameters: {epochs: 3, e: 1, flag: 'true', opts: {b: 2, a: x}, lr: 1e-05}\n  channels: {train: 's3://datasets/digits/train'}\n  env: {NCCL_DEBUG: INFO}\n";
    let j = job(&s, spec);
    let mut bodies = Vec::new();
    let mut puts = Vec::new();
    for id in ["job-mt-1", "job-mt-2"] {
        let fake = Arc::new(Fake::default());
        let name = name_for(id);
        fake.script(
            "DescribeTrainingJob",
            vec![not_found_job(), recorded("describe-completed.json", &name)],
        )
        .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
        let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
        let ran = run(&backend, &j, id, false).await;
        assert_eq!(ran.outcome().state, JobState::Succeeded, "{:?}", ran.result);
        bodies.push(fake.body_of("CreateTrainingJob"));
        puts.push(
            fake.ops()
                .into_iter()
                .filter(|o| o.starts_with("S3 PUT"))
                .collect::<Vec<_>>(),
        );
    }
    let b = &bodies[0];
    let algo = &b["AlgorithmSpecification"];
    assert_eq!(algo["ContainerEntrypoint"], json!(["/bin/bash"]));
    assert_eq!(
        algo["ContainerArguments"],
        json!(["-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && /opt/ml/input/data/sm_drivers/sm_train.sh"])
    );
    assert_eq!(
        b["HyperParameters"],
        json!({"epochs": "3", "e": "1", "flag": "true", "opts": "{\"b\": 2, \"a\": \"x\"}", "lr": "1e-05"})
    );
    assert_eq!(b["Environment"], json!({"NCCL_DEBUG": "INFO"}));
    let channels: Vec<&str> = b["InputDataConfig"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ChannelName"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["train", "code", "sm_drivers"]);
    let uri = |i: usize| {
        b["InputDataConfig"][i]["DataSource"]["S3DataSource"]["S3Uri"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        uri(1).starts_with("s3://staging/") && uri(1).contains("/sourcedir/"),
        "{}",
        uri(1)
    );
    assert!(
        uri(2).contains("/sm_drivers/") && uri(2).ends_with('/'),
        "{}",
        uri(2)
    );
    // The launcher: its files under one content-addressed prefix, one env file per host.
    let drivers = uri(2).trim_start_matches("s3://").to_string();
    let uploaded: Vec<String> = puts[0]
        .iter()
        .filter_map(|o| {
            o.strip_prefix(&format!("S3 PUT /{drivers}"))
                .map(str::to_string)
        })
        .collect();
    for f in [
        "sm_train.sh",
        "sy_run.py",
        "sy_launch.json",
        "sourcecode.json",
        "distributed.json",
        "sy-host-algo-1.env",
        "sy-host-algo-2.env",
    ] {
        assert!(uploaded.iter().any(|u| u == f), "{f} not in {uploaded:?}");
    }
    // The same job under another id: the same content, the same keys (which
    // `put_once` skips when they exist; this fake has none).
    assert_eq!(bodies[1]["InputDataConfig"], b["InputDataConfig"]);
    assert_eq!(puts[1], puts[0]);
}

#[tokio::test]
async fn a_command_job_uses_the_container_entrypoint() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let name = name_for("job-cmd");
    fake.script(
        "DescribeTrainingJob",
        vec![not_found_job(), recorded("describe-completed.json", &name)],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let j = job(
        &s,
        "  command: [python, -m, trainer, --fast]\n  resources: {cpu: 6}\n",
    );
    assert_eq!(
        run(&backend, &j, "job-cmd", false).await.outcome().state,
        JobState::Succeeded
    );
    let b = fake.body_of("CreateTrainingJob");
    assert_eq!(
        b["AlgorithmSpecification"]["ContainerEntrypoint"],
        json!(["python"])
    );
    assert_eq!(
        b["AlgorithmSpecification"]["ContainerArguments"],
        json!(["-m", "trainer", "--fast"])
    );
    assert!(b.get("HyperParameters").is_none(), "{b}");
    // 6 CPUs per host: the smallest m5 with 8 vCPUs.
    assert_eq!(b["ResourceConfig"]["InstanceType"], "ml.m5.2xlarge");
    assert_eq!(
        b["OutputDataConfig"]["S3OutputPath"],
        "s3://staging/switchyard/output"
    );
    assert!(
        fake.ops().iter().all(|o| !o.starts_with("S3 ")),
        "no sourceDir to upload"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_and_permanent_ones_reported_with_their_code() {
    let s = setup();
    // A 500 then success: created once, followed to the end.
    let fake = Arc::new(Fake::default());
    let name = name_for("job-flaky");
    fake.script(
        "DescribeTrainingJob",
        vec![
            aws_error(503, "ServiceUnavailable", "Service is unavailable"),
            not_found_job(),
            recorded("describe-completed.json", &name),
        ],
    )
    .script(
        "CreateTrainingJob",
        vec![
            aws_error(500, "InternalFailure", "We encountered an internal error."),
            recorded("create.json", &name),
        ],
    );
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-flaky", false).await;
    assert_eq!(ran.outcome().state, JobState::Succeeded, "{:?}", ran.result);
    assert_eq!(fake.count("CreateTrainingJob"), 2);

    // SageMaker unavailable for longer than the backoff lasts while the job
    // runs: Retryable (the job may still run; the runner re-attaches), not
    // a failure.
    let fake = Arc::new(Fake::default());
    let name = name_for("job-unreachable");
    fake.script(
        "DescribeTrainingJob",
        vec![
            not_found_job(),
            aws_error(503, "ServiceUnavailable", "Service is unavailable"),
        ],
    )
    .script("CreateTrainingJob", vec![recorded("create.json", &name)]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-unreachable", false).await;
    match &ran.result {
        Err(switchyard_training::BackendError::Retryable(why)) => assert!(
            why.starts_with("DescribeTrainingJob: ServiceUnavailable")
                && why.ends_with("(gave up after 10 attempts)"),
            "{why}"
        ),
        other => panic!("expected Retryable, got {other:?}"),
    }
    assert_eq!(fake.count("CreateTrainingJob"), 1);

    // Access denied: one attempt, the AWS code and message in the error.
    let fake = Arc::new(Fake::default());
    fake.script("DescribeTrainingJob", vec![not_found_job()]).script(
        "CreateTrainingJob",
        vec![aws_error(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/ci/session is not authorized to perform: sagemaker:CreateTrainingJob",
        )],
    );
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let ran = run(&backend, &job(&s, SIMPLE), "job-denied", false).await;
    let err = ran.result.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "CreateTrainingJob: AccessDeniedException: User: arn:aws:sts::123456789012"
        ),
        "{err}"
    );
    assert_eq!(fake.count("CreateTrainingJob"), 1);
}

/// A change to the configuration for one case.
type Tweak = Box<dyn Fn(&mut SageMakerConfig)>;

#[tokio::test]
async fn invalid_jobs_are_refused_before_any_api_call() {
    let s = setup();
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (SIMPLE, Box::new(|c| c.role_arn = None), "spec.roleArn: missing"),
        ("  sourceDir: src\n  entryPoint: train.py\n  roleArn: SageMakerRole\n", Box::new(|_| {}), "spec.roleArn: 'SageMakerRole' is not an IAM role ARN"),
        ("  command: [python, x.py]\n  channels: {train: data}\n", Box::new(|c| c.bucket = None), "spec.channels.train: a local channel is uploaded to S3 first, and no bucket is configured"),
        ("  command: [python, x.py]\n  channels: {train: data}\n", Box::new(|c| c.local_channels = switchyard_sagemaker::LocalChannels::Refuse), "spec.channels.train:"),
        (SIMPLE, Box::new(|c| c.bucket = None), "spec.sourceDir: sourceDir is uploaded to S3"),
        ("  command: [python, x.py]\n  nodes: 3\n  instanceType: ml.p4d.24xlarge\n", Box::new(|c| { c.instance_limits.insert("ml.p4d.24xlarge".into(), 2); }), "spec.nodes: 3 instances of ml.p4d.24xlarge is more than the 2 allowed"),
        ("  command: [python, x.py]\n  nodes: 21\n", Box::new(|_| {}), "spec.nodes: 21 instances of ml.m5.large is more than the 20 allowed"),
        ("  command: [python, x.py]\n  channels: {shared: 'efs://fs-12345678/data'}\n", Box::new(|_| {}), "spec.channels.shared: an EFS channel needs the training instances in the file system's VPC"),
        ("  command: [python, x.py]\n  output: out\n", Box::new(|_| {}), "spec.output:"),
        ("  command: [python, x.py]\n  checkpoint: ck\n", Box::new(|_| {}), "spec.checkpoint:"),
        ("  command: [python, x.py]\n  instanceType: ml.c5.xlarge\n  resources: {gpu: 1}\n", Box::new(|_| {}), "spec.resources.gpu: 1 GPUs per host, but ml.c5.xlarge has 0"),
        ("  command: [python, x.py]\n  instanceType: c5.xlarge\n", Box::new(|_| {}), "spec.instanceType: 'c5.xlarge' is not a SageMaker instance type"),
        ("  command: [python, x.py]\n  instanceType: ml.c5.xlarge\n  procsPerNode: 2\n", Box::new(|_| {}), "spec.procsPerNode: 2 processes per host need spec.entryPoint"),
        ("  sourceDir: src\n  entryPoint: train.py\n  instanceType: ml.g5.xlarge\n  procsPerNode: 4\n", Box::new(|_| {}), "spec.procsPerNode: 4 processes per host, but ml.g5.xlarge has 1 GPUs"),
        ("  command: [python, x.py]\n  resources: {gpu: 16}\n", Box::new(|_| {}), "spec.resources: no instance type"),
        ("  command: [python, x.py]\n  maxRuntimeSeconds: 9999999\n", Box::new(|_| {}), "spec.maxRuntimeSeconds:"),
        ("  command: [python, x.py]\n  env: {'1BAD': x}\n", Box::new(|_| {}), "spec.env.1BAD:"),
        ("  command: [python, x.py]\n  sagemaker: {subnets: [subnet-1]}\n", Box::new(|_| {}), "spec.sagemaker.subnets: a VPC needs both"),
        ("  command: [python, x.py]\n  restartPolicy: OnFailure\n  backoffLimit: 31\n", Box::new(|_| {}), "spec.backoffLimit:"),
    ];
    for (spec, tweak, expected) in cases {
        let fake = Arc::new(Fake::default());
        let mut config = s.config.clone();
        tweak(&mut config);
        let backend = SageMakerBackend::with_sdk_config(config, sdk(fake.clone()), true);
        let j = job(&s, spec);
        let e = backend.preflight(&j).expect_err(expected).to_string();
        assert!(e.starts_with(expected), "expected '{expected}', got '{e}'");
        // run() refuses the same way, without a single request.
        let ran = run(&backend, &j, "job-bad", false).await;
        assert_eq!(ran.result.unwrap_err().to_string(), e);
        assert!(fake.ops().is_empty(), "{expected}: {:?}", fake.ops());
    }
}

#[tokio::test]
async fn a_typo_in_the_sagemaker_block_names_the_field() {
    let s = setup();
    let text = "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: x}\nspec:\n  backend: sagemaker\n  image: i\n  command: [x]\n  sagemaker: {subnet: [a]}\n";
    let e = switchyard_training::load(text, &s.root, &[], None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("spec.sagemaker"), "{e}");
    assert!(e.contains("subnet"), "{e}");
}

#[tokio::test]
async fn canceled_before_creation_creates_nothing() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    fake.script("DescribeTrainingJob", vec![not_found_job()]);
    let backend = SageMakerBackend::with_sdk_config(s.config.clone(), sdk(fake.clone()), true);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = backend
        .run(&job(&s, SIMPLE), "job-early", tx, cancel)
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Canceled);
    assert_eq!(fake.count("CreateTrainingJob"), 0, "{:?}", fake.ops());
    assert_eq!(fake.count("StopTrainingJob"), 0);
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
