//! What the fleet's immune memory costs a scorer per event: the signature
//! check (`Signatures::matching`, with the clock read the scorer does) on a
//! fleet holding 11,000 signatures (1,000 in the event's org over 50
//! programs, 20 per program; 10 other orgs), against embedding the same
//! event (`embed`, which every event pays already) in the same run.
//!
//!     cargo bench -p outlier-common --bench signatures

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use outlier_common::featurize::embed;
use outlier_common::immune::{Signatures, signature_of};
use outlier_common::now_ns;
use outlier_proto::{Event, Exec, event::Detail};

fn exec(org: &str, program: &str, args: &[String]) -> Event {
    let mut argv = vec![program.to_string()];
    argv.extend_from_slice(args);
    Event {
        event_id: "e".into(),
        org: org.into(),
        workload: "web".into(),
        host: "web-1".into(),
        comm: program.into(),
        parent_comm: "sh".into(),
        exe: format!("/usr/bin/{program}"),
        detail: Some(Detail::Exec(Exec {
            argv,
            ..Exec::default()
        })),
        ..Event::default()
    }
}

fn fleet() -> Signatures {
    let set = Signatures::default();
    let far = now_ns() + 86_400_000_000_000;
    for o in 0..11 {
        let org = if o == 0 {
            "acme".to_string()
        } else {
            format!("org{o}")
        };
        for p in 0..50 {
            for k in 0..20 {
                let e = exec(
                    &org,
                    &format!("prog{p}"),
                    &[format!("--variant-{k}"), format!("/opt/tool{k}/run.sh")],
                );
                let mut s = signature_of(&e, format!("sig-{o}-{p}-{k}"));
                s.expires_ns = far;
                set.apply(s).expect("valid signature");
            }
        }
    }
    set
}

fn bench(c: &mut Criterion) {
    let set = fleet();
    // A program with 20 signatures, none of which this event matches.
    let near_miss = exec(
        "acme",
        "prog7",
        &["--other".into(), "/srv/app/job.sh".into()],
    );
    // A program no signature names (most events).
    let unnamed = exec("acme", "nginx", &["-s".into(), "reload".into()]);
    // A match.
    let hit = exec(
        "acme",
        "prog7",
        &["--variant-3".into(), "/opt/tool3/run.sh".into()],
    );
    let (v_miss, v_unnamed, v_hit) = (embed(&near_miss), embed(&unnamed), embed(&hit));
    assert!(set.matching(&hit, &v_hit, now_ns()).is_some());
    assert!(set.matching(&near_miss, &v_miss, now_ns()).is_none());

    let mut g = c.benchmark_group("immune_memory");
    g.bench_function("embed (every event pays it)", |b| {
        b.iter(|| embed(black_box(&near_miss)))
    });
    g.bench_function("check: program with 20 signatures, no match", |b| {
        b.iter(|| set.matching(black_box(&near_miss), black_box(&v_miss), now_ns()))
    });
    g.bench_function("check: program without signatures", |b| {
        b.iter(|| set.matching(black_box(&unnamed), black_box(&v_unnamed), now_ns()))
    });
    g.bench_function("check: match", |b| {
        b.iter(|| set.matching(black_box(&hit), black_box(&v_hit), now_ns()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
