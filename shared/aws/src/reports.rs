//! Where the scheduled reconciliation keeps its reports: an S3 bucket (versioned by the template, so a
//! rerun of a window keeps the earlier report as a previous version).

use aws_config::SdkConfig;

use retail_sync_core::Error;

#[derive(Clone)]
pub struct ReportBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn s3_error<E>(what: &str, e: aws_sdk_s3::error::SdkError<E>) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    Error::unavailable("s3", format!("{what}: {}", crate::error::sdk_text(&e)))
}

impl ReportBucket {
    /// `path_style` for an endpoint that is not AWS's (an emulator), where bucket names are not hosts.
    pub fn new(sdk: &SdkConfig, bucket: impl Into<String>, path_style: bool) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map_err(|e| s3_error(&format!("PutObject {key}"), e))?;
        Ok(())
    }

    /// The object's bytes; `None` when there is no such key.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::unavailable("s3", format!("GetObject {key}: {e}")))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_error(&format!("GetObject {key}"), e)),
        }
    }
}
