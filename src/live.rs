//! What a reload swaps: the config and what is compiled from it. Ingress, the worker and the
//! admin listener read the current one for each request or attempt, so a reload never drops a
//! connection: requests in flight finish with the config they started with.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::mapping::{CompileError, Mapper};
use crate::redact::Redactor;

/// One generation of the config.
pub struct Live {
    pub config: Arc<Config>,
    pub mapper: Arc<Mapper>,
    pub redactor: Arc<Redactor>,
}

impl Live {
    pub fn new(config: Config) -> Result<Live, CompileError> {
        Ok(Live {
            mapper: Arc::new(config.mapper()?),
            redactor: Arc::new(Redactor::new(&config)),
            config: Arc::new(config),
        })
    }
}

/// The current [`Live`], shared; cheap to clone.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<Live>>>);

impl Shared {
    pub fn new(live: Live) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(live))))
    }

    /// The current generation (a reader keeps it whole for as long as it holds it).
    pub fn get(&self) -> Arc<Live> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, live: Live) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }
}
