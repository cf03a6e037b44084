//! A TCP proxy a test can cut, standing in for a network partition between ragstream and a
//! dependency whose state must survive the outage (the local S3 server keeps its objects only in
//! memory, so stopping it would lose them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection on its own loopback port to a target until it is cut.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target`, forwarding at once.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepting = tokio::spawn(accept(listener, target, cut.clone(), refused.clone(), open.clone()));
        Self {
            port,
            cut,
            refused,
            open,
            accepting,
        }
    }

    /// From now on every connection is closed as soon as it is made, and the open ones are
    /// closed now: the dependency is unreachable.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.open.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Connections closed unanswered while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    cut: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while let Ok((mut client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let connection = tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
        let mut open = open.lock().unwrap();
        open.retain(|c| !c.is_finished());
        open.push(connection);
    }
}
