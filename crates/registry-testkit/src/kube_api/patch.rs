//! Patch formats: JSON merge patch (RFC 7386), strategic merge patch (the
//! Kubernetes variant, list strategies from [`Kind::list_type`]) and JSON
//! patch (RFC 6902).

use serde_json::{Map, Value};

use super::resource::{Kind, ListType};

/// Applies a JSON merge patch (RFC 7386).
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        target.clone_from(patch);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Applies a strategic merge patch. Supported directives: `$patch: replace`
/// and `$patch: delete` (on maps and on map-list elements),
/// `$deleteFromPrimitiveList/<field>`, `$retainKeys`; `$setElementOrder/...`
/// is accepted and ignored.
pub(crate) fn strategic_merge_patch(kind: Kind, target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".to_owned());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if merge_map(kind, target, patch, &mut Vec::new())? == MapOutcome::Deleted {
        *target = Value::Object(Map::new());
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum MapOutcome {
    Kept,
    Deleted,
}

/// The patch without its `$` directives (for values stored as given).
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), without_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

fn merge_map(
    kind: Kind,
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<MapOutcome, String> {
    match patch.get("$patch").map(|directive| directive.as_str()) {
        None => {}
        Some(Some("replace")) => {
            *target = without_directives(&Value::Object(patch.clone()));
            return Ok(MapOutcome::Kept);
        }
        Some(Some("delete")) => return Ok(MapOutcome::Deleted),
        Some(other) => return Err(format!("unknown patch type found: {other:?}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("just made an object");
    };
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(items)) = map.get_mut(field) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(format!("unknown patch directive {key:?}"));
        }
        path.push(key.clone());
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(child) => {
                let slot = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if merge_map(kind, slot, child, path)? == MapOutcome::Deleted {
                    map.remove(key);
                }
            }
            Value::Array(items) => {
                let schema: Vec<&str> = path.iter().map(String::as_str).collect();
                let list_type = kind.list_type(&schema);
                let slot = map.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                merge_list(kind, slot, items, list_type, path)?;
            }
            scalar => {
                map.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        map.retain(|key, _| retain.iter().any(|kept| kept.as_str() == Some(key)));
    }
    Ok(MapOutcome::Kept)
}

fn merge_list(
    kind: Kind,
    target: &mut Value,
    items: &[Value],
    list_type: ListType,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let replace = items
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || list_type == ListType::Atomic || !target.is_array() {
        let kept = items.iter().filter(|item| item.get("$patch").is_none());
        *target = Value::Array(kept.map(without_directives).collect());
        return Ok(());
    }
    let Value::Array(list) = target else {
        unreachable!("checked above");
    };
    match list_type {
        ListType::Atomic => unreachable!("handled above"),
        ListType::Set => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListType::Map(key) => {
            for item in items {
                let Value::Object(element) = item else {
                    return Err(format!("the elements of {} must be objects", path.join(".")));
                };
                let Some(wanted) = element.get(key) else {
                    return Err(format!("map: {item} does not contain declared merge key: {key}"));
                };
                let position = list.iter().position(|candidate| candidate.get(key) == Some(wanted));
                match (element.get("$patch").and_then(Value::as_str), position) {
                    (Some("delete"), Some(index)) => {
                        list.remove(index);
                    }
                    (Some("delete"), None) => {}
                    (Some(other), _) => return Err(format!("unknown patch type found: {other:?}")),
                    (None, Some(index)) => {
                        merge_map(kind, &mut list[index], element, path)?;
                    }
                    (None, None) => list.push(without_directives(item)),
                }
            }
        }
    }
    Ok(())
}

/// Applies a JSON patch (RFC 6902).
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch.as_array().ok_or("a JSON patch must be a list of operations")?;
    for operation in operations {
        let op = operation
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = operation
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or(format!("{op} operation without \"value\""))
        };
        let from = || {
            operation
                .get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{op} operation without \"from\""))
        };
        match op {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            "move" => {
                let moved = remove(target, from()?)?;
                add(target, path, moved)?;
            }
            "copy" => {
                let copied = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("missing path {:?}", from()?))?;
                add(target, path, copied)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unexpected operation {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path.rsplit_once('/').ok_or(format!("invalid JSON pointer {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse().map_err(|_| format!("bad index {last:?}"))?
            };
            if index > items.len() {
                return Err(format!("index {index} out of bounds in {path:?}"));
            }
            items.insert(index, value);
        }
        _ => return Err(format!("missing path {parent:?}")),
    }
    Ok(())
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let removed = match target.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(index) if index < items.len() => Some(items.remove(index)),
            _ => None,
        },
        _ => None,
    };
    removed.ok_or(format!("missing path {path:?}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_map_lists_by_key_and_replaces_atomic_ones() {
        let mut sa = json!({
            "metadata": {"name": "default", "finalizers": ["a"]},
            "secrets": [{"name": "s1"}, {"name": "s2"}],
            "imagePullSecrets": [{"name": "p1"}],
        });
        let patch = json!({
            "metadata": {"finalizers": ["b", "a"]},
            "secrets": [{"name": "s2", "namespace": "x"}, {"name": "s3"}, {"name": "s1", "$patch": "delete"}],
            "imagePullSecrets": [{"name": "p2"}],
        });
        strategic_merge_patch(Kind::ServiceAccount, &mut sa, &patch).expect("valid patch");
        assert_eq!(
            sa,
            json!({
                "metadata": {"name": "default", "finalizers": ["a", "b"]},
                "secrets": [{"name": "s2", "namespace": "x"}, {"name": "s3"}],
                "imagePullSecrets": [{"name": "p2"}],
            })
        );
    }

    #[test]
    fn strategic_merge_directives() {
        let mut object = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}});
        let patch = json!({
            "metadata": {"labels": {"$patch": "replace", "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x"]}
        });
        strategic_merge_patch(Kind::Secret, &mut object, &patch).expect("valid patch");
        assert_eq!(object, json!({"metadata": {"labels": {"c": "3"}, "finalizers": ["y"]}}));
        let missing_key = json!({"secrets": [{"namespace": "x"}]});
        assert!(strategic_merge_patch(Kind::ServiceAccount, &mut object, &missing_key).is_err());
    }

    #[test]
    fn json_patch_operations() {
        let mut target = json!({"metadata": {"resourceVersion": "7"}, "list": [{"name": "a"}]});
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
            {"op": "add", "path": "/list/-", "value": {"name": "b"}},
            {"op": "add", "path": "/metadata/labels", "value": {"x~y/z": "1"}},
            {"op": "move", "from": "/metadata/labels/x~0y~1z", "path": "/moved"},
            {"op": "remove", "path": "/list/0"},
        ]);
        json_patch(&mut target, &patch).expect("valid patch");
        assert_eq!(
            target,
            json!({"metadata": {"resourceVersion": "7", "labels": {}}, "list": [{"name": "b"}], "moved": "1"})
        );
        let failing = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}]);
        assert_eq!(
            json_patch(&mut target, &failing),
            Err("testing value /metadata/resourceVersion failed".into())
        );
    }
}
