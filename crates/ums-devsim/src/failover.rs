//! A device's list of addresses (its load balancers): every call goes to the current one, and a
//! call that cannot reach it moves the device to the next address at once, so its retry, and
//! every call after it, reach one that answers. This is how a device with several brokers
//! behaves; spreading calls over all of them instead (tonic's balancer) keeps sending some to a
//! broker that died until its reconnect gives up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;

/// The channels of a device's addresses, in order, and the one in use.
#[derive(Clone)]
pub struct Failover {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
}

impl Failover {
    /// The addresses' channels, in order (at least one), starting with the first.
    pub fn new(channels: Vec<Channel>) -> Self {
        Self::starting_at(channels, 0)
    }

    /// Like [`Failover::new`], starting with the address `first`.
    pub fn starting_at(channels: Vec<Channel>, first: usize) -> Self {
        assert!(!channels.is_empty(), "a device needs at least one address");
        let first = first % channels.len();
        Self {
            channels: channels.into(),
            current: Arc::new(AtomicUsize::new(first)),
        }
    }

    /// The index of the address in use.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}

impl tower::Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its own channel to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let at = self.current.load(Ordering::Relaxed);
        let mut channel = self.channels[at % self.channels.len()].clone();
        let (n, current) = (self.channels.len(), self.current.clone());
        Box::pin(async move {
            let result = async {
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await?;
                tower::Service::call(&mut channel, request).await
            }
            .await;
            if result.is_err() && n > 1 {
                // Move on once per failed address, also when several calls fail together.
                let _ = current.compare_exchange(
                    at,
                    (at + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            result
        })
    }
}
