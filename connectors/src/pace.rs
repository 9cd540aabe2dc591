//! Pacing the calls a connector makes. A destination's rate limit counts calls, not deliveries:
//! a Trello card with custom fields is several calls, a Sheets batch may read and extend the
//! header row before its appends. A connector asks its [`Pace`] before every call to the
//! destination and holds the returned [`Call`] until the answer is in.

use std::sync::Mutex;

/// What a connector asks before each call to its destination.
#[async_trait::async_trait]
pub trait Pace: Send + Sync {
    /// Waits until one more call may start, and counts it. The call lasts until the returned
    /// [`Call`] is dropped.
    async fn call(&self) -> Call;
}

type End = Box<dyn FnOnce(bool) + Send + Sync>;

/// One call to a destination, counted from when it was allowed until it is dropped.
#[must_use = "a call ends when this is dropped: hold it until the answer is in"]
pub struct Call {
    /// Told whether the call was made (`false`: it was given back unused).
    end: Option<End>,
}

impl Call {
    /// A call that `end` hears the end of.
    pub fn new(end: impl FnOnce(bool) + Send + Sync + 'static) -> Call {
        Call {
            end: Some(Box::new(end)),
        }
    }

    /// A call nothing counts.
    pub fn free() -> Call {
        Call { end: None }
    }

    /// Gives the call back: it was allowed but never made, so it counts for nothing.
    pub fn unused(mut self) {
        if let Some(end) = self.end.take() {
            end(false);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end(true);
        }
    }
}

/// No limit: `hookfan check`, `preview`, and unit tests.
pub struct Unlimited;

#[async_trait::async_trait]
impl Pace for Unlimited {
    async fn call(&self) -> Call {
        Call::free()
    }
}

/// A call allowed in advance, then `rest`: a lane takes one call before it claims work (so no
/// work is claimed that could not go out), and the delivery's first call uses it. A prepaid
/// call that no delivery used is given back.
pub struct Prepaid<'a> {
    first: Mutex<Option<Call>>,
    rest: &'a dyn Pace,
}

impl<'a> Prepaid<'a> {
    pub fn new(first: Call, rest: &'a dyn Pace) -> Self {
        Prepaid {
            first: Mutex::new(Some(first)),
            rest,
        }
    }
}

#[async_trait::async_trait]
impl Pace for Prepaid<'_> {
    async fn call(&self) -> Call {
        let first = self.first.lock().ok().and_then(|mut f| f.take());
        match first {
            Some(call) => call,
            None => self.rest.call().await,
        }
    }
}

impl Drop for Prepaid<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.first.get_mut().ok().and_then(Option::take) {
            call.unused();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Counts calls made and calls given back.
    #[derive(Default)]
    struct Tally {
        made: AtomicU32,
        unused: AtomicU32,
    }

    fn counted(tally: &Arc<Tally>) -> Call {
        let t = tally.clone();
        Call::new(move |made| {
            let n = if made { &t.made } else { &t.unused };
            n.fetch_add(1, Ordering::SeqCst);
        })
    }

    struct Counting(Arc<Tally>);

    #[async_trait::async_trait]
    impl Pace for Counting {
        async fn call(&self) -> Call {
            counted(&self.0)
        }
    }

    #[tokio::test]
    async fn a_prepaid_call_is_used_first_and_given_back_when_unused() {
        let tally = Arc::new(Tally::default());
        let rest = Counting(tally.clone());
        {
            let pace = Prepaid::new(counted(&tally), &rest);
            drop(pace.call().await);
            drop(pace.call().await);
        }
        assert_eq!(tally.made.load(Ordering::SeqCst), 2);
        assert_eq!(tally.unused.load(Ordering::SeqCst), 0);
        drop(Prepaid::new(counted(&tally), &rest));
        assert_eq!(tally.made.load(Ordering::SeqCst), 2);
        assert_eq!(tally.unused.load(Ordering::SeqCst), 1);
    }
}
