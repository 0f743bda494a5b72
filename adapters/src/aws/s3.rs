//! The object store on Amazon S3: both halves of the port.
//!
//! A batch is one `PutObject` with its metadata as user metadata (`x-amz-meta-*`, under S3's
//! 2 KB; core keeps it small) and stored as compressed, with no `Content-Encoding`: an HTTP client
//! that decompresses transparently would hand the importer other bytes than the checksum's, and
//! Redshift's COPY takes the format from its own `GZIP` / `ZSTD` option. S3 announces the object
//! to SQS itself (the bucket's event notification), so the writer sends nothing.
//!
//! The reader goes wherever a notification points: another bucket than the writer's is fine.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use microbatch_core::batch::{BatchMetadata, Compression};
use microbatch_core::ports::{Bytes, ObjectLocation, ObjectReader, ObjectWriter, PortError, StoredObject};

use super::{Aws, port_error};

const SERVICE: &str = "s3";

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// `path_style`: `http://host/bucket/key` addressing, which emulators on `localhost` need.
    pub fn new(aws: &Aws, bucket: impl Into<String>, path_style: bool) -> Self {
        S3Store {
            client: aws.s3(path_style),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `microbatch check`: the bucket exists and these credentials reach it (`HeadBucket`).
    pub async fn probe(&self) -> Result<String, String> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(format!("s3 bucket {:?}: reachable", self.bucket)),
            Err(e) => Err(port_error(SERVICE, &format!("bucket {:?}", self.bucket), e).to_string()),
        }
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<(), PortError> {
        let doing = format!("cannot write s3://{}/{key}", self.bucket);
        let mut call = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        if let Some(metadata) = metadata {
            call = call.set_metadata(Some(metadata.into_iter().collect()));
        }
        call.send().await.map_err(|e| port_error(SERVICE, &doing, e))?;
        Ok(())
    }
}

fn content_type_of(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "text/csv",
        Compression::Gzip => "application/gzip",
        Compression::Zstd => "application/zstd",
    }
}

impl ObjectWriter for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_batch(&self, key: &str, body: Bytes, metadata: &BatchMetadata) -> Result<(), PortError> {
        self.put_object(
            key,
            body,
            content_type_of(metadata.compression),
            Some(metadata.to_pairs()),
        )
        .await
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), PortError> {
        self.put_object(key, body, content_type, None).await
    }
}

impl ObjectReader for S3Store {
    async fn head(&self, at: &ObjectLocation) -> Result<Option<BTreeMap<String, String>>, PortError> {
        let doing = format!("cannot read the metadata of {at}");
        match self
            .client
            .head_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(port_error(SERVICE, &doing, e)),
        }
    }

    async fn get(&self, at: &ObjectLocation) -> Result<Option<StoredObject>, PortError> {
        let doing = format!("cannot read {at}");
        let out = match self
            .client
            .get_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(port_error(SERVICE, &doing, e)),
        };
        let metadata = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| PortError::unavailable(SERVICE, format!("{doing}: the body broke off: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(Some(StoredObject { body, metadata }))
    }
}
