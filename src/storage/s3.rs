//! `S3Store`: crate files in an S3-compatible bucket (object_store does the
//! signing). Only verified local files are uploaded, and an S3 object becomes
//! visible only when its PUT (or multipart upload) completes, so nothing partial
//! is ever readable under a final key. Several mirrors may share a bucket: keys
//! are deterministic and every write of a key carries the same bytes.
//!
//! Credentials are explicit keys, or, only when `s3-instance-credentials` is
//! set, whatever the cloud instance offers: object_store falls back to the
//! instance metadata service whenever no keys are given, so without keys and
//! without that setting the store refuses to open rather than ask it.
//! `check` (one bounded list request) tells readiness whether the bucket answers.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::ObjectStore;
use tokio::io::AsyncWriteExt;

use super::{CrateStore, ObjectInfo, StorageError, StoredObject};
use crate::config::S3Config;

/// Objects up to this size are one PUT; larger ones are multipart uploads.
const SINGLE_PUT_LIMIT: usize = 8 << 20;
/// Lifetime of presigned download URLs.
const PRESIGNED_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest a bucket check may take (object_store retries unreachable
/// endpoints for minutes; a readiness probe must answer long before that).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one check's result answers further checks, so that frequent
/// readiness probes cost the bucket at most one request per this.
const CHECK_REUSE: Duration = Duration::from_secs(2);

/// The settings that provide S3 credentials, for error messages.
const KEY_ID_SETTING: &str = "aws-access-key-id (AWS_ACCESS_KEY_ID)";
const SECRET_SETTING: &str = "aws-secret-access-key (AWS_SECRET_ACCESS_KEY)";

pub struct S3Store {
    bucket: Arc<AmazonS3>,
    /// Prefix ending in `/`, or empty.
    prefix: String,
    redirect: bool,
    /// The last check: when, and its result (the reason when it failed).
    last_check: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl S3Store {
    /// Opens the bucket client; fails when no credentials can be had without
    /// asking the instance metadata service and that was not allowed.
    pub fn new(config: &S3Config) -> Result<Self, StorageError> {
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => {
                return Err(StorageError::Settings(format!(
                    "S3 storage has {KEY_ID_SETTING} but no {SECRET_SETTING}"
                )))
            }
            (None, Some(_)) => {
                return Err(StorageError::Settings(format!(
                    "S3 storage has {SECRET_SETTING} but no {KEY_ID_SETTING}"
                )))
            }
            (None, None) if !config.instance_credentials => {
                return Err(StorageError::Settings(format!(
                    "S3 storage has no credentials: set {KEY_ID_SETTING} and {SECRET_SETTING}, or s3-instance-credentials (CRATE_MIRROR_S3_INSTANCE_CREDENTIALS) to take them from the instance metadata service"
                )))
            }
            (None, None) => {}
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let prefix = if config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.prefix)
        };
        Ok(Self {
            bucket: Arc::new(builder.build()?),
            prefix,
            redirect: config.redirect,
            last_check: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether the bucket answers a list request with these credentials: `Err`
    /// holds the reason. Bounded by `CHECK_TIMEOUT`; a result younger than
    /// `CHECK_REUSE` is reused, and concurrent callers share one request.
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last_check.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < CHECK_REUSE {
                return result.clone();
            }
        }
        let result = match tokio::time::timeout(CHECK_TIMEOUT, self.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "the bucket did not answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// One list request under the mirror's prefix (the first page only).
    async fn probe(&self) -> Result<(), object_store::Error> {
        let root = Path::from(format!("{}crates", self.prefix));
        match self.bucket.list(Some(&root)).next().await {
            Some(Err(err)) => Err(err),
            Some(Ok(_)) | None => Ok(()),
        }
    }

    fn path_of(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }
}

fn is_not_found(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotFound { .. })
}

#[async_trait::async_trait]
impl CrateStore for S3Store {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StorageError> {
        match self.bucket.get(&self.path_of(key)).await {
            Ok(result) => Ok(Some(StoredObject {
                len: result.meta.size,
                body: result.into_stream().map_err(std::io::Error::other).boxed(),
                from_memory: false,
            })),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn commit(&self, key: &str, verified: &FsPath) -> Result<(), StorageError> {
        let mut file = tokio::fs::File::open(verified).await?;
        let store: Arc<dyn ObjectStore> = self.bucket.clone();
        let mut upload = BufWriter::with_capacity(store, self.path_of(key), SINGLE_PUT_LIMIT);
        let copied = tokio::io::copy(&mut file, &mut upload).await;
        match copied {
            Ok(_) => upload.shutdown().await?,
            Err(err) => {
                // Abandon the multipart upload, if one was started.
                let _ = upload.abort().await;
                return Err(err.into());
            }
        }
        tokio::fs::remove_file(verified).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.bucket.delete(&self.path_of(key)).await {
            Err(err) if !is_not_found(&err) => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = Path::from(format!("{}crates", self.prefix));
        let objects: Vec<_> = self.bucket.list(Some(&root)).try_collect().await?;
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                let key = meta
                    .location
                    .as_ref()
                    .strip_prefix(&self.prefix)?
                    .to_string();
                Some(ObjectInfo {
                    key,
                    size: meta.size,
                })
            })
            .collect())
    }

    async fn redirect_url(&self, key: &str) -> Result<Option<String>, StorageError> {
        if !self.redirect {
            return Ok(None);
        }
        let path = self.path_of(key);
        match self.bucket.head(&path).await {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let url = self
            .bucket
            .signed_url(reqwest::Method::GET, &path, PRESIGNED_TTL)
            .await?;
        Ok(Some(url.to_string()))
    }
}
