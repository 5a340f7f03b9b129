//! [`Site`]: a config file and a cache directory, for running `entrepot` commands (`warm`,
//! `export`, `import`, `ls`, ...) as an operator would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{free_port, scratch};

/// A config and a cache directory, for running `entrepot` commands.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Site {
    /// A site whose `docker.io` upstream is `upstream`; `cache_extra` goes under `[cache]`.
    pub fn new(name: &str, upstream: &str, cache_extra: &str) -> Site {
        let dir = scratch(name);
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\n\n[cache]\ndir = \"{}\"\n{cache_extra}\n\n[[upstream]]\nname = \"docker.io\"\nurl = \"{upstream}\"\ndefault = true\n",
                free_port(),
                dir.path().join("cache").display()
            ),
        )
        .unwrap();
        Site { dir, config }
    }

    /// An air-gapped site: offline, its upstream a port nobody listens on.
    pub fn air_gapped(name: &str) -> Site {
        Site::new(name, "http://127.0.0.1:9", "offline = true")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_entrepot"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its stdout and stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "entrepot {args:?} failed:\n{text}");
        text
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "entrepot {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Names of the files in the cache's blob store.
    pub fn blobs(&self) -> Vec<String> {
        files_under(&self.cache().join("blobs"))
    }

    pub fn temp_files(&self) -> usize {
        files_under(&self.cache().join("tmp")).len()
    }
}

pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}
