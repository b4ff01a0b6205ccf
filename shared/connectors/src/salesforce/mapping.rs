//! How a retailer's Salesforce Loyalty Management org is set up, as far as the connector must know it:
//! the program, its points currency, the API version, the journal types and program processes, and the
//! custom field the connector's reference goes in. One JSON file (sample in
//! `infra/connectors/salesforce-loyalty.json`), never code.

use serde::Deserialize;

use crate::error::ConnectorError;

/// A journal type and subtype (by name: the Connect API takes names in place of ids).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalKind {
    pub journal_type: String,
    pub journal_subtype: String,
}

impl JournalKind {
    fn of(journal_type: &str, journal_subtype: &str) -> Self {
        Self {
            journal_type: journal_type.into(),
            journal_subtype: journal_subtype.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceMapping {
    #[serde(default)]
    pub description: Option<String>,
    /// The loyalty program's name, as in the Connect API paths.
    pub program: String,
    /// The non-qualifying points currency members earn and spend (`loyaltyMemberCurrencyName`).
    pub currency: String,
    /// REST API version, e.g. `v62.0`.
    #[serde(default = "SalesforceMapping::default_api_version")]
    pub api_version: String,
    /// A text custom field on TransactionJournal (Text(255)) where the connector writes what a journal
    /// stands for (`retail-sync transaction=… reference=…`, or a hold's terms): reconciliation reads
    /// it, and it is how a hold's expiry and commitment are kept (Salesforce has no points hold).
    #[serde(default = "SalesforceMapping::default_reference_field")]
    pub reference_field: String,
    /// Optional: a number custom field on TransactionJournal (Number(18, 0)) where the connector writes
    /// the points a reversal or re-credit asked for, so that reading the books back can tell a reversal
    /// that took less than it asked (`requested_points`). Without it, such a reversal reads back with
    /// the points it took only.
    #[serde(default)]
    pub requested_points_field: Option<String>,
    /// The realtime-processed accrual of a sale or shipment.
    #[serde(default = "SalesforceMapping::default_accrual")]
    pub accrual: JournalKind,
    /// Earned points taken back (a return): posted through the debit process.
    #[serde(default = "SalesforceMapping::default_reversal")]
    pub reversal: JournalKind,
    /// Redeemed points given back: posted through the credit process.
    #[serde(default = "SalesforceMapping::default_recredit")]
    pub recredit: JournalKind,
    /// Earned points a return reversed beyond its share given back (a later shipment of the order
    /// changed the share): posted through the credit process.
    #[serde(default = "SalesforceMapping::default_restore")]
    pub restore: JournalKind,
    /// A checkout's points hold: a debit, cancelled (Cancel Redemption) when the hold is released or
    /// expires.
    #[serde(default = "SalesforceMapping::default_hold")]
    pub hold: JournalKind,
    /// The program processes (Loyalty Program Process API) that credit and debit explicit points.
    #[serde(default = "SalesforceMapping::default_credit_process")]
    pub credit_process: String,
    #[serde(default = "SalesforceMapping::default_debit_process")]
    pub debit_process: String,
    /// What 100 points are worth, in major currency units (the program's redemption rate): 1 means a
    /// point is worth 0.01.
    #[serde(default = "SalesforceMapping::default_value_of_100_points")]
    pub value_of_100_points: i64,
}

impl SalesforceMapping {
    fn default_api_version() -> String {
        "v62.0".into()
    }
    fn default_reference_field() -> String {
        "RetailSync_Reference__c".into()
    }
    fn default_accrual() -> JournalKind {
        JournalKind::of("Accrual", "Purchase")
    }
    fn default_reversal() -> JournalKind {
        JournalKind::of("Redemption", "Return Reversal")
    }
    fn default_recredit() -> JournalKind {
        JournalKind::of("Accrual", "Points Recredit")
    }
    fn default_restore() -> JournalKind {
        JournalKind::of("Accrual", "Return Reversal Correction")
    }
    fn default_hold() -> JournalKind {
        JournalKind::of("Redemption", "Checkout Hold")
    }
    fn default_credit_process() -> String {
        "Credit Points".into()
    }
    fn default_debit_process() -> String {
        "Debit Points".into()
    }
    fn default_value_of_100_points() -> i64 {
        1
    }

    /// Parses and checks a mapping file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConnectorError> {
        let config = |message: String| ConnectorError::Config {
            var: origin.to_owned(),
            message,
        };
        let mapping: Self = serde_json::from_str(text)
            .map_err(|e| config(format!("not a valid Salesforce Loyalty mapping: {e}")))?;
        let name_ok = |f: &str| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok(&mapping.reference_field) {
            return Err(config(format!(
                "reference_field {:?} is not a field API name",
                mapping.reference_field
            )));
        }
        if let Some(field) = &mapping.requested_points_field
            && (!name_ok(field) || *field == mapping.reference_field)
        {
            return Err(config(format!(
                "requested_points_field {field:?} is not a field API name of its own"
            )));
        }
        let version_ok = mapping
            .api_version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !version_ok {
            return Err(config(format!(
                "api_version {:?} is not like v62.0",
                mapping.api_version
            )));
        }
        // The currency's name is a literal of the connector's queries.
        if mapping.currency.is_empty() || mapping.currency.contains(['\'', '\\']) {
            return Err(config(format!(
                "currency {:?} is not a currency name",
                mapping.currency
            )));
        }
        if mapping.value_of_100_points <= 0 {
            return Err(config("value_of_100_points must be positive".into()));
        }
        Ok(mapping)
    }

    /// Reads the mapping from `{prefix}_SALESFORCE_MAPPING` (the JSON itself) or
    /// `{prefix}_SALESFORCE_MAPPING_FILE` (a path).
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectorError> {
        let (text, origin) = crate::config::mapping_text(&format!("{prefix}_SALESFORCE_MAPPING"), lookup)?;
        Self::parse(&text, &origin)
    }
}
