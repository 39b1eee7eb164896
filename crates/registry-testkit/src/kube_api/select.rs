//! Label selectors (`key=value`, `key!=value`, `key`, `!key`,
//! `key in (a,b)`, `key notin (a,b)`, comma-joined) and field selectors
//! (`metadata.name`, `metadata.namespace`, and `type` for Secrets).

use serde_json::Value;

use super::resource::Kind;
use super::validation::{label_value_problem, qualified_name_problem};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (index, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

fn checked_key(key: &str) -> Result<String, String> {
    match qualified_name_problem(key) {
        None => Ok(key.to_owned()),
        Some(problem) => Err(format!(
            "unable to parse requirement: invalid label key {key:?}: {problem}"
        )),
    }
}

fn checked_value(value: &str) -> Result<String, String> {
    match label_value_problem(value) {
        None => Ok(value.to_owned()),
        Some(problem) => Err(format!(
            "unable to parse requirement: invalid label value: {value:?}: {problem}"
        )),
    }
}

fn parse_set(key: &str, rest: &str, negated: bool) -> Result<Requirement, String> {
    let values = rest
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or(format!(
            "unable to parse requirement: expected a parenthesised set of values after {key:?}"
        ))?;
    let values = values
        .split(',')
        .map(|value| checked_value(value.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = checked_key(key)?;
    Ok(if negated {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(checked_key(key.trim())?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotIn(
            checked_key(key.trim())?,
            vec![checked_value(value.trim())?],
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::In(
            checked_key(key.trim())?,
            vec![checked_value(value.trim())?],
        ));
    }
    if let Some((key, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        if let Some(values) = rest.strip_prefix("notin") {
            return parse_set(key, values, true);
        }
        if let Some(values) = rest.strip_prefix("in") {
            return parse_set(key, values, false);
        }
        return Err(format!(
            "unable to parse requirement: found {rest:?}, expected: in, notin, =, ==, !="
        ));
    }
    Ok(Requirement::Exists(checked_key(term)?))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub(crate) fn parse(selector: &str) -> Result<Self, String> {
        if selector.trim().is_empty() {
            return Ok(Self::default());
        }
        split_terms(selector)
            .into_iter()
            .map(|term| parse_term(term.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether an object's labels satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key)?.as_str())
        };
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
            Requirement::In(key, values) => label(key).is_some_and(|v| values.iter().any(|value| value == v)),
            Requirement::NotIn(key, values) => label(key).is_none_or(|v| values.iter().all(|value| value != v)),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter for a kind.
    pub(crate) fn parse(kind: Kind, selector: &str) -> Result<Self, String> {
        if selector.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in selector.split(',') {
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (field, true, value)
            } else {
                return Err(format!("invalid selector: {selector:?}; can't understand {term:?}"));
            };
            let field = field.trim();
            let supported =
                matches!(field, "metadata.name" | "metadata.namespace") || (kind == Kind::Secret && field == "type");
            if !supported {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether an object satisfies every term.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = object.pointer(&pointer).and_then(Value::as_str).unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "n", "namespace": "ns", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn equality_existence_and_sets() {
        let ours = object(json!({"app.kubernetes.io/managed-by": "registry", "registry-id": "r1"}));
        let theirs = object(json!({"app": "web"}));
        let select = |s: &str| LabelSelector::parse(s).expect("valid selector");

        assert!(select("").matches(&theirs));
        assert!(select("app.kubernetes.io/managed-by=registry").matches(&ours));
        assert!(!select("app.kubernetes.io/managed-by=registry").matches(&theirs));
        assert!(select("app.kubernetes.io/managed-by==registry,registry-id").matches(&ours));
        assert!(!select("app.kubernetes.io/managed-by=registry,registry-id=r2").matches(&ours));
        assert!(select("!registry-id").matches(&theirs));
        assert!(select("registry-id!=r2").matches(&ours));
        assert!(select("registry-id!=r2").matches(&theirs));
        assert!(select("registry-id in (r1, r3),app.kubernetes.io/managed-by").matches(&ours));
        assert!(!select("registry-id notin (r1,r3)").matches(&ours));
        assert!(select("registry-id notin (r1,r3)").matches(&theirs));
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(LabelSelector::parse("a=b/c").is_err());
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a,").is_err());
    }

    #[test]
    fn field_selectors() {
        let secret = object(json!({}));
        let parse = |s: &str| FieldSelector::parse(Kind::Secret, s).expect("valid selector");
        assert!(parse("metadata.name=n,type=Opaque").matches(&secret));
        assert!(!parse("metadata.namespace!=ns").matches(&secret));
        assert!(FieldSelector::parse(Kind::ServiceAccount, "type=x").is_err());
        assert!(FieldSelector::parse(Kind::Secret, "spec.x=1").is_err());
    }
}
