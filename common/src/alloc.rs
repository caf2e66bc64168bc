//! The allocator of the long-running services (the scorer and the
//! indexer), and its figures as metrics.
//!
//! With glibc's allocator a scorer's memory crept up without bound while
//! it loaded and unloaded baselines of ever new workloads: each of its
//! threads allocates in an arena of its own, and freed memory stayed
//! spread over them (300,000 workloads at `max_loaded_baselines` 5,000:
//! 605 MB peak and still rising, against 322 MB flat with two arenas; see
//! docs/reliability.md). jemalloc keeps fragmentation low across threads
//! and returns freed pages to the kernel after a few seconds.
//!
//! A binary opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: outlier_common::alloc::Jemalloc = outlier_common::alloc::Jemalloc;
//! ```

use std::sync::LazyLock;

use prometheus::{IntGauge, register_int_gauge};
pub use tikv_jemallocator::Jemalloc;

static ALLOCATED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_allocator_allocated_bytes",
        "Bytes the process's allocations hold (jemalloc)"
    )
    .expect("metric registers once")
});

static RESIDENT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "outlier_allocator_resident_bytes",
        "Bytes of memory the allocator holds resident, in use or not yet returned to the kernel (jemalloc)"
    )
    .expect("metric registers once")
});

/// The allocator's figures now: (allocated, resident) bytes. `None` when
/// jemalloc is not the process's allocator (its statistics then stay
/// at zero) or does not answer.
pub fn figures() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Statistics are a snapshot taken at each epoch.
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()? as u64;
    let resident = stats::resident::read().ok()? as u64;
    (resident > 0).then_some((allocated, resident))
}

/// Sets the allocator gauges (at each scrape of /metrics).
pub fn observe() {
    if let Some((allocated, resident)) = figures() {
        ALLOCATED.set(allocated as i64);
        RESIDENT.set(resident as i64);
    }
}

#[cfg(test)]
mod tests {
    #[global_allocator]
    static ALLOC: super::Jemalloc = super::Jemalloc;

    #[test]
    fn figures_follow_what_is_allocated() {
        let (before, _) = super::figures().expect("jemalloc is this test's allocator");
        let block = vec![1u8; 64 << 20];
        let (during, resident) = super::figures().unwrap();
        assert!(during >= before + (64 << 20), "{before} -> {during}");
        assert!(
            resident >= during,
            "resident {resident} < allocated {during}"
        );
        drop(block);
        let (after, _) = super::figures().unwrap();
        assert!(after + (32 << 20) < during, "{during} -> {after}");
    }
}
