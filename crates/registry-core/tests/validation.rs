//! Structural validation of every registry kind, through the public API.
//!
//! Realistic credentials in each provider's real format must pass; malformed
//! ones must be rejected on exactly the field at fault, with a lowercase
//! description that never contains a secret's value.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use registry_core::validate;
use registry_core::{Credentials, FieldViolation};
use serde_json::Value;

/// A throw-away RSA 2048 service-account key, as Google Cloud downloads it.
const SERVICE_ACCOUNT_JSON: &str = include_str!("fixtures/service-account.json");

/// A PKCS#8 EC P-256 key: a valid PEM, but not RSA.
const EC_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgs6Y6ovRQ7FQiqSIj
wvWSXySXdtp4Lx1ju82ljYtOUdahRANCAASBlxM7kKArXmcwkL6b8PXjr8uGVVpf
MvpRVLQ3Bhao7SVwlCtmeDygWXN6+GPAedmVwNTT36vKUihmMELEf8Bm
-----END PRIVATE KEY-----
";

const GHCR_CLASSIC: &str = "ghp_RyxxNUwZr11WEYjdlODLW7LRi5B2eqdMz1uI";
const GHCR_OAUTH: &str = "gho_DSQPyFcey9NKqOOTI5phD4iZCaQvo9qtaUAS";
const GHCR_FINE_GRAINED: &str =
    "github_pat_11ABCDEFG0SqLQQhIRzp6s_E7hMN4IUpts2y14KvHFBI2GRi79gDl7p9hRpzVbYlwKDdZfGj3QdMWtOoia";
const DOCKER_PAT: &str = "dckr_pat_OHb7M4LG_2Js3ek938eILYVPCfv";
const DOCKER_OAT: &str = "dckr_oat_ZOjKRomwTIr40Hl9MqzI8YEVWTY";
const ECR_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const ECR_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ACR_APP_ID: &str = "25f36533-92a8-4ae2-90f4-3ced724454da";
const ACR_SECRET: &str = "bL08Q~Srjp1-ogNe8ZA.D3dA1wY1ljnb0c_oD~x8";
const QUAY_ROBOT_TOKEN: &str = "SVHYSMJ7JP4RJGVNLIWY8ZYL7JKFJD2RH4M8HZTE0IC2FG1GGSUIUKQCANKPUNKH";

// ---------------------------------------------------------------------------
// Helpers

fn ghcr(username: &str, token: &str) -> Credentials {
    Credentials::Ghcr {
        username: username.into(),
        token: token.into(),
    }
}

fn docker(username: &str, password: &str) -> Credentials {
    Credentials::Docker {
        username: username.into(),
        password: password.into(),
    }
}

fn ecr(access_key_id: &str, secret_access_key: &str, region: &str) -> Credentials {
    Credentials::Ecr {
        access_key_id: access_key_id.into(),
        secret_access_key: secret_access_key.into(),
        region: region.into(),
        session_token: None,
        server_identity: false,
    }
}

fn acr(login_server: &str, username: &str, password: &str) -> Credentials {
    Credentials::Acr {
        login_server: login_server.into(),
        username: username.into(),
        password: password.into(),
    }
}

fn gcr(service_account_key: &str) -> Credentials {
    Credentials::Gcr {
        service_account_key: service_account_key.into(),
        login: registry_core::GoogleLogin::Default,
    }
}

fn gar(service_account_key: &str, region: &str) -> Credentials {
    Credentials::Gar {
        service_account_key: service_account_key.into(),
        region: region.into(),
        login: registry_core::GoogleLogin::Default,
    }
}

fn quay(username: &str, token: &str) -> Credentials {
    Credentials::Quay {
        username: username.into(),
        token: token.into(),
    }
}

fn custom(url: &str, username: &str, password: &str) -> Credentials {
    Credentials::Custom {
        url: url.into(),
        username: username.into(),
        password: password.into(),
        ca_bundle: String::new(),
    }
}

type JsonObject = serde_json::Map<String, Value>;

fn fixture() -> JsonObject {
    serde_json::from_str(SERVICE_ACCOUNT_JSON).expect("the fixture is a json object")
}

/// The fixture key, changed by `edit` and serialised compactly.
fn key_with(edit: impl FnOnce(&mut JsonObject)) -> String {
    let mut key = fixture();
    edit(&mut key);
    Value::Object(key).to_string()
}

/// The fixture key with `name` set to `value`.
fn key_setting(name: &str, value: impl Into<Value>) -> String {
    let value = value.into();
    key_with(|key| {
        key.insert(name.to_owned(), value);
    })
}

/// The fixture key without `name`.
fn key_without(name: &str) -> String {
    key_with(|key| {
        key.remove(name);
    })
}

fn fixture_field(name: &str) -> String {
    fixture()[name]
        .as_str()
        .expect("the fixture's fields are strings")
        .to_owned()
}

/// The fields of `credentials` by name, secrets exposed.
fn plaintext(credentials: &Credentials) -> Value {
    serde_json::from_slice(&credentials.to_plaintext()).expect("plaintext is json")
}

/// Validates, checking what every description must keep to: lowercase, and
/// never the value of a secret field.
fn violations(credentials: &Credentials) -> Vec<FieldViolation> {
    let violations = validate::credentials(credentials);
    let plaintext = plaintext(credentials);
    for violation in &violations {
        assert!(
            !violation.description.starts_with(char::is_uppercase),
            "description not lowercase: {violation}"
        );
        let spec = credentials
            .kind()
            .fields()
            .iter()
            .chain(credentials.kind().optional_fields())
            .find(|spec| spec.name == violation.field)
            .unwrap_or_else(|| panic!("{violation} names no field of {}", credentials.kind()));
        // Strings; an optional field left out is absent.
        let value = plaintext[spec.name].as_str().unwrap_or_default();
        if spec.secret && !value.is_empty() {
            assert!(
                !violation.description.contains(value),
                "description shows the secret: {violation}"
            );
        }
    }
    violations
}

#[track_caller]
fn assert_valid(credentials: &Credentials) {
    let violations = violations(credentials);
    assert!(
        violations.is_empty(),
        "{} credentials rejected: {violations:#?}",
        credentials.kind()
    );
}

/// Asserts `credentials` are rejected on `field` and no other field; returns
/// the descriptions.
#[track_caller]
fn assert_rejected(case: &str, credentials: &Credentials, field: &str) -> Vec<String> {
    let violations = violations(credentials);
    assert!(
        !violations.is_empty(),
        "{case}: accepted, expected a violation on {field}"
    );
    assert!(
        violations.iter().all(|violation| violation.field == field),
        "{case}: expected violations on {field} only, got {violations:#?}"
    );
    violations.into_iter().map(|violation| violation.description).collect()
}

/// Asserts one violation on `field` whose description contains `needle`.
#[track_caller]
fn assert_rejected_saying(case: &str, credentials: &Credentials, field: &str, needle: &str) {
    let descriptions = assert_rejected(case, credentials, field);
    assert_eq!(descriptions.len(), 1, "{case}: {descriptions:?}");
    assert!(
        descriptions[0].contains(needle),
        "{case}: {:?} does not say {needle:?}",
        descriptions[0]
    );
}

fn fields(violations: &[FieldViolation]) -> Vec<&str> {
    violations.iter().map(|violation| violation.field.as_str()).collect()
}

// ---------------------------------------------------------------------------
// Examples have the real formats' lengths

#[test]
fn examples_have_real_format_lengths() {
    assert_eq!(GHCR_CLASSIC.len(), 4 + 36);
    assert_eq!(GHCR_OAUTH.len(), 4 + 36);
    assert_eq!(GHCR_FINE_GRAINED.len(), 93);
    assert_eq!(DOCKER_PAT.len(), "dckr_pat_".len() + 27);
    assert_eq!(ECR_KEY_ID.len(), 20);
    assert_eq!(ECR_SECRET.len(), 40);
    assert_eq!(QUAY_ROBOT_TOKEN.len(), 64);
}

#[test]
fn fixture_is_a_downloaded_service_account_key() {
    let key = fixture();
    let names: Vec<&str> = key.keys().map(String::as_str).collect();
    for name in [
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    ] {
        assert!(names.contains(&name), "fixture lacks {name}");
    }
    assert!(SERVICE_ACCOUNT_JSON.contains("\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n"));
}

// ---------------------------------------------------------------------------
// GHCR

#[test]
fn ghcr_accepts_real_tokens() {
    assert_valid(&ghcr("myorg", GHCR_CLASSIC));
    assert_valid(&ghcr("octo-cat", GHCR_OAUTH));
    assert_valid(&ghcr("MyOrg", GHCR_FINE_GRAINED));
    for prefix in ["ghu_", "ghs_", "ghr_"] {
        assert_valid(&ghcr("a", &GHCR_CLASSIC.replacen("ghp_", prefix, 1)));
    }
    assert_valid(&ghcr(&"a".repeat(39), GHCR_CLASSIC));
    let longest_fine_grained = format!("github_pat_{}", "A1_".repeat(81));
    assert_eq!(longest_fine_grained.len(), 254);
    assert_valid(&ghcr("myorg", &longest_fine_grained));
}

#[test]
fn ghcr_rejects_the_guides_shortened_placeholder() {
    assert_rejected_saying(
        "guide placeholder",
        &ghcr("myorg", "ghp_xxxxxxxxxxxx"),
        "token",
        "exactly 36",
    );
}

#[test]
fn ghcr_rejects_malformed_tokens() {
    let cases = [
        ("empty", String::new()),
        ("35 characters", format!("ghp_{}", &GHCR_CLASSIC[4..39])),
        ("37 characters", format!("{GHCR_CLASSIC}A")),
        ("a symbol", GHCR_CLASSIC.replacen('R', "-", 1)),
        ("unknown prefix", GHCR_CLASSIC.replacen("ghp_", "ghx_", 1)),
        ("gitlab token", "glpat-xK9mQ2vR7tY4wB1nZ8cD".to_owned()),
        ("trailing newline", format!("{GHCR_CLASSIC}\n")),
        ("fine-grained too short", "github_pat_11ABCDEFG0Sq".to_owned()),
        ("fine-grained with a hyphen", GHCR_FINE_GRAINED.replacen('_', "-", 2)),
        ("fine-grained over 255", format!("github_pat_{}", "A".repeat(245))),
    ];
    for (case, token) in cases {
        assert_rejected(case, &ghcr("myorg", &token), "token");
    }
}

#[test]
fn ghcr_rejects_malformed_usernames() {
    for (case, username) in [
        ("empty", String::new()),
        ("leading hyphen", "-myorg".to_owned()),
        ("trailing hyphen", "myorg-".to_owned()),
        ("double hyphen", "my--org".to_owned()),
        ("underscore", "my_org".to_owned()),
        ("space", "my org".to_owned()),
        ("40 characters", "a".repeat(40)),
        ("an email", "me@example.com".to_owned()),
    ] {
        assert_rejected(case, &ghcr(&username, GHCR_CLASSIC), "username");
    }
    assert_rejected_saying("empty", &ghcr("", GHCR_CLASSIC), "username", "is required");
}

// ---------------------------------------------------------------------------
// Docker Hub

#[test]
fn docker_accepts_access_tokens_and_passwords() {
    assert_valid(&docker("myuser", DOCKER_PAT));
    assert_valid(&docker("acmecorp", DOCKER_OAT));
    assert_valid(&docker("user1234", "correct-horse-battery-staple"));
    assert_valid(&docker("abcd", "p@55w0rd!"));
    assert_valid(&docker(&"a".repeat(30), DOCKER_PAT));
}

#[test]
fn docker_rejects_the_guides_shortened_placeholder() {
    assert_rejected_saying(
        "guide placeholder",
        &docker("myuser", "dckr_pat_xxxxxxxxxxxx"),
        "password",
        "at least 20",
    );
}

#[test]
fn docker_rejects_malformed_passwords() {
    for (case, password) in [
        ("empty", String::new()),
        ("seven characters", "hunter2".to_owned()),
        ("unknown token kind", DOCKER_PAT.replacen("dckr_pat_", "dckr_xyz_", 1)),
        ("token with a symbol", DOCKER_PAT.replacen('M', "!", 1)),
        ("token 19 characters", "dckr_pat_OHb7M4LG_2Js3ek938e".to_owned()),
        ("space", "correct horse battery staple".to_owned()),
        ("over 1024", "p".repeat(1025)),
    ] {
        assert_rejected(case, &docker("myuser", &password), "password");
    }
}

#[test]
fn docker_rejects_malformed_usernames() {
    assert_rejected_saying("upper case", &docker("MyUser", DOCKER_PAT), "username", "lowercase");
    for (case, username) in [
        ("three characters", "abc".to_owned()),
        ("31 characters", "a".repeat(31)),
        ("underscore", "my_user".to_owned()),
        ("hyphen", "my-user".to_owned()),
        ("an email", "me@example.com".to_owned()),
    ] {
        assert_rejected(case, &docker(&username, DOCKER_PAT), "username");
    }
}

// ---------------------------------------------------------------------------
// ECR

#[test]
fn ecr_accepts_the_guides_keys() {
    assert_valid(&ecr(ECR_KEY_ID, ECR_SECRET, "us-east-1"));
}

#[test]
fn ecr_accepts_temporary_keys_and_every_partitions_regions() {
    let temporary = |session_token: Option<&str>| {
        let mut credentials = ecr("ASIAIOSFODNN7EXAMPLE", ECR_SECRET, "eu-west-1");
        if let Credentials::Ecr {
            session_token: token, ..
        } = &mut credentials
        {
            *token = session_token.map(Into::into);
        }
        credentials
    };
    assert_valid(&temporary(Some(
        "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ",
    )));
    // Temporary keys do not work without their session token, and an IAM
    // user's keys have none.
    assert_eq!(fields(&violations(&temporary(None))), ["session_token"]);
    let mut user = ecr(ECR_KEY_ID, ECR_SECRET, "us-east-1");
    if let Credentials::Ecr { session_token, .. } = &mut user {
        *session_token = Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ".into());
    }
    assert_eq!(fields(&violations(&user)), ["session_token"]);
    for region in [
        "us-east-1",
        "us-west-2",
        "ap-southeast-2",
        "ap-northeast-3",
        "eu-central-2",
        "eu-south-1",
        "ca-central-1",
        "sa-east-1",
        "af-south-1",
        "me-south-1",
        "il-central-1",
        "mx-central-1",
        "cn-north-1",
        "cn-northwest-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-isob-east-1",
    ] {
        assert_valid(&ecr(ECR_KEY_ID, ECR_SECRET, region));
    }
}

#[test]
fn ecr_rejects_malformed_access_key_ids() {
    for (case, id) in [
        ("empty", ""),
        ("lower case", "akiaiosfodnn7example"),
        ("unknown prefix", "AKIBIOSFODNN7EXAMPLE"),
        ("19 characters", "AKIAIOSFODNN7EXAMPL"),
        ("21 characters", "AKIAIOSFODNN7EXAMPLEX"),
        ("lower-case tail", "AKIAiosfodnn7example"),
        ("leading space", " AKIAIOSFODNN7EXAMPLE"),
    ] {
        assert_rejected(case, &ecr(id, ECR_SECRET, "us-east-1"), "access_key_id");
    }
}

#[test]
fn ecr_rejects_malformed_secret_access_keys() {
    for (case, secret) in [
        ("empty", String::new()),
        ("39 characters", ECR_SECRET[..39].to_owned()),
        ("41 characters", format!("{ECR_SECRET}A")),
        ("a hyphen", ECR_SECRET.replacen('/', "-", 1)),
        ("a tab", ECR_SECRET.replacen('/', "\t", 1)),
    ] {
        assert_rejected(case, &ecr(ECR_KEY_ID, &secret, "us-east-1"), "secret_access_key");
    }
}

#[test]
fn ecr_rejects_malformed_regions() {
    for (case, region) in [
        ("empty", ""),
        ("no number", "us-east"),
        ("upper case", "US-EAST-1"),
        ("availability zone", "us-east-1a"),
        ("gcp style", "europe-west1"),
        ("unknown partition", "xx-east-1"),
        ("zero", "us-east-0"),
        ("registry host", "123456789012.dkr.ecr.us-east-1.amazonaws.com"),
    ] {
        assert_rejected(case, &ecr(ECR_KEY_ID, ECR_SECRET, region), "region");
    }
}

#[test]
fn ecr_reports_every_field() {
    let violations = violations(&ecr("AKIA123", "short", "mars-1"));
    assert_eq!(fields(&violations), ["access_key_id", "secret_access_key", "region"]);
}

// ---------------------------------------------------------------------------
// ACR

#[test]
fn acr_accepts_service_principals_admin_users_and_tokens() {
    assert_valid(&acr("contosoregistry.azurecr.io", ACR_APP_ID, ACR_SECRET));
    assert_valid(&acr(
        "contosoregistry.azurecr.io",
        "contosoregistry",
        "Zq3vK9mR2tY7wB1nX8cD4fG6hJ0kL5pS",
    ));
    assert_valid(&acr("contoso.azurecr.cn", "pull-token", "s3cr3t+Pa55w0rd/=="));
    assert_valid(&acr("contoso1.azurecr.us", &ACR_APP_ID.to_uppercase(), ACR_SECRET));
}

#[test]
fn acr_rejects_malformed_login_servers() {
    for (case, server) in [
        ("empty", ""),
        ("with scheme", "https://contosoregistry.azurecr.io"),
        ("with path", "contosoregistry.azurecr.io/v2"),
        ("upper case", "ContosoRegistry.azurecr.io"),
        ("name of four", "abcd.azurecr.io"),
        (
            "name of 51",
            "a123456789a123456789a123456789a123456789a1234567890.azurecr.io",
        ),
        ("hyphen in name", "contoso-registry.azurecr.io"),
        ("not azure", "contosoregistry.azurecr.com"),
        ("bare name", "contosoregistry"),
    ] {
        assert_rejected(case, &acr(server, ACR_APP_ID, ACR_SECRET), "login_server");
    }
    assert_rejected_saying(
        "upper case",
        &acr("ContosoRegistry.azurecr.io", ACR_APP_ID, ACR_SECRET),
        "login_server",
        "lowercase",
    );
}

#[test]
fn acr_rejects_malformed_usernames_and_passwords() {
    for (case, username) in [
        ("empty", String::new()),
        ("braced guid", format!("{{{ACR_APP_ID}}}")),
        ("leading hyphen", "-token".to_owned()),
        ("underscore", "pull_token".to_owned()),
        ("51 characters", "a".repeat(51)),
    ] {
        assert_rejected(
            case,
            &acr("contosoregistry.azurecr.io", &username, ACR_SECRET),
            "username",
        );
    }
    for (case, password) in [
        ("empty", ""),
        ("seven characters", "Zq3vK9m"),
        ("space", "Zq3vK9mR 2tY7wB1n"),
    ] {
        assert_rejected(
            case,
            &acr("contosoregistry.azurecr.io", ACR_APP_ID, password),
            "password",
        );
    }
}

// ---------------------------------------------------------------------------
// GCR and GAR

#[test]
fn gcr_accepts_the_downloaded_key_file() {
    assert_valid(&gcr(SERVICE_ACCOUNT_JSON));
}

#[test]
fn gcr_accepts_the_key_compact_with_crlf_or_default_accounts() {
    assert_valid(&gcr(&key_with(|_| {})));
    assert_valid(&gcr(&SERVICE_ACCOUNT_JSON.replace('\n', "\r\n")));
    assert_valid(&gcr(&key_without("token_uri")));
    for email in [
        "acme-prod-412907@appspot.gserviceaccount.com",
        "123456789012-compute@developer.gserviceaccount.com",
        "puller@my-project.example.com.iam.gserviceaccount.com",
    ] {
        assert_valid(&gcr(&key_setting("client_email", email)));
    }
}

#[test]
fn gcr_rejects_what_is_not_a_json_object() {
    for (case, key, needle) in [
        ("empty", "", "is required"),
        ("only whitespace", " \n ", "is required"),
        ("not json", "this is not the key file", "invalid json"),
        (
            "truncated",
            &SERVICE_ACCOUNT_JSON[..SERVICE_ACCOUNT_JSON.len() / 2],
            "invalid json",
        ),
        ("an array", "[{\"type\": \"service_account\"}]", "json object"),
        ("nul byte", "{\"type\": \"service_account\u{0}\"}", "control characters"),
    ] {
        assert_rejected_saying(case, &gcr(key), "service_account_key", needle);
    }
    let too_large = key_setting("padding", "x".repeat(16 * 1024));
    assert_rejected_saying("over 16 KiB", &gcr(&too_large), "service_account_key", "16 KiB");
}

#[test]
fn gcr_rejects_malformed_keys_naming_the_json_key() {
    let pem = fixture_field("private_key");
    let body: Vec<&str> = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let pem_around = |body: &str| format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let pkcs1 = pem.replace("PRIVATE KEY-----", "RSA PRIVATE KEY-----");
    let cases = [
        (
            "wrong type",
            key_setting("type", "authorized_user"),
            r#"type must be "service_account""#,
        ),
        ("missing type", key_without("type"), "type is missing"),
        (
            "missing client_email",
            key_without("client_email"),
            "client_email is missing",
        ),
        (
            "client_email elsewhere",
            key_setting("client_email", "puller@acme.example.com"),
            "client_email must be",
        ),
        (
            "client_email a number",
            key_setting("client_email", 42),
            "client_email must be a string",
        ),
        (
            "missing private_key",
            key_without("private_key"),
            "private_key is missing",
        ),
        (
            "private_key not pem",
            key_setting("private_key", body.concat()),
            "must be a pkcs#8 pem",
        ),
        ("private_key pkcs#1", key_setting("private_key", pkcs1), "not pkcs#1"),
        (
            "pem body not base64",
            key_setting("private_key", pem_around("not*base64*at*all")),
            "not valid base64",
        ),
        (
            "pem body not a key",
            key_setting("private_key", pem_around(&body[..10].join("\n"))),
            "not a valid pkcs#8 rsa private key",
        ),
        ("ec key", key_setting("private_key", EC_PRIVATE_KEY), "not an rsa key"),
        (
            "key escaped twice",
            key_setting("private_key", pem.replace('\n', "\\n")),
            "escaped twice",
        ),
        (
            "token_uri over http",
            key_setting("token_uri", "http://oauth2.googleapis.com/token"),
            "token_uri must be an https url",
        ),
    ];
    for (case, key, needle) in cases {
        assert_rejected_saying(case, &gcr(&key), "service_account_key", needle);
    }
}

#[test]
fn gcr_reports_every_problem_of_the_key() {
    let key = key_with(|key| {
        key.insert("type".into(), "authorized_user".into());
        key.remove("client_email");
        key.insert("private_key".into(), EC_PRIVATE_KEY.into());
        key.insert("token_uri".into(), "ftp://example.com".into());
    });
    let descriptions = assert_rejected("four problems", &gcr(&key), "service_account_key");
    assert_eq!(descriptions.len(), 4, "{descriptions:#?}");
    for json_key in ["type", "client_email", "private_key", "token_uri"] {
        assert!(
            descriptions.iter().any(|d| d.starts_with(json_key)),
            "no violation names {json_key}: {descriptions:#?}"
        );
    }
}

#[test]
fn gar_accepts_the_key_and_every_kind_of_location() {
    for region in [
        "us",
        "europe",
        "asia",
        "us-central1",
        "us-east4",
        "europe-west4",
        "europe-west10",
        "asia-southeast1",
        "northamerica-northeast1",
        "southamerica-east1",
        "australia-southeast1",
        "me-central2",
        "africa-south1",
    ] {
        assert_valid(&gar(SERVICE_ACCOUNT_JSON, region));
    }
}

#[test]
fn gar_rejects_malformed_regions() {
    for (case, region) in [
        ("empty", ""),
        ("no number", "us-central"),
        ("aws style", "us-east-1"),
        ("upper case", "US-CENTRAL1"),
        ("host", "europe-west4-docker.pkg.dev"),
        ("unknown continent", "mars-north1"),
        ("zone", "us-central1-a"),
    ] {
        assert_rejected(case, &gar(SERVICE_ACCOUNT_JSON, region), "region");
    }
}

#[test]
fn gar_rejects_malformed_keys() {
    let not_a_service_account = key_setting("type", "external_account");
    for (case, key) in [
        ("empty", ""),
        ("not json", "{type: service_account}"),
        ("wrong type", not_a_service_account.as_str()),
    ] {
        assert_rejected(case, &gar(key, "europe-west4"), "service_account_key");
    }
    let violations = violations(&gar("{}", "moon"));
    assert_eq!(
        fields(&violations),
        [
            "service_account_key",
            "service_account_key",
            "service_account_key",
            "region"
        ]
    );
}

// ---------------------------------------------------------------------------
// Quay

#[test]
fn quay_accepts_robots_and_users() {
    assert_valid(&quay("myorg+deployer", QUAY_ROBOT_TOKEN));
    assert_valid(&quay("acme.platform-team+ci_pull2", QUAY_ROBOT_TOKEN));
    assert_valid(&quay("jdoe", "Hx8Kq2vN+pR7tY4wB1nZ8cD3fG6hJ0kL5pS9uV2xA="));
    assert_valid(&quay("j_doe_2", "s3cr3tpassw0rd"));
    assert_valid(&quay("john.doe", "s3cr3tpassw0rd"));
    assert_valid(&quay("j-doe", "s3cr3tpassw0rd"));
}

#[test]
fn quay_rejects_malformed_robot_tokens() {
    for (case, token) in [
        ("empty", String::new()),
        ("63 characters", QUAY_ROBOT_TOKEN[..63].to_owned()),
        ("65 characters", format!("{QUAY_ROBOT_TOKEN}A")),
        ("lower case", QUAY_ROBOT_TOKEN.to_lowercase()),
        ("a user password", "s3cr3tpassw0rd".to_owned()),
    ] {
        assert_rejected(case, &quay("myorg+deployer", &token), "token");
    }
    for (case, token) in [("seven characters", "s3cr3tp"), ("space", "s3cr3t passw0rd")] {
        assert_rejected(case, &quay("jdoe", token), "token");
    }
}

#[test]
fn quay_rejects_malformed_usernames() {
    for (case, username) in [
        ("empty", ""),
        ("upper-case org", "MyOrg+deployer"),
        ("upper-case robot", "myorg+Deployer"),
        ("robot name starting with a digit", "myorg+1deployer"),
        ("no robot name", "myorg+"),
        ("no org", "+deployer"),
        ("two plus signs", "myorg+team+deployer"),
        ("one-character user", "j"),
        ("user starting with _", "_jdoe"),
        ("upper-case user", "JDoe"),
        ("an email", "jdoe@example.com"),
    ] {
        let token = if username.contains('+') {
            QUAY_ROBOT_TOKEN
        } else {
            "s3cr3tpassw0rd"
        };
        assert_rejected(case, &quay(username, token), "username");
    }
}

// ---------------------------------------------------------------------------
// Custom

#[test]
fn custom_accepts_the_guides_example() {
    assert_valid(&custom("https://registry.internal.example.com", "deploy", "secret"));
}

#[test]
fn custom_accepts_https_anywhere_and_http_on_loopback() {
    for url in [
        "https://registry.internal.example.com/",
        "https://registry.example.com:5443",
        "https://10.0.0.5:5000",
        "https://[2001:db8::1]:5000",
        "http://localhost:5000",
        "http://127.0.0.1:5000/",
        "http://127.8.9.10",
        "http://[::1]:5000",
    ] {
        assert_valid(&custom(url, "deploy", "secret"));
    }
}

#[test]
fn custom_rejects_malformed_urls() {
    for (case, url, needle) in [
        ("empty", "", "is required"),
        ("http elsewhere", "http://registry.internal.example.com", "https"),
        (
            "http on a name ending in localhost",
            "http://localhost.example.com",
            "https",
        ),
        ("http on a private address", "http://10.0.0.5:5000", "https"),
        ("no scheme", "registry.internal.example.com", "absolute url"),
        ("other scheme", "ftp://registry.internal.example.com", "https://"),
        (
            "user and password",
            "https://deploy:secret@registry.example.com",
            "user name or password",
        ),
        ("path", "https://registry.example.com/v2/", "path"),
        ("query", "https://registry.example.com/?tls=off", "query"),
        ("fragment", "https://registry.example.com/#top", "fragment"),
        ("space", "https://registry example.com", "whitespace"),
        ("bad port", "https://registry.example.com:99999", "not a valid url"),
        ("no host", "https://", "not a valid url"),
    ] {
        assert_rejected_saying(case, &custom(url, "deploy", "secret"), "url", needle);
    }
}

#[test]
fn custom_url_descriptions_never_quote_a_password_in_the_url() {
    let url = "http://deploy:hunter2hunter2@registry.example.com/v2?x#y";
    let descriptions = assert_rejected("everything wrong", &custom(url, "deploy", "secret"), "url");
    assert_eq!(descriptions.len(), 5, "{descriptions:#?}");
    assert!(descriptions.iter().all(|d| !d.contains("hunter2")));
}

#[test]
fn custom_rejects_malformed_usernames_and_passwords() {
    for (case, username) in [
        ("empty", "".to_owned()),
        ("space", "de ploy".to_owned()),
        ("257 characters", "u".repeat(257)),
    ] {
        assert_rejected(
            case,
            &custom("https://registry.example.com", &username, "secret"),
            "username",
        );
    }
    for (case, password) in [
        ("empty", "".to_owned()),
        ("space", "sec ret".to_owned()),
        ("trailing newline", "secret\n".to_owned()),
        ("zero-width space", "sec\u{200B}ret".to_owned()),
        ("1025 characters", "p".repeat(1025)),
    ] {
        assert_rejected(
            case,
            &custom("https://registry.example.com", "deploy", &password),
            "password",
        );
    }
}

// ---------------------------------------------------------------------------
// Public and every kind together

#[test]
fn public_is_always_valid() {
    assert_valid(&Credentials::Public);
}

#[test]
fn empty_fields_of_every_kind_are_all_required() {
    let empty = [
        ghcr("", ""),
        docker("", ""),
        ecr("", "", ""),
        acr("", "", ""),
        gcr(""),
        gar("", ""),
        quay("", ""),
        custom("", "", ""),
    ];
    for credentials in &empty {
        let violations = violations(credentials);
        let expected: Vec<&str> = credentials.kind().fields().iter().map(|spec| spec.name).collect();
        assert_eq!(fields(&violations), expected, "{}", credentials.kind());
        assert!(
            violations
                .iter()
                .all(|violation| violation.description == "is required")
        );
    }
}

#[test]
fn descriptions_never_contain_a_malformed_secret() {
    // (credentials with one malformed secret, the secret's public prefix)
    let cases = [
        (ghcr("myorg", "ghp_xxxxxxxxxxxx"), "ghp_"),
        (ghcr("myorg", &GHCR_CLASSIC[..39]), "ghp_"),
        (ghcr("myorg", &GHCR_FINE_GRAINED.replacen('Q', "-", 1)), "github_pat_"),
        (ghcr("myorg", "ghp_RyxxNUwZr11 WEYjdlODLW7LRi5B2eqdMz1uI"), "ghp_"),
        (ghcr("myorg", "Tr0ub4dor&3xQv"), ""),
        (docker("myuser", "dckr_pat_xxxxxxxxxxxx"), "dckr_pat_"),
        (docker("myuser", "dckr_pzt_OHb7M4LG_2Js3ek938eILYVPCfv"), "dckr_"),
        (docker("myuser", "hunter2"), ""),
        (docker("myuser", "hunter2 hunter2"), ""),
        (ecr("AKIAIOSFODNN7EXAMPL", ECR_SECRET, "us-east-1"), "AKIA"),
        (ecr("akiaiosfodnn7example", ECR_SECRET, "us-east-1"), ""),
        (ecr(ECR_KEY_ID, &ECR_SECRET[..39], "us-east-1"), ""),
        (ecr(ECR_KEY_ID, &ECR_SECRET.replacen('/', "-", 1), "us-east-1"), ""),
        (acr("contoso.azurecr.io", ACR_APP_ID, "bL08Q~S"), ""),
        (acr("contoso.azurecr.io", ACR_APP_ID, "bL08Q~Sr jp1-ogNe8"), ""),
        (quay("myorg+deployer", &QUAY_ROBOT_TOKEN[..63]), ""),
        (quay("myorg+deployer", &QUAY_ROBOT_TOKEN.to_lowercase()), ""),
        (quay("jdoe", "s3cr3tp"), ""),
        (custom("https://registry.example.com", "deploy", "sec ret"), ""),
        (custom("https://registry.example.com", "deploy", "secret\u{7}"), ""),
    ];
    for (credentials, prefix) in &cases {
        let plaintext = plaintext(credentials);
        let violations = violations(credentials);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        let violation = &violations[0];
        let secret = plaintext[&violation.field].as_str().unwrap();
        assert!(!violation.description.contains(secret), "{violation}");
        // Not even a fragment of what follows the public prefix.
        let rest: Vec<char> = secret.strip_prefix(prefix).unwrap().chars().collect();
        for window in rest.windows(6) {
            let fragment: String = window.iter().collect();
            assert!(
                !violation.description.contains(&fragment),
                "{violation} shows {fragment:?}"
            );
        }
    }
}

#[test]
fn key_descriptions_never_contain_the_key() {
    let pem = fixture_field("private_key");
    let private_key_id = fixture_field("private_key_id");
    let client_email = fixture_field("client_email");
    let keys = [
        key_setting("type", "authorized_user"),
        key_setting("client_email", client_email.replace(".iam.", ".")),
        key_setting("private_key", pem.replace("PRIVATE KEY", "RSA PRIVATE KEY")),
        key_setting("private_key", pem.replace("MII", "***")),
        SERVICE_ACCOUNT_JSON.replace("\"type\"", "type"),
        SERVICE_ACCOUNT_JSON.replacen("MII", "\u{1}", 1),
    ];
    for key in &keys {
        for violation in violations(&gcr(key)) {
            let description = &violation.description;
            assert!(!description.contains(&private_key_id), "{violation}");
            assert!(!description.contains("acme-prod"), "{violation}");
            for line in pem.lines().filter(|line| !line.starts_with("-----")) {
                let start: String = line.chars().take(8).collect();
                assert!(!description.contains(&start), "{violation}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Registry names

#[test]
fn registry_names_from_the_guide_are_valid() {
    for name in [
        "My GHCR",
        "Docker Hub",
        "Production ECR",
        "Internal Registry",
        "Régistre de production",
        "a",
    ] {
        assert_eq!(validate::registry_name(name), None, "{name:?}");
    }
    assert_eq!(validate::registry_name(&"n".repeat(100)), None);
}

#[test]
fn registry_names_are_checked() {
    for (case, name, needle) in [
        ("empty", "".to_owned(), "is required"),
        ("only spaces", "   ".to_owned(), "is required"),
        ("leading space", " My GHCR".to_owned(), "whitespace"),
        ("trailing newline", "My GHCR\n".to_owned(), "whitespace"),
        ("tab inside", "My\tGHCR".to_owned(), "control"),
        ("escape inside", "My\u{1b}[31mGHCR".to_owned(), "control"),
        ("bidi override", "My \u{202E}RCHG".to_owned(), "control"),
        ("101 characters", "n".repeat(101), "at most 100"),
    ] {
        let violation = validate::registry_name(&name).unwrap_or_else(|| panic!("{case}: accepted"));
        assert_eq!(violation.field, "name", "{case}");
        assert!(violation.description.contains(needle), "{case}: {violation}");
    }
}

fn custom_trusting(ca_bundle: &str) -> Credentials {
    Credentials::Custom {
        url: "https://registry.internal.example.com".into(),
        username: "deploy".into(),
        password: "secret".into(),
        ca_bundle: ca_bundle.into(),
    }
}

#[test]
fn custom_accepts_a_ca_bundle_of_pem_certificates() {
    let ca = include_str!("fixtures/registry-ca.pem");
    assert_valid(&custom_trusting(ca));
    assert_valid(&custom_trusting(&format!("# the internal CA\n{ca}\n{ca}")));
    assert_eq!(custom_trusting(ca).ca_bundle(), Some(ca));
    assert_eq!(custom_trusting("").ca_bundle(), None);
}

#[test]
fn custom_rejects_a_ca_bundle_that_is_not_certificates() {
    let ca = include_str!("fixtures/registry-ca.pem");
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let truncated = &ca[..ca.len() / 2];
    let key = "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n";
    for (case, bundle, needle) in [
        ("plain text", "not a certificate", "must hold PEM certificates"),
        ("a private key only", key, "must hold PEM certificates"),
        ("not DER inside", not_der, "certificate 1 is not an X.509 certificate"),
        ("truncated", truncated, "certificate 1 is not valid PEM"),
        ("too large", &"x".repeat(256 * 1024 + 1), "at most 256 KiB"),
        ("too many", &ca.repeat(101), "at most 100 certificates"),
    ] {
        assert_rejected_saying(case, &custom_trusting(bundle), "ca_bundle", needle);
    }
}

#[test]
fn ecr_with_the_servers_identity_takes_a_region_and_no_keys() {
    let ambient = |access_key_id: &str, secret_access_key: &str, region: &str| Credentials::Ecr {
        access_key_id: access_key_id.into(),
        secret_access_key: secret_access_key.into(),
        region: region.into(),
        session_token: None,
        server_identity: true,
    };
    assert_valid(&ambient("", "", "eu-west-1"));
    assert_rejected_saying(
        "keys with the server's identity",
        &ambient("AKIAIOSFODNN7EXAMPLE", "", "eu-west-1"),
        "access_key_id",
        "must be empty with use_server_identity",
    );
    assert_rejected_saying(
        "a secret with the server's identity",
        &ambient("", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "eu-west-1"),
        "secret_access_key",
        "must be empty",
    );
    assert_rejected("no region", &ambient("", "", ""), "region");
}
