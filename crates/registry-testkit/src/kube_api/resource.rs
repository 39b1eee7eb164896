//! The kinds the simulator serves and their schema facts: how a body is
//! decoded, defaulted and normalised, and how each list field merges.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A kind of object the simulated API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Namespace,
    Secret,
    ServiceAccount,
}

/// How a list field merges, in server-side apply (`x-kubernetes-list-type`)
/// and in strategic merge patches (`x-kubernetes-patch-strategy`); for the
/// fields modelled here the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Elements identified by one key field, merged element by element.
    Map(&'static str),
    /// Scalar elements, merged as a set.
    Set,
}

impl Kind {
    /// The kind served under a REST resource name (`secrets`).
    pub(crate) fn from_plural(plural: &str) -> Option<Self> {
        match plural {
            "namespaces" => Some(Self::Namespace),
            "secrets" => Some(Self::Secret),
            "serviceaccounts" => Some(Self::ServiceAccount),
            _ => None,
        }
    }

    /// The REST resource name (`secrets`).
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Namespace => "namespaces",
            Self::Secret => "secrets",
            Self::ServiceAccount => "serviceaccounts",
        }
    }

    /// The kind's name (`Secret`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Secret => "Secret",
            Self::ServiceAccount => "ServiceAccount",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub(crate) fn is_namespaced(self) -> bool {
        self != Self::Namespace
    }

    /// Decodes a request body as the API server does: into the typed object
    /// (type errors and bad base64 are rejected, unknown fields dropped) and
    /// back to JSON, then normalised (see [`normalize`]).
    pub(crate) fn decode(self, value: Value) -> Result<Value, String> {
        let decoded = match self {
            Self::Namespace => roundtrip::<Namespace>(value),
            Self::Secret => roundtrip::<Secret>(value),
            Self::ServiceAccount => roundtrip::<ServiceAccount>(value),
        };
        decoded
            .map(|mut value| {
                normalize(&mut value);
                value
            })
            .map_err(|e| {
                format!(
                    "{} in version \"v1\" cannot be handled as a {}: {e}",
                    self.name(),
                    self.name()
                )
            })
    }

    /// Fills in the fields the API server defaults.
    pub(crate) fn apply_defaults(self, object: &mut Value) {
        if self == Self::Secret && object.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            object["type"] = Value::from("Opaque");
        }
    }

    /// The merge behaviour of the list at `path` (field names from the root).
    pub(crate) fn list_type(self, path: &[&str]) -> ListType {
        match (self, path) {
            (_, ["metadata", "ownerReferences"]) => ListType::Map("uid"),
            (_, ["metadata", "finalizers"]) | (Self::Namespace, ["spec", "finalizers"]) => ListType::Set,
            (Self::ServiceAccount, ["secrets"]) => ListType::Map("name"),
            // ServiceAccount.imagePullSecrets is `x-kubernetes-list-type: atomic`
            // without a patch strategy: both apply and strategic merge replace it.
            _ => ListType::Atomic,
        }
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

/// Drops what the API server's Go encoding omits: `null`, empty maps and
/// empty lists (`omitempty`), recursively.
pub(crate) fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                normalize(child);
            }
            map.retain(|_, child| !is_empty(child));
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Folds a Secret's write-only `stringData` into `data`, as the API server
/// does (a `stringData` entry wins over a `data` entry of the same key).
pub(crate) fn fold_string_data(object: &mut Value) {
    let Some(Value::Object(string_data)) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = object
        .as_object_mut()
        .map(|o| o.entry("data").or_insert_with(|| Value::Object(Map::new())));
    if let Some(Value::Object(data)) = data {
        for (key, value) in string_data {
            data.insert(key, Value::from(STANDARD.encode(value.as_str().unwrap_or_default())));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decode_drops_unknown_fields_and_empties() {
        let decoded = Kind::Secret
            .decode(json!({
                "apiVersion": "v1", "kind": "Secret", "bogus": 1,
                "metadata": {"name": "x", "labels": {}}, "data": {"a": "YQ=="}, "stringData": null
            }))
            .expect("valid Secret");
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"a": "YQ=="}})
        );
    }

    #[test]
    fn decode_rejects_bad_base64_and_wrong_kind() {
        assert!(Kind::Secret.decode(json!({"data": {"a": "not base64!"}})).is_err());
        assert!(Kind::Secret.decode(json!({"kind": "ConfigMap"})).is_err());
    }

    #[test]
    fn string_data_folds_into_data() {
        let mut secret = json!({"data": {"a": "YQ==", "b": "Yg=="}, "stringData": {"b": "B", "c": "C"}});
        fold_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"a": "YQ==", "b": "Qg==", "c": "Qw=="}}));
    }
}
