//! The moto server (PyPI `moto[server]`) as the AWS endpoint of a test, on
//! 127.0.0.1, with boto3 to set up and inspect what Switchyard did there
//! (started through tests/sagemaker/moto_server.py, which adds the two
//! SageMaker behaviours moto lacks: StopTrainingJob, jobs that take time).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{python, repo_file, success_stdout, wait_until};

/// A moto server for one test; stopped (by its PID) when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A moto server whose SageMaker training jobs train for `seconds`
    /// (InProgress, then Completed) before they end, as real ones do.
    pub fn with_training_seconds(seconds: u32) -> Moto {
        Moto::start_with(&[("SWITCHYARD_MOTO_TRAINING_SECONDS", seconds.to_string())])
    }

    /// tests/sagemaker/moto_server.py: moto, plus StopTrainingJob and jobs
    /// that run a while (moto has neither).
    pub fn start_with(env: &[(&str, String)]) -> Moto {
        Moto::start_on("127.0.0.1", env)
    }

    /// A moto server listening on `host` (the test cluster's bridge address,
    /// which its pods reach, or 127.0.0.1).
    pub fn start_on(host: &str, env: &[(&str, String)]) -> Moto {
        let port = std::net::TcpListener::bind((host, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .arg(repo_file("tests/sagemaker/moto_server.py"))
            .args(["-H", host, "-p", &port.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (scripts/setup installs it)");
        wait_until("moto to listen", Duration::from_secs(30), || {
            TcpStream::connect((host, port)).is_ok()
        });
        Moto {
            child,
            endpoint: format!("http://{host}:{port}"),
        }
    }

    /// Points a command's AWS SDK at this server.
    pub fn env(&self, c: &mut Command) {
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
    }

    /// Runs a boto3 script against the server (`s3`, `sm` and `logs` are
    /// clients; `json` is imported); returns stdout.
    pub fn boto3(&self, body: &str) -> String {
        let script = format!(
            "import boto3, json\nkw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\ns3 = boto3.client('s3', **kw)\nsm = boto3.client('sagemaker', **kw)\nlogs = boto3.client('logs', **kw)\n{body}",
            self.endpoint
        );
        success_stdout(
            Command::new(python())
                .args(["-c", &script])
                .output()
                .unwrap(),
        )
    }

    /// Creates a bucket and objects.
    pub fn put(&self, bucket: &str, objects: &[(&str, &str)]) {
        let mut body = format!("s3.create_bucket(Bucket='{bucket}')\n");
        for (k, v) in objects {
            body.push_str(&format!(
                "s3.put_object(Bucket='{bucket}', Key='{k}', Body=b'{v}')\n"
            ));
        }
        self.boto3(&body);
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.boto3(&format!(
            "for o in s3.list_objects_v2(Bucket='{bucket}').get('Contents', []): print(o['Key'])\n"
        ))
        .lines()
        .map(String::from)
        .collect()
    }

    /// Starts tests/sagemaker/stand_in.py, which plays the training instances
    /// moto does not run; returns once it is watching.
    pub fn sagemaker_stand_in(&self, accuracy: f64) -> StandIn {
        let mut child = Command::new(python())
            .args([
                &repo_file("tests/sagemaker/stand_in.py"),
                &self.endpoint,
                &accuracy.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SageMaker stand-in");
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
        assert_eq!(first.trim(), "watching", "the stand-in did not start");
        StandIn { child }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running stand-in; stopped (by its PID) when dropped.
pub struct StandIn {
    child: Child,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
