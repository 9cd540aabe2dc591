//! A stop signal many tasks can wait on.

use tokio::sync::watch;

/// The sending side: `trigger` once, every [`Shutdown`] sees it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// The receiving side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once triggered (or when the trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// A signal set as soon as this one or `other` is.
    pub fn or(&self, other: &Shutdown) -> Shutdown {
        let (trigger, either) = channel();
        let (mut a, mut b) = (self.clone(), other.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = a.wait() => trigger.trigger(),
                _ = b.wait() => trigger.trigger(),
                // Nobody listens any more.
                _ = trigger.0.closed() => {}
            }
        });
        either
    }
}
