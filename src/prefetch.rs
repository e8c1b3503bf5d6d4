//! Dependency-aware prefetch that predicts cargo's resolver: when an index file
//! arrives, the mirror picks the version cargo will pick (the newest non-yanked
//! one matching the parent's requirement), works out which of its optional
//! dependencies the requested features enable, and fetches the index files of
//! exactly those dependencies in the background, before cargo asks — cargo walks
//! the graph one round trip at a time, the mirror need not.
//!
//! Each queued crate carries the requirement and the features its parent asked
//! for. A file a client asked for on its own (a manifest's direct dependency, or
//! one the prediction missed) has no known requirement: its newest non-yanked
//! release with default features is followed, which is what a fresh resolve of
//! a caret requirement picks.
//!
//! Bounded three ways so that it never competes with clients: its own small
//! concurrency limit (below the upstream's), a depth limit counted from the file
//! a client asked for, and a per-minute budget of upstream requests. A client
//! asking for a file being prefetched joins that fetch (the index cache's
//! single flight), so no work is done twice.
//!
//! The run loop owns its fetch tasks (a `JoinSet`) and stops when told to:
//! fetches under way are waited for (each ends with its upstream request),
//! queued ones are dropped before they ask the upstream, nothing new starts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use semver::{Version, VersionReq};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::index::cache::{FetchedIndex, IndexCache};
use crate::index::lines::{lines, ReleaseHead, ReleaseRecord, INDEX_SCHEMA_MAX};
use crate::metrics::Metrics;
use crate::names::CrateName;

#[derive(Debug, Clone, Copy)]
pub struct PrefetchPolicy {
    /// Dependency steps away from a client's request that are still prefetched.
    pub depth: u32,
    pub concurrency: usize,
    pub budget_per_minute: u32,
}

/// What a parent asks of a dependency: its default features or not, and
/// which features (in any syntax a feature list allows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureRequest {
    pub default: bool,
    pub features: BTreeSet<String>,
}

impl FeatureRequest {
    /// A client's own request: cargo's defaults.
    pub fn defaults() -> Self {
        Self {
            default: true,
            features: BTreeSet::new(),
        }
    }

    fn covers(&self, other: &FeatureRequest) -> bool {
        (self.default || !other.default) && other.features.is_subset(&self.features)
    }

    fn merge(&mut self, other: &FeatureRequest) {
        self.default |= other.default;
        self.features.extend(other.features.iter().cloned());
    }
}

/// A dependency that cargo's resolver will look up once its parent is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The crate whose index file is needed (a renamed dependency's real name), lowercased.
    pub krate: String,
    /// The parent's version requirement, as written in the index; `None`
    /// when it is not known (see `needed_by_all`).
    pub req: Option<String>,
    pub request: FeatureRequest,
}

/// The usable releases of an index file that `accept` takes, newest first.
/// Yanked ones are never picked by a fresh resolve; lines that do not parse,
/// or use an index schema cargo would skip, are skipped.
fn candidates(body: &[u8], accept: impl Fn(&Version) -> bool) -> Vec<(Version, &[u8])> {
    let mut found: Vec<(Version, &[u8])> = lines(body)
        .filter_map(|line| {
            let head: ReleaseHead = serde_json::from_slice(line).ok()?;
            if head.yanked || head.v.unwrap_or(1) > INDEX_SCHEMA_MAX {
                return None;
            }
            let version = Version::parse(&head.vers).ok()?;
            accept(&version).then_some((version, line))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found
}

/// The release cargo would pick from an index file for `req`: the newest
/// non-yanked version matching it. Prereleases match only a requirement that
/// names one (semver's rule, which cargo applies).
pub fn choose_release(body: &[u8], req: &VersionReq) -> Option<ReleaseRecord> {
    // A line whose head parses but whose dependencies do not is one cargo
    // cannot use either: the next newest is what it would pick.
    candidates(body, |version| req.matches(version))
        .into_iter()
        .find_map(|(_, line)| serde_json::from_slice(line).ok())
}

/// Cargo's compatibility series: 1.x.y share one, 0.x.y by minor, 0.0.z alone.
fn series(version: &Version) -> (u64, u64, u64) {
    match (version.major, version.minor) {
        (0, 0) => (0, 0, version.patch),
        (0, minor) => (0, minor, 0),
        (major, _) => (major, 0, 0),
    }
}

/// For a crate asked for with no known requirement: the newest release (not a
/// prerelease) of the newest series and of the series before it, newest first.
/// A manifest names one or the other far more often than anything older.
pub fn newest_two_series(body: &[u8]) -> Vec<ReleaseRecord> {
    let mut chosen: Vec<((u64, u64, u64), ReleaseRecord)> = Vec::new();
    for (version, line) in candidates(body, |version| version.pre.is_empty()) {
        let this = series(&version);
        if chosen.iter().any(|(seen, _)| *seen == this) {
            continue;
        }
        if let Ok(record) = serde_json::from_slice(line) {
            chosen.push((this, record));
        }
        if chosen.len() == 2 {
            break;
        }
    }
    chosen.into_iter().map(|(_, record)| record).collect()
}

/// What to follow from a crate whose requirement is unknown: only the
/// dependencies that both `releases` need (their files will be asked for
/// whichever one cargo picks), with the requirement kept only where both
/// agree; where they differ the dependency is unknown in turn. An older series
/// that shares no dependency with the newest (a placeholder, or another code
/// base) says nothing about what a manifest names: the newest is followed.
pub fn needed_by_all(releases: &[ReleaseRecord], request: &FeatureRequest) -> Vec<Needed> {
    let mut all = releases
        .iter()
        .map(|release| needed_dependencies(release, request));
    let Some(newest) = all.next() else {
        return Vec::new();
    };
    let mut common = newest.clone();
    for other in all {
        common.retain_mut(|needed| {
            let same = other.iter().filter(|o| o.krate == needed.krate);
            let mut agreed = false;
            let mut present = false;
            for o in same {
                present = true;
                agreed |= o.req == needed.req;
            }
            if !agreed {
                needed.req = None;
            }
            present
        });
    }
    if common.is_empty() {
        return newest;
    }
    common
}

/// The dependencies of `release` that cargo's resolver will ask for when
/// `request` is what its parents asked of it: normal and build dependencies on
/// every target (the lockfile covers all platforms), non-optional ones and the
/// optional ones the requested features enable; never dev-dependencies (cargo
/// does not resolve those of dependencies) nor ones from another registry.
///
/// Feature values follow cargo: `feat` enables a feature (or the implicit
/// feature of an optional dependency that no `dep:` names), `dep:foo` enables
/// dependency `foo` alone, `foo/bar` enables feature `bar` of `foo` and, if `foo`
/// is optional, `foo` itself (and its implicit feature), `foo?/bar` enables `bar`
/// of `foo` only if something else enables `foo`.
pub fn needed_dependencies(release: &ReleaseRecord, request: &FeatureRequest) -> Vec<Needed> {
    let features: BTreeMap<&str, &Vec<String>> = release
        .features
        .iter()
        .chain(&release.features2)
        .map(|(name, values)| (name.as_str(), values))
        .collect();
    let deps: Vec<_> = release
        .deps
        .iter()
        .filter(|dep| !dep.is_dev() && dep.registry.is_none())
        .collect();
    let optional: HashSet<&str> = deps
        .iter()
        .filter(|dep| dep.optional)
        .map(|dep| dep.name.as_str())
        .collect();
    // An optional dependency named with `dep:` anywhere has no implicit feature.
    let dep_prefixed: HashSet<&str> = features
        .values()
        .flat_map(|values| values.iter())
        .filter_map(|value| value.strip_prefix("dep:"))
        .collect();
    let implicit = |name: &str| optional.contains(name) && !dep_prefixed.contains(name);

    let mut enabled_features: HashSet<String> = HashSet::new();
    let mut enabled_optional: HashSet<String> = HashSet::new();
    let mut dep_features: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut weak: Vec<(String, String)> = Vec::new();
    let mut stack: Vec<String> = request.features.iter().cloned().collect();
    if request.default {
        stack.push("default".to_string());
    }
    while let Some(value) = stack.pop() {
        if let Some(dep) = value.strip_prefix("dep:") {
            enabled_optional.insert(dep.to_string());
        } else if let Some((dep, feature)) = value.split_once('/') {
            if let Some(dep) = dep.strip_suffix('?') {
                weak.push((dep.to_string(), feature.to_string()));
                continue;
            }
            dep_features
                .entry(dep.to_string())
                .or_default()
                .insert(feature.to_string());
            if optional.contains(dep) {
                enabled_optional.insert(dep.to_string());
                if implicit(dep) {
                    stack.push(dep.to_string());
                }
            }
        } else if enabled_features.insert(value.clone()) {
            if let Some(values) = features.get(value.as_str()) {
                stack.extend(values.iter().cloned());
            } else if implicit(&value) {
                enabled_optional.insert(value);
            }
        }
    }
    // Weak features enable no dependency, so one pass after the walk sees
    // every dependency that will be enabled.
    for (dep, feature) in weak {
        let on =
            enabled_optional.contains(&dep) || deps.iter().any(|d| d.name == dep && !d.optional);
        if on {
            dep_features.entry(dep).or_default().insert(feature);
        }
    }

    deps.iter()
        .filter(|dep| !dep.optional || enabled_optional.contains(&dep.name))
        .map(|dep| {
            let mut features: BTreeSet<String> = dep.features.iter().cloned().collect();
            if let Some(more) = dep_features.get(&dep.name) {
                features.extend(more.iter().cloned());
            }
            Needed {
                krate: dep.crate_name().to_ascii_lowercase(),
                req: Some(dep.req.clone()),
                request: FeatureRequest {
                    default: dep.default_features,
                    features,
                },
            }
        })
        .collect()
}

/// A crate to look at, and what its parent asked of it.
#[derive(Debug)]
struct Want {
    name: CrateName,
    /// `None` for a client's own request.
    req: Option<VersionReq>,
    request: FeatureRequest,
    /// Steps from a client's request.
    depth: u32,
}

/// The run loop's state: no lock, only the loop touches it.
#[derive(Default)]
struct Walk {
    /// Files being fetched (with the fetch's id) and the wants waiting for them.
    pending: HashMap<String, (u64, Vec<Want>)>,
    /// The fetch tasks, each ending with its file's key and fetch id.
    fetches: JoinSet<(String, u64)>,
    /// Cancelled when the mirror stops: queued fetches give up.
    stop: CancellationToken,
    /// Per crate and chosen version, the features already followed: a second
    /// parent asking for no more adds nothing. Dropped when the file is fetched
    /// again (its versions may have changed).
    followed: HashMap<String, HashMap<String, FeatureRequest>>,
    next_id: u64,
}

/// Above this many crates remembered, `followed` starts over (re-walking a
/// fresh file costs no upstream request).
const FOLLOWED_MAX: usize = 100_000;

/// The releases of a fetched file to follow: the newest matching `req`, or
/// with no requirement the newest of the two newest series.
///
/// Parsed here, on the runtime, not on the blocking pool: the hop there and
/// back for every want let cargo reach files before the prefetcher did, and a
/// file cargo asks for first is walked by guess (measured: 91% of gamedev's
/// prefetches used, 79% with the hop). The parse is a small share of the
/// mirror's CPU on a cold resolve.
fn releases_to_follow(body: &[u8], req: Option<&VersionReq>) -> Vec<ReleaseRecord> {
    match req {
        Some(req) => choose_release(body, req).into_iter().collect(),
        None => newest_two_series(body),
    }
}

pub struct Prefetcher {
    index: IndexCache,
    policy: PrefetchPolicy,
    permits: Arc<Semaphore>,
    /// Start of the current budget window and what it has spent.
    budget: Mutex<(Instant, u32)>,
    metrics: Arc<Metrics>,
}

impl Prefetcher {
    pub fn new(index: IndexCache, policy: PrefetchPolicy, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            index,
            permits: Arc::new(Semaphore::new(policy.concurrency.max(1))),
            policy,
            budget: Mutex::new((Instant::now(), 0)),
            metrics,
        })
    }

    /// Takes one request from this minute's budget.
    fn spend_budget(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if budget.0.elapsed() >= Duration::from_secs(60) {
            *budget = (Instant::now(), 0);
        }
        if budget.1 >= self.policy.budget_per_minute {
            return false;
        }
        budget.1 += 1;
        true
    }

    fn skipped(&self, reason: &str) {
        self.metrics
            .prefetch
            .skipped
            .with_label_values(&[reason])
            .inc();
    }

    /// Consumes fetch announcements until the cache goes away or `stop` is
    /// cancelled; then waits for the fetches under way.
    pub async fn run(
        self: Arc<Self>,
        mut fetched: mpsc::UnboundedReceiver<FetchedIndex>,
        stop: CancellationToken,
    ) {
        // Its own token below `stop`: the loop also ends when the cache goes
        // away, and then stops its fetches without stopping anyone else.
        let stop_fetches = stop.child_token();
        let mut walk = Walk {
            stop: stop_fetches.clone(),
            ..Walk::default()
        };
        loop {
            // Not biased: announcements and finished fetches take turns as
            // before; a stop seen an iteration late starts nothing (a fetch
            // task checks the token before it asks the upstream).
            tokio::select! {
                () = stop.cancelled() => break,
                event = fetched.recv() => {
                    let Some(event) = event else { break };
                    self.on_fetched(&mut walk, event).await;
                }
                // A fetch ended, whether or not the upstream sent a body (a
                // 304 or an error announces nothing).
                Some(done) = walk.fetches.join_next() => match done {
                    Ok((key, id)) => self.on_done(&mut walk, &key, id).await,
                    Err(err) => tracing::error!(error = %err, "prefetch task failed"),
                },
            }
        }
        stop_fetches.cancel();
        while let Some(done) = walk.fetches.join_next().await {
            if let Err(err) = done {
                tracing::error!(error = %err, "prefetch task failed");
            }
        }
    }

    async fn on_fetched(&self, walk: &mut Walk, event: FetchedIndex) {
        let key = event.name.key().to_string();
        walk.followed.remove(&key);
        let wants = match walk.pending.remove(&key) {
            // A prefetch's file, or one a client asked for first: what the
            // parents asked of it is known.
            Some((_, wants)) => wants,
            None if event.depth == 0 => vec![Want {
                name: event.name,
                req: None,
                request: FeatureRequest::defaults(),
                depth: 0,
            }],
            None => Vec::new(),
        };
        let work = wants
            .into_iter()
            .map(|want| (want, Some(event.body.clone())))
            .collect();
        self.follow(walk, work).await;
    }

    async fn on_done(&self, walk: &mut Walk, key: &str, id: u64) {
        if walk.pending.get(key).map(|(pending, _)| *pending) != Some(id) {
            return;
        }
        let Some((_, wants)) = walk.pending.remove(key) else {
            return;
        };
        // No body was announced (already stored, unchanged, missing or
        // failed): read what the cache holds now, if anything.
        let work = wants.into_iter().map(|want| (want, None)).collect();
        self.follow(walk, work).await;
    }

    /// Walks wants (with the file's body when at hand) and everything they
    /// lead to among fresh files, and starts fetches for the rest.
    async fn follow(&self, walk: &mut Walk, mut work: Vec<(Want, Option<Bytes>)>) {
        while let Some((want, body)) = work.pop() {
            if want.depth > self.policy.depth {
                self.skipped("depth");
                continue;
            }
            let key = want.name.key().to_string();
            let body = match body {
                Some(body) => Some(body),
                None => self.index.peek(&want.name).await,
            };
            let Some(body) = body else {
                self.fetch(walk, want).await;
                continue;
            };
            // A guess from a guess: the file is at hand for cargo, but walking
            // on from it compounds the guesses (most of what such walks
            // fetched was never asked for), so it stops here.
            if want.req.is_none() && want.depth > 0 {
                continue;
            }
            let releases = releases_to_follow(&body, want.req.as_ref());
            let Some(newest) = releases.first() else {
                continue;
            };
            let followed_key = match &want.req {
                Some(_) => newest.vers.clone(),
                // Kept apart from a walk of the same version with a known
                // requirement, which follows more.
                None => format!("?{}", newest.vers),
            };
            if walk.followed.len() > FOLLOWED_MAX {
                walk.followed.clear();
            }
            let followed = walk
                .followed
                .entry(key)
                .or_default()
                .entry(followed_key)
                .or_default();
            if followed.covers(&want.request) {
                continue;
            }
            // Features are unified per version as cargo unifies them: follow
            // the union, so `foo?/bar` sees a `foo` another parent enabled.
            followed.merge(&want.request);
            let request = followed.clone();
            for needed in needed_by_all(&releases, &request) {
                // Names and requirements come from the upstream's data:
                // validated like a client's, skipped when they do not parse.
                let Ok(name) = CrateName::parse(&needed.krate) else {
                    continue;
                };
                let req = match needed.req.as_deref().map(VersionReq::parse) {
                    Some(Ok(req)) => Some(req),
                    Some(Err(_)) => continue,
                    None => None,
                };
                let child = Want {
                    name,
                    req,
                    request: needed.request,
                    depth: want.depth + 1,
                };
                work.push((child, None));
            }
        }
    }

    /// Starts fetching a file not fresh in memory, unless one is under way
    /// (the want then waits for it) or the budget is spent.
    async fn fetch(&self, walk: &mut Walk, want: Want) {
        let key = want.name.key().to_string();
        if let Some((_, waiting)) = walk.pending.get_mut(&key) {
            waiting.push(want);
            return;
        }
        if self.index.is_fresh(&want.name).await {
            // Fresh but no body: the upstream does not have it.
            return;
        }
        if !self.spend_budget() {
            self.skipped("budget");
            return;
        }
        walk.next_id += 1;
        let id = walk.next_id;
        let name = want.name.clone();
        let depth = want.depth;
        walk.pending.insert(key.clone(), (id, vec![want]));
        let index = self.index.clone();
        let permits = self.permits.clone();
        let stop = walk.stop.clone();
        walk.fetches.spawn(async move {
            let permit = tokio::select! {
                // Stopping wins over a free permit: nothing starts after it.
                biased;
                () = stop.cancelled() => None,
                permit = permits.acquire_owned() => permit.ok(),
            };
            if let Some(_permit) = permit {
                if let Err(err) = index.prefetch(&name, depth).await {
                    tracing::debug!(krate = name.key(), error = %err, "prefetch failed");
                }
            }
            (key, id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(vers: &str, yanked: bool, deps: &str, features: &str, features2: &str) -> String {
        format!(
            r#"{{"name":"x","vers":"{vers}","cksum":"c","yanked":{yanked},"deps":[{deps}],"features":{{{features}}},"features2":{{{features2}}}}}"#
        )
    }

    fn chosen(body: &str, req: Option<&str>) -> Option<String> {
        match req {
            Some(req) => {
                choose_release(body.as_bytes(), &VersionReq::parse(req).unwrap()).map(|r| r.vers)
            }
            None => newest_two_series(body.as_bytes())
                .first()
                .map(|r| r.vers.clone()),
        }
    }

    #[test]
    fn requirements_pick_the_newest_matching_non_yanked_release() {
        let body = [
            release("1.0.0", false, "", "", ""),
            release("1.4.2", false, "", "", ""),
            release("1.5.0", true, "", "", ""),
            release("2.0.0-rc.1", false, "", "", ""),
            release("0.3.9", false, "", "", ""),
            release("0.4.0", false, "", "", ""),
            "garbage".to_string(),
            r#"{"name":"x","vers":"not.a.version","cksum":"c"}"#.to_string(),
            r#"{"name":"x","vers":"1.9.0","cksum":"c","v":3}"#.to_string(),
        ]
        .join("\n");
        // Yanked 1.5.0 and the line of an unknown schema are skipped.
        assert_eq!(chosen(&body, Some("1")).as_deref(), Some("1.4.2"));
        assert_eq!(chosen(&body, Some("^1.0")).as_deref(), Some("1.4.2"));
        assert_eq!(chosen(&body, Some("=1.0.0")).as_deref(), Some("1.0.0"));
        assert_eq!(chosen(&body, Some("0.3")).as_deref(), Some("0.3.9"));
        assert_eq!(chosen(&body, Some(">=0.3, <0.5")).as_deref(), Some("0.4.0"));
        // A prerelease only for a requirement that names one.
        assert_eq!(chosen(&body, Some(">=1")).as_deref(), Some("1.4.2"));
        assert_eq!(
            chosen(&body, Some("^2.0.0-rc.1")).as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(chosen(&body, Some("2")), None);
        // A client's own request: newest non-yanked, not a prerelease.
        assert_eq!(chosen(&body, None).as_deref(), Some("1.4.2"));
        assert_eq!(chosen(&body, Some("5")), None);
    }

    #[test]
    fn a_release_whose_dependencies_do_not_parse_is_passed_over() {
        let body = [
            release("1.0.0", false, "", "", ""),
            r#"{"name":"x","vers":"1.1.0","cksum":"c","deps":[{"req":"1"}]}"#.to_string(),
        ]
        .join("\n");
        assert_eq!(chosen(&body, Some("1")).as_deref(), Some("1.0.0"));
    }

    /// A dependency as cargo writes it, with `extra` fields replacing the defaults.
    fn dep(name: &str, extra: &str) -> String {
        let mut value = serde_json::json!({
            "name": name, "req": "^1", "features": [], "optional": false,
            "default_features": true, "target": null, "kind": "normal",
        });
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
        for (key, field) in extra.as_object().unwrap() {
            value[key] = field.clone();
        }
        value.to_string()
    }

    fn needed(line: &str, request: FeatureRequest) -> BTreeMap<String, FeatureRequest> {
        let record: ReleaseRecord = serde_json::from_str(line).unwrap();
        needed_dependencies(&record, &request)
            .into_iter()
            .map(|n| (n.krate, n.request))
            .collect()
    }

    fn names(map: &BTreeMap<String, FeatureRequest>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    fn request(default: bool, features: &[&str]) -> FeatureRequest {
        FeatureRequest {
            default,
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn default_features_decide_which_optional_dependencies_are_followed() {
        let deps = [
            dep("always", ""),
            dep("builder", r#""kind":"build""#),
            dep("tester", r#""kind":"dev""#),
            dep(
                "elsewhere",
                r#""registry":"https://other.example.com/index""#,
            ),
            dep("implicit", r#""optional":true"#),
            dep("by-default", r#""optional":true"#),
            dep("namespaced", r#""optional":true"#),
            dep("unused", r#""optional":true"#),
            dep("winapi", r#""target":"cfg(windows)""#),
        ]
        .join(",");
        let line = release(
            "1.0.0",
            false,
            &deps,
            r#""default":["std","by-default"],"std":[],"extra":["implicit"]"#,
            r#""ns":["dep:namespaced"]"#,
        );
        let with_defaults = needed(&line, FeatureRequest::defaults());
        // Dev-dependencies and other registries never; every target always.
        assert_eq!(
            names(&with_defaults),
            vec!["always", "builder", "by-default", "winapi"]
        );
        let bare = needed(&line, request(false, &[]));
        assert_eq!(names(&bare), vec!["always", "builder", "winapi"]);
        // A feature naming an optional dependency, `dep:` in features2, and
        // the implicit feature of an optional dependency.
        let asked = needed(&line, request(false, &["extra", "ns", "unused"]));
        assert_eq!(
            names(&asked),
            vec![
                "always",
                "builder",
                "implicit",
                "namespaced",
                "unused",
                "winapi"
            ]
        );
        // `dep:namespaced` removed its implicit feature: naming it enables nothing.
        assert!(!needed(&line, request(false, &["namespaced"])).contains_key("namespaced"));
    }

    #[test]
    fn dependency_features_enable_optional_ones_unless_weak() {
        let deps = [
            dep("serde", r#""optional":true"#),
            dep("log", r#""optional":true"#),
            dep(
                "core-dep",
                r#""features":["from-parent"],"default_features":false"#,
            ),
        ]
        .join(",");
        let line = release(
            "1.0.0",
            false,
            &deps,
            r#""default":["core-dep/std"],"logging":["log/std"]"#,
            r#""serde":["dep:serde","core-dep?/serde","log?/serde"]"#,
        );
        let defaults = needed(&line, FeatureRequest::defaults());
        assert_eq!(names(&defaults), vec!["core-dep"]);
        // The parent's own request of core-dep plus what features add to it.
        assert_eq!(
            defaults["core-dep"],
            request(false, &["from-parent", "std"])
        );
        // `log/std` enables the optional `log`; `log?/serde` does not.
        let logging = needed(&line, request(false, &["logging"]));
        assert_eq!(names(&logging), vec!["core-dep", "log"]);
        assert_eq!(logging["log"], request(true, &["std"]));
        let with_serde = needed(&line, request(false, &["serde"]));
        assert_eq!(names(&with_serde), vec!["core-dep", "serde"]);
        assert_eq!(
            with_serde["core-dep"],
            request(false, &["from-parent", "serde"])
        );
        // Both: the weak `log?/serde` now applies, since `logging` enabled log.
        let both = needed(&line, request(false, &["serde", "logging"]));
        assert_eq!(both["log"], request(true, &["serde", "std"]));
    }

    #[test]
    fn renamed_dependencies_name_the_real_crate() {
        let deps = [
            dep("alias", r#""package":"Real-Crate","optional":true"#),
            dep("plain", ""),
        ]
        .join(",");
        let line = release("1.0.0", false, &deps, r#""default":["alias/fast"]"#, "");
        let found = needed(&line, FeatureRequest::defaults());
        assert_eq!(names(&found), vec!["plain", "real-crate"]);
        assert_eq!(found["real-crate"], request(true, &["fast"]));
        assert_eq!(names(&needed(&line, request(false, &[]))), vec!["plain"]);
    }

    #[test]
    fn an_unknown_requirement_follows_what_the_two_newest_series_share() {
        let body = [
            release("0.7.3", false, &dep("ancient", ""), "", ""),
            release(
                "0.8.5",
                false,
                &[dep("shared", ""), dep("moved", ""), dep("old-only", "")].join(","),
                "",
                "",
            ),
            release(
                "0.9.1",
                false,
                &[
                    dep("shared", ""),
                    dep("moved", r#""req":"^2""#),
                    dep("new-only", ""),
                ]
                .join(","),
                "",
                "",
            ),
            release("0.9.2", true, "", "", ""),
            release("0.10.0-beta.1", false, "", "", ""),
        ]
        .join("\n");
        let releases = newest_two_series(body.as_bytes());
        let versions: Vec<&str> = releases.iter().map(|r| r.vers.as_str()).collect();
        assert_eq!(versions, vec!["0.9.1", "0.8.5"]);
        let common = needed_by_all(&releases, &FeatureRequest::defaults());
        let found: Vec<(&str, Option<&str>)> = common
            .iter()
            .map(|n| (n.krate.as_str(), n.req.as_deref()))
            .collect();
        // Both series need `shared` alike; `moved` under different
        // requirements (unknown in turn); the rest only one of them.
        assert_eq!(found, vec![("shared", Some("^1")), ("moved", None)]);
        // A crate with one series: all of its newest release.
        let single = newest_two_series(release("1.0.0", false, &dep("a", ""), "", "").as_bytes());
        assert_eq!(needed_by_all(&single, &FeatureRequest::defaults()).len(), 1);
        // An older series sharing nothing with the newest: the newest alone.
        let unrelated = [
            release("1.0.0", false, &dep("old", ""), "", ""),
            release(
                "2.0.0",
                false,
                &[dep("a", ""), dep("b", "")].join(","),
                "",
                "",
            ),
        ]
        .join("\n");
        let releases = newest_two_series(unrelated.as_bytes());
        assert_eq!(releases.len(), 2);
        let found: Vec<String> = needed_by_all(&releases, &FeatureRequest::defaults())
            .into_iter()
            .map(|n| n.krate)
            .collect();
        assert_eq!(found, vec!["a", "b"]);
    }

    #[test]
    fn feature_requests_cover_and_merge() {
        let mut followed = request(false, &["a"]);
        assert!(followed.covers(&request(false, &[])));
        assert!(!followed.covers(&request(true, &[])));
        assert!(!followed.covers(&request(false, &["b"])));
        followed.merge(&request(true, &["b"]));
        assert_eq!(followed, request(true, &["a", "b"]));
        assert!(followed.covers(&request(true, &["a"])));
    }
}
