//! How the mirror faces its clients: the URL it tells them (when set), which
//! tokens open which routes, and which peers' forwarding headers it believes.

use crate::auth::AccessPolicy;
use crate::config::Config;
use crate::proxies::TrustedProxies;

/// The request-facing settings, read by the handlers and the access gates.
pub struct ClientFacing {
    /// `public-url`: the base clients are told, instead of one from each request.
    pub public_url: Option<String>,
    /// Its host name, lowercase without the port: the one name besides
    /// loopback ones the dashboard answers to (see `origin::addressed_to_mirror`).
    pub public_host: Option<String>,
    /// Which tokens open which routes.
    pub access: AccessPolicy,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
}

impl ClientFacing {
    pub fn from_config(config: &Config) -> Self {
        Self {
            public_url: config.public_url.clone(),
            public_host: config
                .public_url
                .as_deref()
                .and_then(super::origin::host_of_url),
            access: AccessPolicy {
                clients: config.auth_tokens.clone(),
                metrics: config.metrics_tokens.clone(),
            },
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}
