//! The GitHub App: install links and verified binding ([`install`]), installation lifecycle
//! events ([`lifecycle`]), and delivery recovery ([`recovery`]).

pub mod install;
pub mod lifecycle;
pub mod recovery;
