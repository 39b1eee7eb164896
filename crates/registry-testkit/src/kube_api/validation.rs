//! Field validation that answers `422 Invalid`, following the API server's
//! rules for names, labels, annotations, Secrets and ServiceAccounts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::resource::Kind;
use super::status::Cause;

/// The most bytes a Secret's data may hold.
pub(crate) const MAX_SECRET_BYTES: usize = 1024 * 1024;
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used \
     for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
     or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
     validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
     '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
     '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
     (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_qualified_name_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then
/// a qualified name part. Returns the problem, if any.
pub(crate) fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN_MESSAGE}"));
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".to_owned());
    }
    (!is_qualified_name_part(name)).then(|| QUALIFIED_NAME_MESSAGE.to_owned())
}

/// A label value: empty, or a qualified name part.
pub(crate) fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".to_owned());
    }
    (!value.is_empty() && !is_qualified_name_part(value)).then(|| LABEL_VALUE_MESSAGE.to_owned())
}

fn string_map<'a>(object: &'a Value, pointer: &str) -> impl Iterator<Item = (&'a String, &'a str)> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
}

/// Validates an object about to be stored (`old` is the stored version on an
/// update) and returns every problem found.
pub(crate) fn validate(kind: Kind, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = validate_metadata(kind, object);
    match kind {
        Kind::Secret => validate_secret(object, old, &mut causes),
        Kind::ServiceAccount => validate_service_account(object, &mut causes),
        Kind::Namespace => {}
    }
    causes
}

fn validate_metadata(kind: Kind, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required("metadata.name", "name or generateName is required"));
    } else {
        let (valid, message) = match kind {
            Kind::Namespace => (is_dns1123_label(name), DNS1123_LABEL_MESSAGE),
            Kind::Secret | Kind::ServiceAccount => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MESSAGE),
        };
        if !valid {
            causes.push(Cause::invalid("metadata.name", name, message));
        }
    }
    for (key, value) in string_map(object, "/metadata/labels") {
        if let Some(problem) = qualified_name_problem(key) {
            causes.push(Cause::invalid("metadata.labels", key, problem));
        }
        if let Some(problem) = label_value_problem(value) {
            causes.push(Cause::invalid(format!("metadata.labels[{key}]"), value, problem));
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in string_map(object, "/metadata/annotations") {
        if let Some(problem) = qualified_name_problem(&key.to_ascii_lowercase()) {
            causes.push(Cause::invalid("metadata.annotations", key, problem));
        }
        annotation_bytes += key.len() + value.len();
    }
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        causes.push(Cause::too_long("metadata.annotations", MAX_ANNOTATION_BYTES));
    }
    causes
}

/// Data keys a Secret of a given type must carry, as the API server checks.
fn required_keys(secret_type: &str) -> &'static [&'static str] {
    match secret_type {
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    }
}

fn decoded(data: &Map<String, Value>, key: &str) -> Option<Vec<u8>> {
    data.get(key)
        .and_then(Value::as_str)
        .and_then(|v| STANDARD.decode(v).ok())
}

fn validate_secret(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let empty = Map::new();
    let data = object.get("data").and_then(Value::as_object).unwrap_or(&empty);
    let secret_type = object.get("type").and_then(Value::as_str).unwrap_or_default();

    let mut total = 0;
    for (key, value) in data {
        let valid_key = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_key || key == "." || key == ".." {
            causes.push(Cause::invalid(format!("data[{key}]"), key, CONFIG_KEY_MESSAGE));
        }
        total += decoded(data, key).map_or(value.as_str().map_or(0, str::len), |bytes| bytes.len());
    }
    if total > MAX_SECRET_BYTES {
        causes.push(Cause::too_long("data", MAX_SECRET_BYTES));
    }

    for key in required_keys(secret_type) {
        if !data.contains_key(*key) {
            causes.push(Cause::required(format!("data[{key}]"), ""));
        }
    }
    match secret_type {
        "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg" => {
            let key = required_keys(secret_type)[0];
            if let Some(bytes) = decoded(data, key)
                && let Err(error) = serde_json::from_slice::<Map<String, Value>>(&bytes)
            {
                causes.push(Cause::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    error.to_string(),
                ));
            }
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            causes.push(Cause::required("data[username]", ""));
            causes.push(Cause::required("data[password]", ""));
        }
        "kubernetes.io/service-account-token"
            if object
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .is_none() =>
        {
            causes.push(Cause::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        _ => {}
    }

    if let Some(old) = old {
        let old_type = old.get("type").and_then(Value::as_str).unwrap_or_default();
        if old_type != secret_type {
            causes.push(Cause::invalid("type", secret_type, "field is immutable"));
        }
        if old.get("immutable") == Some(&Value::Bool(true)) {
            const DETAIL: &str = "field is immutable when `immutable` is set";
            if old.get("data") != object.get("data") {
                causes.push(Cause::forbidden("data", DETAIL));
            }
            if object.get("immutable") != Some(&Value::Bool(true)) {
                causes.push(Cause::forbidden("immutable", DETAIL));
            }
        }
    }
}

fn validate_service_account(object: &Value, causes: &mut Vec<Cause>) {
    let references = object
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (index, reference) in references.enumerate() {
        if reference.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("imagePullSecrets[{index}].name"), ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("ghcr-creds"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("Ghcr"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("env-production"));
        assert!(!is_dns1123_label("env.production"));
    }

    #[test]
    fn label_keys_and_values() {
        assert_eq!(qualified_name_problem("app.kubernetes.io/managed-by"), None);
        assert_eq!(qualified_name_problem("registry-id"), None);
        assert!(qualified_name_problem("bad key").is_some());
        assert!(qualified_name_problem("Bad_Prefix/x").is_some());
        assert_eq!(label_value_problem(""), None);
        assert_eq!(label_value_problem("3f2c_a.b-1"), None);
        assert!(label_value_problem("ghcr.io/x").is_some());
        assert!(label_value_problem(&"a".repeat(64)).is_some());
    }
}
