//! tinyproxy (Debian's package) in the foreground on a loopback port: the
//! forward proxy a company puts between its machines and the internet, for
//! the tests of upstream traffic through `HTTPS_PROXY` (a `CONNECT` tunnel)
//! and `HTTP_PROXY`. Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running tinyproxy and the log in which it names each request.
pub struct Tinyproxy {
    child: Child,
    /// `http://127.0.0.1:PORT`, what `HTTPS_PROXY` is set to.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port, allowing only loopback
    /// clients and (no `ConnectPort` line) `CONNECT` to any port, and waits
    /// until it accepts connections.
    pub fn start() -> Result<Tinyproxy, String> {
        let dir = tempfile::tempdir().expect("temp dir for tinyproxy");
        let port = crate::free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n\
                 MaxClients 100\nLogLevel Connect\nLogFile \"{}\"\n",
                log.display()
            ),
        )
        .expect("write tinyproxy.conf");
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run tinyproxy (Debian's tinyproxy package): {e}"))?;
        crate::wait_listening(&mut child, "tinyproxy", port, Duration::from_secs(10)).map_err(
            |why| {
                format!(
                    "{why}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        )?;
        Ok(Tinyproxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    /// The request lines tinyproxy logged so far (`CONNECT 127.0.0.1:4431
    /// HTTP/1.1`, or `GET` with an absolute URL for plain HTTP).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Request (file descriptor"))
            .filter_map(|line| line.split_once("): "))
            .map(|(_, request)| request.to_string())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
