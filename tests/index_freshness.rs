//! The index cache's phases with a clock the test moves instead of sleeping
//! through TTLs: fresh, expired and served while one refresh runs, past
//! `index-max-stale`, negative entries, stale copies when the upstream fails,
//! and the revalidate interval (with the origin each upstream request is
//! counted under), and the supply-chain policy's release cooldown, whose
//! held-back versions come of age as the clock passes their release time.
//! The cache runs in-process against the test upstream on loopback.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate_mirror::clock::Clock;
use crate_mirror::index::cache::{CacheOutcome, IndexCache, IndexLookup, IndexPolicy};
use crate_mirror::index::store::IndexStore;
use crate_mirror::metrics::Metrics;
use crate_mirror::names::CrateName;
use crate_mirror::policy::{CooldownMode, CrateRule, Policy};
use crate_mirror::upstream::UpstreamClient;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

const TTL: Duration = Duration::from_secs(60);

struct Fixture {
    upstream: TestUpstream,
    cache: IndexCache,
    clock: Clock,
    metrics: Arc<Metrics>,
    db: sled::Db,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A cache of a test upstream serving `abc` 1.0.0, with `max_stale`
    /// past the one-minute TTL and a 30 s negative TTL.
    fn new(max_stale: Duration) -> Self {
        let specs = [CrateSpec::new("abc", "1.0.0")];
        Self::with(&specs, TTL, max_stale, Policy::default())
    }

    /// A cache of a test upstream serving `specs`, under `supply` (the
    /// supply-chain policy).
    fn with(specs: &[CrateSpec], ttl: Duration, max_stale: Duration, supply: Policy) -> Self {
        let upstream = TestUpstream::start(specs, DlStyle::Plain);
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::open(dir.path().join("sled")).expect("open sled");
        let clock = Clock::movable();
        let (cache, metrics) = cache_on(&db, &upstream, ttl, max_stale, supply, &clock);
        Fixture {
            upstream,
            cache,
            clock,
            metrics,
            db,
            _dir: dir,
        }
    }

    /// Publishes `version` of `name` at the upstream (a new index line).
    fn publish(&self, name: &str, version: &str) {
        self.upstream.publish_all(&[CrateSpec::new(name, version)]);
    }

    async fn get(&self, name: &str) -> IndexLookup {
        let name = CrateName::parse(name).expect("a valid name");
        self.cache.get(&name).await.expect("an answer")
    }

    /// The upstream index requests counted under `origin`, whatever their status.
    fn counted(&self, origin: &str) -> u64 {
        use prometheus::core::Collector;
        let requests = &self.metrics.upstream.requests;
        let families = requests.collect();
        let has = |metric: &prometheus::proto::Metric, name: &str, value: &str| {
            metric
                .get_label()
                .iter()
                .any(|l| l.name() == name && l.value() == value)
        };
        families[0]
            .get_metric()
            .iter()
            .filter(|m| has(m, "kind", "index") && has(m, "origin", origin))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The upstream requests for `abc`'s index file so far.
    fn asked(&self) -> usize {
        self.upstream.count("/index/3/a/abc")
    }
}

/// A cache on `db` of `upstream`, with a 30 s negative TTL, under `supply`.
fn cache_on(
    db: &sled::Db,
    upstream: &TestUpstream,
    ttl: Duration,
    max_stale: Duration,
    supply: Policy,
    clock: &Clock,
) -> (IndexCache, Arc<Metrics>) {
    let store = IndexStore::open(db).expect("index tree");
    let metrics = Arc::new(Metrics::new());
    let client = UpstreamClient::new(
        upstream.url.clone(),
        Duration::from_secs(5),
        Duration::from_secs(5),
        Duration::from_secs(300),
        8,
        metrics.clone(),
    )
    .expect("upstream client");
    let policy = IndexPolicy {
        ttl,
        max_stale,
        negative_ttl: Duration::from_secs(30),
        hot_cache_bytes: 16 << 20,
    };
    let cache = IndexCache::builder(store, Arc::new(client), policy, metrics.clone())
        .clock(clock.clone())
        .supply_chain(supply)
        .build();
    (cache, metrics)
}

fn body(lookup: &IndexLookup) -> String {
    let file = lookup.entry.file().expect("a found file");
    let plain = file.decompress().expect("a whole gzip body");
    String::from_utf8(plain.to_vec()).expect("utf-8 index file")
}

/// Asks until `done` holds for an answer, for at most 10 s: a background
/// refresh lands when the upstream has answered, not at a known time.
async fn until(fixture: &Fixture, done: impl Fn(&IndexLookup) -> bool) -> IndexLookup {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lookup = fixture.get("abc").await;
        if done(&lookup) || Instant::now() > deadline {
            return lookup;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn within_the_ttl_the_copy_is_served_and_past_it_one_refresh_runs_behind_it() {
    let fixture = Fixture::new(Duration::from_secs(600));
    let first = fixture.get("abc").await;
    assert_eq!(first.outcome, CacheOutcome::Miss);
    fixture.publish("abc", "1.1.0");

    // A second short of the TTL: still the first copy, the upstream not asked.
    fixture.clock.advance(TTL - Duration::from_secs(1));
    let within = fixture.get("abc").await;
    assert_eq!(within.outcome, CacheOutcome::Hit);
    assert!(!body(&within).contains("1.1.0"));
    assert_eq!(fixture.asked(), 1);

    // Past it: the expired copy at once, and one refresh for every asker.
    fixture.clock.advance(Duration::from_secs(2));
    fixture
        .upstream
        .switches
        .held
        .lock()
        .unwrap()
        .push("/abc".into());
    for _ in 0..3 {
        let lookup = fixture.get("abc").await;
        assert_eq!(lookup.outcome, CacheOutcome::Updating);
        assert_eq!(body(&lookup), body(&first));
    }
    fixture.upstream.switches.held.lock().unwrap().clear();
    let refreshed = until(&fixture, |l| l.outcome == CacheOutcome::Hit).await;
    assert!(
        body(&refreshed).contains("\"1.1.0\""),
        "{}",
        body(&refreshed)
    );
    assert_eq!(fixture.asked(), 2);
    // The refresh behind the expired copy is nobody's wait: a revalidation.
    assert_eq!(fixture.counted("client"), 1);
    assert_eq!(fixture.counted("revalidation"), 1);
}

#[tokio::test]
async fn past_index_max_stale_a_client_waits_for_the_upstream() {
    let fixture = Fixture::new(Duration::from_secs(60));
    fixture.get("abc").await;
    fixture.publish("abc", "1.1.0");
    fixture.clock.advance(TTL + Duration::from_secs(61));
    let lookup = fixture.get("abc").await;
    assert_eq!(lookup.outcome, CacheOutcome::Revalidated);
    assert!(body(&lookup).contains("\"1.1.0\""));
    assert_eq!(fixture.asked(), 2);
}

#[tokio::test]
async fn a_missing_crate_is_remembered_for_the_negative_ttl_only() {
    let fixture = Fixture::new(Duration::ZERO);
    let path = "/index/la/te/latecomer";
    let first = fixture.get("latecomer").await;
    assert_eq!(first.outcome, CacheOutcome::Miss);
    assert!(!first.entry.is_found());
    fixture.publish("latecomer", "1.0.0");
    fixture.clock.advance(Duration::from_secs(29));
    let remembered = fixture.get("latecomer").await;
    assert_eq!(remembered.outcome, CacheOutcome::Hit);
    assert!(!remembered.entry.is_found());
    assert_eq!(fixture.upstream.count(path), 1);

    fixture.clock.advance(Duration::from_secs(2));
    let found = fixture.get("latecomer").await;
    assert_eq!(found.outcome, CacheOutcome::Miss);
    assert!(body(&found).contains("\"1.0.0\""));
    assert_eq!(fixture.upstream.count(path), 2);
}

#[tokio::test]
async fn a_failing_upstream_leaves_the_stale_copy_served_and_retried_after_a_pause() {
    // No serving while updating: past the TTL a client waits for the upstream.
    let fixture = Fixture::new(Duration::ZERO);
    let first = fixture.get("abc").await;
    fixture
        .upstream
        .switches
        .fail_status
        .store(503, Ordering::SeqCst);
    fixture.clock.advance(TTL + Duration::from_secs(1));
    let stale = fixture.get("abc").await;
    assert_eq!(stale.outcome, CacheOutcome::Stale);
    assert_eq!(body(&stale), body(&first));
    let tried = fixture.asked();
    assert!(tried > 1, "the upstream was asked again");

    // Within the pause after a failure the stale copy is the answer, and the
    // upstream is left alone.
    fixture.clock.advance(Duration::from_secs(4));
    assert_eq!(fixture.get("abc").await.outcome, CacheOutcome::Stale);
    assert_eq!(fixture.asked(), tried);

    // After it, and with the upstream healthy again, the file is revalidated.
    fixture
        .upstream
        .switches
        .fail_status
        .store(0, Ordering::SeqCst);
    fixture.clock.advance(Duration::from_secs(2));
    let recovered = fixture.get("abc").await;
    assert_eq!(recovered.outcome, CacheOutcome::Revalidated);
    assert_eq!(body(&recovered), body(&first));
}

#[tokio::test]
async fn forced_revalidations_of_an_unchanged_file_are_once_per_interval() {
    let fixture = Fixture::new(Duration::from_secs(600));
    let name = CrateName::parse("abc").unwrap();
    fixture.get("abc").await;
    // The default interval is 10 s.
    let forced = fixture.cache.revalidate(&name).await.unwrap();
    assert_eq!(forced.outcome, CacheOutcome::Revalidated);
    assert_eq!(fixture.asked(), 2);
    fixture.clock.advance(Duration::from_secs(9));
    let throttled = fixture.cache.revalidate(&name).await.unwrap();
    assert_eq!(throttled.outcome, CacheOutcome::Hit);
    assert_eq!(fixture.asked(), 2);
    fixture.clock.advance(Duration::from_secs(2));
    let again = fixture.cache.revalidate(&name).await.unwrap();
    assert_eq!(again.outcome, CacheOutcome::Revalidated);
    assert_eq!(fixture.asked(), 3);
    assert_eq!(fixture.counted("client"), 1);
    assert_eq!(fixture.counted("revalidation"), 2);
}

#[tokio::test]
async fn past_the_ttl_new_versions_and_yanks_appear() {
    let fixture = Fixture::new(Duration::ZERO);
    let first = fixture.get("abc").await;
    let etag = |l: &IndexLookup| l.entry.file().expect("found").etag.clone();
    fixture.publish("abc", "1.1.0");
    fixture.clock.advance(TTL + Duration::from_secs(1));
    let second = fixture.get("abc").await;
    assert_eq!(second.outcome, CacheOutcome::Revalidated);
    assert_ne!(etag(&second), etag(&first));
    let text = body(&second);
    assert!(text.contains("\"vers\":\"1.1.0\""));
    assert_eq!(text, fixture.upstream.index_body("abc").unwrap());

    // A yank is a line change and shows up too.
    let at = text.rfind("\"yanked\":false").expect("a yanked field");
    let yanked = format!(
        "{}\"yanked\":true{}",
        &text[..at],
        &text[at + "\"yanked\":false".len()..]
    );
    fixture.upstream.set_index("abc", 200, &yanked);
    fixture.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(body(&fixture.get("abc").await), yanked);
}

#[tokio::test]
async fn without_upstream_validators_files_are_fetched_and_compared() {
    let fixture = Fixture::new(Duration::ZERO);
    fixture
        .upstream
        .switches
        .no_validators
        .store(true, Ordering::SeqCst);
    let first = fixture.get("abc").await;
    let first_file = first.entry.file().expect("found");
    fixture.clock.advance(TTL + Duration::from_secs(1));
    let second = fixture.get("abc").await;
    assert_eq!(second.outcome, CacheOutcome::Revalidated);
    // Same body: same ETag and the original Last-Modified, so clients get 304s.
    let second_file = second.entry.file().expect("found");
    assert_eq!(second_file.etag, first_file.etag);
    assert_eq!(second_file.last_modified, first_file.last_modified);
    let requests: Vec<_> = fixture
        .upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == "/index/3/a/abc")
        .collect();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r.if_none_match.is_none() && r.if_modified_since.is_none()));

    fixture.publish("abc", "1.0.1");
    fixture.clock.advance(TTL + Duration::from_secs(1));
    let third = fixture.get("abc").await;
    assert_ne!(third.entry.file().expect("found").etag, first_file.etag);
    assert_eq!(body(&third), fixture.upstream.index_body("abc").unwrap());
}

/// `abc` 1.0.0 published long ago, 1.1.0 an hour ago (whole seconds, as the
/// index writes `pubtime`), and when 1.1.0 comes of age under a 2 h cooldown.
fn young_and_old() -> ([CrateSpec; 2], std::time::SystemTime) {
    let published = support::registry::rfc3339_utc(std::time::SystemTime::now() - HOUR);
    let young = CrateSpec::new("abc", "1.1.0").pubtime(&published);
    let at = crate_mirror::policy::pubtime::parse_pubtime(&published).expect("an RFC 3339 time");
    ([CrateSpec::new("abc", "1.0.0"), young], at + 2 * HOUR)
}

const HOUR: Duration = Duration::from_secs(3600);

fn cooldown(mode: CooldownMode) -> Policy {
    Policy {
        min_release_age: 2 * HOUR,
        mode,
        ..Policy::default()
    }
}

/// Moves `fixture`'s clock to just before `at` (the real time passing
/// while the test runs is milliseconds, far from the margin).
fn move_to_before(fixture: &Fixture, at: std::time::SystemTime, margin: Duration) {
    let gap = at
        .duration_since(fixture.clock.system_now())
        .expect("the instant is ahead");
    fixture.clock.advance(gap - margin);
}

#[tokio::test]
async fn a_held_back_version_appears_at_the_instant_it_comes_of_age_with_a_new_etag() {
    let (specs, of_age) = young_and_old();
    // A day's TTL: nothing but coming of age can change the served body.
    let day = 24 * HOUR;
    let fixture = Fixture::with(&specs, day, Duration::ZERO, cooldown(CooldownMode::Hide));
    let first = fixture.get("abc").await;
    assert_eq!(first.outcome, CacheOutcome::Miss);
    assert!(body(&first).contains("\"1.0.0\""));
    assert!(!body(&first).contains("\"1.1.0\""), "hidden while young");
    let held_etag = first.entry.file().unwrap().etag.clone();

    // Two seconds before: still held back, the very same copy (no work per request).
    move_to_before(&fixture, of_age, Duration::from_secs(2));
    let before = fixture.get("abc").await;
    assert!(!body(&before).contains("\"1.1.0\""));
    assert!(Arc::ptr_eq(&before.entry, &first.entry));

    // At the instant: served, under a new ETag, without asking the upstream.
    fixture.clock.advance(Duration::from_secs(2));
    let after = fixture.get("abc").await;
    assert_eq!(after.outcome, CacheOutcome::Hit);
    assert!(body(&after).contains("\"1.1.0\""));
    let file = after.entry.file().unwrap();
    assert_ne!(file.etag, held_etag, "cargo's cached copy must be replaced");
    assert_eq!(fixture.asked(), 1);
    // Filtered once: the next request gets the same copy.
    let again = fixture.get("abc").await;
    assert!(Arc::ptr_eq(&again.entry, &after.entry));
}

#[tokio::test]
async fn yank_mode_marks_a_young_version_and_the_record_keeps_the_upstream_body() {
    let (specs, of_age) = young_and_old();
    let day = 24 * HOUR;
    let fixture = Fixture::with(&specs, day, Duration::ZERO, cooldown(CooldownMode::Yank));
    let young_line = |lookup: &IndexLookup| {
        body(lookup)
            .lines()
            .find(|line| line.contains("\"1.1.0\""))
            .map(str::to_string)
            .expect("the young version is served")
    };
    let first = fixture.get("abc").await;
    assert!(young_line(&first).contains("\"yanked\":true"));

    // The record in sled is the upstream's: a cache without the policy on
    // the same database (a restart with the policy removed) serves it as is.
    let (plain, _) = cache_on(
        &fixture.db,
        &fixture.upstream,
        day,
        Duration::ZERO,
        Policy::default(),
        &Clock::system(),
    );
    let name = CrateName::parse("abc").unwrap();
    let unfiltered = plain.get(&name).await.expect("an answer");
    assert_eq!(unfiltered.outcome, CacheOutcome::Hit, "from sled");
    assert!(young_line(&unfiltered).contains("\"yanked\":false"));
    assert_eq!(fixture.asked(), 1);

    // Come of age: no longer marked.
    move_to_before(&fixture, of_age, Duration::ZERO);
    let after = fixture.get("abc").await;
    assert!(young_line(&after).contains("\"yanked\":false"));
    assert_ne!(
        after.entry.file().unwrap().etag,
        first.entry.file().unwrap().etag
    );
}

#[tokio::test]
async fn exempt_and_denied_versions() {
    let (specs, _) = young_and_old();
    let policy = Policy {
        exempt: vec![CrateRule::parse("abc@>=1.1").unwrap()],
        deny: vec![CrateRule::parse("abc@=1.0.0").unwrap()],
        ..cooldown(CooldownMode::Hide)
    };
    let fixture = Fixture::with(&specs, TTL, Duration::ZERO, policy);
    let lookup = fixture.get("abc").await;
    assert!(
        body(&lookup).contains("\"1.1.0\""),
        "exempt from the cooldown"
    );
    assert!(!body(&lookup).contains("\"1.0.0\""), "denied");
    assert_eq!(
        fixture.cache.denied_by("abc", "1.0.0").as_deref(),
        Some("abc@=1.0.0")
    );
    assert_eq!(fixture.cache.denied_by("abc", "1.1.0"), None);
}
