//! Headless Chromium (Debian's `/usr/bin/chromium`) driven over the DevTools
//! protocol on a pipe, for what `--dump-dom` cannot do: a viewport of a
//! phone's width (a headless window is at least 500 px wide; the protocol's
//! device metrics are not), real-time polling, and questions put to the
//! page's script.
//!
//! `--remote-debugging-pipe` reads commands from fd 3 and writes answers to
//! fd 4, each JSON text ended by a NUL byte; a `sh` in front maps the
//! child's stdin and stdout there, so no file descriptor juggling is needed
//! here.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How every Chromium here runs: headless, quiet, nothing fetched of its own.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Chromium's screenshot of `url` in a window of `width` x `height`, written
/// to `path` once the page's script has had five seconds of virtual time (its
/// fetches and a couple of polling rounds); fails unless it is a real image.
pub fn screenshot(url: &str, width: u32, height: u32, path: &Path) {
    let _ = std::fs::remove_file(path);
    let profile = tempfile::tempdir().expect("browser profile");
    let shot = Command::new("chromium")
        .args(FLAGS)
        .arg("--virtual-time-budget=5000")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("chromium (Debian's chromium package, installed by .ci/run)");
    crate::assert_success(&shot);
    let png = std::fs::read(path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} looks empty",
        path.display()
    );
}

/// A Chromium with one page open.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` in a viewport of `width` x `height` CSS pixels (a phone's
    /// under 600: mobile emulation, so the page's viewport meta counts).
    pub fn open(url: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("browser profile");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg("sh")
            .arg("chromium")
            .args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (Debian's chromium package, installed by .ci/run)");
        let commands = child.stdin.take().expect("chromium's command pipe");
        let answers = BufReader::new(child.stdout.take().expect("chromium's answer pipe"));
        let mut browser = Browser {
            child,
            commands,
            answers,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": width < 600,
            }),
        );
        browser.call("Page.navigate", json!({ "url": url }));
        browser
    }

    /// Sends one command (to the page once attached) and waits for its
    /// answer, skipping events; panics on a protocol error.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).expect("a command");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
            .unwrap_or_else(|e| panic!("chromium is gone ({method}): {e}"));
        loop {
            let mut answer = Vec::new();
            let read = self
                .answers
                .read_until(0, &mut answer)
                .expect("chromium's answer");
            assert!(
                read > 0,
                "chromium closed its pipe before answering {method}"
            );
            answer.pop();
            let answer: Value = serde_json::from_slice(&answer).expect("a JSON answer");
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page; panics after `within`
    /// with what `describe` (another expression) says then.
    pub fn wait_until(&mut self, expression: &str, within: Duration, describe: &str) {
        let deadline = Instant::now() + within;
        let check =
            format!("(() => {{ try {{ return !!({expression}); }} catch {{ return false; }} }})()");
        while self.eval(&check) != Value::Bool(true) {
            if Instant::now() > deadline {
                panic!(
                    "{expression} still false after {within:?}: {}",
                    self.eval(describe)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's DOM as HTML, now.
    pub fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .expect("the page's HTML")
            .to_string()
    }
}

impl Drop for Browser {
    /// Asks Chromium to close, and kills it if it has not within a few seconds.
    fn drop(&mut self) {
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        let _ = self.commands.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
