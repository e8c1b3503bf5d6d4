//! `S3Store`: crate files in an S3-compatible bucket (object_store does the
//! signing). Only verified local files are uploaded, and an S3 object becomes
//! visible only when its PUT (or multipart upload) completes, so nothing partial
//! is ever readable under a final key. Several mirrors may share a bucket: keys
//! are deterministic and every write of a key carries the same bytes.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

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

pub struct S3Store {
    bucket: Arc<AmazonS3>,
    /// Prefix ending in `/`, or empty.
    prefix: String,
    redirect: bool,
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<Self, StorageError> {
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
        })
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
