//! Where a mapping file comes from, the same for every mapping (a connector's SAP or Salesforce mapping,
//! a channel platform's mapping): the JSON itself in a variable, as a template parameter passes it, or
//! the path of the file in `{var}_FILE`, for local runs.

/// A mapping that could not be read: the variable to fix, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct MappingSourceError {
    pub var: String,
    pub message: String,
}

/// The mapping's text from `var` or `{var}_FILE`, and the variable it came from (for errors).
pub fn mapping_text(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, String), MappingSourceError> {
    let file = format!("{var}_FILE");
    if let Some(text) = lookup(var).filter(|t| !t.trim().is_empty()) {
        return Ok((text, var.to_owned()));
    }
    match lookup(&file).filter(|t| !t.trim().is_empty()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| MappingSourceError {
                var: file.clone(),
                message: format!("cannot read {path}: {e}"),
            })?;
            Ok((text, file))
        }
        None => Err(MappingSourceError {
            message: format!("neither {var} (the mapping JSON) nor {file} (its path) is set"),
            var: var.to_owned(),
        }),
    }
}
