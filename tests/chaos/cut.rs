//! A TCP proxy in front of the API server whose connections can be cut, for
//! the chaos test's "connection cut" fault. It passes bytes through
//! untouched (TLS included, so the client still checks the server's
//! certificate), and `cut` closes every connection at once and refuses new
//! ones for a while: what a client sees when a network path goes away, as
//! opposed to an HTTP error, which a server sends.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct CutProxy {
    pub address: SocketAddr,
    /// Bumped by each cut: a connection opened under an older value ends.
    cuts: watch::Sender<u64>,
    /// Until when (ms since `epoch`) new connections are refused.
    refused_until: Arc<AtomicU64>,
    epoch: Instant,
    server: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// A proxy on a free port of 127.0.0.1.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), upstream)
    }

    /// A proxy on a free port of `ip` inside the network namespace `netns`
    /// (`ip netns` names it), forwarding to `upstream` from this process's
    /// own namespace: for a client that runs in that namespace.
    pub async fn start_in(netns: &str, ip: std::net::Ipv4Addr, upstream: SocketAddr) -> Self {
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("the network namespace exists");
        let listener = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this short-lived thread only, with a
            // namespace file held open; the socket keeps its namespace.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            std::net::TcpListener::bind((ip, 0)).unwrap()
        })
        .join()
        .expect("a listener in the namespace");
        Self::start_on(listener, upstream)
    }

    fn start_on(listener: std::net::TcpListener, upstream: SocketAddr) -> Self {
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let address = listener.local_addr().unwrap();
        let (cuts, _) = watch::channel(0u64);
        let refused_until = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let server = tokio::spawn(accept(listener, upstream, cuts.clone(), refused_until.clone(), epoch));
        Self {
            address,
            cuts,
            refused_until,
            epoch,
            server,
        }
    }

    /// Closes every open connection, and refuses new ones for `refused`.
    pub fn cut(&self, refused: Duration) {
        let until = (self.epoch.elapsed() + refused).as_millis() as u64;
        self.refused_until.store(until, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    cuts: watch::Sender<u64>,
    refused_until: Arc<AtomicU64>,
    epoch: Instant,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if (epoch.elapsed().as_millis() as u64) < refused_until.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut = cuts.subscribe();
        let opened_at = *cut.borrow_and_update();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.wait_for(|n| *n != opened_at) => {}
            }
            // Both sockets drop here: the client sees its connection close.
        });
    }
}
