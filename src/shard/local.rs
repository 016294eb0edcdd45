//! Role state that lives on a shard: one instance per shard, reached from
//! any task of that shard and from no other thread.
//!
//! Each role (channel server, gateway, presence, directory) keeps its
//! state in its own module, declared with [`shard_local!`], so the shard
//! runtime below them knows nothing of any role: a shard is one executor on
//! one thread, and a thread-local installed when the shard starts is
//! exactly "the state this core owns". It is installed once and lives as
//! long as the process (shards end only when the node does), which lets
//! `this_shard()` hand out a plain `&'static RefCell`, borrowed the usual
//! way for the short synchronous stretches handlers need.

/// Declares a role's per-shard state of type `$ty`: `install(value)` at
/// shard start, then `this_shard()` anywhere on that shard.
macro_rules! shard_local {
    ($ty:ty) => {
        ::std::thread_local! {
            static SHARD_LOCAL: ::std::cell::Cell<Option<&'static ::std::cell::RefCell<$ty>>> =
                const { ::std::cell::Cell::new(None) };
        }

        /// Installs this shard's state (once, at shard start).
        pub fn install(value: $ty) {
            SHARD_LOCAL.with(|slot| {
                assert!(slot.get().is_none(), "installed twice on one shard");
                // Leaked on purpose: it lives as long as the shard's thread,
                // which is as long as the node.
                slot.set(Some(Box::leak(Box::new(::std::cell::RefCell::new(value)))));
            })
        }

        /// This shard's state.
        #[inline]
        pub fn this_shard() -> &'static ::std::cell::RefCell<$ty> {
            SHARD_LOCAL.with(|slot| slot.get().expect("role state installed on this shard"))
        }

        /// This shard's state, if this shard has the role at all (node
        /// links exist only on a clustered node).
        #[inline]
        #[allow(dead_code)]
        pub fn try_this_shard() -> Option<&'static ::std::cell::RefCell<$ty>> {
            SHARD_LOCAL.with(|slot| slot.get())
        }
    };
}

pub(crate) use shard_local;
