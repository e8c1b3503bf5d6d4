//! Generated registries: real `.crate` tarballs built in code, with the index
//! lines (and correct `cksum`s) that describe them.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct Dep {
    /// The key in `[dependencies]` (the alias when renamed).
    pub name: String,
    /// The real crate when renamed.
    pub package: Option<String>,
    pub req: String,
    pub optional: bool,
    pub features: Vec<String>,
    pub kind: &'static str,
    pub target: Option<String>,
}

impl Dep {
    pub fn new(name: &str, req: &str) -> Self {
        Dep {
            name: name.to_string(),
            package: None,
            req: req.to_string(),
            optional: false,
            features: Vec::new(),
            kind: "normal",
            target: None,
        }
    }
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    pub fn renamed(mut self, package: &str) -> Self {
        self.package = Some(package.to_string());
        self
    }
    pub fn build(mut self) -> Self {
        self.kind = "build";
        self
    }
    pub fn target(mut self, cfg: &str) -> Self {
        self.target = Some(cfg.to_string());
        self
    }
    pub fn features(mut self, features: &[&str]) -> Self {
        self.features = features.iter().map(|f| f.to_string()).collect();
        self
    }
}

#[derive(Clone, Debug)]
pub struct CrateSpec {
    pub name: String,
    pub vers: String,
    pub deps: Vec<Dep>,
    pub features: BTreeMap<String, Vec<String>>,
    pub yanked: bool,
    /// Extra bytes in the tarball, to make large crates.
    pub padding: usize,
    /// The index line's `pubtime` (RFC 3339); `None`: a fixed date long past.
    pub pubtime: Option<String>,
}

impl CrateSpec {
    pub fn new(name: &str, vers: &str) -> Self {
        CrateSpec {
            name: name.to_string(),
            vers: vers.to_string(),
            deps: Vec::new(),
            features: BTreeMap::new(),
            yanked: false,
            padding: 0,
            pubtime: None,
        }
    }
    pub fn dep(mut self, dep: Dep) -> Self {
        self.deps.push(dep);
        self
    }
    pub fn feature(mut self, name: &str, enables: &[&str]) -> Self {
        self.features.insert(
            name.to_string(),
            enables.iter().map(|s| s.to_string()).collect(),
        );
        self
    }
    pub fn yanked(mut self) -> Self {
        self.yanked = true;
        self
    }
    pub fn padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }
    /// Published at `time` (RFC 3339, UTC), for the release cooldown.
    pub fn pubtime(mut self, time: &str) -> Self {
        self.pubtime = Some(time.to_string());
        self
    }
    /// Published `ago` before now (whole seconds, UTC).
    pub fn published_ago(self, ago: std::time::Duration) -> Self {
        let at = std::time::SystemTime::now() - ago;
        self.pubtime(&rfc3339_utc(at))
    }
}

/// A published version: its tarball and its index line.
#[derive(Clone, Debug)]
pub struct Published {
    pub name: String,
    pub vers: String,
    pub cksum: String,
    pub tarball: Vec<u8>,
    pub line: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn toml_str_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn manifest(spec: &CrateSpec) -> String {
    let mut toml = format!(
        "[package]\nname = {:?}\nversion = {:?}\nedition = \"2021\"\n\n[lib]\npath = \"src/lib.rs\"\n",
        spec.name, spec.vers
    );
    if !spec.features.is_empty() {
        toml.push_str("\n[features]\n");
        for (name, enables) in &spec.features {
            toml.push_str(&format!("{name:?} = {}\n", toml_str_list(enables)));
        }
    }
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dep in &spec.deps {
        let table = match dep.kind {
            "build" => "build-dependencies",
            "dev" => "dev-dependencies",
            _ => "dependencies",
        };
        let section = match &dep.target {
            Some(cfg) => format!("target.{cfg:?}.{table}"),
            None => table.to_string(),
        };
        let mut fields = vec![format!("version = {:?}", dep.req)];
        if let Some(package) = &dep.package {
            fields.push(format!("package = {package:?}"));
        }
        if dep.optional {
            fields.push("optional = true".to_string());
        }
        if !dep.features.is_empty() {
            fields.push(format!("features = {}", toml_str_list(&dep.features)));
        }
        sections.entry(section).or_default().push(format!(
            "{:?} = {{ {} }}",
            dep.name,
            fields.join(", ")
        ));
    }
    for (section, lines) in sections {
        toml.push_str(&format!("\n[{section}]\n{}\n", lines.join("\n")));
    }
    toml
}

/// Builds the `.crate` tarball (gzip'd tar of `{name}-{vers}/...`).
pub fn tarball(spec: &CrateSpec) -> Vec<u8> {
    let root = format!("{}-{}", spec.name, spec.vers);
    let lib = format!(
        "//! Generated test crate.\npub fn id() -> &'static str {{ {:?} }}\n",
        root
    );
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (format!("{root}/Cargo.toml"), manifest(spec).into_bytes()),
        (format!("{root}/src/lib.rs"), lib.into_bytes()),
    ];
    if spec.padding > 0 {
        // Incompressible filler, so the .crate is really that large.
        let mut filler = Vec::with_capacity(spec.padding);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        while filler.len() < spec.padding {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            filler.extend_from_slice(&state.to_le_bytes());
        }
        filler.truncate(spec.padding);
        files.push((format!("{root}/data.bin"), filler));
    }
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("append to tarball");
    }
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

/// The index line, in the upstream's style, with fields the mirror does not know.
pub fn index_line(spec: &CrateSpec, cksum: &str) -> String {
    let deps: Vec<Value> = spec
        .deps
        .iter()
        .map(|dep| {
            let mut value = json!({
                "name": dep.name,
                "req": dep.req,
                "features": dep.features,
                "optional": dep.optional,
                "default_features": true,
                "target": dep.target,
                "kind": dep.kind,
            });
            if let Some(package) = &dep.package {
                value["package"] = json!(package);
            }
            value
        })
        .collect();
    let (plain, new_style): (BTreeMap<_, _>, BTreeMap<_, _>) =
        spec.features.clone().into_iter().partition(|(_, enables)| {
            !enables
                .iter()
                .any(|e| e.starts_with("dep:") || e.contains("?/"))
        });
    let mut line = json!({
        "name": spec.name,
        "vers": spec.vers,
        "deps": deps,
        "cksum": cksum,
        "features": plain,
        "yanked": spec.yanked,
        "links": null,
        "rust_version": "1.60",
        "pubtime": spec.pubtime.as_deref().unwrap_or("2024-01-02T03:04:05Z"),
        "x_unknown_field": {"kept": [1, 2, 3]},
    });
    if !new_style.is_empty() {
        line["features2"] = json!(new_style);
        line["v"] = json!(2);
    }
    serde_json::to_string(&line).expect("serialise index line")
}

/// `time` as RFC 3339 in UTC, whole seconds: `2026-11-22T23:00:39Z`.
pub fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

pub fn publish(spec: &CrateSpec) -> Published {
    let tarball = tarball(spec);
    let cksum = sha256_hex(&tarball);
    Published {
        name: spec.name.clone(),
        vers: spec.vers.clone(),
        line: index_line(spec, &cksum),
        cksum,
        tarball,
    }
}

/// The registry for the end-to-end tests: 25 crates forming a dependency graph
/// with features, optional and renamed dependencies, build and target-specific
/// dependencies, a yanked version, `+build` metadata, a mixed-case name, 1-, 2-
/// and 3-letter names, `-` and `_`, two semver-incompatible series of one crate
/// and an index file with hundreds of versions.
pub fn graph_registry() -> Vec<CrateSpec> {
    let mut specs = vec![
        CrateSpec::new("a", "1.0.0"),
        CrateSpec::new("ab", "0.1.0"),
        CrateSpec::new("ab", "0.2.0"),
        CrateSpec::new("abc", "1.0.0").dep(Dep::new("a", "^1")),
        CrateSpec::new("MixedCase", "1.0.0").dep(Dep::new("ab", "^0.2")),
        CrateSpec::new("under_score", "1.2.0"),
        CrateSpec::new("dash-name", "0.3.0").dep(Dep::new("under_score", "^1.1")),
        CrateSpec::new("yanky", "1.0.0"),
        CrateSpec::new("yanky", "1.0.1").yanked(),
        CrateSpec::new("buildmeta", "1.0.0+build.7"),
        CrateSpec::new("real-name", "2.0.0"),
        CrateSpec::new("opt-dep", "0.5.0"),
        CrateSpec::new("featured", "1.0.0")
            .dep(Dep::new("opt-dep", "^0.5").optional())
            .feature("default", &["std"])
            .feature("std", &[])
            .feature("extra", &["dep:opt-dep"]),
        CrateSpec::new("derive-like", "1.0.0"),
        CrateSpec::new("serde-like", "1.0.0")
            .dep(Dep::new("derive-like", "=1.0.0").optional())
            .feature("derive", &["derive-like"]),
        CrateSpec::new("base-util", "1.0.0"),
        CrateSpec::new("base-util", "1.1.0"),
        CrateSpec::new("old-series", "1.0.0"),
        CrateSpec::new("old-series", "2.0.0"),
        CrateSpec::new("mid-one", "0.1.0").dep(Dep::new("base-util", "^1")),
        CrateSpec::new("mid-two", "0.1.0")
            .dep(Dep::new("base-util", "^1.0"))
            .dep(Dep::new("abc", "^1"))
            .dep(Dep::new("old-series", "^2")),
        CrateSpec::new("top-level", "3.0.0")
            .dep(Dep::new("mid-one", "^0.1"))
            .dep(Dep::new("mid-two", "^0.1").features(&[])),
        CrateSpec::new("build-helper", "0.1.0"),
        CrateSpec::new("uses-build", "0.1.0").dep(Dep::new("build-helper", "^0.1").build()),
        CrateSpec::new("win-only", "0.1.0"),
        CrateSpec::new("platform-dep", "0.1.0")
            .dep(Dep::new("win-only", "^0.1").target("cfg(windows)")),
    ];
    for minor in 0..300 {
        specs.push(CrateSpec::new("many-versions", &format!("0.{minor}.0")));
    }
    specs.push(CrateSpec::new("many-versions", "1.0.0"));
    specs
}

/// The manifest of the project the end-to-end tests build against `graph_registry`.
pub fn graph_project_manifest() -> String {
    r#"[package]
name = "e2e-project"
version = "0.1.0"
edition = "2021"

[dependencies]
a = "1"
ab = "0.2"
abc = "1"
MixedCase = "1"
dash-name = "0.3"
yanky = "1"
buildmeta = "1"
renamed = { package = "real-name", version = "2" }
featured = { version = "1", features = ["extra"] }
serde-like = { version = "1", features = ["derive"] }
top-level = "3"
uses-build = "0.1"
platform-dep = "0.1"
old-series = "1"
many-versions = "1"
"#
    .to_string()
}

/// A layered dependency graph: `levels` levels of `width` crates, each crate
/// depending on three crates of the next level, some optionally, plus a
/// dev-dependency and an older major series per crate, so that prefetch has
/// something to choose. Returns the crates and a root manifest depending on
/// the first level. `levels * width` crates (two versions each).
pub fn layered_graph(levels: usize, width: usize) -> (Vec<CrateSpec>, String) {
    let name = |level: usize, i: usize| format!("layer{level}-crate{i:03}");
    let mut specs = Vec::new();
    for level in 0..levels {
        for i in 0..width {
            // An old series with no dependencies: prefetch must pick the newest.
            specs.push(CrateSpec::new(&name(level, i), "1.0.0"));
            let mut spec = CrateSpec::new(&name(level, i), "2.1.0");
            if level + 1 < levels {
                for k in 0..3 {
                    let dep = Dep::new(&name(level + 1, (i * 3 + k) % width), "^2");
                    spec = spec.dep(dep);
                }
                spec = spec.dep(Dep {
                    kind: "dev",
                    ..Dep::new(&name(levels - 1, i % width), "^2")
                });
            }
            specs.push(spec);
        }
    }
    let mut manifest =
        "[package]\nname = \"layered-root\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n".to_string();
    for i in 0..width.min(4) {
        manifest.push_str(&format!("{} = \"2\"\n", name(0, i)));
    }
    (specs, manifest)
}
