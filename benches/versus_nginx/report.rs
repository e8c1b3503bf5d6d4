//! The summary printed at the end and the Markdown report written to
//! `benches/results/versus_nginx.md`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::generated::BenchRegistry;
use crate::ttfb::Timed;
use crate::warm::Encoding;
use crate::wrk::RunResult;
use crate::{
    Options, CHUNK_DELAY_MS, MIRROR_VERSION, TTFB_CRATE, UPSTREAM_DELAY_MS, WRK_TIMEOUT_S,
};

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

pub fn mib_bytes(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// The first line a command prints on stdout or stderr (`nginx -v` uses
/// stderr, `wrk --version` exits 1 after its version line).
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

pub fn nearest_rank(sorted: &[usize], q: f64) -> usize {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A Markdown table: a header of `columns`, each a name and whether it holds
/// numbers (right-aligned), then a line for each row of cells.
fn markdown_table(columns: &[(&str, bool)], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut md = String::from("|");
    for (name, _) in columns {
        let _ = write!(md, " {name} |");
    }
    md.push_str("\n|");
    for (_, numbers) in columns {
        md.push_str(if *numbers { " ---: |" } else { " --- |" });
    }
    md.push('\n');
    for row in rows {
        md.push('|');
        for cell in row {
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md
}

/// Per load, the round with the median requests per second (the lower middle
/// one of an even count).
pub fn median_runs(rounds: &[Vec<RunResult>]) -> Vec<RunResult> {
    let loads = rounds.first().map_or(0, Vec::len);
    (0..loads)
        .map(|load| {
            let mut runs: Vec<&RunResult> = rounds.iter().map(|r| &r[load]).collect();
            runs.sort_by(|a, b| a.wrk.req_per_s.total_cmp(&b.wrk.req_per_s));
            runs[(runs.len() - 1) / 2].clone()
        })
        .collect()
}

/// Everything the report needs.
pub struct Report<'a> {
    pub options: &'a Options,
    pub registry: &'a BenchRegistry,
    /// Per load, the median round of each server.
    pub mirror: Vec<RunResult>,
    pub nginx: Vec<RunResult>,
    /// Every round: `[round][load]`.
    pub mirror_rounds: Vec<Vec<RunResult>>,
    pub nginx_rounds: Vec<Vec<RunResult>>,
    pub encodings: Vec<Encoding>,
    pub timings: Vec<Timed>,
    pub cpus: usize,
    pub nginx_workers: usize,
}

impl Report<'_> {
    /// Per load: its label, and the median runs of the mirror and of nginx.
    fn medians(&self) -> impl Iterator<Item = (&'static str, &RunResult, &RunResult)> {
        let runs = self.mirror.iter().zip(&self.nginx);
        self.options
            .scenarios
            .iter()
            .zip(runs)
            .map(|(scenario, (mirror, nginx))| (scenario.label(), mirror, nginx))
    }

    pub fn comparison_table(&self) -> String {
        let columns = [
            ("load", false),
            ("server", false),
            ("req/s", true),
            ("p50", true),
            ("p90", true),
            ("p99", true),
            ("max", true),
            ("MiB/s", true),
            ("errors", true),
            ("server CPU", true),
            ("CPU µs/req", true),
            ("peak PSS", true),
            ("upstream requests", true),
        ];
        let rows = self.medians().flat_map(|(load, mirror, nginx)| {
            [("crate-mirror", mirror), ("nginx", nginx)].map(|(server, run)| {
                let w = &run.wrk;
                vec![
                    load.to_string(),
                    server.to_string(),
                    format!("{:.0}", w.req_per_s),
                    ms(w.p50),
                    ms(w.p90),
                    ms(w.p99),
                    ms(w.max),
                    format!("{:.0}", w.bytes_per_s / (1024.0 * 1024.0)),
                    w.errors().to_string(),
                    format!("{:.0}%", run.cpu_share(self.cpus) * 100.0),
                    format!("{:.0}", run.cpu_us_per_request()),
                    mib_bytes(run.peak_pss_kib as f64 * 1024.0),
                    run.upstream_requests.to_string(),
                ]
            })
        });
        markdown_table(&columns, rows)
    }

    pub fn rounds_table(&self) -> String {
        let mut md = String::new();
        let rounds = self.mirror_rounds.len();
        md.push_str("| load | server |");
        for round in 1..=rounds {
            let _ = write!(md, " round {round} req/s |");
        }
        md.push_str(" round 1 to last, mirror / nginx |\n| --- | --- |");
        md.push_str(&" ---: |".repeat(rounds + 1));
        md.push('\n');
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            for (server, all) in [
                ("crate-mirror", &self.mirror_rounds),
                ("nginx", &self.nginx_rounds),
            ] {
                let _ = write!(md, "| {} | {server} |", scenario.label());
                for round in all {
                    let _ = write!(md, " {:.0} |", round[i].wrk.req_per_s);
                }
                if server == "crate-mirror" {
                    let ratios: Vec<String> = self
                        .mirror_rounds
                        .iter()
                        .zip(&self.nginx_rounds)
                        .map(|(m, n)| {
                            format!("{:.2}", m[i].wrk.req_per_s / n[i].wrk.req_per_s.max(1e-9))
                        })
                        .collect();
                    let _ = writeln!(md, " {} |", ratios.join(", "));
                } else {
                    md.push_str(" |\n");
                }
            }
        }
        md
    }

    pub fn ratio_table(&self) -> String {
        let columns = [
            ("load", false),
            ("req/s mirror / nginx", true),
            ("p50 mirror / nginx", true),
            ("p99 mirror / nginx", true),
            ("CPU per request mirror / nginx", true),
        ];
        let ratio = |a: f64, b: f64| format!("{:.2}", a / b.max(1e-9));
        let rows = self.medians().map(|(load, m, n)| {
            vec![
                load.to_string(),
                ratio(m.wrk.req_per_s, n.wrk.req_per_s),
                ratio(m.wrk.p50.as_secs_f64(), n.wrk.p50.as_secs_f64()),
                ratio(m.wrk.p99.as_secs_f64(), n.wrk.p99.as_secs_f64()),
                ratio(m.cpu_us_per_request(), n.cpu_us_per_request()),
            ]
        });
        markdown_table(&columns, rows)
    }

    pub fn encoding_table(&self) -> String {
        let columns = [
            ("source", false),
            ("Content-Type", false),
            ("identity body", true),
            ("gzip request: Content-Encoding", false),
            ("gzip body", true),
        ];
        let rows = self.encodings.iter().map(|e| {
            vec![
                e.source.clone(),
                format!("`{}`", e.content_type),
                kib(e.plain_bytes),
                format!("`{}`", e.gzip_encoding),
                kib(e.gzip_bytes),
            ]
        });
        markdown_table(&columns, rows)
    }

    pub fn ttfb_table(&self) -> String {
        let columns = [
            ("source", false),
            ("status", true),
            ("response head", true),
            ("first body byte", true),
            ("complete", true),
            ("MiB/s", true),
            ("bytes", true),
            ("sha256", false),
        ];
        let rows = self.timings.iter().map(|t| {
            let mib_per_s = t.bytes as f64 / (1024.0 * 1024.0) / t.total.as_secs_f64().max(1e-9);
            vec![
                t.source.clone(),
                t.status.to_string(),
                ms(t.headers),
                ms(t.first_byte),
                ms(t.total),
                format!("{mib_per_s:.1}"),
                t.bytes.to_string(),
                (if t.sha_ok { "ok" } else { "MISMATCH" }).to_string(),
            ]
        });
        markdown_table(&columns, rows)
    }

    pub fn registry_line(&self) -> String {
        let r = self.registry;
        let sizes = &r.index_sizes;
        let total: usize = sizes.iter().sum();
        let downloads: usize = r.download_sizes.iter().sum();
        let large: Vec<String> = r
            .large
            .iter()
            .map(|(_, size)| mib_bytes(*size as f64))
            .collect();
        format!(
            "{} index files, {} in all: p50 {}, p90 {}, p99 {}, largest {} \
             ({} over 100 KiB); {} crates in the downloads run ({} to {}, {} in all); \
             large crates of {} (warmed, not in the runs)",
            sizes.len(),
            mib_bytes(total as f64),
            kib(nearest_rank(sizes, 0.5)),
            kib(nearest_rank(sizes, 0.9)),
            kib(nearest_rank(sizes, 0.99)),
            kib(*sizes.last().unwrap_or(&0)),
            sizes.iter().filter(|s| **s > 100 * 1024).count(),
            r.download_sizes.len(),
            kib(*r.download_sizes.iter().min().unwrap_or(&0)),
            kib(*r.download_sizes.iter().max().unwrap_or(&0)),
            mib_bytes(downloads as f64),
            large.join(" and ")
        )
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "registry: {}", self.registry_line());
        let _ = writeln!(
            out,
            "load: wrk -t{} -c{} -d{}s, {} CPUs, nginx worker_processes {}",
            self.options.threads,
            self.options.connections,
            self.options.duration.as_secs(),
            self.cpus,
            self.nginx_workers
        );
        out.push_str(&self.comparison_table());
        out.push('\n');
        out.push_str(&self.ratio_table());
        out.push('\n');
        out.push_str(&self.rounds_table());
        out.push('\n');
        out.push_str(&self.encoding_table());
        if !self.timings.is_empty() {
            out.push('\n');
            out.push_str(&self.ttfb_table());
        }
        out
    }

    pub fn markdown(&self, date: &str) -> String {
        let o = self.options;
        let nginx_version = command_line("nginx", &["-v"]).unwrap_or_else(|| "?".into());
        let wrk_version = command_line("wrk", &["--version"]).unwrap_or_else(|| "?".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let kernel = command_line("uname", &["-r"]).unwrap_or_else(|| "?".into());
        // Which source the binary was built from: the tree may be ahead of HEAD.
        let root = env!("CARGO_MANIFEST_DIR");
        let commit = command_line("git", &["-C", root, "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "?".into());
        let dirty = command_line("git", &["-C", root, "status", "--porcelain", "src"])
            .map_or("", |_| " with uncommitted changes in src/");
        let mut md = String::new();
        md.push_str("# crate-mirror versus nginx proxy_cache\n\n");
        let _ = writeln!(
            md,
            "Generated by `cargo bench --bench versus_nginx -- --duration {} --connections {} \
             --rounds {}` on {date}.\n",
            o.duration.as_secs(),
            o.connections,
            o.rounds
        );
        let _ = writeln!(
            md,
            "- machine: {} CPUs ({cpu_model}), Linux {kernel}; the server under test, wrk \
             and the test upstream share them, all on 127.0.0.1",
            self.cpus
        );
        let _ = writeln!(
            md,
            "- crate-mirror {MIRROR_VERSION} ({}, default settings: {} actix workers on this \
             machine, 60 s index TTL, `--index-max-stale 0`, access log (`RUST_LOG=info`) to a file)",
            o.mirror_binary.as_ref().map_or(
                format!("release build of commit {commit}{dirty}"),
                |b| format!("`{}`", b.display())
            ),
            self.cpus
        );
        let _ = writeln!(
            md,
            "- {nginx_version}, `benches/nginx-proxy-cache.conf.template`: proxy_cache \
             (index files 60 s, crates 30 d), `proxy_cache_use_stale error timeout updating`, \
             `proxy_cache_lock on`, gzip on (level 1, text/plain and application/json), \
             sendfile, keepalive to the upstream, access_log to a file, \
             worker_processes {} ({} workers)",
            o.nginx_workers
                .map_or("auto".to_string(), |n| n.to_string()),
            self.nginx_workers
        );
        let _ = writeln!(
            md,
            "- {wrk_version}: `wrk -t{} -c{} -d{}s --latency --timeout {WRK_TIMEOUT_S}s -s \
             benches/rotate_paths.lua`, every connection rotating over all paths",
            o.threads,
            o.connections,
            o.duration.as_secs()
        );
        let _ = writeln!(
            md,
            "- upstream: the tests' `TestUpstream` with {UPSTREAM_DELAY_MS} ms added to every \
             request\n- registry: {}\n",
            self.registry_line()
        );
        md.push_str(
            "Two deliberate departures from a stock configuration, both explained in the \
             template: `gzip_types *` in `/index/`, because the test upstream sends index \
             files without a Content-Type and nginx would otherwise send them uncompressed; \
             and no `tcp_nopush`, which on this machine's loopback held the end of most \
             responses until the client's delayed ACK (~40 ms, p90 35 ms) and would have \
             measured that stall rather than the cache.\n\n",
        );
        md.push_str("## Warm caches under load\n\n");
        md.push_str(
            "The runs come in rounds; in each round each server is warmed right before its \
             runs (every index file plain and gzip'd, every crate once), checked to answer \
             from its cache, and loaded; rounds alternate which server goes first. The \
             tables show each server's median round per load (by req/s); all rounds are \
             listed after them. `server CPU` is \
             the server's user+system time over the run as a share of all CPUs (nginx: \
             master and workers); `peak PSS` is its proportional memory (nginx's shared \
             cache zone counted once); `upstream requests` reached the upstream during the \
             run.\n\n",
        );
        md.push_str(&self.comparison_table());
        md.push_str("\nRatios (req/s above 1 and latency or CPU below 1 favour the mirror):\n\n");
        md.push_str(&self.ratio_table());
        md.push_str("\nEvery round (the ratios pair the servers' runs of the same round):\n\n");
        md.push_str(&self.rounds_table());
        md.push_str(
            "\nWhat each sends for the largest index file (the mirror compresses each file \
             once, at level 6, and keeps the result; nginx compresses every response, at its \
             default level 1):\n\n",
        );
        md.push_str(&self.encoding_table());
        if !self.timings.is_empty() {
            let (_, _, _, size) = &self.registry.ttfb_crate;
            md.push_str("\n## A large crate on a MISS\n\n");
            let _ = writeln!(
                md,
                "The {} crate `{TTFB_CRATE}` with the upstream sending its body in 16 KiB \
                 chunks {CHUNK_DELAY_MS} ms apart (plus the {UPSTREAM_DELAY_MS} ms per \
                 request), fetched directly, through a fresh mirror (once with nothing \
                 cached: the mirror fetches the index file for the checksum, then the \
                 crate; once after the index file was fetched, as cargo's resolve \
                 leaves it) and through a fresh nginx; then once more through each. \
                 `first body byte` is when the client got the first chunk of the body; \
                 `complete` near the direct time means the server streamed the body as \
                 it arrived instead of first storing it.\n",
                mib_bytes(*size as f64)
            );
            md.push_str(&self.ttfb_table());
        }
        md.push_str("\n## wrk output (the median rounds)\n\n");
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            for (server, run) in [("crate-mirror", &self.mirror[i]), ("nginx", &self.nginx[i])] {
                let _ = writeln!(
                    md,
                    "{server}, {}:\n\n```\n{}\n```\n",
                    scenario.label(),
                    run.raw.trim_end()
                );
            }
        }
        md
    }
}
