//! What the user typed: clap definitions only, no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Run Kubeflow Pipelines (KFP v2) pipelines and training jobs on this machine, Kubernetes or SageMaker"
)]
pub struct Cli {
    /// Data directory (store, logs, artifacts, environments).
    #[arg(long, env = "SWITCHYARD_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Keep records in this database instead of `<home>/switchyard.db`:
    /// `postgres://user@host/db` (shared by several servers) or `sqlite://path`.
    #[arg(
        long,
        env = "SWITCHYARD_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// Send `run` and `runs` commands to this `switchyard server` (http://host:port)
    /// instead of running here. `SWITCHYARD_AUTH_TOKEN` is sent as the bearer token.
    #[arg(long, env = "SWITCHYARD_SERVER", global = true)]
    pub server: Option<String>,
    /// Start every KFP Python step with a fresh interpreter instead of a fork
    /// of a warm one (one per environment, kfp's executor already imported).
    #[arg(long, env = "SWITCHYARD_NO_WARM_PYTHON", global = true,
          action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_warm_python: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a compiled pipeline (YAML from `kfp.compiler.Compiler().compile`).
    Run(RunArgs),
    /// Inspect and control recorded runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Distributed training jobs (TrainingJob documents).
    #[command(subcommand)]
    Job(JobCommand),
    /// Serve the Kubeflow Pipelines REST API (v2beta1) for kfp.Client.
    Server(ServerArgs),
    /// Reconcile Kubeflow PyTorchJobs (kubeflow.org/v1) on the cluster of
    /// KUBECONFIG (or the in-cluster service account).
    Operator(OperatorArgs),
    /// Kubeflow Trainer's dataset or model initializer (the step a
    /// TrainJob's runtime runs before its trainer): fetches `STORAGE_URI`
    /// (s3://bucket/prefix) into the shared workspace volume.
    Initializer(InitializerArgs),
    /// What training took and cost (the KPIs of finished jobs), added up
    /// per backend, day or name.
    Kpi(KpiArgs),
    /// Print the logs of a run, or of one of its tasks.
    Logs {
        /// Run id (or an unambiguous prefix).
        run: String,
        /// Task name or key (`train`, `for-loop-2[0]/train`); all tasks when absent.
        task: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KpiFormat {
    Text,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct KpiArgs {
    /// Jobs submitted from then on: RFC 3339 or a day (2026-12-01).
    #[arg(long)]
    pub from: Option<String>,
    /// Jobs submitted before then.
    #[arg(long)]
    pub to: Option<String>,
    /// backend, day or name, or several joined by commas.
    #[arg(long, default_value = "backend")]
    pub group_by: String,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: KpiFormat,
}

#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Hide task log lines (states and the result are still shown).
    #[arg(long, short)]
    pub quiet: bool,
    /// `json` prints exactly one JSON document on stdout.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The compiled pipeline file.
    pub pipeline: PathBuf,
    /// A pipeline parameter, `name=value` (repeatable). Lists and structs as JSON.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Most tasks running at once (default: the number of CPUs).
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Do not reuse cached task results.
    #[arg(long)]
    pub no_cache: bool,
    /// Where artifacts go: a folder, or s3://bucket/prefix (tasks then work
    /// in <home>/artifacts and their artifacts are uploaded to S3). Default:
    /// the root the pipeline was compiled with, else <home>/artifacts.
    #[arg(long)]
    pub pipeline_root: Option<PathBuf>,
    /// A display name for the run.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub display: DisplayArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List recent runs.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, short, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Show one run with its tasks and state history.
    Get {
        id: String,
        #[arg(long, short, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Stop a run: its running tasks are terminated.
    Cancel { id: String },
    /// Finish a run whose `switchyard run` was killed (or that failed), keeping
    /// the tasks that already succeeded.
    Resume {
        id: String,
        #[command(flatten)]
        display: DisplayArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a TrainingJob (YAML or JSON) and follow it to the end.
    Run {
        /// The TrainingJob file.
        file: PathBuf,
        /// Override spec.backend (local, kubernetes, sagemaker, or auto: placed
        /// by spec.placement, see `job place`).
        #[arg(long)]
        backend: Option<String>,
        /// Override a field: `spec.hyperparameters.epochs=3` (repeatable; values read as YAML).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        #[command(flatten)]
        display: DisplayArgs,
    },
    /// Say where a TrainingJob would run with `backend: auto`, and why,
    /// without submitting it (every candidate's capacity, price and reason).
    Place {
        /// The TrainingJob file.
        file: PathBuf,
        /// Override a field (repeatable; values read as YAML).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        #[arg(long, short, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// List recent jobs.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, short, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Show one job (by id, id prefix or name).
    Get {
        id: String,
        #[arg(long, short, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Print a job's logs, every rank prefixed, or one rank's.
    Logs {
        id: String,
        #[arg(long)]
        rank: Option<u32>,
    },
    /// Stop a running job; every rank is terminated. A job whose following
    /// process died is stopped where it runs (StopTrainingJob, the
    /// PyTorchJob deleted).
    Cancel { id: String },
    /// Follow again, to its end, a job whose following process died: re-attaches
    /// to its SageMaker training job or PyTorchJob (a local gang starts again).
    Resume {
        id: String,
        #[command(flatten)]
        display: DisplayArgs,
    },
    /// Used by the KFP training-job component: run the job its executor input describes.
    #[command(hide = true)]
    RunComponent {
        #[arg(long)]
        executor_input: String,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8888)]
    pub port: u16,
    /// Require `Authorization: Bearer TOKEN` on every endpoint but healthz.
    /// Without it (and without --no-auth) a random token is generated, shown in
    /// the start line and written to <home>/server.token (mode 0600).
    #[arg(long, env = "SWITCHYARD_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Serve without a token. Cross-site browser requests and foreign Host
    /// names are still refused; any local program can use the API.
    #[arg(long, conflicts_with = "auth_token")]
    pub no_auth: bool,
    /// Another name clients reach the server by (a DNS name, a Service name);
    /// repeatable; `*` accepts any Host header.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Local paths in TrainingJobs posted over HTTP (sourceDir, local channels,
    /// output, checkpoint) must lie under one of these folders; repeatable
    /// (default: the server's working directory).
    #[arg(long = "path-root", value_name = "DIR")]
    pub path_roots: Vec<PathBuf>,
    /// Most tasks running at once per run (default: the number of CPUs).
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Where artifacts go when a run names no root: a folder, or
    /// s3://bucket/prefix (default: <home>/artifacts).
    #[arg(long)]
    pub pipeline_root: Option<PathBuf>,
    /// Largest accepted request body, uploads included.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Resume unfinished runs that no process holds: at start, and then every
    /// lease period (`SWITCHYARD_LEASE_SECONDS`, default 30) for runs whose
    /// server died. Safe with several servers on one PostgreSQL database (runs
    /// are leased). Training jobs submitted on their own whose following
    /// process died are followed again too (re-attached to their SageMaker
    /// job or PyTorchJob). On by default; `--recover-runs false` turns it off.
    #[arg(long)]
    pub recover_runs: Option<bool>,
    /// Runs executing at once (default: twice the CPUs); the rest wait PENDING.
    #[arg(long)]
    pub max_concurrent_runs: Option<usize>,
    /// The Kubernetes service account of runs that name none (KFP's
    /// `pipeline-runner`): their step Pods run under it.
    #[arg(
        long,
        env = "SWITCHYARD_SERVICE_ACCOUNT",
        default_value = "pipeline-runner"
    )]
    pub service_account: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TrainJobsArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitializerKind {
    Dataset,
    Model,
}

#[derive(Debug, Args)]
pub struct InitializerArgs {
    /// What to fetch: into `<workspace>/dataset` or `<workspace>/model`.
    #[arg(value_enum)]
    pub kind: InitializerKind,
    /// The volume Trainer's runtimes mount for initializers and trainer.
    #[arg(long, default_value = "/workspace")]
    pub workspace: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Print the CustomResourceDefinitions (PyTorchJob; TrainJob,
    /// TrainingRuntime, ClusterTrainingRuntime) as YAML and exit.
    #[arg(long)]
    pub print_crd: bool,
    /// Print Kubeflow Trainer's `torch-distributed` ClusterTrainingRuntime
    /// and `torch-distributed-with-initializers` (S3 initializers run by
    /// Switchyard's image) as YAML and exit.
    #[arg(long)]
    pub print_runtimes: bool,
    /// Reconcile TrainJobs: `auto` when the cluster's TrainJob CRD is
    /// Switchyard's (not Kubeflow Trainer's), `always`, or `never`.
    #[arg(long, value_enum, default_value = "auto")]
    pub trainjobs: TrainJobsArg,
    /// Serve Kubeflow Trainer's TrainJob progress API (ranks POST
    /// `trainerStatus`) on this address, e.g. 0.0.0.0:10443; needs
    /// --progress-url.
    #[arg(long, requires = "progress_url")]
    pub progress_listen: Option<std::net::SocketAddr>,
    /// The `https://HOST:PORT` pods reach --progress-listen at (the
    /// operator's Service, e.g. https://switchyard-operator.switchyard-system.svc:10443);
    /// its host is in the endpoint's certificate.
    #[arg(long, requires = "progress_listen")]
    pub progress_url: Option<String>,
    /// Re-check every job this often, in seconds (deadlines, capacity).
    #[arg(long, default_value_t = 10)]
    pub resync_seconds: u64,
    /// The cluster to reconcile (default: KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
}
