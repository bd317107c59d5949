//! Status writes held back within a section (`status_write.rs`): every
//! statement on the rows sees them, and a section ends with them written.

use super::*;

#[tokio::test]
async fn held_status_writes_are_seen_by_statements_and_written_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let store = open_app(&path, "app");
    let (claims_in_section, status_in_section) = store
        .atomic(|t| {
            t.insert_invocation(&plain("a", 1), &st(Registered, None))?;
            t.insert_invocation(&plain("b", 2), &st(Registered, None))?;
            let at = Timestamp::from_micros(10);
            t.put_status(&iid("a"), &st(Pending, Some("r1")), at)?;
            t.put_status(&iid("b"), &st(Pending, Some("r1")), at)?;
            t.put_status(&iid("a"), &st(Running, Some("r1")), at)?;
            // statements on the rows, in the same section, see both writes
            let claims = t.owned_claims_before(Timestamp::from_micros(11), 10)?;
            t.put_status(&iid("b"), &st(Running, Some("r1")), at)?;
            t.put_status(&iid("b"), &st(Success, None), at)?;
            Ok((claims, t.get_status(&iid("b"))?))
        })
        .await
        .unwrap();
    let mut claimed: Vec<_> = claims_in_section
        .iter()
        .map(|c| (c.invocation_id, c.status.status))
        .collect();
    claimed.sort();
    assert_eq!(claimed, vec![(iid("a"), Running), (iid("b"), Pending)]);
    assert_eq!(status_in_section, Some(st(Success, None)));
    // what the section left is what a new connection reads
    let raw = Connection::open(&path).unwrap();
    let read = |id: &str| -> (i64, Option<String>, Option<i64>) {
        raw.query_row(
            "SELECT status, owner, final_at_us FROM invocations WHERE invocation_id = ?1",
            [iid(id).as_str()],
            |r| r.try_into(),
        )
        .unwrap()
    };
    assert_eq!(read("a"), (status_code(Running), Some("r1".into()), None));
    let (code, owner, final_at) = read("b");
    assert_eq!(code, status_code(Success));
    assert!(matches!(owner.as_deref(), None | Some("")), "{owner:?}");
    assert_eq!(final_at, Some(10));
}
