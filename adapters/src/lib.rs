//! microbatch-adapters: everything that touches the world, behind the ports of `microbatch-core`.
