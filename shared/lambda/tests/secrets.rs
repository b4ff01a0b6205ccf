//! Connector credentials from Secrets Manager, on moto through the real SDK.

use retail_sync_aws::{AwsSettings, emulator_sdk_config};
use retail_sync_connectors::{CredentialSource, Secret};
use retail_sync_lambda::secrets::SecretsManagerCredentials;
use retail_sync_testkit::moto::MotoServer;

async fn client() -> aws_sdk_secretsmanager::Client {
    let settings = AwsSettings::default().with_endpoint_url(MotoServer::shared().endpoint());
    aws_sdk_secretsmanager::Client::new(&emulator_sdk_config(&settings).await)
}

async fn secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let out = client
        .create_secret()
        .name(format!("creds-{}", uuid::Uuid::now_v7()))
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.arn().unwrap().to_owned()
}

#[tokio::test]
async fn credentials_are_read_from_the_secret_and_a_rotation_is_seen_on_the_next_load() {
    let client = client().await;
    let arn = secret(&client, r#"{"client_id": "erp-app", "client_secret": "first"}"#).await;
    let source = SecretsManagerCredentials {
        client: client.clone(),
        arn: arn.clone(),
    };
    let loaded = source.load().await.unwrap();
    assert_eq!(loaded.client_id.as_deref(), Some("erp-app"));
    assert_eq!(loaded.client_secret, Some(Secret::new("first")));
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"api_key": "second", "header": "APIKey"}"#)
        .send()
        .await
        .unwrap();
    let rotated = source.load().await.unwrap();
    assert_eq!(rotated.api_key, Some(Secret::new("second")));
    assert_eq!(rotated.header.as_deref(), Some("APIKey"));
}

/// A secret that is not the expected JSON, or that does not exist, is an error that names the secret
/// and never its value.
#[tokio::test]
async fn a_bad_or_missing_secret_is_a_clear_error_without_its_value() {
    let client = client().await;
    for value in [r#""just-a-password""#, "not json at all", r#"{"client_id": 42}"#] {
        let arn = secret(&client, value).await;
        let source = SecretsManagerCredentials {
            client: client.clone(),
            arn,
        };
        let e = source.load().await.unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        assert!(!e.contains("just-a-password") && !e.contains("42"), "{e}");
    }
    let source = SecretsManagerCredentials {
        client,
        arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:nowhere-AbCdEf".into(),
    };
    let e = source.load().await.unwrap_err().to_string();
    assert!(e.contains("GetSecretValue"), "{e}");
    assert!(source.describe().contains("nowhere"));
}
