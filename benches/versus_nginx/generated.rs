//! The generated registry: index files whose sizes spread like a real
//! registry's, the download crates and the large ones, served by a `TestUpstream`.

use std::net::SocketAddr;

use support::bench::{download_path, index_path};
use support::registry::{self, CrateSpec, Dep};
use support::upstream::{DlStyle, TestUpstream};

use crate::{
    DOWNLOAD_CRATES, DOWNLOAD_MAX_BYTES, DOWNLOAD_MIN_BYTES, INDEX_FILES, LARGE_CRATES, TTFB_CRATE,
    VERSION_BANDS,
};

/// xorshift64: a fixed-seed generator, so every run serves the same registry.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `least..=most`.
    pub fn between(&mut self, least: usize, most: usize) -> usize {
        least + (self.next() % (most - least + 1) as u64) as usize
    }
}

/// Names index lines depend on, so that lines carry realistic dependency lists.
pub const DEP_NAMES: [&str; 8] = [
    "serde",
    "serde_json",
    "tokio",
    "log",
    "thiserror",
    "bytes",
    "futures-util",
    "once_cell",
];

/// The generated registry and the paths the runs request.
pub struct BenchRegistry {
    pub upstream: TestUpstream,
    /// Every index file: the generated ones and those of the download crates.
    pub index_paths: Vec<String>,
    /// Sizes of the index files in bytes, sorted.
    pub index_sizes: Vec<usize>,
    /// The path of the largest index file.
    pub largest_index: String,
    /// The crates of the downloads run, and their sizes.
    pub download_paths: Vec<String>,
    pub download_sizes: Vec<usize>,
    /// The large crates: (download path, size).
    pub large: Vec<(String, usize)>,
    /// The MISS measurement's crate: (name, version, sha256, size).
    pub ttfb_crate: (String, String, String, usize),
}

/// Generates the registry and starts the delayed upstream serving it.
pub fn bench_registry() -> BenchRegistry {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut specs = Vec::new();
    let mut download_paths = Vec::new();
    let mut download_sizes = Vec::new();
    // Log-spaced sizes: as many small crates as large ones per doubling.
    let ratio = (DOWNLOAD_MAX_BYTES as f64 / DOWNLOAD_MIN_BYTES as f64).ln();
    for n in 0..DOWNLOAD_CRATES {
        let share = n as f64 / (DOWNLOAD_CRATES - 1) as f64;
        let size = (DOWNLOAD_MIN_BYTES as f64 * (ratio * share).exp()) as usize;
        let name = format!("dl-crate-{n}");
        specs.push(CrateSpec::new(&name, "1.0.0").padding(size));
        download_paths.push(download_path(&name, "1.0.0"));
    }
    for (name, size) in LARGE_CRATES {
        specs.push(CrateSpec::new(name, "1.0.0").padding(size));
    }
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let published = upstream.publish_all(&specs);
    let mut large = Vec::new();
    let mut ttfb_crate = None;
    for p in &published {
        let path = download_path(&p.name, &p.vers);
        if download_paths.contains(&path) {
            download_sizes.push(p.tarball.len());
        } else {
            large.push((path, p.tarball.len()));
        }
        if p.name == TTFB_CRATE {
            ttfb_crate = Some((
                p.name.clone(),
                p.vers.clone(),
                p.cksum.clone(),
                p.tarball.len(),
            ));
        }
    }
    let mut index_paths: Vec<String> = specs.iter().map(|s| index_path(&s.name)).collect();
    let mut index_sizes: Vec<usize> = published.iter().map(|p| p.line.len() + 1).collect();
    let mut largest_index = (0, String::new());

    // The index-only crates: bodies set directly, with checksums no tarball
    // backs (nobody downloads them), which is far faster than building tens
    // of thousands of tarballs.
    let mut band_starts = Vec::new();
    let mut acc = 0;
    for (share, least, most) in VERSION_BANDS {
        band_starts.push((acc, least, most));
        acc += INDEX_FILES * share / 100;
    }
    for n in 0..INDEX_FILES {
        let (_, least, most) = band_starts
            .iter()
            .rev()
            .find(|(start, _, _)| n >= *start)
            .copied()
            .expect("the first band starts at 0");
        let versions = rng.between(least, most);
        let name = format!("idx-crate-{n}");
        let mut body = String::new();
        for v in 0..versions {
            let mut spec =
                CrateSpec::new(&name, &format!("{}.{}.{}", v / 100, v % 100 / 10, v % 10));
            for dep in 0..rng.between(0, 5) {
                spec = spec.dep(Dep::new(DEP_NAMES[(n + dep) % DEP_NAMES.len()], "^1"));
            }
            if rng.between(0, 3) == 0 {
                spec = spec.feature("default", &["std"]).feature("std", &[]);
            }
            let cksum = registry::sha256_hex(format!("{name}@{v}").as_bytes());
            body.push_str(&registry::index_line(&spec, &cksum));
            body.push('\n');
        }
        index_sizes.push(body.len());
        upstream.set_index(&name, 200, &body);
        index_paths.push(index_path(&name));
        if body.len() > largest_index.0 {
            largest_index = (body.len(), index_path(&name));
        }
    }
    index_sizes.sort_unstable();
    BenchRegistry {
        upstream,
        index_paths,
        index_sizes,
        largest_index: largest_index.1,
        download_paths,
        download_sizes,
        large,
        ttfb_crate: ttfb_crate.expect("the MISS crate is published"),
    }
}

/// The upstream's `host:port`, for nginx's `upstream` block.
pub fn upstream_addr(upstream: &TestUpstream) -> SocketAddr {
    upstream
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/index/")
        .parse()
        .expect("the test upstream URL is http://HOST:PORT/index/")
}
