//! Bridges to tokio-util's `CancellationToken`: a token cancels a scope, a scope cancels a
//! token. Both ways the cancelled side runs its cleanup and nothing is left running.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use trellis::testing::wait_all_tasks_blocked;
use trellis::token::{cancel_on_token, with_token};
use trellis::{CancelScope, Error, open_nursery};

/// A token cancelled from another task cancels the scope: the body sees `Cancelled` at its
/// checkpoint, its cleanup runs, and the call returns `None`.
async fn a_cancelled_token_cancels_the_scope() {
    let token = CancellationToken::new();
    let cleaned = Arc::new(AtomicBool::new(false));
    let (t, c) = (token.clone(), cleaned.clone());
    let got = open_nursery(|n| async move {
        n.start_soon(async move {
            wait_all_tasks_blocked().await?;
            t.cancel();
            Ok::<_, Error>(())
        })?;
        cancel_on_token(token, async move {
            let outcome = trellis::sleep_forever().await;
            c.store(true, Ordering::SeqCst);
            let Err(cancelled) = outcome;
            let reason = cancelled.reason().map(str::to_owned);
            assert_eq!(reason.as_deref(), Some("cancellation token"));
            Err::<(), _>(Error::from(cancelled))
        })
        .await
    })
    .await
    .unwrap();
    assert_eq!(got, Some(None));
    assert!(cleaned.load(Ordering::SeqCst));
}

/// A token never cancelled changes nothing: the body's value comes back.
async fn an_untouched_token_lets_the_body_finish() {
    let got = cancel_on_token(CancellationToken::new(), async {
        trellis::checkpoint().await?;
        Ok::<_, Error>(7)
    })
    .await
    .unwrap();
    assert_eq!(got, Some(7));
}

/// An outer cancellation is not caught by the token's scope: it travels on.
async fn an_outer_cancellation_passes_through() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let got = outer
        .run(async move {
            o.cancel();
            cancel_on_token(CancellationToken::new(), async {
                trellis::sleep_forever().await?;
                Ok::<_, Error>(())
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(got, None, "the outer scope caught its own cancellation");
    assert!(outer.cancelled_caught());
}

/// The scope around cancelled (here by its deadline, passed already) cancels the token handed
/// to the body, which finishes on its own terms; its output comes back.
async fn a_cancelled_scope_cancels_the_token() {
    let got = trellis::move_on_at(trellis::current_time(), async {
        Ok::<_, Error>(
            with_token(|token| async move {
                token.cancelled().await;
                "the library saw its token cancelled"
            })
            .await,
        )
    })
    .await
    .unwrap();
    assert_eq!(got, Some("the library saw its token cancelled"));
}

/// A nursery whose other task fails cancels the token of a library call in its sibling.
async fn a_failing_sibling_cancels_the_token() {
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    let err = open_nursery(|n| async move {
        n.start_soon(async move {
            with_token(|token| async move {
                token.cancelled().await;
                s.store(true, Ordering::SeqCst);
            })
            .await;
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        Err::<(), _>(Error::msg("boom"))
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(seen.load(Ordering::SeqCst));
}

/// The token is cancelled when the body finishes: what the library left watching it stops.
async fn the_token_is_cancelled_when_the_body_ends() {
    let kept = with_token(|token| async move { token }).await;
    assert!(kept.is_cancelled());
}

both_flavors!(
    a_cancelled_token_cancels_the_scope,
    an_untouched_token_lets_the_body_finish,
    an_outer_cancellation_passes_through,
    a_cancelled_scope_cancels_the_token,
    a_failing_sibling_cancels_the_token,
    the_token_is_cancelled_when_the_body_ends,
);
