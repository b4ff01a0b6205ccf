//! The Salesforce front's SOQL through a real socket: the REST API's answer shape (`totalSize`, `done`,
//! `records` with `attributes`, relationship fields nested, dateTimes as an org answers them), a
//! `WHERE` on a dateTime range, batches behind `nextRecordsUrl`, and Salesforce's errors for what it
//! does not understand.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use retail_sync_simulators::access::{Access, LOCAL_API_KEY};
use retail_sync_simulators::{Dialects, ErpSimulator, LoyaltySimulator, serve_with};

struct Org {
    base: String,
    loyalty: LoyaltySimulator,
    dialects: Dialects,
    client: reqwest::Client,
}

const DATA: &str = "/services/data/v62.0";

async fn start() -> Org {
    let (erp, loyalty) = (ErpSimulator::new(), LoyaltySimulator::new());
    let dialects = Dialects::over(&erp, &loyalty);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _handle) = serve_with(erp, loyalty.clone(), dialects.clone(), Access::local(), addr)
        .await
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", LOCAL_API_KEY.parse().unwrap());
    Org {
        base: format!("http://{bound}"),
        loyalty,
        dialects,
        client: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap(),
    }
}

impl Org {
    /// An accrual journal of `m-1` on receipt `r-<n>` of `amount` EUR at `activity`, processed in real
    /// time as the connector posts it.
    async fn accrue(&self, n: u32, amount: &str, activity: &str) -> String {
        let journal = json!({"transactionJournals": [{
            "ActivityDate": activity,
            "ExternalTransactionNumber": format!("etn-{n}"),
            "JournalTypeName": "Accrual",
            "JournalSubTypeName": "Purchase",
            "LoyaltyProgramName": "RetailSync Rewards",
            "MembershipNumber": "m-1",
            "Status": "Pending",
            "TransactionAmount": amount,
            "CurrencyIsoCode": "EUR",
            "RetailSync_Reference__c": format!("retail-sync transaction=receipt:store-1:r-{n}"),
        }]});
        let answer: Value = self
            .client
            .post(format!(
                "{}{DATA}/connect/realtime/loyalty/programs/RetailSync%20Rewards",
                self.base
            ))
            .json(&journal)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["processResult"]["transactionJournalResult"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn query(&self, soql: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{DATA}/query?q={}", self.base, percent(soql)))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

/// A query value percent-encoded: every byte but the unreserved ones.
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ids(answer: &Value) -> Vec<&str> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap())
        .collect()
}

/// A journal query over a dateTime range answers the journals of `[from, until)` in the REST API's
/// shape; their ledger entries and member records are read the same way.
#[tokio::test]
async fn journals_of_a_date_range_are_answered_in_salesforce_s_shape() {
    let org = start().await;
    let first = org.accrue(1, "10.00", "2026-05-28T20:26:39.999Z").await;
    let second = org.accrue(2, "20.00", "2026-05-28T20:26:40Z").await;
    let third = org.accrue(3, "30.00", "2026-05-28T20:26:41.250Z").await;
    org.accrue(4, "40.00", "2026-05-28T20:26:42Z").await;

    let (status, answer) = org
        .query(
            "SELECT Id, Status, ActivityDate, MemberId, JournalType.Name, JournalSubType.Name, \
             RetailSync_Reference__c, RetailSync_Requested_Points__c FROM TransactionJournal WHERE \
             LoyaltyProgram.Name = 'RetailSync Rewards' AND ActivityDate >= 2026-05-28T20:26:40Z AND \
             ActivityDate < 2026-05-28T20:26:42Z AND RetailSync_Reference__c LIKE 'retail-sync %' \
             ORDER BY ActivityDate, Id",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (answer["totalSize"].as_u64(), answer["done"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(answer.get("nextRecordsUrl").is_none(), "{answer}");
    assert_eq!(
        ids(&answer),
        [second.as_str(), third.as_str()],
        "from in, until out"
    );
    assert!(!ids(&answer).contains(&first.as_str()));
    let record = &answer["records"][1];
    assert_eq!(
        record["attributes"],
        json!({"type": "TransactionJournal", "url": format!("{DATA}/sobjects/TransactionJournal/{third}")})
    );
    assert_eq!(record["Status"], "Processed");
    assert_eq!(record["ActivityDate"], "2026-05-28T20:26:41.250+0000");
    assert_eq!(record["MemberId"], "LPM-m-1");
    assert_eq!(
        record["JournalType"],
        json!({"attributes": {"type": "JournalType"}, "Name": "Accrual"})
    );
    assert_eq!(record["JournalSubType"]["Name"], "Purchase");
    assert_eq!(
        record["RetailSync_Reference__c"],
        "retail-sync transaction=receipt:store-1:r-3"
    );
    assert_eq!(record["RetailSync_Requested_Points__c"], Value::Null);

    let (_, ledger) = org
        .query(
            "SELECT TransactionJournalId, Points, EventType FROM LoyaltyLedger WHERE \
             LoyaltyProgramCurrency.Name = 'Points' AND TransactionJournal.ActivityDate >= \
             2026-05-28T20:26:40Z AND TransactionJournal.ActivityDate < 2026-05-28T20:26:42Z",
        )
        .await;
    let entries: Vec<(&str, f64, &str)> = ledger["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["attributes"]["type"], "LoyaltyLedger");
            (
                r["TransactionJournalId"].as_str().unwrap(),
                r["Points"].as_f64().unwrap(),
                r["EventType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (second.as_str(), 20.0, "Credit"),
            (third.as_str(), 30.0, "Credit")
        ]
    );

    let (_, members) = org
        .query("SELECT Id, MembershipNumber FROM LoyaltyProgramMember WHERE Id IN ('LPM-m-1', 'LPM-m-9')")
        .await;
    assert_eq!(members["totalSize"], 1);
    assert_eq!(members["records"][0]["MembershipNumber"], "m-1");
}

/// More records than a batch: the first answer says `done: false` and where the next batch is; each
/// batch is read once, and a locator read to its end or made up is Salesforce's
/// `INVALID_QUERY_LOCATOR`.
#[tokio::test]
async fn more_records_than_a_batch_are_read_behind_next_records_url() {
    let org = start().await;
    let mut posted = Vec::new();
    for n in 0..5 {
        posted.push(org.accrue(n, "1.00", "2026-05-28T20:26:40Z").await);
    }
    org.dialects.salesforce.set_page_size(2);
    let (status, mut answer) = org
        .query("SELECT Id FROM TransactionJournal WHERE ActivityDate >= 2026-05-28T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut read: Vec<String> = Vec::new();
    let mut batches = 0;
    let mut used = Vec::new();
    let last: Vec<String>;
    loop {
        batches += 1;
        assert_eq!(answer["totalSize"], 5, "every batch counts them all");
        read.extend(ids(&answer).into_iter().map(str::to_owned));
        if answer["done"] == true {
            assert!(answer.get("nextRecordsUrl").is_none());
            last = ids(&answer).into_iter().map(str::to_owned).collect();
            break;
        }
        let next = answer["nextRecordsUrl"].as_str().unwrap().to_owned();
        assert!(next.starts_with(&format!("{DATA}/query/01g")), "{next}");
        answer = org.get(&next).await.1;
        used.push(next);
    }
    assert_eq!(batches, 3);
    posted.sort();
    read.sort();
    assert_eq!(read, posted);
    assert_eq!(org.dialects.salesforce.open_cursors(), 0);
    // A batch asked again (a retry whose answer was lost) is answered again.
    let (status, again) = org.get(&used[1]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&again), last);
    // Ten locators are kept: the oldest is forgotten when an eleventh opens.
    for _ in 0..10 {
        let (_, answer) = org.query("SELECT Id FROM TransactionJournal").await;
        assert_eq!(answer["done"], false);
    }
    for gone in [
        used[1].clone(),
        format!("{DATA}/query/01gNOPE-2"),
        format!("{DATA}/query/nope"),
    ] {
        let (status, error) = org.get(&gone).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{gone}");
        assert_eq!(error[0]["errorCode"], "INVALID_QUERY_LOCATOR", "{gone}");
    }
}

/// What the front does not understand is answered as Salesforce answers it: `[{"errorCode",
/// "message"}]` with 400 — `MALFORMED_QUERY` for SOQL outside its subset, `INVALID_FIELD` for an
/// unknown column or a literal of the wrong type, `INVALID_TYPE` for an unknown object — and an org
/// that is down answers 503.
#[tokio::test]
async fn a_query_it_does_not_understand_is_a_salesforce_error() {
    let org = start().await;
    org.accrue(1, "1.00", "2026-05-28T20:26:40Z").await;
    for (soql, code) in [
        (
            "SELECT Id FROM TransactionJournal WHERE Id = 'a' OR Id = 'b'",
            "MALFORMED_QUERY",
        ),
        ("SELECT COUNT() FROM TransactionJournal", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM TransactionJournal WHERE ActivityDate >= 2026-05-28T20:26:40.500Z",
            "MALFORMED_QUERY",
        ),
        ("DELETE FROM TransactionJournal", "MALFORMED_QUERY"),
        ("SELECT Id, Nope__c FROM TransactionJournal", "INVALID_FIELD"),
        (
            "SELECT Id FROM TransactionJournal WHERE ActivityDate >= '2026-05-28T20:26:40Z'",
            "INVALID_FIELD",
        ),
        ("SELECT Id FROM Account", "INVALID_TYPE"),
    ] {
        let (status, error) = org.query(soql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{soql}");
        let errors = error.as_array().unwrap();
        assert_eq!(errors.len(), 1, "{error}");
        assert_eq!(errors[0]["errorCode"], code, "{soql}: {error}");
        assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    org.loyalty.set_down(true);
    let (status, error) = org.query("SELECT Id FROM TransactionJournal").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error[0]["errorCode"], "SERVER_UNAVAILABLE");
}
