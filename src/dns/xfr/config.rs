//! The `transfer:` and `tsigKeys:` keys of the config file, validated.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::dns::rrl::Prefix;
use crate::dns::tsig::Key;

/// `tsigKeys:` entries: `{name, algorithm, secret}`, the secret base64 as BIND and NSD write it,
/// or `secretFile`: a file holding it (a mounted Kubernetes Secret).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TsigKeyFile {
    pub name: String,
    pub algorithm: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
}

/// `transfer:` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferFile {
    /// Who may transfer: `[{network: CIDR, key: NAME}]`; default nobody.
    #[serde(default)]
    pub allow: Vec<AllowFile>,
    /// Secondaries to NOTIFY: `addr:port` or `{address: addr:port, key: NAME}`.
    #[serde(default)]
    pub notify: Vec<NotifyFile>,
    /// Address NOTIFY is sent from (`ip` or `ip:port`).
    pub notify_source: Option<String>,
    /// How many changes (serials) per zone the IXFR journal keeps [default: 1000].
    pub journal: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowFile {
    pub network: String,
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NotifyFile {
    Address(String),
    Entry {
        address: String,
        key: Option<String>,
    },
}

/// One ACL entry: requests from `network`, signed with `key` when one is named.
#[derive(Debug, Clone)]
pub struct AllowRule {
    pub network: Prefix,
    /// Index into [`TransferConfig::keys`].
    pub key: Option<usize>,
}

/// A secondary to NOTIFY.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    pub address: SocketAddr,
    /// Index into [`TransferConfig::keys`].
    pub key: Option<usize>,
}

/// Zone transfer and NOTIFY settings.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    pub keys: Vec<Key>,
    pub allow: Vec<AllowRule>,
    pub notify: Vec<NotifyTarget>,
    pub notify_source: Option<SocketAddr>,
    /// Changes kept per zone for IXFR.
    pub journal: usize,
    /// At most one NOTIFY per zone and secondary this often (`--notify-interval`).
    pub notify_interval: Duration,
}

/// Default IXFR journal depth, in changes per zone.
pub const DEFAULT_JOURNAL: usize = 1000;

impl TransferConfig {
    /// Validates the file's keys; `None` when neither transfers, NOTIFY nor keys are configured.
    pub fn resolve(
        file: Option<&TransferFile>,
        keys: &[TsigKeyFile],
        notify_interval: Duration,
    ) -> Result<Option<Self>, String> {
        let empty = TransferFile::default();
        let file = file.unwrap_or(&empty);
        if file == &empty && keys.is_empty() {
            return Ok(None);
        }
        let mut parsed: Vec<Key> = Vec::new();
        for k in keys {
            let secret = match (&k.secret_file, k.secret.is_empty()) {
                (Some(path), true) => std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "tsigKeys: key {}: cannot read secretFile {}: {e}",
                        k.name,
                        path.display()
                    )
                })?,
                (None, false) => k.secret.clone(),
                _ => {
                    return Err(format!(
                        "tsigKeys: key {}: give either secret or secretFile",
                        k.name
                    ));
                }
            };
            let key =
                Key::new(&k.name, &k.algorithm, &secret).map_err(|e| format!("tsigKeys: {e}"))?;
            if parsed.iter().any(|p| p.is_named(&k.name)) {
                return Err(format!("tsigKeys: key {} is defined twice", k.name));
            }
            parsed.push(key);
        }
        let key_index = |field: &str, name: &Option<String>| -> Result<Option<usize>, String> {
            match name {
                None => Ok(None),
                Some(n) => parsed
                    .iter()
                    .position(|k| k.is_named(n))
                    .map(Some)
                    .ok_or_else(|| format!("{field}: key {n:?} is not in tsigKeys")),
            }
        };
        let mut allow = Vec::new();
        for rule in &file.allow {
            let network: Prefix = rule
                .network
                .parse()
                .map_err(|e| format!("transfer.allow: {e}"))?;
            allow.push(AllowRule {
                network,
                key: key_index("transfer.allow", &rule.key)?,
            });
        }
        let mut notify = Vec::new();
        for target in &file.notify {
            let (address, key) = match target {
                NotifyFile::Address(a) => (a, &None),
                NotifyFile::Entry { address, key } => (address, key),
            };
            let address: SocketAddr = address.trim().parse().map_err(|_| {
                format!("transfer.notify: {address:?} is not an address:port (e.g. 192.0.2.53:53)")
            })?;
            notify.push(NotifyTarget {
                address,
                key: key_index("transfer.notify", key)?,
            });
        }
        let notify_source = match &file.notify_source {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<SocketAddr>()
                    .or_else(|_| {
                        text.trim()
                            .parse::<IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 0))
                    })
                    .map_err(|_| {
                        format!("transfer.notifySource: {text:?} is not an address (ip or ip:port)")
                    })?,
            ),
        };
        let journal = file.journal.unwrap_or(DEFAULT_JOURNAL);
        Ok(Some(Self {
            keys: parsed,
            allow,
            notify,
            notify_source,
            journal,
            notify_interval,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<TsigKeyFile> {
        vec![TsigKeyFile {
            name: "xfr.".into(),
            algorithm: "hmac-sha256".into(),
            secret: "c2VjcmV0c2VjcmV0".into(),
            secret_file: None,
        }]
    }

    #[test]
    fn a_secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "c2VjcmV0c2VjcmV0\n").unwrap();
        let from_file = vec![TsigKeyFile {
            secret: String::new(),
            secret_file: Some(path),
            ..keys()[0].clone()
        }];
        let c = TransferConfig::resolve(None, &from_file, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(c.keys[0].name, "xfr");
        let neither = vec![TsigKeyFile {
            secret: String::new(),
            ..keys()[0].clone()
        }];
        let e = TransferConfig::resolve(None, &neither, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("secretFile"), "{e}");
    }

    #[test]
    fn a_secret_file_that_cannot_be_read_is_an_error_naming_the_key_and_the_path() {
        let missing = vec![TsigKeyFile {
            secret: String::new(),
            secret_file: Some("/nonexistent/fedns-tsig/xfr".into()),
            ..keys()[0].clone()
        }];
        let e = TransferConfig::resolve(None, &missing, Duration::from_secs(1)).unwrap_err();
        assert!(
            e.contains("key xfr.")
                && e.contains("secretFile /nonexistent/fedns-tsig/xfr")
                && e.contains("No such file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "not base64!\n").unwrap();
        let garbled = vec![TsigKeyFile {
            secret: String::new(),
            secret_file: Some(path),
            ..keys()[0].clone()
        }];
        let e = TransferConfig::resolve(None, &garbled, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn keys_are_matched_with_or_without_the_trailing_dot() {
        let file: TransferFile = serde_yaml_ng::from_str(
            "allow: [{network: 127.0.0.0/8, key: xfr}]\nnotify: ['127.0.0.1:5300', {address: '127.0.0.2:53', key: 'xfr.'}]\nnotifySource: 127.0.0.1\n",
        )
        .unwrap();
        let c = TransferConfig::resolve(Some(&file), &keys(), Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(c.allow[0].key, Some(0));
        assert_eq!(c.notify[0].key, None);
        assert_eq!(c.notify[1].key, Some(0));
        assert_eq!(c.notify_source.unwrap().to_string(), "127.0.0.1:0");
    }

    #[test]
    fn bad_entries_name_the_key_at_fault() {
        let file: TransferFile =
            serde_yaml_ng::from_str("allow: [{network: 127.0.0.0/8, key: nope}]").unwrap();
        let e = TransferConfig::resolve(Some(&file), &keys(), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("transfer.allow") && e.contains("nope"), "{e}");
        let bad = vec![TsigKeyFile {
            algorithm: "hmac-md5".into(),
            ..keys()[0].clone()
        }];
        let e = TransferConfig::resolve(None, &bad, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("hmac-md5"), "{e}");
        assert!(
            TransferConfig::resolve(None, &[], Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
    }
}
