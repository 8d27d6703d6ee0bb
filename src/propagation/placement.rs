//! Placement: which member clusters a federated object goes to (spec section 2). Pure.
//!
//! An explicit `clusters` list wins over `clusterSelector`; an absent selector selects nothing and
//! an empty one selects every member. Unknown names are dropped. Readiness is not part of
//! placement: the sync decides what to do with a selected cluster that is not ready.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::types::Placement;

/// Why no placement could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("clusterSelector: unknown operator {0:?} (In, NotIn, Exists, DoesNotExist)")]
    UnknownOperator(String),
    #[error("clusterSelector: operator {operator} on {key:?} needs values")]
    MissingValues { key: String, operator: String },
}

/// How the namespace of a namespaced federated object constrains its placement (cluster-scoped
/// control plane only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePlacement {
    /// Not constrained: namespaced control plane, cluster-scoped type, or the FederatedNamespace
    /// itself.
    Unconstrained,
    /// No valid FederatedNamespace for the namespace: the object goes nowhere
    /// (`NamespaceNotFederated`).
    NotFederated,
    /// The FederatedNamespace's own clusters.
    Within(BTreeSet<String>),
}

/// The clusters selected by `placement` among `members` (name → KubeFedCluster labels).
pub fn selected_clusters(
    placement: &Placement,
    members: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<BTreeSet<String>, PlacementError> {
    if let Some(clusters) = &placement.clusters {
        return Ok(clusters
            .iter()
            .filter(|c| members.contains_key(&c.name))
            .map(|c| c.name.clone())
            .collect());
    }
    let Some(selector) = &placement.cluster_selector else {
        return Ok(BTreeSet::new());
    };
    let mut selected = BTreeSet::new();
    for (name, labels) in members {
        if selector_matches(selector, labels)? {
            selected.insert(name.clone());
        }
    }
    Ok(selected)
}

/// Placement with the namespace constraint applied.
pub fn place(
    placement: &Placement,
    members: &BTreeMap<String, BTreeMap<String, String>>,
    namespace: &NamespacePlacement,
) -> Result<BTreeSet<String>, PlacementError> {
    let selected = selected_clusters(placement, members)?;
    Ok(match namespace {
        NamespacePlacement::Unconstrained => selected,
        NamespacePlacement::NotFederated => BTreeSet::new(),
        NamespacePlacement::Within(allowed) => selected.intersection(allowed).cloned().collect(),
    })
}

/// Whether `labels` match a Kubernetes label selector (`matchLabels` and `matchExpressions`).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, PlacementError> {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut matched = labels_match;
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let needs_values = || {
            if values.is_empty() {
                Err(PlacementError::MissingValues {
                    key: expr.key.clone(),
                    operator: expr.operator.clone(),
                })
            } else {
                Ok(())
            }
        };
        let ok = match expr.operator.as_str() {
            "In" => {
                needs_values()?;
                value.is_some_and(|v| values.contains(v))
            }
            "NotIn" => {
                needs_values()?;
                value.is_none_or(|v| !values.contains(v))
            }
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(PlacementError::UnknownOperator(other.to_string())),
        };
        matched &= ok;
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::super::types::ClusterName;
    use super::*;

    fn members() -> BTreeMap<String, BTreeMap<String, String>> {
        let mk = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        BTreeMap::from([
            ("a".to_string(), mk(&[("region", "eu"), ("tier", "gold")])),
            ("b".to_string(), mk(&[("region", "us")])),
            ("c".to_string(), mk(&[])),
        ])
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    fn list(names: &[&str]) -> Option<Vec<ClusterName>> {
        Some(
            names
                .iter()
                .map(|n| ClusterName {
                    name: n.to_string(),
                })
                .collect(),
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }

    #[test]
    fn nothing_given_selects_nothing() {
        let p = Placement::default();
        assert!(selected_clusters(&p, &members()).unwrap().is_empty());
    }

    #[test]
    fn empty_selector_selects_every_member() {
        let p = Placement {
            clusters: None,
            cluster_selector: Some(LabelSelector::default()),
        };
        assert_eq!(
            names(&selected_clusters(&p, &members()).unwrap()),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn selector_selects_matching_members() {
        let p = Placement {
            clusters: None,
            cluster_selector: Some(labels(&[("region", "eu")])),
        };
        assert_eq!(names(&selected_clusters(&p, &members()).unwrap()), ["a"]);
    }

    #[test]
    fn explicit_list_wins_over_selector_and_drops_unknown_names() {
        let p = Placement {
            clusters: list(&["b", "ghost"]),
            cluster_selector: Some(labels(&[("region", "eu")])),
        };
        assert_eq!(names(&selected_clusters(&p, &members()).unwrap()), ["b"]);
    }

    #[test]
    fn empty_list_selects_nothing_whatever_the_selector() {
        let p = Placement {
            clusters: list(&[]),
            cluster_selector: Some(LabelSelector::default()),
        };
        assert!(selected_clusters(&p, &members()).unwrap().is_empty());
    }

    #[test]
    fn match_expressions_work_and_bad_operators_are_errors() {
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let sel = |exprs| LabelSelector {
            match_labels: None,
            match_expressions: Some(exprs),
        };
        let m = members();
        let pick = |s: LabelSelector| {
            let p = Placement {
                clusters: None,
                cluster_selector: Some(s),
            };
            selected_clusters(&p, &m)
        };
        assert_eq!(
            names(&pick(sel(vec![expr("region", "In", &["us", "eu"])])).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            names(&pick(sel(vec![expr("region", "NotIn", &["us"])])).unwrap()),
            ["a", "c"]
        );
        assert_eq!(
            names(&pick(sel(vec![expr("tier", "Exists", &[])])).unwrap()),
            ["a"]
        );
        assert_eq!(
            names(&pick(sel(vec![expr("region", "DoesNotExist", &[])])).unwrap()),
            ["c"]
        );
        assert_eq!(
            pick(sel(vec![expr("region", "Near", &["eu"])])),
            Err(PlacementError::UnknownOperator("Near".into()))
        );
        assert!(matches!(
            pick(sel(vec![expr("region", "In", &[])])),
            Err(PlacementError::MissingValues { .. })
        ));
    }

    #[test]
    fn namespace_placement_intersects_or_blocks() {
        let p = Placement {
            clusters: None,
            cluster_selector: Some(LabelSelector::default()),
        };
        let within = NamespacePlacement::Within(BTreeSet::from(["b".to_string(), "z".into()]));
        assert_eq!(names(&place(&p, &members(), &within).unwrap()), ["b"]);
        assert!(
            place(&p, &members(), &NamespacePlacement::NotFederated)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            place(&p, &members(), &NamespacePlacement::Unconstrained)
                .unwrap()
                .len(),
            3
        );
    }
}
