//! The ERP port over HTTP (contract: `openapi/erp.yaml`), and the ERP's books read back for
//! reconciliation.

use async_trait::async_trait;
use jiff::Timestamp;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{
    BookedDocument, Erp, ErpBooks, ErpCancelRequest, ErpDocument, ErpReinstateRequest, ErpReturnRequest,
    ErpSaleRequest, MemberSnapshot, MemberSync,
};

use crate::api::{Auth, JsonApi, with_window};
use crate::config::HttpConfig;
use crate::error::ConnectorError;

/// Cheap to clone: clones share one connection pool. Build it once per process.
#[derive(Clone)]
pub struct HttpErp {
    api: JsonApi,
}

impl HttpErp {
    pub fn new(config: &HttpConfig, auth: Auth) -> Result<Self, ConnectorError> {
        Ok(Self {
            api: JsonApi::new(config, auth, "erp", ReasonCode::ErpRejected)?,
        })
    }

    /// From `ERP_BASE_URL` and the optional `ERP_*` settings of [`HttpConfig::from_env`], with
    /// the authentication of [`Auth::from_env`] (credentials from the environment).
    pub fn from_env() -> Result<Self, ConnectorError> {
        Self::new(&HttpConfig::from_env("ERP")?, Auth::from_env("ERP")?)
    }

    /// Tokens fetched from the token endpoint so far by this connector and its clones.
    pub fn tokens_fetched(&self) -> u64 {
        self.api.tokens_fetched()
    }
}

#[async_trait]
impl Erp for HttpErp {
    async fn post_sale(&self, request: &ErpSaleRequest, key: &IdempotencyKey) -> Result<ErpDocument, Error> {
        self.api.post("/erp/v1/sales", request, key).await
    }

    async fn cancel_order(
        &self,
        request: &ErpCancelRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.api.post("/erp/v1/sales/cancellations", request, key).await
    }

    async fn post_return(
        &self,
        request: &ErpReturnRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.api.post("/erp/v1/returns", request, key).await
    }

    async fn reinstate(
        &self,
        request: &ErpReinstateRequest,
        key: &IdempotencyKey,
    ) -> Result<ErpDocument, Error> {
        self.api.post("/erp/v1/sales/reinstatements", request, key).await
    }
}

/// The ERP's customer accounts: the member's record, kept unless the ERP holds a later revision.
#[async_trait]
impl MemberSync for HttpErp {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        let path = format!("/erp/v1/customers/{}", snapshot.member_id);
        let _: serde_json::Value = self.api.put(&path, snapshot, key).await?;
        Ok(())
    }
}

/// The answer of `GET /erp/v1/documents`.
#[derive(serde::Deserialize)]
struct DocumentList {
    documents: Vec<BookedDocument>,
}

/// The ERP's books over `GET /erp/v1/documents`, retried and authenticated like every other call. A
/// window the ERP refuses (empty or inverted: `invalid_window`) is `Rejected`; an ERP that does not
/// answer usefully, `Unavailable`.
#[async_trait]
impl ErpBooks for HttpErp {
    async fn documents(&self, from: Timestamp, until: Timestamp) -> Result<Vec<BookedDocument>, Error> {
        let list: DocumentList = self
            .api
            .get(&with_window("/erp/v1/documents", from, until))
            .await?;
        Ok(list.documents)
    }
}
