//! Response bodies sent from shared memory in slices.
//!
//! actix copies every body chunk into its per-connection write buffer before the
//! socket write. A large body sent as one chunk grows that buffer to the body's
//! size (and actix frees it again after the response), and copies it out of the
//! CPU cache twice; small slices keep the buffer bounded and the copies
//! cache-warm. Slicing a `Bytes` only bumps a reference count.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::storage::ByteStream;

/// The slice size. Measured with `benches/versus_nginx/` on identity index
/// hits: 16 KiB slices beat 32 and 64 KiB and whole bodies.
pub const SLICE: usize = 16 * 1024;

/// The HTTP/1 write buffer: actix fills it with slices until it holds this
/// much, then writes it to the socket. A connection sending a body holds
/// this plus one slice plus a response head, and keeps the capacity while
/// it lives (actix frees it only past 128 KiB). At 112 KiB (fewer `send`
/// calls, measured against nginx) 2,000 busy connections on index files of
/// a few hundred KB took RSS from 61 to 326 MB (`tests/connections.rs`);
/// at 32 KiB, 61 to 157 MB (48 KiB a busy connection in all), at 16 KiB 61
/// to 134 MB. Against nginx (`benches/versus_nginx`, identity index hits and
/// downloads) 16 KiB, a `send` per slice, cost a fifth of the identity
/// throughput and a third of the downloads' (1.00x and 0.79x nginx); 32 KiB,
/// two slices a `send`, kept 1.30x and 1.13x.
pub const WRITE_BUFFER: usize = 32 * 1024;

/// A body sent in `SLICE`-sized pieces: one shared buffer, or a stream whose
/// chunks (whole files read from disk, 256 KiB reads) are cut up as they come.
pub struct SlicedBody {
    pending: Bytes,
    rest: Option<ByteStream>,
    size: BodySize,
}

impl SlicedBody {
    pub fn new(bytes: Bytes) -> Self {
        Self {
            size: BodySize::Sized(bytes.len() as u64),
            pending: bytes,
            rest: None,
        }
    }

    /// A streamed body of `len` bytes, or of unknown length (sent chunked).
    pub fn stream(len: Option<u64>, body: ByteStream) -> Self {
        Self {
            size: len.map_or(BodySize::Stream, BodySize::Sized),
            pending: Bytes::new(),
            rest: Some(body),
        }
    }
}

impl MessageBody for SlicedBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        loop {
            if !self.pending.is_empty() {
                let take = self.pending.len().min(SLICE);
                return Poll::Ready(Some(Ok(self.pending.split_to(take))));
            }
            let Some(rest) = self.rest.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(rest.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    self.rest = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn slices_reassemble_to_the_body() {
        let body: Bytes = (0..SLICE * 3 + 17).map(|i| (i % 251) as u8).collect();
        let sliced = SlicedBody::new(body.clone());
        assert_eq!(sliced.size(), BodySize::Sized(body.len() as u64));
        let collected = actix_web::body::to_bytes(sliced).await.unwrap();
        assert_eq!(collected, body);
    }

    #[actix_web::test]
    async fn streamed_chunks_are_cut_to_slices() {
        let big: Bytes = (0..SLICE * 2 + 5).map(|i| (i % 13) as u8).collect();
        let chunks = vec![Ok(big.clone()), Ok(Bytes::from_static(b"tail"))];
        let mut body = SlicedBody::stream(
            Some(big.len() as u64 + 4),
            Box::pin(futures_util::stream::iter(chunks)),
        );
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            all.extend_from_slice(&chunk);
        }
        assert_eq!(sizes, vec![SLICE, SLICE, 5, 4]);
        assert_eq!(&all[..big.len()], &big[..]);
        assert_eq!(&all[big.len()..], b"tail");
    }

    #[actix_web::test]
    async fn stream_errors_pass_through() {
        let chunks = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("cut")),
        ];
        let body = SlicedBody::stream(None, Box::pin(futures_util::stream::iter(chunks)));
        assert_eq!(body.size(), BodySize::Stream);
        assert!(actix_web::body::to_bytes(body).await.is_err());
    }

    #[actix_web::test]
    async fn empty_body_ends_at_once() {
        let collected = actix_web::body::to_bytes(SlicedBody::new(Bytes::new()))
            .await
            .unwrap();
        assert!(collected.is_empty());
    }
}
