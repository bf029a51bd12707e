//! Any bytes as etcd's reply to the registry's client: a head, then a body read whole (as
//! JSON) or as a stream of JSON documents (a watch), plain, sized or chunked. Errors, never a
//! panic, and no allocation beyond the client's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_actor::etcd::http::Reply;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let stream = Box::new(std::io::Cursor::new(bytes.to_vec()));
    RUNTIME.with(|runtime| {
        runtime.block_on(async move {
            let Ok(reply) = Reply::read(stream).await else {
                return;
            };
            if how % 2 == 0 {
                let _ = reply.json().await;
            } else {
                let mut documents = reply.documents();
                while let Ok(Some(_)) = documents.next().await {}
            }
        });
    });
});
