//! Fakes of the outside world: real HTTP servers on 127.0.0.1:0 that a test scripts.

pub mod crm;
pub mod google;
pub mod trello;
