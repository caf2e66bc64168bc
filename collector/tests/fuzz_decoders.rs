//! Property-based fuzzing of the collector's decoders: whatever bytes the
//! kernel's ring buffer or /proc hand over, parsing returns a value or an
//! error, never a panic. Bounded in CI (proptest's default 256 cases per
//! property); `PROPTEST_CASES=100000 cargo test -p outlier-collector --test
//! fuzz_decoders` runs longer.

use outlier_collector::{procfs, records};
use proptest::prelude::*;

proptest! {
    #[test]
    fn ring_buffer_records_never_panic(b in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = records::parse(&b);
    }

    #[test]
    fn ring_buffer_records_with_a_valid_kind_never_panic(
        kind in 0u32..8,
        b in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut b = b;
        if b.len() >= 4 {
            b[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        let _ = records::parse(&b);
    }

    #[test]
    fn proc_stat_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = procfs::parse_stat(&b);
    }

    #[test]
    fn proc_stat_with_hostile_comm_never_panics(comm in "\\PC{0,40}", rest in "[0-9 ()A-Za-z-]{0,200}") {
        let line = format!("123 ({comm}) {rest}");
        let _ = procfs::parse_stat(line.as_bytes());
    }

    #[test]
    fn proc_status_and_net_never_panic(text in "\\PC{0,600}") {
        let _ = procfs::parse_ids(&text);
        let _ = procfs::parse_net(&text);
    }

    #[test]
    fn proc_net_lines_never_panic(lines in proptest::collection::vec("[0-9A-F: ]{0,120}", 0..20)) {
        let text = format!("  sl  local_address rem_address   st\n{}", lines.join("\n"));
        let _ = procfs::parse_net(&text);
    }
}
