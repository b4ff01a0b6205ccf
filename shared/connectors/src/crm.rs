//! The CRM's member system API over HTTP (contract: `openapi/crm.yaml`): contacts kept current from
//! retail-sync's member records.

use async_trait::async_trait;

use retail_sync_contracts::events::ReasonCode;
use retail_sync_contracts::values::MemberId;
use retail_sync_core::Error;
use retail_sync_core::idempotency::IdempotencyKey;
use retail_sync_core::ports::{MemberSnapshot, MemberSync};

use crate::api::{Auth, JsonApi};
use crate::config::HttpConfig;
use crate::error::ConnectorError;

/// Cheap to clone: clones share one connection pool. Build it once per process.
#[derive(Clone)]
pub struct HttpCrm {
    api: JsonApi,
}

impl HttpCrm {
    pub fn new(config: &HttpConfig, auth: Auth) -> Result<Self, ConnectorError> {
        Ok(Self {
            api: JsonApi::new(config, auth, "crm", ReasonCode::CrmRejected)?,
        })
    }

    /// From `CRM_BASE_URL` and the optional `CRM_*` settings of [`HttpConfig::from_env`], with the
    /// authentication of [`Auth::from_env`] (credentials from the environment).
    pub fn from_env() -> Result<Self, ConnectorError> {
        Self::new(&HttpConfig::from_env("CRM")?, Auth::from_env("CRM")?)
    }

    /// The member's contact as the CRM holds it (`GET /crm/v1/contacts/{member_id}`), `None` when it
    /// has none: what a reconciliation or an operator's check reads back. It carries personal data:
    /// callers keep it out of logs.
    pub async fn contact(&self, member_id: &MemberId) -> Result<Option<MemberSnapshot>, Error> {
        self.api
            .get_optional(&format!("/crm/v1/contacts/{member_id}"))
            .await
    }
}

/// A contact is the member's whole record: the CRM replaces what it holds unless it holds a later
/// revision (an erased member's snapshot carries no personal data, and the CRM keeps none).
#[async_trait]
impl MemberSync for HttpCrm {
    async fn sync_member(&self, snapshot: &MemberSnapshot, key: &IdempotencyKey) -> Result<(), Error> {
        // Member ids are validated identifiers (`[A-Za-z0-9][A-Za-z0-9._-]*`): safe as a path segment.
        let path = format!("/crm/v1/contacts/{}", snapshot.member_id);
        let _: serde_json::Value = self.api.put(&path, snapshot, key).await?;
        Ok(())
    }
}
