//! Embedding providers: turning chunk and question texts into vectors.

mod local;

pub use local::{LocalEmbedder, Pooling};
