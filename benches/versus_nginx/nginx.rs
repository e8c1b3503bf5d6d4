//! nginx with the bench's `proxy_cache` template, on a port of its own and
//! a fresh prefix dir, so a fresh, empty cache.

use std::net::SocketAddr;
use std::path::Path;

use support::bench::fail;

use support::free_port;
use support::nginx::Nginx;

/// Starts nginx with the template at `template_path` (its `@@WORKERS@@`,
/// `@@LISTEN@@` and `@@UPSTREAM@@` filled in), ending the bench if it fails.
pub fn start_nginx(template_path: &Path, upstream: SocketAddr, workers: Option<usize>) -> Nginx {
    let template = std::fs::read_to_string(template_path)
        .unwrap_or_else(|e| fail(&format!("read {}: {e}", template_path.display())));
    let port = free_port();
    let conf = template
        .replace(
            "@@WORKERS@@",
            &workers.map_or("auto".to_string(), |n| n.to_string()),
        )
        .replace("@@LISTEN@@", &format!("127.0.0.1:{port}"))
        .replace("@@UPSTREAM@@", &upstream.to_string());
    Nginx::start(&conf, port).unwrap_or_else(|why| fail(&why))
}
