//! The loyalty port over HTTP (contract: `openapi/loyalty.yaml`).

use async_trait::async_trait;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{Accrual, AccrualRequest, Loyalty};

use crate::api::JsonApi;
use crate::config::HttpConfig;
use crate::error::ConnectorError;

/// Cheap to clone: clones share one connection pool. Build it once per process.
#[derive(Clone)]
pub struct HttpLoyalty {
    api: JsonApi,
}

impl HttpLoyalty {
    pub fn new(config: &HttpConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            api: JsonApi::new(config, "loyalty", ReasonCode::LoyaltyRejected)?,
        })
    }

    /// From `LOYALTY_BASE_URL` and the optional `LOYALTY_*` settings of [`HttpConfig::from_env`].
    pub fn from_env() -> Result<Self, ConnectorError> {
        Self::new(&HttpConfig::from_env("LOYALTY")?)
    }
}

#[async_trait]
impl Loyalty for HttpLoyalty {
    async fn accrue(&self, request: &AccrualRequest, key: &IdempotencyKey) -> Result<Accrual, Error> {
        self.api.post("/loyalty/v1/accruals", request, key).await
    }
}
