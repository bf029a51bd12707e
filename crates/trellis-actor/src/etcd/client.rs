//! The requests the registry makes of etcd: leases (grant, keep alive, revoke), keys (put,
//! delete, read a prefix) and watches of a prefix.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::http::{Documents, post};
use super::{Etcd, EtcdError, base64};

/// A key and its value, as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    /// When the key was made: the registry's order.
    pub(crate) created: i64,
}

/// A change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Put(KeyValue),
    Delete(String),
}

/// A client of one etcd cluster.
#[derive(Debug)]
pub(crate) struct Client {
    etcd: Etcd,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
}

impl Client {
    pub(crate) fn new(etcd: Etcd) -> Client {
        Client {
            etcd,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The endpoints, the one that answered last first, with their indexes.
    fn endpoints(&self) -> impl Iterator<Item = (usize, &str)> {
        let n = self.etcd.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        (0..n).map(move |i| {
            let index = (first + i) % n;
            (index, self.etcd.endpoints[index].as_str())
        })
    }

    pub(crate) fn config(&self) -> &Etcd {
        &self.etcd
    }

    /// Posts `body` to `path` at each endpoint in turn (the one that answered last first)
    /// until one answers within the request timeout; etcd's refusal is final.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let mut last = EtcdError::Unreachable("no endpoint configured".into());
        for (index, endpoint) in self.endpoints() {
            let host = host_of(endpoint)?;
            let answered = tokio::time::timeout(self.etcd.timeout, async {
                post(host, path, &body, self.etcd.timeout)
                    .await?
                    .json()
                    .await
            })
            .await;
            match answered {
                Ok(Ok(value)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(refused @ EtcdError::Refused(_))) => return Err(refused),
                Ok(Err(error)) => last = error,
                Err(_) => {
                    last = EtcdError::Unreachable(format!(
                        "{host}: no answer within {:?}",
                        self.etcd.timeout
                    ));
                }
            }
        }
        Err(last)
    }

    /// A new lease of `ttl`; its id.
    pub(crate) async fn grant(&self, ttl: std::time::Duration) -> Result<i64, EtcdError> {
        let reply = self
            .call("/v3/lease/grant", json!({ "TTL": ttl.as_secs().max(1) }))
            .await?;
        int(&reply, "ID").ok_or_else(|| bad("a lease grant without an id"))
    }

    /// Keeps lease `id` alive once; `false` when etcd no longer has it (it expired).
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<bool, EtcdError> {
        let reply = self
            .call("/v3/lease/keepalive", json!({ "ID": id.to_string() }))
            .await?;
        let result = reply.get("result").unwrap_or(&reply);
        Ok(int(result, "TTL").unwrap_or(0) > 0)
    }

    /// Ends lease `id` and every key under it.
    pub(crate) async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self
            .call("/v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
        {
            // Gone already: what was asked.
            Err(EtcdError::Refused(message)) if message.contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sets `key` to `value` under lease `lease`.
    pub(crate) async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let body = json!({
            "key": base64::encode(key.as_bytes()),
            "value": base64::encode(value),
            "lease": lease.to_string(),
        });
        self.call("/v3/kv/put", body).await.map(drop)
    }

    /// Removes `key`.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let body = json!({ "key": base64::encode(key.as_bytes()) });
        self.call("/v3/kv/deleterange", body).await.map(drop)
    }

    /// Every key under `prefix`, oldest first, and the revision they were read at.
    pub(crate) async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let body = json!({
            "key": base64::encode(prefix.as_bytes()),
            "range_end": base64::encode(&prefix_end(prefix)),
        });
        let reply = self.call("/v3/kv/range", body).await?;
        let revision = reply
            .get("header")
            .and_then(|h| int(h, "revision"))
            .ok_or_else(|| bad("a range without a revision"))?;
        let mut kvs = match reply.get("kvs") {
            None => Vec::new(),
            Some(Value::Array(kvs)) => kvs.iter().map(key_value).collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("kvs that are not a list")),
        };
        kvs.sort_by_key(|kv: &KeyValue| kv.created);
        Ok((kvs, revision))
    }

    /// Watches the keys under `prefix` from revision `from` on.
    pub(crate) async fn watch(&self, prefix: &str, from: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": base64::encode(prefix.as_bytes()),
            "range_end": base64::encode(&prefix_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let mut last = EtcdError::Unreachable("no endpoint configured".into());
        for (index, endpoint) in self.endpoints() {
            let host = host_of(endpoint)?;
            let opened = tokio::time::timeout(self.etcd.timeout, async {
                let mut documents = post(host, "/v3/watch", &body, self.etcd.timeout)
                    .await?
                    .documents();
                if documents.status() != 200 {
                    return Err(EtcdError::Refused(format!("watch: {}", documents.status())));
                }
                // The first document says the watch is made.
                match documents.next().await? {
                    Some(first) if first.pointer("/result/created") == Some(&Value::Bool(true)) => {
                        Ok(Watch { documents })
                    }
                    other => Err(bad(&format!("a watch that was not made: {other:?}"))),
                }
            })
            .await;
            match opened {
                Ok(Ok(watch)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(watch);
                }
                Ok(Err(error)) => last = error,
                Err(_) => last = EtcdError::Unreachable(format!("{host}: no watch made")),
            }
        }
        Err(last)
    }
}

/// An open watch.
pub(crate) struct Watch {
    documents: Documents,
}

impl Watch {
    /// The next changes; an error when the watch ended (etcd went away, or cancelled it).
    pub(crate) async fn next(&mut self) -> Result<Vec<Event>, EtcdError> {
        loop {
            let Some(document) = self.documents.next().await? else {
                return Err(EtcdError::Unreachable("the watch ended".into()));
            };
            let result = document.get("result").ok_or_else(|| {
                let message = document
                    .get("error")
                    .map(Value::to_string)
                    .unwrap_or_default();
                EtcdError::Refused(format!("the watch failed: {message}"))
            })?;
            if result.get("canceled") == Some(&Value::Bool(true)) {
                return Err(EtcdError::Refused("etcd cancelled the watch".into()));
            }
            let Some(Value::Array(events)) = result.get("events") else {
                continue;
            };
            return events
                .iter()
                .map(|event| {
                    let kv = key_value(event.get("kv").ok_or_else(|| bad("an event without kv"))?)?;
                    Ok(match event.get("type").and_then(Value::as_str) {
                        Some("DELETE") => Event::Delete(kv.key),
                        _ => Event::Put(kv),
                    })
                })
                .collect();
        }
    }
}

/// `host:port` of an endpoint written `http://host:port` or `host:port`.
fn host_of(endpoint: &str) -> Result<&str, EtcdError> {
    if endpoint.starts_with("https://") {
        return Err(EtcdError::Refused(format!(
            "{endpoint}: TLS to etcd is not supported; use http:// on a trusted network"
        )));
    }
    Ok(endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/'))
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the key space.
    vec![0]
}

fn bad(what: &str) -> EtcdError {
    EtcdError::BadReply(what.to_owned())
}

/// An int64 field, which etcd's JSON writes as a string (or, read leniently, a number).
fn int(value: &Value, field: &str) -> Option<i64> {
    match value.get(field)? {
        Value::String(text) => text.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn key_value(kv: &Value) -> Result<KeyValue, EtcdError> {
    let bytes = |field: &str| match kv.get(field) {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => {
            base64::decode(text).ok_or_else(|| bad(&format!("a {field} that is not base64")))
        }
        Some(_) => Err(bad(&format!("a {field} that is not a string"))),
    };
    let key = String::from_utf8(bytes("key")?).map_err(|_| bad("a key that is not text"))?;
    Ok(KeyValue {
        key,
        value: bytes("value")?,
        created: int(kv, "create_revision").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_past_every_key_that_starts_with_it() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("\u{7f}"), [0x80]);
    }

    #[test]
    fn endpoints_read_with_or_without_a_scheme() {
        assert_eq!(host_of("http://127.0.0.1:2379/").unwrap(), "127.0.0.1:2379");
        assert_eq!(host_of("etcd:2379").unwrap(), "etcd:2379");
        assert!(host_of("https://etcd:2379").is_err());
    }
}
