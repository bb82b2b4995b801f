//! Git memory (DiffMem): a user's memory is a git repository of markdown files whose blocks
//! are searched through a tantivy index kept beside the repository.

pub mod blocks;
pub mod index;
pub mod repo;
pub mod seal;
