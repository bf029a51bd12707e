//! When a deadline cancels, and durations the clock cannot hold: Trio's rules, ported from
//! `_core/_tests/test_run.py` and `_tests/test_timeouts.py`, on the autojump clock.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use trellis::{
    CancelScope, Cancelled, Error, TooSlow, checkpoint, current_time, fail_after, move_on_after,
    move_on_at, sleep, sleep_forever,
};

const SEC: Duration = Duration::from_secs(1);

/// Trio: test_basic_timeout (first part) — a scope left before its deadline never reports
/// `cancel_called`, however long after its deadline one asks.
async fn exited_before_deadline_is_never_cancelled() {
    let scope = CancelScope::new();
    let s = scope.clone();
    scope
        .run(async move {
            s.set_deadline(Some(Instant::now() + SEC));
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
    assert!(!scope.cancel_called());
    sleep(2 * SEC).await.unwrap();
    for _ in 0..3 {
        checkpoint().await.unwrap();
    }
    assert!(!scope.cancel_called());
    assert!(!scope.cancelled_caught());
}

/// Trio: test_cancel_unbound (last part) — reading `cancel_called` on a scope not entered yet
/// whose deadline passed cancels it, and moving the deadline later does not undo that.
async fn unentered_passed_deadline_cancels_for_good() {
    let scope = CancelScope::with_deadline(Instant::now() + SEC);
    assert!(!scope.cancel_called());
    scope.set_deadline(Some(Instant::now() - SEC));
    assert!(scope.cancel_called());
    scope.set_deadline(Some(Instant::now() + 10 * SEC));
    assert!(scope.cancel_called(), "never un-cancelled");
    let r = scope.run(checkpoint()).await;
    assert_eq!(r, Ok(None));
    assert!(scope.cancelled_caught());
}

/// Trio's deadline rule: a deadline that passes while the scope is active cancels it at that
/// moment, for good — here while the code runs in a shielded scope, so no checkpoint of the
/// outer scope sees it happen. Moving the deadline later afterwards changes nothing: the first
/// unshielded checkpoint fails.
async fn deadline_passing_under_a_shield_cancels_for_good() {
    let outer = CancelScope::with_deadline(Instant::now() + SEC);
    let o = outer.clone();
    let r = outer
        .run(async move {
            CancelScope::shielded()
                .run(sleep(5 * SEC))
                .await?
                .expect("not cancelled");
            assert!(
                o.cancel_called(),
                "the deadline passed while the scope was active"
            );
            o.set_deadline(Some(Instant::now() + 100 * SEC));
            assert!(o.cancel_called(), "a later deadline does not undo it");
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(outer.cancelled_caught());
}

/// The same without anyone reading `cancel_called`: the deadline passed under the shield, the
/// deadline moves later, and still the next checkpoint fails.
async fn moving_a_passed_deadline_later_does_not_undo_it() {
    let outer = CancelScope::with_deadline(Instant::now() + SEC);
    let o = outer.clone();
    let r = outer
        .run(async move {
            CancelScope::shielded().run(sleep(2 * SEC)).await?;
            o.set_deadline(None);
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(outer.cancel_called());
}

/// A scope whose deadline passed while it ran reports `cancel_called` after it was left, even
/// when its code never reached a checkpoint after the deadline.
async fn deadline_passed_before_exit_is_remembered() {
    let scope = CancelScope::with_deadline(Instant::now() + SEC);
    let r = scope
        .run(async {
            CancelScope::shielded().run(sleep(2 * SEC)).await?;
            Ok::<_, Cancelled>(())
        })
        .await;
    assert_eq!(r, Ok(Some(())));
    assert!(scope.cancel_called());
    assert!(!scope.cancelled_caught());
}

/// `Duration::MAX` means "never" everywhere a duration is taken (tokio's `sleep` saturates
/// the same way); no `Instant` overflow panic.
async fn huge_durations_mean_never() {
    let t0 = Instant::now();
    let r = move_on_after(SEC, sleep(Duration::MAX)).await;
    assert_eq!(r, Ok(None));
    assert_eq!(t0.elapsed(), SEC);

    let r = move_on_after(Duration::MAX, sleep(5 * SEC)).await;
    assert_eq!(r, Ok(Some(())));
    let r = fail_after(Duration::MAX, async { Ok::<_, Error>(7) }).await;
    assert_eq!(r.unwrap(), 7);

    let scope = CancelScope::with_timeout(Duration::MAX);
    let s = scope.clone();
    scope
        .run(async move {
            assert_eq!(s.deadline(), None);
            s.set_relative_timeout(Duration::MAX);
            assert_eq!(s.deadline(), None);
            checkpoint().await
        })
        .await
        .unwrap();
    assert!(!scope.cancel_called());
    // Large but representable: a deadline centuries away, nothing fires.
    let r = move_on_after(Duration::from_secs(u64::MAX / 4), sleep(SEC)).await;
    assert_eq!(r, Ok(Some(())));
}

/// Trio: test_context_shields_from_outer[move_on_after] and [fail_after] — a shielded timeout
/// keeps an outer cancellation out until the shield is lifted.
async fn context_shields_from_outer() {
    for fail in [false, true] {
        let outer = CancelScope::new();
        let o = outer.clone();
        let r = outer
            .run(async move {
                let body = |inner: std::sync::Arc<std::sync::Mutex<Option<CancelScope>>>| {
                    async move {
                        o.cancel();
                        checkpoint().await?; // shielded: fine
                        let scope = inner.lock().unwrap().clone().unwrap();
                        scope.set_shield(false);
                        checkpoint().await?; // now the outer cancellation gets in
                        unreachable!("cancelled");
                        #[allow(unreachable_code)]
                        Ok::<_, Error>(())
                    }
                };
                let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
                if fail {
                    let t = fail_after(SEC, body(slot.clone())).shield(true);
                    *slot.lock().unwrap() = Some(t.scope());
                    t.await
                } else {
                    let t = move_on_after(SEC, body(slot.clone())).shield(true);
                    *slot.lock().unwrap() = Some(t.scope());
                    t.await.map(|_| ())
                }
            })
            .await;
        assert!(matches!(r, Ok(None)), "{r:?}");
    }
}

/// Trio: test_move_on_after_moves_on_even_if_shielded — the shield keeps the outer cancel
/// out, not the timeout's own deadline.
async fn move_on_after_moves_on_even_if_shielded() {
    let outer = CancelScope::new();
    outer.cancel();
    let t0 = Instant::now();
    let r = outer
        .run(async {
            let inner = move_on_after(SEC, sleep_forever()).shield(true).await?;
            assert_eq!(inner, None);
            Ok::<_, Cancelled>(())
        })
        .await;
    assert_eq!(r, Ok(Some(())));
    assert_eq!(t0.elapsed(), SEC);
}

/// Trio: test_fail_after_fails_even_if_shielded
async fn fail_after_fails_even_if_shielded() {
    let outer = CancelScope::new();
    outer.cancel();
    let t0 = Instant::now();
    let r = outer
        .run(async {
            let e = fail_after(SEC, async { Ok::<_, Error>(sleep_forever().await?) })
                .shield(true)
                .await
                .unwrap_err();
            assert!(e.is::<TooSlow>());
            Ok::<_, Error>(())
        })
        .await;
    assert!(matches!(r, Ok(Some(()))));
    assert_eq!(t0.elapsed(), SEC);
}

/// Trio: test_cancel_scope_validation (relative part) — a plain scope can be given a relative
/// timeout before it is entered, and it reads back; setting an absolute deadline replaces it.
async fn relative_timeout_before_entry() {
    let scope = CancelScope::new();
    assert_eq!(scope.relative_timeout(), None);
    scope.set_relative_timeout(5 * SEC);
    assert_eq!(scope.relative_timeout(), Some(5 * SEC));
    assert_eq!(scope.deadline(), None);
    sleep(10 * SEC).await.unwrap();
    let t0 = Instant::now();
    let r = scope.run(async { sleep_forever().await.map(|_| ()) }).await;
    assert_eq!(r, Ok(None));
    assert_eq!(t0.elapsed(), 5 * SEC);
    let scope = CancelScope::with_timeout(5 * SEC);
    let at = Instant::now() + SEC;
    scope.set_deadline(Some(at));
    assert_eq!(scope.relative_timeout(), None);
    assert_eq!(scope.deadline(), Some(at));
    // A timeout's scope handle: `move_on_at` is absolute, made now.
    let t = move_on_at(at, checkpoint());
    assert_eq!(t.scope().deadline(), Some(at));
}

/// A timeout's scope handle taken after it finished tells how it ended (Trio's
/// `with move_on_after(..) as cs:` then `cs.cancelled_caught`).
async fn timeout_scope_after_it_finished() {
    let mut t = Box::pin(move_on_after(SEC, async {
        sleep_forever().await.map(|_| ())
    }));
    assert_eq!(t.as_mut().await, Ok(None));
    let scope = t.scope();
    assert!(scope.cancel_called());
    assert!(scope.cancelled_caught());
    let mut t = Box::pin(fail_after(SEC, async { Ok::<_, Error>(()) }));
    t.as_mut().await.unwrap();
    assert!(!t.scope().cancel_called());
}

/// Trio: test_current_time_with_mock_clock — the trellis clock is the test clock.
async fn current_time_with_mock_clock() {
    let t0 = current_time();
    assert_eq!(t0, Instant::now());
    sleep(Duration::from_millis(3150)).await.unwrap();
    assert_eq!(current_time() - t0, Duration::from_millis(3150));
}

autojump!(
    exited_before_deadline_is_never_cancelled,
    unentered_passed_deadline_cancels_for_good,
    deadline_passing_under_a_shield_cancels_for_good,
    moving_a_passed_deadline_later_does_not_undo_it,
    deadline_passed_before_exit_is_remembered,
    huge_durations_mean_never,
    context_shields_from_outer,
    move_on_after_moves_on_even_if_shielded,
    fail_after_fails_even_if_shielded,
    relative_timeout_before_entry,
    current_time_with_mock_clock,
    timeout_scope_after_it_finished,
);
