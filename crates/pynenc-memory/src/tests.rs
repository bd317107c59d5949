//! The memory store's own machinery: the slab, waits.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use pynenc_model::{
    Arguments, Call, ConcurrencySpec, InvocationId, InvocationRecord, InvocationStatus, RunnerId,
    StatusRecord, Timestamp,
};
use pynenc_store::{AtomicStore, Result, StoreTxn};

use crate::state::MemState;
use crate::MemStore;

fn record(id: InvocationId) -> Arc<InvocationRecord> {
    Arc::new(InvocationRecord {
        invocation_id: id,
        call: Call::new("tests::t", Arguments::new()),
        parent_invocation_id: None,
        created_at: Timestamp::from_micros(1),
        scheduled_at: None,
        concurrency: ConcurrencySpec::default(),
        rerun_of: None,
    })
}

fn registered() -> StatusRecord {
    StatusRecord::initial(InvocationStatus::Registered).unwrap()
}

/// Moves `id` to `PENDING` for runner `r`.
fn to_pending(state: &mut MemState, id: &InvocationId) {
    state
        .put_status(
            id,
            &StatusRecord {
                status: InvocationStatus::Pending,
                owner: Some(RunnerId::from("r")),
            },
            Timestamp::from_micros(2),
        )
        .unwrap();
}

#[test]
fn a_second_invocation_with_the_same_id_is_refused_and_the_first_stays() {
    let mut state = MemState::default();
    let id = state.new_invocation_id();
    state.insert_invocation(&record(id), &registered()).unwrap();
    to_pending(&mut state, &id);
    let err = state
        .insert_invocation(&record(id), &registered())
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let status = state.get_status(&id).unwrap().unwrap();
    assert_eq!(status.status, InvocationStatus::Pending);
    assert_eq!(state.list_invocation_ids().unwrap(), vec![id]);
}

#[test]
fn deleted_slots_are_reused_without_mixing_invocations() {
    let mut state = MemState::default();
    let first = state.new_invocation_id();
    let second = state.new_invocation_id();
    state
        .insert_invocation(&record(first), &registered())
        .unwrap();
    state.delete_invocation(&first).unwrap();
    state
        .insert_invocation(&record(second), &registered())
        .unwrap();
    assert!(state.get_invocation(&first).unwrap().is_none());
    let found = state.get_invocation(&second).unwrap().unwrap();
    assert_eq!(found.invocation_id, second);
    assert_eq!(
        state.invocations.slots.len(),
        1,
        "the freed slot was reused"
    );
}

fn finish_now(store: &MemStore, id: &InvocationId) {
    let mut state = store.state.lock();
    for (status, owner) in [
        (InvocationStatus::Pending, Some(RunnerId::from("r"))),
        (InvocationStatus::Running, Some(RunnerId::from("r"))),
        (InvocationStatus::Success, None),
    ] {
        state
            .put_status(
                id,
                &StatusRecord { status, owner },
                Timestamp::from_micros(3),
            )
            .unwrap();
    }
    state.on_final(id);
}

#[tokio::test]
async fn waits_end_when_their_invocations_end_or_are_deleted_or_purged() {
    let store = MemStore::default();
    let ids: Vec<InvocationId> = {
        let mut state = store.state.lock();
        (0..3)
            .map(|_| {
                let id = state.new_invocation_id();
                state.insert_invocation(&record(id), &registered()).unwrap();
                id
            })
            .collect()
    };
    let pending =
        |w: &mut futures::future::BoxFuture<'_, Result<()>>| w.as_mut().now_or_never().is_none();
    // a wait on the first; one on all three, naming the third twice
    let mut first = store.wait_final(&ids[..1]).boxed();
    let named = [ids[0], ids[1], ids[2], ids[2]];
    let mut all = store.wait_final(&named).boxed();
    assert!(pending(&mut first) && pending(&mut all));
    finish_now(&store, &ids[0]);
    assert!(matches!(first.as_mut().now_or_never(), Some(Ok(()))));
    assert!(pending(&mut all), "two of three still open");
    // a final invocation needs no wait
    assert!(matches!(
        store.wait_final(&ids[..1]).now_or_never(),
        Some(Ok(()))
    ));
    store.state.lock().delete_invocation(&ids[1]).unwrap();
    assert!(pending(&mut all), "one still open");
    store.state.lock().purge().unwrap();
    assert!(matches!(all.as_mut().now_or_never(), Some(Ok(()))));
    // an unknown invocation is an error naming it
    let err = store.wait_final(&ids[..1]).await.unwrap_err();
    assert!(err.to_string().contains(ids[0].as_str()), "{err}");
}

#[tokio::test]
async fn status_waits_are_woken_by_the_change_itself() {
    let store = MemStore::default();
    let id = {
        let mut state = store.state.lock();
        let id = state.new_invocation_id();
        state.insert_invocation(&record(id), &registered()).unwrap();
        id
    };
    let long = Duration::from_secs(3600);
    // a status other than the one seen: at once
    assert!(matches!(
        store
            .wait_status_change(&id, InvocationStatus::Pending, long)
            .now_or_never(),
        Some(Ok(()))
    ));
    let mut wait = store
        .wait_status_change(&id, InvocationStatus::Registered, long)
        .boxed();
    assert!(
        wait.as_mut().now_or_never().is_none(),
        "nothing changed yet"
    );
    to_pending(&mut store.state.lock(), &id);
    assert!(
        matches!(wait.as_mut().now_or_never(), Some(Ok(()))),
        "woken by the step, with no timer"
    );
    drop(wait);
    assert!(store.state.lock().status_watch.is_empty(), "forgotten");
    // a wait that times out leaves nothing behind
    store
        .wait_status_change(&id, InvocationStatus::Pending, Duration::from_millis(5))
        .await
        .unwrap();
    assert!(store.state.lock().status_watch.is_empty());
    // a deleted invocation wakes its waits; an unknown one is an error naming it
    let mut wait = store
        .wait_status_change(&id, InvocationStatus::Pending, long)
        .boxed();
    assert!(wait.as_mut().now_or_never().is_none());
    store.state.lock().delete_invocation(&id).unwrap();
    assert!(matches!(wait.as_mut().now_or_never(), Some(Ok(()))));
    drop(wait);
    let err = store
        .wait_status_change(&id, InvocationStatus::Pending, long)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(id.as_str()), "{err}");
}

/// Ends `id` `SUCCESS` at `at` microseconds.
fn to_success(state: &mut MemState, id: &InvocationId, at: i64) {
    state
        .put_status(
            id,
            &StatusRecord {
                status: InvocationStatus::Success,
                owner: Some(RunnerId::from("r")),
            },
            Timestamp::from_micros(at),
        )
        .unwrap();
}

#[test]
fn the_oldest_ends_leave_out_invocations_deleted_since() {
    let mut state = MemState::default();
    let ids: Vec<InvocationId> = (0..4).map(|_| state.new_invocation_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        state
            .insert_invocation(&record(*id), &registered())
            .unwrap();
        to_success(&mut state, id, 10 * (i as i64 + 1));
    }
    // the oldest end and one in the middle are deleted (a purge by filter)
    state.delete_invocation(&ids[0]).unwrap();
    state.delete_invocation(&ids[2]).unwrap();
    let before = Timestamp::from_micros(100);
    assert_eq!(
        state.final_before(&[], before, 10).unwrap(),
        vec![ids[1], ids[3]]
    );
    // asked again, and with a limit: the same order, nothing deleted comes back
    assert_eq!(state.final_before(&[], before, 1).unwrap(), vec![ids[1]]);
    assert_eq!(
        state
            .final_before(&[InvocationStatus::Success], Timestamp::from_micros(40), 10)
            .unwrap(),
        vec![ids[1]]
    );
    // an id ending again after its deletion (a new invocation) is its own entry
    state
        .insert_invocation(&record(ids[0]), &registered())
        .unwrap();
    to_success(&mut state, &ids[0], 50);
    assert_eq!(
        state.final_before(&[], before, 10).unwrap(),
        vec![ids[1], ids[3], ids[0]]
    );
}
