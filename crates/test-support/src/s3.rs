//! A real S3-compatible server for the tests: a single-node Garage on loopback
//! ports in a temp dir, with a layout, a bucket and a key made by this set-up.
//! `.ci/run` installs the `garage` binary; `GARAGE_BIN` may point at another one.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::free_port;

const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const BUCKET: &str = "crates";

pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    pub endpoint: String,
    client: Arc<dyn ObjectStore>,
}

fn garage_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(path);
    }
    let in_cargo_home = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/garage"))
        .filter(|p| p.exists());
    in_cargo_home.unwrap_or_else(|| PathBuf::from("garage"))
}

/// `garage server` on `config`, its output appended to `log`.
fn spawn_server(config: &std::path::Path, log: std::fs::File) -> std::io::Result<Child> {
    Command::new(garage_binary())
        .arg("-c")
        .arg(config)
        .arg("server")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}

fn s3_client(endpoint: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("garage")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .build()
            .expect("s3 client"),
    )
}

impl Garage {
    /// A Garage with the layout, bucket and key the tests use.
    pub fn start() -> Garage {
        let garage = Garage::start_bare();
        garage.set_up(&garage.config());
        garage
    }

    /// The server alone, not set up: for testing a set-up made elsewhere
    /// (the compose file's), which must create the same bucket and key.
    pub fn start_bare() -> Garage {
        let dir = tempfile::tempdir().expect("garage dir");
        let (s3_port, rpc_port) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "1799bccfd7411eddcf9ebd316bc1f5287ad12a68094e1c6ac6abde7e6feae1ec"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
                root = dir.path().display()
            ),
        )
        .expect("garage config");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("garage log");
        let child = spawn_server(&config, log).unwrap_or_else(|e| {
                panic!("cannot start garage ({e}); install it with `cargo install garage --locked` (.ci/run does)")
            });
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let client = s3_client(&endpoint);
        Garage {
            child,
            dir,
            endpoint,
            client,
        }
    }

    /// The server's configuration file.
    pub fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// The `garage` command the server runs.
    pub fn binary() -> PathBuf {
        garage_binary()
    }

    /// Whether the bucket lists with the tests' key, within 10 s.
    pub fn bucket_ready(&self) -> Result<(), String> {
        self.wait_listing(100)
    }

    fn cli(&self, config: &std::path::Path, args: &[&str]) -> Output {
        Command::new(garage_binary())
            .arg("-c")
            .arg(config)
            .args(args)
            .output()
            .expect("run garage cli")
    }

    /// Runs a set-up step, retrying while a node that just started settles
    /// (under load, its RPC can refuse the first calls after `node id` works).
    fn cli_ok(&self, config: &std::path::Path, args: &[&str]) -> String {
        let mut last = String::new();
        for _ in 0..40 {
            let output = self.cli(config, args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if output.status.success() || stderr.contains("already") {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            last = stderr;
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("garage {args:?} failed: {last}\n{}", self.log());
    }

    /// Single-node layout, bucket, key and permissions.
    fn set_up(&self, config: &std::path::Path) {
        let mut node = String::new();
        for _ in 0..100 {
            let output = self.cli(config, &["node", "id", "-q"]);
            if output.status.success() {
                node = String::from_utf8_lossy(&output.stdout).trim().to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let node_id = node
            .split('@')
            .next()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("garage did not come up:\n{}", self.log()));
        self.cli_ok(
            config,
            &["layout", "assign", "-z", "dc1", "-c", "1G", node_id],
        );
        self.cli_ok(config, &["layout", "apply", "--version", "1"]);
        self.cli_ok(config, &["bucket", "create", BUCKET]);
        self.cli_ok(
            config,
            &["key", "import", "--yes", "-n", "mirror", KEY_ID, SECRET],
        );
        self.cli_ok(
            config,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "mirror",
            ],
        );
        // The S3 endpoint serves once the layout has propagated.
        if let Err(err) = self.wait_listing(100) {
            panic!("garage S3 not ready: {err}\n{}", self.log());
        }
    }

    /// Waits until the S3 endpoint lists the bucket, trying `tries` times
    /// 100 ms apart; the last error if it never does. On a thread with its
    /// own runtime and client: this may run inside a test's runtime.
    fn wait_listing(&self, tries: usize) -> Result<(), String> {
        let endpoint = self.endpoint.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let probe = s3_client(&endpoint);
            let mut last = String::new();
            for _ in 0..tries {
                match runtime.block_on(probe.list(None).try_collect::<Vec<_>>()) {
                    Ok(_) => return Ok(()),
                    Err(err) => last = err.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(last)
        })
        .join()
        .expect("probe thread")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The environment a mirror needs to use the bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "garage"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Every object in the bucket, with its size.
    pub async fn objects(&self) -> Vec<(String, u64)> {
        let mut objects: Vec<(String, u64)> = self
            .client
            .list(None)
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .expect("list bucket");
        objects.sort();
        objects
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.client.get(&Path::from(key)).await {
            Ok(result) => Some(result.bytes().await.expect("read object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => panic!("get {key}: {err}"),
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.client
            .put(&Path::from(key), bytes.into())
            .await
            .expect("put object");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Garage {
    /// The secret of the bucket's key, for tests that send a wrong one.
    pub const SECRET: &'static str = SECRET;

    /// Stops the server (the bucket's data stays in its directory).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same ports and data, and waits
    /// until its S3 endpoint lists the bucket.
    pub fn restart(&mut self) {
        let config = self.dir.path().join("garage.toml");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage log");
        self.child = spawn_server(&config, log).expect("restart garage");
        if let Err(err) = self.wait_listing(200) {
            panic!("garage did not come back ({err}):\n{}", self.log());
        }
    }
}
