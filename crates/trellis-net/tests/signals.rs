//! Signals as values, ported from Trio's `test_signals.py`.

use nix::sys::signal::{Signal, raise};
use trellis_net::open_signal_receiver;

/// Trio: test_open_signal_receiver — signals raised arrive, in order, as values.
#[test]
fn signals_arrive_as_values() {
    trellis::testing::run_test(async {
        let mut rx = open_signal_receiver(&[Signal::SIGUSR1, Signal::SIGUSR2]).unwrap();
        raise(Signal::SIGUSR1).unwrap();
        assert_eq!(rx.recv().await.unwrap(), Signal::SIGUSR1);
        raise(Signal::SIGUSR2).unwrap();
        assert_eq!(rx.recv().await.unwrap(), Signal::SIGUSR2);
        // A receive waits for a signal, and is cancellable while it waits.
        let waited = trellis::move_on_after(std::time::Duration::from_millis(10), rx.recv()).await;
        assert!(matches!(waited, Ok(None)));
    });
}

/// Trio: test_open_signal_receiver_no_handler / bad signals — SIGKILL cannot be received.
#[test]
fn uncatchable_signals_are_refused() {
    trellis::testing::run_test(async {
        assert!(open_signal_receiver(&[Signal::SIGKILL]).is_err());
    });
}
