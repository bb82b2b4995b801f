//! The drivers that run an agent CLI as a session, one per protocol.

pub mod command;
