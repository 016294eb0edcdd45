//! Relays (docs/CLUSTER.md): built next.
