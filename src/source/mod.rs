//! Sources of the federation model: they read federation and member-cluster objects, strip them
//! with [`normalize`], and emit [`crate::model::SourceEvent`]s.
//!
//! - [`dir`]: the embedded directory source (a tree of YAML/JSON manifests, no Kubernetes needed).

pub mod dir;
pub mod host;
pub mod member;
pub mod normalize;
pub mod status_writer;
pub mod watch;
