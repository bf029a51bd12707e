//! A tree-wide task dump: every registered actor's `trellis.dump`, drawn as one tree — what
//! `trellis dump` prints, and what a root prints on its standard error at each SIGUSR1 (as
//! tractor does).

use std::time::Duration;

use super::handle::Actor;
use crate::ActorDump;

/// How long one actor may take to answer.
const ANSWER: Duration = Duration::from_secs(2);

/// Every registered actor's dump (this actor's taken here), and a line for each actor that
/// did not answer in time; taken twice when the first round looks stalled, to say so only
/// when the second agrees ([`crate::stall_checked`]).
pub(crate) async fn tree_dump(actor: &Actor) -> String {
    let answered = |(dumps, silent): &Round| silent.is_empty().then(|| dumps.clone());
    let ((dumps, silent), verdict) = match crate::stall_checked(|| one_round(actor), answered).await
    {
        Ok(checked) => checked,
        Err(NoDump(why)) => return why,
    };
    let mut out = crate::dump::draw(&dumps);
    for line in silent {
        out.push_str(&line);
        out.push('\n');
    }
    if verdict {
        out.push_str(crate::STALLED);
        out.push('\n');
    }
    out
}

/// The dumps of the actors that answered, and a line for each that did not.
type Round = (Vec<ActorDump>, Vec<String>);

/// Why there is no tree dump at all, as printed.
struct NoDump(String);

impl From<trellis::Cancelled> for NoDump {
    fn from(cancelled: trellis::Cancelled) -> Self {
        NoDump(format!("no tree dump: {cancelled}"))
    }
}

/// One round, or why there is no dump at all.
async fn one_round(actor: &Actor) -> Result<Round, NoDump> {
    let registered = trellis::move_on_after(ANSWER, actor.registered()).await;
    let registered = match registered {
        Ok(Some(list)) => list,
        Ok(None) => {
            return Err(NoDump(format!(
                "no tree dump: the registry did not answer within {ANSWER:?}"
            )));
        }
        Err(e) => return Err(NoDump(format!("no tree dump: {e}"))),
    };
    let mut dumps: Vec<ActorDump> = Vec::new();
    let mut silent = Vec::new();
    let own = actor.id().clone();
    if !registered.iter().any(|r| r.id == own) {
        dumps.push(actor.dump());
    }
    for entry in registered {
        if entry.id == own {
            dumps.push(actor.dump());
            continue;
        }
        let asked = trellis::move_on_after(ANSWER, async {
            let portal = actor.portal(&entry.addr).await?;
            portal.dump().await
        })
        .await;
        match asked {
            Ok(Some(dump)) => dumps.push(dump),
            Ok(None) => silent.push(format!("actor {}: no answer within {ANSWER:?}", entry.id)),
            Err(e) if e.is_cancelled() => return Err(NoDump(format!("no tree dump: {e}"))),
            Err(e) => silent.push(format!("actor {}: {e}", entry.id)),
        }
    }
    Ok((dumps, silent))
}

/// Prints the tree's dump on standard error at each SIGUSR1, until cancelled.
pub(crate) async fn on_sigusr1(actor: Actor) -> Result<(), trellis::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    // Without a signal driver there is nothing to listen to.
    let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
        return Ok(());
    };
    loop {
        if trellis::cancellable(signals.recv()).await?.is_none() {
            return Ok(());
        }
        let text = tree_dump(&actor).await;
        eprintln!("--- task dump (SIGUSR1) ---\n{text}--- end of task dump ---");
    }
}
