//! The `check-config` printer: the effective settings as TOML, every default filled in, secrets
//! redacted.

use super::credentials::CredentialSource;
use super::units::{format_duration, format_size};
use super::{Config, LogFormat};

impl Config {
    /// The effective settings as TOML, secrets redacted (for `check-config`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "[server]\nlisten = \"{}\"\nmax_connections = {}\nheader_read_timeout = \"{}\"\nsend_timeout = \"{}\"\nmax_header_size = \"{}\"\nmetrics = {}\n\n[cache]\ndir = {:?}\nmax_size = \"{}\"\ntag_ttl = \"{}\"\nnegative_ttl = \"{}\"\noffline = {}\nprefetch_layers = {}\n",
            self.server.listen,
            self.server.max_connections,
            format_duration(self.server.header_read_timeout),
            format_duration(self.server.send_timeout),
            format_size(self.server.max_header_bytes as u64),
            self.server.metrics,
            self.cache.dir.display().to_string(),
            format_size(self.cache.max_size),
            format_duration(self.cache.tag_ttl),
            format_duration(self.cache.negative_ttl),
            self.cache.offline,
            self.cache.prefetch_layers,
        );
        for (name, keys) in [
            ("import_keys", &self.cache.import_keys),
            ("require_signature", &self.cache.require_signature),
        ] {
            if !keys.is_empty() {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{:?}", k.display().to_string()))
                    .collect();
                s.push_str(&format!("{name} = [{}]\n", keys.join(", ")));
            }
        }
        if let Some(addr) = self.server.metrics_listen {
            let server_end = s.find("\n\n[cache]").unwrap_or(s.len());
            s.insert_str(server_end, &format!("\nmetrics_listen = \"{addr}\""));
        }
        if let Some((cert, key)) = &self.server.tls {
            let server_end = s.find("\n\n[cache]").unwrap_or(s.len());
            s.insert_str(
                server_end,
                &format!(
                    "\ntls_cert = {:?}\ntls_key = {:?}{}",
                    cert.display().to_string(),
                    key.display().to_string(),
                    self.server
                        .client_ca
                        .as_ref()
                        .map(|ca| format!("\nclient_ca = {:?}", ca.display().to_string()))
                        .unwrap_or_default()
                ),
            );
        }
        let format = match self.log {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        s.push_str(&format!("\n[log]\nformat = \"{format}\"\n"));
        if let Some(dc) = &self.docker_config {
            s.push_str(&format!(
                "\n[credentials]\ndocker_config = {:?}\n",
                dc.display().to_string()
            ));
        }
        for u in &self.upstreams {
            let url = if u.url_given {
                format!("url = \"{}\"\n", u.url)
            } else {
                "# url: none (cache.offline: nothing is contacted)\n".to_owned()
            };
            s.push_str(&format!(
                "\n[[upstream]]\nname = {:?}\n{url}default = {}\nlibrary_prefix = {}\nconnect_timeout = \"{}\"\nread_timeout = \"{}\"\nmax_concurrent_requests = {}\n",
                u.name,
                u.default,
                u.library_prefix,
                format_duration(u.connect_timeout),
                format_duration(u.read_timeout),
                u.max_concurrent_requests,
            ));
            if u.from_docker_config {
                // Not settings of this entry: written back, they would be read as such.
                let which = match &u.credentials {
                    CredentialSource::Password { username, .. } => {
                        format!(" (username {username:?})")
                    }
                    CredentialSource::IdentityToken(_) => " (identitytoken)".to_owned(),
                    _ => String::new(),
                };
                s.push_str(&format!(
                    "# credentials: from [credentials] docker_config{which}\n"
                ));
            } else {
                s.push_str(&u.credentials.describe());
            }
            if u.tls_insecure_skip_verify {
                s.push_str("tls_insecure_skip_verify = true\n");
            }
            if let Some(r) = &u.repositories {
                let list: Vec<&str> = r.iter().map(|p| p.as_str()).collect();
                s.push_str(&format!("repositories = {list:?}\n"));
            }
            if let Some(ca) = &u.ca_cert {
                s.push_str(&format!("ca_cert = {:?}\n", ca.display().to_string()));
            }
        }
        if let Some(a) = &self.auth {
            s.push_str(&a.describe());
        }
        if let Some(sh) = &self.shared {
            s.push_str(&sh.describe());
        }
        s
    }
}

impl CredentialSource {
    fn describe(&self) -> String {
        match self {
            CredentialSource::None => String::new(),
            CredentialSource::Password { username, .. } => {
                format!("username = {username:?}\npassword = \"<redacted>\"\n")
            }
            CredentialSource::PasswordFile { username, path } => {
                format!(
                    "username = {username:?}\npassword_file = {:?}\n",
                    path.display().to_string()
                )
            }
            CredentialSource::Helper(p) => {
                format!("credential_helper = {:?}\n", p.display().to_string())
            }
            CredentialSource::IdentityToken(_) => {
                "# credentials: identitytoken from [credentials] docker_config\n".into()
            }
        }
    }
}
