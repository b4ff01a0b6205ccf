//! API Gateway HTTP API requests (payload format 2.0, which Lambda Function URLs share) to the
//! transport-neutral [`ApiRequest`] of the redemption API, and its [`ApiResponse`] back.

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;

use retail_sync_redemption::{ApiRequest, ApiResponse, Caller, ErrorCode, RedemptionApi};

/// One HTTP request through the API.
pub async fn handle(api: &RedemptionApi, event: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let response = match to_api_request(event) {
        Ok(request) => api.handle(request).await,
        Err(refusal) => refusal,
    };
    to_lambda_response(response)
}

/// The request as the service sees it, or the 400 for a body that is not text.
pub fn to_api_request(event: ApiGatewayV2httpRequest) -> Result<ApiRequest, ApiResponse> {
    let context = event.request_context;
    let caller = context
        .authorizer
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .and_then(caller_of);
    let method = context.http.method.as_str().to_owned();
    let mut path = event
        .raw_path
        .or(context.http.path)
        .unwrap_or_else(|| "/".to_owned());
    // On a named stage the raw path starts with the stage; `$default` (what the template deploys) has none.
    if let Some(stage) = context.stage.filter(|s| s != "$default")
        && let Some(rest) = path.strip_prefix(&format!("/{stage}"))
        && (rest.is_empty() || rest.starts_with('/'))
    {
        path = if rest.is_empty() {
            "/".to_owned()
        } else {
            rest.to_owned()
        };
    }
    // Payload 2.0 joins repeated headers with commas; names arrive lower-case.
    let headers = event
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = match event.body {
        Some(body) if event.is_base64_encoded => Some(decode(&body)?),
        body => body,
    };
    Ok(ApiRequest {
        method,
        path,
        headers,
        body,
        caller,
    })
}

/// The caller the HTTP API's JWT authorizer verified: `client_id` (else `sub`), the granted scopes (the
/// authorizer's list, else the `scope` claim split on spaces) and an optional `member_id` claim. No client
/// means no caller (the service answers 401).
fn caller_of(jwt: &ApiGatewayRequestAuthorizerJwtDescription) -> Option<Caller> {
    let claim = |name: &str| jwt.claims.get(name).filter(|v| !v.is_empty()).cloned();
    let client = claim("client_id").or_else(|| claim("sub"))?;
    let scopes = match &jwt.scopes {
        Some(scopes) if !scopes.is_empty() => scopes.clone(),
        _ => claim("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    Some(Caller {
        client,
        scopes,
        member: claim("member_id"),
    })
}

/// API Gateway base64-encodes bodies whose content type it does not take for text; ours are JSON.
fn decode(body: &str) -> Result<String, ApiResponse> {
    let refuse = |why: String| ApiResponse::error(400, ErrorCode::InvalidRequest, why);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| refuse(format!("the base64 body cannot be decoded: {e}")))?;
    String::from_utf8(bytes).map_err(|_| refuse("the body is not UTF-8 text".to_owned()))
}

pub fn to_lambda_response(response: ApiResponse) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    for (name, value) in &response.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::warn!(header = %name, "dropped a header that HTTP cannot carry"),
        }
    }
    // The type is non-exhaustive: built from its default, field by field.
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(response.status);
    out.headers = headers;
    out.body = Some(Body::Text(response.body));
    out.is_base64_encoded = false;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ApiGatewayV2httpRequest {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/http/create-hold.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_sample_http_api_event_becomes_the_services_request() {
        let request = to_api_request(sample()).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/holds");
        assert_eq!(
            request.header("Idempotency-Key"),
            Some("pos-017:basket-8812:hold")
        );
        let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["points"], 500);
        // The caller as the JWT authorizer verified it.
        let caller = request.caller.unwrap();
        assert_eq!(caller.client, "pos-017");
        assert_eq!(
            caller.scopes,
            ["redemption/balance.read", "redemption/holds.write"]
        );
        assert_eq!(caller.member, None);
    }

    #[test]
    fn the_caller_comes_from_the_verified_claims_or_there_is_none() {
        let mut event = sample();
        let jwt = event
            .request_context
            .authorizer
            .as_mut()
            .unwrap()
            .jwt
            .as_mut()
            .unwrap();
        jwt.claims.remove("client_id");
        jwt.claims.insert("member_id".into(), "m-1".into());
        jwt.scopes = Some(vec!["redemption/balance.read".into()]);
        let caller = to_api_request(event).unwrap().caller.unwrap();
        assert_eq!(caller.client, "pos-017", "sub when there is no client_id");
        assert_eq!(
            caller.scopes,
            ["redemption/balance.read"],
            "the authorizer's list first"
        );
        assert_eq!(caller.member.as_deref(), Some("m-1"));

        let mut event = sample();
        event.request_context.authorizer = None;
        assert_eq!(to_api_request(event).unwrap().caller, None);
    }

    #[test]
    fn a_base64_body_is_decoded_and_one_that_is_not_base64_is_a_400() {
        let mut event = sample();
        let plain = event.body.clone().unwrap();
        event.body = Some(base64::engine::general_purpose::STANDARD.encode(&plain));
        event.is_base64_encoded = true;
        assert_eq!(
            to_api_request(event).unwrap().body.as_deref(),
            Some(plain.as_str())
        );

        let mut event = sample();
        event.body = Some("not base64!".to_owned());
        event.is_base64_encoded = true;
        let refusal = to_api_request(event).unwrap_err();
        assert_eq!(refusal.status, 400);
        assert!(refusal.body.contains("invalid_request"), "{}", refusal.body);
    }

    #[test]
    fn a_named_stage_is_taken_off_the_path() {
        let mut event = sample();
        event.raw_path = Some("/live/v1/holds".to_owned());
        event.request_context.stage = Some("live".to_owned());
        assert_eq!(to_api_request(event).unwrap().path, "/v1/holds");
    }

    #[test]
    fn the_response_keeps_status_headers_and_body() {
        let response =
            ApiResponse::error(503, ErrorCode::LoyaltyUnavailable, "down").with_header("retry-after", "30");
        let out = to_lambda_response(response.clone());
        assert_eq!(out.status_code, 503);
        assert_eq!(out.headers["retry-after"], "30");
        assert_eq!(out.headers["content-type"], "application/json");
        assert_eq!(out.body, Some(Body::Text(response.body)));
        assert!(!out.is_base64_encoded);
        let wire = serde_json::to_value(&out).unwrap();
        assert_eq!(wire["statusCode"], 503);
        assert_eq!(wire["headers"]["retry-after"], "30");
    }
}
