//! Blobs in an S3 bucket (or any S3-compatible server). Conditional writes use S3's own
//! `If-None-Match: *` and `If-Match`, so the server decides atomically across every process.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, timeout::TimeoutConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Blob, BlobKey, BlobMeta, BlobStore, Condition};
use crate::config::S3Config;
use crate::error::{StoreError, StoreResult};

/// What `x-amz-copy-source` leaves unencoded besides letters and digits.
const COPY_SOURCE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[derive(Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3BlobStore {
    /// Builds a client from the config; credentials come from the config when given,
    /// otherwise from the AWS default chain (environment, profile, instance role).
    pub async fn connect(config: &S3Config) -> anyhow::Result<Self> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(30))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts);
        if let Some((key_id, secret)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                key_id.clone(),
                secret.expose().to_string(),
                None,
                None,
                "engram-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        })
    }

    /// Fails unless the bucket exists and these credentials may use it.
    pub async fn verify_access(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .with_context(|| format!("cannot use S3 bucket {:?}", self.bucket))?;
        Ok(())
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn meta(
        &self,
        object_key: &str,
        etag: Option<&str>,
        size: Option<i64>,
        modified: Option<&aws_sdk_s3::primitives::DateTime>,
    ) -> BlobMeta {
        BlobMeta {
            key: object_key.strip_prefix(&self.prefix).unwrap_or(object_key).to_string(),
            etag: etag.unwrap_or_default().trim_matches('"').to_ascii_lowercase(),
            size: size.unwrap_or(0).max(0) as u64,
            last_modified: modified
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                .unwrap_or_else(Utc::now),
        }
    }
}

/// One line naming what S3 said, without the SDK's nested debug output.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(error: &SdkError<E>) -> String {
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => format!("{inner}"),
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    }
}

fn http_status<E>(error: &SdkError<E>) -> Option<u16> {
    match error {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        _ => None,
    }
}

fn backend_error<E: ProvideErrorMetadata + std::error::Error + 'static>(error: SdkError<E>) -> StoreError {
    StoreError::backend("s3", anyhow::anyhow!(describe(&error)))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn backend_name(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &BlobKey, body: Bytes, condition: Condition) -> StoreResult<BlobMeta> {
        let object_key = self.object_key(key.as_str());
        let digest = super::md5_digest(&body);
        let size = body.len() as i64;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .body(ByteStream::from(body));
        request = match &condition {
            Condition::None => request,
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(format!("\"{etag}\"")),
        };
        match request.send().await {
            Ok(output) => {
                let etag = output.e_tag().map(str::to_string).unwrap_or_else(|| hex::encode(digest));
                let now = aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now());
                Ok(self.meta(&object_key, Some(&etag), Some(size), Some(&now)))
            }
            // 412: the condition did not hold; 409: a concurrent conditional write won;
            // 404: If-Match on a key that does not exist.
            Err(e) if matches!(http_status(&e), Some(412 | 409)) => Err(StoreError::PreconditionFailed),
            Err(e) if matches!(condition, Condition::Matches(_)) && http_status(&e) == Some(404) => {
                Err(StoreError::PreconditionFailed)
            }
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn get(&self, key: &BlobKey) -> StoreResult<Option<Blob>> {
        let object_key = self.object_key(key.as_str());
        let output = match self.client.get_object().bucket(&self.bucket).key(&object_key).send().await {
            Ok(output) => output,
            Err(e) if http_status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(backend_error(e)),
        };
        let meta = self.meta(&object_key, output.e_tag(), output.content_length(), output.last_modified());
        let body = output.body.collect().await.map_err(|e| StoreError::backend("s3", e))?.into_bytes();
        Ok(Some(Blob { meta: BlobMeta { size: body.len() as u64, ..meta }, body }))
    }

    async fn head(&self, key: &BlobKey) -> StoreResult<Option<BlobMeta>> {
        let object_key = self.object_key(key.as_str());
        match self.client.head_object().bucket(&self.bucket).key(&object_key).send().await {
            Ok(output) => Ok(Some(self.meta(
                &object_key,
                output.e_tag(),
                output.content_length(),
                output.last_modified(),
            ))),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(backend_error(e)),
        }
    }

    /// A server-side copy under `x-amz-copy-source-if-match`. Some S3-compatible servers
    /// ignore that condition, so the source is checked first and the copy's etag after; a
    /// copy of another version is removed again.
    async fn copy(&self, from: &BlobKey, to: &BlobKey, source_etag: &str) -> StoreResult<BlobMeta> {
        let matches = |etag: &str| etag.trim_matches('"').eq_ignore_ascii_case(source_etag);
        if !self.head(from).await?.is_some_and(|meta| matches(&meta.etag)) {
            return Err(StoreError::PreconditionFailed);
        }
        let source =
            format!("{}/{}", self.bucket, utf8_percent_encode(&self.object_key(from.as_str()), COPY_SOURCE));
        let object_key = self.object_key(to.as_str());
        let result = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .copy_source(source)
            .copy_source_if_match(format!("\"{source_etag}\""))
            .send()
            .await;
        let copied = match result {
            Ok(output) => output.copy_object_result,
            Err(e) if matches!(http_status(&e), Some(412 | 404)) => {
                return Err(StoreError::PreconditionFailed);
            }
            Err(e) => return Err(backend_error(e)),
        };
        let etag = copied.as_ref().and_then(|c| c.e_tag()).unwrap_or(source_etag).to_string();
        if !matches(&etag) {
            self.delete(to, Condition::None).await?;
            return Err(StoreError::PreconditionFailed);
        }
        Ok(self.meta(&object_key, Some(&etag), None, copied.as_ref().and_then(|c| c.last_modified())))
    }

    async fn delete(&self, key: &BlobKey, condition: Condition) -> StoreResult<bool> {
        let object_key = self.object_key(key.as_str());
        // S3 answers 204 whether or not the key existed, so existence is read first.
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        let mut request = self.client.delete_object().bucket(&self.bucket).key(&object_key);
        if let Condition::Matches(etag) = &condition {
            request = request.if_match(format!("\"{etag}\""));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(http_status(&e), Some(412 | 409)) => Err(StoreError::PreconditionFailed),
            Err(e) if http_status(&e) == Some(404) => Ok(false),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlobMeta>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.object_key(prefix))
                .max_keys((limit - out.len()).min(1000) as i32);
            if let Some(token) = &token {
                request = request.continuation_token(token);
            } else if let Some(after) = after {
                request = request.start_after(self.object_key(after));
            }
            let page = request.send().await.map_err(backend_error)?;
            for object in page.contents() {
                let Some(object_key) = object.key() else { continue };
                out.push(self.meta(object_key, object.e_tag(), object.size(), object.last_modified()));
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn check(&self) -> StoreResult<()> {
        self.verify_access().await.map_err(|e| StoreError::backend("s3", e))
    }
}
