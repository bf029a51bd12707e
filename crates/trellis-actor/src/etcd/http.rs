//! Just enough HTTP/1.1 to talk to etcd's JSON gateway: one request per connection, a reply
//! read within bounds (its head, its body, each chunk), and a reply that streams (a watch) as
//! the JSON documents it carries. What etcd sends is read as untrusted bytes.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EtcdError;

/// The largest reply head (status line and headers) read.
const MAX_HEAD: usize = 16 * 1024;
/// The largest reply body, or JSON document of a stream, read.
pub(super) const MAX_BODY: usize = 4 * 1024 * 1024;

/// A reply whose body is still being read.
pub struct Reply {
    stream: Box<dyn AsyncRead + Unpin + Send>,
    /// Bytes read past the head, not yet taken.
    buf: Vec<u8>,
    body: Body,
    status: u16,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .finish()
    }
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("status", &self.reply.status)
            .field("pending", &self.pending.len())
            .finish()
    }
}

enum Body {
    Length(usize),
    Chunked { left_in_chunk: usize, done: bool },
    UntilClose,
}

/// Sends `POST path` with a JSON `body` to `host` (`name:port`) and reads the reply's head.
/// The connection fails once etcd has been unreachable for about `2 × keepalive`, also while
/// a watch waits for events.
pub(super) async fn post(
    host: &str,
    path: &str,
    body: &Value,
    keepalive: std::time::Duration,
) -> Result<Reply, EtcdError> {
    let unreachable = |e: std::io::Error| EtcdError::Unreachable(format!("{host}: {e}"));
    let mut stream = TcpStream::connect(host).await.map_err(unreachable)?;
    let _ = stream.set_nodelay(true);
    crate::transport::keep_alive(&stream, keepalive).map_err(unreachable)?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unreachable)?;
    Reply::read(Box::new(stream)).await
}

impl Reply {
    /// Reads a reply's head from `stream`; its body is read on demand.
    pub async fn read(mut stream: Box<dyn AsyncRead + Unpin + Send>) -> Result<Reply, EtcdError> {
        let mut buf = Vec::new();
        let head_end = loop {
            let found = find(&buf, b"\r\n\r\n");
            if found.unwrap_or(buf.len()) > MAX_HEAD {
                return Err(EtcdError::BadReply(format!(
                    "a reply head over {MAX_HEAD} bytes"
                )));
            }
            if let Some(end) = found {
                break end;
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Err(EtcdError::BadReply(
                    "the reply ended before its head".into(),
                ));
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| EtcdError::BadReply("a reply head that is not text".into()))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| {
                line.strip_prefix("HTTP/1.1 ")
                    .or(line.strip_prefix("HTTP/1.0 "))
            })
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| EtcdError::BadReply("no HTTP status line".into()))?;
        let mut body = Body::UntilClose;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(EtcdError::BadReply(format!("a bad header line {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let length = value
                    .parse::<usize>()
                    .map_err(|_| EtcdError::BadReply(format!("a bad length {value:?}")))?;
                body = Body::Length(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                body = Body::Chunked {
                    left_in_chunk: 0,
                    done: false,
                };
            }
        }
        if let Body::Length(length) = body
            && length > MAX_BODY
        {
            return Err(EtcdError::BadReply(format!("a body of {length} bytes")));
        }
        buf.drain(..head_end + 4);
        Ok(Reply {
            stream,
            buf,
            body,
            status,
        })
    }

    /// The whole body as one JSON document; a status other than 200 is an error carrying
    /// etcd's message.
    pub async fn json(mut self) -> Result<Value, EtcdError> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_bytes().await? {
            body.extend_from_slice(&piece);
            if body.len() > MAX_BODY {
                return Err(EtcdError::BadReply(format!("a body over {MAX_BODY} bytes")));
            }
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| EtcdError::BadReply(format!("a body that is not JSON: {e}")))?;
        if self.status != 200 {
            let message = value
                .get("message")
                .or_else(|| value.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            let message = format!("{}: {message}", self.status);
            // A member without a leader, overloaded or timing out: another may answer.
            return Err(if self.status >= 500 {
                EtcdError::Unreachable(message)
            } else {
                EtcdError::Refused(message)
            });
        }
        Ok(value)
    }

    /// The JSON documents of a streamed body, one at a time (`None` once it ends).
    pub fn documents(self) -> Documents {
        Documents {
            reply: self,
            pending: Vec::new(),
        }
    }

    /// The next piece of the body, `None` at its end.
    async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, EtcdError> {
        loop {
            match &mut self.body {
                Body::Length(0) | Body::Chunked { done: true, .. } => return Ok(None),
                Body::Length(left) => {
                    if self.buf.is_empty() && read_more(&mut self.stream, &mut self.buf).await? == 0
                    {
                        return Err(EtcdError::BadReply("the body ended early".into()));
                    }
                    let take = self.buf.len().min(*left);
                    *left -= take;
                    return Ok(Some(self.buf.drain(..take).collect()));
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && read_more(&mut self.stream, &mut self.buf).await? == 0
                    {
                        return Ok(None);
                    }
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Body::Chunked {
                    left_in_chunk: left @ 1..,
                    ..
                } => {
                    if self.buf.is_empty() && read_more(&mut self.stream, &mut self.buf).await? == 0
                    {
                        return Err(EtcdError::BadReply("a chunk ended early".into()));
                    }
                    let take = self.buf.len().min(*left);
                    *left -= take;
                    // The chunk's CRLF is read with the next size line.
                    return Ok(Some(self.buf.drain(..take).collect()));
                }
                Body::Chunked { .. } => {
                    // A size line, after the previous chunk's CRLF (if any).
                    let line_end = loop {
                        let start = usize::from(self.buf.starts_with(b"\r\n")) * 2;
                        if let Some(end) = find(&self.buf[start..], b"\r\n") {
                            break (start, start + end);
                        }
                        if self.buf.len() > 128 {
                            return Err(EtcdError::BadReply("a chunk size line too long".into()));
                        }
                        if read_more(&mut self.stream, &mut self.buf).await? == 0 {
                            return Err(EtcdError::BadReply("the chunks ended early".into()));
                        }
                    };
                    let line = std::str::from_utf8(&self.buf[line_end.0..line_end.1])
                        .ok()
                        .map(|l| l.split(';').next().unwrap_or("").trim().to_owned())
                        .unwrap_or_default();
                    let size = usize::from_str_radix(&line, 16)
                        .map_err(|_| EtcdError::BadReply(format!("a bad chunk size {line:?}")))?;
                    if size > MAX_BODY {
                        return Err(EtcdError::BadReply(format!("a chunk of {size} bytes")));
                    }
                    self.buf.drain(..line_end.1 + 2);
                    self.body = Body::Chunked {
                        left_in_chunk: size,
                        done: size == 0,
                    };
                }
            }
        }
    }
}

/// The JSON documents of a streamed reply (etcd's watch: one document per event batch).
pub struct Documents {
    reply: Reply,
    pending: Vec<u8>,
}

impl Documents {
    /// The next document; `None` when the stream ended between documents.
    pub async fn next(&mut self) -> Result<Option<Value>, EtcdError> {
        // Whether `pending` may hold a whole document: parsing again is worth it only when
        // a closing bracket arrived (a document is an object), not after every read.
        let mut may_hold_one = true;
        loop {
            let start = self
                .pending
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.pending.len());
            self.pending.drain(..start);
            if may_hold_one && !self.pending.is_empty() {
                let mut values =
                    serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.pending.drain(..used);
                        return Ok(Some(value));
                    }
                    Some(Err(e)) if !e.is_eof() => {
                        return Err(EtcdError::BadReply(format!(
                            "a stream that is not JSON: {e}"
                        )));
                    }
                    _ => {}
                }
            }
            if self.pending.len() > MAX_BODY {
                return Err(EtcdError::BadReply(format!(
                    "a document over {MAX_BODY} bytes"
                )));
            }
            match self.reply.next_bytes().await? {
                Some(piece) => {
                    may_hold_one = piece.iter().any(|&b| b == b'}' || b == b']');
                    self.pending.extend_from_slice(&piece);
                }
                None if self.pending.is_empty() => return Ok(None),
                None => return Err(EtcdError::BadReply("the stream ended mid-document".into())),
            }
        }
    }

    /// The reply's HTTP status.
    pub fn status(&self) -> u16 {
        self.reply.status
    }
}

async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<usize, EtcdError> {
    buf.reserve(8192);
    stream
        .read_buf(buf)
        .await
        .map_err(|e| EtcdError::Unreachable(e.to_string()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// Hands its bytes over a few at a time, as a slow network does.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let piece: Vec<u8> = self.0.drain(..n).collect();
            buf.put_slice(&piece);
            Poll::Ready(Ok(()))
        }
    }

    async fn reply(bytes: &[u8], step: usize) -> Result<Reply, EtcdError> {
        Reply::read(Box::new(Trickle(bytes.to_vec(), step))).await
    }

    #[tokio::test]
    async fn sized_chunked_and_closing_bodies_read_whole_at_any_pace() {
        let bodies: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"a\": \"b\"}\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n6;x=y\r\n: \"b\"}\r\n0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n{\"a\":\"b\"}",
        ];
        for body in bodies {
            for step in [1, 2, 7, 4096] {
                let value = reply(body, step).await.unwrap().json().await.unwrap();
                assert_eq!(value, serde_json::json!({"a": "b"}), "{step}");
            }
        }
    }

    #[tokio::test]
    async fn a_stream_yields_each_document_across_chunk_boundaries() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            7\r\n{\"n\":1}\r\n5\r\n\n{\"n\"\r\n3\r\n:2}\r\n0\r\n\r\n";
        for step in [1, 3, 4096] {
            let mut documents = reply(body, step).await.unwrap().documents();
            assert_eq!(
                documents.next().await.unwrap(),
                Some(serde_json::json!({"n": 1}))
            );
            assert_eq!(
                documents.next().await.unwrap(),
                Some(serde_json::json!({"n": 2}))
            );
            assert_eq!(documents.next().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn bad_replies_are_errors_not_allocations() {
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let heads: [&[u8]; 4] = [
            b"",
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            long_head.as_bytes(),
        ];
        for head in heads {
            assert!(reply(head, 4096).await.is_err());
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(reply(huge.as_bytes(), 4096).await.is_err());
        let bodies: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{]}",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n{\"message\":\"missing\"}\n",
        ];
        for body in bodies {
            let outcome = reply(body, 4096).await.unwrap().json().await;
            assert!(outcome.is_err(), "{body:?}: {outcome:?}");
        }
    }
}
