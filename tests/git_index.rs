//! The git fallback index: clones, real cargo over the git protocol (libgit2 and
//! the git command), rebuilds after new files are cached, clones during rebuilds,
//! `crate-mirror warm`, and a private mirror's git index used with a token.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::cargo::{new_token, project, run, run_ok, run_with_env, CargoHome};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry, CrateSpec};
use support::upstream::{DlStyle, TestUpstream};
use support::{client, git_ok, json_of};

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("request")
}

#[tokio::test]
async fn a_clone_holds_the_cached_files_and_a_config_pointing_at_the_mirror() {
    let specs = vec![
        CrateSpec::new("a", "1.0.0"),
        CrateSpec::new("abc", "1.0.0"),
        CrateSpec::new("Inflector", "0.11.4"),
    ];
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .git()
        .args(&["--git-rebuild-delay", "0"])
        .start();
    let mut sparse = Vec::new();
    for path in ["1/a", "3/a/abc", "in/fl/inflector"] {
        let body = mirror
            .get(&format!("/index/{path}"))
            .await
            .bytes()
            .await
            .unwrap();
        sparse.push((path, body));
    }
    mirror.wait_for_git_files(4).await;

    let dir = tempfile::tempdir().unwrap();
    git_ok(
        dir.path(),
        &["clone", "--quiet", &mirror.git_url(), "index"],
    );
    let clone = dir.path().join("index");
    for (path, body) in &sparse {
        assert_eq!(
            &std::fs::read(clone.join(path)).unwrap()[..],
            &body[..],
            "{path}"
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clone.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dl"], format!("{}/api/v1/crates", mirror.url));
    assert_eq!(git_ok(&clone, &["ls-files"]).lines().count(), 4);

    // Read-only, smart HTTP only, bounded request bodies.
    let push = get(&format!(
        "{}/info/refs?service=git-receive-pack",
        mirror.git_url()
    ))
    .await;
    assert_eq!(push.status(), 403);
    let dumb = get(&format!("{}/info/refs", mirror.git_url())).await;
    assert_eq!(dumb.status(), 400);
    // Refused by its declared length: a 413, or (when the mirror's answer and
    // close beat the client's writing) a broken pipe on the client's side.
    let huge = client()
        .post(format!("{}/git-upload-pack", mirror.git_url()))
        .header("content-type", "application/x-git-upload-pack-request")
        .body(vec![b'0'; 9 << 20])
        .send()
        .await;
    match huge {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(err) => {
            let why = format!("{err:?}");
            assert!(why.contains("BrokenPipe") || why.contains("reset"), "{why}");
        }
    }
}

fn lockfile(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Cargo.lock")).unwrap()
}

#[tokio::test]
async fn cargo_resolves_and_builds_through_the_git_index_cached_or_warmed() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let target = tempfile::tempdir().unwrap();

    // Cached by sparse use, then served over git to libgit2 (cargo's default).
    let cached = Mirror::builder(&upstream.url)
        .git()
        .args(&["--git-rebuild-delay", "0"])
        .start();
    let sparse_project = project(&graph_project_manifest());
    CargoHome::new(&cached.index_url()).run_ok(
        sparse_project.path(),
        target.path(),
        &["generate-lockfile"],
    );
    let sparse_lock = lockfile(sparse_project.path());
    let index_files = cached.stats().await["index_files_stored"].as_u64().unwrap();
    cached.wait_for_git_files(index_files + 1).await;

    let libgit2 = project(&graph_project_manifest());
    let home = CargoHome::git(&cached.git_url(), false);
    run_ok(&home, libgit2.path(), target.path(), &["generate-lockfile"]);
    assert_eq!(lockfile(libgit2.path()), sparse_lock);
    run_ok(&home, libgit2.path(), target.path(), &["build"]);

    // A fresh mirror warmed from the lockfile, served to the git command.
    // Prefetch off: this part counts exactly what warm fetched itself.
    let warmed = Mirror::builder(&upstream.url)
        .git()
        .args(&["--git-rebuild-delay", "0", "--prefetch", "off"])
        .start();
    let lock_path = sparse_project.path().join("Cargo.lock");
    let output = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .args(["warm", "--mirror", &warmed.url, "--lockfile"])
        .arg(&lock_path)
        .args(["--crate", "a", "--jobs", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packages = sparse_lock.matches("source = \"registry+").count();
    let names: std::collections::BTreeSet<&str> = sparse_lock
        .split("[[package]]")
        .filter(|block| block.contains("source = \"registry+"))
        .filter_map(|block| block.split('"').nth(1))
        .collect();
    // Every index file and every locked crate was fetched, nothing failed.
    assert!(
        stdout.contains(&format!(
            "fetched {}, already cached 0, failed 0",
            names.len() + packages
        )),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains(&format!("{0}/{0}", names.len() + packages)));
    // Warming again finds everything cached.
    let again = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .args(["warm", "--mirror", &warmed.url, "--lockfile"])
        .arg(&lock_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!(
        "fetched 0, already cached {}, failed 0",
        names.len() + packages
    )));
    warmed.wait_for_git_files(names.len() as u64 + 1).await;

    let cli = project(&graph_project_manifest());
    let home = CargoHome::git(&warmed.git_url(), true);
    run_ok(&home, cli.path(), target.path(), &["generate-lockfile"]);
    assert_eq!(lockfile(cli.path()), sparse_lock);
    run_ok(&home, cli.path(), target.path(), &["build"]);
}

#[tokio::test]
async fn a_crate_cached_later_reaches_git_clients_on_their_next_fetch() {
    let upstream = TestUpstream::start(
        &[
            CrateSpec::new("first", "1.0.0"),
            CrateSpec::new("later", "1.0.0"),
        ],
        DlStyle::Plain,
    );
    let mirror = Mirror::start_git(&upstream.url, "1", "/index/fi/rs/first").await;

    let home = CargoHome::git(&mirror.git_url(), false);
    let target = tempfile::tempdir().unwrap();
    let manifest = "[package]\nname = \"p\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfirst = \"1\"\n";
    let app = project(manifest);
    run_ok(&home, app.path(), target.path(), &["generate-lockfile"]);

    // `later` is not in the git index yet.
    std::fs::write(
        app.path().join("Cargo.toml"),
        format!("{manifest}later = \"1\"\n"),
    )
    .unwrap();
    let missing = run(&home, app.path(), target.path(), &["generate-lockfile"]);
    assert!(!missing.status.success());

    // Once cached (here by a sparse client), the rebuild after the delay adds it.
    assert_eq!(mirror.get("/index/la/te/later").await.status(), 200);
    mirror.wait_for_git_files(3).await;
    run_ok(&home, app.path(), target.path(), &["generate-lockfile"]);
    assert!(lockfile(app.path()).contains("name = \"later\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_and_fetches_during_rebuilds_never_fail() {
    let upstream = TestUpstream::start(&[CrateSpec::new("seed", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::start_git(&upstream.url, "0", "/index/se/ed/seed").await;

    // Keep the index changing: new crates cached one after another.
    let index_url = mirror.index_url();
    let writer_upstream = std::sync::Arc::new(upstream);
    let publisher = writer_upstream.clone();
    let churn = tokio::spawn(async move {
        for n in 0..60 {
            let name = format!("churn{n:03}");
            publisher.publish_all(&[CrateSpec::new(&name, "1.0.0")]);
            let path = format!("ch/ur/{name}");
            assert_eq!(get(&format!("{index_url}{path}")).await.status(), 200);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    let git_url = mirror.git_url();
    let stats_url = format!("{}/api/stats", mirror.url);
    let runtime = tokio::runtime::Handle::current();
    let readers = tokio::task::spawn_blocking(move || {
        // Rebuilds finished so far, from the mirror's own count.
        let builds = || {
            runtime.block_on(async {
                json_of(client().get(&stats_url)).await["git"]["builds"]
                    .as_u64()
                    .expect("a build count")
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let fetcher = dir.path().join("fetcher");
        git_ok(dir.path(), &["clone", "--quiet", &git_url, "fetcher"]);
        let first_count = git_ok(&fetcher, &["ls-files"]).lines().count();
        let mut last_count = first_count;
        // Clones during which at least one rebuild finished.
        let mut overlapped = 0;
        for round in 0..15 {
            let name = format!("clone{round}");
            let before = builds();
            git_ok(dir.path(), &["clone", "--quiet", &git_url, &name]);
            if builds() > before {
                overlapped += 1;
            }
            let clone = dir.path().join(&name);
            assert!(clone.join("config.json").exists());
            git_ok(&clone, &["fsck", "--no-progress"]);
            git_ok(&fetcher, &["pull", "--quiet", "--ff-only"]);
            let count = git_ok(&fetcher, &["ls-files"]).lines().count();
            assert!(count >= last_count, "the index went backwards");
            last_count = count;
        }
        (first_count, last_count, overlapped)
    });
    churn.await.unwrap();
    let (first, last, overlapped) = readers.await.unwrap();
    // The readers ran while the index changed: what they fetched grew, and
    // rebuilds finished while clones were under way.
    assert!(last > first, "the fetcher saw {first} files throughout");
    assert!(overlapped >= 1, "no rebuild finished during any clone");
    eprintln!("{overlapped} of 15 clones overlapped a rebuild; files {first} -> {last}");
    mirror.wait_for_git_files(62).await;
}

/// A CARGO_HOME reaching the mirror as the named registry `mirror` (so that
/// `CARGO_REGISTRIES_MIRROR_TOKEN` applies) through `index`.
fn private_cargo_home(index: &str, fetch_with_cli: bool) -> CargoHome {
    CargoHome::with_config(&format!(
        "[registries.mirror]\nindex = \"{index}\"\n\n[source.crates-io]\nreplace-with = \"mirror\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\ngit-fetch-with-cli = {fetch_with_cli}\n"
    ))
}

/// A HOME set up as the README tells users of a private git index: git's
/// `store` credential helper for the mirror's URL, given the token as the
/// password by `git credential approve`. `None`: a HOME without credentials.
fn git_home(mirror_url: &str, token: Option<&str>) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("home");
    let Some(token) = token else {
        return home;
    };
    let git_as_user = || {
        let mut command = Command::new("git");
        command
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(home.path());
        command
    };
    let key = format!("credential.{mirror_url}.helper");
    let configured = git_as_user()
        .args(["config", "--global", &key, "store"])
        .status()
        .expect("git config");
    assert!(configured.success());
    let (protocol, host) = mirror_url.split_once("://").expect("a URL");
    let mut approve = git_as_user()
        .args(["credential", "approve"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git credential approve");
    approve
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            format!("protocol={protocol}\nhost={host}\nusername=cargo\npassword={token}\n\n")
                .as_bytes(),
        )
        .expect("write credential");
    assert!(approve.wait().expect("git credential approve").success());
    home
}

/// Runs cargo with `token` and `home` as HOME. rustup's proxies find their
/// toolchains through HOME unless RUSTUP_HOME is set, so it is set to the
/// real one.
fn cargo_as(
    cargo_home: &CargoHome,
    home: &Path,
    token: &str,
    project: &Path,
    target: &Path,
    args: &[&str],
) -> std::process::Output {
    let rustup_home = std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| {
        let real_home = std::env::var_os("HOME").unwrap_or_default();
        Path::new(&real_home).join(".rustup").into_os_string()
    });
    run_with_env(
        cargo_home,
        project,
        target,
        args,
        &[
            ("HOME", home.as_os_str()),
            ("RUSTUP_HOME", &rustup_home),
            ("CARGO_REGISTRIES_MIRROR_TOKEN", token.as_ref()),
            ("GIT_TERMINAL_PROMPT", "0".as_ref()),
            ("GIT_CONFIG_NOSYSTEM", "1".as_ref()),
        ],
    )
}

fn assert_ok(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_private_git_index_needs_auth_and_serves_cargo_with_a_token() {
    let (token, hash) = new_token();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .git()
        .private(&hash)
        .args(&["--git-rebuild-delay", "0"])
        .start();
    let target = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {token}");

    // Cache the graph through the sparse index, with the token.
    let sparse_home = private_cargo_home(&format!("sparse+{}", mirror.index_url()), false);
    let sparse_project = project(&graph_project_manifest());
    let no_git_credentials = git_home(&mirror.url, None);
    let sparse = cargo_as(
        &sparse_home,
        no_git_credentials.path(),
        &token,
        sparse_project.path(),
        target.path(),
        &["generate-lockfile"],
    );
    assert_ok(&sparse, "sparse generate-lockfile");
    let sparse_lock = lockfile(sparse_project.path());
    let index_files = mirror.stats_authorized(Some(&bearer)).await["index_files_stored"]
        .as_u64()
        .unwrap();
    mirror
        .wait_for_git_files_authorized(index_files + 1, Some(&bearer))
        .await;

    // The git command, with the credentials in git's store: resolves the same
    // graph, downloads with the token, builds. (Cargo's built-in libgit2 is no
    // option here: it ignores URL-scoped credential helpers, and with any
    // `[http]` setting, CARGO_HTTP_TIMEOUT included, it sends no credentials.)
    let credentials = git_home(&mirror.url, Some(&token));
    let cli_home = private_cargo_home(&mirror.git_url(), true);
    let app = project(&graph_project_manifest());
    for args in [&["generate-lockfile"][..], &["build"]] {
        let output = cargo_as(
            &cli_home,
            credentials.path(),
            &token,
            app.path(),
            target.path(),
            args,
        );
        assert_ok(&output, &format!("cargo {args:?} over git"));
    }
    assert_eq!(lockfile(app.path()), sparse_lock);

    // Without git credentials the index cannot be fetched, token or not.
    let no_credentials_home = private_cargo_home(&mirror.git_url(), true);
    let refused = cargo_as(
        &no_credentials_home,
        no_git_credentials.path(),
        &token,
        project(&graph_project_manifest()).path(),
        target.path(),
        &["generate-lockfile"],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "cargo fetched a private git index without git credentials"
    );
    // git asked for a username it may not prompt for: the 401 challenge.
    assert!(stderr.contains("could not read Username"), "{stderr}");

    // The git index's config.json says what the sparse one says: a
    // token is needed, for downloads too.
    let dir = tempfile::tempdir().unwrap();
    let with_token = mirror.git_url().replace("://", &format!("://git:{token}@"));
    git_ok(dir.path(), &["clone", "--quiet", &with_token, "index"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["auth-required"], true, "{config}");
    assert_eq!(config["dl"], format!("{}/api/v1/crates", mirror.url));
}
