//! The maintenance commands (`verify`, `gc`) behind the CLI, outside the server.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, StorageConfig};
use crate::storage::local::{EvictionReport, LocalStore};
use crate::storage::s3::S3Store;
use crate::storage::CrateStore;
use crate::upstream::UpstreamClient;
use crate::verify::{verify_store, VerifyReport};
use crate::StartError;

/// Opens the configured store without accounting (safe beside a live mirror).
fn open_store(config: &Config) -> Result<Arc<dyn CrateStore>, StartError> {
    Ok(match &config.storage {
        StorageConfig::Local { .. } => Arc::new(LocalStore::new(&config.data_dir)),
        StorageConfig::S3(s3) => Arc::new(S3Store::new(s3)?),
    })
}

/// Verifies every stored crate, printing each bad or unverifiable one.
pub async fn verify(config: &Config) -> Result<VerifyReport, StartError> {
    let store = open_store(config)?;
    let upstream = UpstreamClient::new(
        config.upstream.clone(),
        config.connect_timeout,
        config.upstream_timeout,
        config.index_ttl,
        config.upstream_concurrency,
        Arc::new(crate::metrics::Metrics::new()),
    )?
    .with_redirect_hosts(&config.upstream_redirect_hosts);
    let report = verify_store(store.as_ref(), &upstream).await?;
    for (key, why) in &report.bad {
        println!("bad {key}: {why} (removed)");
    }
    for (key, why) in &report.unverifiable {
        println!("unverifiable {key}: {why}");
    }
    Ok(report)
}

/// One eviction pass over local storage.
pub fn gc(data_dir: &Path, storage: &StorageConfig) -> Result<EvictionReport, StartError> {
    let StorageConfig::Local { max_bytes } = storage else {
        return Err(StartError::Unsupported(
            "gc applies to local storage; S3 buckets are bounded by lifecycle rules".into(),
        ));
    };
    if max_bytes.is_none() {
        return Err(StartError::Unsupported("gc needs --max-storage".into()));
    }
    let db_path = data_dir.join("sled");
    let db = sled::open(&db_path).map_err(|source| StartError::Database {
        path: db_path.clone(),
        source,
    })?;
    let tree = db
        .open_tree("crate_access")
        .map_err(|source| StartError::Database {
            path: db_path,
            source,
        })?;
    let store = LocalStore::with_accounting(data_dir, tree, *max_bytes)?;
    store.reconcile()?;
    let report = store.evict()?;
    let _ = db.flush();
    Ok(report)
}
