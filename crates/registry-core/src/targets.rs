//! The orchestrator targets of the server's configuration: which
//! organizations may deploy to each, and, on Kubernetes, which namespace an
//! environment maps to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::ports::orchestrators::{DockerEngine, PullSecretApi};

/// The organizations allowed on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Organizations {
    /// Every organization (`["*"]`).
    All,
    Only(BTreeSet<String>),
}

impl Organizations {
    /// From a configured list: `["*"]` is every organization.
    pub fn from_list<I, S>(list: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: BTreeSet<String> = list.into_iter().map(Into::into).collect();
        if names.contains("*") {
            return if names.len() == 1 {
                Ok(Self::All)
            } else {
                Err("\"*\" (every organization) cannot be combined with names".into())
            };
        }
        if names.is_empty() {
            return Err("must name at least one organization, or be [\"*\"]".into());
        }
        if let Some(blank) = names.iter().find(|n| n.trim().is_empty()) {
            return Err(format!("{blank:?} is not an organization name"));
        }
        Ok(Self::Only(names))
    }

    pub fn allows(&self, organization: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(organization),
        }
    }

    /// Whether more than one organization may use the target.
    pub fn is_shared(&self) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.len() > 1,
        }
    }
}

impl fmt::Display for Organizations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("every organization"),
            Self::Only(names) => f.write_str(&names.iter().cloned().collect::<Vec<_>>().join(", ")),
        }
    }
}

/// How an environment (and organization) becomes a namespace name:
/// `env-{environment}`, `{organization}-{environment}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTemplate(String);

/// The longest namespace name Kubernetes accepts (a DNS label).
const MAX_NAMESPACE_LEN: usize = 63;

impl NamespaceTemplate {
    pub const ENVIRONMENT: &'static str = "{environment}";
    pub const ORGANIZATION: &'static str = "{organization}";

    /// A template for a target open to `organizations`: it must contain
    /// `{environment}`, and `{organization}` when the target is shared, so
    /// that two organizations never share a namespace.
    pub fn new(template: &str, organizations: &Organizations) -> Result<Self, String> {
        if !template.contains(Self::ENVIRONMENT) {
            return Err(format!("must contain {}, not {template:?}", Self::ENVIRONMENT));
        }
        if organizations.is_shared() && !template.contains(Self::ORGANIZATION) {
            return Err(format!(
                "must contain {} because the target is open to {organizations}: a namespace holds the pull \
                 secrets of one organization only, not {template:?}",
                Self::ORGANIZATION
            ));
        }
        let sample = template
            .replace(Self::ENVIRONMENT, "e")
            .replace(Self::ORGANIZATION, "o");
        if !is_dns_label(&sample) {
            return Err(format!(
                "{template:?} does not form a namespace name (lowercase letters, digits and '-')"
            ));
        }
        Ok(Self(template.to_owned()))
    }

    /// The namespace of `environment` for `organization`, or why there is
    /// none (the organization's name cannot be part of a namespace name).
    pub fn render(&self, environment: &str, organization: &str) -> Result<String, String> {
        let namespace = self
            .0
            .replace(Self::ENVIRONMENT, environment)
            .replace(Self::ORGANIZATION, organization);
        if is_dns_label(&namespace) {
            Ok(namespace)
        } else {
            Err(format!(
                "environment {environment:?} of organization {organization:?} gives namespace {namespace:?}, \
                 which is not a valid namespace name (at most {MAX_NAMESPACE_LEN} lowercase letters, digits and '-')"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAMESPACE_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// What a target is and the adapter that reaches it.
#[derive(Debug, Clone)]
pub enum TargetKind {
    Kubernetes {
        namespaces: NamespaceTemplate,
        api: Arc<dyn PullSecretApi>,
    },
    Swarm(Arc<dyn DockerEngine>),
    Compose(Arc<dyn DockerEngine>),
}

/// An orchestrator target of the server's configuration.
#[derive(Debug, Clone)]
pub struct Target {
    pub organizations: Organizations,
    pub kind: TargetKind,
}

impl TargetKind {
    /// Who the logins of deployments to this target are handed to.
    pub fn login_use(&self) -> crate::ports::login::LoginUse {
        use crate::ports::login::LoginUse;
        match self {
            Self::Kubernetes { .. } => LoginUse::PullSecret,
            Self::Swarm(_) | Self::Compose(_) => LoginUse::Engine,
        }
    }
}

impl Target {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TargetKind::Kubernetes { .. } => "kubernetes",
            TargetKind::Swarm(_) => "swarm",
            TargetKind::Compose(_) => "compose",
        }
    }

    /// The pull Secret API of a Kubernetes target.
    pub fn pull_secrets(&self) -> Option<&Arc<dyn PullSecretApi>> {
        match &self.kind {
            TargetKind::Kubernetes { api, .. } => Some(api),
            TargetKind::Swarm(_) | TargetKind::Compose(_) => None,
        }
    }
}

/// The configured targets by name.
#[derive(Debug, Clone, Default)]
pub struct Targets(BTreeMap<String, Target>);

impl Targets {
    pub fn new(targets: impl IntoIterator<Item = (String, Target)>) -> Self {
        Self(targets.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.0.get(name)
    }

    /// The targets `organization` may use, by name.
    pub fn names_for<'a>(&'a self, organization: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(_, t)| t.organizations.allows(organization))
            .map(|(name, _)| name.as_str())
    }

    /// The Kubernetes targets and their pull Secret APIs.
    pub fn kubernetes(&self) -> impl Iterator<Item = (&str, &Arc<dyn PullSecretApi>)> {
        self.0
            .iter()
            .filter_map(|(name, t)| Some((name.as_str(), t.pull_secrets()?)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Organizations {
        Organizations::from_list(names.iter().copied()).unwrap()
    }

    #[test]
    fn organization_lists() {
        assert_eq!(Organizations::from_list(["*"]).unwrap(), Organizations::All);
        assert!(Organizations::from_list(["*", "acme"]).is_err());
        assert!(Organizations::from_list(Vec::<String>::new()).is_err());
        let acme = only(&["acme"]);
        assert!(acme.allows("acme") && !acme.allows("globex") && !acme.is_shared());
        assert!(only(&["acme", "globex"]).is_shared() && Organizations::All.is_shared());
    }

    #[test]
    fn shared_targets_need_the_organization_in_the_template() {
        assert!(NamespaceTemplate::new("env-{environment}", &only(&["acme"])).is_ok());
        let refused = NamespaceTemplate::new("env-{environment}", &Organizations::All).unwrap_err();
        assert!(refused.contains("{organization}"), "{refused}");
        assert!(NamespaceTemplate::new("env-{environment}", &only(&["a", "b"])).is_err());
        assert!(NamespaceTemplate::new("{organization}-{environment}", &Organizations::All).is_ok());
        assert!(NamespaceTemplate::new("production", &only(&["acme"])).is_err());
        assert!(NamespaceTemplate::new("Env_{environment}", &only(&["acme"])).is_err());
    }

    #[test]
    fn templates_render_dns_labels_only() {
        let template = NamespaceTemplate::new("{organization}-{environment}", &Organizations::All).unwrap();
        assert_eq!(template.render("production", "acme").unwrap(), "acme-production");
        assert!(template.render("production", "Acme Corp").is_err());
        assert!(template.render("production", &"a".repeat(60)).is_err());
    }
}
