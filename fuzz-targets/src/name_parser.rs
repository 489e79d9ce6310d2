//! Fuzz body for the artifact-name parser (`<db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<kind>_<retry>`).

use crate::bytes::Bytes;
use lifeboat_core::name::ArtifactName;
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{ArtifactKind, UtcMillis};

/// The largest instant a name can carry: 9999-12-31T23:59:59Z.
const MAX_NAME_SECS: i64 = 253_402_300_799;

/// Three views of the same bytes:
/// 1. the bytes as text (lossy UTF-8): parsing never panics; a name that parses formats to a
///    name that parses back to the same value, and an error names the input it rejects;
/// 2. a well-formed name built from the bytes: format then parse is the identity;
/// 3. that well-formed name with a few bytes spliced in: the same checks as 1.
pub fn name_parser(data: &[u8]) {
    check_text(&String::from_utf8_lossy(data));

    let mut r = Bytes::new(data);
    let name = structured(&mut r);
    let text = name.to_string();
    assert_eq!(
        ArtifactName::parse(&text).as_ref(),
        Ok(&name),
        "a formatted name must parse back to itself: {text:?}"
    );

    let mut spliced = text.into_bytes();
    for _ in 0..r.below(4) {
        let at = r.below(spliced.len() + 1);
        match r.below(3) {
            0 => spliced.insert(at, r.u8()),
            1 if at < spliced.len() => {
                spliced.remove(at);
            }
            _ if at < spliced.len() => spliced[at] = r.u8(),
            _ => {}
        }
    }
    check_text(&String::from_utf8_lossy(&spliced));
}

fn check_text(text: &str) {
    match ArtifactName::parse(text) {
        Ok(name) => {
            let formatted = name.to_string();
            let again = ArtifactName::parse(&formatted)
                .unwrap_or_else(|e| panic!("{text:?} parsed, but its formatting does not: {e}"));
            assert_eq!(again, name, "{text:?} -> {formatted:?}");
            assert_eq!(again.to_string(), formatted);
            assert!(
                !name.db.is_empty(),
                "{text:?}: empty database name accepted"
            );
        }
        Err(e) => {
            assert_eq!(e.name, text, "the error must carry the rejected name");
            let message = e.to_string();
            assert!(message.contains("is wrong"), "{message}");
        }
    }
}

/// A well-formed name: any non-empty database name (it may contain `_`), an instant the name
/// format can hold, any kind and retry count.
fn structured(r: &mut Bytes<'_>) -> ArtifactName {
    let raw = r.slice(24);
    let mut db = String::from_utf8_lossy(raw).into_owned();
    if db.is_empty() {
        db.push('d');
    }
    let secs = (r.u64() % (MAX_NAME_SECS as u64 + 1)) as i64;
    let kind = [
        ArtifactKind::Full,
        ArtifactKind::Incremental,
        ArtifactKind::Log,
    ][r.below(3)];
    let retry = match r.below(3) {
        0 => u32::from(r.u8()),
        1 => r.u32(),
        _ => u32::MAX,
    };
    ArtifactName {
        db,
        created: UtcDateTime::from_millis(UtcMillis(secs * 1000)),
        kind,
        retry,
    }
}
