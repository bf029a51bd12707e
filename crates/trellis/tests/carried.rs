//! `Carried`: a typed error's variant that holds an `Error` converts into that error.

use std::sync::Arc;

use trellis::{Cancelled, Carried, Error, ErrorGroup, IsCancelled};

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("the called function failed")]
    Failed(#[source] Carried),
    #[error("the connection was lost")]
    Lost,
    #[error("{0}")]
    Cancelled(#[from] Cancelled),
}

/// A typed error whose carrier can outlive it.
#[derive(Debug)]
struct SharingError(Arc<Carried>);

impl std::fmt::Display for SharingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shared")
    }
}

impl std::error::Error for SharingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn group() -> Error {
    let mut leaf = Error::msg("disk full");
    leaf.add_note("while writing the log");
    ErrorGroup::new(
        "two writers failed",
        vec![leaf, Error::msg("quota exceeded")],
    )
    .into()
}

fn question_mark(typed: CallError) -> Result<(), Error> {
    Err(typed)?
}

#[test]
fn question_mark_gives_back_the_carried_group() {
    let error = question_mark(CallError::Failed(Carried::new(group()))).unwrap_err();
    let group = error.as_group().expect("the carried group itself");
    assert_eq!(group.message(), "two writers failed");
    assert_eq!(group.errors()[0].notes(), ["while writing the log"]);
    assert!(!error.is::<CallError>());
    // PEP 654 split sees the leaves, as it would without the typed error around them.
    let group = error.into_group().unwrap();
    let (matched, rest) = group.split_by(&mut |e| e.to_string() == "disk full");
    assert_eq!(matched.unwrap().errors().len(), 1);
    assert_eq!(rest.unwrap().errors().len(), 1);
}

#[test]
fn every_conversion_unwraps() {
    let from = Error::from(CallError::Failed(Carried::new(Error::msg("boom"))));
    assert_eq!(from.to_string(), "boom");
    let new = Error::new(CallError::Failed(Carried::new(group())));
    assert!(new.as_group().is_some());
    let boxed: Box<dyn std::error::Error + Send + Sync> =
        Box::new(CallError::Failed(Carried::new(group())));
    assert!(Error::from_boxed(boxed).as_group().is_some());
}

#[test]
fn other_variants_stay_typed() {
    let lost = Error::from(CallError::Lost);
    assert!(matches!(
        lost.downcast_ref::<CallError>(),
        Some(CallError::Lost)
    ));
    let cancelled = Error::from(CallError::Cancelled(Cancelled::new()));
    assert!(cancelled.is_cancelled());
    assert!(cancelled.is::<CallError>());
}

#[test]
fn a_carried_cancellation_is_still_one() {
    let error = Error::from(CallError::Failed(Carried::new(Error::cancelled())));
    assert!(error.is_cancelled());
    assert!(IsCancelled::is_cancelled(&error));
}

#[test]
fn the_typed_error_reads_as_a_wrapper() {
    let typed = CallError::Failed(Carried::new(Error::msg("boom")));
    assert_eq!(typed.to_string(), "the called function failed");
    let source = std::error::Error::source(&typed).unwrap();
    assert_eq!(source.to_string(), "boom");
    let Some(CallError::Failed(carried)) = Some(typed) else {
        unreachable!()
    };
    assert_eq!(carried.get().to_string(), "boom");
    assert_eq!(carried.into_inner().to_string(), "boom");
}

#[test]
fn a_carrier_that_outlives_its_typed_error_shares_the_error() {
    let carrier = Arc::new(Carried::new(group()));
    let kept = Arc::clone(&carrier);
    let error = Error::from(SharingError(carrier));
    // Not moved (the carrier is still alive), but it reads the same.
    assert!(error.as_group().is_none());
    assert!(error.to_string().contains("two writers failed"));
    assert!(kept.get().as_group().is_some());
}

#[test]
fn a_bare_carrier_converts_into_what_it_holds() {
    fn pass_on(carried: Carried) -> Result<(), Error> {
        Err(carried)?
    }
    let error = pass_on(Carried::new(group())).unwrap_err();
    assert!(error.as_group().is_some());
    let cancelled = Error::from(Carried::new(Error::cancelled()));
    assert!(cancelled.is_cancelled());
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Carried::new(group()));
    assert!(Error::from_boxed(boxed).as_group().is_some());
}

#[test]
fn a_shared_cancellation_is_still_one() {
    let carrier = Arc::new(Carried::new(Error::cancelled()));
    let _kept = Arc::clone(&carrier);
    assert!(Error::from(SharingError(carrier)).is_cancelled());
}
