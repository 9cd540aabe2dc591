//! Locks held across every instance of a relay that share one store. A connector whose work
//! must not interleave with another instance's (Sheets extending a tab's header row) takes one;
//! one instance alone needs none (its connector serialises its own tasks), so a connector built
//! without [`Locks`] skips them.

/// Where shared locks come from (the store, on PostgreSQL: advisory locks).
#[async_trait::async_trait]
pub trait Locks: Send + Sync {
    /// Waits until no instance holds `key`, then holds it until the returned [`Held`] is
    /// released or dropped (or the instance dies). Fails when the lock's keeper cannot be
    /// reached, or after waiting too long.
    async fn lock(&self, key: &str) -> Result<Box<dyn Held>, String>;
}

/// A lock held across instances.
#[async_trait::async_trait]
pub trait Held: Send {
    /// Lets the next instance in. Dropping it does too, a moment later.
    async fn release(self: Box<Self>);
}
