//! `ActorError` as the typed error of actor operations: reading a `trellis::Error` as one, and
//! `?` back into a `trellis::Error`.

use trellis::{Cancelled, Error, ErrorGroup};
use trellis_actor::ActorError;
use trellis_wire::Payload;

#[test]
fn a_cancellation_reads_as_cancelled_both_ways() {
    let typed = ActorError::from(Error::from(Cancelled::new()));
    assert!(matches!(typed, ActorError::Cancelled(_)));
    assert!(typed.is_cancelled());
    let back = Error::from(typed);
    assert!(back.is_cancelled());
    // A group made only of cancellations is one (PEP 654).
    let group = ErrorGroup::new(
        "all cancelled",
        vec![Error::cancelled(), Error::cancelled()],
    );
    assert!(ActorError::from(Error::from(group)).is_cancelled());
}

#[test]
fn an_actor_error_reads_as_itself() {
    let typed = ActorError::from(Error::from(ActorError::StreamClosed));
    assert!(matches!(typed, ActorError::StreamClosed));
    let back = Error::from(ActorError::Lagged(3));
    assert!(matches!(back.downcast_ref(), Some(ActorError::Lagged(3))));
}

#[test]
fn a_group_reads_as_remote_and_converts_back_to_the_group() {
    // Remote leaves, as a remote nursery's failure arrives.
    let remote = |text: &str| {
        let actor = trellis_wire::ActorId::new("child", "0123");
        let report = trellis_wire::ErrorReport {
            actor,
            kind: trellis_wire::ErrorKind::Failed,
            type_name: "Boom".into(),
            message: text.into(),
            chain: Vec::new(),
            backtrace: None,
            value: None,
            group: Vec::new(),
        };
        Error::new(trellis_actor::RemoteActorError::from_report(report))
    };
    let group = ErrorGroup::new("two failed", vec![remote("a"), remote("b")]);
    let typed = ActorError::from(Error::from(group));
    assert!(matches!(typed, ActorError::Remote(_)));
    assert_eq!(typed.to_string(), "the remote function failed");
    let back = Error::from(typed);
    assert_eq!(back.as_group().expect("the group").errors().len(), 2);
}

#[test]
fn a_local_group_is_not_a_remote_failure() {
    let group = ErrorGroup::new("local tasks failed", vec![Error::msg("a"), Error::msg("b")]);
    let typed = ActorError::from(Error::from(group));
    assert!(matches!(typed, ActorError::Other(_)), "{typed:?}");
    assert_eq!(Error::from(typed).as_group().unwrap().errors().len(), 2);
}

#[test]
fn a_mixed_group_gives_up_its_cancellations_to_a_scope() {
    use trellis::{CancelSplit, IsCancelled};
    let group = ErrorGroup::new("mixed", vec![Error::cancelled(), Error::msg("real")]);
    match ActorError::from(Error::from(group)).split_cancelled() {
        CancelSplit::Mixed(rest) => {
            let rest = Error::from(rest);
            let leaves: Vec<_> = rest.as_group().unwrap().leaves().collect();
            assert_eq!(leaves.len(), 1);
            assert_eq!(leaves[0].to_string(), "real");
        }
        other => panic!("not mixed: {other:?}"),
    }
}

#[test]
fn a_payload_error_reads_as_payload() {
    let payload = Payload::encode(&"text").unwrap();
    let wrong = payload.decode::<u64>().unwrap_err();
    let typed = ActorError::from(Error::from(wrong));
    assert!(matches!(typed, ActorError::Payload(_)), "{typed:?}");
}

#[test]
fn any_other_error_is_other_and_converts_back_unchanged() {
    let typed = ActorError::from(Error::msg("disk on fire"));
    assert!(matches!(typed, ActorError::Other(_)));
    assert!(!typed.is_cancelled());
    assert_eq!(Error::from(typed).to_string(), "disk on fire");
}
