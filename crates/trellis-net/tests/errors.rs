//! The typed errors at this crate's boundary: each operation's own enum, matched without a
//! downcast, with a `Cancelled` variant that stays a cancellation through `?` into
//! `trellis::Error` (so nurseries and scopes treat it as one), and a `TooSlow` variant so
//! that `fail_after` composes.

use std::time::Duration;

use trellis::{CancelScope, IsCancelled};
use trellis_net::{ConnectError, IoError, ProcessError, RunOptions, UdpSocket, open_tcp_stream};

/// Each typed error, from an operation in a cancelled scope, is its `Cancelled` variant; the
/// scope catches it; and converted into `trellis::Error` it is still a cancellation.
#[test]
fn cancellation_is_a_variant_and_stays_one() {
    trellis::testing::run_test(async {
        let scope = CancelScope::new();
        scope.cancel();
        let caught = scope
            .run(async {
                let err = UdpSocket::bind("127.0.0.1:0").await.unwrap_err();
                assert!(matches!(err, IoError::Cancelled(_)), "{err:?}");
                assert!(err.is_cancelled());
                let dynamic: trellis::Error = err.into();
                assert!(dynamic.is_cancelled());

                let err = open_tcp_stream("127.0.0.1", 9).await.unwrap_err();
                assert!(matches!(err, ConnectError::Cancelled(_)), "{err:?}");
                assert!(trellis::Error::from(err).is_cancelled());

                let err = trellis_net::run_process(
                    tokio::process::Command::new("true"),
                    RunOptions::default(),
                )
                .await
                .unwrap_err();
                assert!(matches!(err, ProcessError::Cancelled(_)), "{err:?}");
                assert!(trellis::Error::from(err).is_cancelled());

                // Returned as is, the typed cancellation is caught by the scope.
                UdpSocket::bind("127.0.0.1:0").await?;
                Ok::<_, IoError>(())
            })
            .await;
        assert!(matches!(caught, Ok(None)), "{caught:?}");
    });
}

/// A nursery whose task fails with a typed cancellation is cancelled, not failed.
#[test]
fn a_typed_cancellation_in_a_nursery_is_not_a_failure() {
    trellis::testing::run_test(async {
        let outcome = trellis::open_nursery(|n| async move {
            n.start_soon(async {
                let socket = UdpSocket::bind("127.0.0.1:0").await?;
                let mut buf = [0u8; 16];
                socket.recv_from(&mut buf).await?;
                Ok::<_, IoError>(())
            })?;
            trellis::testing::wait_all_tasks_blocked().await?;
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await;
        assert!(matches!(outcome, Ok(Some(()))), "{outcome:?}");
    });
}

/// `fail_after` around a typed operation fails with its `TooSlow` variant.
#[test]
fn fail_after_gives_the_too_slow_variant() {
    trellis::testing::run_test(async {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 16];
        let err = trellis::fail_after(Duration::from_secs(1), socket.recv_from(&mut buf))
            .await
            .unwrap_err();
        assert!(matches!(err, IoError::TooSlow(_)), "{err:?}");
        assert!(!err.is_cancelled());
    });
}
