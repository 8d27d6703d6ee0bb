//! Prometheus metrics, all named `fedns_*` in base units, plus the standard `process_*` metrics
//! (CPU, resident memory, file descriptors, start time) and `fedns_build_info{version}`. Answer
//! workers count into worker-local copies ([`WorkerMetrics`]) flushed every few hundred queries or
//! when idle, so the answer path shares no cache line with another core, takes no lock and
//! allocates nothing (the `qtype` label is one of a fixed set, indexed, never formatted).

use std::time::Duration;

use prometheus::core::{AtomicU64, GenericLocalCounter};
use prometheus::local::LocalHistogram;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::dns::responder::{Answered, Transport};
use crate::federation::locality::{OUTCOME_LABELS, Outcome, STRATEGY_LABELS};

/// The (strategy, outcome) codes of `fedns_dns_locality_answers_total` that can happen.
const LOCALITY_ANSWERS: [(u8, u8); 9] = [
    (1, Outcome::Zone as u8),
    (1, Outcome::Region as u8),
    (1, Outcome::Preferred as u8),
    (1, Outcome::All as u8),
    (1, Outcome::Nowhere as u8),
    (2, Outcome::Primary as u8),
    (2, Outcome::Secondary as u8),
    (3, Outcome::Weighted as u8),
    (3, Outcome::All as u8),
];

/// Rcodes we label separately; everything else is "other".
const RCODES: [(u16, &str); 8] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (16, "BADVERS"),
    (u16::MAX, "other"),
];

/// Query types labelled separately on `fedns_dns_requests_total`; everything else is "other".
/// Fixed and small, so the label's cardinality is bounded whatever the wire sends.
const QTYPES: [(u16, &str); 12] = [
    (1, "A"),
    (28, "AAAA"),
    (5, "CNAME"),
    (6, "SOA"),
    (2, "NS"),
    (15, "MX"),
    (16, "TXT"),
    (33, "SRV"),
    (12, "PTR"),
    (65, "HTTPS"),
    (255, "ANY"),
    (u16::MAX, "other"),
];

/// The QTYPE of the first question of a DNS message, without parsing more than its name's labels
/// (`None` for a packet too short or with a compressed/invalid question name).
fn question_type(packet: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
    }
    let qtype = packet.get(at + 1..at + 3)?;
    Some(u16::from_be_bytes([qtype[0], qtype[1]]))
}

/// The index in [`QTYPES`] of a packet's question type ("other" when unknown or unparseable).
#[inline]
fn qtype_index(packet: &[u8]) -> usize {
    let qtype = question_type(packet).unwrap_or(u16::MAX);
    QTYPES
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(QTYPES.len() - 1)
}

/// Rate limiting actions, in [`WorkerMetrics::rate_limited`] order.
const RRL_ACTIONS: [&str; 2] = ["drop", "slip"];

/// Every metric fedns exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    responses: IntCounterVec,
    dropped: IntCounter,
    truncated: IntCounter,
    rrl_actions: IntCounterVec,
    locality: IntCounterVec,
    duration: Histogram,
    pub records: IntGauge,
    pub members: IntGauge,
    pub members_ready: IntGauge,
    pub member_ready: IntGaugeVec,
    pub name_conflicts: IntGauge,
    pub record_problems: IntGauge,
    pub source_errors: IntGauge,
    pub programming: Histogram,
    pub zone_serial: IntGaugeVec,
    pub zone_reloads: IntCounterVec,
    pub watch_restarts: IntCounterVec,
    pub watch_errors: IntCounterVec,
    pub member_last_sync: IntGaugeVec,
    pub empty_relists: IntCounterVec,
    pub propagation_objects: IntGaugeVec,
    pub propagation_writes: IntCounterVec,
    pub propagation_duration: Histogram,
    pub leader: IntGauge,
    /// Zone transfer requests by kind (axfr, ixfr, soa: a signed SOA query) and result.
    pub xfr_requests: IntCounterVec,
    /// NOTIFY messages sent to secondaries, by result (acked, timeout, error, refused).
    pub notify_sent: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "fedns_dns_requests_total",
                "DNS requests received, by transport and query type",
            ),
            &["transport", "qtype"],
        )
        .expect("valid metric");
        let responses = IntCounterVec::new(
            Opts::new("fedns_dns_responses_total", "DNS responses sent, by rcode"),
            &["rcode"],
        )
        .expect("valid metric");
        let dropped = IntCounter::new(
            "fedns_dns_dropped_total",
            "Packets dropped unanswered (responses, runts)",
        )
        .expect("valid metric");
        let truncated = IntCounter::new(
            "fedns_dns_truncated_total",
            "UDP responses sent with TC set",
        )
        .expect("valid metric");
        let rrl_actions = IntCounterVec::new(
            Opts::new(
                "fedns_rrl_actions_total",
                "UDP responses response rate limiting dropped or sent truncated (slip), by action",
            ),
            &["action"],
        )
        .expect("valid metric");
        let locality = IntCounterVec::new(
            Opts::new(
                "fedns_dns_locality_answers_total",
                "Answers of names with a per-client strategy, by strategy and outcome (zone, \
                 region, preferred, all, nowhere, primary, secondary, weighted)",
            ),
            &["strategy", "outcome"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "fedns_dns_request_duration_seconds",
                "Time from a request read to its response written",
            )
            .buckets(vec![
                1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1,
            ]),
        )
        .expect("valid metric");
        let programming = Histogram::with_opts(
            HistogramOpts::new(
                "fedns_dns_programming_duration_seconds",
                "Time from a source change seen to the new answer in the store",
            )
            .buckets(vec![
                1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let m = Self {
            requests,
            responses,
            dropped,
            truncated,
            rrl_actions,
            locality,
            duration,
            records: gauge(
                "fedns_records",
                "Owner names served from the record store: computed, static zone and empty \
                 non-terminal names (/status: names served)",
            ),
            members: gauge("fedns_members", "Member clusters known"),
            members_ready: gauge("fedns_members_ready", "Member clusters ready"),
            member_ready: IntGaugeVec::new(
                Opts::new("fedns_member_ready", "1 when the member cluster is ready"),
                &["cluster"],
            )
            .expect("valid metric"),
            name_conflicts: gauge(
                "fedns_name_conflicts",
                "Names claimed by more than one owner (losers not served)",
            ),
            record_problems: gauge(
                "fedns_record_problems",
                "Invalid labels or references found while computing records",
            ),
            source_errors: gauge(
                "fedns_source_errors",
                "Source files currently failing to parse (last good content served)",
            ),
            programming,
            zone_serial: IntGaugeVec::new(
                Opts::new("fedns_zone_serial", "Current SOA serial"),
                &["zone"],
            )
            .expect("valid metric"),
            zone_reloads: IntCounterVec::new(
                Opts::new(
                "fedns_zone_file_loads_total",
                "Zone directory reloads that changed what is served (result=changed) and zone \
                 file loads rejected (result=error; the last good content is kept, and a zone without \
                 any answers SERVFAIL)",
            ),
                &["result"],
            )
            .expect("valid metric"),
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    "fedns_watch_restarts_total",
                    "Watches that failed and were restarted (records kept)",
                ),
                &["cluster", "kind"],
            )
            .expect("valid metric"),
            watch_errors: IntCounterVec::new(
                Opts::new(
                    "fedns_watch_errors_total",
                    "Failed list/watch requests of a watcher, by reason (forbidden, unauthorized, not_found, connect, expired, ...)",
                ),
                &["cluster", "resource", "reason"],
            )
            .expect("valid metric"),
            member_last_sync: IntGaugeVec::new(
                Opts::new(
                    "fedns_member_last_sync_timestamp_seconds",
                    "When a full listing of a member (any kind) last completed, Unix time",
                ),
                &["cluster"],
            )
            .expect("valid metric"),
            empty_relists: IntCounterVec::new(
                Opts::new(
                    "fedns_empty_relists_ignored_total",
                    "Relists that came back empty where objects were seen before (not trusted)",
                ),
                &["cluster", "kind"],
            )
            .expect("valid metric"),
            propagation_objects: IntGaugeVec::new(
                Opts::new(
                    "fedns_propagation_objects",
                    "Federated objects by type and state (propagated, pending, failed)",
                ),
                &["type", "state"],
            )
            .expect("valid metric"),
            propagation_writes: IntCounterVec::new(
                Opts::new(
                    "fedns_propagation_writes_total",
                    "Writes to member clusters by the propagation controller",
                ),
                &["cluster", "verb"],
            )
            .expect("valid metric"),
            propagation_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "fedns_propagation_duration_seconds",
                    "Time from a federated object's new generation seen to every selected member having it",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .expect("valid metric"),
            leader: gauge(
                "fedns_leader",
                "1 while this replica holds the lease and writes to the host cluster",
            ),
            xfr_requests: IntCounterVec::new(
                Opts::new(
                    "fedns_xfr_requests_total",
                    "Zone transfer requests (kind=axfr, ixfr, or soa for a TSIG-signed query), by \
                     result (ok, refused, notauth, formerr)",
                ),
                &["kind", "result"],
            )
            .expect("valid metric"),
            notify_sent: IntCounterVec::new(
                Opts::new(
                    "fedns_notify_sent_total",
                    "NOTIFY messages sent to secondaries, by result (acked, timeout, error)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.responses.clone()),
            Box::new(m.dropped.clone()),
            Box::new(m.truncated.clone()),
            Box::new(m.rrl_actions.clone()),
            Box::new(m.locality.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.records.clone()),
            Box::new(m.members.clone()),
            Box::new(m.members_ready.clone()),
            Box::new(m.member_ready.clone()),
            Box::new(m.name_conflicts.clone()),
            Box::new(m.record_problems.clone()),
            Box::new(m.source_errors.clone()),
            Box::new(m.programming.clone()),
            Box::new(m.zone_serial.clone()),
            Box::new(m.zone_reloads.clone()),
            Box::new(m.watch_restarts.clone()),
            Box::new(m.watch_errors.clone()),
            Box::new(m.member_last_sync.clone()),
            Box::new(m.empty_relists.clone()),
            Box::new(m.propagation_objects.clone()),
            Box::new(m.propagation_writes.clone()),
            Box::new(m.propagation_duration.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.xfr_requests.clone()),
            Box::new(m.notify_sent.clone()),
        ] {
            m.registry.register(c).expect("unique metric");
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fedns_build_info",
                "Always 1; the labels say which fedns this is",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.registry
            .register(Box::new(build_info))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        // Show every rcode, qtype, zone-load result and rate-limit action from the start, so rate() works from the
        // first scrape.
        for (_, label) in RCODES {
            m.responses.with_label_values(&[label]);
        }
        for transport in ["udp", "tcp"] {
            for (_, qtype) in QTYPES {
                m.requests.with_label_values(&[transport, qtype]);
            }
        }
        for result in ["changed", "error"] {
            m.zone_reloads.with_label_values(&[result]);
        }
        for action in RRL_ACTIONS {
            m.rrl_actions.with_label_values(&[action]);
        }
        m
    }

    /// A worker-local view for one answer worker.
    pub fn worker(&self, transport: Transport) -> WorkerMetrics {
        let label = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        WorkerMetrics {
            requests: QTYPES.map(|(_, q)| self.requests.with_label_values(&[label, q]).local()),
            responses: RCODES.map(|(_, l)| self.responses.with_label_values(&[l]).local()),
            dropped: self.dropped.local(),
            truncated: self.truncated.local(),
            rrl: RRL_ACTIONS.map(|a| self.rrl_actions.with_label_values(&[a]).local()),
            locality: LOCALITY_ANSWERS.map(|(s, o)| {
                self.locality
                    .with_label_values(&[STRATEGY_LABELS[s as usize], OUTCOME_LABELS[o as usize]])
                    .local()
            }),
            duration: self.duration.local(),
            pending: 0,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

type LocalCounter = GenericLocalCounter<AtomicU64>;

/// Counters of one answer worker, flushed in batches.
#[derive(Debug)]
pub struct WorkerMetrics {
    requests: [LocalCounter; QTYPES.len()],
    responses: [LocalCounter; RCODES.len()],
    dropped: LocalCounter,
    truncated: LocalCounter,
    /// Responses rate limiting dropped, and sent truncated (slipped).
    rrl: [LocalCounter; 2],
    /// Per-client answers, by [`LOCALITY_ANSWERS`].
    locality: [LocalCounter; LOCALITY_ANSWERS.len()],
    duration: LocalHistogram,
    pending: u32,
}

impl WorkerMetrics {
    /// Counts one request (`packet`, as received) and its outcome (`None`: dropped).
    #[inline]
    pub fn observe(&mut self, packet: &[u8], answered: Option<Answered>, elapsed: Duration) {
        self.requests[qtype_index(packet)].inc();
        match answered {
            Some(a) => {
                let i = RCODES
                    .iter()
                    .position(|(rc, _)| *rc == a.rcode)
                    .unwrap_or(RCODES.len() - 1);
                self.responses[i].inc();
                if a.truncated {
                    self.truncated.inc();
                }
                if let Some(pair) = a.locality
                    && let Some(i) = LOCALITY_ANSWERS.iter().position(|p| *p == pair)
                {
                    self.locality[i].inc();
                }
            }
            None => self.dropped.inc(),
        }
        self.duration.observe(elapsed.as_secs_f64());
        self.pending += 1;
        if self.pending >= 512 {
            self.flush();
        }
    }

    /// Counts a response that rate limiting dropped (`slipped`: sent truncated instead).
    #[inline]
    pub fn rate_limited(&mut self, slipped: bool) {
        self.rrl[usize::from(slipped)].inc();
    }

    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        self.pending = 0;
        for c in &self.requests {
            c.flush();
        }
        for c in &self.responses {
            c.flush();
        }
        self.dropped.flush();
        self.truncated.flush();
        for c in self.rrl.iter().chain(&self.locality) {
            c.flush();
        }
        self.duration.flush();
    }
}

impl Drop for WorkerMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `example.com.` of type `qtype`.
    fn query(qtype: u16) -> Vec<u8> {
        let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(b"\x07example\x03com\x00");
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p
    }

    #[test]
    fn qtypes_map_to_a_bounded_label_set() {
        assert_eq!(QTYPES[qtype_index(&query(1))].1, "A");
        assert_eq!(QTYPES[qtype_index(&query(65))].1, "HTTPS");
        assert_eq!(QTYPES[qtype_index(&query(99))].1, "other", "unlisted type");
        assert_eq!(QTYPES[qtype_index(&query(1)[..20])].1, "other", "truncated");
        let mut compressed = query(1);
        compressed[12] = 0xC0;
        assert_eq!(QTYPES[qtype_index(&compressed)].1, "other");
    }

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let text = Metrics::new().render();
        assert!(
            text.contains(&format!(
                "fedns_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing: {text}"
            );
        }
    }

    #[test]
    fn worker_counts_show_after_flush() {
        let m = Metrics::new();
        let mut w = m.worker(Transport::Udp);
        let aaaa = query(28);
        w.observe(
            &aaaa,
            Some(Answered {
                rcode: 3,
                truncated: false,
                class: crate::dns::responder::ResponseClass::Nxdomain,
                question_end: 12,
                opt_len: 0,
                locality: None,
                transfer: false,
            }),
            Duration::from_micros(3),
        );
        w.observe(&[0; 5], None, Duration::from_micros(1));
        w.flush();
        let text = m.render();
        assert!(
            text.contains("fedns_dns_requests_total{qtype=\"AAAA\",transport=\"udp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fedns_dns_requests_total{qtype=\"other\",transport=\"udp\"} 1"),
            "{text}"
        );
        assert!(text.contains("fedns_dns_responses_total{rcode=\"NXDOMAIN\"} 1"));
        assert!(text.contains("fedns_dns_dropped_total 1"));
        assert!(text.contains("fedns_dns_request_duration_seconds_count 2"));
    }
}
