//! The caches a type sync reads: the managed objects of its type in each member (one watch per
//! member, labelled `kubefed.io/managed=true`), and the clients and `Api`s to reach members and
//! the host. Also the two lookups that ask a member directly (does a namespace exist yet, is this
//! member the host cluster itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::{Key, MemberCache, TaskGuard, TypeContext, key_of};
use crate::propagation::members::MemberSet;
use crate::propagation::plan::Cache;
use crate::propagation::types::{ApiResourceRef, MANAGED_LABEL};
use crate::source::kubernetes::watch::retried;

impl TypeContext {
    pub(super) fn enqueue_all(&self) {
        for o in self.fed_store.state() {
            self.queue.add(key_of(&o));
        }
    }

    /// Whether the inputs every reconcile of this type consults have completed their first
    /// listing: the federated objects, the FederatedNamespaces (when consulted) and the member
    /// set. Member caches are checked per cluster ([`Self::cache_state`]).
    pub(super) fn inputs_listed(&self, set: &MemberSet) -> bool {
        set.listed
            && self.fed_listed.load(Ordering::Acquire)
            && self.namespaces_listed.load(Ordering::Acquire)
    }

    /// Whether the member cache of `cluster` has completed its first listing, or is failing to.
    pub(super) fn cache_state(&self, cluster: &str) -> Cache {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        match caches.get(cluster) {
            Some(c) if c.listed.load(Ordering::Acquire) => Cache::Listed,
            Some(c) if c.failing.load(Ordering::Acquire) => Cache::Failing,
            _ => Cache::Listing,
        }
    }

    /// One cache per member, rebuilt when the member's connection changes (re-join, new
    /// endpoint, CA or token): the old watch and client go, the new cache lists afresh.
    pub(super) fn sync_member_caches(self: &Arc<Self>, set: &MemberSet, scope: Option<&str>) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let before: Vec<String> = caches.keys().cloned().collect();
        caches.retain(|name, cache| {
            set.get(name)
                .is_some_and(|m| m.connection == cache.connection)
        });
        for name in before.iter().filter(|n| !caches.contains_key(*n)) {
            // What was written through the old connection says nothing about the new one.
            self.propagated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(_, cluster), _| cluster != name);
            self.host_members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        for (name, member) in set.iter() {
            if caches.contains_key(name) {
                continue;
            }
            let ar = self.target.api_resource();
            let api: Api<DynamicObject> = match scope {
                Some(ns) if self.target.namespaced() => {
                    Api::namespaced_with(member.client.clone(), ns, &ar)
                }
                _ => Api::all_with(member.client.clone(), &ar),
            };
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let listed = Arc::new(AtomicBool::new(false));
            let cache_listed = listed.clone();
            let failing = Arc::new(AtomicBool::new(false));
            let cache_failing = failing.clone();
            let fed_store = self.fed_store.clone();
            let queue = self.queue.clone();
            let target = self.target.clone();
            let federated_namespaced = self.federated.namespaced();
            let label = format!("{}/{}", name, self.target.kind);
            let task = tokio::spawn(async move {
                let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
                let stream = reflector::reflector(
                    writer,
                    retried(watcher::watcher(api, config), format!("member {label}")),
                );
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o)) => {
                            queue.add(member_key(&target, federated_namespaced, &o));
                        }
                        // Listed (again, maybe emptied): every object is checked against it.
                        Ok(Event::InitDone) => {
                            cache_failing.store(false, Ordering::Release);
                            cache_listed.store(true, Ordering::Release);
                            for o in fed_store.state() {
                                queue.add(key_of(&o));
                            }
                        }
                        Ok(_) => {}
                        // Logged and backed off by `retried`. Before the first listing, a
                        // failure releases the objects waiting for it: they go on in the
                        // other members and report this one.
                        Err(_) => {
                            if !cache_listed.load(Ordering::Acquire)
                                && !cache_failing.swap(true, Ordering::AcqRel)
                            {
                                for o in fed_store.state() {
                                    queue.add(key_of(&o));
                                }
                            }
                        }
                    }
                }
            });
            caches.insert(
                name.clone(),
                MemberCache {
                    client: member.client.clone(),
                    connection: member.connection,
                    store,
                    listed,
                    failing,
                    _task: TaskGuard(task),
                },
            );
        }
    }

    /// The managed object for `key` in `cluster`, from the cache.
    pub(super) fn cached(&self, cluster: &str, key: &Key) -> Option<Value> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let cache = caches.get(cluster)?;
        let obj = cache.store.get(&self.member_ref(key))?;
        serde_json::to_value(obj.as_ref()).ok()
    }

    pub(super) fn member_ref(&self, key: &Key) -> ObjectRef<DynamicObject> {
        let r = ObjectRef::new_with(&key.name, self.target.api_resource());
        if self.target.namespaced() {
            r.within(&key.namespace)
        } else {
            r
        }
    }

    /// The client of a member this type sync has a cache for.
    pub(super) fn member_client(&self, cluster: &str) -> Option<Client> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.get(cluster).map(|c| c.client.clone())
    }

    pub(super) fn member_api(&self, cluster: &str, key: &Key) -> Option<Api<DynamicObject>> {
        let client = self.member_client(cluster)?;
        let ar = self.target.api_resource();
        Some(if self.target.namespaced() {
            Api::namespaced_with(client, &key.namespace, &ar)
        } else {
            Api::all_with(client, &ar)
        })
    }

    pub(super) fn fed_api(&self, key: &Key) -> Api<DynamicObject> {
        let ar = self.federated.api_resource();
        if self.federated.namespaced() {
            Api::namespaced_with(self.host.clone(), &key.namespace, &ar)
        } else {
            Api::all_with(self.host.clone(), &ar)
        }
    }

    /// Waits briefly for `namespace` to exist in `cluster` (it is usually being created by the
    /// FederatedNamespace's sync at the same moment), so its objects need not wait a backoff.
    pub(super) async fn namespace_appears(&self, cluster: &str, namespace: &str) -> bool {
        if namespace.is_empty() {
            return false;
        }
        let Some(client) = self.member_client(cluster) else {
            return false;
        };
        let api = Api::<Namespace>::all(client);
        for _ in 0..20 {
            if let Ok(Some(_)) = api.get_opt(namespace).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Whether a member is the host cluster itself (same `kube-system` namespace uid).
    pub(super) async fn is_host_member(&self, cluster: &str) -> bool {
        if let Some(known) = self
            .host_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
        {
            return *known;
        }
        let Some(client) = self.member_client(cluster) else {
            return true;
        };
        let uid = |c: Client| async move {
            Api::<Namespace>::all(c)
                .get("kube-system")
                .await
                .ok()
                .and_then(|n| n.metadata.uid)
        };
        let (host, member) = futures::join!(uid(self.host.clone()), uid(client));
        // Unknown counts as "is the host": never risk deleting the host's namespace.
        let same = match (host, member) {
            (Some(h), Some(m)) => h == m,
            _ => return true,
        };
        self.host_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_string(), same);
        same
    }
}

/// The federated object's key for a member object: a Namespace maps to the FederatedNamespace
/// in itself.
pub(super) fn member_key(
    target: &ApiResourceRef,
    federated_namespaced: bool,
    o: &DynamicObject,
) -> Key {
    let name = o.name_any();
    if !target.namespaced() && federated_namespaced {
        Key {
            namespace: name.clone(),
            name,
        }
    } else {
        Key {
            namespace: o.namespace().unwrap_or_default(),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::types::default_type;
    use serde_json::json;

    fn dynamic(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn member_namespaces_map_to_their_federated_namespace() {
        let ns = default_type("namespaces").unwrap();
        let o =
            dynamic(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        assert_eq!(member_key(&ns, true, &o), Key::new("shop", "shop"));
        let cr = default_type("clusterroles").unwrap();
        let o = dynamic(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}),
        );
        assert_eq!(member_key(&cr, false, &o), Key::new("", "r"));
    }
}
