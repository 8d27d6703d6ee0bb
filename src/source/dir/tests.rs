use std::net::IpAddr;

use super::*;
use crate::federation::model::{
    DomainSpec, EndpointsState, FederationObjectId, LoadBalancer, MemberObjectId, MemberSpec,
    ObjectKey, ServiceState,
};
use crate::source::normalize;

/// A source directory in a tempdir.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    fn remove(&self, relative: &str) {
        let path = self.path(relative);
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }

    fn load(&self) -> DirectorySnapshot {
        load(self.dir.path()).unwrap()
    }
}

/// A rescan as after a file-system event naming `touched`, once the files have settled.
fn rescan(snapshot: &mut DirectorySnapshot, touched: &[PathBuf]) -> Vec<SourceEvent> {
    let settled = SystemTime::now() + SETTLE;
    let rescan = snapshot.rescan(&touched.iter().cloned().collect(), settled);
    assert_eq!(rescan.settling, Vec::<PathBuf>::new());
    rescan.events
}

fn service_yaml(namespace: &str, name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{type: LoadBalancer}}\n\
         status: {{loadBalancer: {{ingress: [{{ip: \"{ip}\"}}]}}}}\n"
    )
}

fn slice_yaml(namespace: &str, name: &str, service: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: {namespace}, \
         labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [10.1.0.1]}}]\n"
    )
}

fn domain_yaml(name: &str, zone: &str) -> String {
    format!(
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\n\
         metadata: {{name: {name}}}\ndomain: {zone}\n"
    )
}

fn kubefed_cluster_yaml(name: &str, region: &str, ready: &str) -> String {
    format!(
        "apiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\nmetadata: {{name: {name}}}\n\
         spec: {{apiEndpoint: 'https://{name}:6443', secretRef: {{name: {name}}}}}\n\
         status:\n  conditions: [{{type: Ready, status: '{ready}'}}]\n  \
         zones: [{region}a]\n  region: {region}\n"
    )
}

fn lb_service(namespace: &str, name: &str, ip: &str) -> MemberObject {
    MemberObject::Service(
        ObjectKey::new(namespace, name),
        ServiceState {
            load_balancer: LoadBalancer {
                ips: vec![ip.parse::<IpAddr>().unwrap()],
                hostnames: vec![],
            },
        },
    )
}

fn slice(namespace: &str, name: &str, service: &str) -> MemberObject {
    MemberObject::EndpointSlice(
        ObjectKey::new(namespace, name),
        EndpointsState {
            service: service.into(),
            ready: 1,
        },
    )
}

fn domain(name: &str, zone: &str) -> FederationObject {
    FederationObject::Domain(DomainSpec {
        federation: name.into(),
        namespace: normalize::CONTROL_PLANE_NAMESPACE.into(),
        zone: zone.into(),
        name_server: None,
        default_strategy: None,
        name_server_addresses: Vec::new(),
    })
}

fn member(name: &str) -> FederationObject {
    FederationObject::Member(MemberSpec {
        name: name.into(),
        ready: true,
        ..MemberSpec::default()
    })
}

fn member_in(name: &str, region: &str, ready: bool) -> FederationObject {
    FederationObject::Member(MemberSpec {
        name: name.into(),
        zones: vec![format!("{region}a")],
        region: Some(region.into()),
        ready,
    })
}

fn service_id(namespace: &str, name: &str) -> MemberObjectId {
    MemberObjectId::Service(ObjectKey::new(namespace, name))
}

fn member_objects(snapshot: &DirectorySnapshot, cluster: &str) -> Vec<MemberObject> {
    snapshot
        .initial_events()
        .into_iter()
        .find_map(|event| match event {
            SourceEvent::ResetMember(name, objects) if name == cluster => Some(objects),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ResetMember for {cluster}"))
}

fn federation_objects(snapshot: &DirectorySnapshot) -> Vec<FederationObject> {
    match snapshot.initial_events().into_iter().next() {
        Some(SourceEvent::ResetFederation(objects)) => objects,
        other => panic!("expected ResetFederation first, got {other:?}"),
    }
}

fn messages(snapshot: &DirectorySnapshot) -> Vec<String> {
    snapshot.errors().iter().map(ToString::to_string).collect()
}

#[test]
fn load_resets_federation_then_each_cluster_then_reports_synced() {
    let tree = Tree::new();
    tree.write("domain.yaml", &domain_yaml("myfed", "example.com"));
    tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.1"));
    tree.write("c2/svc.yaml", &service_yaml("test", "nginx", "10.0.0.2"));
    let events = tree.load().initial_events();
    assert_eq!(
        events,
        [
            SourceEvent::ResetFederation(vec![
                domain("myfed", "example.com"),
                member("c1"),
                member("c2")
            ]),
            SourceEvent::ResetMember("c1".into(), vec![lb_service("test", "nginx", "10.0.0.1")]),
            SourceEvent::ResetMember("c2".into(), vec![lb_service("test", "nginx", "10.0.0.2")]),
            SourceEvent::Synced,
        ]
    );
}

#[test]
fn missing_directory_is_an_error() {
    let tree = Tree::new();
    let err = load(tree.path("nope")).unwrap_err();
    assert!(matches!(err, DirError::Unreadable { .. }), "{err}");
    let file = tree.write("file.yaml", "");
    assert!(matches!(load(file), Err(DirError::NotADirectory { .. })));
}

#[test]
fn yaml_documents_and_lists_are_all_read() {
    let tree = Tree::new();
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}",
        service_yaml("test", "b", "10.0.0.2").replace('\n', "\n  "),
        slice_yaml("test", "b-1", "b").replace('\n', "\n  "),
    );
    let text = format!(
        "{}---\n# empty document\n---\n{list}\n---\n{}",
        service_yaml("test", "a", "10.0.0.1"),
        service_yaml("test", "c", "10.0.0.3"),
    );
    tree.write("c1/all.yaml", &text);
    let snapshot = tree.load();
    assert_eq!(messages(&snapshot), Vec::<String>::new());
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [
            lb_service("test", "a", "10.0.0.1"),
            lb_service("test", "b", "10.0.0.2"),
            lb_service("test", "c", "10.0.0.3"),
            slice("test", "b-1", "b"),
        ]
    );
}

#[test]
fn json_lists_and_concatenated_documents_are_read() {
    let tree = Tree::new();
    let items: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"test"}},
                   "spec":{{"type":"LoadBalancer"}},
                   "status":{{"loadBalancer":{{"ingress":[{{"ip":"10.0.0.{i}"}}]}}}}}}"#
            )
        })
        .collect();
    let text = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}
           {{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}}}}"#,
        items.join(",")
    );
    tree.write("c1/services.json", &text);
    let objects = member_objects(&tree.load(), "c1");
    assert_eq!(objects.len(), 4);
    assert_eq!(objects[2], lb_service("test", "s2", "10.0.0.2"));
    assert!(matches!(&objects[3], MemberObject::Node(name, _) if name == "n1"));
}

#[test]
fn every_kind_is_read_where_it_belongs() {
    let tree = Tree::new();
    tree.write(
        "records.yaml",
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata: {name: nginx, namespace: test}\nspec: {domainRef: myfed}\n---\n\
         apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: IngressDNSRecord\n\
         metadata: {name: web, namespace: test}\nspec: {hosts: [web.example.com]}\n",
    );
    tree.write(
        "c1/objects.yml",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: nginx, namespace: test}\n\
         subsets: [{addresses: [{ip: 10.1.0.1}]}]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: test}\n\
         status: {loadBalancer: {ingress: [{hostname: lb.example.com}]}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {topology.kubernetes.io/zone: z1}}\n",
    );
    let snapshot = tree.load();
    assert_eq!(snapshot.errors(), []);
    let federation: Vec<_> = federation_objects(&snapshot)
        .iter()
        .map(FederationObject::id)
        .collect();
    assert_eq!(
        federation,
        [
            FederationObjectId::ServiceRecord(ObjectKey::new("test", "nginx")),
            FederationObjectId::IngressRecord(ObjectKey::new("test", "web")),
            FederationObjectId::Member("c1".into()),
        ]
    );
    let members: Vec<_> = member_objects(&snapshot, "c1")
        .iter()
        .map(MemberObject::id)
        .collect();
    assert_eq!(
        members,
        [
            MemberObjectId::Endpoints(ObjectKey::new("test", "nginx")),
            MemberObjectId::Ingress(ObjectKey::new("test", "web")),
            MemberObjectId::Node("n1".into()),
        ]
    );
}

#[test]
fn unsupported_api_version_of_a_known_group_is_an_error() {
    let tree = Tree::new();
    tree.write(
        "c1/slice.yaml",
        &slice_yaml("test", "a-1", "a").replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
    );
    let errors = messages(&tree.load());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with(
            "document 1 (EndpointSlice test/a-1): invalid value: \
             string \"discovery.k8s.io/v1beta1\", expected discovery.k8s.io/v1"
        ),
        "{errors:?}"
    );
}

#[test]
fn json_null_documents_are_skipped_and_non_objects_reported() {
    let tree = Tree::new();
    tree.write("c1/null.json", "null\n");
    tree.write("c1/array.json", "[1, 2]");
    let errors = messages(&tree.load());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with(
            "array.json: document 1: expected a Kubernetes object or List, found an array"
        ),
        "{errors:?}"
    );
}

#[cfg(unix)]
#[test]
fn symlinked_files_load_like_a_mounted_config_map() {
    // A ConfigMap volume: visible names are symlinks into a hidden, atomically swapped directory.
    let tree = Tree::new();
    tree.write(
        "c1/..2024_01_01/svc.yaml",
        &service_yaml("test", "a", "10.0.0.1"),
    );
    std::os::unix::fs::symlink("..2024_01_01", tree.path("c1/..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", tree.path("c1/svc.yaml")).unwrap();
    let mut snapshot = tree.load();
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "a", "10.0.0.1")]
    );

    tree.write(
        "c1/..2024_01_02/svc.yaml",
        &service_yaml("test", "a", "10.0.0.22"),
    );
    std::os::unix::fs::symlink("..2024_01_02", tree.path("c1/..data_tmp")).unwrap();
    fs::rename(tree.path("c1/..data_tmp"), tree.path("c1/..data")).unwrap();
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "a", "10.0.0.22")
        )]
    );
}

#[test]
fn invalid_ip_error_names_file_document_object_and_field() {
    let tree = Tree::new();
    let path = tree.write(
        "c1/svc.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("test", "ok", "10.0.0.1"),
            service_yaml("test", "nginx", "10.0.0.x")
        ),
    );
    let snapshot = tree.load();
    assert_eq!(
        messages(&snapshot),
        [format!(
            r#"{}: document 2 (Service test/nginx): status.loadBalancer.ingress[0].ip: invalid IP address "10.0.0.x""#,
            path.display()
        )]
    );
    // The bad document is skipped; the rest of the file is used.
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "ok", "10.0.0.1")]
    );
}

fn record_yaml(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

#[test]
fn record_without_domain_ref_is_skipped_and_the_domain_in_its_file_still_loads() {
    let tree = Tree::new();
    let path = tree.write(
        "federation.yaml",
        &format!(
            "{}---\n{}",
            domain_yaml("myfed", "example.com"),
            record_yaml("test", "nginx", "{recordTTL: 30}")
        ),
    );
    let snapshot = tree.load();
    let errors = messages(&snapshot);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let expected = format!(
        "{}: document 2 (ServiceDNSRecord test/nginx): ",
        path.display()
    );
    assert!(
        errors[0].starts_with(&expected) && errors[0].contains("domainRef"),
        "{errors:?}"
    );
    assert_eq!(
        federation_objects(&snapshot),
        [domain("myfed", "example.com")]
    );
}

#[test]
fn bad_edit_of_one_document_keeps_its_last_good_version_and_applies_the_others() {
    let tree = Tree::new();
    let two = |first_ip: &str, second_ip: &str| {
        format!(
            "{}---\n{}",
            service_yaml("test", "a", first_ip),
            service_yaml("test", "b", second_ip)
        )
    };
    let path = tree.write("c1/svc.yaml", &two("10.0.0.1", "10.0.0.2"));
    let mut snapshot = tree.load();

    tree.write("c1/svc.yaml", &two("10.0.0.11", "10.0.0.x"));
    assert_eq!(
        rescan(&mut snapshot, std::slice::from_ref(&path)),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "a", "10.0.0.11")
        )]
    );
    assert_eq!(snapshot.errors().len(), 1);
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [
            lb_service("test", "a", "10.0.0.11"),
            lb_service("test", "b", "10.0.0.2")
        ]
    );

    // A bad new object is simply absent; the file's other objects stay.
    tree.write(
        "c1/svc.yaml",
        &format!(
            "{}---\n{}",
            two("10.0.0.11", "10.0.0.2"),
            service_yaml("test", "c", "nope")
        ),
    );
    assert_eq!(rescan(&mut snapshot, std::slice::from_ref(&path)), []);
    assert_eq!(snapshot.errors().len(), 1);
}

#[test]
fn yaml_syntax_error_keeps_the_whole_file_at_its_last_good_content() {
    let tree = Tree::new();
    let path = tree.write(
        "c1/svc.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("test", "a", "10.0.0.1"),
            service_yaml("test", "b", "10.0.0.2")
        ),
    );
    let mut snapshot = tree.load();
    // Document 1 changes, document 2 breaks the stream: nothing of the edit is applied.
    tree.write(
        "c1/svc.yaml",
        &format!(
            "{}---\nkind: Service\nmetadata: {{name: b\n",
            service_yaml("test", "a", "10.0.0.9")
        ),
    );
    assert_eq!(rescan(&mut snapshot, std::slice::from_ref(&path)), []);
    assert_eq!(snapshot.errors().len(), 1);
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [
            lb_service("test", "a", "10.0.0.1"),
            lb_service("test", "b", "10.0.0.2")
        ]
    );
}

#[test]
fn wrong_field_type_in_a_json_list_names_item_field_and_file_position() {
    let tree = Tree::new();
    let path = tree.write(
        "c1/svc.json",
        "{\"kind\": \"List\", \"items\": [\n  {\"kind\": \"Service\", \"metadata\": {\"name\": \"a\"}},\n  \
         {\"kind\": \"Service\", \"metadata\": {\"name\": \"b\", \"namespace\": \"test\"},\n   \
         \"spec\": {\"ports\": [{\"port\": \"eighty\"}]}}\n]}\n",
    );
    assert_eq!(
        messages(&tree.load()),
        [format!(
            "{}: document 1, items[1] (Service test/b): spec.ports[0].port: invalid type: \
             string \"eighty\", expected i32 at line 4 column 39",
            path.display()
        )]
    );
}

#[test]
fn missing_required_field_is_named() {
    let tree = Tree::new();
    let path = tree.write(
        "records.yaml",
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata: {name: nginx, namespace: test}\nspec: {recordTTL: 300}\n",
    );
    assert_eq!(
        messages(&tree.load()),
        [format!(
            "{}: document 1 (ServiceDNSRecord test/nginx): spec: missing field `domainRef`",
            path.display()
        )]
    );
}

#[test]
fn yaml_syntax_error_and_missing_kind_are_reported() {
    let tree = Tree::new();
    tree.write("c1/broken.yaml", "kind: Service\nmetadata: {name: [x\n");
    tree.write("c1/kindless.yaml", "metadata: {name: x}\n");
    let errors = messages(&tree.load());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("broken.yaml: document 1: "),
        "{errors:?}"
    );
    assert!(
        errors[1].ends_with("kindless.yaml: document 1: missing field `kind`"),
        "{errors:?}"
    );
}

#[test]
fn bad_file_at_startup_contributes_nothing_but_others_load() {
    let tree = Tree::new();
    tree.write("c1/good.yaml", &service_yaml("test", "good", "10.0.0.1"));
    tree.write("c1/bad.yaml", &service_yaml("test", "bad", "nope"));
    let snapshot = tree.load();
    assert_eq!(snapshot.errors().len(), 1);
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "good", "10.0.0.1")]
    );
}

#[test]
fn bad_edit_keeps_last_good_objects_until_fixed() {
    let tree = Tree::new();
    let path = tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.1"));
    let mut snapshot = tree.load();
    let errors = snapshot.subscribe_errors();

    tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.x"));
    assert_eq!(rescan(&mut snapshot, std::slice::from_ref(&path)), []);
    assert_eq!(snapshot.errors().len(), 1);
    assert_eq!(errors.borrow().len(), 1);
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "nginx", "10.0.0.1")]
    );
    // Not re-read (nor re-reported) while it does not change.
    assert_eq!(rescan(&mut snapshot, &[]), []);

    tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.2"));
    assert_eq!(
        rescan(&mut snapshot, &[path]),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "nginx", "10.0.0.2")
        )]
    );
    assert_eq!(snapshot.errors(), []);
    assert!(errors.borrow().is_empty());
}

#[test]
fn a_file_caught_between_truncate_and_write_is_read_once_it_settles() {
    let tree = Tree::new();
    let path = tree.write("c1/svc.yaml", &service_yaml("test", "nginx", "10.0.0.1"));
    let mut snapshot = tree.load();

    // A rewrite in place, caught by the periodic rescan right after the truncate.
    fs::File::create(&path).unwrap();
    let caught = snapshot.rescan(&HashSet::new(), SystemTime::now());
    assert_eq!(caught.events, []);
    assert_eq!(caught.settling, std::slice::from_ref(&path));
    assert_eq!(caught.retry_after(), Some(SETTLE));
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "nginx", "10.0.0.1")]
    );

    // The write that follows is bad: the last good content is the one before the rewrite.
    fs::write(&path, "kind: Service\nmetadata: {name: nginx\n").unwrap();
    assert_eq!(rescan(&mut snapshot, std::slice::from_ref(&path)), []);
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "nginx", "10.0.0.1")]
    );

    // A file emptied on purpose is still read as empty once it has been quiet.
    fs::File::create(&path).unwrap();
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::DeleteMember(
            "c1".into(),
            service_id("test", "nginx")
        )]
    );
}

#[test]
fn editing_one_object_sends_only_that_object() {
    let tree = Tree::new();
    let services = |second_ip: &str| {
        format!(
            "{}---\n{}---\n{}",
            service_yaml("test", "a", "10.0.0.1"),
            service_yaml("test", "b", second_ip),
            service_yaml("test", "c", "10.0.0.3")
        )
    };
    let path = tree.write("c1/svc.yaml", &services("10.0.0.2"));
    tree.write("c2/svc.yaml", &services("10.0.0.2"));
    let mut snapshot = tree.load();
    assert_eq!(rescan(&mut snapshot, &[]), []);

    tree.write("c1/svc.yaml", &services("10.0.0.9"));
    assert_eq!(
        rescan(&mut snapshot, &[path]),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "b", "10.0.0.9")
        )]
    );
}

#[test]
fn changed_size_is_noticed_without_a_file_system_event() {
    let tree = Tree::new();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    let mut snapshot = tree.load();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.100"));
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "a", "10.0.0.100")
        )]
    );
}

#[test]
fn removing_a_file_deletes_its_objects() {
    let tree = Tree::new();
    tree.write("c1/a.yaml", &service_yaml("test", "a", "10.0.0.1"));
    tree.write("c1/b.yaml", &service_yaml("test", "b", "10.0.0.2"));
    tree.write("records.yaml", &domain_yaml("myfed", "example.com"));
    let mut snapshot = tree.load();
    tree.remove("c1/b.yaml");
    tree.remove("records.yaml");
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [
            SourceEvent::DeleteFederation(FederationObjectId::Domain("myfed".into())),
            SourceEvent::DeleteMember("c1".into(), service_id("test", "b")),
        ]
    );
}

#[test]
fn adding_a_cluster_directory_adds_the_member_and_its_objects() {
    let tree = Tree::new();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    let mut snapshot = tree.load();
    tree.write("c2/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [
            SourceEvent::ApplyFederation(member("c2")),
            SourceEvent::ResetMember("c2".into(), vec![lb_service("test", "a", "10.0.0.2")]),
        ]
    );
    assert_eq!(snapshot.clusters().collect::<Vec<_>>(), ["c1", "c2"]);
}

#[test]
fn removing_a_cluster_directory_removes_the_member_and_its_objects() {
    let tree = Tree::new();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    tree.write("c2/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
    let mut snapshot = tree.load();
    tree.remove("c2");
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [
            SourceEvent::DeleteFederation(FederationObjectId::Member("c2".into())),
            SourceEvent::ResetMember("c2".into(), vec![]),
        ]
    );
    assert_eq!(federation_objects(&snapshot), [member("c1")]);
}

#[test]
fn kubefed_cluster_topology_and_readiness_win_over_the_directory() {
    let tree = Tree::new();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    tree.write("clusters.yaml", &kubefed_cluster_yaml("c1", "eu", "False"));
    let mut snapshot = tree.load();
    assert_eq!(
        federation_objects(&snapshot),
        [member_in("c1", "eu", false)]
    );

    // Back to the directory's defaults when the KubeFedCluster goes away.
    tree.remove("clusters.yaml");
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::ApplyFederation(member("c1"))]
    );
}

#[test]
fn kubefed_cluster_without_directory_is_still_a_member() {
    let tree = Tree::new();
    tree.write("clusters.yaml", &kubefed_cluster_yaml("c9", "us", "True"));
    let mut snapshot = tree.load();
    assert_eq!(federation_objects(&snapshot), [member_in("c9", "us", true)]);
    assert_eq!(snapshot.clusters().count(), 0);

    // A directory appearing for it adds its objects but does not touch the member.
    tree.write("c9/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::ResetMember(
            "c9".into(),
            vec![lb_service("test", "a", "10.0.0.1")]
        )]
    );
    // Nor does its removal.
    tree.remove("c9");
    assert_eq!(
        rescan(&mut snapshot, &[]),
        [SourceEvent::ResetMember("c9".into(), vec![])]
    );
}

#[test]
fn same_object_in_two_files_last_path_wins() {
    let tree = Tree::new();
    tree.write("c1/a.yaml", &service_yaml("test", "web", "10.0.0.1"));
    let later = tree.write("c1/b.yaml", &service_yaml("test", "web", "10.0.0.2"));
    let mut snapshot = tree.load();
    assert_eq!(
        member_objects(&snapshot, "c1"),
        [lb_service("test", "web", "10.0.0.2")]
    );

    // Editing the shadowed file changes nothing.
    let earlier = tree.write("c1/a.yaml", &service_yaml("test", "web", "10.0.0.3"));
    assert_eq!(rescan(&mut snapshot, &[earlier]), []);

    // Removing the winner falls back to the other file's version.
    tree.remove("c1/b.yaml");
    assert_eq!(
        rescan(&mut snapshot, &[later]),
        [SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "web", "10.0.0.3")
        )]
    );
}

#[test]
fn same_object_twice_in_one_file_later_definition_wins() {
    let tree = Tree::new();
    tree.write(
        "c1/svc.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("test", "web", "10.0.0.1"),
            service_yaml("test", "web", "10.0.0.2")
        ),
    );
    assert_eq!(
        member_objects(&tree.load(), "c1"),
        [lb_service("test", "web", "10.0.0.2")]
    );
}

#[test]
fn hidden_editor_and_foreign_files_are_ignored() {
    let tree = Tree::new();
    let bad = service_yaml("test", "x", "not-an-ip");
    tree.write("c1/.hidden.yaml", &bad);
    tree.write("c1/svc.yaml~", &bad);
    tree.write("c1/.svc.yaml.swp", &bad);
    tree.write("c1/notes.txt", &bad);
    tree.write(".git/config.yaml", &bad);
    tree.write("c1/nested/svc.yaml", &bad);
    tree.write(
        "c1/other.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
         apiVersion: example.com/v1\nkind: Service\nmetadata: {name: not-core}\n",
    );
    let snapshot = tree.load();
    assert_eq!(messages(&snapshot), Vec::<String>::new());
    assert_eq!(snapshot.clusters().collect::<Vec<_>>(), ["c1"]);
    assert_eq!(member_objects(&snapshot, "c1"), []);
}

#[test]
fn objects_in_the_wrong_place_are_ignored() {
    let tree = Tree::new();
    tree.write("svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    tree.write("c1/domain.yaml", &domain_yaml("myfed", "example.com"));
    let snapshot = tree.load();
    assert_eq!(snapshot.errors(), []);
    assert_eq!(federation_objects(&snapshot), [member("c1")]);
    assert_eq!(member_objects(&snapshot, "c1"), []);
}

#[test]
fn big_json_lists_load_in_parallel_and_in_order() {
    let tree = Tree::new();
    for cluster in 0..4 {
        let items: Vec<String> = (0..500)
            .map(|i| {
                format!(
                    r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
                       "metadata":{{"name":"s{i}-x","namespace":"ns",
                       "labels":{{"kubernetes.io/service-name":"s{i}"}}}},
                       "addressType":"IPv4","endpoints":[]}}"#
                )
            })
            .collect();
        let text = format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","));
        tree.write(&format!("c{cluster}/slices.json"), &text);
    }
    let events = tree.load().initial_events();
    assert_eq!(events.len(), 6);
    for (cluster, event) in events[1..5].iter().enumerate() {
        let SourceEvent::ResetMember(name, objects) = event else {
            panic!("expected ResetMember, got {event:?}")
        };
        assert_eq!(name, &format!("c{cluster}"));
        assert_eq!(objects.len(), 500);
    }
}

#[tokio::test]
async fn watch_sends_an_edit_within_a_second() {
    let tree = Tree::new();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.1"));
    let snapshot = tree.load();
    let (tx, mut rx) = mpsc::channel(16);
    let watcher = tokio::spawn(watch(tree.dir.path().to_path_buf(), snapshot, tx));
    // Let the watcher start and do its first rescan.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let edited = std::time::Instant::now();
    tree.write("c1/svc.yaml", &service_yaml("test", "a", "10.0.0.2"));
    let event = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("no event within a second of the edit");
    assert_eq!(
        event,
        Some(SourceEvent::ApplyMember(
            "c1".into(),
            lb_service("test", "a", "10.0.0.2")
        ))
    );
    assert!(edited.elapsed() < Duration::from_secs(1));

    // Dropping the receiver stops the watch.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watch did not stop")
        .unwrap();
}
