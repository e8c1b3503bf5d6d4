//! nginx in the foreground on a prefix dir of its own, for the scale-out test
//! (the shipped configuration in front of two mirrors) and the bench against
//! nginx's `proxy_cache`; stopped, workers and all, when dropped.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs::children_of;

/// A running nginx master and the workers it forked.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// Runs nginx with `config` as its nginx.conf in a new prefix dir and
    /// waits until it accepts connections on `port` (which the config must
    /// listen on); the failure, with nginx's error log, if it does not.
    /// `config` may name the prefix dir as `@@PREFIX@@` (for cache dirs).
    pub fn start(config: &str, port: u16) -> Result<Nginx, String> {
        let prefix = tempfile::tempdir().expect("create a temp dir for nginx");
        // Run as root, the master's workers run as `nobody`, which must be
        // able to reach the cache and temp dirs below the prefix.
        set_mode(prefix.path(), 0o755);
        std::fs::create_dir_all(prefix.path().join("logs")).expect("nginx logs dir");
        let conf_path = prefix.path().join("nginx.conf");
        let config = config.replace("@@PREFIX@@", &prefix.path().display().to_string());
        std::fs::write(&conf_path, config).expect("write nginx.conf");
        let p = prefix.path().display();
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg(format!(
                "daemon off; pid {p}/nginx.pid; error_log {p}/error.log;"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nginx (Debian's nginx package): {e}"))?;
        if let Err(why) = crate::wait_listening(&mut child, "nginx", port, Duration::from_secs(10))
        {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let log = tail(&prefix.path().join("error.log"), 20);
            return Err(format!("{why}: {stderr}\n{log}"));
        }
        Ok(Nginx {
            child,
            url: format!("http://127.0.0.1:{port}"),
            prefix,
        })
    }

    /// The master and every process it forked (workers, cache manager and loader).
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids
    }

    /// The last lines of nginx's error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        tail(&self.prefix.path().join("error.log"), lines)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers and
        // exits. (SIGKILL on the master alone would orphan the workers.)
        let pids = self.pids();
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().rev() {
            signal(*pid, "KILL");
        }
        let _ = self.child.wait();
    }
}

/// Sends a signal to one process by pid (without a libc binding).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The last `lines` lines of a file ("" if it cannot be read).
pub fn tail(file: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
