//! Benchmarks of the whole service, kept out of the adapter crates: they
//! wire the store, the use cases and the adapters together.
//!
//! - `benches/rotation_fanout.rs` — a rotation re-applying 1000 pull
//!   Secrets on the simulated API server, at several concurrencies, with a
//!   QPS cap, and with two replicas sharing one PostgreSQL.
