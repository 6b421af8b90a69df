//! KFP's tags on pipelines and pipeline versions: key-value pairs a user
//! attaches, filters on (`tags.<key>`, EQUALS only) and replaces as a whole.

use switchyard_store::Tags;

use crate::error::{ApiError, ApiResult};

/// KFP's limits: tags per entity, and characters per key and per value.
const MAX_TAGS: usize = 20;
const MAX_CHARS: usize = 63;

/// Refuses what KFP refuses, in its words: more than 20 tags, an empty key,
/// a key with `.` (it would read as a filter path), keys or values over 63
/// characters. Empty values are allowed.
pub(crate) fn validate(tags: &Tags) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::BadRequest(format!(
            "number of tags ({}) exceeds maximum of {MAX_TAGS} per entity",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() {
            return Err(ApiError::BadRequest("tag key cannot be empty".into()));
        }
        if k.contains('.') {
            return Err(ApiError::BadRequest(format!(
                "tag key \"{k}\" must not contain '.' character"
            )));
        }
        if k.chars().count() > MAX_CHARS {
            return Err(ApiError::BadRequest(format!(
                "tag key \"{k}\" exceeds maximum length of {MAX_CHARS} characters"
            )));
        }
        if v.chars().count() > MAX_CHARS {
            return Err(ApiError::BadRequest(format!(
                "tag value \"{v}\" for key \"{k}\" exceeds maximum length of {MAX_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// A request's tags (none: an empty set), validated.
pub(crate) fn checked(tags: Option<Tags>) -> ApiResult<Tags> {
    let tags = tags.unwrap_or_default();
    validate(&tags)?;
    Ok(tags)
}

/// The `tags` query parameter of the upload endpoints: a JSON object of strings.
pub(crate) fn from_query(text: Option<&str>) -> ApiResult<Tags> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Tags::new());
    };
    let tags: Tags = serde_json::from_str(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "Failed to parse tags query parameter. Expected JSON object with string keys and values ({e})"
        ))
    })?;
    validate(&tags)?;
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kfp_limits() {
        let long = "x".repeat(63);
        assert!(validate(&tags(&[(&long, &long), ("empty", "")])).is_ok());
        let longer = "x".repeat(64);
        for (bad, says) in [
            (tags(&[("", "v")]), "cannot be empty"),
            (tags(&[("a.b", "v")]), "'.'"),
            (tags(&[(&longer, "v")]), "tag key"),
            (tags(&[("k", &longer)]), "tag value"),
        ] {
            let err = validate(&bad).expect_err("refused");
            assert!(err.to_string().contains(says), "{err}");
        }
        let many: Tags = (0..21).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate(&many)
            .expect_err("21")
            .to_string()
            .contains("(21)"));
        // Characters, not bytes.
        assert!(validate(&tags(&[("k", &"é".repeat(63))])).is_ok());
    }

    #[test]
    fn query_parameter() {
        assert_eq!(
            from_query(Some(r#"{"team":"ml"}"#)).expect("ok"),
            tags(&[("team", "ml")])
        );
        assert!(from_query(Some("{}")).expect("empty").is_empty());
        assert!(from_query(None).expect("none").is_empty());
        let err = from_query(Some("not-valid-json")).expect_err("bad");
        assert!(err.to_string().contains("Expected JSON object"), "{err}");
        assert!(from_query(Some(r#"{"team": 1}"#)).is_err());
    }
}
