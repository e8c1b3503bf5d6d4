//! The git index, for cargo clients without sparse support: a bare repository
//! under `<data-dir>/git/index.git` whose tree is `config.json` plus every cached
//! index file (the sparse bodies, byte for byte), rebuilt in the background a
//! short while after cached files change, and served through
//! `git upload-pack --stateless-rpc` (git is a runtime dependency when enabled).
//!
//! Commits are incremental (each one's parent is the previous one, and it writes
//! only the files that changed) so that a client's repeated fetch negotiates
//! against its last commit and receives just the changed blobs. `git
//! fast-import` writes the objects first and moves the branch last, under git's
//! ref lock, so a clone or fetch during a rebuild sees the old commit or the new
//! one, never a broken repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use crate::index::store::IndexStore;
use crate::names::CrateName;

const BRANCH: &str = "refs/heads/master";
/// Key under which the committed config.json's body is remembered.
const CONFIG_KEY: &str = "\0config.json";

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is required for the git index but could not be run: {0}")]
    GitMissing(String),
    #[error("git {command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("git I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("git index state: {0}")]
    State(#[from] sled::Error),
    #[error("index store: {0}")]
    Store(#[from] crate::index::store::StoreError),
}

/// Counters for `/api/stats`.
#[derive(Debug, Default)]
pub struct GitStats {
    pub builds: AtomicU64,
    pub files: AtomicU64,
    pub failures: AtomicU64,
}

pub struct GitIndex {
    repo: PathBuf,
    public_url: String,
    /// A private mirror: config.json says so, or cargo would send no token
    /// with its downloads and get 401 on every one.
    auth_required: bool,
    /// What the branch's tip holds: key → sha256 of the body.
    committed: sled::Tree,
    store: IndexStore,
    stats: GitStats,
}

impl GitIndex {
    /// Checks that git runs and creates the bare repository if needed.
    /// `auth_required` is whether the mirror is private (has client tokens).
    pub async fn open(
        data_dir: &Path,
        public_url: String,
        auth_required: bool,
        store: IndexStore,
        committed: sled::Tree,
    ) -> Result<Self, GitError> {
        let version = Command::new("git")
            .arg("--version")
            .output()
            .await
            .map_err(|e| GitError::GitMissing(e.to_string()))?;
        if !version.status.success() {
            return Err(GitError::GitMissing(
                String::from_utf8_lossy(&version.stderr).into_owned(),
            ));
        }
        let repo = data_dir.join("git").join("index.git");
        if !repo.join("HEAD").exists() {
            tokio::fs::create_dir_all(&repo).await?;
            run_git(
                &repo,
                &["init", "--bare", "--quiet", "--initial-branch=master"],
                None,
            )
            .await?;
            // A new repository: nothing is committed yet.
            committed.clear()?;
        }
        // Served over HTTP by us; never via the dumb protocol.
        run_git(&repo, &["config", "uploadpack.allowFilter", "true"], None).await?;
        Ok(Self {
            repo,
            public_url,
            auth_required,
            committed,
            store,
            stats: GitStats::default(),
        })
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "builds": self.stats.builds.load(Ordering::Relaxed),
            "files": self.stats.files.load(Ordering::Relaxed),
            "failures": self.stats.failures.load(Ordering::Relaxed),
        })
    }

    fn config_json(&self) -> Vec<u8> {
        let mut config = serde_json::json!({ "dl": format!("{}/api/v1/crates", self.public_url) });
        // The same key the sparse config.json carries in private mode. A change
        // of mode changes the body's hash, so the next rebuild commits it.
        if self.auth_required {
            config["auth-required"] = true.into();
        }
        let mut body = serde_json::to_vec_pretty(&config).unwrap_or_default();
        body.push(b'\n');
        body
    }

    /// Commits what changed since the last build; returns whether it committed.
    pub async fn rebuild(&self) -> Result<bool, GitError> {
        let (stream, files) = self.changes()?;
        let Some(stream) = stream else {
            return Ok(false);
        };
        run_git(
            &self.repo,
            &["fast-import", "--quiet", "--done"],
            Some(stream.bytes),
        )
        .await?;
        // Only now is the new state the committed one.
        let mut batch = sled::Batch::default();
        for (key, hash) in stream.committed {
            match hash {
                Some(hash) => batch.insert(key.as_bytes(), hash.as_bytes()),
                None => batch.remove(key.as_bytes()),
            }
        }
        self.committed.apply_batch(batch)?;
        self.stats.builds.fetch_add(1, Ordering::Relaxed);
        self.stats.files.store(files, Ordering::Relaxed);
        // Keeps the pack count bounded; acts only past git's thresholds.
        if let Err(err) = run_git(&self.repo, &["gc", "--auto", "--quiet"], None).await {
            tracing::warn!(error = %err, "git gc --auto failed");
        }
        Ok(true)
    }

    /// The fast-import stream for the files that differ from the last commit.
    fn changes(&self) -> Result<(Option<ImportStream>, u64), GitError> {
        // key → (path in the tree, body)
        let mut current: BTreeMap<String, (String, Bytes)> = BTreeMap::new();
        for entry in self.store.iter() {
            let (key, record) = entry?;
            let Ok(name) = CrateName::parse(&key) else {
                continue;
            };
            current.insert(key, (name.index_path(), record.body));
        }
        let files = current.len() as u64 + 1;
        let config = Bytes::from(self.config_json());
        let config_hash = hash_hex(&config);

        let mut committed: BTreeMap<String, String> = BTreeMap::new();
        for entry in self.committed.iter() {
            let (key, hash) = entry?;
            committed.insert(
                String::from_utf8_lossy(&key).into_owned(),
                String::from_utf8_lossy(&hash).into_owned(),
            );
        }
        let tip_exists = self.tip_exists()?;
        let mut ops: Vec<(String, Option<String>)> = Vec::new();
        let mut body = Vec::new();
        if committed.is_empty() {
            // Nothing known about the tip (a first build, or a crash between the
            // import and the bookkeeping): write the whole tree afresh.
            body.extend_from_slice(b"deleteall\n");
        }
        if committed.get(CONFIG_KEY) != Some(&config_hash) {
            write_modify(&mut body, "config.json", &config);
            ops.push((CONFIG_KEY.to_string(), Some(config_hash)));
        }
        for (key, (path, data)) in &current {
            let hash = hash_hex(data);
            if committed.get(key) != Some(&hash) {
                write_modify(&mut body, path, data);
                ops.push((key.clone(), Some(hash)));
            }
        }
        for key in committed.keys() {
            if key != CONFIG_KEY && !current.contains_key(key) {
                if let Ok(name) = CrateName::parse(key) {
                    body.extend_from_slice(format!("D {}\n", name.index_path()).as_bytes());
                }
                ops.push((key.clone(), None));
            }
        }
        if ops.is_empty() {
            return Ok((None, files));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let message = format!("Update {} index files\n", ops.len());
        let mut stream = Vec::with_capacity(body.len() + 256);
        stream.extend_from_slice(format!("commit {BRANCH}\n").as_bytes());
        stream.extend_from_slice(
            format!("committer crate-mirror <crate-mirror@localhost> {now} +0000\n").as_bytes(),
        );
        stream.extend_from_slice(format!("data {}\n{message}", message.len()).as_bytes());
        if tip_exists {
            stream.extend_from_slice(format!("from {BRANCH}^0\n").as_bytes());
        }
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"\ndone\n");
        Ok((
            Some(ImportStream {
                bytes: stream,
                committed: ops,
            }),
            files,
        ))
    }

    fn tip_exists(&self) -> Result<bool, GitError> {
        let status = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", BRANCH])
            .env("GIT_DIR", &self.repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(status.success())
    }

    /// Rebuilds `delay` after the index files change, coalescing bursts; runs
    /// until the process ends.
    pub async fn run(self: Arc<Self>, changes: Arc<tokio::sync::Notify>, delay: Duration) {
        loop {
            match self.rebuild().await {
                Ok(true) => tracing::info!(
                    files = self.stats.files.load(Ordering::Relaxed),
                    "git index rebuilt"
                ),
                Ok(false) => {}
                Err(err) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %err, "git index rebuild failed");
                }
            }
            changes.notified().await;
            tokio::time::sleep(delay).await;
        }
    }

    /// The ref advertisement for `info/refs?service=git-upload-pack`.
    pub async fn advertise_refs(&self) -> Result<Vec<u8>, GitError> {
        let output = Command::new("git")
            .args(["upload-pack", "--stateless-rpc", "--advertise-refs", "."])
            .current_dir(&self.repo)
            .env("GIT_PROTOCOL", "")
            .stdin(Stdio::null())
            .output()
            .await?;
        if !output.status.success() {
            return Err(GitError::Command {
                command: "upload-pack --advertise-refs".into(),
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        let mut body = pkt_line(b"# service=git-upload-pack\n");
        body.extend_from_slice(b"0000");
        body.extend_from_slice(&output.stdout);
        Ok(body)
    }

    /// Answers one `git-upload-pack` request (already decompressed), streaming
    /// the pack as git writes it.
    pub async fn upload_pack(
        &self,
        request: Bytes,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>>, GitError> {
        let mut child = Command::new("git")
            .args(["upload-pack", "--stateless-rpc", "."])
            .current_dir(&self.repo)
            .env("GIT_PROTOCOL", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        // Feed the request while the response streams; reap the process after.
        tokio::spawn(async move {
            let _ = stdin.write_all(&request).await;
            drop(stdin);
            let _ = child.wait().await;
        });
        Ok(ReaderStream::new(stdout))
    }
}

struct ImportStream {
    bytes: Vec<u8>,
    /// Keys with their new body hash, or `None` when removed.
    committed: Vec<(String, Option<String>)>,
}

fn hash_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

fn write_modify(out: &mut Vec<u8>, path: &str, data: &[u8]) {
    out.extend_from_slice(format!("M 100644 inline {path}\ndata {}\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.push(b'\n');
}

fn pkt_line(data: &[u8]) -> Vec<u8> {
    let mut line = format!("{:04x}", data.len() + 4).into_bytes();
    line.extend_from_slice(data);
    line
}

async fn run_git(repo: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Result<(), GitError> {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_DIR", repo)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(&input).await?;
        }
    }
    let output = child.wait_with_output().await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(GitError::Command {
            command: args.first().copied().unwrap_or("").to_string(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkt_lines_carry_their_length() {
        assert_eq!(
            super::pkt_line(b"# service=git-upload-pack\n"),
            b"001e# service=git-upload-pack\n"
        );
    }
}
