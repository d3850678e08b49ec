//! yolo-edge's host: serves the detection component over HTTP with Wasmtime, provides
//! wasi-nn on ONNX Runtime, and meters every invocation.
//!
//! A request goes [`server`] (routing) → [`billing`] ([`tenants`]: API key and balance,
//! body limit, [`idempotency`], the result [`cache`]) → [`invoke`] (a fresh instance from the [`engine`]'s
//! pre-instantiated component, with [`state`] for WASI, wasi-http and [`nn`]) → the
//! function → back through [`invoke`] (fuel, wall time, inference time, memory:
//! [`metering`]) → [`pricing`] (tokens) → [`ledger`] (one hash-chained row, committed in the
//! same transaction as the charge, in the [`store`]: the SQLite [`db`] or
//! [`postgres`]) → the answer with `x-tokens` and
//! `x-balance`. [`api`] and [`usage`] report usage; [`config`] holds the price sheet;
//! [`cli`] wires it all together.
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod bake;
pub mod billing;
pub mod cache;
pub mod cli;
pub mod compose;
pub mod config;
pub mod db;
pub mod engine;
pub mod front;
pub mod idempotency;
pub mod import;
pub mod invoke;
pub mod launch;
pub mod ledger;
pub mod limits;
pub mod manifest;
pub mod metering;
pub mod metrics;
pub mod nn;
pub mod postgres;
pub mod pricing;
pub mod redis_link;
pub mod server;
pub mod state;
pub mod store;
pub mod tenants;
pub mod usage;
pub mod web;
