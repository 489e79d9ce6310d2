//! Key management a person can use: `lifeboat certs init` makes a deployment's CA and one key
//! pair per party; `lifeboat certs check` says which certificate of a configuration is wrong and
//! why.
//!
//! Files written by `init` into `--out DIR`:
//!
//! ```text
//! ca.pem              the CA certificate: every party's `[tls] ca`
//! ca.key              the CA key (0600): keep it off the sites; only `certs init --reuse-ca` reads it
//! NAME.pem, NAME.key  one per site and the arbiter: that party's `[tls] cert` and `key` (0600)
//! ```
//!
//! A party's certificate carries its deployment name as its DNS name (and common name); that
//! name is who it is on every link (see `transport::tls`). Keys are ECDSA P-256.

use crate::transport::tls::{self, certs_from_pem, Names, TlsFiles};
use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// How long `certs init` makes certificates valid: the CA ten years, a party two.
pub const CA_DAYS: i64 = 3650;
pub const PARTY_DAYS: i64 = 730;

/// A generated key pair in PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A deployment's CA and one key pair per name, in memory.
pub struct Generated {
    pub ca: Pem,
    pub parties: Vec<(String, Pem)>,
}

fn dn(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn validity(p: &mut CertificateParams, from: OffsetDateTime, days: i64) {
    // A day of slack before now: a party whose clock runs a little behind still accepts it.
    p.not_before = from - Duration::days(1);
    p.not_after = from + Duration::days(days);
}

/// A CA and certificates for `names` (sites and arbiter), valid from `from` for the default
/// durations (`party_days` for the parties).
pub fn generate(
    names: &[String],
    from: OffsetDateTime,
    party_days: i64,
) -> anyhow::Result<Generated> {
    let ca_key = KeyPair::generate()?;
    // A name of its own per CA (from its key), so a certificate of another deployment is
    // reported as "not signed by this CA", not as a bad signature.
    let tag: String = xxhash_rust::xxh3::xxh3_64(&ca_key.public_key_der())
        .to_be_bytes()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name = dn(&format!("lifeboat deployment CA {tag}"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, from, CA_DAYS);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut parties = Vec::new();
    for name in names {
        let mut p = CertificateParams::new(vec![name.clone()])
            .with_context(|| format!("{name:?} cannot be a certificate's DNS name"))?;
        p.distinguished_name = dn(name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p, from, party_days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        parties.push((
            name.clone(),
            Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            },
        ));
    }
    Ok(Generated {
        ca: Pem {
            cert: ca_cert.pem(),
            key: ca_key.serialize_pem(),
        },
        parties,
    })
}

impl Generated {
    /// Party `name`'s TLS set-up from these PEMs (tests and benches: no files).
    pub fn tls(
        &self,
        name: &str,
        names: Names,
        me: lifeboat_core::Peer,
    ) -> Result<crate::transport::Tls, crate::transport::TlsError> {
        let pem = self
            .parties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .ok_or_else(|| crate::transport::TlsError::Setup(format!("no party {name:?}")))?;
        let files = TlsFiles {
            ca: "ca.pem".into(),
            cert: format!("{name}.pem").into(),
            key: format!("{name}.key").into(),
        };
        crate::transport::Tls::from_pem(
            &files,
            self.ca.cert.as_bytes(),
            pem.cert.as_bytes(),
            pem.key.as_bytes(),
            names,
            me,
        )
    }
}

/// Check a name can be a certificate's DNS name (letters, digits, `-`, dots between labels).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && rustls::pki_types::ServerName::try_from(name).is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} cannot be a certificate name: use letters, digits and '-' (dots between labels)"
        ))
    }
}

/// Write a file with `mode`, fsynced, refusing to overwrite.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten: remove it or choose another --out)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// `lifeboat certs init`: a CA and a key pair per site and the arbiter, into `out`.
pub fn init(
    out: &Path,
    sites: &[String],
    arbiter: &str,
    days: i64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = sites.to_vec();
    names.push(arbiter.to_string());
    for n in &names {
        check_name(n).map_err(anyhow::Error::msg)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in &names {
        if !seen.insert(n) {
            bail!("{n:?} is named twice; every site and the arbiter need a name of their own");
        }
    }
    if sites.len() < 2 {
        bail!(
            "--sites names {} site(s); a deployment has two (e.g. --sites primary,recovery)",
            sites.len()
        );
    }
    let g = generate(&names, OffsetDateTime::now_utc(), days)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str, mode: u32| -> anyhow::Result<()> {
        let p = out.join(name);
        write_new(&p, text, mode)?;
        written.push(p);
        Ok(())
    };
    put("ca.pem", &g.ca.cert, 0o644)?;
    put("ca.key", &g.ca.key, 0o600)?;
    for (name, pem) in &g.parties {
        put(&format!("{name}.pem"), &pem.cert, 0o644)?;
        put(&format!("{name}.key"), &pem.key, 0o600)?;
    }
    crate::durable::sync_dir(out).with_context(|| format!("syncing {}", out.display()))?;
    Ok(written)
}

/// One finding of `certs check`.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub ok: bool,
    pub what: String,
}

/// `lifeboat certs check`: the CA file, the party's certificate (signed by the CA, valid now,
/// for `me`'s name and no other deployment name), and that the key matches it.
pub fn check(files: &TlsFiles, names: &Names, me: lifeboat_core::Peer) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut finding = |file: &Path, ok: bool, what: String| {
        out.push(Finding {
            file: file.to_path_buf(),
            ok,
            what,
        })
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot be read: {e}"));
    let roots = match read(&files.ca).and_then(|pem| {
        certs_from_pem("CA certificate", &files.ca, &pem).map_err(|e| e.to_string())
    }) {
        Ok(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, bad) = roots.add_parsable_certificates(cas);
            if added == 0 || bad > 0 {
                finding(
                    &files.ca,
                    false,
                    "holds a certificate that cannot be a CA".into(),
                );
                None
            } else {
                finding(&files.ca, true, format!("{added} CA certificate(s)"));
                Some(Arc::new(roots))
            }
        }
        Err(e) => {
            finding(&files.ca, false, e);
            None
        }
    };
    let chain = match read(&files.cert)
        .and_then(|pem| certs_from_pem("certificate", &files.cert, &pem).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            finding(&files.cert, false, e);
            return out;
        }
    };
    if let Some(roots) = roots {
        match tls::client_verifier(roots) {
            Ok(v) => match tls::check_chain(&*v, &chain) {
                Ok(()) => finding(&files.cert, true, "signed by the CA and valid now".into()),
                Err(why) => finding(&files.cert, false, why),
            },
            Err(e) => finding(&files.ca, false, e.to_string()),
        }
    }
    let want = names.name_of(me).unwrap_or("?").to_string();
    let valid_for: Vec<String> = tls::names_in(&chain[0], names)
        .into_iter()
        .filter_map(|p| names.name_of(p).map(str::to_string))
        .collect();
    if valid_for == [want.clone()] {
        finding(&files.cert, true, format!("is for {want:?}"));
    } else if valid_for.is_empty() {
        finding(
            &files.cert,
            false,
            format!(
                "is for none of this deployment's names (sites {:?}, arbiter {:?}); this party is {want:?}",
                names.sites, names.arbiter
            ),
        );
    } else {
        finding(
            &files.cert,
            false,
            format!("is for {valid_for:?}, but this party is {want:?}"),
        );
    }
    // The key must be the certificate's: a TLS set-up with both proves it.
    match key_matches(files) {
        Ok(()) => finding(&files.key, true, "matches the certificate".into()),
        Err(why) => finding(&files.key, false, why),
    }
    out
}

/// `lifeboat certs check FILE`: every finding printed; the exit code (0 all right, 1 something
/// wrong, 2 the file itself is invalid or has no `[tls]` files).
pub fn check_config(path: &Path) -> i32 {
    use crate::config::{ArbiterFile, SiteFile};
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let is_site = text
        .lines()
        .any(|l| l.split('=').next().is_some_and(|k| k.trim() == "site"));
    let loaded = if is_site {
        SiteFile::load(path).map(|f| {
            let me = lifeboat_core::Peer::Site(f.site_id());
            (f.tls.clone(), f.engine.clone(), me)
        })
    } else {
        ArbiterFile::load(path).map(|f| {
            (
                f.tls.clone(),
                f.engine.clone(),
                lifeboat_core::Peer::Arbiter,
            )
        })
    };
    let (tls, engine, me) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return crate::cli::exit::USAGE;
        }
    };
    let Some(files) = tls.files() else {
        eprintln!(
            "{}: [tls] insecure = true: there are no certificates to check (plain TCP and HTTP)",
            path.display()
        );
        return crate::cli::exit::USAGE;
    };
    let names = tls.names(&engine);
    let findings = check(&files, &names, me);
    let mut ok = true;
    for f in &findings {
        ok &= f.ok;
        println!(
            "{} {}: {}",
            if f.ok { "ok   " } else { "WRONG" },
            f.file.display(),
            f.what
        );
    }
    if ok {
        crate::cli::exit::OK
    } else {
        crate::cli::exit::FAILED
    }
}

/// Whether the key file holds the key of the certificate file.
fn key_matches(files: &TlsFiles) -> Result<(), String> {
    {
        let chain = std::fs::read(&files.cert)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                certs_from_pem("certificate", &files.cert, &p).map_err(|e| e.to_string())
            })?;
        let key_pem = std::fs::read(&files.key).map_err(|e| format!("cannot be read: {e}"))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("holds no PEM private key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("is not a usable key: {e}"))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|_| format!("is not the key of {}", files.cert.display()))
    }
}

use rustls::pki_types::pem::PemObject;

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::{Peer, SiteId};

    fn names() -> Names {
        Names {
            sites: vec!["primary".into(), "recovery".into()],
            arbiter: "arbiter".into(),
        }
    }

    /// `certs init`-style files in `dir` for a deployment valid from `from` for `days`.
    fn files_in(dir: &Path, from: OffsetDateTime, days: i64) {
        let all = ["primary", "recovery", "arbiter"].map(String::from);
        let g = generate(&all, from, days).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), &g.ca.cert).unwrap();
        for (n, pem) in &g.parties {
            std::fs::write(dir.join(format!("{n}.pem")), &pem.cert).unwrap();
            std::fs::write(dir.join(format!("{n}.key")), &pem.key).unwrap();
        }
    }

    fn tls(dir: &Path, ca: &str, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(ca),
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    fn wrong(f: &[Finding]) -> Vec<String> {
        f.iter().filter(|f| !f.ok).map(|f| f.what.clone()).collect()
    }

    #[test]
    fn certs_check_says_which_file_is_wrong_and_why() {
        let d = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        files_in(&d.path().join("a"), now, 30);
        files_in(&d.path().join("b"), now, 30);
        files_in(&d.path().join("old"), now - Duration::days(400), 30);
        let p = Peer::Site(SiteId(0));
        let ok = check(
            &tls(d.path(), "a/ca.pem", "a/primary.pem", "a/primary.key"),
            &names(),
            p,
        );
        assert!(wrong(&ok).is_empty(), "{ok:?}");
        assert_eq!(ok.len(), 4);

        let other_name = check(
            &tls(d.path(), "a/ca.pem", "a/recovery.pem", "a/recovery.key"),
            &names(),
            p,
        );
        assert_eq!(
            wrong(&other_name),
            vec!["is for [\"recovery\"], but this party is \"primary\"".to_string()]
        );

        let other_ca = check(
            &tls(d.path(), "b/ca.pem", "a/primary.pem", "a/primary.key"),
            &names(),
            p,
        );
        let w = wrong(&other_ca);
        assert!(
            w.len() == 1 && w[0].contains("not signed by this deployment's CA"),
            "{w:?}"
        );

        let expired = check(
            &tls(d.path(), "old/ca.pem", "old/primary.pem", "old/primary.key"),
            &names(),
            p,
        );
        let w = wrong(&expired);
        assert!(w.len() == 1 && w[0].contains("expired"), "{w:?}");

        let other_key = check(
            &tls(d.path(), "a/ca.pem", "a/primary.pem", "b/primary.key"),
            &names(),
            p,
        );
        let w = wrong(&other_key);
        assert!(w.len() == 1 && w[0].contains("is not the key of"), "{w:?}");

        let missing = check(
            &tls(d.path(), "nope.pem", "a/primary.pem", "a/primary.key"),
            &names(),
            p,
        );
        let w = wrong(&missing);
        assert!(w.len() == 1 && w[0].contains("cannot be read"), "{w:?}");
    }

    #[test]
    fn init_refuses_bad_names_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let two = ["primary".to_string(), "recovery".to_string()];
        let e = init(d.path(), &["pri mary".into(), "b".into()], "arbiter", 30).unwrap_err();
        assert!(
            e.to_string().contains("cannot be a certificate name"),
            "{e}"
        );
        let e = init(d.path(), &two, "primary", 30).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
        init(d.path(), &two, "arbiter", 30).unwrap();
        let key = std::fs::read(d.path().join("primary.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("primary.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = init(d.path(), &two, "arbiter", 30).unwrap_err();
        assert!(format!("{e:#}").contains("never overwritten"), "{e:#}");
        assert_eq!(std::fs::read(d.path().join("primary.key")).unwrap(), key);
    }
}
