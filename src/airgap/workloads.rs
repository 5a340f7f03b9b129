//! `warm --from`: the images in what a site will run, read out of the files it deploys.
//!
//! - Kubernetes manifests, multi-document YAML as `kubectl apply -f` and `helm template` write
//!   them: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
//!   CronJob, PodTemplate and `List`, with `containers`, `initContainers` and
//!   `ephemeralContainers`; and the `helm.sh/images` annotation, where a chart lists images it
//!   starts itself (a YAML list of `{image: ...}` entries, or of names).
//! - Compose files: `services.<name>.image`.
//! - Plain image lists, one name per line (`#` comments and blank lines skipped), as `-f` reads.
//!
//! [`names`] gathers what `warm` is to warm: the command line, the `-f` list and these files.
//!
//! Each image comes with where it was found (file, document, kind/name, container), for
//! `--dry-run`. A document that is neither is skipped with a line saying so, never silently; a
//! YAML error names the file, line and column. The YAML reader is `yaml-rust2` (a maintained
//! pure-Rust YAML 1.2 parser): it gives every document of a stream, positions for its errors,
//! and leaves aliases unexpanded, so a hostile file cannot multiply itself in memory.

use std::io::Read as _;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::{CommandError, Failure, WarmOptions};
use crate::reference::{ImageName, Reference};

/// An image reference found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// As written in the file.
    pub(crate) name: String,
    /// `deploy.yaml, document 2, Deployment/web, initContainers migrate`.
    pub(crate) from: String,
}

/// What a file holds: the images, and the documents skipped (each a line for the user).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) found: Vec<Found>,
    pub(crate) skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: line {line}, column {column}: {problem}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        problem: String,
    },
}

/// Largest file read (a `helm template` of a large platform is a few MiB).
const MAX_FILE: u64 = 64 << 20;

/// Reads the images out of `path` (`-`: standard input).
pub(crate) fn read(path: &Path) -> Result<Scan, SourceError> {
    let file = if path == Path::new("-") {
        "(stdin)".to_owned()
    } else {
        path.display().to_string()
    };
    let fail = |source| SourceError::Read {
        file: file.clone(),
        source,
    };
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(fail)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE).read_to_string(&mut text))
            .map_err(fail)?;
    }
    scan(&file, &text)
}

/// The images in one file's text (see the module's documentation).
pub(crate) fn scan(file: &str, text: &str) -> Result<Scan, SourceError> {
    let mut out = Scan::default();
    if let Some(found) = plain_list(file, text) {
        out.found = found;
        return Ok(out);
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| SourceError::Yaml {
        file: file.to_owned(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        problem: e.info().to_owned(),
    })?;
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("{file}, document {}", i + 1);
        match doc {
            Yaml::Null | Yaml::BadValue => {}
            Yaml::Hash(_) if doc["kind"].as_str().is_some() => object(doc, &at, &mut out),
            Yaml::Hash(_) if doc["services"].as_hash().is_some() => compose(doc, &at, &mut out),
            _ => out.skipped.push(format!(
                "{at}: neither a Kubernetes object nor a Compose file: skipped"
            )),
        }
    }
    Ok(out)
}

/// A file whose every line (comments and blanks aside) is one image name, as `-f` reads it.
fn plain_list(file: &str, text: &str) -> Option<Vec<Found>> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        ImageName::parse(line).ok()?;
        found.push(Found {
            name: line.to_owned(),
            from: format!("{file}, line {}", i + 1),
        });
    }
    (!found.is_empty()).then_some(found)
}

/// A Kubernetes object: its pod template's containers, and the `helm.sh/images` annotation.
fn object(obj: &Yaml, at: &str, out: &mut Scan) {
    let kind = obj["kind"].as_str().unwrap_or("-");
    let label = format!("{kind}/{}", obj["metadata"]["name"].as_str().unwrap_or("-"));
    let before = out.found.len();
    if let Some(listed) = obj["metadata"]["annotations"]["helm.sh/images"].as_str() {
        annotated(
            listed,
            &format!("{at}, {label}, annotation helm.sh/images"),
            out,
        );
    }
    let spec = &obj["spec"];
    let pod = match kind {
        "List" => {
            for (j, item) in obj["items"].as_vec().into_iter().flatten().enumerate() {
                object(item, &format!("{at}, item {}", j + 1), out);
            }
            return;
        }
        "Pod" => spec,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &spec["template"]["spec"],
        "CronJob" => &spec["jobTemplate"]["spec"]["template"]["spec"],
        "PodTemplate" => &obj["template"]["spec"],
        _ => {
            if out.found.len() == before {
                out.skipped
                    .push(format!("{at}: {label} runs no containers: skipped"));
            }
            return;
        }
    };
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in pod[key].as_vec().into_iter().flatten() {
            let cname = c["name"].as_str().unwrap_or("-");
            match c["image"].as_str() {
                Some(image) => out.found.push(Found {
                    name: image.to_owned(),
                    from: format!("{at}, {label}, {key} {cname}"),
                }),
                None => out
                    .skipped
                    .push(format!("{at}, {label}, {key} {cname}: no image: skipped")),
            }
        }
    }
    if out.found.len() == before {
        out.skipped
            .push(format!("{at}: {label} names no container image: skipped"));
    }
}

/// `helm.sh/images`: YAML in an annotation, a list of `{image: NAME, ...}` or of names.
fn annotated(listed: &str, at: &str, out: &mut Scan) {
    let Ok(docs) = YamlLoader::load_from_str(listed) else {
        out.skipped
            .push(format!("{at}: not a YAML list of images: skipped"));
        return;
    };
    for item in docs.iter().filter_map(Yaml::as_vec).flatten() {
        let name = item.as_str().or_else(|| item["image"].as_str());
        match name {
            Some(n) => out.found.push(Found {
                name: n.to_owned(),
                from: at.to_owned(),
            }),
            None => out
                .skipped
                .push(format!("{at}: an entry without an image: skipped")),
        }
    }
}

/// A Compose file: each service's `image` (a service that only builds is said and skipped).
fn compose(doc: &Yaml, at: &str, out: &mut Scan) {
    for (name, service) in doc["services"].as_hash().into_iter().flatten() {
        let name = name.as_str().unwrap_or("-");
        match service["image"].as_str() {
            Some(image) => out.found.push(Found {
                name: image.to_owned(),
                from: format!("{at}, service {name}"),
            }),
            None => out.skipped.push(format!(
                "{at}, service {name}: no image (it builds its own): skipped"
            )),
        }
    }
}

/// The image names given (command line, list file, `--from` files), each with where it came
/// from, checked before any work. Documents `--from` skips are said on stderr.
pub(super) fn names(opts: &WarmOptions) -> Result<Vec<(ImageName, String)>, CommandError> {
    let mut raw: Vec<(String, String)> = opts
        .images
        .iter()
        .map(|n| (n.clone(), "command line".to_owned()))
        .collect();
    if let Some(list) = &opts.list {
        let text = std::fs::read_to_string(list).map_err(|source| Failure::Io {
            what: list.display().to_string(),
            source,
        })?;
        raw.extend(
            text.lines()
                .enumerate()
                .map(|(i, l)| (i, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(i, l)| (l.to_owned(), format!("{}, line {}", list.display(), i + 1))),
        );
    }
    for file in &opts.from {
        let scan = read(file).map_err(Failure::from)?;
        for line in &scan.skipped {
            eprintln!("{line}");
        }
        raw.extend(scan.found.into_iter().map(|f| (f.name, f.from)));
    }
    if raw.is_empty() {
        return Err(
            Failure::Usage("no images named: give IMAGE..., -f LIST or --from FILE").into(),
        );
    }
    raw.into_iter()
        .map(|(n, from)| match ImageName::parse(&n) {
            Ok(name) => Ok((name, from)),
            Err(e) => Err(Failure::NameAt { from, source: e }.into()),
        })
        .collect()
}

/// A name as kubelet and dockerd read it: `nginx` is `docker.io/library/nginx:latest`.
pub(crate) fn as_kubelet_reads(name: &ImageName) -> String {
    let registry = name.registry.as_deref().unwrap_or("docker.io");
    let repo = name.repo.as_str();
    let library = if registry == "docker.io" && !repo.contains('/') {
        "library/"
    } else {
        ""
    };
    match &name.reference {
        Reference::Tag(t) => format!("{registry}/{library}{repo}:{t}"),
        Reference::Digest(d) => format!("{registry}/{library}{repo}@{d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn names(scan: &Scan) -> Vec<&str> {
        scan.found.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn every_container_of_every_workload_kind() {
        let text = format!(
            r#"
# Source: chart/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    helm.sh/images: |
      - name: sidecar
        image: quay.io/org/sidecar:2.0
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: org/migrate:1
      containers:
        - name: app
          image: nginx
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{{name: job, image: "busybox:1.36@{D}"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: debug}}
spec:
  containers: [{{name: c, image: "localhost:5000/tools"}}]
  ephemeralContainers: [{{name: e, image: "ghcr.io/o/dbg@{D}"}}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {{name: agent}}
    spec: {{template: {{spec: {{containers: [{{name: a, image: "agent:3"}}]}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
---
"#
        );
        let s = scan("chart.yaml", &text).unwrap();
        assert_eq!(
            names(&s),
            [
                "quay.io/org/sidecar:2.0",
                "org/migrate:1",
                "nginx",
                &format!("busybox:1.36@{D}"),
                "localhost:5000/tools",
                &format!("ghcr.io/o/dbg@{D}"),
                "agent:3",
            ]
        );
        assert_eq!(
            s.found[1].from,
            "chart.yaml, document 1, Deployment/web, initContainers migrate"
        );
        assert_eq!(
            s.found[6].from,
            "chart.yaml, document 4, item 1, DaemonSet/agent, containers a"
        );
        assert_eq!(
            s.skipped,
            ["chart.yaml, document 5: Service/web runs no containers: skipped"]
        );
    }

    #[test]
    fn compose_services_and_plain_lists() {
        let s = scan(
            "compose.yaml",
            "services:\n  db:\n    image: postgres:16\n  app:\n    build: .\n",
        )
        .unwrap();
        assert_eq!(names(&s), ["postgres:16"]);
        assert_eq!(s.found[0].from, "compose.yaml, document 1, service db");
        assert_eq!(s.skipped.len(), 1);
        let s = scan("list", "# site images\nbusybox\n\nquay.io/org/app:1\n").unwrap();
        assert_eq!(names(&s), ["busybox", "quay.io/org/app:1"]);
        assert_eq!(s.found[1].from, "list, line 4");
    }

    #[test]
    fn a_yaml_error_names_the_line_and_strange_documents_are_said() {
        let e = scan("bad.yaml", "kind: Pod\nspec:\n  containers: [\n").unwrap_err();
        assert!(
            matches!(&e, SourceError::Yaml { file, line, .. } if file == "bad.yaml" && *line >= 3),
            "{e}"
        );
        let s = scan("odd.yaml", "just: a map\n---\n- a\n- list\n").unwrap();
        assert!(s.found.is_empty());
        assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
    }

    #[test]
    fn names_read_as_kubelet_reads_them() {
        let read = |n: &str| as_kubelet_reads(&ImageName::parse(n).unwrap());
        assert_eq!(read("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(read("org/app:1"), "docker.io/org/app:1");
        assert_eq!(
            read(&format!("busybox:1.36@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(read("quay.io/o/a:2"), "quay.io/o/a:2");
    }
}
