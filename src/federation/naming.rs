//! Federation DNS names (the README's *DNS behaviour reference*, "Names"): building the global, regional, zonal and
//! prefix names of a ServiceDNSRecord, and validating every label that goes into them.

use hickory_proto::rr::Name;

/// Longest name, in presentation form without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
/// Longest label, in octets.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a value cannot become (part of) a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} {value:?} is not a valid DNS label: {reason}")]
    InvalidLabel {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("name {name:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong { name: String },
    #[error("domainRef {0:?}: no Domain of that name in the control-plane namespace")]
    UnknownDomain(String),
}

impl NameError {
    /// A short, stable label for metrics and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            NameError::InvalidLabel { .. } => "InvalidLabel",
            NameError::TooLong { .. } => "NameTooLong",
            NameError::UnknownDomain(_) => "DomainNotFound",
        }
    }
}

/// Checks that `value` is one DNS label: 1–63 octets of letters, digits, `-` or `_`, not starting or
/// ending with `-`. Underscore is allowed for service labels (`_http._tcp`).
pub fn validate_label(what: &'static str, value: &str) -> Result<(), NameError> {
    let invalid = |reason| NameError::InvalidLabel {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("empty label"));
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(invalid("longer than 63 octets"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "only letters, digits, '-' and '_' are allowed (no dots)",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid("starts or ends with '-'"));
    }
    Ok(())
}

/// Parses a dotted name (a zone, a prefix, an Ingress host) whose every label must be valid.
/// A trailing dot is accepted; the result is fully qualified.
pub fn parse_dotted(what: &'static str, value: &str) -> Result<Name, NameError> {
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    for label in trimmed.split('.') {
        validate_label(what, label)?;
    }
    from_labels(trimmed.split('.'))
}

/// Builds a fully qualified name from already validated labels, checking the total length.
pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Name, NameError> {
    let labels: Vec<&str> = labels.into_iter().collect();
    let text_len = labels.iter().map(|l| l.len()).sum::<usize>() + labels.len().saturating_sub(1);
    if text_len > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: labels.join("."),
        });
    }
    let mut name =
        Name::from_labels(labels.iter().map(|l| l.as_bytes())).map_err(|_| NameError::TooLong {
            name: labels.join("."),
        })?;
    name.set_fqdn(true);
    Ok(name)
}

/// Appends `suffix` (a zone) to relative `labels`, checking the length. Builds the name from
/// the labels and the suffix's own labels: no text round trip (this runs for every name of every
/// record when the engine computes them).
pub fn under(labels: &[&str], suffix: &Name) -> Result<Name, NameError> {
    // Text length: every label and the dot after it, less the last dot.
    let text_len = labels
        .iter()
        .map(|l| l.len() + 1)
        .chain(suffix.iter().map(|l| l.len() + 1))
        .sum::<usize>()
        .saturating_sub(1);
    let too_long = || NameError::TooLong {
        name: format!("{}.{}", labels.join("."), suffix.to_ascii()),
    };
    if text_len > MAX_NAME_LEN {
        return Err(too_long());
    }
    // Label by label onto the root, then the suffix whole: `Name::from_labels` would collect
    // and re-check every label of the suffix too (15% of the start-up computation).
    let mut name = Name::root();
    for label in labels {
        name = name
            .append_label(label.as_bytes())
            .map_err(|_| too_long())?;
    }
    let mut name = name.append_name(suffix).map_err(|_| too_long())?;
    name.set_fqdn(true);
    Ok(name)
}

/// The validated prefix `L.N.F.svc` shared by all names of one ServiceDNSRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBase<'a> {
    labels: [&'a str; 4],
}

impl<'a> ServiceBase<'a> {
    /// `label` is the `externalName` if set, else the record's name.
    pub fn new(label: &'a str, namespace: &'a str, federation: &'a str) -> Result<Self, NameError> {
        validate_label("service name", label)?;
        validate_label("namespace", namespace)?;
        validate_label("federation", federation)?;
        Ok(Self {
            labels: [label, namespace, federation, "svc"],
        })
    }

    /// `L.N.F.svc.D`
    pub fn global(&self, zone: &Name) -> Result<Name, NameError> {
        under(&self.labels, zone)
    }

    /// `L.N.F.svc.<region>.D`
    pub fn regional(&self, region: &str, zone: &Name) -> Result<Name, NameError> {
        validate_label("region", region)?;
        let [l, n, f, s] = self.labels;
        under(&[l, n, f, s, region], zone)
    }

    /// `L.N.F.svc.<zone>.<region>.D`
    pub fn zonal(&self, az: &str, region: &str, zone: &Name) -> Result<Name, NameError> {
        validate_label("zone", az)?;
        validate_label("region", region)?;
        let [l, n, f, s] = self.labels;
        under(&[l, n, f, s, az, region], zone)
    }
}

/// `<dnsPrefix>.D`; the prefix may have several labels.
pub fn prefixed(prefix: &str, zone: &Name) -> Result<Name, NameError> {
    let trimmed = prefix.strip_suffix('.').unwrap_or(prefix);
    let labels: Vec<&str> = trimmed.split('.').collect();
    for label in &labels {
        validate_label("dnsPrefix", label)?;
    }
    under(&labels, zone)
}

/// The lowercase wire form of a name: the key of the record store.
pub fn wire_key(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        parse_dotted("domain", "example.com").unwrap()
    }

    #[test]
    fn builds_global_regional_and_zonal_names() {
        let base = ServiceBase::new("nginx", "test", "galactic").unwrap();
        assert_eq!(
            base.global(&zone()).unwrap().to_ascii(),
            "nginx.test.galactic.svc.example.com."
        );
        assert_eq!(
            base.regional("us", &zone()).unwrap().to_ascii(),
            "nginx.test.galactic.svc.us.example.com."
        );
        assert_eq!(
            base.zonal("us1", "us", &zone()).unwrap().to_ascii(),
            "nginx.test.galactic.svc.us1.us.example.com."
        );
    }

    #[test]
    fn empty_labels_are_rejected_never_emitted() {
        let base = ServiceBase::new("svc", "ns", "fed").unwrap();
        assert!(matches!(
            base.regional("", &zone()),
            Err(NameError::InvalidLabel { what: "region", .. })
        ));
        assert!(ServiceBase::new("", "ns", "fed").is_err());
    }

    #[test]
    fn labels_with_dots_or_over_63_octets_are_rejected() {
        assert!(validate_label("zone", "us.east").is_err());
        assert!(validate_label("zone", &"a".repeat(64)).is_err());
        assert!(validate_label("zone", &"a".repeat(63)).is_ok());
        assert!(validate_label("zone", "-a").is_err());
        assert!(validate_label("zone", "us-east-1a").is_ok());
    }

    #[test]
    fn names_longer_than_253_characters_are_rejected() {
        let long = "a".repeat(63);
        let base = ServiceBase::new(&long, &long, &long).unwrap();
        let zone = parse_dotted("domain", &format!("{long}.com")).unwrap();
        assert!(matches!(base.global(&zone), Err(NameError::TooLong { .. })));
    }

    #[test]
    fn a_name_of_253_characters_is_the_longest_allowed() {
        let zone = parse_dotted("domain", &format!("{}.com", "z".repeat(63))).unwrap();
        // first + 1 + 63 + 1 + 63 + 1 + "svc" + 1 + 63 + 1 + "com" = first + 200.
        let name = |first: usize| {
            let (b, c) = ("b".repeat(63), "c".repeat(63));
            under(&[&"a".repeat(first), &b, &c, "svc"], &zone).map(|n| n.to_ascii())
        };
        let longest = name(53).unwrap();
        assert_eq!(longest.len(), 254, "253 characters and the final dot");
        assert!(longest.ends_with(
            ".svc.zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.com."
        ));
        assert!(matches!(name(54), Err(NameError::TooLong { .. })));
    }

    #[test]
    fn prefix_may_have_several_labels() {
        assert_eq!(
            prefixed("www.shop", &zone()).unwrap().to_ascii(),
            "www.shop.example.com."
        );
        assert!(prefixed("www..shop", &zone()).is_err());
    }

    #[test]
    fn wire_key_is_lowercase_wire_format() {
        let name = parse_dotted("host", "WeB.Example.com.").unwrap();
        assert_eq!(&*wire_key(&name), b"\x03web\x07example\x03com\x00");
    }
}
