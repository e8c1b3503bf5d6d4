//! The `route` label: which kind of route answered a request, from a fixed
//! set. The HTTP layer attaches one to each route it registers, so the label
//! follows what the router matched, never a second reading of the raw path;
//! and the dashboard's request rate counts only the registry routes, so its
//! own polling, the probes and scrapes do not show up as traffic.

/// The kind of route that answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/index/config.json`.
    Config,
    /// An index file under `/index/`.
    Index,
    /// A crate download under `/api/v1/crates/`.
    Download,
    /// The registry web API beside downloads: search, crate metadata,
    /// refused writes.
    Api,
    /// The git index under `/git/`.
    Git,
    Health,
    Ready,
    Metrics,
    /// The dashboard's JSON: `/api/stats`, `/api/settings`, `/api/crates`.
    Stats,
    /// The dashboard's page, assets and `/api/cargo-config`.
    Dashboard,
    /// No route matched, or the request was refused before routing.
    Other,
}

impl Route {
    /// Every value, in the order the metrics create their series.
    pub const ALL: [Route; 11] = [
        Route::Config,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Stats,
        Route::Dashboard,
        Route::Index,
        Route::Download,
        Route::Api,
        Route::Git,
        Route::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Config => "config",
            Route::Index => "index",
            Route::Download => "download",
            Route::Api => "api",
            Route::Git => "git",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Stats => "stats",
            Route::Dashboard => "dashboard",
            Route::Other => "other",
        }
    }

    /// Whether requests on this route are a registry client's (cargo, git):
    /// what the dashboard's request figures and bytes served count.
    pub fn is_registry(self) -> bool {
        matches!(
            self,
            Route::Config | Route::Index | Route::Download | Route::Api | Route::Git
        )
    }

    /// The label values of the registry routes.
    pub fn registry_labels() -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(|route| route.is_registry())
            .map(Route::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_only_registry_routes_are_client_traffic() {
        let mut labels: Vec<&str> = Route::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Route::ALL.len());
        assert_eq!(
            Route::registry_labels().collect::<Vec<_>>(),
            ["config", "index", "download", "api", "git"]
        );
    }
}
