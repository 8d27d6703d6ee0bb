//! Sources of the federation model: they read federation and member-cluster objects, strip them
//! with [`normalize`] (pure), and emit [`crate::federation::model::SourceEvent`]s to the engine.
//!
//! - [`dir`]: the embedded directory source (a tree of YAML/JSON manifests, no Kubernetes needed).
//! - [`kubernetes`]: the host-cluster watchers and, per member cluster, the member watchers and
//!   health probes.
//!
//! Sources only read: they never write to a member cluster, and they never compute records.

pub mod dir;
pub mod kubernetes;
pub mod normalize;
