//! Tests of snapshots and restores.
