//! Reading the audit trail: an organization's events, newest first, in
//! pages, filtered by registry, actor, action and time. Only for the
//! `auditor` role (and `admin`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::audit::AuditAction;
use crate::error::{Error, Result};
use crate::ports::store::{AuditQuery, RecordedAuditEvent};
use crate::principal::{Principal, Role};
use crate::registries::{Registries, page_limit};
use crate::registry::{RegistryId, Timestamp};

/// What the caller asks to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Empty: every registry.
    pub registry_id: String,
    /// Empty: every actor.
    pub actor: String,
    pub action: Option<AuditAction>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
}

impl AuditFilter {
    /// What a page token is bound to: a token used with other filters would
    /// skip or repeat events silently.
    fn fingerprint(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{:?}",
            self.registry_id,
            self.actor,
            self.action.map_or("", AuditAction::as_str),
            self.since.map(|t| t.0),
            self.until.map(|t| t.0),
        )
    }
}

/// One page of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub events: Vec<RecordedAuditEvent>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl Registries {
    /// A page of the caller's organization's audit trail, newest first.
    pub async fn audit_trail(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<AuditPage> {
        self.require(
            principal,
            Role::Auditor,
            "reading the audit trail",
            AuditAction::AuditRead,
            None,
        )
        .await?;
        let limit = page_limit(page_size)?;
        let registry_id = match filter.registry_id.as_str() {
            "" => None,
            id => Some(RegistryId::parse(id).ok_or_else(|| Error::invalid("registry_id", "is not a registry id"))?),
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let fingerprint = filter.fingerprint();
        let before_id = match page_token {
            "" => None,
            token => Some(decode_page_token(token, &fingerprint)?),
        };
        let query = AuditQuery {
            organization: principal.organization.clone(),
            registry_id,
            actor: (!filter.actor.is_empty()).then(|| filter.actor.clone()),
            action: filter.action,
            since: filter.since,
            until: filter.until,
            before_id,
            limit: limit + 1,
        };
        let mut events = self.store().audit_page(&query).await?;
        let next_page_token = if events.len() as u64 > limit {
            events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            events
                .last()
                .map(|last| encode_page_token(last.id, &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(AuditPage {
            events,
            next_page_token,
        })
    }
}

fn encode_page_token(last_id: i64, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("a1\n{last_id}\n{fingerprint}"))
}

fn decode_page_token(token: &str, fingerprint: &str) -> Result<i64> {
    let invalid = || Error::invalid("page_token", "is not an audit page token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    let (Some("a1"), Some(id), Some(issued_for)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let id = id.parse::<i64>().map_err(|_| invalid())?;
    if issued_for != fingerprint {
        return Err(Error::invalid(
            "page_token",
            "was issued for other filters; repeat the first request's filters",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_filters() {
        let filter = AuditFilter {
            actor: "alice".into(),
            ..AuditFilter::default()
        };
        let token = encode_page_token(42, &filter.fingerprint());
        assert_eq!(decode_page_token(&token, &filter.fingerprint()).unwrap(), 42);
        let other = AuditFilter {
            actor: "bob".into(),
            ..AuditFilter::default()
        };
        let err = decode_page_token(&token, &other.fingerprint()).unwrap_err();
        assert!(format!("{err:?}").contains("other filters"), "{err:?}");
        assert!(decode_page_token("garbage!", "").is_err());
        assert!(decode_page_token(&URL_SAFE_NO_PAD.encode("a1\nx\n"), "").is_err());
    }
}
