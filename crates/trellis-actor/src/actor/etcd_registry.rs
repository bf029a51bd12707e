//! The registry kept in etcd (feature `etcd`, [`Config::etcd`](crate::Config::etcd)) instead
//! of by a registrar actor: each actor puts its entry under a lease it keeps alive, so a
//! killed actor's entry goes when the lease expires (or at once, when its parent removes it);
//! lookups read the keys, and waits watch them. Without the feature the type has no value and
//! every actor uses its registrar.

#[cfg(feature = "etcd")]
pub(crate) use with_etcd::EtcdRegistry;

#[cfg(not(feature = "etcd"))]
pub(crate) use without_etcd::EtcdRegistry;

#[cfg(not(feature = "etcd"))]
mod without_etcd {
    use trellis_wire::ActorId;

    use super::super::registry::Entry;
    use crate::actor_error::ActorError;

    /// Never made: the crate was built without etcd.
    pub(crate) enum EtcdRegistry {}

    impl EtcdRegistry {
        pub(crate) async fn register(&self, _: Entry) -> Result<(), ActorError> {
            match *self {}
        }
        pub(crate) async fn keep(self: std::sync::Arc<Self>) -> Result<(), trellis::Error> {
            match *self {}
        }
        pub(crate) async fn unregister(&self) {
            match *self {}
        }
        pub(crate) async fn list(&self) -> Result<Vec<Entry>, ActorError> {
            match *self {}
        }
        pub(crate) async fn find(&self, _: &str) -> Result<Option<Entry>, ActorError> {
            match *self {}
        }
        pub(crate) async fn wait_for(&self, _: &str) -> Result<Entry, ActorError> {
            match *self {}
        }
        pub(crate) async fn remove(&self, _: &ActorId) {
            match *self {}
        }
    }
}

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use trellis::CancelScope;
    use trellis_wire::ActorId;

    use super::super::registry::Entry;
    use crate::actor_error::ActorError;
    use crate::etcd::{Client, Etcd, EtcdError, Event, KeyValue};

    /// This actor's view of the registry in etcd: the client, and its own entry's lease.
    pub(crate) struct EtcdRegistry {
        client: Client,
        /// This actor's entry and its lease, once registered.
        own: Mutex<Option<(Entry, i64)>>,
    }

    fn unavailable(error: EtcdError) -> ActorError {
        ActorError::Registry {
            reason: error.to_string(),
        }
    }

    impl EtcdRegistry {
        pub(crate) fn new(etcd: Etcd) -> EtcdRegistry {
            EtcdRegistry {
                client: Client::new(etcd),
                own: Mutex::new(None),
            }
        }

        fn prefix(&self) -> String {
            format!("{}/actors/", self.client.config().prefix)
        }

        fn key(&self, name: &str, uid: &str) -> String {
            format!("{}{name}/{uid}", self.prefix())
        }

        /// Runs an etcd request as a checkpoint: cancellable, its failure typed.
        async fn run<T>(
            &self,
            request: impl Future<Output = Result<T, EtcdError>>,
        ) -> Result<T, ActorError> {
            trellis::cancellable(request).await?.map_err(unavailable)
        }

        /// Puts `entry` under a new lease.
        async fn put(&self, entry: &Entry) -> Result<i64, ActorError> {
            let lease = self
                .run(self.client.grant(self.client.config().lease))
                .await?;
            let value = serde_json::to_vec(entry).map_err(|e| ActorError::Registry {
                reason: e.to_string(),
            })?;
            self.run(
                self.client
                    .put(&self.key(&entry.name, &entry.uid), &value, lease),
            )
            .await?;
            Ok(lease)
        }

        /// Registers this actor: its entry, under a lease of its own.
        pub(crate) async fn register(&self, entry: Entry) -> Result<(), ActorError> {
            let lease = self.put(&entry).await?;
            *self.own.lock().unwrap_or_else(|e| e.into_inner()) = Some((entry, lease));
            Ok(())
        }

        /// Keeps this actor's lease alive while it runs (a task of the actor's): every third
        /// of the lease time; when etcd is away it says so once and keeps trying; when the
        /// lease expired meanwhile, the entry is put again under a new one.
        pub(crate) async fn keep(self: Arc<Self>) -> Result<(), trellis::Error> {
            let every = self.client.config().lease / 3;
            let mut failing = false;
            loop {
                trellis::sleep(every).await?;
                let Some((entry, lease)) =
                    self.own.lock().unwrap_or_else(|e| e.into_inner()).clone()
                else {
                    return Ok(());
                };
                let kept = match self.run(self.client.keep_alive(lease)).await {
                    Ok(true) => Ok(()),
                    Ok(false) => match self.put(&entry).await {
                        Ok(lease) => {
                            tracing::info!(actor = %entry.name, "registered in etcd again");
                            *self.own.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some((entry, lease));
                            Ok(())
                        }
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                };
                match kept {
                    Ok(()) => failing = false,
                    Err(ActorError::Cancelled(cancelled)) => return Err(cancelled.into()),
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "cannot keep this actor's entry in etcd; retrying");
                    }
                    Err(_) => {}
                }
            }
        }

        /// Removes this actor's entry (its lease), best effort and briefly, also when the
        /// actor is ending because it was cancelled.
        pub(crate) async fn unregister(&self) {
            let own = self.own.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((_, lease)) = own {
                self.briefly(self.client.revoke(lease)).await;
            }
        }

        /// Removes the entry of actor `id` (a parent's dead or killed child), best effort and
        /// briefly, whatever the caller's cancellation.
        pub(crate) async fn remove(&self, id: &ActorId) {
            let key = self.key(&id.name, &id.uid);
            self.briefly(self.client.delete(&key)).await;
        }

        /// Runs a clean-up request shielded from cancellation, for at most 500 ms.
        async fn briefly(&self, request: impl Future<Output = Result<(), EtcdError>>) {
            let _ = CancelScope::shielded()
                .run(trellis::move_on_after(
                    Duration::from_millis(500),
                    trellis::cancellable(request),
                ))
                .await;
        }

        /// Every registered actor, oldest first.
        pub(crate) async fn list(&self) -> Result<Vec<Entry>, ActorError> {
            let (kvs, _) = self.run(self.client.range(&self.prefix())).await?;
            Ok(kvs.iter().filter_map(entry_of).collect())
        }

        /// The oldest actor registered as `name`, and the revision read at.
        async fn first(&self, name: &str) -> Result<(Option<Entry>, i64), ActorError> {
            let prefix = format!("{}{name}/", self.prefix());
            let (kvs, revision) = self.run(self.client.range(&prefix)).await?;
            let first = kvs.iter().filter_map(entry_of).find(|e| e.name == name);
            Ok((first, revision))
        }

        pub(crate) async fn find(&self, name: &str) -> Result<Option<Entry>, ActorError> {
            Ok(self.first(name).await?.0)
        }

        /// The oldest actor registered as `name`, once there is one: read, then watched from
        /// the revision read at (nothing registered in between is missed).
        pub(crate) async fn wait_for(&self, name: &str) -> Result<Entry, ActorError> {
            let (first, revision) = self.first(name).await?;
            if let Some(entry) = first {
                return Ok(entry);
            }
            let prefix = format!("{}{name}/", self.prefix());
            let mut watch = self.run(self.client.watch(&prefix, revision + 1)).await?;
            loop {
                // A watch waits as long as it must: no request timeout on its events.
                let events = trellis::cancellable(watch.next())
                    .await?
                    .map_err(unavailable)?;
                let found = events.iter().find_map(|event| match event {
                    Event::Put(kv) => entry_of(kv).filter(|e| e.name == name),
                    Event::Delete(_) => None,
                });
                if let Some(entry) = found {
                    return Ok(entry);
                }
            }
        }
    }

    fn entry_of(kv: &KeyValue) -> Option<Entry> {
        let entry = serde_json::from_slice::<Entry>(&kv.value);
        if entry.is_err() {
            tracing::warn!(key = %kv.key, "an entry in etcd that is not an actor's: ignored");
        }
        entry.ok()
    }
}
