//! A network between hookfan and its database that a test can cut: a TCP proxy on
//! 127.0.0.1:0. Cut, it closes every connection through it and refuses new ones at once, as a
//! failed link or a database host gone down would; restored, it forwards again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct NetCut {
    /// `127.0.0.1:PORT`, to use in place of the upstream's address.
    pub addr: String,
    cut: Arc<AtomicBool>,
    /// Bumped at each cut: connections made before it end.
    epoch: watch::Sender<u64>,
}

impl NetCut {
    /// Forwards connections to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> NetCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let (c, e) = (cut.clone(), epoch.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut ended = e.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = ended.changed() => {}
                    }
                });
            }
        });
        NetCut { addr, cut, epoch }
    }

    /// Closes every connection and refuses new ones until [`NetCut::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
