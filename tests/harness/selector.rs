//! Label and field selectors as the API server parses and applies them.

use serde_json::Value;

use super::store::Stored;

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Clone, Debug, Default)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Clone, Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_label_term(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, object: &Stored) -> bool {
        let label = |key: &str| object.label(key);
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("unable to parse requirement: unbalanced ')' in {text:?}")
                })?;
            }
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unbalanced '(' in {text:?}"
        ));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_label_term(term: &str) -> Result<LabelRequirement, String> {
    let bad = || format!("unable to parse requirement: {term:?}");
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(valid_key(key.trim(), term)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            valid_key(key.trim(), term)?,
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelRequirement::Equals(
            valid_key(key.trim(), term)?,
            value.trim().into(),
        ));
    }
    if let Some(open) = term.find('(') {
        let head = term[..open].trim();
        let list = term[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let values: Vec<String> = list
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let mut words = head.split_whitespace();
        let key = valid_key(words.next().ok_or_else(bad)?, term)?;
        let op = words.next().ok_or_else(bad)?;
        if words.next().is_some() {
            return Err(bad());
        }
        return match op {
            "in" => Ok(LabelRequirement::In(key, values)),
            "notin" => Ok(LabelRequirement::NotIn(key, values)),
            _ => Err(bad()),
        };
    }
    Ok(LabelRequirement::Exists(valid_key(term, term)?))
}

fn valid_key(key: &str, term: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        ))
    }
}

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value` terms.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    terms: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    /// `allowed` is the set of field paths the resource type supports besides
    /// `metadata.name` and `metadata.namespace`.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") && !allowed.contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((
                field.split('.').map(str::to_string).collect(),
                equal,
                value.trim().to_string(),
            ));
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, object: &Stored) -> bool {
        // Other fields than the name and namespace need the object parsed (rare).
        let mut parsed: Option<Value> = None;
        self.terms.iter().all(|(path, equal, value)| {
            let actual = match path
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["metadata", "name"] => object.name.clone(),
                ["metadata", "namespace"] => object.namespace.clone(),
                _ => {
                    let mut v: &Value = parsed.get_or_insert_with(|| object.value());
                    for part in path {
                        v = &v[part.as_str()];
                    }
                    match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    }
                }
            };
            (actual == *value) == *equal
        })
    }
}

/// What a list or watch selects: a namespace (or all), labels and fields.
#[derive(Clone, Debug, Default)]
pub struct ObjectFilter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl ObjectFilter {
    pub fn matches(&self, object: &Stored) -> bool {
        if let Some(ns) = &self.namespace
            && object.namespace != *ns
        {
            return false;
        }
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// Field paths the real API server supports in field selectors, per kind (besides metadata).
pub fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Stored {
        Stored::new(&json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}}))
    }

    #[test]
    fn set_based_requirements_parse_and_match() {
        let sel = LabelSelector::parse("app=web, tier in (a, b),!canary,env!=prod,zone").unwrap();
        assert!(sel.matches(&obj(json!({"app": "web", "tier": "a", "zone": "z"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "c", "zone": "z"}))));
        assert!(!sel.matches(&obj(
            json!({"app": "web", "tier": "a", "zone": "z", "canary": "1"})
        )));
        assert!(!sel.matches(&obj(
            json!({"app": "web", "tier": "a", "zone": "z", "env": "prod"})
        )));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "a"}))));
        let notin = LabelSelector::parse("tier notin (a)").unwrap();
        assert!(notin.matches(&obj(json!({}))));
        assert!(!notin.matches(&obj(json!({"tier": "a"}))));
        assert!(LabelSelector::parse("tier in (a").is_err());
    }

    #[test]
    fn field_selectors_only_accept_supported_fields() {
        let sel = FieldSelector::parse("metadata.name=a,metadata.namespace!=other", &[]).unwrap();
        assert!(sel.matches(&obj(json!({}))));
        assert!(FieldSelector::parse("spec.foo=bar", &[]).is_err());
    }
}
