//! Connector credentials on AWS: read from Secrets Manager (`{PREFIX}_CREDENTIALS_SECRET_ARN`, a template
//! parameter; the function's role may `GetSecretValue` on that ARN only), once per container and again
//! after the system refuses them (a rotated secret). Without the variable, from the environment, as in
//! a local run.

use std::sync::Arc;

use async_trait::async_trait;

use retail_sync_connectors::{Auth, AuthMethod, ConnectorError, CredentialSource, Credentials};
use retail_sync_core::BoxError;

/// A Secrets Manager secret whose string is the JSON object of [`Credentials`].
pub struct SecretsManagerCredentials {
    pub client: aws_sdk_secretsmanager::Client,
    pub arn: String,
}

/// A secret's string value (GetSecretValue), or why it cannot be had; never the value in the error.
pub async fn secret_string(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| format!("GetSecretValue: {}", retail_sync_aws::error::sdk_text(&e)))?;
    out.secret_string()
        .map(str::to_owned)
        .ok_or_else(|| "the secret has no string value".to_owned())
}

#[async_trait]
impl CredentialSource for SecretsManagerCredentials {
    async fn load(&self) -> Result<Credentials, BoxError> {
        let text = secret_string(&self.client, &self.arn).await?;
        // Only the position of a parse error is reported: serde's message can quote the value.
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "the secret is not a JSON object of client_id/client_secret, api_key or username/password (line {}, column {})",
                e.line(),
                e.column()
            )
            .into()
        })
    }

    fn describe(&self) -> String {
        format!("secret {}", self.arn)
    }
}

/// The authentication of the connector to `prefix` (`ERP`, `LOYALTY`) from the function's environment:
/// the method from `{prefix}_AUTH`…, the credentials from the secret when
/// `{prefix}_CREDENTIALS_SECRET_ARN` names one, else from the environment.
pub fn auth_from_env(prefix: &str, secrets: &aws_sdk_secretsmanager::Client) -> Result<Auth, ConnectorError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let arn = lookup(&format!("{prefix}_CREDENTIALS_SECRET_ARN")).filter(|a| !a.trim().is_empty());
    let Some(arn) = arn else {
        return Auth::from_env(prefix);
    };
    Ok(Auth {
        method: AuthMethod::from_lookup(prefix, lookup)?,
        credentials: Arc::new(SecretsManagerCredentials {
            client: secrets.clone(),
            arn: arn.trim().to_owned(),
        }),
    })
}
