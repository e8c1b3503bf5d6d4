//! The files in deploy/: the systemd unit passes `systemd-analyze verify` and
//! `systemd-analyze security` rates it low, the Kubernetes manifests and the
//! compose file parse and say what they must, the Prometheus config loads in
//! `promtool` with and without a token, and every setting they pass to the
//! mirror is one the mirror knows.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate_mirror::config::defs::SHUTDOWN_TIMEOUT;
use crate_mirror::config::{AnySetting, SETTINGS};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// All YAML documents of a file, as JSON (PyYAML does the parsing; it ships
/// with the machine image and .ci/run installs it where missing).
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let stdout = support::run_ok(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
            ])
            .arg(path),
        || format!("{} does not parse", path.display()),
    );
    serde_json::from_str(&stdout).unwrap()
}

fn known_env(name: &str) -> bool {
    SETTINGS.iter().any(|s| s.about().env_var() == name)
}

/// Runs `systemd-analyze verify` on `units` (name and text each, written
/// side by side so that they may name each other) and fails the test on any
/// message.
fn systemd_verify(units: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("systemd-analyze");
    command.arg("verify");
    for (name, text) in units {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        command.arg(path);
    }
    let output = command.output().expect("systemd-analyze");
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && messages.trim().is_empty(),
        "{messages}"
    );
}

/// The shipped unit, pointed at this build's binary and the shipped
/// environment file.
fn mirror_unit() -> String {
    std::fs::read_to_string(deploy("systemd/crate-mirror.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/crate-mirror",
            env!("CARGO_BIN_EXE_crate-mirror"),
        )
        .replace(
            "/etc/crate-mirror/crate-mirror.env",
            deploy("systemd/crate-mirror.env").to_str().unwrap(),
        )
}

/// The values of `key=` lines in a unit.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = mirror_unit();
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=crate-mirror",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive}");
    }
    systemd_verify(&[("crate-mirror.service", &unit)]);
    for line in std::fs::read_to_string(deploy("systemd/crate-mirror.env"))
        .unwrap()
        .lines()
    {
        if let Some((name, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            assert!(
                known_env(name) || name == "RUST_LOG",
                "unknown setting {name}"
            );
        }
    }
}

/// The git daemon's unit shares the mirror's state directory: with
/// `DynamicUser=yes` that works only when both name the same user (units
/// naming one user share its dynamic UID); otherwise each start of one
/// would chown the directory away from the other.
#[test]
fn the_git_daemon_unit_shares_the_mirrors_user_and_state_directory() {
    let mirror = mirror_unit();
    let daemon =
        std::fs::read_to_string(deploy("git-daemon/crate-mirror-git-daemon.service")).unwrap();
    for key in ["DynamicUser", "User", "Group", "StateDirectory"] {
        let ours = directive(&mirror, key);
        assert_eq!(ours.len(), 1, "crate-mirror.service sets {key} once");
        assert_eq!(directive(&daemon, key), ours, "{key}");
    }
    assert_eq!(
        directive(&daemon, "ReadOnlyPaths"),
        ["/var/lib/crate-mirror"]
    );
    let exec = directive(&daemon, "ExecStart");
    assert!(
        exec.len() == 1 && exec[0].contains("git daemon") && !exec[0].contains("receive-pack"),
        "{exec:?}"
    );
    systemd_verify(&[
        ("crate-mirror.service", &mirror),
        ("crate-mirror-git-daemon.service", &daemon),
    ]);
    let readme = std::fs::read_to_string(deploy("git-daemon/README.md")).unwrap();
    assert!(readme.contains("crate-mirror-git-daemon.service"));
}

#[test]
fn kubernetes_manifests_run_two_probed_replicas_on_s3() {
    let mut objects = Vec::new();
    for file in [
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "ingress.yaml",
    ] {
        objects.extend(yaml_documents(&deploy(&format!("kubernetes/{file}"))));
    }
    let kustomization = &yaml_documents(&deploy("kubernetes/kustomization.yaml"))[0];
    assert_eq!(
        kustomization["resources"].as_array().unwrap().len(),
        5,
        "every file above but the example Secret"
    );
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    for object in &objects {
        assert!(object["apiVersion"].is_string() && object["metadata"]["name"].is_string());
    }
    let deployment = find("Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let env_from = container["envFrom"].as_array().unwrap();
    let secret = find("Secret");
    assert!(env_from
        .iter()
        .any(|e| e["secretRef"]["name"] == secret["metadata"]["name"]));
    let config_map = find("ConfigMap");
    assert!(env_from
        .iter()
        .any(|e| e["configMapRef"]["name"] == config_map["metadata"]["name"]));
    for name in config_map["data"].as_object().unwrap().keys() {
        assert!(known_env(name), "the ConfigMap sets unknown setting {name}");
    }
    assert!(config_map["data"]["CRATE_MIRROR_STORAGE"]
        .as_str()
        .unwrap()
        .starts_with("s3://"));
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            secret["stringData"][key].is_string(),
            "the Secret lacks {key}"
        );
    }
    let service = find("Service");
    assert_eq!(&service["spec"]["selector"], labels);
    let pdb = find("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() >= 1);

    // The Ingress terminates TLS for the host cargo is told to use, and
    // sends it to the Service's named port.
    let public_url = config_map["data"]["CRATE_MIRROR_PUBLIC_URL"]
        .as_str()
        .unwrap();
    let host = public_url
        .strip_prefix("https://")
        .expect("an https public URL behind the Ingress");
    let ingress = find("Ingress");
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], host);
    assert!(ingress["spec"]["tls"][0]["secretName"].is_string());
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], host);
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(backend["port"]["name"], service["spec"]["ports"][0]["name"]);
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"], "off",
        "downloads are streamed, not spooled"
    );
}

#[test]
fn the_compose_file_wires_mirror_store_prometheus_and_grafana() {
    let compose = &yaml_documents(&deploy("container/compose.yaml"))[0];
    let services = compose["services"].as_object().unwrap();
    for service in ["mirror", "garage", "prometheus", "grafana"] {
        assert!(services.contains_key(service), "no {service} service");
    }
    let environment = services["mirror"]["environment"].as_object().unwrap();
    for name in environment.keys() {
        assert!(known_env(name), "compose sets unknown setting {name}");
    }
    assert_eq!(environment["CRATE_MIRROR_STORAGE"], "s3://crates");
    assert_eq!(
        environment["AWS_ENDPOINT_URL"],
        "http://${GARAGE_S3_ADDR:-garage:3900}"
    );
    let prometheus = &yaml_documents(&deploy("container/prometheus.yml"))[0];
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "mirror:8080"
    );
    let dockerfile = std::fs::read_to_string(deploy("container/Dockerfile")).unwrap();
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM")),
        2,
        "not multi-stage"
    );
    assert!(
        dockerfile.contains("USER 10001"),
        "the image must not run as root"
    );
}

/// The compose file's Garage set-up: its image has a shell (Garage's own has
/// none), and its script, run with real Garage against a server that was
/// not set up, leaves the bucket and key the mirror is configured with; run
/// again (as a restarted stack would), it still succeeds.
#[test]
fn the_compose_garage_setup_runs_and_makes_the_mirrors_bucket() {
    use support::s3::Garage;
    let compose = &yaml_documents(&deploy("container/compose.yaml"))[0];
    let setup = &compose["services"]["garage-setup"];
    let dockerfile = setup["build"]["dockerfile_inline"].as_str().unwrap_or("");
    assert!(
        dockerfile.contains("FROM alpine") && dockerfile.contains("COPY --from=garage /garage"),
        "the set-up image has no shell: {setup}"
    );
    assert_eq!(setup["entrypoint"][0], "/bin/sh");
    // The mirror's key is the one the script imports.
    let environment = &compose["services"]["mirror"]["environment"];
    let key_id = environment["AWS_ACCESS_KEY_ID"].as_str().unwrap();
    let secret = environment["AWS_SECRET_ACCESS_KEY"].as_str().unwrap();
    let script = setup["command"][0].as_str().unwrap();
    assert!(script.contains(key_id) && script.contains(secret));

    let garage = Garage::start_bare();
    // Compose's `$$` is a literal `$`; the paths are this machine's.
    let script = script.replace("$$", "$").replace(
        "/garage -c /etc/garage.toml",
        &format!(
            "{} -c {}",
            Garage::binary().display(),
            garage.config().display()
        ),
    );
    for run in ["first", "second"] {
        support::run_ok(Command::new("sh").args(["-c", &script]), || {
            format!("{run} run; Garage's log:\n{}", garage.log())
        });
    }
    // The key the tests' S3 client uses is the compose file's one.
    assert_eq!(key_id, "GK0123456789abcdef01234567");
    garage
        .bucket_ready()
        .unwrap_or_else(|err| panic!("the bucket is not usable with the key: {err}"));
}

/// `systemd-analyze security` rates the shipped unit's exposure under 2.5
/// (it was 5.6 with no capability bounding set and no system call filter).
#[test]
fn systemd_analyze_security_rates_the_unit_under_2_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crate-mirror.service");
    std::fs::write(&path, mirror_unit()).unwrap();
    let report = support::run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path),
        String::new,
    );
    let score: f64 = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for crate-mirror.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"));
    assert!(score < 2.5, "exposure {score}:\n{report}");
}

/// Every resource `kubectl apply -k` applies, parsed.
fn kustomized_objects() -> Vec<(String, serde_json::Value)> {
    let kustomization = &yaml_documents(&deploy("kubernetes/kustomization.yaml"))[0];
    kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|file| {
            let file = file.as_str().unwrap().to_string();
            yaml_documents(&deploy(&format!("kubernetes/{file}")))
                .into_iter()
                .map(move |object| (file.clone(), object))
        })
        .collect()
}

fn kustomized(kind: &str) -> serde_json::Value {
    kustomized_objects()
        .into_iter()
        .map(|(_, object)| object)
        .find(|object| object["kind"] == kind)
        .unwrap_or_else(|| panic!("kubectl apply -k applies no {kind}"))
}

/// `kubectl apply -k` must not apply the example Secret: it would overwrite
/// the real S3 keys with its placeholders. The Deployment still names the
/// Secret, and the kustomization says how to create it.
#[test]
fn kubectl_apply_k_leaves_the_s3_secret_alone() {
    for (file, object) in kustomized_objects() {
        assert_ne!(
            object["kind"], "Secret",
            "{file} is applied by kubectl apply -k"
        );
    }
    let example = &yaml_documents(&deploy("kubernetes/secret.yaml"))[0];
    let name = example["metadata"]["name"].as_str().unwrap();
    let container = &kustomized("Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(container["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["secretRef"]["name"] == name));
    let how = format!("kubectl create secret generic {name}");
    for file in ["kustomization.yaml", "secret.yaml"] {
        let text = std::fs::read_to_string(deploy(&format!("kubernetes/{file}"))).unwrap();
        assert!(text.contains(&how), "{file} does not say `{how}`");
    }
}

/// A deleted pod leaves the Service's endpoints while it sleeps in preStop,
/// then gets SIGTERM and the mirror's shutdown timeout to finish downloads;
/// the grace period must cover both, or the kubelet kills downloads in flight.
#[test]
fn pods_drain_before_sigterm_within_their_grace_period() {
    let deployment = kustomized("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let command = &pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(command[0], "sleep", "no preStop sleep: {command}");
    let delay: u64 = command[1].as_str().unwrap().parse().unwrap();
    assert!(delay >= 5, "a preStop delay of {delay} s");
    let shutdown_env = SHUTDOWN_TIMEOUT.about().env_var();
    let shutdown: u64 = kustomized("ConfigMap")["data"][&shutdown_env]
        .as_str()
        .unwrap_or(SHUTDOWN_TIMEOUT.about().fallback_text())
        .parse()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > delay + shutdown,
        "terminationGracePeriodSeconds {grace} <= preStop {delay} + {shutdown_env} {shutdown}"
    );
}

/// The mirror's largest request body, git upload-pack's (`MAX_REQUEST` in
/// src/http/git.rs), as bytes.
fn git_request_limit() -> u64 {
    let source = include_str!("../src/http/git.rs");
    let value = source
        .lines()
        .find_map(|line| line.strip_prefix("const MAX_REQUEST: usize = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("src/http/git.rs defines MAX_REQUEST");
    match value.split_once(" << ") {
        Some((n, shift)) => n.parse::<u64>().unwrap() << shift.parse::<u32>().unwrap(),
        None => value.replace('_', "").parse().unwrap(),
    }
}

/// The Ingress lets through the bodies the mirror takes: git's upload-pack
/// POSTs, up to 8 MiB (a 64k cap broke fetches with many haves).
#[test]
fn the_ingress_passes_git_upload_pack_bodies() {
    let ingress = kustomized("Ingress");
    let size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    // nginx's size syntax: bytes, or k and m for KiB and MiB.
    let bytes: u64 = match size.split_at(size.len() - 1) {
        (n, "k") => n.parse::<u64>().unwrap() << 10,
        (n, "m") => n.parse::<u64>().unwrap() << 20,
        (n, "g") => n.parse::<u64>().unwrap() << 30,
        _ => size.parse().unwrap(),
    };
    let limit = git_request_limit();
    assert!(
        bytes >= limit,
        "the Ingress caps bodies at {size}, git upload-pack takes {limit} bytes"
    );
}

/// The comment lines directly above the first line of `text` that starts
/// with `line` (indentation ignored), lower-cased.
fn comment_above(text: &str, line: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(line))
        .unwrap_or_else(|| panic!("no line {line}"));
    let mut comment: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with('#'))
        .collect();
    comment.reverse();
    comment.join("\n").to_lowercase()
}

/// On AWS S3 itself the ConfigMap's endpoint must go; its comment says so.
#[test]
fn the_configmap_says_to_delete_the_s3_endpoint_on_aws() {
    let text = std::fs::read_to_string(deploy("kubernetes/configmap.yaml")).unwrap();
    let comment = comment_above(&text, "AWS_ENDPOINT_URL:");
    assert!(
        comment.contains("aws s3") && comment.contains("delete"),
        "AWS_ENDPOINT_URL's comment: {comment:?}"
    );
}

/// The compose file's public URL (what cargo downloads from) is a variable
/// with this machine as its default, and its S3 keys are marked as demo keys.
#[test]
fn the_compose_public_url_is_a_variable_and_its_keys_are_marked_demo() {
    let text = std::fs::read_to_string(deploy("container/compose.yaml")).unwrap();
    let compose = &yaml_documents(&deploy("container/compose.yaml"))[0];
    let url = compose["services"]["mirror"]["environment"]["CRATE_MIRROR_PUBLIC_URL"]
        .as_str()
        .unwrap();
    let (variable, default) = url
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|inner| inner.split_once(":-"))
        .unwrap_or_else(|| panic!("CRATE_MIRROR_PUBLIC_URL is fixed: {url}"));
    assert_eq!(default, "http://localhost:8080");
    assert!(
        text.starts_with('#')
            && comment_above(&text, "services:").contains(&variable.to_lowercase()),
        "the header does not tell about {variable}"
    );
    let comment = comment_above(&text, "AWS_ACCESS_KEY_ID:");
    assert!(comment.contains("demo"), "the keys' comment: {comment:?}");
}

/// The shipped Prometheus config loads as it is, without any token file (the
/// mirror's metrics are open by default), and with its token lines
/// uncommented as its comment says, naming a token file that exists.
#[test]
fn the_prometheus_config_loads_with_and_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), dir.path().join(file)).unwrap();
    }
    let check = |config: &str| {
        support::run_ok(
            Command::new("promtool")
                .args(["check", "config", config])
                .current_dir(dir.path()),
            String::new,
        )
    };
    check("prometheus.yml");

    let token = dir.path().join("token");
    std::fs::write(&token, "cmt_example\n").unwrap();
    let shipped = std::fs::read_to_string(dir.path().join("prometheus.yml")).unwrap();
    let commented = "    # authorization:\n    #   type: Bearer\n    #   credentials_file: /etc/prometheus/crate-mirror-metrics-token\n";
    assert!(
        shipped.contains(commented),
        "the token lines are not there, commented"
    );
    let private = shipped.replace(
        commented,
        &format!(
            "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
            token.display()
        ),
    );
    std::fs::write(dir.path().join("private.yml"), &private).unwrap();
    check("private.yml");
    let parsed = &yaml_documents(&dir.path().join("private.yml"))[0];
    assert_eq!(
        parsed["scrape_configs"][0]["authorization"]["credentials_file"],
        token.to_str().unwrap()
    );
}
