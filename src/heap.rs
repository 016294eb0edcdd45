//! Giving freed memory back to the OS.
//!
//! The server's allocator, mimalloc, returns freed memory to the OS after a
//! short delay, but it looks for expired delays only when it allocates or
//! frees again in the same segment, or is asked to with a forced collect
//! (a normal one leaves segments alone). After a burst of frees followed by
//! quiet — the warm-up's buffers, a connect storm whose growing tables
//! replaced smaller ones — freed memory therefore stays resident: ~38 bytes
//! per channel at 1M channels, measured with `benches/channel_density.rs`
//! against `MIMALLOC_PURGE_DELAY=0`. Purging on every free instead
//! (`purge_delay` 0) would cost an madvise per freed page on the hot path;
//! so the thread that loaded the store and each shard collect once the
//! warm-up is done, and each shard again every few seconds.
//!
//! When mimalloc is not the global allocator (unit tests), it has nothing
//! to collect and these calls do nothing.

use std::time::Duration;

/// How often each shard purges what was freed since.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(5);

/// Purges everything freed so far: this thread's pages and, process-wide,
/// the allocator's arenas, ignoring the purge delay. After the warm-up.
pub fn release_now() {
    // SAFETY: mi_collect only walks mimalloc's own bookkeeping.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// [`release_now`] every [`COLLECT_INTERVAL`] until the shard stops.
/// Costs a walk over this thread's pages (64 KiB each, ~16k per GiB), not
/// over its objects: well under a millisecond per GiB.
pub async fn release_forever() {
    loop {
        glommio::timer::sleep(COLLECT_INTERVAL).await;
        release_now();
    }
}
