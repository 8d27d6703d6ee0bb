//! The per-cluster decisions of the sync controller, as pure functions over plain facts: what to
//! do with one federated object in one member cluster ([`cluster_action`]), and what one cluster
//! does, and whether it blocks finalizer removal, while the object is being deleted
//! ([`removal_step`]). Nothing here touches a `kube::Client`; the controller gathers the facts,
//! asks, and carries the answer out.
//!
//! The rule both follow: what is not known yet (a placement that could not be computed, a
//! member the prober has not judged, a member cache that has not listed) means "wait" or
//! "leave", never "absent", so nothing is deleted or recreated on partial knowledge.

use super::render;
use super::status::ClusterState;

/// The managed label on a member object that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// `kubefed.io/managed: "true"`.
    Yes,
    /// `kubefed.io/managed: "false"`: the member's owner told fedns to keep away.
    OptedOut,
    /// No label: an object fedns did not create.
    Unlabeled,
}

impl Managed {
    /// The label of a live member object.
    pub fn of(live: &serde_json::Value) -> Managed {
        match render::managed_label(live) {
            Some("true") => Managed::Yes,
            Some("false") => Managed::OptedOut,
            _ => Managed::Unlabeled,
        }
    }
}

/// Where the federated object goes, as far as this cluster is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Selected,
    NotSelected,
    /// The placement could not be computed (invalid selector, bad FederatedNamespace, ...).
    Unknown,
}

/// What the controller knows about one federated object in one member cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterFacts {
    pub placement: Placement,
    /// The health prober's verdict; `None` before its first.
    pub ready: Option<bool>,
    /// Whether the member cache of this type has completed its first listing (else `live`
    /// means nothing).
    pub cache: Cache,
    /// The member object, when it exists (`None`: absent).
    pub live: Option<Managed>,
    /// The object's overrides pass the whole-object checks.
    pub overrides_valid: bool,
    /// `KubeFedConfig` adoption: an existing unlabeled object may be taken over.
    pub adopt: bool,
}

/// The member cache of one type, as far as deciding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Listed: an object missing from it is absent.
    Listed,
    /// Its first listing is under way: wait for it.
    Listing,
    /// Its listing failed and has not succeeded since (a role without this resource, a
    /// missing CRD): nothing can be known of that member, so nothing is written or deleted
    /// there, and the other members are not held up for it.
    Failing,
}

/// What to do in one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterAction {
    /// Render and create the object.
    Create,
    /// Render and update the object when it differs (adopting it when unlabeled).
    Update,
    /// Delete the managed object (no longer placed there).
    Delete,
    /// Nothing to do and nothing to report for this cluster.
    Leave,
    /// No write; report this state for the cluster.
    Report(ClusterState),
    /// An input has not listed yet: no write, no status; try again once it has.
    Wait,
}

/// The per-cluster action for a federated object that is not being deleted.
pub fn cluster_action(f: &ClusterFacts) -> ClusterAction {
    use Placement::{NotSelected, Selected, Unknown};
    match (f.placement, f.ready) {
        // Only a computed placement may lead to a write or a delete.
        (Unknown, _) => return ClusterAction::Leave,
        (_, None) => return ClusterAction::Wait,
        (Selected, Some(false)) => return ClusterAction::Report(ClusterState::ClusterNotReady),
        (NotSelected, Some(false)) => return ClusterAction::Leave,
        (_, Some(true)) => match f.cache {
            Cache::Listed => {}
            Cache::Listing => return ClusterAction::Wait,
            Cache::Failing if f.placement == Selected => {
                return ClusterAction::Report(ClusterState::CachedRetrievalFailed);
            }
            Cache::Failing => return ClusterAction::Leave,
        },
    }
    match (f.placement, f.live) {
        (NotSelected | Unknown, None) => ClusterAction::Leave,
        (NotSelected, Some(Managed::Yes)) => ClusterAction::Delete,
        // Never fedns's to delete.
        (NotSelected | Unknown, Some(_)) => ClusterAction::Leave,
        (Selected, _) if !f.overrides_valid => {
            ClusterAction::Report(ClusterState::ApplyOverridesFailed)
        }
        (Selected, None) => ClusterAction::Create,
        (Selected, Some(Managed::Yes)) => ClusterAction::Update,
        (Selected, Some(Managed::OptedOut)) => {
            ClusterAction::Report(ClusterState::ManagedLabelFalse)
        }
        (Selected, Some(Managed::Unlabeled)) if f.adopt => ClusterAction::Update,
        (Selected, Some(Managed::Unlabeled)) => ClusterAction::Report(ClusterState::AlreadyExists),
    }
}

/// The member object as the deletion flow knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not in the cache of managed objects: it may still exist unmanaged, or not at all.
    Unknown,
    Absent,
    Present(Managed),
}

/// What the deletion flow knows about one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalFacts {
    /// The object was placed there: in the cache, written by this replica, or listed in the
    /// federated object's status. Only such clusters can block finalizer removal.
    pub placed: bool,
    /// The health prober's verdict; `None` before its first.
    pub ready: Option<bool>,
    /// `kubefed.io/orphan: "true"` on the federated object.
    pub orphan: bool,
    pub live: Presence,
}

/// One cluster's step in the deletion flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalStep {
    /// Never placed there: nothing to do, nothing to report.
    Skip,
    /// Not ready: nothing can be done now; `blocks` unless orphaning (a still-labeled object
    /// is released when the member is back, its federated object gone by then).
    NotReady { blocks: bool },
    /// Read the object from the member, then ask again.
    Lookup,
    /// Nothing of fedns's there (absent, or an object fedns does not manage): done.
    Done,
    /// Orphaning: remove the managed label, keep the object.
    Unlabel,
    /// Delete the object and wait until it is gone.
    Delete,
    /// The prober has not judged the member yet: blocks, reports nothing.
    Wait,
}

/// The deletion-flow step for one cluster.
pub fn removal_step(f: &RemovalFacts) -> RemovalStep {
    match (f.placed, f.ready, f.live) {
        (false, _, _) => RemovalStep::Skip,
        (true, None, _) => RemovalStep::Wait,
        (true, Some(false), _) => RemovalStep::NotReady { blocks: !f.orphan },
        (true, Some(true), Presence::Unknown) => RemovalStep::Lookup,
        (true, Some(true), Presence::Absent) => RemovalStep::Done,
        (true, Some(true), Presence::Present(Managed::OptedOut | Managed::Unlabeled)) => {
            RemovalStep::Done
        }
        (true, Some(true), Presence::Present(Managed::Yes)) if f.orphan => RemovalStep::Unlabel,
        (true, Some(true), Presence::Present(Managed::Yes)) => RemovalStep::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ClusterFacts {
        ClusterFacts {
            placement: Placement::Selected,
            ready: Some(true),
            cache: Cache::Listed,
            live: None,
            overrides_valid: true,
            adopt: true,
        }
    }

    #[test]
    fn managed_label_values_are_read_from_the_live_object() {
        let with = |v: serde_json::Value| serde_json::json!({"metadata": {"labels": v}});
        assert_eq!(
            Managed::of(&with(serde_json::json!({"kubefed.io/managed": "true"}))),
            Managed::Yes
        );
        assert_eq!(
            Managed::of(&with(serde_json::json!({"kubefed.io/managed": "false"}))),
            Managed::OptedOut
        );
        assert_eq!(
            Managed::of(&with(serde_json::json!({}))),
            Managed::Unlabeled
        );
    }

    #[test]
    fn not_selected_and_absent_is_left_alone() {
        let f = ClusterFacts {
            placement: Placement::NotSelected,
            ..facts()
        };
        assert_eq!(cluster_action(&f), ClusterAction::Leave);
    }

    #[test]
    fn selected_but_not_ready_reports_cluster_not_ready() {
        let f = ClusterFacts {
            ready: Some(false),
            live: Some(Managed::Yes),
            ..facts()
        };
        assert_eq!(
            cluster_action(&f),
            ClusterAction::Report(ClusterState::ClusterNotReady)
        );
    }

    #[test]
    fn not_selected_in_a_cluster_that_is_not_ready_is_left_alone() {
        let f = ClusterFacts {
            placement: Placement::NotSelected,
            ready: Some(false),
            live: Some(Managed::Yes),
            ..facts()
        };
        assert_eq!(cluster_action(&f), ClusterAction::Leave);
    }

    #[test]
    fn not_selected_managed_object_is_deleted() {
        let f = ClusterFacts {
            placement: Placement::NotSelected,
            live: Some(Managed::Yes),
            ..facts()
        };
        assert_eq!(cluster_action(&f), ClusterAction::Delete);
    }

    #[test]
    fn not_selected_unmanaged_object_is_never_deleted() {
        for live in [Managed::Unlabeled, Managed::OptedOut] {
            let f = ClusterFacts {
                placement: Placement::NotSelected,
                live: Some(live),
                ..facts()
            };
            assert_eq!(cluster_action(&f), ClusterAction::Leave);
        }
    }

    #[test]
    fn invalid_overrides_report_apply_overrides_failed_without_writing() {
        let f = ClusterFacts {
            overrides_valid: false,
            live: Some(Managed::Yes),
            ..facts()
        };
        assert_eq!(
            cluster_action(&f),
            ClusterAction::Report(ClusterState::ApplyOverridesFailed)
        );
    }

    #[test]
    fn selected_and_absent_is_created() {
        assert_eq!(cluster_action(&facts()), ClusterAction::Create);
    }

    #[test]
    fn selected_and_managed_is_updated() {
        let f = ClusterFacts {
            live: Some(Managed::Yes),
            ..facts()
        };
        assert_eq!(cluster_action(&f), ClusterAction::Update);
    }

    #[test]
    fn managed_false_is_reported_and_not_written() {
        let f = ClusterFacts {
            live: Some(Managed::OptedOut),
            ..facts()
        };
        assert_eq!(
            cluster_action(&f),
            ClusterAction::Report(ClusterState::ManagedLabelFalse)
        );
    }

    #[test]
    fn unlabeled_object_is_adopted_when_adoption_is_on() {
        let f = ClusterFacts {
            live: Some(Managed::Unlabeled),
            ..facts()
        };
        assert_eq!(cluster_action(&f), ClusterAction::Update);
    }

    #[test]
    fn unlabeled_object_is_already_exists_when_adoption_is_off() {
        let f = ClusterFacts {
            live: Some(Managed::Unlabeled),
            adopt: false,
            ..facts()
        };
        assert_eq!(
            cluster_action(&f),
            ClusterAction::Report(ClusterState::AlreadyExists)
        );
    }

    fn removal() -> RemovalFacts {
        RemovalFacts {
            placed: true,
            ready: Some(true),
            orphan: false,
            live: Presence::Present(Managed::Yes),
        }
    }

    #[test]
    fn a_cluster_never_placed_in_is_skipped() {
        let f = RemovalFacts {
            placed: false,
            ready: Some(false),
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::Skip);
    }

    #[test]
    fn a_cluster_not_ready_blocks_deletion() {
        let f = RemovalFacts {
            ready: Some(false),
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::NotReady { blocks: true });
    }

    #[test]
    fn a_cluster_not_ready_does_not_block_orphaning() {
        let f = RemovalFacts {
            ready: Some(false),
            orphan: true,
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::NotReady { blocks: false });
    }

    #[test]
    fn an_object_missing_from_the_cache_is_looked_up() {
        let f = RemovalFacts {
            live: Presence::Unknown,
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::Lookup);
    }

    #[test]
    fn an_absent_object_is_done() {
        let f = RemovalFacts {
            live: Presence::Absent,
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::Done);
    }

    #[test]
    fn an_unmanaged_object_is_left_and_done() {
        for m in [Managed::Unlabeled, Managed::OptedOut] {
            let f = RemovalFacts {
                live: Presence::Present(m),
                ..removal()
            };
            assert_eq!(removal_step(&f), RemovalStep::Done);
        }
    }

    #[test]
    fn a_managed_object_is_unlabeled_when_orphaning() {
        let f = RemovalFacts {
            orphan: true,
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::Unlabel);
    }

    #[test]
    fn a_managed_object_is_deleted() {
        assert_eq!(removal_step(&removal()), RemovalStep::Delete);
    }

    #[test]
    fn an_uncomputable_placement_leaves_every_cluster_untouched() {
        for live in [None, Some(Managed::Yes), Some(Managed::Unlabeled)] {
            for ready in [None, Some(false), Some(true)] {
                let f = ClusterFacts {
                    placement: Placement::Unknown,
                    ready,
                    live,
                    ..facts()
                };
                assert_eq!(cluster_action(&f), ClusterAction::Leave, "{f:?}");
            }
        }
    }

    #[test]
    fn a_member_not_probed_yet_is_waited_for() {
        for placement in [Placement::Selected, Placement::NotSelected] {
            let f = ClusterFacts {
                placement,
                ready: None,
                live: Some(Managed::Yes),
                ..facts()
            };
            assert_eq!(cluster_action(&f), ClusterAction::Wait);
        }
    }

    #[test]
    fn a_member_cache_not_listed_yet_is_waited_for_not_taken_as_empty() {
        for placement in [Placement::Selected, Placement::NotSelected] {
            let f = ClusterFacts {
                placement,
                cache: Cache::Listing,
                ..facts()
            };
            assert_eq!(cluster_action(&f), ClusterAction::Wait);
        }
    }

    #[test]
    fn a_member_cache_that_fails_to_list_is_reported_and_holds_up_no_other_member() {
        for live in [None, Some(Managed::Yes), Some(Managed::Unlabeled)] {
            let f = ClusterFacts {
                cache: Cache::Failing,
                live,
                ..facts()
            };
            assert_eq!(
                cluster_action(&f),
                ClusterAction::Report(ClusterState::CachedRetrievalFailed),
                "{f:?}"
            );
            let f = ClusterFacts {
                placement: Placement::NotSelected,
                ..f
            };
            // Nothing known there: never a delete.
            assert_eq!(cluster_action(&f), ClusterAction::Leave, "{f:?}");
        }
    }

    #[test]
    fn deletion_waits_for_a_member_not_probed_yet() {
        let f = RemovalFacts {
            ready: None,
            ..removal()
        };
        assert_eq!(removal_step(&f), RemovalStep::Wait);
    }
}
