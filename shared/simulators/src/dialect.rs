//! What the platform dialects' simulators (SAP's, Salesforce's) read and write alike on the wire: the
//! platforms' side of decimals and query strings, kept apart from the connectors' own (which they
//! check).

use std::collections::HashMap;

use serde_json::Value;

use retail_sync_contracts::values::Currency;

/// A string property of a JSON object, empty when absent or not a string.
pub(crate) fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// A decimal string (`Edm.Decimal`, a Salesforce currency field) to minor units; `None` when it is not
/// one or has more places than the currency.
pub(crate) fn decimal_minor(text: &str, currency: Currency) -> Option<i64> {
    let exponent = currency.minor_exponent() as usize;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || fraction.len() > exponent || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let fraction = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<exponent$}").parse::<i64>().ok()?
    };
    let value = whole
        .parse::<i64>()
        .ok()?
        .checked_mul(currency.minor_per_major())?
        .checked_add(fraction)?;
    Some(if negative { -value } else { value })
}

/// Minor units as the decimal string the platforms answer.
pub(crate) fn decimal(minor: i64, currency: Currency) -> String {
    let exponent = currency.minor_exponent() as usize;
    if exponent == 0 {
        return minor.to_string();
    }
    let per = currency.minor_per_major().unsigned_abs();
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0exponent$}",
        minor.unsigned_abs() / per,
        minor.unsigned_abs() % per
    )
}

/// A query string's parameters, percent-decoded.
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// `%XX` and `+` decoded (an invalid escape is kept as it is).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
