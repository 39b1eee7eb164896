//! Registries opens a registry's credentials once per sealed blob: repeated
//! hand-outs do not decrypt again, and a rotation, a delete or a new blob is
//! never answered from what was opened before. Over the real store and key
//! ring, with a sealer that counts how often it opens.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use registry_core::ports::sealer::{SealContext, SealError, Sealer};
use registry_core::ports::store::RegistryStore;
use registry_core::registries::{NewRegistry, Registries, RegistryPatch};
use registry_core::{Credentials, Principal, RegistryKind, Roles};
use registry_crypto::KeyRing;
use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

const OLD: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const NEW: &str = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa";

#[derive(Debug)]
struct Counting {
    keys: KeyRing,
    opens: AtomicUsize,
}

impl Sealer for Counting {
    fn seal(&self, context: SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.keys.seal(context, plaintext)
    }
    fn open(&self, context: SealContext<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.keys.open(context, blob)
    }
    fn primary_key_id(&self) -> &str {
        self.keys.primary_key_id()
    }
    fn has_key(&self, key_id: &str) -> bool {
        self.keys.has_key(key_id)
    }
    fn key_id_of(&self, blob: &[u8]) -> Result<String, SealError> {
        self.keys.key_id_of(blob)
    }
}

fn token(credentials: &Credentials) -> String {
    match credentials {
        Credentials::Ghcr { token, .. } => token.expose_secret().to_owned(),
        other => panic!("not GHCR credentials: {other:?}"),
    }
}

fn ghcr(token: &str) -> Option<Credentials> {
    Some(Credentials::Ghcr {
        username: "myorg".into(),
        token: token.into(),
    })
}

#[tokio::test]
async fn credentials_are_opened_once_per_sealed_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        registry_store::SeaStore::connect(&registry_store::sqlite_url(dir.path()))
            .await
            .unwrap(),
    );
    let sealer = Arc::new(Counting {
        keys: KeyRing::ephemeral().unwrap(),
        opens: AtomicUsize::new(0),
    });
    let registries = Registries::new(store as Arc<dyn RegistryStore>, Arc::clone(&sealer) as Arc<dyn Sealer>);
    let alice = Principal::new("alice", "acme", Roles::parse_list("writer,deployer").unwrap());
    let created = registries
        .create(
            &alice,
            NewRegistry {
                name: "My GHCR".into(),
                kind: Some(RegistryKind::Ghcr),
                credentials: ghcr(OLD),
                request_id: None,
            },
        )
        .await
        .unwrap();
    let id = created.id.to_string();
    let opens = || sealer.opens.load(Ordering::SeqCst);

    let before = opens();
    for _ in 0..3 {
        let stored = registries.load(&alice, &id).await.unwrap();
        assert_eq!(token(&registries.open(&stored).unwrap()), OLD);
    }
    assert_eq!(opens(), before + 1, "three hand-outs, one decryption");

    // A rotation seals a new blob: the next open decrypts it, and never
    // answers with the old token.
    registries
        .update(
            &alice,
            &id,
            RegistryPatch {
                name: None,
                credentials: ghcr(NEW),
            },
            "",
        )
        .await
        .unwrap();
    let stored = registries.load(&alice, &id).await.unwrap();
    assert_eq!(token(&registries.open(&stored).unwrap()), NEW);
    assert_eq!(opens(), before + 2);

    // A blob loaded before the rotation is still opened as what it is (a
    // sync pass may hold one), without evicting the new one for good.
    let mut old = stored.clone();
    old.sealed_credentials = registries
        .sealer()
        .seal(
            SealContext {
                registry_id: old.registry.id.as_str(),
                kind: old.registry.kind,
            },
            &ghcr(OLD).unwrap().to_plaintext(),
        )
        .unwrap();
    assert_eq!(token(&registries.open(&old).unwrap()), OLD);
    assert_eq!(token(&registries.open(&stored).unwrap()), NEW);

    // After a delete nothing of it is served from memory: the same blob
    // is decrypted afresh.
    let reopened = opens();
    registries.delete(&alice, &id, "", true).await.unwrap();
    assert_eq!(token(&registries.open(&stored).unwrap()), NEW);
    assert_eq!(opens(), reopened + 1);
}
