//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified but faithful model of the API server's structured merge:
//!
//! - an object's fields are the paths to its leaves (scalars, atomic lists,
//!   empty maps), with maps and structs granular and list elements addressed
//!   by their key (`k:{"name":"x"}`) or value (`v:"x"`) for map and set lists;
//! - an apply by manager M owns exactly the fields of its configuration; it
//!   conflicts with another manager owning one of those fields with a different
//!   value (`force` takes the field over instead); fields M applied before but
//!   no longer does are removed unless another manager owns them;
//! - any other write (create, update, merge patches) takes ownership of the
//!   fields it added or changed, without conflicts, for its manager's `Update`
//!   entry; fields that disappear lose their owners.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::resource::{Kind, ListType};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathElement {
    /// A field of a struct or map.
    Field(String),
    /// An element of a map list: its key field and that field's JSON value.
    Key(String, String),
    /// An element of a set list: its JSON.
    Value(String),
}

/// The path from the object's root to one field.
pub(crate) type FieldPath = Vec<PathElement>;
/// A set of field paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Fields the server sets, which nobody owns.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn is_server_field(path: &[PathElement], key: &str) -> bool {
    match path {
        [] => key == "apiVersion" || key == "kind",
        [PathElement::Field(parent)] => parent == "metadata" && SERVER_METADATA.contains(&key),
        _ => false,
    }
}

fn schema_path(path: &[PathElement]) -> Vec<&str> {
    path.iter()
        .filter_map(|element| match element {
            PathElement::Field(name) => Some(name.as_str()),
            PathElement::Key(..) | PathElement::Value(_) => None,
        })
        .collect()
}

/// Whether a value serialises to this JSON text (path elements hold JSON).
fn is_json(value: &Value, json: &str) -> bool {
    let text = value.to_string();
    text == json
}

fn matches_key(item: &Value, field: &str, json: &str) -> bool {
    item.get(field).is_some_and(|value| is_json(value, json))
}

/// The fields of an object (or of an apply configuration).
pub(crate) fn field_set(kind: Kind, object: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    collect(kind, object, &mut Vec::new(), &mut set);
    set
}

fn collect(kind: Kind, value: &Value, path: &mut FieldPath, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                if is_server_field(path, key) {
                    continue;
                }
                path.push(PathElement::Field(key.clone()));
                collect(kind, child, path, set);
                path.pop();
            }
        }
        Value::Array(items) => match kind.list_type(&schema_path(path)) {
            ListType::Atomic => {
                set.insert(path.clone());
            }
            ListType::Map(key) => {
                for item in items {
                    if let Some(key_value) = item.get(key) {
                        path.push(PathElement::Key(key.to_owned(), key_value.to_string()));
                        set.insert(path.clone());
                        collect(kind, item, path, set);
                        path.pop();
                    }
                }
            }
            ListType::Set => {
                for item in items {
                    path.push(PathElement::Value(item.to_string()));
                    set.insert(path.clone());
                    path.pop();
                }
            }
        },
        _ if !path.is_empty() => {
            set.insert(path.clone());
        }
        _ => {}
    }
}

/// Whether the path names a map-list element itself rather than a value.
fn is_marker(path: &[PathElement]) -> bool {
    matches!(path.last(), Some(PathElement::Key(..)))
}

/// The value at a path, if present.
pub(crate) fn value_at<'a>(value: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, element| match element {
        PathElement::Field(name) => current.get(name),
        PathElement::Key(field, json) => current.as_array()?.iter().find(|item| matches_key(item, field, json)),
        PathElement::Value(json) => current.as_array()?.iter().find(|item| is_json(item, json)),
    })
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |current, element| match element {
        PathElement::Field(name) => current.get_mut(name),
        PathElement::Key(field, json) => current
            .as_array_mut()?
            .iter_mut()
            .find(|item| matches_key(item, field, json)),
        PathElement::Value(json) => current.as_array_mut()?.iter_mut().find(|item| is_json(item, json)),
    })
}

/// Removes the field at a path, if present.
fn remove_at(value: &mut Value, path: &[PathElement]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = value_at_mut(value, parent_path) else {
        return;
    };
    match last {
        PathElement::Field(name) => {
            if let Some(map) = parent.as_object_mut() {
                map.remove(name);
            }
        }
        PathElement::Key(field, json) => {
            if let Some(items) = parent.as_array_mut() {
                items.retain(|item| !matches_key(item, field, json));
            }
        }
        PathElement::Value(json) => {
            if let Some(items) = parent.as_array_mut() {
                items.retain(|item| !is_json(item, json));
            }
        }
    }
}

/// A path as the API server prints it in conflict messages (`.data.key`).
pub(crate) fn display(path: &[PathElement]) -> String {
    path.iter()
        .map(|element| match element {
            PathElement::Field(name) => format!(".{name}"),
            PathElement::Key(field, json) => format!("[{field}={json}]"),
            PathElement::Value(json) => format!("[={json}]"),
        })
        .collect()
}

/// Merges an apply configuration into the live object: maps field by field,
/// map lists element by element, set lists as sets, everything else replaced.
fn merge_applied(kind: Kind, live: &mut Value, config: &Value, path: &mut Vec<String>) {
    match (live, config) {
        (Value::Object(live), Value::Object(config)) => {
            for (key, value) in config {
                path.push(key.clone());
                match live.get_mut(key) {
                    Some(slot) => merge_applied(kind, slot, value, path),
                    None => {
                        live.insert(key.clone(), value.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(live), Value::Array(config)) => {
            let schema: Vec<&str> = path.iter().map(String::as_str).collect();
            match kind.list_type(&schema) {
                ListType::Atomic => live.clone_from(config),
                ListType::Map(key) => {
                    for item in config {
                        let existing = item
                            .get(key)
                            .and_then(|wanted| live.iter_mut().find(|candidate| candidate.get(key) == Some(wanted)));
                        match existing {
                            Some(existing) => merge_applied(kind, existing, item, path),
                            None => live.push(item.clone()),
                        }
                    }
                }
                ListType::Set => {
                    for item in config {
                        if !live.contains(item) {
                            live.push(item.clone());
                        }
                    }
                }
            }
        }
        (live, config) => live.clone_from(config),
    }
}

/// Whether a manager applied its configuration or wrote it another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagedEntry {
    manager: String,
    operation: Operation,
    time: String,
    fields: FieldSet,
}

/// The field owners of one object, in the order they first wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ManagedFields(Vec<ManagedEntry>);

impl ManagedFields {
    /// Records a non-apply write by `manager`: it owns what it added or
    /// changed from `old` (everything, on create).
    pub(crate) fn record_update(&mut self, kind: Kind, old: Option<&Value>, new: &Value, manager: &str, now: &str) {
        let present = field_set(kind, new);
        let changed: FieldSet = present
            .iter()
            .filter(|path| match old {
                None => true,
                Some(old) if is_marker(path) => value_at(old, path).is_none(),
                Some(old) => value_at(old, path) != value_at(new, path),
            })
            .cloned()
            .collect();
        for entry in &mut self.0 {
            entry
                .fields
                .retain(|path| present.contains(path) && !changed.contains(path));
        }
        if !changed.is_empty() {
            match self.find(manager, Operation::Update) {
                Some(index) => {
                    let entry = &mut self.0[index];
                    entry.fields.extend(changed);
                    entry.time = now.to_owned();
                }
                None => self.0.push(ManagedEntry {
                    manager: manager.to_owned(),
                    operation: Operation::Update,
                    time: now.to_owned(),
                    fields: changed,
                }),
            }
        }
        self.0.retain(|entry| !entry.fields.is_empty());
    }

    /// Server-side apply of `config` by `manager` onto `object` (the live
    /// object, or a bare skeleton when it does not exist yet). On conflict,
    /// without `force`, returns the (manager, field) pairs and changes nothing.
    pub(crate) fn apply(
        &mut self,
        kind: Kind,
        object: &mut Value,
        config: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<(), Vec<(String, String)>> {
        let applied = field_set(kind, config);
        let own = |entry: &ManagedEntry| entry.manager == manager && entry.operation == Operation::Apply;

        let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
        for entry in self.0.iter().filter(|entry| !own(entry)) {
            for path in entry.fields.intersection(&applied) {
                if !is_marker(path) && value_at(object, path) != value_at(config, path) {
                    conflicts.push((entry.manager.clone(), path.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !force {
                return Err(conflicts
                    .iter()
                    .map(|(manager, path)| (manager.clone(), display(path)))
                    .collect());
            }
            for entry in self.0.iter_mut().filter(|entry| !own(entry)) {
                for (owner, path) in &conflicts {
                    if *owner == entry.manager {
                        entry.fields.remove(path);
                    }
                }
            }
        }

        let position = self.find(manager, Operation::Apply);
        let previous = position
            .map(|index| std::mem::take(&mut self.0[index].fields))
            .unwrap_or_default();
        let owned_by_others: FieldSet = self.0.iter().flat_map(|entry| entry.fields.iter().cloned()).collect();
        for path in previous.difference(&applied) {
            if !owned_by_others.contains(path) {
                remove_at(object, path);
            }
        }
        merge_applied(kind, object, config, &mut Vec::new());

        let entry = ManagedEntry {
            manager: manager.to_owned(),
            operation: Operation::Apply,
            time: now.to_owned(),
            fields: applied,
        };
        match position {
            Some(index) => self.0[index] = entry,
            None => self.0.push(entry),
        }
        Ok(())
    }

    /// Drops ownership of fields the object no longer has (after defaulting
    /// and normalisation), and owners left with nothing.
    pub(crate) fn retain_present(&mut self, kind: Kind, object: &Value) {
        let present = field_set(kind, object);
        for entry in &mut self.0 {
            entry.fields.retain(|path| present.contains(path));
        }
        self.0.retain(|entry| !entry.fields.is_empty());
    }

    /// Whether nobody owns any field.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both record the same owners of the same fields (times aside).
    pub(crate) fn same_ownership(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.manager == b.manager && a.operation == b.operation && a.fields == b.fields)
    }

    fn find(&self, manager: &str, operation: Operation) -> Option<usize> {
        self.0
            .iter()
            .position(|entry| entry.manager == manager && entry.operation == operation)
    }

    /// `metadata.managedFields` as the API server shows it.
    pub(crate) fn render(&self) -> Value {
        let entries = self.0.iter().map(|entry| {
            json!({
                "manager": entry.manager,
                "operation": match entry.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                },
                "apiVersion": "v1",
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&entry.fields),
            })
        });
        Value::Array(entries.collect())
    }
}

fn token(element: &PathElement) -> String {
    match element {
        PathElement::Field(name) => format!("f:{name}"),
        PathElement::Key(field, json) => format!("k:{{{}:{json}}}", Value::from(field.as_str())),
        PathElement::Value(json) => format!("v:{json}"),
    }
}

/// The `FieldsV1` trie of a field set.
fn fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for element in path {
            let child = node.entry(token(element)).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            let Value::Object(child) = child else {
                unreachable!("just made an object");
            };
            node = child;
        }
        if is_marker(path) {
            node.insert(".".to_owned(), Value::Object(Map::new()));
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";

    fn apply(
        managed: &mut ManagedFields,
        object: &mut Value,
        config: Value,
        manager: &str,
        force: bool,
    ) -> Result<(), Vec<(String, String)>> {
        managed.apply(Kind::Secret, object, &config, manager, force, NOW)
    }

    #[test]
    fn field_sets_are_granular_for_maps_and_keyed_for_map_lists() {
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "uid": "u", "labels": {"a": "1"}},
            "secrets": [{"name": "s1"}],
            "imagePullSecrets": [{"name": "p1"}],
        });
        let fields = fields_v1(&field_set(Kind::ServiceAccount, &sa));
        assert_eq!(
            fields,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}},
                "f:secrets": {"k:{\"name\":\"s1\"}": {".": {}, "f:name": {}}},
                "f:imagePullSecrets": {},
            })
        );
    }

    #[test]
    fn apply_conflicts_only_on_different_values_and_force_takes_over() {
        let mut managed = ManagedFields::default();
        let mut object = json!({"metadata": {"name": "s"}});
        apply(
            &mut managed,
            &mut object,
            json!({"data": {"a": "MQ==", "b": "Mg=="}}),
            "first",
            false,
        )
        .expect("first apply");

        // The same value: shared ownership, no conflict.
        apply(
            &mut managed,
            &mut object,
            json!({"data": {"a": "MQ=="}}),
            "second",
            false,
        )
        .expect("same value");
        // A different value: conflict naming the owner and the field.
        let conflicts = apply(
            &mut managed,
            &mut object,
            json!({"data": {"b": "Mw=="}}),
            "second",
            false,
        )
        .expect_err("conflict");
        assert_eq!(conflicts, vec![("first".to_owned(), ".data.b".to_owned())]);
        assert_eq!(object["data"]["b"], "Mg==");

        apply(
            &mut managed,
            &mut object,
            json!({"data": {"b": "Mw=="}}),
            "second",
            true,
        )
        .expect("forced");
        assert_eq!(object["data"]["b"], "Mw==");
        // "first" lost b to the forced apply: its next apply without b leaves
        // b to its new owner.
        apply(
            &mut managed,
            &mut object,
            json!({"data": {"a": "MQ=="}}),
            "first",
            false,
        )
        .expect("reapply");
        assert_eq!(object["data"], json!({"a": "MQ==", "b": "Mw=="}));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut managed = ManagedFields::default();
        let mut object = json!({"metadata": {"name": "s"}});
        apply(
            &mut managed,
            &mut object,
            json!({"metadata": {"labels": {"x": "1", "y": "2"}}}),
            "m",
            false,
        )
        .expect("apply");
        apply(
            &mut managed,
            &mut object,
            json!({"metadata": {"labels": {"x": "1"}}}),
            "m",
            false,
        )
        .expect("apply");
        assert_eq!(object["metadata"]["labels"], json!({"x": "1"}));
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let mut managed = ManagedFields::default();
        let old = json!({"data": {"a": "MQ==", "b": "Mg=="}});
        managed.record_update(Kind::Secret, None, &old, "creator", NOW);
        let new = json!({"data": {"a": "MQ==", "b": "Mw=="}});
        managed.record_update(Kind::Secret, Some(&old), &new, "editor", NOW);
        let rendered = managed.render();
        assert_eq!(rendered[0]["manager"], "creator");
        assert_eq!(rendered[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
        assert_eq!(rendered[1]["manager"], "editor");
        assert_eq!(rendered[1]["fieldsV1"], json!({"f:data": {"f:b": {}}}));
    }
}
