//! Kubeconfig contexts: which exist, what server and CA a context names (for a
//! `KubeFedCluster`), and a kube client for one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Error;

/// A loaded kubeconfig and where it came from (for messages).
#[derive(Clone, Debug)]
pub struct KubeconfigFile {
    pub path: String,
    file: Kubeconfig,
}

/// What a context names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextInfo {
    pub name: String,
    /// The cluster's server URL.
    pub server: String,
    /// PEM CA (`certificate-authority-data` decoded, or the `certificate-authority` file).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    pub namespace: Option<String>,
}

impl KubeconfigFile {
    /// `path`, else `$KUBECONFIG` (merged, as kubectl does), else `~/.kube/config`.
    pub fn load(path: Option<&Path>) -> Result<KubeconfigFile, Error> {
        match path {
            Some(p) => {
                let file = Kubeconfig::read_from(p).map_err(|e| Error::Kubeconfig {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                Ok(KubeconfigFile {
                    path: p.display().to_string(),
                    file,
                })
            }
            None => {
                let label = std::env::var("KUBECONFIG").unwrap_or_else(|_| {
                    std::env::var("HOME")
                        .map(|h| PathBuf::from(h).join(".kube/config").display().to_string())
                        .unwrap_or_else(|_| "~/.kube/config".to_string())
                });
                let file = Kubeconfig::read().map_err(|e| Error::Kubeconfig {
                    path: label.clone(),
                    message: e.to_string(),
                })?;
                Ok(KubeconfigFile { path: label, file })
            }
        }
    }

    /// From YAML text (tests).
    pub fn from_yaml(yaml: &str, path: &str) -> Result<KubeconfigFile, Error> {
        let file = Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Ok(KubeconfigFile {
            path: path.to_string(),
            file,
        })
    }

    pub fn context_names(&self) -> Vec<String> {
        self.file.contexts.iter().map(|c| c.name.clone()).collect()
    }

    fn available(&self) -> String {
        let names = self.context_names();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    }

    /// The named context, or the current one when `None`.
    pub fn context(&self, name: Option<&str>) -> Result<ContextInfo, Error> {
        let name = match name {
            Some(n) => n.to_string(),
            None => self
                .file
                .current_context
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::NoContext {
                    path: self.path.clone(),
                    available: self.available(),
                })?,
        };
        let named = self
            .file
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::ContextNotFound {
                context: name.clone(),
                path: self.path.clone(),
                available: self.available(),
            })?;
        let context_error = |message: String| Error::Context {
            context: name.clone(),
            path: self.path.clone(),
            message,
        };
        let context = named
            .context
            .as_ref()
            .ok_or_else(|| context_error("the context is empty".into()))?;
        let cluster = self
            .file
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| {
                context_error(format!(
                    "its cluster '{}' is not defined in the file",
                    context.cluster
                ))
            })?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| context_error(format!("cluster '{}' has no server", context.cluster)))?;
        let ca_pem =
            match (
                &cluster.certificate_authority_data,
                &cluster.certificate_authority,
            ) {
                (Some(data), _) => Some(decode_base64(data).map_err(|e| {
                    context_error(format!("invalid certificate-authority-data: {e}"))
                })?),
                (None, Some(file)) => Some(std::fs::read(file).map_err(|e| {
                    context_error(format!("cannot read certificate-authority {file}: {e}"))
                })?),
                (None, None) => None,
            };
        Ok(ContextInfo {
            name,
            server,
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            namespace: context.namespace.clone(),
        })
    }

    /// A kube client for a context (the current one when `None`), with short timeouts so a
    /// dead cluster fails a command instead of hanging it.
    pub async fn client(&self, context: Option<&str>) -> Result<kube::Client, Error> {
        let info = self.context(context)?;
        let options = KubeConfigOptions {
            context: Some(info.name.clone()),
            ..Default::default()
        };
        let context_error = |message: String| Error::Context {
            context: info.name.clone(),
            path: self.path.clone(),
            message,
        };
        let mut config = kube::Config::from_custom_kubeconfig(self.file.clone(), &options)
            .await
            .map_err(|e| context_error(e.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        kube::Client::try_from(config).map_err(|e| context_error(e.to_string()))
    }
}

/// Base64 (standard alphabet) as in kubeconfig `*-data` fields.
fn decode_base64(data: &str) -> Result<Vec<u8>, String> {
    serde_json::from_value::<ByteString>(serde_json::Value::String(data.trim().to_string()))
        .map(|b| b.0)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: v1\nkind: Config\ncurrent-context: host\n\
        clusters:\n- name: host\n  cluster:\n    server: https://10.0.0.1:6443\n    \
        certificate-authority-data: UEVN\n- name: m\n  cluster:\n    server: http://127.0.0.1:1\n\
        users:\n- name: u\n  user:\n    token: t\n\
        contexts:\n- name: host\n  context:\n    cluster: host\n    user: u\n\
        - name: member\n  context:\n    cluster: m\n    user: u\n    namespace: apps\n";

    #[test]
    fn a_context_names_its_server_and_decoded_ca() {
        let file = KubeconfigFile::from_yaml(YAML, "/tmp/kc").unwrap();
        let host = file.context(None).unwrap();
        assert_eq!(host.server, "https://10.0.0.1:6443");
        assert_eq!(host.ca_pem.as_deref(), Some(&b"PEM"[..]));
        let member = file.context(Some("member")).unwrap();
        assert_eq!(member.ca_pem, None);
        assert_eq!(member.namespace.as_deref(), Some("apps"));
    }

    #[test]
    fn an_unknown_context_lists_the_available_ones() {
        let file = KubeconfigFile::from_yaml(YAML, "/tmp/kc").unwrap();
        let err = file.context(Some("x")).unwrap_err().to_string();
        assert_eq!(
            err,
            "context 'x' not found in /tmp/kc; available: host, member"
        );
    }
}
