//! The registry use cases: create, read, list, update (rename, rotate),
//! delete and test, with authorization, validation, sealing and auditing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::credentials::Credentials;
use crate::error::{Error, FieldViolation, Resource, Result};
use crate::kind::RegistryKind;
use crate::ports::login::{ImageProbe, LiveOutcome, LiveReport, LoginError, LoginProvider, LoginUse, RegistryProbe};
use crate::ports::sealer::{SealContext, Sealer};
use crate::ports::store::{Inserted, ListQuery, RegistryStore, StoreError, WriteOutcome};
use crate::principal::{Principal, Role};
use crate::registry::{Registry, RegistryId, StoredRegistry, Timestamp, UNSAVED_REVISION, new_etag};
use crate::sync::SyncTrigger;
use crate::targets::Organizations;
use crate::validate;

/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Larger page sizes are lowered to this.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// How often an unconditional write is retried when a concurrent write wins.
const WRITE_ATTEMPTS: usize = 3;

/// A registry to create.
#[derive(Debug, Clone)]
pub struct NewRegistry {
    pub name: String,
    pub kind: Option<RegistryKind>,
    pub credentials: Option<Credentials>,
    /// AIP-155 request id: a retry with the same id returns the first result.
    pub request_id: Option<String>,
}

/// The changes of an update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RegistryPatch {
    pub name: Option<String>,
    /// New credentials: a rotation.
    pub credentials: Option<Credentials>,
}

/// One page of registries.
#[derive(Debug, Clone)]
pub struct Page {
    pub registries: Vec<Registry>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// What "Test Connection" checks.
#[derive(Debug, Clone)]
pub enum TestSubject {
    /// A saved registry.
    Saved(String),
    /// A type and credentials from the form, not saved.
    Inline {
        kind: Option<RegistryKind>,
        credentials: Option<Credentials>,
    },
}

/// How far a connection test goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMode {
    Structural,
    Live,
}

/// The answer of "Test Connection".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub ok: bool,
    pub violations: Vec<FieldViolation>,
    pub server: String,
    /// The live test's answer (live mode, no violation).
    pub live: Option<LiveReport>,
}

/// What live connection tests need: the provider exchanges (ECR) and the
/// registry v2 handshake.
#[derive(Debug, Clone)]
struct LiveTests {
    logins: Arc<dyn LoginProvider>,
    probe: Arc<dyn RegistryProbe>,
}

/// Credentials opened once per sealed blob: every hand-out of a registry
/// would otherwise unwrap its data key and decrypt and parse its
/// credentials again. An entry is used only for the very ciphertext it was
/// opened from (a new seal, for a rotation or a new master key, has a new
/// nonce), so it can never be older than what the caller loaded.
#[derive(Default)]
struct Opened {
    by_registry: Mutex<OpenedMap>,
}

/// Each registry's last sealed blob and what it opened to.
type OpenedMap = HashMap<RegistryId, (Vec<u8>, Arc<Credentials>)>;

/// Beyond this many registries the cache starts over.
const OPENED_CAPACITY: usize = 4096;

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

impl Opened {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenedMap> {
        self.by_registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, stored: &StoredRegistry) -> Option<Arc<Credentials>> {
        match self.lock().get(&stored.registry.id) {
            Some((sealed, credentials)) if *sealed == stored.sealed_credentials => Some(Arc::clone(credentials)),
            _ => None,
        }
    }

    fn insert(&self, stored: &StoredRegistry, credentials: &Arc<Credentials>) {
        let mut cache = self.lock();
        if cache.len() >= OPENED_CAPACITY && !cache.contains_key(&stored.registry.id) {
            cache.clear();
        }
        cache.insert(
            stored.registry.id.clone(),
            (stored.sealed_credentials.clone(), Arc::clone(credentials)),
        );
    }

    fn forget(&self, id: &RegistryId) {
        self.lock().remove(id);
    }
}

/// The registry use cases over a store and a sealer.
#[derive(Debug, Clone)]
pub struct Registries {
    store: Arc<dyn RegistryStore>,
    sealer: Arc<dyn Sealer>,
    sync: SyncTrigger,
    live: Option<LiveTests>,
    opened: Arc<Opened>,
    /// The organizations whose ECR registries may choose the server's own
    /// AWS identity.
    ambient_aws: Option<Organizations>,
}

impl Registries {
    /// `principal.require(role, what)`, with a refusal on record: `action`
    /// refused, and the registry when the request named a valid id. A
    /// refusal that cannot be recorded is still a refusal (and logged).
    pub(crate) async fn require(
        &self,
        principal: &Principal,
        role: Role,
        what: &str,
        action: AuditAction,
        registry_id: Option<&str>,
    ) -> Result<()> {
        let Err(refused) = principal.require(role, what) else {
            return Ok(());
        };
        let registry_id = registry_id.and_then(RegistryId::parse);
        let event = AuditEvent::new(
            principal,
            action,
            registry_id.as_ref(),
            AuditOutcome::Denied,
            format!("needs the {role} role"),
        );
        if let Err(error) = self.store.record(&event).await {
            tracing::error!(%error, action = action.as_str(), "a refused call could not be audited");
        }
        Err(refused)
    }

    pub fn new(store: Arc<dyn RegistryStore>, sealer: Arc<dyn Sealer>) -> Self {
        Self {
            store,
            sealer,
            sync: SyncTrigger::default(),
            live: None,
            opened: Arc::default(),
            ambient_aws: None,
        }
    }

    /// Lets the ECR registries of `organizations` log in with the server's
    /// own AWS identity (`use_server_identity`); for others, creating or
    /// updating one is FAILED_PRECONDITION.
    pub fn with_ambient_aws(mut self, organizations: Option<Organizations>) -> Self {
        self.ambient_aws = organizations;
        self
    }

    /// What the server's configuration does not allow `organization`'s
    /// credentials to choose.
    fn check_allowed(&self, organization: &str, credentials: &Credentials) -> Result<()> {
        let allowed = self.ambient_aws.as_ref().is_some_and(|orgs| orgs.allows(organization));
        if matches!(
            credentials,
            Credentials::Ecr {
                server_identity: true,
                ..
            }
        ) && !allowed
        {
            return Err(Error::FailedPrecondition(format!(
                "registry.credentials.ecr.use_server_identity: this server does not log in to ECR with its own \
                 AWS identity for organization {organization:?} (ecr.ambient_identity_organizations)"
            )));
        }
        Ok(())
    }

    /// Offers live connection tests: logins through `logins`, the
    /// handshake through `probe`. Without, a live test is UNIMPLEMENTED.
    pub fn with_live_tests(mut self, logins: Arc<dyn LoginProvider>, probe: Arc<dyn RegistryProbe>) -> Self {
        self.live = Some(LiveTests { logins, probe });
        self
    }

    /// Wakes `sync` after writes that change pull Secrets' desired state.
    pub fn with_sync(mut self, sync: SyncTrigger) -> Self {
        self.sync = sync;
        self
    }

    pub fn sealer(&self) -> &Arc<dyn Sealer> {
        &self.sealer
    }

    pub fn store(&self) -> &Arc<dyn RegistryStore> {
        &self.store
    }

    /// Saves a new registry after validating it.
    pub async fn create(&self, principal: &Principal, new: NewRegistry) -> Result<Registry> {
        self.require(
            principal,
            Role::Writer,
            "creating a registry",
            AuditAction::RegistryCreate,
            None,
        )
        .await?;
        let mut violations = Vec::new();
        violations.extend(validate::registry_name(&new.name).map(|v| v.prefixed("registry")));
        if let Some(request_id) = &new.request_id {
            violations.extend(check_request_id(request_id));
        }
        let draft = check_draft("registry.", new.kind, new.credentials.as_ref());
        let (kind, credentials) = match draft {
            Ok(found) if violations.is_empty() => found,
            Ok(_) => return Err(Error::InvalidArgument(violations)),
            Err(more) => {
                violations.extend(more);
                return Err(Error::InvalidArgument(violations));
            }
        };
        self.check_allowed(&principal.organization, &credentials)?;

        let organization = &principal.organization;
        if let Some(request_id) = &new.request_id
            && let Some(earlier) = self.store.find_by_request_id(organization, request_id).await?
        {
            return self.replayed(principal, earlier.registry).await;
        }

        let id = RegistryId::generate();
        let now = Timestamp::now();
        let stored = StoredRegistry {
            key_id: self.sealer.primary_key_id().to_owned(),
            sealed_credentials: self.seal(&id, &credentials)?,
            registry: Registry {
                server: credentials.server(),
                hints: credentials.hints(),
                id,
                organization: organization.clone(),
                name: new.name,
                kind,
                created_by: principal.subject.clone(),
                created_at: now,
                updated_at: now,
                etag: new_etag(),
                credential_revision: 1,
            },
        };
        let audit = AuditEvent::new(
            principal,
            AuditAction::RegistryCreate,
            Some(&stored.registry.id),
            AuditOutcome::Ok,
            format!("type={kind}"),
        );
        match self.store.insert(&stored, new.request_id.as_deref(), &audit).await {
            Ok(Inserted::Created) => {
                tracing::info!(registry_id = %stored.registry.id, %kind, organization, "registry created");
                Ok(stored.registry)
            }
            Ok(Inserted::Replayed(earlier)) => self.replayed(principal, earlier.registry).await,
            Err(StoreError::NameTaken(name)) => Err(Error::AlreadyExists {
                resource: Resource::Registry,
                name,
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// The registry an earlier create with the same request id made, with
    /// the retry on record.
    async fn replayed(&self, principal: &Principal, earlier: Registry) -> Result<Registry> {
        let event = AuditEvent::new(
            principal,
            AuditAction::RegistryCreate,
            Some(&earlier.id),
            AuditOutcome::Replayed,
            "request_id used before: the earlier registry answered",
        );
        self.store.record(&event).await?;
        Ok(earlier)
    }

    /// One registry of the caller's organization.
    pub async fn get(&self, principal: &Principal, id: &str) -> Result<Registry> {
        self.require(
            principal,
            Role::Reader,
            "reading a registry",
            AuditAction::RegistryRead,
            Some(id),
        )
        .await?;
        Ok(self.load(principal, id).await?.registry)
    }

    /// A page of the caller's organization's registries, ordered by name.
    pub async fn list(
        &self,
        principal: &Principal,
        page_size: i32,
        page_token: &str,
        kind: Option<RegistryKind>,
    ) -> Result<Page> {
        self.require(
            principal,
            Role::Reader,
            "listing registries",
            AuditAction::RegistryRead,
            None,
        )
        .await?;
        let limit = page_limit(page_size)?;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(page_token)?)
        };
        let query = ListQuery {
            organization: principal.organization.clone(),
            kind,
            after,
            limit: limit + 1,
        };
        let mut registries: Vec<Registry> = self.store.list(&query).await?.into_iter().map(|s| s.registry).collect();
        let next_page_token = if registries.len() as u64 > limit {
            registries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            registries.last().map(encode_page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            registries,
            next_page_token,
        })
    }

    /// Renames a registry and/or rotates its credentials. An empty `etag`
    /// makes the update unconditional.
    pub async fn update(&self, principal: &Principal, id: &str, patch: RegistryPatch, etag: &str) -> Result<Registry> {
        self.require(
            principal,
            Role::Writer,
            "updating a registry",
            AuditAction::RegistryUpdate,
            Some(id),
        )
        .await?;
        if patch.name.is_none() && patch.credentials.is_none() {
            return Err(Error::invalid(
                "update_mask",
                "names nothing to update (expected name and/or credentials)",
            ));
        }
        if let Some(violation) = patch.name.as_deref().and_then(validate::registry_name) {
            return Err(Error::InvalidArgument(vec![violation.prefixed("registry")]));
        }

        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(principal, id).await?;
            if !etag.is_empty() && etag != current.registry.etag {
                return Err(etag_mismatch(id));
            }
            let mut next = current.clone();
            let mut detail = Vec::new();
            if let Some(name) = &patch.name {
                next.registry.name.clone_from(name);
                detail.push("name".to_owned());
            }
            if let Some(credentials) = &patch.credentials {
                let kind = current.registry.kind;
                let (_, credentials) =
                    check_draft("registry.", Some(kind), Some(credentials)).map_err(Error::InvalidArgument)?;
                self.check_allowed(&principal.organization, &credentials)?;
                next.sealed_credentials = self.seal(&next.registry.id, &credentials)?;
                next.key_id = self.sealer.primary_key_id().to_owned();
                next.registry.server = credentials.server();
                next.registry.hints = credentials.hints();
                next.registry.credential_revision += 1;
                detail.push(format!("credential_revision={}", next.registry.credential_revision));
            }
            next.registry.updated_at = Timestamp::now();
            next.registry.etag = new_etag();

            let audit = AuditEvent::new(
                principal,
                AuditAction::RegistryUpdate,
                Some(&next.registry.id),
                AuditOutcome::Ok,
                detail.join(" "),
            );
            match self.store.update(&next, &current.registry.etag, &audit).await {
                Ok(WriteOutcome::Done(())) => {
                    tracing::info!(registry_id = %next.registry.id, revision = next.registry.credential_revision, "registry updated");
                    if patch.credentials.is_some() {
                        // The old credentials leave this process's memory.
                        self.opened.forget(&next.registry.id);
                        self.sync.wake();
                    }
                    return Ok(next.registry);
                }
                Ok(WriteOutcome::NotFound | WriteOutcome::InUse(_)) => return Err(Error::registry_not_found(id)),
                Ok(WriteOutcome::EtagMismatch) if etag.is_empty() => continue,
                Ok(WriteOutcome::EtagMismatch) => return Err(etag_mismatch(id)),
                Err(StoreError::NameTaken(name)) => {
                    return Err(Error::AlreadyExists {
                        resource: Resource::Registry,
                        name,
                    });
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(etag_mismatch(id))
    }

    /// Deletes a registry. Only its creator may. An empty `etag` makes the
    /// delete unconditional.
    pub async fn delete(&self, principal: &Principal, id: &str, etag: &str, force: bool) -> Result<()> {
        self.require(
            principal,
            Role::Writer,
            "deleting a registry",
            AuditAction::RegistryDelete,
            Some(id),
        )
        .await?;
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.load(principal, id).await?;
            let registry = &current.registry;
            if registry.created_by != principal.subject {
                let refusal = AuditEvent::new(
                    principal,
                    AuditAction::RegistryDelete,
                    Some(&registry.id),
                    AuditOutcome::Denied,
                    "not the creator",
                );
                self.store.record(&refusal).await?;
                return Err(Error::PermissionDenied(format!(
                    "only the creator of registry {:?} ({}) may delete it",
                    registry.id.as_str(),
                    registry.created_by
                )));
            }
            if !etag.is_empty() && etag != registry.etag {
                return Err(etag_mismatch(id));
            }
            let outcome = if force { AuditOutcome::Forced } else { AuditOutcome::Ok };
            let audit = AuditEvent::new(
                principal,
                AuditAction::RegistryDelete,
                Some(&registry.id),
                outcome,
                format!("force={force}"),
            );
            match self
                .store
                .delete(&principal.organization, &registry.id, &registry.etag, force, &audit)
                .await?
            {
                WriteOutcome::Done(()) => {
                    self.opened.forget(&registry.id);
                    tracing::info!(registry_id = %registry.id, force, "registry deleted");
                    self.sync.wake();
                    return Ok(());
                }
                WriteOutcome::InUse(containers) => {
                    return Err(Error::InUse {
                        registry_id: registry.id.to_string(),
                        containers,
                    });
                }
                WriteOutcome::NotFound => return Err(Error::registry_not_found(id)),
                WriteOutcome::EtagMismatch if etag.is_empty() => continue,
                WriteOutcome::EtagMismatch => return Err(etag_mismatch(id)),
            }
        }
        Err(etag_mismatch(id))
    }

    /// "Test Connection". Violations and live outcomes are the answer, not
    /// errors; only a request that cannot be understood is one. A live test
    /// runs only when the structural checks pass.
    pub async fn test(
        &self,
        principal: &Principal,
        subject: TestSubject,
        mode: TestMode,
        image: Option<&str>,
    ) -> Result<TestOutcome> {
        let saved = match &subject {
            TestSubject::Saved(id) => Some(id.as_str()),
            TestSubject::Inline { .. } => None,
        };
        self.require(
            principal,
            Role::Reader,
            "testing a registry",
            AuditAction::RegistryTest,
            saved,
        )
        .await?;
        let live = match mode {
            TestMode::Structural => None,
            TestMode::Live => Some(self.live.as_ref().ok_or_else(|| {
                Error::Unsupported(
                    "mode: live connection tests are not enabled on this server; use TEST_MODE_STRUCTURAL".into(),
                )
            })?),
        };
        let image = match image.filter(|image| !image.is_empty()) {
            Some(_) if live.is_none() => {
                return Err(Error::invalid(
                    "image",
                    "is only checked by a live test (TEST_MODE_LIVE)",
                ));
            }
            Some(image) => Some(image_probe(image)?),
            None => None,
        };
        // The registry tested, and its id when it is a saved one.
        let (registry, saved_id, credentials, mut outcome) = match subject {
            TestSubject::Saved(id) => {
                let stored = self.load(principal, &id).await?;
                let credentials = self.open(&stored)?;
                let kind = stored.registry.kind;
                let violations = prefixed(validate::credentials(&credentials), &credential_prefix("", kind));
                let outcome = outcome(violations, &credentials);
                let id = stored.registry.id.clone();
                (Some(stored.registry), Some(id), credentials, outcome)
            }
            TestSubject::Inline { kind, credentials } => {
                let Some(kind) = kind else {
                    return Err(Error::invalid(
                        "type",
                        "is required: the registry type of the credentials to test",
                    ));
                };
                match check_draft("", Some(kind), credentials.as_ref()) {
                    Ok((kind, credentials)) => {
                        let outcome = outcome(Vec::new(), &credentials);
                        let draft = draft_registry(principal, kind, &credentials);
                        (Some(draft), None, Arc::new(credentials), outcome)
                    }
                    Err(violations) => (
                        None,
                        None,
                        Arc::new(Credentials::Public),
                        outcome(violations, &Credentials::Public),
                    ),
                }
            }
        };
        if let (Some(live), Some(registry), true) = (live, &registry, outcome.ok) {
            let report = live_test(live, registry, &credentials, image.as_ref()).await;
            outcome.ok = report.outcome == LiveOutcome::Ok;
            outcome.live = Some(report);
        }
        let result = if outcome.ok {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Invalid
        };
        let detail = match &outcome.live {
            Some(live) => format!("violations={} live={}", outcome.violations.len(), live.outcome.as_str()),
            None => format!("violations={}", outcome.violations.len()),
        };
        self.store
            .record(&AuditEvent::new(
                principal,
                AuditAction::RegistryTest,
                saved_id.as_ref(),
                result,
                detail,
            ))
            .await?;
        Ok(outcome)
    }

    /// A registry of the caller's organization, with its sealed credentials.
    pub async fn load(&self, principal: &Principal, id: &str) -> Result<StoredRegistry> {
        let registry_id = parse_id(id)?;
        self.store
            .get(&principal.organization, &registry_id)
            .await?
            .ok_or_else(|| Error::registry_not_found(id))
    }

    fn seal(&self, id: &RegistryId, credentials: &Credentials) -> Result<Vec<u8>> {
        let context = SealContext {
            registry_id: id.as_str(),
            kind: credentials.kind(),
        };
        self.sealer
            .seal(context, &credentials.to_plaintext())
            .map_err(|e| Error::Internal(format!("sealing credentials of registry {id}: {e}")))
    }

    /// The plaintext credentials of a stored registry.
    pub fn open(&self, stored: &StoredRegistry) -> Result<Arc<Credentials>> {
        if let Some(credentials) = self.opened.get(stored) {
            return Ok(credentials);
        }
        let registry = &stored.registry;
        let context = SealContext {
            registry_id: registry.id.as_str(),
            kind: registry.kind,
        };
        let undecryptable = |reason: String| Error::Undecryptable {
            registry_id: registry.id.to_string(),
            reason,
        };
        let plaintext = self
            .sealer
            .open(context, &stored.sealed_credentials)
            .map_err(|e| undecryptable(e.to_string()))?;
        let credentials = Credentials::from_plaintext(&plaintext)
            .map_err(|_| undecryptable("plaintext is not credentials".into()))?;
        let credentials = Arc::new(credentials);
        self.opened.insert(stored, &credentials);
        Ok(credentials)
    }
}

fn outcome(violations: Vec<FieldViolation>, credentials: &Credentials) -> TestOutcome {
    TestOutcome {
        ok: violations.is_empty(),
        server: if violations.is_empty() {
            credentials.server()
        } else {
            String::new()
        },
        violations,
        live: None,
    }
}

/// A registry standing for unsaved credentials in a live test: an id of
/// its own, and the revision under which nothing is cached.
fn draft_registry(principal: &Principal, kind: RegistryKind, credentials: &Credentials) -> Registry {
    let now = Timestamp::now();
    Registry {
        id: RegistryId::generate(),
        organization: principal.organization.clone(),
        name: String::new(),
        kind,
        server: credentials.server(),
        hints: credentials.hints(),
        created_by: principal.subject.clone(),
        created_at: now,
        updated_at: now,
        etag: String::new(),
        credential_revision: UNSAVED_REVISION,
    }
}

/// `repository[:tag]` or `repository@sha256:…` (tag `latest` by default),
/// with the distribution spec's repository grammar.
fn image_probe(image: &str) -> Result<ImageProbe> {
    let invalid = |why: &str| Error::invalid("image", format!("{image:?} {why}"));
    let (repository, reference) = match image.split_once('@') {
        Some((repository, digest)) => {
            let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            });
            if !valid {
                return Err(invalid("has a digest that is not sha256:<64 lowercase hex digits>"));
            }
            (repository, digest)
        }
        None => match image.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => {
                let valid = tag.len() <= 128
                    && tag
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !valid {
                    return Err(invalid("has an invalid tag"));
                }
                (repository, tag)
            }
            _ => (image, "latest"),
        },
    };
    let component = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && part.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && part.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    if repository.len() > 255 || !repository.split('/').all(component) {
        return Err(invalid(
            "is not a repository on the registry (lowercase path components, no host), e.g. myorg/api:v1",
        ));
    }
    Ok(ImageProbe {
        repository: repository.to_owned(),
        reference: reference.to_owned(),
    })
}

/// The login (after the provider's exchange, for ECR), then the handshake.
async fn live_test(
    live: &LiveTests,
    registry: &Registry,
    credentials: &Credentials,
    image: Option<&ImageProbe>,
) -> LiveReport {
    let started = std::time::Instant::now();
    let answer = |outcome, message: String| LiveReport {
        outcome,
        message,
        elapsed: started.elapsed(),
        digest: None,
    };
    let login = match live
        .logins
        .login(registry, credentials, &registry.server, LoginUse::LiveTest)
        .await
    {
        Ok(login) => Some(login),
        Err(LoginError::Public) => None,
        Err(error @ LoginError::Refused { .. }) => return answer(LiveOutcome::Unauthorized, error.to_string()),
        Err(error @ LoginError::Unavailable { .. }) => return answer(LiveOutcome::Unreachable, error.to_string()),
        Err(error @ (LoginError::NeedsTokenExchange(_) | LoginError::WrongHost { .. })) => {
            return answer(LiveOutcome::ProtocolError, error.to_string());
        }
    };
    let server = login
        .as_ref()
        .map_or_else(|| registry.server.clone(), |l| l.server.clone());
    // Docker Hub's API is not at its name.
    let server = match server.as_str() {
        "docker.io" | "index.docker.io" => "registry-1.docker.io".to_owned(),
        _ => server,
    };
    let mut report = live
        .probe
        .probe_trusting(&server, login.as_ref(), image, credentials.ca_bundle())
        .await;
    report.elapsed = started.elapsed();
    report
}

fn etag_mismatch(id: &str) -> Error {
    Error::EtagMismatch {
        resource: Resource::Registry,
        id: id.to_owned(),
    }
}

fn parse_id(id: &str) -> Result<RegistryId> {
    if id.is_empty() {
        return Err(Error::invalid("registry_id", "is required"));
    }
    RegistryId::parse(id)
        .ok_or_else(|| Error::invalid("registry_id", "must be reg- followed by lowercase letters and digits"))
}

fn check_request_id(request_id: &str) -> Option<FieldViolation> {
    let valid = (1..=128).contains(&request_id.len())
        && request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (!valid).then(|| {
        FieldViolation::new(
            "request_id",
            "must be 1 to 128 letters, digits, '-', '_' or '.' (a UUID is ideal)",
        )
    })
}

/// `<prefix>credentials.<kind>` — where a kind's fields sit in the request.
fn credential_prefix(prefix: &str, kind: RegistryKind) -> String {
    format!("{prefix}credentials.{}", kind.proto_field())
}

fn prefixed(violations: Vec<FieldViolation>, prefix: &str) -> Vec<FieldViolation> {
    violations.into_iter().map(|v| v.prefixed(prefix)).collect()
}

/// Checks that a type and its credentials go together and are structurally
/// valid. Public registries take no credentials.
fn check_draft(
    prefix: &str,
    kind: Option<RegistryKind>,
    credentials: Option<&Credentials>,
) -> Result<(RegistryKind, Credentials), Vec<FieldViolation>> {
    let Some(kind) = kind else {
        return Err(vec![FieldViolation::new(format!("{prefix}type"), "is required")]);
    };
    let field = format!("{prefix}credentials");
    let credentials = match (kind, credentials) {
        (RegistryKind::Public, None | Some(Credentials::Public)) => Credentials::Public,
        (RegistryKind::Public, Some(_)) => {
            return Err(vec![FieldViolation::new(
                field,
                "must be empty: public registries take no credentials",
            )]);
        }
        (_, None) => {
            let names: Vec<_> = kind.fields().iter().map(|f| f.name).collect();
            return Err(vec![FieldViolation::new(
                field,
                format!("are required: {} credentials ({})", kind.key(), names.join(", ")),
            )]);
        }
        (_, Some(given)) if given.kind() != kind => {
            return Err(vec![FieldViolation::new(
                field,
                format!(
                    "are {} credentials but the type is {}; set credentials.{}",
                    given.kind().key(),
                    kind.key(),
                    kind.proto_field()
                ),
            )]);
        }
        (_, Some(given)) => given.clone(),
    };
    let violations = prefixed(validate::credentials(&credentials), &credential_prefix(prefix, kind));
    if violations.is_empty() {
        Ok((kind, credentials))
    } else {
        Err(violations)
    }
}

/// A request's `page_size`: 0 is the default, more than the maximum is the
/// maximum, a negative one is refused.
pub(crate) fn page_limit(page_size: i32) -> Result<u64> {
    match u64::try_from(page_size) {
        Err(_) => Err(Error::invalid("page_size", "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

fn encode_page_token(last: &Registry) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1\n{}\n{}", last.name, last.id))
}

fn decode_page_token(token: &str) -> Result<(String, String)> {
    let invalid = || Error::invalid("page_token", "is not a page token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(name), Some(id)) if RegistryId::parse(id).is_some() => Ok((name.to_owned(), id.to_owned())),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let registry = Registry {
            id: RegistryId::parse("reg-abc234").unwrap(),
            organization: "acme".into(),
            name: "My GHCR".into(),
            kind: RegistryKind::Ghcr,
            server: "ghcr.io".into(),
            hints: Vec::new(),
            created_by: "alice".into(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            etag: "e".into(),
            credential_revision: 1,
        };
        let token = encode_page_token(&registry);
        assert_eq!(
            decode_page_token(&token).unwrap(),
            ("My GHCR".to_owned(), "reg-abc234".to_owned())
        );
        for bad in ["x", "!!", &URL_SAFE_NO_PAD.encode("v2\na\nreg-a")] {
            assert!(
                matches!(decode_page_token(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn drafts_must_match_their_type() {
        let ghcr = Credentials::Ghcr {
            username: "myorg".into(),
            token: "ghp_16C7e42F292c6912E7710c838347Ae178B4a".into(),
        };
        let err = check_draft("registry.", Some(RegistryKind::Docker), Some(&ghcr)).unwrap_err();
        assert_eq!(err[0].field, "registry.credentials");
        let err = check_draft("", None, Some(&ghcr)).unwrap_err();
        assert_eq!(err[0].field, "type");
        let err = check_draft("", Some(RegistryKind::Ecr), None).unwrap_err();
        assert_eq!(err[0].field, "credentials");
        let err = check_draft("", Some(RegistryKind::Public), Some(&ghcr)).unwrap_err();
        assert_eq!(err[0].field, "credentials");
        assert!(check_draft("", Some(RegistryKind::Public), None).is_ok());
    }
}
