//! nginx in the foreground, as the front of the scale-out tests and a benchmark contender.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::*;

/// nginx in the foreground, stopped on drop with SIGTERM to its master, which ends its workers
/// first (a SIGKILL to the master alone would leave the workers running, orphaned).
pub struct NginxProcess(Child);

impl Drop for NginxProcess {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// Runs nginx in the foreground with `dir` as its prefix and `dir/nginx.conf` as its config;
/// returns once `port` accepts connections.
pub fn start_nginx(dir: &Path, port: u16) -> NginxProcess {
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian package nginx) must be installed");
    let nginx = NginxProcess(child);
    wait_for_port(port, "nginx");
    nginx
}

impl NginxProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}
