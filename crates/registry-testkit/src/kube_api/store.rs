//! The object store and the REST semantics of each operation: what is
//! checked, in which order, and what a success or failure answers. Every
//! change is recorded in the [`History`] under its own revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::fields::ManagedFields;
use super::history::{Change, Event, History, Key};
use super::patch::{json_patch, merge_patch, strategic_merge_patch};
use super::resource::{Kind, fold_string_data, normalize};
use super::select::{FieldSelector, LabelSelector};
use super::status::{ApiError, Cause};
use super::validation::validate;

/// The patch formats the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/apply-patch+yaml` (server-side apply; JSON bodies only).
    Apply,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
}

impl PatchType {
    pub(crate) fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            "application/apply-patch+yaml" => Some(Self::Apply),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Query and header options of a write.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOptions {
    /// `?fieldManager=`.
    pub(crate) field_manager: Option<String>,
    /// The `User-Agent` header, which names the manager when `fieldManager` is absent.
    pub(crate) user_agent: Option<String>,
    /// `?dryRun=All` (or `dryRun` in a delete body).
    pub(crate) dry_run: bool,
    /// `?force=true`.
    pub(crate) force: bool,
}

impl WriteOptions {
    fn manager(&self) -> String {
        match (&self.field_manager, &self.user_agent) {
            (Some(manager), _) => manager.clone(),
            (None, Some(agent)) => agent.split('/').next().unwrap_or_default().to_owned(),
            (None, None) => "unknown".to_owned(),
        }
    }
}

/// The preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
}

/// What a list selects and how it pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
}

/// How a write records field ownership.
enum Ownership {
    /// A non-apply write by this manager.
    Update(String),
    /// An apply, already recorded.
    Applied(ManagedFields),
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    object: Value,
    managed: ManagedFields,
}

impl Stored {
    /// The object as the API returns it, `metadata.managedFields` included.
    pub(crate) fn render(&self) -> Value {
        let mut object = self.object.clone();
        if !self.managed.is_empty() {
            object["metadata"]["managedFields"] = self.managed.render();
        }
        object
    }
}

/// Every object, the global revision (`resourceVersion`) counter, and the
/// history of changes.
#[derive(Debug, Default)]
pub(crate) struct Store {
    revision: u64,
    objects: BTreeMap<Key, Stored>,
    history: History,
}

/// A list item: a live object, or one as it was at an older revision.
#[derive(Clone, Copy)]
enum Item<'a> {
    Live(&'a Stored),
    Past(&'a Value),
}

impl Item<'_> {
    /// The object selectors look at.
    fn object(&self) -> &Value {
        match self {
            Self::Live(stored) => &stored.object,
            Self::Past(object) => object,
        }
    }

    fn render(&self) -> Value {
        match self {
            Self::Live(stored) => stored.render(),
            Self::Past(object) => (*object).clone(),
        }
    }
}

fn key(kind: Kind, namespace: &str, name: &str) -> Key {
    (kind, namespace.to_owned(), name.to_owned())
}

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .filter(|value| !value.is_empty())
}

fn remove_meta(object: &mut Value, field: &str) {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove(field);
    }
}

/// The current time as the API server writes timestamps.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("operating system random source");
    bytes
}

/// A random (version 4) UUID.
fn new_uid() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The random suffix `generateName` gets.
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Decodes a body as the given kind (`400 BadRequest` when it is not one).
/// Client-sent `managedFields` are ignored.
fn decode(kind: Kind, mut body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}",
            kind.name(),
            kind.name()
        )));
    }
    remove_meta(&mut body, "managedFields");
    kind.decode(body).map_err(ApiError::bad_request)
}

/// Folds `stringData`, fills defaults and drops empty fields.
fn prepare(kind: Kind, object: &mut Value) {
    if kind == Kind::Secret {
        fold_string_data(object);
    }
    kind.apply_defaults(object);
    normalize(object);
}

fn check(kind: Kind, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let causes = validate(kind, object, old);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            kind.name(),
            meta(object, "name").unwrap_or_default(),
            &causes,
        ))
    }
}

/// The body's name and namespace, when given, must match the URL's.
fn check_identity(object: &mut Value, namespace: &str, name: Option<&str>) -> Result<(), ApiError> {
    if let Some(given) = meta(object, "namespace")
        && given != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let (Some(given), Some(name)) = (meta(object, "name"), name)
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(name) = name {
        object["metadata"]["name"] = Value::from(name);
    }
    object["metadata"]["namespace"] = Value::from(namespace);
    Ok(())
}

fn without_resource_version(object: &Value) -> Value {
    let mut object = object.clone();
    remove_meta(&mut object, "resourceVersion");
    object
}

/// A continue token: the revision of the list's first page (later pages
/// serve that snapshot) and the last key served.
fn encode_continue(revision: u64, namespace: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!([revision, namespace, name]).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Store {
    /// The current revision: the `resourceVersion` of the latest write.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The history of changes.
    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    /// A channel that receives every change from now on.
    pub(crate) fn subscribe(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<Event>> {
        self.history.subscribe()
    }

    /// Drops the history up to the current revision.
    pub(crate) fn compact(&mut self) {
        self.history.compact(self.revision);
    }

    /// Bounds the history to its last `limit` events.
    pub(crate) fn set_history_limit(&mut self, limit: usize) {
        self.history.set_limit(limit);
    }

    /// Every object of a kind, in every namespace, by key.
    pub(crate) fn all_of(&self, kind: Kind) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, stored)| stored.render())
            .collect()
    }

    fn stored(&self, kind: Kind, namespace: &str, name: &str) -> Result<&Stored, ApiError> {
        self.objects
            .get(&key(kind, namespace, name))
            .ok_or_else(|| ApiError::not_found(kind.plural(), name))
    }

    /// An object as stored, if present.
    pub(crate) fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.objects.get(&key(kind, namespace, name)).map(Stored::render)
    }

    /// Every object of a kind in a namespace (`""` for namespaces), by name.
    pub(crate) fn all(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && ns == namespace)
            .map(|(_, stored)| stored.render())
            .collect()
    }

    pub(crate) fn namespace_exists(&self, name: &str) -> bool {
        self.objects.contains_key(&key(Kind::Namespace, "", name))
    }

    fn require_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        if self.namespace_exists(namespace) {
            Ok(())
        } else {
            Err(ApiError::not_found("namespaces", namespace))
        }
    }

    /// Stores a new object with fresh server fields; returns it rendered.
    fn insert_new(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
        managed: ManagedFields,
        dry_run: bool,
    ) -> Value {
        object["metadata"]["uid"] = Value::from(new_uid());
        object["metadata"]["creationTimestamp"] = Value::from(now());
        self.commit(kind, namespace, object, managed, dry_run)
    }

    /// Stores an object under a new revision (unless a dry run); returns it rendered.
    fn commit(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
        managed: ManagedFields,
        dry_run: bool,
    ) -> Value {
        let name = meta(&object, "name").unwrap_or_default().to_owned();
        if dry_run {
            return Stored { object, managed }.render();
        }
        self.revision += 1;
        object["metadata"]["resourceVersion"] = Value::from(self.revision.to_string());
        let stored = Stored { object, managed };
        let rendered = stored.render();
        let key = key(kind, namespace, &name);
        let previous = self.objects.insert(key.clone(), stored).map(|old| old.render());
        self.history.record(Event {
            revision: self.revision,
            key,
            change: if previous.is_some() {
                Change::Modified
            } else {
                Change::Added
            },
            object: rendered.clone(),
            previous,
        });
        rendered
    }

    /// Removes an object under a new revision; `false` when it is absent.
    fn remove(&mut self, key: &Key) -> bool {
        let Some(stored) = self.objects.remove(key) else {
            return false;
        };
        self.revision += 1;
        let previous = stored.render();
        let mut object = previous.clone();
        object["metadata"]["resourceVersion"] = Value::from(self.revision.to_string());
        self.history.record(Event {
            revision: self.revision,
            key: key.clone(),
            change: Change::Deleted,
            object,
            previous: Some(previous),
        });
        true
    }

    /// Creates a namespace, and its `default` ServiceAccount, as a cluster
    /// would; `Ok(false)` when it already exists.
    pub(crate) fn create_namespace(&mut self, name: &str) -> Result<bool, ApiError> {
        if self.namespace_exists(name) {
            return Ok(false);
        }
        let namespace = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" },
        });
        check(Kind::Namespace, &namespace, None)?;
        self.insert_new(Kind::Namespace, "", namespace, ManagedFields::default(), false);
        let account = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": "default", "namespace": name },
        });
        self.insert_new(Kind::ServiceAccount, name, account, ManagedFields::default(), false);
        Ok(true)
    }

    /// Deletes a namespace and everything in it at once (no `Terminating`
    /// phase): each object under its own revision, then the namespace, as
    /// the namespace controller would; `false` when it does not exist.
    pub(crate) fn delete_namespace(&mut self, name: &str) -> bool {
        if !self.namespace_exists(name) {
            return false;
        }
        let contents: Vec<Key> = self
            .objects
            .keys()
            .filter(|(_, namespace, _)| namespace == name)
            .cloned()
            .collect();
        for key in &contents {
            self.remove(key);
        }
        self.remove(&key(Kind::Namespace, "", name))
    }

    /// `GET` of one object.
    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.stored(kind, namespace, name).map(Stored::render)
    }

    /// The objects in scope as they were at `revision`, from the history.
    fn snapshot(&self, revision: u64, in_scope: impl Fn(&Key) -> bool) -> Result<BTreeMap<Key, Value>, ApiError> {
        let mut state: BTreeMap<Key, Value> = self
            .objects
            .iter()
            .filter(|(key, _)| in_scope(key))
            .map(|(key, stored)| (key.clone(), stored.render()))
            .collect();
        self.history.roll_back(&mut state, revision, in_scope).map_err(|_| {
            ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            )
        })?;
        Ok(state)
    }

    /// `GET` of a collection: one namespace's, or all (`None`). A continued
    /// list serves the snapshot of its first page, under that page's
    /// `resourceVersion`, so a watch from it misses and repeats nothing.
    pub(crate) fn list(&self, kind: Kind, namespace: Option<&str>, query: &ListQuery) -> Result<Value, ApiError> {
        let invalid_token = |token: &str| ApiError::bad_request(format!("continue key is not valid: {token:?}"));
        let (revision, after) = match &query.continue_token {
            Some(token) => {
                let (revision, ns, name) = decode_continue(token).ok_or_else(|| invalid_token(token))?;
                if revision > self.revision {
                    return Err(invalid_token(token));
                }
                (revision, Some((ns, name)))
            }
            None => (self.revision, None),
        };
        let in_scope = |(k, ns, _): &Key| *k == kind && namespace.is_none_or(|wanted| wanted == ns);
        let past = if revision < self.revision {
            Some(self.snapshot(revision, in_scope)?)
        } else {
            None
        };
        let candidates: Vec<(&Key, Item<'_>)> = match &past {
            Some(objects) => objects.iter().map(|(key, object)| (key, Item::Past(object))).collect(),
            None => self
                .objects
                .iter()
                .filter(|(key, _)| in_scope(key))
                .map(|(key, stored)| (key, Item::Live(stored)))
                .collect(),
        };
        let matching: Vec<(&Key, Item<'_>)> = candidates
            .into_iter()
            .filter(|((_, ns, name), _)| {
                after
                    .as_ref()
                    .is_none_or(|(after_ns, after_name)| (ns, name) > (after_ns, after_name))
            })
            .filter(|(_, item)| query.labels.matches(item.object()) && query.fields.matches(item.object()))
            .collect();
        let limit = query.limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
        let page = &matching[..matching.len().min(limit)];

        let mut metadata = json!({ "resourceVersion": revision.to_string() });
        if page.len() < matching.len()
            && let Some(((_, ns, name), _)) = page.last()
        {
            metadata["continue"] = Value::from(encode_continue(revision, ns, name));
            metadata["remainingItemCount"] = Value::from(matching.len() - page.len());
        }
        let items: Vec<Value> = page
            .iter()
            .map(|(_, item)| {
                let mut item = item.render();
                if let Value::Object(fields) = &mut item {
                    fields.remove("apiVersion");
                    fields.remove("kind");
                }
                item
            })
            .collect();
        Ok(json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": "v1",
            "metadata": metadata,
            "items": items,
        }))
    }

    /// `POST`: answers `201 Created`.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.require_namespace(namespace)?;
        let mut object = decode(kind, body)?;
        if meta(&object, "resourceVersion").is_some() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if meta(&object, "name").is_none()
            && let Some(prefix) = meta(&object, "generateName")
        {
            object["metadata"]["name"] = Value::from(format!("{prefix}{}", name_suffix()));
        }
        check_identity(&mut object, namespace, None)?;
        for server_field in ["uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            remove_meta(&mut object, server_field);
        }
        prepare(kind, &mut object);
        check(kind, &object, None)?;
        let name = meta(&object, "name").unwrap_or_default();
        if self.objects.contains_key(&key(kind, namespace, name)) {
            return Err(ApiError::already_exists(kind.plural(), name));
        }
        let mut managed = ManagedFields::default();
        managed.record_update(kind, None, &object, &options.manager(), &now());
        Ok(self.insert_new(kind, namespace, object, managed, options.dry_run))
    }

    /// `PUT`: replaces an existing object.
    pub(crate) fn replace(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut object = decode(kind, body)?;
        check_identity(&mut object, namespace, Some(name))?;
        let old = self.stored(kind, namespace, name)?.clone();
        self.update(
            kind,
            namespace,
            old,
            object,
            options,
            Ownership::Update(options.manager()),
        )
    }

    /// The common end of `PUT` and `PATCH`: preconditions, server fields,
    /// validation, ownership, and no write at all when nothing changed.
    fn update(
        &mut self,
        kind: Kind,
        namespace: &str,
        old: Stored,
        mut object: Value,
        options: &WriteOptions,
        ownership: Ownership,
    ) -> Result<Value, ApiError> {
        let name = meta(&old.object, "name").unwrap_or_default().to_owned();
        let old_version = meta(&old.object, "resourceVersion").unwrap_or_default();
        if meta(&object, "resourceVersion").is_some_and(|version| version != old_version) {
            return Err(ApiError::stale(kind.plural(), &name));
        }
        let old_uid = meta(&old.object, "uid").unwrap_or_default();
        if let Some(uid) = meta(&object, "uid")
            && uid != old_uid
        {
            return Err(ApiError::precondition(kind.plural(), &name, "UID", uid, old_uid));
        }
        for server_field in ["uid", "creationTimestamp"] {
            object["metadata"][server_field] = old.object["metadata"][server_field].clone();
        }
        remove_meta(&mut object, "resourceVersion");
        prepare(kind, &mut object);
        check(kind, &object, Some(&old.object))?;

        let mut managed = match ownership {
            Ownership::Update(manager) => {
                let mut managed = old.managed.clone();
                managed.record_update(kind, Some(&old.object), &object, &manager, &now());
                managed
            }
            Ownership::Applied(managed) => managed,
        };
        managed.retain_present(kind, &object);

        if object == without_resource_version(&old.object) && managed.same_ownership(&old.managed) {
            return Ok(old.render());
        }
        if options.dry_run {
            object["metadata"]["resourceVersion"] = Value::from(old_version);
        }
        Ok(self.commit(kind, namespace, object, managed, options.dry_run))
    }

    /// `PATCH`: answers `201 Created` (`true`) when an apply created the object.
    pub(crate) fn patch(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        options: &WriteOptions,
    ) -> Result<(bool, Value), ApiError> {
        if patch_type == PatchType::Apply {
            return self.apply(kind, namespace, name, patch, options);
        }
        if options.force {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "",
                &[Cause::forbidden("force", "may not be specified for non-apply patch")],
            ));
        }
        let old = self.stored(kind, namespace, name)?.clone();
        let mut object = old.object.clone();
        let applied = match patch_type {
            PatchType::Merge => {
                merge_patch(&mut object, &patch);
                Ok(())
            }
            PatchType::Strategic => strategic_merge_patch(kind, &mut object, &patch),
            PatchType::Json => json_patch(&mut object, &patch),
            PatchType::Apply => unreachable!("handled above"),
        };
        applied.map_err(|error| ApiError::invalid("", "", &[Cause::invalid("patch", "<patch>", error)]))?;
        let mut object = decode(kind, object)?;
        check_identity(&mut object, namespace, Some(name))?;
        let updated = self.update(
            kind,
            namespace,
            old,
            object,
            options,
            Ownership::Update(options.manager()),
        )?;
        Ok((false, updated))
    }

    /// Server-side apply: create or update, field ownership, conflicts.
    fn apply(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        config: Value,
        options: &WriteOptions,
    ) -> Result<(bool, Value), ApiError> {
        let Some(manager) = options.field_manager.clone().filter(|manager| !manager.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "",
                &[Cause::required("fieldManager", "is required for apply patch")],
            ));
        };
        for (field, label) in [("kind", "Kind"), ("apiVersion", "APIVersion")] {
            if config.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "Object '{label}' is missing in the apply configuration"
                )));
            }
        }
        let precondition = meta(&config, "resourceVersion").map(str::to_owned);
        let mut config = decode(kind, config)?;
        check_identity(&mut config, namespace, Some(name))?;
        if kind == Kind::Secret {
            fold_string_data(&mut config);
        }
        remove_meta(&mut config, "resourceVersion");
        normalize(&mut config);

        let now = now();
        let Some(old) = self.objects.get(&key(kind, namespace, name)).cloned() else {
            self.require_namespace(namespace)?;
            if precondition.is_some() {
                return Err(ApiError::not_found(kind.plural(), name));
            }
            let mut object = json!({
                "apiVersion": "v1",
                "kind": kind.name(),
                "metadata": { "name": name, "namespace": namespace },
            });
            let mut managed = ManagedFields::default();
            managed
                .apply(kind, &mut object, &config, &manager, options.force, &now)
                .map_err(|conflicts| ApiError::apply_conflicts(kind.plural(), name, &conflicts))?;
            prepare(kind, &mut object);
            check(kind, &object, None)?;
            managed.retain_present(kind, &object);
            return Ok((true, self.insert_new(kind, namespace, object, managed, options.dry_run)));
        };

        if precondition
            .as_deref()
            .is_some_and(|version| Some(version) != meta(&old.object, "resourceVersion"))
        {
            return Err(ApiError::stale(kind.plural(), name));
        }
        let mut object = old.object.clone();
        let mut managed = old.managed.clone();
        managed
            .apply(kind, &mut object, &config, &manager, options.force, &now)
            .map_err(|conflicts| ApiError::apply_conflicts(kind.plural(), name, &conflicts))?;
        let updated = self.update(kind, namespace, old, object, options, Ownership::Applied(managed))?;
        Ok((false, updated))
    }

    /// `DELETE` of one object: answers a `Success` Status.
    pub(crate) fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let stored = self.stored(kind, namespace, name)?;
        let uid = meta(&stored.object, "uid").unwrap_or_default().to_owned();
        let version = meta(&stored.object, "resourceVersion").unwrap_or_default();
        if let Some(expected) = preconditions.uid.as_deref()
            && expected != uid
        {
            return Err(ApiError::precondition(kind.plural(), name, "UID", expected, &uid));
        }
        if let Some(expected) = preconditions.resource_version.as_deref()
            && expected != version
        {
            return Err(ApiError::precondition(
                kind.plural(),
                name,
                "ResourceVersion",
                expected,
                version,
            ));
        }
        if !dry_run {
            self.remove(&key(kind, namespace, name));
        }
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": { "name": name, "kind": kind.plural(), "uid": uid },
        }))
    }

    /// `DELETE` of a collection: answers the list of deleted objects.
    pub(crate) fn delete_collection(
        &mut self,
        kind: Kind,
        namespace: &str,
        query: &ListQuery,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let query = ListQuery {
            limit: None,
            continue_token: None,
            ..query.clone()
        };
        let deleted = self.list(kind, Some(namespace), &query)?;
        if !dry_run {
            let doomed: Vec<Key> = self
                .objects
                .iter()
                .filter(|((k, ns, _), stored)| {
                    *k == kind
                        && ns == namespace
                        && query.labels.matches(&stored.object)
                        && query.fields.matches(&stored.object)
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in &doomed {
                self.remove(key);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(manager: &str) -> WriteOptions {
        WriteOptions {
            field_manager: Some(manager.to_owned()),
            ..WriteOptions::default()
        }
    }

    fn secret(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})
    }

    #[test]
    fn every_write_bumps_the_global_revision() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        let base = store.revision();
        let created = store
            .create(Kind::Secret, "ns", secret("a", json!({"k": "MQ=="})), &options("t"))
            .expect("created");
        assert_eq!(created["metadata"]["resourceVersion"], (base + 1).to_string());
        assert_eq!(created["type"], "Opaque");
        let replaced = store
            .replace(
                Kind::Secret,
                "ns",
                "a",
                secret("a", json!({"k": "Mg=="})),
                &options("t"),
            )
            .expect("replaced");
        assert_eq!(replaced["metadata"]["resourceVersion"], (base + 2).to_string());
        assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    }

    #[test]
    fn unchanged_writes_do_not_bump_the_revision() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        let config = secret("a", json!({"k": "MQ=="}));
        let (created, first) = store
            .apply(Kind::Secret, "ns", "a", config.clone(), &options("m"))
            .expect("applied");
        let (_, second) = store
            .apply(Kind::Secret, "ns", "a", config, &options("m"))
            .expect("applied");
        assert!(created);
        assert_eq!(
            first["metadata"]["resourceVersion"],
            second["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn lists_page_with_continue_tokens() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        for name in ["a", "b", "c"] {
            store
                .create(Kind::Secret, "ns", secret(name, json!({})), &options("t"))
                .expect("created");
        }
        let first = ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        };
        let page = store.list(Kind::Secret, Some("ns"), &first).expect("listed");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(page["metadata"]["remainingItemCount"], 1);
        let token = page["metadata"]["continue"].as_str().map(str::to_owned);
        let next = ListQuery {
            limit: Some(2),
            continue_token: token,
            ..ListQuery::default()
        };
        let page = store.list(Kind::Secret, Some("ns"), &next).expect("listed");
        assert_eq!(page["items"][0]["metadata"]["name"], "c");
        assert!(page["metadata"].get("continue").is_none());
    }

    fn changes(store: &Store, after: u64) -> Vec<(u64, Change, String)> {
        store
            .history()
            .since(after)
            .expect("retained")
            .iter()
            .map(|event| (event.revision, event.change, event.key.2.clone()))
            .collect()
    }

    #[test]
    fn every_change_is_an_event_under_its_own_revision() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        let base = store.revision();
        let config = secret("a", json!({"k": "MQ=="}));
        store
            .apply(Kind::Secret, "ns", "a", config.clone(), &options("m"))
            .expect("applied");
        store
            .apply(Kind::Secret, "ns", "a", config, &options("m"))
            .expect("unchanged");
        store
            .create(Kind::Secret, "ns", secret("b", json!({})), &options("t"))
            .expect("created");
        store
            .replace(
                Kind::Secret,
                "ns",
                "b",
                secret("b", json!({"k": "Mg=="})),
                &options("t"),
            )
            .expect("replaced");
        store
            .delete_collection(Kind::Secret, "ns", &ListQuery::default(), false)
            .expect("deleted");
        assert_eq!(
            changes(&store, base),
            [
                (base + 1, Change::Added, "a".to_owned()),
                (base + 2, Change::Added, "b".to_owned()),
                (base + 3, Change::Modified, "b".to_owned()),
                (base + 4, Change::Deleted, "a".to_owned()),
                (base + 5, Change::Deleted, "b".to_owned()),
            ]
        );
        let events = store.history().since(base + 4).expect("retained");
        assert_eq!(events[0].object["metadata"]["resourceVersion"], (base + 5).to_string());
        assert_eq!(
            events[0]
                .previous
                .as_ref()
                .map(|p| p["metadata"]["resourceVersion"].clone()),
            Some(Value::from((base + 3).to_string()))
        );
    }

    #[test]
    fn a_namespace_is_deleted_after_its_objects() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        store
            .create(Kind::Secret, "ns", secret("a", json!({})), &options("t"))
            .expect("created");
        let base = store.revision();
        assert!(store.delete_namespace("ns"));
        assert_eq!(
            changes(&store, base),
            [
                (base + 1, Change::Deleted, "a".to_owned()),
                (base + 2, Change::Deleted, "default".to_owned()),
                (base + 3, Change::Deleted, "ns".to_owned()),
            ]
        );
        assert!(!store.delete_namespace("ns"));
        assert_eq!(store.revision(), base + 3);
    }

    #[test]
    fn continued_lists_serve_the_first_page_snapshot() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        for name in ["a", "c"] {
            store
                .create(Kind::Secret, "ns", secret(name, json!({})), &options("t"))
                .expect("created");
        }
        let first = ListQuery {
            limit: Some(1),
            ..ListQuery::default()
        };
        let page = store.list(Kind::Secret, Some("ns"), &first).expect("listed");
        let listed_at = page["metadata"]["resourceVersion"].clone();
        store
            .create(Kind::Secret, "ns", secret("b", json!({})), &options("t"))
            .expect("created");
        store
            .replace(
                Kind::Secret,
                "ns",
                "c",
                secret("c", json!({"k": "MQ=="})),
                &options("t"),
            )
            .expect("replaced");
        let next = ListQuery {
            continue_token: page["metadata"]["continue"].as_str().map(str::to_owned),
            ..ListQuery::default()
        };
        let rest = store.list(Kind::Secret, Some("ns"), &next).expect("listed");
        assert_eq!(rest["metadata"]["resourceVersion"], listed_at);
        assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(rest["items"][0]["metadata"]["name"], "c");
        assert!(rest["items"][0].get("data").is_none(), "c as it was");
        store.compact();
        let expired = store.list(Kind::Secret, Some("ns"), &next).map(|_| ());
        assert_eq!(
            expired.map_err(|error| error.to_status()["code"].clone()),
            Err(json!(410))
        );
    }

    #[test]
    fn dry_runs_store_nothing() {
        let mut store = Store::default();
        store.create_namespace("ns").expect("valid name");
        let base = store.revision();
        let dry = WriteOptions {
            dry_run: true,
            ..options("t")
        };
        store
            .create(Kind::Secret, "ns", secret("a", json!({})), &dry)
            .expect("validated");
        assert_eq!((store.revision(), store.find(Kind::Secret, "ns", "a")), (base, None));
    }
}
