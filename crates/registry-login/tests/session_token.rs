//! Temporary (`ASIA`) keys: the session token travels with the signed
//! `GetAuthorizationToken` call. moto accepts any token and cannot show
//! what it received, so this test serves the ECR API's answer itself from
//! a loopback listener and records the request the AWS SDK signed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Arc, Mutex};

use registry_core::Timestamp;
use registry_core::ports::login::{LoginProvider, LoginUse};
use registry_login::{LoginSettings, Logins};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

mod common;

const HOST: &str = common::ACCOUNT_HOST;
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ";

/// An ECR API endpoint answering every call with one authorization token;
/// the raw requests it received.
async fn ecr_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                // Headers, then the (small) JSON body.
                while !String::from_utf8_lossy(&request).contains("{}") {
                    let n = socket.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                let token =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "AWS:temporary-password");
                let body = format!(
                    r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{},"proxyEndpoint":"https://{HOST}"}}]}}"#,
                    Timestamp::now().0 / 1_000_000 + 43_200
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn temporary_keys_send_their_session_token() {
    let (url, seen) = ecr_endpoint().await;
    let logins = Logins::new(LoginSettings {
        ecr_endpoint_url: Some(url),
        ..LoginSettings::default()
    });
    let login = logins
        .login(
            &common::ecr_registry("reg-sessiontest", 1),
            &common::ecr_keys("ASIAIOSFODNN7EXAMPLE", Some(SESSION_TOKEN)),
            HOST,
            LoginUse::PullSecret,
        )
        .await
        .unwrap();
    assert_eq!(login.username, "AWS");
    assert_eq!(login.password.expose_secret(), "temporary-password");
    let request = seen.lock().unwrap().pop().unwrap().to_ascii_lowercase();
    assert!(request.contains("x-amz-target: amazonec2containerregistry_v20150921.getauthorizationtoken"));
    assert!(
        request.contains(&format!("x-amz-security-token: {}", SESSION_TOKEN.to_ascii_lowercase())),
        "{request}"
    );
    // The token is signed with the request.
    assert!(request.contains("x-amz-security-token") && request.contains("credential=asiaiosfodnn7example/"));
}

#[tokio::test]
async fn an_iam_users_keys_send_no_session_token() {
    let (url, seen) = ecr_endpoint().await;
    let logins = Logins::new(LoginSettings {
        ecr_endpoint_url: Some(url),
        ..LoginSettings::default()
    });
    logins
        .login(
            &common::ecr_registry("reg-sessiontest", 1),
            &common::ecr_keys("AKIAIOSFODNN7EXAMPLE", None),
            HOST,
            LoginUse::PullSecret,
        )
        .await
        .unwrap();
    let request = seen.lock().unwrap().pop().unwrap().to_ascii_lowercase();
    assert!(request.contains("credential=akiaiosfodnn7example/"), "{request}");
    assert!(!request.contains("x-amz-security-token"), "{request}");
}

/// A live test of unsaved keys exchanges them each time and caches nothing
/// (each draft has an id of its own); saved keys are exchanged once.
#[tokio::test]
async fn unsaved_keys_are_never_cached() {
    let (url, seen) = ecr_endpoint().await;
    let logins = Logins::new(LoginSettings {
        ecr_endpoint_url: Some(url),
        ..LoginSettings::default()
    });
    let keys = common::ecr_keys("AKIAIOSFODNN7EXAMPLE", None);
    let draft = common::ecr_registry("reg-draft", registry_core::registry::UNSAVED_REVISION);
    for _ in 0..2 {
        logins.login(&draft, &keys, HOST, LoginUse::PullSecret).await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
    let saved = common::ecr_registry("reg-saved", 1);
    for _ in 0..2 {
        logins.login(&saved, &keys, HOST, LoginUse::PullSecret).await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
}
