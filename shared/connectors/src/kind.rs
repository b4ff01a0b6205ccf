//! Which dialect each system speaks, from configuration: `ERP_KIND` (`system-api`, the default, or
//! `sap-s4hana`) and `LOYALTY_KIND` (`system-api` or `salesforce-loyalty`), and the port adapter each
//! gives: for the workflows (`Erp`, `Loyalty`) and for reconciliation (`ErpBooks`, `LoyaltyBooks`, which
//! only the system API reads back so far).

use std::sync::Arc;

use retail_sync_core::ports::{Erp, ErpBooks, Loyalty, LoyaltyBooks};

use crate::api::Auth;
use crate::config::HttpConfig;
use crate::error::ConnectorError;
use crate::{HttpErp, HttpLoyalty, SalesforceLoyalty, SalesforceMapping, SapErp, SapMapping};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErpKind {
    /// retail-sync's own ERP system API (`openapi/erp.yaml`), for an ERP behind a translation service.
    SystemApi,
    SapS4Hana,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoyaltyKind {
    /// retail-sync's own loyalty system API (`openapi/loyalty.yaml`).
    SystemApi,
    SalesforceLoyalty,
}

fn kind_of<K: Copy>(
    var: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    kinds: &[(&str, K)],
) -> Result<K, ConnectorError> {
    let value = lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Ok(kinds[0].1);
    };
    kinds
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, k)| *k)
        .ok_or_else(|| ConnectorError::Config {
            var: var.to_owned(),
            message: format!(
                "{value:?} is not one of {}",
                kinds.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        })
}

impl ErpKind {
    pub const NAMES: [(&'static str, Self); 2] =
        [("system-api", Self::SystemApi), ("sap-s4hana", Self::SapS4Hana)];

    /// `ERP_KIND`, `system-api` when unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConnectorError> {
        kind_of("ERP_KIND", &lookup, &Self::NAMES)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

impl LoyaltyKind {
    pub const NAMES: [(&'static str, Self); 2] = [
        ("system-api", Self::SystemApi),
        ("salesforce-loyalty", Self::SalesforceLoyalty),
    ];

    /// `LOYALTY_KIND`, `system-api` when unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConnectorError> {
        kind_of("LOYALTY_KIND", &lookup, &Self::NAMES)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A system's adapter serves the workflows and reconciliation alike: each kind implements both ports.
trait ErpSystem: Erp + ErpBooks {}
impl<T: Erp + ErpBooks> ErpSystem for T {}
trait LoyaltySystem: Loyalty + LoyaltyBooks {}
impl<T: Loyalty + LoyaltyBooks> LoyaltySystem for T {}

/// The ERP adapter `ERP_KIND` names, over `ERP_BASE_URL` and the `ERP_*` settings (the SAP mapping
/// from `ERP_SAP_MAPPING` or `ERP_SAP_MAPPING_FILE`), authenticating with `auth`.
fn erp_system(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ErpSystem>, ConnectorError> {
    let config = HttpConfig::from_lookup("ERP", &lookup)?;
    Ok(match ErpKind::from_lookup(&lookup)? {
        ErpKind::SystemApi => Arc::new(HttpErp::new(&config, auth)?),
        ErpKind::SapS4Hana => Arc::new(SapErp::new(
            &config,
            auth,
            SapMapping::from_lookup("ERP", &lookup)?,
        )?),
    })
}

/// The loyalty adapter `LOYALTY_KIND` names, over `LOYALTY_BASE_URL` (for Salesforce, the org's
/// instance URL) and the `LOYALTY_*` settings.
fn loyalty_system(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn LoyaltySystem>, ConnectorError> {
    let config = HttpConfig::from_lookup("LOYALTY", &lookup)?;
    Ok(match LoyaltyKind::from_lookup(&lookup)? {
        LoyaltyKind::SystemApi => Arc::new(HttpLoyalty::new(&config, auth)?),
        LoyaltyKind::SalesforceLoyalty => Arc::new(SalesforceLoyalty::new(
            &config,
            auth,
            SalesforceMapping::from_lookup("LOYALTY", &lookup)?,
        )?),
    })
}

/// The ERP port of the adapter `ERP_KIND` names (see `erp_system`).
pub fn erp_from_lookup(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Erp>, ConnectorError> {
    Ok(erp_system(auth, lookup)?)
}

/// The loyalty port of the adapter `LOYALTY_KIND` names (see `loyalty_system`).
pub fn loyalty_from_lookup(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Loyalty>, ConnectorError> {
    Ok(loyalty_system(auth, lookup)?)
}

/// [`erp_from_lookup`] over the environment.
pub fn erp_from_env(auth: Auth) -> Result<Arc<dyn Erp>, ConnectorError> {
    erp_from_lookup(auth, |name| std::env::var(name).ok())
}

/// [`loyalty_from_lookup`] over the environment.
pub fn loyalty_from_env(auth: Auth) -> Result<Arc<dyn Loyalty>, ConnectorError> {
    loyalty_from_lookup(auth, |name| std::env::var(name).ok())
}

/// The ERP's books (for reconciliation), read back through the adapter `ERP_KIND` names: the system
/// API's `GET /erp/v1/documents`, or SAP's sales orders and customer returns.
pub fn erp_books_from_lookup(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ErpBooks>, ConnectorError> {
    Ok(erp_system(auth, lookup)?)
}

/// The loyalty platform's ledger (for reconciliation), read back through the adapter `LOYALTY_KIND`
/// names: the system API's `GET /loyalty/v1/transactions`, or Salesforce's transaction journals.
pub fn loyalty_books_from_lookup(
    auth: Auth,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn LoyaltyBooks>, ConnectorError> {
    Ok(loyalty_system(auth, lookup)?)
}

/// [`erp_books_from_lookup`] over the environment.
pub fn erp_books_from_env(auth: Auth) -> Result<Arc<dyn ErpBooks>, ConnectorError> {
    erp_books_from_lookup(auth, |name| std::env::var(name).ok())
}

/// [`loyalty_books_from_lookup`] over the environment.
pub fn loyalty_books_from_env(auth: Auth) -> Result<Arc<dyn LoyaltyBooks>, ConnectorError> {
    loyalty_books_from_lookup(auth, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_default_to_the_system_api_and_refuse_unknown_names() {
        let none = |_: &str| None;
        assert_eq!(ErpKind::from_lookup(none).unwrap(), ErpKind::SystemApi);
        assert_eq!(LoyaltyKind::from_lookup(none).unwrap(), LoyaltyKind::SystemApi);
        let sap = |n: &str| (n == "ERP_KIND").then(|| "sap-s4hana".to_owned());
        assert_eq!(ErpKind::from_lookup(sap).unwrap(), ErpKind::SapS4Hana);
        let bad = |_: &str| Some("sap".to_owned());
        let e = ErpKind::from_lookup(bad).unwrap_err().to_string();
        assert!(e.contains("ERP_KIND") && e.contains("sap-s4hana"), "{e}");
        let e = LoyaltyKind::from_lookup(bad).unwrap_err().to_string();
        assert!(e.contains("salesforce-loyalty"), "{e}");
    }

    #[test]
    fn a_sap_erp_without_its_mapping_is_a_configuration_error() {
        let vars = |n: &str| match n {
            "ERP_KIND" => Some("sap-s4hana".to_owned()),
            "ERP_BASE_URL" => Some("https://my-tenant-api.s4hana.cloud.sap".to_owned()),
            _ => None,
        };
        let auth = Auth {
            method: crate::AuthMethod::Basic,
            credentials: Arc::new(crate::StaticCredentials {
                credentials: Default::default(),
                origin: "test".into(),
            }),
        };
        let e = erp_from_lookup(auth, vars).err().unwrap().to_string();
        assert!(e.contains("ERP_SAP_MAPPING"), "{e}");
    }

    fn basic() -> Auth {
        Auth {
            method: crate::AuthMethod::Basic,
            credentials: Arc::new(crate::StaticCredentials {
                credentials: Default::default(),
                origin: "test".into(),
            }),
        }
    }

    #[test]
    fn the_books_are_read_through_every_kind_and_its_settings() {
        let vars = |erp: &'static str, loyalty: &'static str| {
            move |n: &str| match n {
                "ERP_KIND" => Some(erp.to_owned()),
                "LOYALTY_KIND" => Some(loyalty.to_owned()),
                "ERP_BASE_URL" | "LOYALTY_BASE_URL" => Some("https://books.example.com".to_owned()),
                "ERP_SAP_MAPPING_FILE" => Some(format!(
                    "{}/../../infra/connectors/sap-s4hana.json",
                    env!("CARGO_MANIFEST_DIR")
                )),
                "LOYALTY_SALESFORCE_MAPPING_FILE" => Some(format!(
                    "{}/../../infra/connectors/salesforce-loyalty.json",
                    env!("CARGO_MANIFEST_DIR")
                )),
                _ => None,
            }
        };
        assert!(erp_books_from_lookup(basic(), vars("system-api", "system-api")).is_ok());
        assert!(
            erp_books_from_lookup(basic(), vars("", "")).is_ok(),
            "the default kind"
        );
        assert!(loyalty_books_from_lookup(basic(), vars("system-api", "system-api")).is_ok());
        assert!(erp_books_from_lookup(basic(), vars("sap-s4hana", "system-api")).is_ok());
        assert!(loyalty_books_from_lookup(basic(), vars("system-api", "salesforce-loyalty")).is_ok());

        // A kind's own settings are needed to read its books, as to post.
        let without_mapping = |n: &str| match n {
            "ERP_KIND" => Some("sap-s4hana".to_owned()),
            "ERP_BASE_URL" => Some("https://books.example.com".to_owned()),
            _ => None,
        };
        let e = erp_books_from_lookup(basic(), without_mapping)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ERP_SAP_MAPPING"), "{e}");
        let e = erp_books_from_lookup(basic(), vars("sap", "system-api"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is not one of"), "an unknown kind as ever: {e}");
        let e = loyalty_books_from_lookup(basic(), |n: &str| (n == "LOYALTY_KIND").then(String::new))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("LOYALTY_BASE_URL is not set"), "{e}");
    }
}
