//! Air-gapped sites: `export` a verified bundle on the near side, `import`
//! it on the far side, `serve --offline` there with no upstream at all, and
//! real cargo resolves, fetches and builds from it. Damaged and cut-short
//! bundles import nothing; incremental bundles add up to a full one; S3
//! storage on either side.

use std::path::{Path, PathBuf};
use std::process::Output;

use support::cargo::{project, run_ok, CargoHome};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry, CrateSpec};
use support::s3::Garage;
use support::upstream::{DlStyle, TestUpstream};

fn ok(output: Output) -> String {
    support::assert_success(&output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An offline mirror on `data` (no upstream given), with `extra` settings.
fn offline(data: &Path, extra: &[&str], env: &[(String, String)]) -> Mirror {
    let mut args = vec!["--offline", "true"];
    args.extend_from_slice(extra);
    Mirror::builder("")
        .data_dir(data)
        .args(&args)
        .envs(env)
        .public_url()
        .start()
}

/// The manifest of a bundle (its first entry), as JSON.
fn manifest_of(bundle: &Path) -> serde_json::Value {
    let file = std::fs::File::open(bundle).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("manifest.json"));
    serde_json::from_reader(&mut first).unwrap()
}

/// Cargo.lock's registry packages, for comparing two locks.
fn locked(lock: &str) -> Vec<String> {
    lock.lines()
        .filter(|l| l.starts_with("name = ") || l.starts_with("version = "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_bundle_carries_a_project_across_the_gap_and_cargo_builds_there() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let near = Mirror::builder(&upstream.url).public_url().start();
    let app = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    let home = CargoHome::new(&near.index_url());
    run_ok(&home, app.path(), target.path(), &["generate-lockfile"]);
    let near_lock = std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap();

    // From the running mirror, over HTTP: the .crate files are not cached yet
    // (only the index was read) and are fetched through it on the way.
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("project.tar.gz");
    let lockfile = app.path().join("Cargo.lock");
    let said = ok(support::mirror::run(
        &[
            "export",
            "--from",
            &near.url,
            "--lockfile",
            support::utf8(&lockfile),
            "--out",
            support::utf8(&bundle),
        ],
        &[],
    ));
    let manifest = manifest_of(&bundle);
    let crates = manifest["crates"].as_array().unwrap().len();
    assert!(
        said.starts_with("exported ") && said.contains(&format!("and {crates} crates")),
        "{said}"
    );
    assert_eq!(
        crates,
        locked(&near_lock).len() / 2 - 1,
        "every locked registry package"
    );
    assert_eq!(manifest["source"], near.url);
    assert_eq!(manifest["pruned"], false);

    // The far side: no upstream at all from here on.
    drop(near);
    drop(upstream);
    let far_data = work.path().join("far");
    let said = ok(support::mirror::run(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&far_data),
        ],
        &[],
    ));
    assert!(said.contains(&format!("and {crates} crates")), "{said}");
    let far = offline(&far_data, &[], &[]);
    assert_eq!(far.get("/ready").await.status(), 200);
    let stats: serde_json::Value = far.get("/api/stats").await.json().await.unwrap();
    assert_eq!(stats["offline"], true);
    // The dashboard says so, in Chromium.
    let url = format!("{}/", far.url);
    let pill = tokio::task::spawn_blocking(move || {
        let mut browser = support::browser::Browser::open(&url, 1280, 900);
        browser.wait_until(
            "document.getElementById('upstream-pill').textContent.includes('offline')",
            std::time::Duration::from_secs(15),
            "the dashboard's upstream pill says offline",
        );
        browser.eval("document.getElementById('about-upstream').textContent")
    })
    .await
    .unwrap();
    assert!(
        pill.as_str().unwrap_or_default().contains("offline"),
        "{pill}"
    );
    let miss = far.get("/index/no/t-/not-bundled").await;
    assert_eq!(miss.status(), 404);
    assert!(miss.text().await.unwrap().contains("offline"));

    let far_home = CargoHome::new(&far.index_url());
    let far_target = tempfile::tempdir().unwrap();
    run_ok(&far_home, app.path(), far_target.path(), &["fetch"]);
    run_ok(&far_home, app.path(), far_target.path(), &["build"]);
    assert_eq!(
        std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap(),
        near_lock,
        "the far side builds the very versions the near side locked"
    );
    // A fresh resolve on the far side finds the same versions (whole index
    // files travelled, and nothing newer was published meanwhile).
    std::fs::remove_file(app.path().join("Cargo.lock")).unwrap();
    let fresh_home = CargoHome::new(&far.index_url());
    run_ok(
        &fresh_home,
        app.path(),
        far_target.path(),
        &["generate-lockfile"],
    );
    assert_eq!(
        locked(&std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap()),
        locked(&near_lock)
    );
}

/// An upstream with the versions of `lib` given, and `other` 0.1.0.
fn lib_upstream(versions: &[&str]) -> TestUpstream {
    let mut specs: Vec<CrateSpec> = versions.iter().map(|v| CrateSpec::new("lib", v)).collect();
    specs.push(CrateSpec::new("other", "0.1.0"));
    TestUpstream::start(&specs, DlStyle::Plain)
}

#[tokio::test]
async fn with_prune_index_a_fresh_resolve_picks_only_bundled_versions() {
    let upstream = lib_upstream(&["1.0.0", "1.1.0", "1.2.0"]);
    let work = tempfile::tempdir().unwrap();
    let near_data = work.path().join("near");
    let near = Mirror::builder(&upstream.url).data_dir(&near_data).start();
    assert_eq!(near.get("/index/3/l/lib").await.status(), 200);
    // From the data dir, in this process, with the mirror stopped.
    near.stop();
    let (pruned, whole) = (
        work.path().join("pruned.tar.gz"),
        work.path().join("whole.tar.gz"),
    );
    for (out, prune) in [(&pruned, true), (&whole, false)] {
        let mut args = vec![
            "export",
            "--upstream",
            &upstream.url,
            "--data-dir",
            support::utf8(&near_data),
            "--crate",
            "lib@~1.1",
            "--out",
            support::utf8(out),
        ];
        if prune {
            args.push("--prune-index");
        }
        ok(support::mirror::run(&args, &[]));
    }
    drop(upstream);
    let manifest = manifest_of(&pruned);
    assert_eq!(manifest["pruned"], true);
    assert_eq!(manifest["crates"][0]["vers"], "1.1.0");

    let app = project(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nlib = \"1\"\n",
    );
    let target = tempfile::tempdir().unwrap();
    for (bundle, resolves) in [(&pruned, true), (&whole, false)] {
        let data = tempfile::tempdir().unwrap();
        ok(support::mirror::run(
            &[
                "import",
                support::utf8(bundle),
                "--data-dir",
                support::utf8(data.path()),
            ],
            &[],
        ));
        let far = offline(data.path(), &[], &[]);
        let home = CargoHome::new(&far.index_url());
        let _ = std::fs::remove_file(app.path().join("Cargo.lock"));
        let fetch = support::cargo::run(&home, app.path(), target.path(), &["fetch"]);
        let lock = std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap_or_default();
        if resolves {
            support::assert_success(&fetch);
            assert!(lock.contains("version = \"1.1.0\""), "{lock}");
        } else {
            // Whole index files name 1.2.0, which did not travel: cargo
            // resolves to it and its download is the offline 404.
            assert!(!fetch.status.success());
            assert!(lock.contains("version = \"1.2.0\""), "{lock}");
        }
    }
}

/// A bundle of three crates, and a data dir to import into.
fn small_bundle(work: &Path) -> (PathBuf, serde_json::Value) {
    let bundle = work.join("small.tar.gz");
    support::mirror::export_bundle(
        &[
            CrateSpec::new("one", "1.0.0").padding(64 * 1024),
            CrateSpec::new("two", "2.0.0").padding(64 * 1024),
            CrateSpec::new("three", "3.0.0").padding(64 * 1024),
        ],
        &bundle,
    );
    let manifest = manifest_of(&bundle);
    (bundle, manifest)
}

/// The bundle rewritten with `change` applied to the bytes of `entry`.
fn tampered(bundle: &Path, entry: &str, out: &Path, change: impl Fn(&mut Vec<u8>)) {
    let file = std::fs::File::open(bundle).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(gzip);
    for item in archive.entries().unwrap() {
        let mut item = item.unwrap();
        let name = item.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut item, &mut bytes).unwrap();
        if name == entry {
            change(&mut bytes);
        }
        let mut header = item.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, &name, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Nothing of a refused bundle is visible: the offline mirror has no index
/// file and no crate file of it.
async fn nothing_imported(data: &Path) {
    let crates_dir = data.join("crates");
    let stored = support::files_under(&crates_dir);
    assert!(stored.is_empty(), "crate files stored: {stored:?}");
    let far = offline(data, &[], &[]);
    for name in ["3/o/one", "3/t/two", "th/re/three"] {
        assert_eq!(
            far.get(&format!("/index/{name}")).await.status(),
            404,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_damaged_or_cut_short_bundle_imports_nothing_and_names_the_entry() {
    let work = tempfile::tempdir().unwrap();
    let (bundle, manifest) = small_bundle(work.path());
    let victim = manifest["crates"][1]["path"].as_str().unwrap().to_string();

    // One flipped byte in one crate.
    let flipped = work.path().join("flipped.tar.gz");
    tampered(&bundle, &victim, &flipped, |bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
    });
    let data = work.path().join("flipped-data");
    let output = support::mirror::run(
        &[
            "import",
            support::utf8(&flipped),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("entry {victim} is damaged")) && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    nothing_imported(&data).await;

    // Cut short: the last part of the file is missing.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = work.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let data = work.path().join("cut-data");
    let output = support::mirror::run(
        &[
            "import",
            support::utf8(&cut),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(stderr.contains("entry "), "names where: {stderr}");
    nothing_imported(&data).await;

    // An index line whose cksum does not vouch for its crate (the manifest
    // made to agree with the changed crate): refused as well.
    let not_a_bundle = work.path().join("plain.tar.gz");
    std::fs::write(&not_a_bundle, b"not a bundle at all").unwrap();
    let output = support::mirror::run(
        &[
            "import",
            support::utf8(&not_a_bundle),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a crate-mirror bundle"));

    // The good bundle imports, twice without change.
    let data = work.path().join("good-data");
    let first = ok(support::mirror::run(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    ));
    assert!(first.contains("and 3 crates"), "{first}");
    let again = ok(support::mirror::run(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    ));
    assert!(
        again.contains("(0 new versions) and 0 crates")
            && again.contains("3 crates were already there"),
        "{again}"
    );
}

#[tokio::test]
async fn incremental_bundles_add_up_to_a_full_one() {
    let upstream = lib_upstream(&["1.0.0", "1.1.0"]);
    let near = Mirror::builder(&upstream.url).start();
    let work = tempfile::tempdir().unwrap();
    let out = |name: &str| work.path().join(name);
    let export = |args: &[&str], bundle: &Path| {
        let mut all = vec![
            "export",
            "--from",
            &near.url,
            "--prune-index",
            "--out",
            support::utf8(bundle),
        ];
        all.extend_from_slice(args);
        ok(support::mirror::run(&all, &[]))
    };
    export(&["--crate", "lib@=1.0.0"], &out("first.tar.gz"));
    let all = [
        "--crate",
        "lib@=1.0.0",
        "--crate",
        "lib@=1.1.0",
        "--crate",
        "other",
    ];
    let first = out("first.tar.gz");
    let mut since = all.to_vec();
    since.extend_from_slice(&["--since", support::utf8(&first)]);
    let said = export(&since, &out("second.tar.gz"));
    assert!(said.contains("1 already in the earlier bundle"), "{said}");
    export(&all, &out("full.tar.gz"));
    let second = manifest_of(&out("second.tar.gz"));
    let carried: Vec<&str> = second["crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        carried,
        [
            "crates/3/l/lib/lib-1.1.0.crate",
            "crates/ot/he/other/other-0.1.0.crate"
        ],
        "only what the first bundle lacked"
    );
    assert_eq!(second["since"].as_str().map(str::len), Some(64));

    let (in_steps, at_once) = (out("steps"), out("once"));
    for bundle in ["first.tar.gz", "second.tar.gz"] {
        ok(support::mirror::run(
            &[
                "import",
                support::utf8(&out(bundle)),
                "--data-dir",
                support::utf8(&in_steps),
            ],
            &[],
        ));
    }
    ok(support::mirror::run(
        &[
            "import",
            support::utf8(&out("full.tar.gz")),
            "--data-dir",
            support::utf8(&at_once),
        ],
        &[],
    ));
    let (steps, once) = (offline(&in_steps, &[], &[]), offline(&at_once, &[], &[]));
    for path in [
        "/index/3/l/lib",
        "/index/ot/he/other",
        "/api/v1/crates/lib/1.0.0/download",
        "/api/v1/crates/lib/1.1.0/download",
        "/api/v1/crates/other/0.1.0/download",
    ] {
        let a = steps.get(path).await;
        let b = once.get(path).await;
        assert_eq!(
            (a.status().as_u16(), b.status().as_u16()),
            (200, 200),
            "{path}"
        );
        assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{path}");
    }
}

#[tokio::test]
async fn s3_on_either_side() {
    let garage = Garage::start();
    let s3_env = garage.env();
    let s3 = ["--storage", "s3://crates/air-gap"];
    let upstream = TestUpstream::start(
        &[
            CrateSpec::new("one", "1.0.0"),
            CrateSpec::new("two", "2.0.0"),
        ],
        DlStyle::Plain,
    );
    let work = tempfile::tempdir().unwrap();

    // Exported from a mirror on S3 (its data dir, mirror stopped) ...
    let near_data = work.path().join("near");
    let near = Mirror::builder(&upstream.url)
        .data_dir(&near_data)
        .args(&s3)
        .envs(&s3_env)
        .start();
    for crate_path in [
        "/api/v1/crates/one/1.0.0/download",
        "/api/v1/crates/two/2.0.0/download",
    ] {
        assert_eq!(near.get(crate_path).await.status(), 200);
    }
    near.stop();
    let from_s3 = work.path().join("from-s3.tar.gz");
    let mut args = vec!["export", "--offline", "true", "--all-cached"];
    args.extend_from_slice(&s3);
    args.extend_from_slice(&[
        "--data-dir",
        support::utf8(&near_data),
        "--out",
        support::utf8(&from_s3),
    ]);
    let said = ok(support::mirror::run(&args, &s3_env));
    assert!(said.contains("and 2 crates"), "{said}");

    // ... into a local data dir,
    let local = work.path().join("local");
    ok(support::mirror::run(
        &[
            "import",
            support::utf8(&from_s3),
            "--data-dir",
            support::utf8(&local),
        ],
        &[],
    ));
    let far = offline(&local, &[], &[]);
    assert_eq!(
        far.get("/api/v1/crates/two/2.0.0/download").await.status(),
        200
    );
    drop(far);

    // and the reverse: from that local data dir into S3 under another prefix.
    let from_local = work.path().join("from-local.tar.gz");
    ok(support::mirror::run(
        &[
            "export",
            "--offline",
            "true",
            "--all-cached",
            "--data-dir",
            support::utf8(&local),
            "--out",
            support::utf8(&from_local),
        ],
        &[],
    ));
    let s3_far_data = work.path().join("s3-far");
    let far_s3 = ["--storage", "s3://crates/far-side"];
    let mut args = vec![
        "import",
        support::utf8(&from_local),
        "--data-dir",
        support::utf8(&s3_far_data),
    ];
    args.extend_from_slice(&far_s3);
    ok(support::mirror::run(&args, &s3_env));
    let stored: Vec<String> = garage
        .objects()
        .await
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with("far-side/"))
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let far = offline(&s3_far_data, &far_s3, &s3_env);
    assert_eq!(
        far.get("/api/v1/crates/one/1.0.0/download").await.status(),
        200
    );
    assert_eq!(far.get("/index/3/o/one").await.status(), 200);
}

#[tokio::test]
async fn a_private_mirror_exports_with_its_token_and_progress_stays_short_in_a_log() {
    let (token, hash) = support::cargo::new_token();
    let upstream = lib_upstream(&["1.0.0"]);
    let near = Mirror::builder(&upstream.url)
        .public_url()
        .args(&["--auth-tokens", &hash])
        .start();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("private.tar.gz");
    let args = [
        "export",
        "--from",
        &near.url,
        "--crate",
        "lib",
        "--crate",
        "other",
        "--out",
        support::utf8(&bundle),
    ];
    let refused = support::mirror::run(&args, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(!bundle.exists(), "no bundle from a refused export");

    let output = support::mirror::run(&args, &[("CRATE_MIRROR_TOKEN".to_string(), token.clone())]);
    support::assert_success(&output);
    // Not a terminal: a line per tenth at most per phase, no carriage returns.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("export: "))
        .collect();
    assert!(!progress.is_empty() && progress.len() <= 20, "{stderr}");
    assert!(!stderr.contains('\r'));
    let text = std::fs::read(&bundle).unwrap();
    assert!(
        !text.windows(token.len()).any(|w| w == token.as_bytes()),
        "credentials never travel in a bundle"
    );
    let output = support::mirror::run(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&work.path().join("far")),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let said = ok(output);
    assert!(
        said.contains("and 2 crates (") && said.contains(" B)"),
        "{said}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("import: ")),
        "{stderr}"
    );
}
