//! A tiny blocking UDP DNS client: hand-built queries, responses parsed with `hickory-proto`. Used to
//! wait until a server answers, to check every server against the oracle before measuring, and to
//! poll for the update-latency step.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::federation::{Answer, AnswerRecord, QType};
use crate::udp_client::UdpClient;

#[derive(Debug)]
pub struct Probe {
    client: UdpClient,
}

impl Probe {
    pub fn new(server: SocketAddr) -> Result<Self> {
        Ok(Self {
            client: UdpClient::new(server)?,
        })
    }

    /// One query, waiting at most `timeout` for the matching response.
    pub fn query_raw(&mut self, name: &str, qtype: u16, timeout: Duration) -> Result<Message> {
        self.client.query(name, qtype, timeout)
    }

    /// Query with a few retries (UDP may drop under load).
    pub fn query(&mut self, name: &str, qtype: QType) -> Result<Message> {
        let mut last = None;
        for _ in 0..3 {
            match self.query_raw(name, qtype.code(), Duration::from_millis(700)) {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")))
    }

    /// Waits until the server answers the apex SOA authoritatively with NOERROR.
    pub fn wait_for_soa(&mut self, apex: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.query_raw(apex, 6, Duration::from_millis(200)) {
                Ok(m)
                    if m.metadata.authoritative
                        && u16::from(m.metadata.response_code) == 0
                        && m.answers.iter().any(|r| r.record_type() == RecordType::SOA) =>
                {
                    return Ok(());
                }
                Ok(m) => last = format!("answered {}", m.metadata.response_code),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} did not serve {apex} SOA within {within:?} ({last})",
            self.client.server()
        )
    }
}

/// The answer in the oracle's comparable form: rcode name as dig prints it, sorted answer records.
pub fn observed(message: &Message) -> Answer {
    let rcode = match u16::from(message.metadata.response_code) {
        0 => "NOERROR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        5 => "REFUSED".to_owned(),
        other => format!("RCODE{other}"),
    };
    let mut records: Vec<AnswerRecord> = message
        .answers
        .iter()
        .map(|r| AnswerRecord {
            name: r.name.to_ascii().to_ascii_lowercase(),
            rtype: r.record_type().to_string(),
            ttl: r.ttl,
            rdata: r.data.to_string().to_ascii_lowercase(),
        })
        .collect();
    records.sort();
    Answer { rcode, records }
}

/// Short one-line rendering of an answer for mismatch reports.
pub fn render(answer: &Answer) -> String {
    let records: Vec<String> = answer
        .records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.rtype, r.rdata))
        .collect();
    format!("{} [{}]", answer.rcode, records.join("; "))
}
